"""Seed sweeps (num_seeds = K: K models vmapped in one step) and the no-recompilation guarantee.

216 training designs with batch 32 leave a partial last batch (24 designs) every epoch.
"""

import os
import re
import shutil
import time

import jax
import ml_collections
import numpy as np
import pytest

from gan import config as config_lib
from gan import data
from gan import inference
from gan import paths
from gan import run_dir
from gan import run_lock
from gan import step
from gan import trainer
from tests.helpers import compilations, run_locked_by_a_live_process, tiny_config

pytestmark = pytest.mark.usefixtures('fast_compilation')

# Constant learning rates, as in test_parallel.py: the vmapped and the single program round the
# decayed lr x Adam step differently, and Adam turns a near-zero gradient's rounding into an
# lr-sized step (with the default decay, 12 updates left parameters 1.25 learning rates apart).
SETTINGS = dict(epochs=2, checkpoint_every=2, sample_every=2, eval_every=0, critic_iter=2,
                gen_dropout=0.1, lr_decay_steps=0)


@pytest.fixture(scope='module')
def sweep(small_design_dir, tmp_path_factory):
  config = tiny_config(small_design_dir, tmp_path_factory.mktemp('sweep') / 'run', num_seeds=2,
                       seed=3, **SETTINGS)
  return config, trainer.train(config)


def _assert_close(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-5)


def test_each_sweep_model_equals_the_single_run_with_its_seed(sweep, small_design_dir,
                                                              tmp_path):
  """Model k of a K=2 sweep is the run of seed seed+k on the sweep's split (data_seed)."""
  _, result = sweep
  assert [os.path.basename(r['log_path']) for r in result['runs']] == ['seed_3', 'seed_4']
  for k, seed in enumerate((3, 4)):
    single = trainer.train(tiny_config(small_design_dir, tmp_path / f'single{seed}', seed=seed,
                                       data_seed=3, **SETTINGS))
    swept = step.unstack(result['state'], k)
    assert int(swept.step) == int(single['state'].step)
    np.testing.assert_array_equal(swept.key, single['state'].key)  # same shuffles and noise
    _assert_close(swept, single['state'])
  first, second = (step.unstack(result['state'], k) for k in range(2))
  assert not np.allclose(jax.tree.leaves(first.gen_params)[0],
                         jax.tree.leaves(second.gen_params)[0])


def test_each_sweep_model_is_a_complete_run_directory(sweep):
  """Own log, TensorBoard events, checkpoints (config seed=its seed) and outputs; infer loads it."""
  _, result = sweep
  for k, run in enumerate(result['runs']):
    assert os.path.isfile(os.path.join(run['log_path'], 'log_summary'))
    events = os.listdir(os.path.join(run['log_path'], 'tensorboard_records'))
    assert any(f.startswith('events.out') for f in events)
    assert os.listdir(os.path.join(run['log_path'], 'checkpoints')) == ['2']
    assert len(os.listdir(os.path.join(run['output_path'], 'fake'))) == 4
    model = inference.load(run['log_path'])
    assert model.config.seed == 3 + k and model.config.num_seeds == 1
    assert config_lib.data_seed(model.config) == 3
    np.testing.assert_array_equal(jax.tree.leaves(model.state.gen_params)[0],
                                  jax.tree.leaves(step.unstack(result['state'], k).gen_params)[0])


def test_a_sweep_resumes_to_the_same_state(sweep, small_design_dir, tmp_path):
  config, result = sweep
  straight = trainer.train(tiny_config(small_design_dir, tmp_path / 'straight', num_seeds=2,
                                       seed=3, **dict(SETTINGS, epochs=3)))
  resumed_config = tiny_config(small_design_dir, config.log_path, num_seeds=2, seed=3,
                               **dict(SETTINGS, epochs=3))
  with pytest.MonkeyPatch.context() as patch:  # restored into shapes only
    patch.setattr(trainer.step, 'init_sweep', lambda *a, **k: pytest.fail('initialised'))
    resumed = trainer.train(resumed_config)
  assert resumed['start_epoch'] == 2
  for a, b in zip(jax.tree.leaves(straight['state']), jax.tree.leaves(resumed['state'])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_more_seeds_on_a_sweep_are_refused_and_nothing_is_deleted(sweep, tmp_path):
  """Resuming all runs from epoch 0 would delete the existing runs' training."""
  config, _ = sweep
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = str(tmp_path / 'run')
  shutil.copytree(sweep[0].log_path, config.log_path)
  before = {s: sorted(os.listdir(os.path.join(config.log_path, s, 'checkpoints')))
            for s in ('seed_3', 'seed_4')}
  config.num_seeds = 3
  with pytest.raises(config_lib.ConfigError, match='seed_5: no checkpoint'):
    trainer.train(config)
  assert before == {s: sorted(os.listdir(os.path.join(config.log_path, s, 'checkpoints')))
                    for s in ('seed_3', 'seed_4')} and before['seed_3']
  assert not os.path.exists(os.path.join(config.log_path, 'seed_5'))  # refused before writing


def test_a_sweep_leaving_out_models_of_the_one_that_wrote_them_is_refused(small_design_dir,
                                                                          tmp_path):
  """A sweep holding all of another's models resumes them (a 2-model sweep extended by a third
  model trained on its own to the same epoch). One that leaves some out (fewer num_seeds, a seed
  shifted inside it) would train the rest on without them, which could then not resume with
  them: refused before anything is written, naming a sweep of all of them, on their split."""
  settings = dict(SETTINGS, epochs=1, checkpoint_every=1, sample_every=1)
  run = tmp_path / 'run'
  trainer.train(tiny_config(small_design_dir, run, num_seeds=2, seed=1, **settings))
  trainer.train(tiny_config(small_design_dir, run / 'seed_3', seed=3, data_seed=1, **settings))
  extended = trainer.train(tiny_config(small_design_dir, run, num_seeds=3, seed=1,
                                       **dict(settings, epochs=2)))
  assert extended['start_epoch'] == 1
  trainer.train(tiny_config(small_design_dir, run / 'seed_0', seed=0, data_seed=1,
                            **dict(settings, epochs=2)))
  runs = [str(run / f'seed_{s}') for s in range(4)]
  before = {r: (_steps(r), os.path.getsize(os.path.join(r, 'log_summary'))) for r in runs}
  assert all(steps == [1, 2] for steps, _ in before.values())
  for seed, num_seeds, left_out, of_all in (
      (1, 2, 3, '--config.num_seeds=3 --config.seed=1'),
      (2, 2, 1, '--config.num_seeds=3 --config.seed=1'),
      (0, 3, 3, '--config.num_seeds=4 --config.seed=0 --config.data_seed=1')):
    with pytest.raises(config_lib.ConfigError,
                       match=rf'seed_{max(seed, 1)} holds a model of another sweep: its latest '
                       r'checkpoint \(epoch 2\) was written by the sweep of num_seeds=3 from '
                       rf'seed=1, which this one \(num_seeds={num_seeds}, seed={seed}\) would '
                       rf'train on without its seed_{left_out}; resume a sweep of all of them '
                       rf'\({of_all}\), or use a new --config.log_path$'):
      trainer.train(tiny_config(small_design_dir, run, num_seeds=num_seeds, seed=seed,
                                data_seed=1, **dict(settings, epochs=3)))
    assert before == {r: (_steps(r), os.path.getsize(os.path.join(r, 'log_summary')))
                      for r in runs}


def test_a_sweep_of_other_seeds_trains_beside_the_first(sweep, tmp_path):
  """The README's promise: seeds none of the log_path's seed_<s> directories holds train afresh
  beside the models there, which keep their checkpoints."""
  config, _ = sweep
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = str(tmp_path / 'run')
  shutil.copytree(sweep[0].log_path, config.log_path)
  before = {s: _steps(os.path.join(config.log_path, s)) for s in ('seed_3', 'seed_4')}
  config.seed, config.epochs, config.checkpoint_every = 7, 1, 1
  result = trainer.train(config)
  assert result['start_epoch'] == 0
  assert sorted(os.listdir(config.log_path)) == ['seed_3', 'seed_4', 'seed_7', 'seed_8']
  assert {s: _steps(os.path.join(config.log_path, s)) for s in ('seed_7', 'seed_8')} == {
      'seed_7': [1], 'seed_8': [1]}
  assert before == {s: _steps(os.path.join(config.log_path, s)) for s in ('seed_3', 'seed_4')}


def _steps(run_dir):
  return sorted(int(s) for s in os.listdir(os.path.join(run_dir, 'checkpoints')) if s.isdigit())


def test_a_sweep_cut_back_only_deletes_checkpoints_it_wrote(small_design_dir, tmp_path):
  """A sweep stopped between its runs' saves of epoch 2 resumes all from epoch 1, removing the
  further run's epoch 2 and recomputing it alike. A run trained on its own past the others is
  refused instead: cutting it back would delete training the sweep cannot recompute."""
  settings = dict(SETTINGS, checkpoint_every=1)
  config = tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3, **settings)
  first = trainer.train(config)
  seed_3, seed_4 = (os.path.join(config.log_path, f'seed_{s}') for s in (3, 4))
  cut = str(tmp_path / 'cut')
  shutil.copytree(config.log_path, cut)
  shutil.rmtree(os.path.join(cut, 'seed_4', 'checkpoints', '2'))  # killed before its save
  # An unreadable one it removes too (the check of who wrote it refused the run).
  shutil.rmtree(os.path.join(cut, 'seed_3', 'checkpoints', '2', 'meta'))
  again = trainer.train(tiny_config(small_design_dir, cut, num_seeds=2, seed=3, **settings))
  assert again['start_epoch'] == 1
  with open(os.path.join(cut, 'seed_3', 'log_summary'), encoding='utf-8') as f:
    assert 'Checkpoints after epoch 1 removed' in f.read()
  _assert_close(first['state'], again['state'])

  alone = config_lib.seed_configs(config_lib.resolve(config))[0]  # seed_3, on the sweep's split
  alone.epochs = 3
  trainer.train(alone)
  assert _steps(seed_3) == [1, 2, 3] and _steps(seed_4) == [1, 2]
  config.epochs = 3
  logs = {d: os.path.getsize(os.path.join(d, 'log_summary')) for d in (seed_3, seed_4)}
  with pytest.raises(config_lib.ConfigError, match=(
      f'{seed_3} was trained to epoch 3 outside this sweep .*checkpoint 3 in its checkpoints/ '
      '.*, the others to epoch 2: resuming together would delete')):
    trainer.train(config)
  assert _steps(seed_3) == [1, 2, 3] and _steps(seed_4) == [1, 2]
  assert logs == {d: os.path.getsize(os.path.join(d, 'log_summary')) for d in (seed_3, seed_4)}


def test_a_sweep_stopped_between_its_runs_first_saves_trains_afresh(small_design_dir,
                                                                   tmp_path):
  """A second Ctrl-C (or a kill) after one run's first checkpoint, before the other's: the same
  command was refused ('no checkpoint, ... (num_seeds or seed changed?)'), while train.py had just
  said it resumes. The sweep's own checkpoints are recomputed: it trains afresh."""
  settings = dict(SETTINGS, epochs=1, checkpoint_every=1)
  config = tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3, **settings)
  first = trainer.train(config)
  shutil.rmtree(os.path.join(config.log_path, 'seed_4', 'checkpoints'))  # stopped before it
  again = trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3,
                                    **settings))
  assert again['start_epoch'] == 0
  assert [_steps(os.path.join(config.log_path, f'seed_{s}')) for s in (3, 4)] == [[1], [1]]
  with open(os.path.join(config.log_path, 'seed_3', 'log_summary'), encoding='utf-8') as f:
    assert 'Checkpoints removed: the sweep trains afresh together' in f.read()
  _assert_close(first['state'], again['state'])
  # A run whose checkpoints are gone once the others saved more: refused, as training afresh
  # would cost all of theirs, not one checkpoint interval, saying how to catch that run up (not
  # 'num_seeds or seed changed?').
  trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3,
                            **dict(settings, epochs=2)))
  shutil.rmtree(os.path.join(config.log_path, 'seed_4', 'checkpoints'))
  with pytest.raises(config_lib.ConfigError, match=(
      "seed_4: no checkpoint, while the sweep's other runs hold its checkpoints up to epoch 2 "
      r'\(removed\?\); to keep their training, .* --config.data_seed=3 --config.epochs=2 ')):
    trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3,
                              **dict(settings, epochs=3)))
  assert _steps(os.path.join(config.log_path, 'seed_3')) == [1, 2]


@pytest.mark.parametrize('resumed', [False, True], ids=['in_one_go', 'resumed_saving_less_often'])
def test_a_sweep_keeping_one_checkpoint_is_refused_not_trained_afresh_when_a_run_lost_its_own(
    small_design_dir, tmp_path, resumed):
  """With keep_checkpoints=1 a run trained on holds one checkpoint, as one stopped between the
  runs' first saves does: a run's lost checkpoints made the sweep train afresh, deleting all the
  other runs' training. One checkpoint past its checkpoint_every is no first save, nor one of a
  resumed training, whose checkpoint_every may have been raised past it: refused."""
  settings = dict(SETTINGS, epochs=2, checkpoint_every=1, keep_checkpoints=1)
  if resumed:
    trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3,
                              **dict(settings, epochs=1)))
    settings['checkpoint_every'] = 5  # epoch 2 is saved as the last, at or before 5
  trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3, **settings))
  seed_3, seed_4 = (str(tmp_path / 'run' / f'seed_{s}') for s in (3, 4))
  assert _steps(seed_3) == _steps(seed_4) == [2]
  shutil.rmtree(os.path.join(seed_4, 'checkpoints'))
  with pytest.raises(config_lib.ConfigError, match=(
      "seed_4: no checkpoint, while the sweep's other runs hold its checkpoints up to epoch 2")):
    trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3,
                              **dict(settings, epochs=3)))
  assert _steps(seed_3) == [2]


def test_a_run_without_checkpoints_is_told_to_catch_up_to_the_epoch_the_others_share(
    small_design_dir, tmp_path):
  """seed_2 lost its checkpoints, seed_0 holds epochs 1 and 2, seed_1 only 1 (killed before its
  save of 2): the advice is to train seed_2 on its own to epoch 1, from which the sweep resumes
  (seed_0 cut back to its own checkpoint). Caught up to epoch 2, seed_2's checkpoint 2 would be
  a single run's, past the epoch the sweep resumes from: refused as training outside it."""
  settings = dict(SETTINGS, checkpoint_every=1)
  trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=3, seed=0, **settings))
  runs = [str(tmp_path / 'run' / f'seed_{s}') for s in range(3)]
  shutil.rmtree(os.path.join(runs[1], 'checkpoints', '2'))
  shutil.rmtree(os.path.join(runs[2], 'checkpoints'))
  with pytest.raises(config_lib.ConfigError, match=(
      r"seed_2: no checkpoint, while the sweep's other runs hold its checkpoints up to epoch 1 "
      r'\(removed\?\); to keep their training, train the runs behind it to epoch 1 on its own, '
      r'.*--config.epochs=1 ')):
    trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=3, seed=0,
                              **dict(settings, epochs=3)))
  assert [_steps(r) for r in runs[:2]] == [[1, 2], [1]]


def test_a_ctrl_c_between_the_runs_saves_logs_the_epoch_the_sweep_resumes_from(
    small_design_dir, tmp_path, monkeypatch):
  """train.py's second Ctrl-C after seed_3's save of epoch 2, before seed_4's: seed_3's log said
  'the last checkpoint is of epoch 2', while the same command resumes both from epoch 1."""
  end_epoch = run_dir.Run.end_epoch

  def ended(run, epoch, *args, **kwargs):
    if epoch == 2 and run.config.seed == 4:
      raise KeyboardInterrupt
    return end_epoch(run, epoch, *args, **kwargs)

  monkeypatch.setattr(run_dir.Run, 'end_epoch', ended)
  config = tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3,
                       **dict(SETTINGS, epochs=3, checkpoint_every=1))
  with pytest.raises(KeyboardInterrupt):
    trainer.train(config)
  seed_3, seed_4 = (os.path.join(config.log_path, f'seed_{s}') for s in (3, 4))
  assert (_steps(seed_3), _steps(seed_4)) == ([1, 2], [1])
  with open(os.path.join(seed_3, 'log_summary'), encoding='utf-8') as f:
    assert ('Interrupted during epoch 2; the last checkpoint is of epoch 2; the sweep resumes '
            'together from epoch 1') in f.read()
  with open(os.path.join(seed_4, 'log_summary'), encoding='utf-8') as f:
    assert 'Interrupted during epoch 2; the last checkpoint is of epoch 1\n' in f.read()


def test_a_sweep_without_a_shared_checkpoint_is_refused_before_logging(sweep, tmp_path):
  """A run that got further and no longer holds the epoch the others resume from (keep_checkpoints
  removed it) cannot resume with them: refused before any run directory gets a log line."""
  config, _ = sweep
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = str(tmp_path / 'run')
  shutil.copytree(sweep[0].log_path, config.log_path)
  seed_3, seed_4 = (os.path.join(config.log_path, f'seed_{s}') for s in (3, 4))
  ckpts = os.path.join(seed_3, 'checkpoints')
  # The shared sweep holds [2], or [2, 3] once test_a_sweep_resumes_to_the_same_state trained it
  # on: seed_3 keeps only its latest, renamed 2 epochs on; seed_4 keeps them all.
  latest = _steps(seed_4)[-1]
  for s in _steps(seed_3)[:-1]:
    shutil.rmtree(os.path.join(ckpts, str(s)))
  os.rename(os.path.join(ckpts, str(latest)), os.path.join(ckpts, str(latest + 2)))
  config.epochs = latest + 3
  steps = _steps(seed_3), _steps(seed_4)
  logs = {d: os.path.getsize(os.path.join(d, 'log_summary')) for d in (seed_3, seed_4)}
  with pytest.raises(config_lib.ConfigError, match=(
      f'cannot resume together: {seed_3} has no checkpoint of epoch {latest}, the last one the '
      'others')):
    trainer.train(config)
  assert logs == {d: os.path.getsize(os.path.join(d, 'log_summary')) for d in (seed_3, seed_4)}
  assert (_steps(seed_3), _steps(seed_4)) == steps and steps[0] == [latest + 2]


@pytest.mark.slow
def test_the_catch_up_a_refused_sweep_suggests_lets_it_resume(sweep, small_design_dir, tmp_path):
  """A sweep killed after one run's save of epoch 4, the other's not yet, where keep_checkpoints
  left the first without epoch 2: the error said only 'use a new --config.log_path'. It now says
  how to keep the training (the run behind trained on its own to epoch 4), and that works."""
  config = ml_collections.ConfigDict(sweep[0].to_dict())
  config.log_path = str(tmp_path / 'run')
  shutil.copytree(sweep[0].log_path, config.log_path)
  seed_3, seed_4 = (os.path.join(config.log_path, f'seed_{s}') for s in (3, 4))
  config.epochs = 4
  trainer.train(config)
  for s in _steps(seed_3)[:-1]:  # keep_checkpoints=1 removed them
    shutil.rmtree(os.path.join(seed_3, 'checkpoints', str(s)))
  shutil.rmtree(os.path.join(seed_4, 'checkpoints', '4'))  # killed before its save
  # 2, or 3 where test_a_sweep_resumes_to_the_same_state trained the shared sweep on first
  shared = _steps(seed_4)[-1]
  with pytest.raises(config_lib.ConfigError) as refused:
    trainer.train(config)
  assert (f'{seed_3} has no checkpoint of epoch {shared}, the last one the others share; to keep '
          'their training, train the runs behind it to epoch 4 on its own, with the sweep\'s other '
          'settings and --config.num_seeds=1 --config.data_seed=3 --config.epochs=4 '
          f'(--config.log_path={seed_4} --config.seed=4), then resume the sweep; or use a new '
          '--config.log_path') in str(refused.value)
  alone = ml_collections.ConfigDict(dict(config.to_dict(), num_seeds=1, data_seed=3, epochs=4,
                                         log_path=seed_4, seed=4))
  trainer.train(alone)
  assert _steps(seed_4)[-1] == 4
  config.epochs = 5
  assert trainer.train(config)['start_epoch'] == 4


def test_a_single_run_and_a_sweep_do_not_share_a_log_path(sweep, tmp_path):
  """num_seeds 2 -> 1 would train a stray model into the sweep's root (which infer.py would then
  read); 1 -> 2 a new sweep beside the single run. Both are refused before anything is written."""
  config, _ = sweep
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = str(tmp_path / 'sweep')
  shutil.copytree(sweep[0].log_path, config.log_path)
  config.num_seeds = 1
  with pytest.raises(config_lib.ConfigError, match=r'holds a seed sweep \(seed_3, seed_4\)'):
    trainer.train(config)
  assert sorted(os.listdir(config.log_path)) == ['seed_3', 'seed_4']
  single = str(tmp_path / 'single')
  shutil.copytree(os.path.join(sweep[0].log_path, 'seed_3'), single)  # a complete single run
  config.log_path, config.num_seeds = single, 2
  before = sorted(os.listdir(single))
  with pytest.raises(config_lib.ConfigError, match='holds a single run'):
    trainer.train(config)
  assert sorted(os.listdir(single)) == before


def test_a_sweep_waits_for_no_single_run_training_in_its_log_path(small_design_dir, tmp_path):
  """A single run writes <log_path>/checkpoints, a sweep only <log_path>/seed_*: each claims
  log_path itself, so the second of the two started at once on a fresh log_path is refused and
  leaves nothing behind."""
  config = tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, seed=3, **SETTINGS)
  os.makedirs(config.log_path)
  with run_locked_by_a_live_process(config.log_path) as pid:
    with pytest.raises(paths.OutputPathError, match=f'training process {pid} on '):
      trainer.train(config)
    assert os.listdir(config.log_path) == [run_lock.LOCK_NAME]


@pytest.mark.parametrize('num_seeds', [1, 2])
def test_no_recompilation_after_the_first_epoch(num_seeds, small_design_dir, tmp_path):
  """3 epochs with a partial last batch: the epoch compiles once (compile events)."""
  config = config_lib.resolve(tiny_config(small_design_dir, tmp_path, num_seeds=num_seeds,
                                          **SETTINGS))
  dataset = data.load_for_config(config)
  assert len(dataset.train) % config.batch_size, 'the data should leave a partial batch'
  models, state = (step.init_sweep(config, dataset.spec, dataset.mask, [0, 1]) if num_seeds > 1
                   else step.init(config, dataset.spec, dataset.mask))
  arrays = jax.device_put({k: getattr(dataset.train, k)
                           for k in ('images', 'durability', 'mass', 'fixed')})
  epoch_fn = step.compile_epoch(config, models, num_seeds)
  state, metrics = epoch_fn(state, arrays)
  assert metrics['critic_loss'].shape == ((num_seeds,) if num_seeds > 1 else ()) + (
      len(dataset.train) // config.batch_size,)
  with compilations() as compiles:
    for _ in range(2):
      state, metrics = epoch_fn(state, arrays)
      jax.block_until_ready(metrics)
  assert compiles == []
  assert epoch_fn._cache_size() == 1


def test_num_seeds_must_be_positive(small_design_dir, tmp_path):
  with pytest.raises(config_lib.ConfigError, match='num_seeds must be a positive integer'):
    trainer.train(tiny_config(small_design_dir, tmp_path, num_seeds=0))


def test_every_sweep_model_logs_the_same_training_time(small_design_dir, tmp_path, monkeypatch):
  """The models of a sweep train together, in one program: each log_summary's 'Trained N epoch(s)
  in T s' line gives the same T. Seed k's used to count the output BMPs of the k models before it
  too (written one run after the other), 1.6 s more for the second of two tiny models."""
  write_outputs = run_dir._write_outputs

  def slow_write_outputs(*args, **kwargs):
    time.sleep(1.0)
    return write_outputs(*args, **kwargs)

  monkeypatch.setattr(run_dir, '_write_outputs', slow_write_outputs)
  result = trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=2, **SETTINGS))
  said = []
  for run in result['runs']:
    with open(os.path.join(run['log_path'], 'log_summary'), encoding='utf-8') as f:
      said += re.findall(r'Trained 2 epoch\(s\) in ([0-9.]+) s', f.read())
  assert len(said) == 2 and said[0] == said[1], said


def test_a_sweeps_samples_per_s_counts_every_model(small_design_dir, tmp_path, monkeypatch):
  """The samples/s a sweep logs (and TensorBoard plots) are those of its K models together, as
  gan.bench counts them: K x batches x batch_size per epoch, over the epoch's time."""
  closed = []
  close_epoch = trainer._close_epoch

  def recording(runs, epoch, state, per_run, samples_per_s, seconds, *args, **kwargs):
    closed.append((samples_per_s, seconds))
    return close_epoch(runs, epoch, state, per_run, samples_per_s, seconds, *args, **kwargs)

  monkeypatch.setattr(trainer, '_close_epoch', recording)
  result = trainer.train(tiny_config(small_design_dir, tmp_path / 'run', num_seeds=3, epochs=1,
                                     eval_every=0))
  with open(os.path.join(result['runs'][0]['log_path'], 'log_summary'), encoding='utf-8') as f:
    batches = int(re.search(r'Training epochs 1\.\.1: (\d+) batches of 32 per epoch', f.read())[1])
  assert len(closed) == 1 and batches == 216 // 32
  samples_per_s, seconds = closed[0]
  assert samples_per_s * seconds == pytest.approx(3 * batches * 32)


def test_seed_configs_are_one_single_run_per_seed_on_the_sweeps_split():
  """num_seeds=3 from seed 5: the runs of seeds 5, 6, 7 (the first is the base seed), each a
  single run (num_seeds 1) on the base seed's split (data_seed -1 read as 5), each logging and
  writing its designs to its own seed_<s> directory; num_seeds=1 is the config itself."""
  config = config_lib.resolve(tiny_config('', 'runs/x', output_path='designs', seed=5,
                                          data_seed=-1, num_seeds=3))
  runs = config_lib.seed_configs(config)
  assert [(c.seed, c.num_seeds, c.data_seed) for c in runs] == [(5, 1, 5), (6, 1, 5), (7, 1, 5)]
  assert [c.log_path for c in runs] == [os.path.join('runs/x', f'seed_{s}') for s in (5, 6, 7)]
  assert [c.output_path for c in runs] == [os.path.join('designs', f'seed_{s}') for s in (5, 6, 7)]
  config.output_path = ''  # each run's <log_path>/output
  assert [c.output_path for c in config_lib.seed_configs(config)] == ['', '', '']
  single = ml_collections.ConfigDict(dict(config.to_dict(), num_seeds=1))
  assert config_lib.seed_configs(single) == [single]
