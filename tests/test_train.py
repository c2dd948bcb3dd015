"""Tests of the training loop (gan/trainer.py, gan/step.py) and its checks and outputs.

Every run uses tiny networks on the session's 240 generated designs (216 train, 24 val); most of
the time goes into XLA compilation, so compilation runs with `jax_disable_most_optimizations`
for this module and runs shared by several tests are module fixtures, copied before a test
changes them.
"""

import datetime
import functools
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from absl import flags
from flax import nnx
from tensorboard.backend.event_processing import event_accumulator

from configs import default
from configs import original_vanilla_wgangp
from gan import checkpoints
from gan import classifier as classifier_lib
from gan import config as config_lib
from gan import data
from gan import designs
from gan import evaluate
from gan import images
from gan import interrupts
from gan import losses
from gan import networks
from gan import paths
from gan import resume
from gan import run_dir
from gan import run_lock
from gan import step
from gan import summaries
from gan import trainer
from gan.errors import ConfigError, OutOfMemoryError, TrainingError
from tests.helpers import (compilations, ctrl_c_swallowed_by_a_gc_callback, finished_pid,
                           record_labels, run_locked_by_a_live_process, spread_batch,
                           train_arrays, write_run_lock)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_STRUTS = ((7, 11), (5, 14))  # the default strut pixels, full-layout (row, col)
NUM_OUTPUTS = 8
COMBINATIONS = [(g, l, n) for g in ('vanilla', 'infogan') for l in ('bce', 'wgan', 'wgangp')
                for n in ('mlp', 'selfattention')]
pytestmark = pytest.mark.usefixtures('fast_compilation')

# Settings of the shared run `base_run`: the default combination with generator dropout.
BASE = dict(gan_model='vanilla', loss_mode='wgangp', gen_mode='mlp', disc_mode='mlp',
            gen_dropout=0.1)
INFOGAN_WGAN = dict(gan_model='infogan', loss_mode='wgan', gen_mode='mlp', disc_mode='mlp')


# ---------------------------------------------------------------------------------------------
# Helpers


def tiny_config(**overrides):
  """configs/default.py with tiny networks and quick outputs; callers pass data_path, log_path."""
  c = default.get_config()
  c.update(dict(gen_hidden_dims=(64,), disc_hidden_dims=(64, 64), embed_dim=16, num_heads=2,
                num_layers=1, zdim=16, class_embed_dim=8, hidden_dim=32, batch_size=32,
                critic_iter=2, epochs=2, log_every=1, sample_every=2, checkpoint_every=2,
                num_output_images=NUM_OUTPUTS))
  c.update(overrides)
  return c


def setup(config):
  """(resolved config, dataset, models, initial state) exactly as trainer.train builds them."""
  resolved = config_lib.resolve(config)
  dataset = data.load_for_config(resolved)
  models, state = step.init(resolved, dataset.spec, dataset.mask)
  return resolved, dataset, models, state


def leaves(tree):
  """{path string: numpy array} of every leaf of a pytree."""
  return {jax.tree_util.keystr(path): np.asarray(leaf)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def changed_leaves(before, after):
  """Paths of the leaves that differ; the two trees must have the same leaves."""
  a, b = leaves(before), leaves(after)
  assert a.keys() == b.keys()
  return [k for k in a if not np.array_equal(a[k], b[k])]


def assert_trees_equal(a, b):
  """Same leaf paths and bitwise-equal leaves (dtype included)."""
  la, lb = leaves(a), leaves(b)
  assert la.keys() == lb.keys()
  for key in la:
    assert la[key].dtype == lb[key].dtype, key
    np.testing.assert_array_equal(la[key], lb[key], err_msg=key)


def assert_state_equal(a, b):
  for field in step.TrainState._fields:
    assert_trees_equal(getattr(a, field), getattr(b, field))


def assert_generator_trained(config, result):
  """Finite metrics and generator parameters moved away from their (seeded) initial values."""
  assert result['metrics'], 'no metrics returned'
  for name, value in result['metrics'].items():
    assert np.isfinite(value), (name, value)
  _, _, _, initial = setup(config)
  changed = changed_leaves(initial.gen_params, result['state'].gen_params)
  assert len(changed) >= len(leaves(initial.gen_params)) // 2, changed
  return initial


def copy_run(source: str, target) -> str:
  """A copy of a finished run's log_path, to resume without touching the shared one."""
  shutil.copytree(source, str(target))
  return str(target)


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope='module')
def base_run(small_design_dir, tmp_path_factory):
  """vanilla + WGAN-GP + MLP with dropout in the generator, 2 epochs."""
  config = tiny_config(data_path=small_design_dir,
                       log_path=str(tmp_path_factory.mktemp('base') / 'run'), **BASE)
  return config, trainer.train(config)


@pytest.fixture(scope='module')
def infogan_wgan_run(small_design_dir, tmp_path_factory):
  """InfoGAN + WGAN (weight clipping) + MLP, 2 epochs."""
  config = tiny_config(data_path=small_design_dir,
                       log_path=str(tmp_path_factory.mktemp('infogan') / 'run'), **INFOGAN_WGAN)
  return config, trainer.train(config)


# ---------------------------------------------------------------------------------------------
# 1. Every combination trains


@pytest.mark.slow
@pytest.mark.parametrize('gan_model,loss_mode,network', COMBINATIONS,
                         ids=['-'.join(c) for c in COMBINATIONS])
def test_every_combination_trains_two_epochs(gan_model, loss_mode, network, small_design_dir,
                                             tmp_path, request):
  """Two epochs: every metric finite at every step, generator and critic updated. The two
  combinations of the shared runs (vanilla-wgangp-mlp with generator dropout, infogan-wgan-mlp)
  go through trainer.train; the others through the compiled epoch function trainer.train uses
  (same code, without checkpoints and outputs)."""
  settings = dict(gan_model=gan_model, loss_mode=loss_mode, gen_mode=network, disc_mode=network)
  for fixture, shared in (('base_run', BASE), ('infogan_wgan_run', INFOGAN_WGAN)):
    if all(shared[k] == v for k, v in settings.items()):
      config, result = request.getfixturevalue(fixture)
      assert result['start_epoch'] == 0 and result['epochs'] == 2
      initial = assert_generator_trained(config, result)
      assert changed_leaves(initial.critic_params, result['state'].critic_params)
      return

  config, dataset, models, state = setup(
      tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), **settings))
  assert config.critic_iter == (1 if loss_mode == 'bce' else 2)
  _, _, _, initial = setup(config)  # donation may reuse `state`'s buffers
  epoch_fn = step.compile_epoch(config, models)
  data = jax.device_put(train_arrays(dataset))
  num_batches = len(dataset.train) // config.batch_size
  for _ in range(2):
    state, metrics = epoch_fn(state, data)
    metrics = jax.device_get(metrics)
    assert set(metrics) == set(step.METRICS)
    for name, values in metrics.items():
      assert values.shape == (num_batches,), name
      assert np.all(np.isfinite(values)), (name, values)
    for name in set(step.METRICS) - set(step.active_metrics(config)):
      assert np.all(metrics[name] == 0), name  # inactive terms are constant zeros
  assert int(state.step) == 2 * num_batches

  gen_changed = changed_leaves(initial.gen_params, state.gen_params)
  assert len(gen_changed) >= len(leaves(initial.gen_params)) // 2, gen_changed
  assert changed_leaves(initial.critic_params, state.critic_params)
  if gan_model == 'infogan':
    assert np.all(metrics['info_loss'] > 0) and np.all(metrics['q_real_loss'] > 0)
    assert changed_leaves(initial.q_params, state.q_params)
  else:
    assert not leaves(state.q_params)
  if loss_mode == 'wgangp':
    assert np.all(metrics['gradient_penalty'] > 0)
  if loss_mode == 'wgan':  # initialised wider than weight_clip: the first steps clip some
    assert np.all(metrics['clip_fraction'] > 0) and np.all(metrics['clip_fraction'] <= 1)
    for key, value in leaves(state.critic_params).items():
      if value.ndim >= 2 and 'aux_head' not in key:  # the classifier head is not a critic
        assert np.abs(value).max() <= config.weight_clip, key
  if config.aux_lambda > 0:
    assert np.all(metrics['aux_loss'] > 0) and np.all(metrics['aux_real_loss'] > 0)
    assert any('aux_head' in k for k in changed_leaves(initial.critic_params,
                                                        state.critic_params))
  has_attention = lambda tree: any('attn' in k for k in leaves(tree))
  assert has_attention(state.gen_params) == (network == 'selfattention')
  assert has_attention(state.critic_params) == (network == 'selfattention')


@pytest.mark.parametrize('network', ['mlp', 'selfattention'])
def test_the_abstract_state_has_the_initial_states_tree_shapes_and_dtypes(network,
                                                                         small_design_dir,
                                                                         tmp_path):
  """step.abstract_init (a checkpoint's restore target) describes step.init's state exactly and
  its models are interchangeable with init's."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), gan_model='infogan',
      gen_mode=network, disc_mode=network))
  abstract_models, abstract = step.abstract_init(config, dataset.spec, dataset.mask)
  flat, tree = jax.tree.flatten(state)
  abstract_flat, abstract_tree = jax.tree.flatten(abstract)
  assert tree == abstract_tree
  assert [(x.shape, x.dtype) for x in flat] == [(x.shape, x.dtype) for x in abstract_flat]
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in abstract_flat)
  assert abstract_models.gen_def == models.gen_def
  assert abstract_models.critic_def == models.critic_def


@pytest.mark.slow
def test_mixed_networks_mlp_generator_attention_critic(small_design_dir, tmp_path):
  """gen_mode and disc_mode are independent: an MLP generator against an attention critic."""
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'),
                       gen_mode='mlp', disc_mode='selfattention', loss_mode='bce')
  result = trainer.train(config)
  initial = assert_generator_trained(config, result)
  assert changed_leaves(initial.critic_params, result['state'].critic_params)
  assert not any('attn' in k for k in leaves(result['state'].gen_params))
  assert any('attn' in k for k in leaves(result['state'].critic_params))


# ---------------------------------------------------------------------------------------------
# 2. What a run leaves behind


def _bmp_bits_per_pixel(path: str) -> int:
  with open(path, 'rb') as f:
    header = f.read(30)
  assert header[:2] == b'BM', path
  return struct.unpack_from('<H', header, 28)[0]


def test_run_writes_log_tensorboard_checkpoint_and_designs(base_run):
  config, result = base_run
  resolved = config_lib.resolve(config)
  dataset = data.load_for_config(resolved)
  log_path = result['log_path']
  assert log_path == os.path.abspath(config.log_path)

  with open(os.path.join(log_path, 'log_summary')) as f:
    log = f.read()
  assert 'Resolved config' in log
  for key, value in resolved.to_dict().items():
    assert f'  {key} = {value!r}' in log, key
  for line in dataset.summary().splitlines():
    assert line in log
  assert re.findall(r'epoch (\d+)/2 ', log) == ['1', '2']
  # 216 training designs: 6 whole batches of 32 (the remainder is left out), one model
  assert ' Training epochs 1..2: 6 batches of 32 per epoch, 2 critic step(s) per generator step\n' \
      in log
  assert ' Trained 2 epoch(s) in ' in log and 'stopped after' not in log  # it ran to its end

  tb_dir = os.path.join(log_path, 'tensorboard_records')
  assert any(name.startswith('events.out.tfevents') for name in os.listdir(tb_dir))
  assert os.path.isdir(os.path.join(log_path, 'checkpoints', '2'))
  mngr = checkpoints.manager(os.path.join(log_path, 'checkpoints'), 3, create=False)
  assert checkpoints.read_meta(mngr)[0] == 2

  output = result['output_path']
  assert output == os.path.join(log_path, 'output')
  assert sorted(os.listdir(os.path.join(output, 'fake'))) == sorted(
      f'fake_{i}.bmp' for i in range(NUM_OUTPUTS))
  assert sorted(os.listdir(os.path.join(output, 'real'))) == sorted(
      f'real_{i}.bmp' for i in range(NUM_OUTPUTS))
  layout = dataset.layout
  dropped = [c for c in range(layout.full_width) if c not in layout.kept_columns]
  assert dropped, 'the test data should have dropped columns'
  val_designs = [images.read_rgb(os.path.join(config.data_path, name))
                 for name in dataset.val.names]
  used = []
  for i in range(NUM_OUTPUTS):
    fake_path = os.path.join(output, 'fake', f'fake_{i}.bmp')
    real_path = os.path.join(output, 'real', f'real_{i}.bmp')
    fake, real = images.read_rgb(fake_path), images.read_rgb(real_path)
    for path, image in ((fake_path, fake), (real_path, real)):
      assert image.shape == (10, 30, 3) and image.dtype == np.uint8
      assert _bmp_bits_per_pixel(path) == 24
      assert not image[:, dropped].any(), path
    # real_i is one of the validation designs, unchanged; fake_i was generated for its
    # conditions, so its strut pixels are exactly real_i's.
    matches = [j for j, design in enumerate(val_designs) if np.array_equal(design, real)]
    assert matches, f'real_{i}.bmp is not a validation design'
    used.append(matches[0])
    for r, c in FULL_STRUTS:
      np.testing.assert_array_equal(fake[r, c], real[r, c], err_msg=f'design {i} strut {r},{c}')
  assert len(set(used)) == NUM_OUTPUTS, used  # eight different designs
  # The generator did not just copy the real designs.
  fakes = np.stack([images.read_rgb(os.path.join(output, 'fake', f'fake_{i}.bmp'))
                    for i in range(NUM_OUTPUTS)])
  reals = np.stack([images.read_rgb(os.path.join(output, 'real', f'real_{i}.bmp'))
                    for i in range(NUM_OUTPUTS)])
  assert not np.array_equal(fakes, reals)


# ---------------------------------------------------------------------------------------------
# 3. WGAN weight clipping


def test_written_designs_replace_the_earlier_ones_and_only_them(tmp_path, monkeypatch):
  """A run that now writes fewer designs leaves none of the earlier ones behind, files of other
  names stay, and a write that fails leaves the earlier designs as they were."""
  designs = np.random.default_rng(0).integers(0, 256, (5, 10, 30, 3), dtype=np.uint8)
  directory = str(tmp_path / 'output' / 'fake')
  summaries.write_designs(directory, 'fake', designs)
  (tmp_path / 'output' / 'fake' / 'notes.txt').write_text('mine')
  summaries.write_designs(directory, 'fake', designs[3:])
  assert sorted(os.listdir(directory)) == ['fake_0.bmp', 'fake_1.bmp', 'notes.txt']
  np.testing.assert_array_equal(images.read_rgb(os.path.join(directory, 'fake_0.bmp')),
                                designs[3])
  write_rgb = images.write_rgb
  calls = []

  def failing(path, image, **kwargs):
    calls.append(path)
    if len(calls) == 2:
      raise OSError('disk full')
    write_rgb(path, image, **kwargs)

  monkeypatch.setattr(images, 'write_rgb', failing)
  with pytest.raises(OSError, match='disk full'):
    summaries.write_designs(directory, 'fake', designs)
  assert sorted(os.listdir(tmp_path / 'output')) == ['fake']
  assert sorted(os.listdir(directory)) == ['fake_0.bmp', 'fake_1.bmp', 'notes.txt']
  np.testing.assert_array_equal(images.read_rgb(os.path.join(directory, 'fake_1.bmp')),
                                designs[4])
  os.mkdir(os.path.join(directory, 'fake_9.bmp'))  # in the way of nothing: left alone
  summaries.write_designs(directory, 'fake', designs[:1])
  assert sorted(os.listdir(directory)) == ['fake_0.bmp', 'fake_9.bmp', 'notes.txt']
  os.mkdir(os.path.join(directory, 'fake_2.bmp'))  # in the way of a new design: refused first
  with pytest.raises(paths.OutputPathError, match='named like the designs it gets .fake_2.bmp'):
    summaries.write_designs(directory, 'fake', designs[:3])
  assert sorted(os.listdir(tmp_path / 'output')) == ['fake']
  assert sorted(os.listdir(directory)) == ['fake_0.bmp', 'fake_2.bmp', 'fake_9.bmp', 'notes.txt']


_KILLED_WHILE_WRITING_DESIGNS = '''
import os, sys
import numpy as np
from gan import images, summaries
write_rgb = images.write_rgb
def write_then_die(path, image, **kwargs):
  write_rgb(path, image, **kwargs)
  os._exit(9)  # as at a SIGKILL: nothing cleans up
images.write_rgb = write_then_die
summaries.write_designs(sys.argv[1], 'fake', np.zeros((3, 10, 30, 3), np.uint8))
'''


def test_the_staging_directory_of_a_killed_design_write_is_removed_by_the_next(tmp_path):
  """A run killed while it wrote its designs left their staging directory, half filled, beside
  them for good (output/fake.partial-...; every kill one more); the next write removes it. One of
  a live process, or of another host, stays."""
  directory = tmp_path / 'output' / 'fake'
  proc = subprocess.run([sys.executable, '-c', _KILLED_WHILE_WRITING_DESIGNS, str(directory)],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 9, proc.stderr
  assert [n for n in os.listdir(tmp_path / 'output') if n.startswith('fake.partial-')], (
      os.listdir(tmp_path / 'output'))  # as the kill left it
  live = f'fake.partial-{socket.gethostname()}-{os.getppid()}-writing'
  elsewhere = f'fake.partial-{socket.gethostname()}x-{finished_pid()}-writing'
  for name in (live, elsewhere):
    (tmp_path / 'output' / name).mkdir()
  summaries.write_designs(str(directory), 'fake', np.zeros((2, 10, 30, 3), np.uint8))
  assert sorted(os.listdir(tmp_path / 'output')) == sorted(['fake', live, elsewhere])
  assert sorted(os.listdir(directory)) == ['fake_0.bmp', 'fake_1.bmp']


def test_a_ctrl_c_while_the_designs_move_in_waits_for_the_move(tmp_path, monkeypatch):
  """train.py's second Ctrl-C raises at once, also while the run's designs replace the earlier
  ones: it stopped the move half-way, with some earlier designs deleted and the new ones gone
  with the staging directory (output/fake held 992 of 1,000 designs). The move completes first;
  the Ctrl-C then stands."""
  directory = str(tmp_path / 'output' / 'fake')
  old, new = np.zeros((4, 10, 30, 3), np.uint8), np.full((4, 10, 30, 3), 255, np.uint8)
  summaries.write_designs(directory, 'fake', old)
  unlink, sent = os.unlink, []

  def unlink_then_ctrl_c(path, *args, **kwargs):
    unlink(path, *args, **kwargs)
    if not sent:
      sent.append(path)
      os.kill(os.getpid(), signal.SIGINT)  # delivered to the main thread before kill returns

  monkeypatch.setattr(os, 'unlink', unlink_then_ctrl_c)
  with interrupts.watched(), pytest.raises(KeyboardInterrupt):
    summaries.write_designs(directory, 'fake', new)
  monkeypatch.undo()
  assert sorted(os.listdir(tmp_path / 'output')) == ['fake']
  assert sorted(os.listdir(directory)) == [f'fake_{i}.bmp' for i in range(4)]
  for i in range(4):
    np.testing.assert_array_equal(images.read_rgb(os.path.join(directory, f'fake_{i}.bmp')),
                                  new[i])


def test_a_first_ctrl_c_while_the_designs_move_in_goes_to_train_pys_handler_after_the_move(
    tmp_path, monkeypatch):
  """train.py's first Ctrl-C only asks for a stop: during the move it reaches that handler once
  the move is complete, and raises nothing (a KeyboardInterrupt there skipped the real designs)."""
  directory = str(tmp_path / 'fake')
  summaries.write_designs(directory, 'fake', np.zeros((4, 10, 30, 3), np.uint8))
  unlink, seen = os.unlink, []

  def unlink_then_ctrl_c(path, *args, **kwargs):
    unlink(path, *args, **kwargs)
    if not seen:
      seen.append('sent')
      os.kill(os.getpid(), signal.SIGINT)

  def first_ctrl_c(signum, frame):
    del signum, frame
    seen.append(sorted(os.listdir(directory)))

  monkeypatch.setattr(os, 'unlink', unlink_then_ctrl_c)
  previous = signal.signal(signal.SIGINT, first_ctrl_c)
  try:
    summaries.write_designs(directory, 'fake', np.full((4, 10, 30, 3), 255, np.uint8))
  finally:
    signal.signal(signal.SIGINT, previous)
  assert seen == ['sent', [f'fake_{i}.bmp' for i in range(4)]]
  assert images.read_rgb(os.path.join(directory, 'fake_3.bmp')).min() == 255


def test_a_staging_directory_with_this_process_id_goes_and_one_of_a_longer_host_name_stays(
    tmp_path):
  """A restarted container often gives the new trainer the id of the one killed (see
  gan/run_lock.py): that one's staging directory, named with this process's own id, was taken for
  a live writer's and stayed for good. And one of host '<this host>-<n>' (node and node-12 on a
  shared filesystem) was read as this host's of process <n>, and removed when no process here has
  that id, while its writer may be writing it."""
  output = tmp_path / 'output'
  output.mkdir()
  killed = f'fake.partial-{socket.gethostname()}-{os.getpid()}-writing'
  elsewhere = f'fake.partial-{socket.gethostname()}-{finished_pid()}-{os.getppid()}-writing'
  for name in (killed, elsewhere):
    (output / name).mkdir()
  summaries.write_designs(str(output / 'fake'), 'fake', np.zeros((2, 10, 30, 3), np.uint8))
  assert sorted(os.listdir(output)) == sorted(['fake', elsewhere])


def test_designs_that_cannot_be_written_at_the_end_stop_with_one_error(base_run, tmp_path,
                                                                       monkeypatch):
  """An output directory made read-only (or a disk that filled) during training: the designs
  written at the end failed with a PermissionError traceback; now one error that says the
  training is kept, and the earlier designs are as they were."""
  config, _ = base_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = copy_run(config.log_path, tmp_path / 'run')
  output = os.path.join(config.log_path, 'output')
  before = _files(output)

  def denied(path, *_, **__):
    raise PermissionError(13, 'Permission denied', path)

  monkeypatch.setattr(images, 'write_rgb', denied)
  with pytest.raises(paths.OutputPathError) as info:
    trainer.train(config)
  message = str(info.value)
  assert message.startswith(f'cannot write the designs to {output} (Permission denied: '
                            f'{output}{os.sep}fake.partial-'), message
  assert message.endswith('; the training is checkpointed, and the same command writes them '
                          'once it can write there'), message
  assert _files(output) == before


def test_wgan_clips_critic_weight_matrices_only(infogan_wgan_run):
  config, result = infogan_wgan_run
  clip = config.weight_clip
  matrices, vectors, aux_head = {}, {}, {}
  for key, value in leaves(result['state'].critic_params).items():
    (aux_head if 'aux_head' in key else matrices if value.ndim >= 2 else vectors)[key] = value
  assert matrices and vectors and aux_head
  for key, value in matrices.items():
    assert np.abs(value).max() <= clip, (key, np.abs(value).max())
  # Clipping really happened (fresh dense kernels are far larger than 0.01) ...
  assert any(np.isclose(np.abs(v).max(), clip) for v in matrices.values())
  # ... but not to LayerNorm scales and biases, nor to the InfoGAN Q head or the auxiliary
  # classifier.
  assert any(np.abs(v).max() > clip for v in aux_head.values() if v.ndim >= 2)
  assert any(np.abs(v).max() > clip for k, v in vectors.items() if 'scale' in k), vectors.keys()
  assert any(np.abs(v).max() > clip for v in leaves(result['state'].q_params).values()
             if v.ndim >= 2)


# ---------------------------------------------------------------------------------------------
# 4. InfoGAN: Q must recover the codes the generator was given


def _generator_step_conditions(config, models, state, batch, seeds, monkeypatch):
  """Runs the compiled generator step once per seed and returns, per seed, the metrics and the
  (durability, mass) arrays passed to every gan.step.generate and gan.losses.info_loss call, in
  call order. Values come back through jax.debug.callback, so they are recorded at whatever
  trace level the arguments live (inside value_and_grad too) and on every run, not only while
  tracing."""
  runs = []

  record = lambda kind, d, m: runs[-1][kind].append((d, m))
  record_labels(monkeypatch, losses, 'info_loss', (2, 3), record)
  record_labels(monkeypatch, step, 'generate', (4, 5), record)
  generator_step = jax.jit(functools.partial(step.generator_step, config, models))
  for seed in seeds:
    runs.append({'info_loss': [], 'generate': []})
    _, metrics = generator_step(state, batch, jax.random.PRNGKey(seed))
    jax.effects_barrier()
    runs[-1]['metrics'] = jax.device_get(metrics)
  return runs


def test_infogan_q_loss_targets_the_batch_labels(small_design_dir, tmp_path, monkeypatch):
  """InfoGAN's codes are the real batch's labels (step's docstring: uniform codes let a critic
  that sees the labels score a design by how common its label is): the generator is conditioned
  on them, and both terms of the Q loss ask Q for them."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), gan_model='infogan',
      loss_mode='wgan'))
  batch = spread_batch(config, dataset)
  labels = (np.asarray(batch['durability']), np.asarray(batch['mass']))
  runs = _generator_step_conditions(config, models, state, batch, (1, 2), monkeypatch)
  for run in runs:
    assert np.isfinite(run['metrics']['info_loss']) and run['metrics']['info_loss'] > 0
    assert len(run['generate']) == 1 and len(run['info_loss']) == 2, run
    for conditions in (run['generate'][0], *run['info_loss']):  # G, Q's fake and real terms
      np.testing.assert_array_equal(conditions[0], labels[0])
      np.testing.assert_array_equal(conditions[1], labels[1])


def test_vanilla_generator_gets_the_batch_labels(small_design_dir, tmp_path, monkeypatch):
  """The same conditions without a Q loss."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), loss_mode='wgan'))
  batch = spread_batch(config, dataset)
  labels = (np.asarray(batch['durability']), np.asarray(batch['mass']))
  (run,) = _generator_step_conditions(config, models, state, batch, (1,), monkeypatch)
  assert len(run['generate']) == 1 and not run['info_loss']
  np.testing.assert_array_equal(run['generate'][0][0], labels[0])
  np.testing.assert_array_equal(run['generate'][0][1], labels[1])
  assert run['metrics']['info_loss'] == 0


def _softplus(x):
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def _generator_gradient(config, models, state, batch, **weights):
  """The gradient of the generator step's objective over (gen_params, q_params), read off one
  plain SGD step of rate 1 (params - new params), with the config's loss weights overridden."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.update(weights)
  sgd = optax.sgd(1.0)
  models = models._replace(gen_tx=sgd)
  params = (state.gen_params, state.q_params)
  state = state._replace(gen_opt=sgd.init(params))
  with jax.disable_jit():  # op by op: a compile per weight setting took longer
    after, _ = step.generator_step(config, models, state, batch, jax.random.PRNGKey(2))
  return jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), params,
                      (after.gen_params, after.q_params))


@pytest.mark.parametrize('gan_model,loss_mode', [('vanilla', 'bce'), ('infogan', 'wgangp')])
def test_the_step_objectives_are_the_readmes_sums_of_terms(gan_model, loss_mode,
                                                           small_design_dir, tmp_path,
                                                           monkeypatch):
  """README, "Losses": the critic minimises adv_D + lambda_gp GP + aux_lambda_critic L_A(real),
  the generator adv_G + constraint_lambda strut + info_lambda (Q terms) + aux_lambda L_A(fake),
  adv the loss mode's own. The training tests only see finite losses and moved parameters:
  a weight left out, or BCE's logits scored as Wasserstein's, trained as well."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), gan_model=gan_model,
      loss_mode=loss_mode, lambda_gp=3.0, aux_lambda_critic=0.7))
  batch = spread_batch(config, dataset)
  scores = {}
  for name in ('critic_loss_bce', 'critic_loss_wasserstein', 'generator_loss_bce',
               'generator_loss_wasserstein'):
    scores[name] = []

    def recorded(*args, _name=name, _real=getattr(losses, name)):
      jax.debug.callback(lambda *a: scores[_name].append([np.asarray(x) for x in a]), *args,
                         ordered=True)
      return _real(*args)

    monkeypatch.setattr(losses, name, recorded)
  _, critic = jax.jit(functools.partial(step.critic_step, config, models))(
      state, batch, jax.random.PRNGKey(1))
  _, generator = jax.jit(functools.partial(step.generator_step, config, models))(
      state, batch, jax.random.PRNGKey(2))
  jax.effects_barrier()
  critic, generator = jax.device_get((critic, generator))
  family = 'bce' if loss_mode == 'bce' else 'wasserstein'
  other = 'wasserstein' if loss_mode == 'bce' else 'bce'
  assert not scores[f'critic_loss_{other}'] and not scores[f'generator_loss_{other}']
  ((real, fake),) = scores[f'critic_loss_{family}']
  ((gen_fake,),) = scores[f'generator_loss_{family}']
  if family == 'bce':
    adv_d = _softplus(-real).mean() + _softplus(fake).mean()
    adv_g = _softplus(-gen_fake).mean()
  else:
    adv_d, adv_g = np.mean(fake) - np.mean(real), -np.mean(gen_fake)
    np.testing.assert_allclose(critic['wasserstein'], -adv_d, rtol=1e-5, atol=1e-6)
  gp = critic['gradient_penalty']
  assert (gp > 0) == (loss_mode == 'wgangp')
  assert critic['aux_real_loss'] > 0
  np.testing.assert_allclose(critic['critic_loss'],
                             adv_d + 3.0 * gp + 0.7 * critic['aux_real_loss'], rtol=1e-5,
                             atol=1e-5)
  np.testing.assert_allclose(generator['gen_loss'], adv_g, rtol=1e-5, atol=1e-6)

  # The generator's objective is linear in each weight, with a non-zero slope: the term counts.
  weights = ['constraint_lambda', 'aux_lambda'] + (['info_lambda'] if gan_model == 'infogan'
                                                   else [])
  for weight in weights:
    g0, g1, g2 = (_generator_gradient(config, models, state, batch, **{weight: w})
                  for w in (0.0, 1.0, 2.0))
    slope = jax.tree.map(lambda a, b: a - b, g1, g0)
    assert max(np.abs(x).max() for x in jax.tree.leaves(slope)) > 1e-4, weight
    for a, b, c in zip(*(jax.tree.leaves(g) for g in (g0, slope, g2))):
      np.testing.assert_allclose(c - a, 2 * b, rtol=1e-3, atol=1e-5, err_msg=weight)
    if weight == 'info_lambda':  # Q enters L_G through its two info terms only, real one included
      q_leaves = jax.tree.leaves(g0[1])
      assert q_leaves and max(np.abs(x).max() for x in jax.tree.leaves(slope[1])) > 1e-4
      for a in q_leaves:
        np.testing.assert_array_equal(a, np.zeros_like(a))


@pytest.mark.parametrize('loss_mode', ['bce', 'wgangp'])
def test_only_wgan_clips_the_critics_weights(loss_mode, small_design_dir, tmp_path):
  """Weight clipping is WGAN's Lipschitz constraint; WGAN-GP's is the penalty and BCE has none,
  so a critic step leaves their weight matrices beyond weight_clip (fresh ones are larger)."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), loss_mode=loss_mode,
      aux_lambda=0.0))
  with jax.disable_jit():
    after, _ = step.critic_step(config, models, state, spread_batch(config, dataset),
                                jax.random.PRNGKey(1))
  assert changed_leaves(state.critic_params, after.critic_params)
  matrices = [v for v in leaves(after.critic_params).values() if v.ndim >= 2]
  assert matrices and max(np.abs(v).max() for v in matrices) > 10 * config.weight_clip


def test_the_critic_steps_real_score_is_the_critics_value_of_the_labelled_batch(small_design_dir,
                                                                                  tmp_path):
  """real_score = mean_b D(x_b, d_b, m_b, f_b): with random class projections (they start at
  zero, where the labels do not matter), the batch's own labels in their own slots."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), loss_mode='wgan'))
  rng = np.random.default_rng(0)
  critic_params = jax.tree_util.tree_map_with_path(
      lambda path, x: (jnp.asarray(rng.normal(0, 0.3, x.shape), x.dtype)
                       if 'embed' in jax.tree_util.keystr(path) else x), state.critic_params)
  state = state._replace(critic_params=critic_params)
  batch = spread_batch(config, dataset)
  with jax.disable_jit():
    _, metrics = step.critic_step(config, models, state, batch, jax.random.PRNGKey(1))
  critic = step._critic(models, state.critic_params, state.q_params)
  scores = critic(batch['images'], batch['durability'], batch['mass'], batch['fixed'],
                  models.mask)
  swapped = critic(batch['images'], batch['mass'] % 3, batch['durability'] % 3, batch['fixed'],
                   models.mask)
  assert abs(float(jnp.mean(scores)) - float(jnp.mean(swapped))) > 1e-3  # the test can fail
  np.testing.assert_allclose(metrics['real_score'], jnp.mean(scores), rtol=1e-5, atol=1e-6)


def test_an_update_draws_new_keys_and_logs_the_clip_fraction_of_the_clipped_weights(
    small_design_dir, tmp_path, monkeypatch):
  """Each critic step and the generator step of an update draw from keys of their own, and the
  state's key moves on (else the critic steps of an update, or the updates of an epoch, reused
  one noise); clip_fraction is the share of the clipped weight matrices' entries (not the
  auxiliary head's) at +-weight_clip after the critic steps."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), loss_mode='wgan',
      aux_lambda=1.0, critic_iter=2))
  keys = []
  for name in ('critic_step', 'generator_step'):
    def recorded(config_, models_, s, batch, key, _real=getattr(step, name)):
      jax.debug.callback(lambda k: keys.append(tuple(np.asarray(k).ravel())), key, ordered=True)
      return _real(config_, models_, s, batch, key)

    monkeypatch.setattr(step, name, recorded)
  after, metrics = jax.jit(functools.partial(step.update, config, models))(
      state, spread_batch(config, dataset))
  jax.effects_barrier()
  state_keys = {tuple(np.asarray(s.key).ravel()) for s in (state, after)}
  assert len(keys) == 3 and len(set(keys) | state_keys) == 5, keys
  clipped = [v for k, v in leaves(after.critic_params).items()
             if v.ndim >= 2 and 'aux_head' not in k]
  at_bound = sum(np.sum(np.abs(v) >= config.weight_clip) for v in clipped)
  expected = at_bound / sum(v.size for v in clipped)
  aux = [v for k, v in leaves(after.critic_params).items() if v.ndim >= 2 and 'aux_head' in k]
  assert aux and 0 < expected < 1
  np.testing.assert_allclose(metrics['clip_fraction'], expected, rtol=1e-6)


def test_the_generator_and_the_critic_draw_their_dropout_masks_from_keys_of_their_own(
    small_design_dir, tmp_path, monkeypatch):
  """In the critic step and in the generator step, G's and D's dropout streams start from
  different keys (one key for both drew masks from the same bits in each network)."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), loss_mode='bce',
      gen_dropout=0.1, disc_dropout=0.1))  # bce: no penalty to compile
  keys, make_rngs = [], step.dropout_rngs

  def recorded(key):
    jax.debug.callback(lambda k: keys.append(tuple(np.asarray(k).ravel())), key, ordered=True)
    return make_rngs(key)

  monkeypatch.setattr(step, 'dropout_rngs', recorded)
  batch = spread_batch(config, dataset)
  for name, seed in (('critic_step', 1), ('generator_step', 2)):
    keys.clear()
    jax.jit(functools.partial(getattr(step, name), config, models))(
        state, batch, jax.random.PRNGKey(seed))
    jax.effects_barrier()
    assert len(keys) == 2 and keys[0] != keys[1], (name, keys)


def test_the_generator_step_keeps_batchnorms_running_statistics(small_design_dir, tmp_path):
  """With gen_norm='batch' the generator's step moves its running statistics (what sampling
  normalises with); the critic step's generator call, in train mode too, does not keep them."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), gen_norm='batch'))
  batch = spread_batch(config, dataset)
  assert leaves(state.gen_rest)
  with jax.disable_jit():
    after_critic, _ = step.critic_step(config, models, state, batch, jax.random.PRNGKey(1))
    after_gen, _ = step.generator_step(config, models, state, batch, jax.random.PRNGKey(2))
  assert not changed_leaves(state.gen_rest, after_critic.gen_rest)
  assert changed_leaves(state.gen_rest, after_gen.gen_rest)


def test_each_optimiser_is_adam_with_its_own_learning_rate_and_the_configs_betas(
    small_design_dir, tmp_path):
  """Adam written out in NumPy (bias-corrected moments, eps 1e-8 added to the root) over three
  steps with gradients from 1e-3 to 10: the generator's at learning_rate_gen, the critic's at
  learning_rate_disc, both with opt_beta1 and opt_beta2 (the defaults have equal rates)."""
  lrs, b1, b2 = {'gen': 1e-3, 'critic': 3e-4}, 0.5, 0.8
  _, _, models, _ = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), learning_rate_gen=lrs['gen'],
      learning_rate_disc=lrs['critic'], opt_beta1=b1, opt_beta2=b2, lr_decay_steps=0))
  rng = np.random.default_rng(0)
  grads = [np.array([1e-3, 1e-1, 1.0, 10.0]) * rng.uniform(0.5, 1.5, 4) for _ in range(3)]
  for name, tx in (('gen', models.gen_tx), ('critic', models.critic_tx)):
    params = jnp.zeros(4, jnp.float32)
    opt = tx.init(params)
    m, v, expected = np.zeros(4), np.zeros(4), np.zeros(4)
    for t, g in enumerate(grads, 1):
      updates, opt = tx.update(jnp.asarray(g, jnp.float32), opt, params)
      params = params + updates
      m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g ** 2
      expected -= lrs[name] * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + 1e-8)
    np.testing.assert_allclose(np.asarray(params), expected, rtol=1e-4, err_msg=name)


# ---------------------------------------------------------------------------------------------
# 5.-8. Determinism, resuming and failure


def test_same_seed_same_parameters_other_seed_different(base_run, small_design_dir, tmp_path):
  config, result = base_run
  same = trainer.train(tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'same'),
                                   **BASE))
  assert_state_equal(result['state'], same['state'])
  other_config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'other'),
                             seed=1, **BASE)
  # The seed drives the initialisation itself (not only the train/validation split) ...
  _, _, _, init0 = setup(config)
  _, _, _, init1 = setup(other_config)
  assert changed_leaves(init0.gen_params, init1.gen_params)
  assert changed_leaves(init0.critic_params, init1.critic_params)
  # (also a seed 2**32 apart, which jax.random.PRNGKey would read as the same 32-bit seed)
  _, _, _, init_far = setup(tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'far'),
                                        **dict(BASE, seed=config.seed + 2**32, data_seed=0)))
  assert changed_leaves(init0.gen_params, init_far.gen_params)
  # ... and the trained parameters.
  other = trainer.train(other_config)
  assert changed_leaves(result['state'].gen_params, other['state'].gen_params)
  assert changed_leaves(result['state'].critic_params, other['state'].critic_params)


def _assert_resume_matches_straight(settings, two_epoch_log_path, small_design_dir, tmp_path):
  """Trains 4 epochs in one go and resumes a copy of a 2-epoch run to 4; returns both results
  after checking that every array of their final states is bitwise equal. The resume restores
  into a target of shapes only: it initialises no state."""
  straight = trainer.train(tiny_config(data_path=small_design_dir,
                                       log_path=str(tmp_path / 'straight'), epochs=4, **settings))
  log_path = copy_run(two_epoch_log_path, tmp_path / 'resumed')
  compiled = []
  real_compile_epoch = step.compile_epoch

  def recording_compile_epoch(config, models, *rest, **options):
    compiled.append(real_compile_epoch(config, models, *rest, **options))
    return compiled[-1]

  def no_init(*args, **kwargs):
    raise AssertionError('a resume initialised a state')

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(step, 'compile_epoch', recording_compile_epoch)
    patch.setattr(step, 'init', no_init)
    resumed = trainer.train(tiny_config(data_path=small_design_dir, log_path=log_path, epochs=4,
                                        **settings))
  # The restored state and the states the epochs return share one compilation.
  assert len(compiled) == 1
  if hasattr(compiled[0], '_cache_size'):
    assert compiled[0]._cache_size() == 1
  assert resumed['start_epoch'] == 2 and straight['start_epoch'] == 0
  assert int(resumed['state'].step) == int(straight['state'].step) == 4 * (216 // 32)
  assert_state_equal(straight['state'], resumed['state'])
  with open(os.path.join(log_path, 'log_summary')) as f:
    assert 'Resumed from the checkpoint of epoch 2' in f.read()
  assert os.path.isdir(os.path.join(log_path, 'checkpoints', '4'))
  return straight, resumed


@pytest.mark.slow
@pytest.mark.parametrize('run', ['base_run', 'infogan_wgan_run'])
def test_resuming_gives_the_same_parameters_as_training_straight(run, small_design_dir, tmp_path,
                                                                 request):
  """4 epochs in one go == 2 epochs, then the same command with epochs=4 (resumed from the
  checkpoint of epoch 2): parameters, optimiser states, step and PRNG key (which drives the
  shuffles, noise and dropout masks)."""
  config, two_epochs = request.getfixturevalue(run)
  assert config.checkpoint_every == 2 and config.epochs == 2
  settings = BASE if run == 'base_run' else INFOGAN_WGAN
  _, resumed = _assert_resume_matches_straight(settings, two_epochs['log_path'],
                                               small_design_dir, tmp_path)
  if run == 'infogan_wgan_run':
    assert leaves(resumed['state'].q_params), 'InfoGAN Q head expected'


@pytest.mark.slow
def test_resuming_a_batchnorm_dropout_generator_is_exact(small_design_dir, tmp_path):
  """Batch statistics (gen_rest) and dropout keys resume too (the original's generator)."""
  settings = dict(BASE, gen_norm='batch', gen_dropout=0.1)
  first = trainer.train(tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'two'),
                                    **settings))
  _, resumed = _assert_resume_matches_straight(settings, first['log_path'], small_design_dir,
                                               tmp_path)
  assert leaves(resumed['state'].gen_rest), 'BatchNorm statistics expected'
  assert changed_leaves(first['state'].gen_rest, resumed['state'].gen_rest)


def test_resuming_on_other_designs_warns_that_the_split_is_drawn_anew(base_run, small_design_dir,
                                                                      tmp_path):
  """The checkpoint records which designs it was trained on; the same classes with one design
  more resume (more data may be meant), with a warning in the log."""
  config, result = base_run
  mngr = checkpoints.manager(os.path.join(result['log_path'], 'checkpoints'), 3, create=False)
  assert checkpoints.read_meta(mngr)[1]['data'] == data.load_for_config(config).fingerprint()
  more = shutil.copytree(small_design_dir, tmp_path / 'more')
  shutil.copy(next(more.iterdir()), more / '1.0_a_2.13_extra.bmp')
  config = ml_collections.ConfigDict(config.to_dict())
  config.update(log_path=copy_run(result['log_path'], tmp_path / 'run'), data_path=str(more),
                epochs=3)
  trainer.train(config)
  with open(os.path.join(config.log_path, 'log_summary')) as f:
    log = f.read()
  assert (f'warning: the designs in {more} are not those the model was trained on (240 then, '
          '241 now)') in log


def test_resuming_on_fewer_designs_than_a_batch_does_not_ask_for_a_smaller_batch(
    small_design_dir, tmp_path, no_model):
  """A run with checkpoints keeps its batch_size: 'use batch_size <= N' sent the user to a
  resume that is refused for the batch_size it changed."""
  fewer = tmp_path / 'fewer'
  fewer.mkdir()
  for name in sorted(os.listdir(small_design_dir))[:20]:
    shutil.copy(os.path.join(small_design_dir, name), fewer / name)
  config = tiny_config(data_path=str(fewer), log_path=str(tmp_path / 'run'))
  os.makedirs(tmp_path / 'run' / 'checkpoints' / '2')  # a checkpoint: train() resumes
  with pytest.raises(ConfigError) as excinfo:
    trainer.train(config)
  message = str(excinfo.value)
  assert 'batch_size=32 is larger than the training set (18 designs)' in message
  assert 'keep their batch_size on resume' in message and 'batch_size <=' not in message


@pytest.mark.parametrize('resuming', [False, True])
def test_a_batch_the_size_of_the_training_set_fits(resuming):
  """'use batch_size <= N' holds at N: a training set of exactly one batch trains one batch an
  epoch (fresh or resumed); one design fewer is refused."""
  config = ml_collections.ConfigDict({'batch_size': 216, 'log_path': 'runs/x'})
  dataset = types.SimpleNamespace(train=[None] * 216, data_dir='designs')
  trainer.check_batch_fits(config, dataset, resuming)
  dataset.train.pop()
  with pytest.raises(ConfigError, match=r'^batch_size=216 is larger than the training set '
                     r'\(215 designs\)'):
    trainer.check_batch_fits(config, dataset, resuming)
  config.batch_size, dataset.train = 2, [None]
  with pytest.raises(ConfigError, match=r'the training set \(1 design\)'):
    trainer.check_batch_fits(config, dataset, resuming)


def test_resuming_with_a_different_model_is_refused(base_run, small_design_dir, tmp_path,
                                                    monkeypatch):
  _, result = base_run
  log_path = copy_run(result['log_path'], tmp_path / 'run')
  before = _files(log_path)
  monkeypatch.setattr(step, 'compile_epoch', lambda *a: pytest.fail('compiled before refusing'))
  config = tiny_config(data_path=small_design_dir, log_path=log_path, epochs=4, **BASE)
  config.zdim = 8
  with pytest.raises(ConfigError, match=r'zdim: 16 -> 8'):
    trainer.train(config)
  # Refused before the run directory gets a log line, an event file or a directory.
  assert _files(log_path) == before
  config.zdim = 16
  config.batch_size = 16  # not the model, but fixed too: the error must not call it the model
  with pytest.raises(ConfigError, match=r'cannot change on resume \(batch_size: 32 -> 16\).*'
                                        r'batch_size stay'):
    trainer.train(config)
  config.batch_size = 32
  # Another split, as another data_seed gives: designs it trained on would be validation designs.
  config.val_fraction = 0.5
  with pytest.raises(ConfigError, match=r'cannot change on resume \(val_fraction: 0.1 -> 0.5\)'):
    trainer.train(config)
  config.val_fraction = 0.1
  assert sorted(os.listdir(os.path.join(log_path, 'checkpoints'))) == ['2']
  config.durability_values = '1.0,1.1,1.2,1.3,1.4,1.5,1.6,1.7,1.8,1.9,2.5'  # one class more
  with pytest.raises(ConfigError, match=r'other vocabularies or layout \(durability 1, 1.1, .*, '
                                        r'1.9 -> 1, 1.1, .*, 1.9, 2.5\)'):
    trainer.train(config)
  config.durability_values = ''
  config.zdim = 16
  config.critic_iter = 3  # the critic's lr schedule counts critic steps: it would jump
  with pytest.raises(ConfigError,
                     match=r'trained with critic_iter=2, not 3.*--config.critic_iter=2'):
    trainer.train(config)


def _files(directory) -> dict:
  """Every file and directory under `directory`, with the contents of the files."""
  found = {}
  for root, dirs, files in os.walk(directory):
    for name in dirs:
      found[os.path.relpath(os.path.join(root, name), directory)] = None
    for name in files:
      with open(os.path.join(root, name), 'rb') as f:
        found[os.path.relpath(os.path.join(root, name), directory)] = f.read()
  return found


def _train_into_a_nan(base_run, small_design_dir, tmp_path, monkeypatch, bad_epoch):
  """Resumes a copy of `base_run` (2 epochs) to epoch 4 with a checkpoint every epoch; epoch
  `bad_epoch` reports critic_loss = NaN at its 4th step (and gen_loss = inf at its 5th).
  Returns (error message, checkpoint directory, {epoch: state after it}, config)."""
  _, result = base_run
  log_path = copy_run(result['log_path'], tmp_path / 'run')
  real_compile_epoch = step.compile_epoch
  states = {2: result['state']}

  def compile_epoch_with_a_nan(config, models, *rest, **options):
    epoch_fn = real_compile_epoch(config, models, *rest, **options)

    def epoch(state, data):
      new_state, metrics = epoch_fn(state, data)
      epoch = max(states) + 1
      if epoch < bad_epoch:
        states[epoch] = jax.device_get(new_state)
        return new_state, metrics
      metrics = {k: np.array(v) for k, v in metrics.items()}
      metrics['gen_loss'][BAD_STEP + 1] = np.inf
      metrics['critic_loss'][BAD_STEP] = np.nan
      return new_state, metrics
    epoch.lower = epoch_fn.lower  # the trainer compiles ahead of the first epoch
    return epoch

  monkeypatch.setattr(step, 'compile_epoch', compile_epoch_with_a_nan)
  config = tiny_config(data_path=small_design_dir, log_path=log_path, epochs=4,
                       checkpoint_every=1, **BASE)
  with pytest.raises(TrainingError) as excinfo:
    trainer.train(config)
  message = str(excinfo.value)
  steps_per_epoch = 216 // 32
  assert 'critic_loss' in message and 'gen_loss' not in message  # the first bad step's term
  assert f'step {(bad_epoch - 1) * steps_per_epoch + BAD_STEP + 1}' in message
  assert f'(epoch {bad_epoch})' in message
  assert f'checkpoint (epoch {bad_epoch - 1})' in message
  assert '\n' not in message
  return message, os.path.join(log_path, 'checkpoints'), states, config


BAD_STEP = 3  # index of the NaN step within the bad epoch


def test_non_finite_loss_stops_training_and_keeps_the_last_checkpoint(
    base_run, small_design_dir, tmp_path, monkeypatch):
  """NaN in the first resumed epoch: training stops naming the term and the step, and the
  checkpoint of epoch 2 stays, intact."""
  _, directory, states, config = _train_into_a_nan(base_run, small_design_dir, tmp_path,
                                                   monkeypatch, bad_epoch=3)
  assert sorted(os.listdir(directory)) == ['2']
  mngr = checkpoints.manager(directory, 3, create=False)
  epoch, meta = checkpoints.read_meta(mngr)
  assert epoch == 2 and meta['epoch'] == 2
  _, _, _, abstract = setup(config)
  assert_state_equal(checkpoints.restore_state(mngr, 2, abstract), states[2])
  with open(os.path.join(config.log_path, 'log_summary'), encoding='utf-8') as f:
    assert 'Stopped: critic_loss became non-finite in epoch 3' in f.read()


def test_a_state_the_last_update_of_an_epoch_made_non_finite_is_never_checkpointed(
    base_run, small_design_dir, tmp_path, monkeypatch):
  """The losses are computed before each update, so a generator that an epoch's last update made
  NaN shows in none of that epoch's metrics: the state itself is checked, and training stops
  before it is checkpointed (it used to be saved as epoch 3 and named the last good one)."""
  _, result = base_run
  log_path = copy_run(result['log_path'], tmp_path / 'run')
  real_compile_epoch = step.compile_epoch
  epochs = [2]

  def compile_epoch_ending_in_a_nan(config, models, *rest, **options):
    epoch_fn = real_compile_epoch(config, models, *rest, **options)

    def epoch(state, data):
      new_state, metrics = epoch_fn(state, data)
      epochs.append(epochs[-1] + 1)
      if epochs[-1] == 3:  # every loss finite, the generator after the last update not
        new_state = new_state._replace(gen_params=jax.tree.map(
            lambda leaf: leaf.at[(0,) * leaf.ndim].set(jnp.nan), new_state.gen_params))
      return new_state, metrics
    epoch.lower = epoch_fn.lower
    return epoch

  monkeypatch.setattr(step, 'compile_epoch', compile_epoch_ending_in_a_nan)
  config = tiny_config(data_path=small_design_dir, log_path=log_path, epochs=4,
                       checkpoint_every=1, **BASE)
  with pytest.raises(TrainingError) as excinfo:
    trainer.train(config)
  message = str(excinfo.value)
  assert message.startswith('the training state (parameters or optimiser state) became '
                            f'non-finite in the update of generator step {3 * (216 // 32)} '
                            '(epoch 3)'), message
  assert 'The last good checkpoint (epoch 2) is kept' in message
  assert sorted(os.listdir(os.path.join(log_path, 'checkpoints'))) == ['2']


def test_finite_checks_each_model_of_a_sweep_state_and_only_float_arrays():
  """step.finite: a bool per model of a (K, ...) state; integer leaves (step, key) are skipped."""
  ones = jnp.ones((2, 3, 4))
  state = step.TrainState(step=jnp.zeros((2,), jnp.int32), key=jnp.zeros((2, 2), jnp.uint32),
                          gen_params={'w': ones}, gen_ema={'w': ones}, gen_rest={},
                          critic_params={'b': jnp.ones((2, 5))}, q_params={},
                          gen_opt=(jnp.zeros((2,), jnp.int32),), critic_opt=())
  assert bool(step.finite(step.unstack(state, 0)))
  np.testing.assert_array_equal(step.finite(state, 2), [True, True])
  state = state._replace(critic_params={'b': state.critic_params['b'].at[1, 4].set(jnp.inf)})
  np.testing.assert_array_equal(step.finite(state, 2), [True, False])
  assert not bool(step.finite(step.unstack(state, 1)))


def test_an_update_makes_critic_iter_critic_steps_and_one_generator_step(small_design_dir,
                                                                         tmp_path):
  """Per generator update the critic takes critic_iter optimiser steps (WGAN's n_critic): the
  optimisers' step counts say how many each made."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), critic_iter=3, **BASE))
  counts = lambda opt: {int(v) for k, v in leaves(opt).items() if k.endswith('.count')}
  assert counts(state.critic_opt) == counts(state.gen_opt) == {0}
  after, _ = jax.jit(functools.partial(step.update, config, models))(
      state, spread_batch(config, dataset))
  assert counts(after.critic_opt) == {3} and counts(after.gen_opt) == {1}
  assert int(after.step) == 1


def test_an_updates_critic_metrics_are_its_last_critic_steps(small_design_dir, tmp_path,
                                                            monkeypatch):
  """With critic_iter = 3 the update reports the critic's values of its last critic step (the
  critic the generator then trained against), not those of the first."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), critic_iter=3, **BASE))
  estimates = []
  real_estimate = losses.wasserstein_estimate

  def recorded(real, fake):
    value = real_estimate(real, fake)
    jax.debug.callback(lambda v: estimates.append(float(v)), value, ordered=True)
    return value

  monkeypatch.setattr(losses, 'wasserstein_estimate', recorded)
  _, metrics = jax.jit(functools.partial(step.update, config, models))(
      state, spread_batch(config, dataset))
  jax.effects_barrier()
  assert len(estimates) == 3 and estimates[0] != estimates[-1]
  assert float(metrics['wasserstein']) == estimates[-1]


def test_an_epoch_draws_its_batches_from_a_fresh_shuffle(monkeypatch):
  """train_epoch: n // batch_size batches of distinct rows, in an order that is random and
  another every epoch (the rows left over differ too), never rows beyond num_rows (padding)."""
  monkeypatch.setattr(step, 'update', lambda config, models, s, batch: (s, batch['row']))
  config = ml_collections.ConfigDict(dict(batch_size=4))
  rows = jnp.arange(12)
  arrays = {'images': jnp.zeros((12, 1)), 'row': rows}
  state = step.TrainState(jnp.zeros((), jnp.int32), jax.random.PRNGKey(0), *[{}] * 7)
  orders = []
  for _ in range(4):
    state, batches = step.train_epoch(config, None, state, arrays, num_rows=10)
    batches = np.asarray(batches)
    assert batches.shape == (2, 4) and len(set(batches.ravel())) == 8
    assert batches.max() < 10
    orders.append(tuple(batches.ravel()))
  assert len(set(orders)) == 4 and tuple(range(8)) not in orders
  assert len({frozenset(range(10)) - set(o) for o in orders}) > 1  # the remainder moves


def test_adamw_decays_the_weights_adam_does_not():
  """With zero gradients AdamW's update is -lr * weight_decay * w (decoupled weight decay), Adam's
  is zero: weight_decay must reach optax.adamw."""
  params = {'w': jnp.array([2.0, -4.0])}
  zero = {'w': jnp.zeros(2)}
  adamw = step.make_optimizer('adamw', 0.1, 0.5, 0.999, 0.01)
  updates, _ = adamw.update(zero, adamw.init(params), params)
  np.testing.assert_allclose(updates['w'], [-0.1 * 0.01 * 2.0, 0.1 * 0.01 * 4.0], rtol=1e-6)
  adam = step.make_optimizer('adam', 0.1, 0.5, 0.999, 0.01)
  updates, _ = adam.update(zero, adam.init(params), params)
  np.testing.assert_array_equal(updates['w'], [0.0, 0.0])


@pytest.mark.parametrize('loss_mode', ['bce', 'wgan', 'wgangp'])
def test_active_metrics_are_the_loss_modes_own(loss_mode):
  """clip_fraction only for weight clipping, the penalty's two only for WGAN-GP: the others are
  constant zeros that would be logged as if measured."""
  active = set(step.active_metrics(config_lib.resolve(tiny_config(
      gan_model='vanilla', loss_mode=loss_mode, aux_lambda=0.0))))
  assert ('clip_fraction' in active) == (loss_mode == 'wgan')
  assert ('gradient_penalty' in active) == ('grad_norm' in active) == (loss_mode == 'wgangp')
  assert not active & {'info_loss', 'q_real_loss', 'aux_loss', 'aux_real_loss'}
  assert {'critic_loss', 'gen_loss', 'strut_error', 'real_score', 'fake_score'} <= active


def test_a_damaged_latest_checkpoint_names_the_earlier_one(base_run, small_design_dir, tmp_path,
                                                           monkeypatch):
  _, directory, _, config = _train_into_a_nan(base_run, small_design_dir, tmp_path, monkeypatch,
                                              bad_epoch=4)
  assert sorted(os.listdir(directory)) == ['2', '3']
  for name in os.listdir(os.path.join(directory, '3', 'state')):
    if name != '_METADATA':
      path = os.path.join(directory, '3', 'state', name)
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  monkeypatch.undo()
  with pytest.raises(checkpoints.CheckpointError) as info:
    trainer.train(config)
  message = str(info.value)
  assert message.startswith(f'checkpoint 3 in {directory} is damaged'), message
  assert message.endswith(f'; the earlier checkpoint 2 is kept (remove '
                          f'{os.path.join(directory, "3")} to resume from checkpoint 2)'), message


@pytest.mark.parametrize('damage', ['metadata file removed', 'step directory emptied'])
def test_a_latest_checkpoint_with_unreadable_metadata_names_the_earlier_one(base_run, tmp_path,
                                                                             caplog, damage):
  """Damaged arrays were named together with the earlier checkpoint to resume from; a damaged
  metadata file or an emptied step directory were not, and the emptied one came after orbax's
  warning that its metadata file does not exist."""
  config, _ = base_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = copy_run(config.log_path, tmp_path / 'run')
  directory = os.path.join(config.log_path, 'checkpoints')
  latest = os.path.join(directory, '3')
  shutil.copytree(os.path.join(directory, '2'), latest)  # a later checkpoint, then damaged
  if damage == 'metadata file removed':
    os.remove(os.path.join(latest, 'meta', 'metadata'))
  else:
    for name in os.listdir(latest):
      path = os.path.join(latest, name)
      shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
  with pytest.raises(checkpoints.CheckpointError) as info:
    trainer.train(config)
  message = str(info.value)
  assert message.startswith(f'checkpoint 3 in {directory} is unreadable: '), message
  assert message.endswith(f'; the earlier checkpoint 2 is kept (remove {latest} to resume from '
                          'checkpoint 2)'), message
  assert not [r for r in caplog.records if r.name == 'absl' and r.levelno >= logging.WARNING], (
      caplog.text)


def test_resuming_logs_changed_settings_and_replayed_epochs_show_once(base_run, tmp_path,
                                                                     monkeypatch):
  """Resumed from epoch 2 with other settings, twice: the second time epoch 3 is replayed (its
  checkpoint removed, as if killed before it), and TensorBoard shows it once; every event writer
  opened is written to (an opened writer makes an event file, empty if unused)."""
  import tensorboardX  # pylint: disable=import-outside-toplevel
  writes = []

  class CountingWriter(tensorboardX.SummaryWriter):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      self.index = len(writes)
      writes.append(0)

    def add_scalar(self, *args, **kwargs):
      writes[self.index] += 1
      return super().add_scalar(*args, **kwargs)

  monkeypatch.setattr(tensorboardX, 'SummaryWriter', CountingWriter)
  config, _ = base_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = copy_run(config.log_path, tmp_path / 'run')
  config.update(epochs=3, learning_rate_disc=3e-4, eval_every=0)
  trainer.train(config)
  shutil.rmtree(os.path.join(config.log_path, 'checkpoints', '3'))
  assert trainer.train(config)['start_epoch'] == 2
  with open(os.path.join(config.log_path, 'log_summary'), encoding='utf-8') as f:
    log = f.read()
  assert log.count('Settings changed since that checkpoint: eval_every: 10 -> 0; '
                   'learning_rate_disc: 0.0002 -> 0.0003') == 2
  events = event_accumulator.EventAccumulator(
      os.path.join(config.log_path, 'tensorboard_records'), purge_orphaned_data=True)
  events.Reload()
  assert [e.step for e in events.Scalars('train/critic_loss')] == [1, 2, 3]
  # A resumed run's first epoch is its first too: it draws the real designs at the epoch it
  # resumes from, as the first run did at 0.
  assert {e.step for e in events.Images('real/designs_by_class')} == {0, 2}
  assert len(writes) == 2 and all(writes), writes


def test_a_run_that_starts_again_replaces_the_events_of_one_that_died_unsaved(
    small_design_dir, tmp_path, monkeypatch):
  """A run killed before its first checkpoint (during that save, say) had written its first
  epoch's events; the same command starts again from epoch 1, and TensorBoard showed that epoch
  twice (and the real designs' grid of step 0 twice)."""
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=1,
                       checkpoint_every=1, eval_every=0, **BASE)

  def killed(*_, **__):
    raise RuntimeError('killed')

  monkeypatch.setattr(checkpoints, 'save', killed)
  with pytest.raises(RuntimeError, match='killed'):
    trainer.train(config)
  monkeypatch.undo()
  assert trainer.train(config)['start_epoch'] == 0
  events = event_accumulator.EventAccumulator(
      os.path.join(config.log_path, 'tensorboard_records'), purge_orphaned_data=True)
  events.Reload()
  assert [e.step for e in events.Scalars('train/critic_loss')] == [1]
  assert [e.step for e in events.Images('real/designs_by_class')] == [0]


def test_an_epochs_best_save_commits_before_its_checkpoint(small_design_dir, tmp_path,
                                                           monkeypatch):
  """Otherwise a run killed between the two resumes after an epoch whose best/ save was lost,
  and best/ may miss the best epoch for good."""
  events = []
  real_save = checkpoints.save

  def recording_save(mngr, epoch, *args, **kwargs):
    real_save(mngr, epoch, *args, **kwargs)
    mngr.wait_until_finished()
    events.append((os.path.basename(str(mngr.directory)), epoch))

  monkeypatch.setattr(checkpoints, 'save', recording_save)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=2,
                       eval_every=1, checkpoint_every=1, eval_per_pair=2)
  trainer.train(config)
  assert events == [('best', 1), ('checkpoints', 1), ('best', 2), ('checkpoints', 2)]


def test_a_changed_best_metric_is_refused_where_best_checkpoints_exist(base_run, tmp_path):
  config, _ = base_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = copy_run(config.log_path, tmp_path / 'run')
  assert os.path.isdir(os.path.join(config.log_path, 'best'))
  config.update(epochs=3, best_metric='fd')
  with pytest.raises(ConfigError, match=r'by oracle_exact \(best_metric=auto on the designs the '
                     r'run was trained on\), not fd; resume with --config.best_metric=auto '
                     'or'):
    trainer.train(config)
  config.best_metric = 'oracle_exact'  # what 'auto' ranks by on the synthetic designs
  assert trainer.train(config)['start_epoch'] == 2


def test_designs_the_oracle_no_longer_labels_are_refused_where_best_ranks_by_it(base_run,
                                                                               tmp_path):
  """best_metric=auto ranks best/ by oracle_exact on the synthetic designs, else by
  classifier_accuracy_generated. A few designs of the user's own added since made 'auto' the
  other metric on resume: the run trained an epoch, then failed best/'s save ("cannot write a
  checkpoint in .../best ('classifier_accuracy_generated')"), and so did every later attempt.
  Refused before anything is written."""
  config, _ = base_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = copy_run(config.log_path, tmp_path / 'run')
  data_path = shutil.copytree(config.data_path, tmp_path / 'data')
  rng = np.random.default_rng(0)
  for i in range(5):  # noise in the columns that hold material: not what the oracle measures
    image = np.zeros((10, 30, 3), np.uint8)
    for start, stop in ((0, 6), (10, 16), (20, 22)):
      image[:, start:stop] = rng.integers(0, 256, (10, stop - start, 3))
    images.write_rgb(str(data_path / f'1.0_x_2.13_mine{i}.bmp'), image)
  config.update(data_path=str(data_path), epochs=3)
  before = _tree_snapshot(config.log_path)
  with pytest.raises(ConfigError, match=(
      'best ranks checkpoints by oracle_exact .* are not the synthetic ones the oracle labels, '
      'where it ranks by classifier_accuracy_generated; resume with the designs it was trained '
      'on, or use')):
    trainer.train(config)
  # Naming the other metric: no setting ranks by oracle_exact on these designs, so none is advised
  # (it advised --config.best_metric=auto, which ranks by the other one here).
  config.best_metric = 'classifier_accuracy_generated'
  with pytest.raises(ConfigError, match=r'by oracle_exact \(best_metric=auto .*\), not '
                     'classifier_accuracy_generated; resume with the designs it was trained on '
                     'or use'):
    trainer.train(config)
  assert _tree_snapshot(config.log_path) == before
  # Also without evaluation: its checkpoints would record these designs, so that a later resume
  # that evaluates passed this check and failed best/'s first save.
  config.update(best_metric='auto', eval_every=0)
  with pytest.raises(ConfigError, match='best ranks checkpoints by oracle_exact'):
    trainer.train(config)
  assert _tree_snapshot(config.log_path) == before


def test_a_changed_best_metric_is_accepted_where_best_holds_no_checkpoint(small_design_dir,
                                                                         tmp_path):
  """A run trained without evaluation has no best/: the early check let a new best_metric pass,
  then the run logged its header, _Evaluator created an empty best/ and the restore refused the
  resume ('best ranks checkpoints by ...'), and every later attempt too."""
  log_path = str(tmp_path / 'run')
  trainer.train(tiny_config(data_path=small_design_dir, log_path=log_path, epochs=1,
                            eval_every=0))
  assert not os.path.exists(os.path.join(log_path, 'best'))
  trainer.train(tiny_config(data_path=small_design_dir, log_path=log_path, epochs=2,
                            eval_every=1, eval_per_pair=2, best_metric='fd'))
  assert os.listdir(os.path.join(log_path, 'best')) == ['2']


def _best_meta(log_path: str) -> tuple[list[str], dict]:
  """(the step directories of <log_path>/best, the metadata of its checkpoint)."""
  steps = sorted(os.listdir(os.path.join(log_path, 'best')))
  mngr = checkpoints.manager(os.path.join(log_path, 'best'), keep=1, create=False)
  try:
    return steps, checkpoints.read_meta(mngr, int(steps[-1]))[1]
  finally:
    mngr.close()


def test_best_of_a_run_stopped_before_its_first_checkpoint_is_refused_not_replaced(
    small_design_dir, tmp_path):
  """A run stopped after an evaluation but before its first checkpoint (a second Ctrl-C, SIGKILL,
  a non-finite loss) leaves only best/; the next run there trained afresh, perhaps another model,
  and orbax skipped its best/ saves up to the stale step, so best/ kept the other model (and a
  new best_metric failed a later save as "cannot write a checkpoint in .../best ('fd')"). That
  checkpoint is the only copy of its model: refused, before anything is written."""
  log_path = str(tmp_path / 'run')
  trainer.train(tiny_config(data_path=small_design_dir, log_path=log_path, epochs=2,
                            eval_every=1, eval_per_pair=2, gen_hidden_dims=(16,)))
  shutil.rmtree(os.path.join(log_path, 'checkpoints'))  # as if stopped before checkpoint 2
  before = sorted(os.listdir(log_path)), _best_meta(log_path)
  with open(os.path.join(log_path, 'log_summary'), encoding='utf-8') as f:
    log = f.read()
  for best_metric in ('auto', 'fd'):
    with pytest.raises(ConfigError, match=(
        f'{re.escape(os.path.join(log_path, "best"))} holds the best checkpoint \\(epoch '
        f'{before[1][0][-1]}\\) of a run stopped before its first regular checkpoint.*remove')):
      trainer.train(tiny_config(data_path=small_design_dir, log_path=log_path, epochs=2,
                                eval_every=1, eval_per_pair=2, best_metric=best_metric))
  assert (sorted(os.listdir(log_path)), _best_meta(log_path)) == before
  with open(os.path.join(log_path, 'log_summary'), encoding='utf-8') as f:
    assert f.read() == log


def test_best_checkpoints_after_the_resumed_epoch_are_evaluated_again(small_design_dir,
                                                                      tmp_path, monkeypatch):
  """Killed between epoch 2's evaluation and its checkpoint, a run resumes from epoch 1 with
  best/2 still there: orbax skipped the new evaluation's save of epoch 2, so best/ kept the
  model of settings since changed. It is removed and replaced."""
  evaluate_generator, calls = trainer.evaluate.evaluate_generator, []

  def improving(*args, **kwargs):  # every evaluation the best so far: best/ holds the latest
    calls.append(1)
    return dict(evaluate_generator(*args, **kwargs), oracle_exact=len(calls) / 100)

  monkeypatch.setattr(trainer.evaluate, 'evaluate_generator', improving)
  log_path = str(tmp_path / 'run')
  settings = dict(data_path=small_design_dir, log_path=log_path, epochs=2, eval_every=1,
                  checkpoint_every=1, eval_per_pair=2)
  trainer.train(tiny_config(**settings))
  shutil.rmtree(os.path.join(log_path, 'checkpoints', '2'))
  assert _best_meta(log_path)[0] == ['2']
  assert trainer.train(tiny_config(**settings, learning_rate_gen=1e-5))['start_epoch'] == 1
  steps, meta = _best_meta(log_path)
  assert steps == ['2'] and meta['config']['learning_rate_gen'] == 1e-5
  with open(os.path.join(log_path, 'log_summary'), encoding='utf-8') as f:
    assert 'best/ checkpoints after epoch 1 removed (2)' in f.read()


def test_best_metric_fd_is_refused_without_two_held_out_designs(tmp_path):
  """With one held-out design every evaluation's fd is null: the run used to train an epoch, then
  fail with a TypeError traceback when orbax ranked the second best checkpoint by None."""
  data_path = tmp_path / 'data'
  assert designs.main(['--out', str(data_path), '--num', '12', '--seed', '3']) == 0
  with pytest.raises(ConfigError, match='best_metric=fd needs at least 2 held-out designs'):
    trainer.train(tiny_config(data_path=str(data_path), log_path=str(tmp_path / 'run'), epochs=3,
                              batch_size=4, eval_every=1, eval_per_pair=1, best_metric='fd'))


@pytest.mark.parametrize('best_metric', ['oracle_exact', 'fd'])
def test_a_best_metric_the_data_cannot_give_is_refused_before_the_run_directory_is_written(
    base_run, tmp_path, monkeypatch, best_metric):
  """best_metric=oracle_exact on designs the oracle does not label (or fd without 2 held-out
  designs) was refused only once the run had opened, after training the evaluation classifier: a
  new log_path was made with a log_summary, and a resumed run's log_summary got the refused
  attempt appended. A refused command writes nothing."""
  monkeypatch.setattr(trainer.metrics_lib, 'is_synthetic', lambda _: False)
  monkeypatch.setattr(data.Dataset, 'held_out',  # one held-out design
                      lambda dataset: ('val', dataset.val.take(np.arange(1))))
  trained = []
  monkeypatch.setattr(classifier_lib, 'load_or_train_classifier',
                      lambda dataset: trained.append(dataset))
  monkeypatch.setattr(trainer.evaluate, 'reference',
                      lambda *_: types.SimpleNamespace(features=np.zeros((1, 4))))
  config, _ = base_run
  resumed = str(tmp_path / 'resumed')
  shutil.copytree(config.log_path, resumed)
  if best_metric == 'fd':  # else refused as a best/ that ranks by another metric
    shutil.rmtree(os.path.join(resumed, 'best'))
  before = _tree_snapshot(resumed)
  fresh = tmp_path / 'new' / 'run'
  message = ('needs the synthetic designs' if best_metric == 'oracle_exact'
             else 'needs at least 2 held-out designs')
  for log_path in (resumed, str(fresh)):
    settings = {**config.to_dict(), 'log_path': log_path}
    with pytest.raises(ConfigError, match=f'best_metric={best_metric} {message}'):
      trainer.train(ml_collections.ConfigDict(
          {**settings, 'epochs': 3, 'eval_every': 1, 'best_metric': best_metric}))
  assert _tree_snapshot(resumed) == before
  assert not os.path.exists(tmp_path / 'new')
  assert not trained


def test_an_eval_per_pair_beyond_one_evaluation_is_refused_before_training(small_design_dir,
                                                                           tmp_path):
  """eval_per_pair=100000000 passed the config checks, trained the first epoch and then failed
  at its evaluation with a MemoryError traceback (12e9 designs held in memory)."""
  log_path = tmp_path / 'run'
  with pytest.raises(evaluate.EvaluationError,
                     match='^eval_per_pair=100000000 asks for 12,000,000,000 designs'):
    trainer.train(tiny_config(data_path=small_design_dir, log_path=str(log_path), eval_every=1,
                              eval_per_pair=100_000_000, **BASE))
  assert not os.path.exists(log_path)
  # without evaluations nothing generates them
  assert trainer.train(tiny_config(data_path=small_design_dir, log_path=str(log_path), epochs=1,
                                   eval_every=0, eval_per_pair=100_000_000, **BASE))


def test_checkpoint_of_the_same_run_is_complete_when_training_stops(
    base_run, small_design_dir, tmp_path, monkeypatch):
  """NaN in epoch 4, after epoch 3 was checkpointed in the same run: when train() raises, the
  message's "last good checkpoint (epoch 3)" must already be on disk (the CLI exits right away).
  Orbax finalises a save about 0.5 s after it starts, so this is checked immediately."""
  _, directory, states, config = _train_into_a_nan(base_run, small_design_dir, tmp_path,
                                                   monkeypatch, bad_epoch=4)
  assert sorted(os.listdir(directory)) == ['2', '3']
  mngr = checkpoints.manager(directory, 3, create=False)
  _, _, _, abstract = setup(config)
  for epoch in (2, 3):
    assert checkpoints.read_meta(mngr, epoch)[1]['epoch'] == epoch
    assert_state_equal(checkpoints.restore_state(mngr, epoch, abstract), states[epoch])


def test_a_checkpoint_write_that_fails_stops_with_one_error_and_the_run_resumes(
    small_design_dir, tmp_path, monkeypatch):
  """A checkpoint that orbax fails to write in the background (a full disk, a directory made
  read-only during training) surfaced as orbax's own error, a page of traceback from the next save
  or from closing the manager: now one CheckpointError that names the directory and the reason.
  The complete checkpoints are kept, the run's lock is released and the same command resumes."""
  # What TensorStore raises for a write to a full disk (its paths shortened).
  full = ValueError('OUT_OF_RANGE: Error writing "gen_params.out.bias.value/0" in OCDBT database '
                    'at local file "/r/checkpoints/2.orbax-checkpoint-tmp/state/": Failed writing: '
                    '"/r/checkpoints/2.orbax-checkpoint-tmp/state/d/1": Failed to write 4096 bytes '
                    "to file 8: No space left on device [os_error_code='28']")
  manager = checkpoints.ocp.CheckpointManager
  real = {name: getattr(manager, name) for name in ('save', 'wait_until_finished', 'close')}
  failed = set()  # the managers whose background write failed, as orbax keeps that error

  def save(self, epoch, *args, **kwargs):
    if os.path.basename(str(self.directory)) == 'checkpoints' and epoch == 2:
      failed.add(id(self))  # save returns; the write fails in the background
      return True
    return real['save'](self, epoch, *args, **kwargs)

  def wait_until_finished(self):
    real['wait_until_finished'](self)
    if id(self) in failed:
      raise full

  def close(self):
    had_failed = id(self) in failed
    failed.discard(id(self))
    real['close'](self)
    if had_failed:
      raise full

  for name, method in (('save', save), ('wait_until_finished', wait_until_finished),
                       ('close', close)):
    monkeypatch.setattr(manager, name, method)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=3,
                       checkpoint_every=1, eval_every=0, **BASE)
  directory = os.path.join(config.log_path, 'checkpoints')
  with pytest.raises(checkpoints.CheckpointError) as info:
    trainer.train(config)
  assert str(info.value) == (f'cannot write a checkpoint in {directory} (No space left on '
                             'device); the complete checkpoints are kept, and the same command '
                             'resumes from the latest once it can write there'), info.value
  assert os.listdir(directory) == ['1']
  assert not os.path.exists(os.path.join(config.log_path, run_lock.LOCK_NAME))
  monkeypatch.undo()
  result = trainer.train(config)
  assert result['start_epoch'] == 1 and result['epochs'] == 3


# trainer.train whose disk fills (RLIMIT_FSIZE: this process's files stop at 1 MiB) once epoch 19
# has trained, compiled, so that the checkpoint of epoch 20 (2.4 MiB) fails in the background.
# train() asks stop_requested once after each epoch but the last: the epochs it trained.
_TRAIN_WHILE_THE_DISK_FILLS = '''
import resource, signal, sys, threading, time
from absl import logging as absl_logging
from gan import checkpoints, trainer
from tests import helpers
absl_logging.set_verbosity(absl_logging.WARNING)  # as train.py
checkpoints.silence_reraised_write_failures()
config = helpers.tiny_config(sys.argv[1], sys.argv[2], epochs=40, checkpoint_every=20,
                             log_every=1000, sample_every=1000, eval_every=0,
                             gen_hidden_dims=(256, 256))
asked = []

def stop_requested():
  asked.append(True)
  if len(asked) == 19:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
  if len(asked) == 21:  # epoch 21 ends once the write of epoch 20 has failed, however busy the
    # CPU: its finalize thread (orbax's name) has ended (polled: a join would raise its error here)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(
        t.name == 'save_finalize' and t.is_alive() for t in threading.enumerate()):
      time.sleep(0.01)
  return False

try:
  trainer.train(config, stop_requested)
except checkpoints.CheckpointError as e:
  print(f'refused: {e}')
print('epochs trained:', len(asked))
'''


@pytest.mark.slow
def test_a_checkpoint_write_that_fails_stops_the_run_at_the_next_epoch_end(small_design_dir,
                                                                          tmp_path):
  """A checkpoint that fails in the background (a full disk) was noticed only at the next save:
  checkpoint_every epochs (here to the end of the run) trained after it, none of them saved. Now
  the run stops with the CheckpointError at the first epoch end after the failure."""
  log_path = tmp_path / 'run'
  proc = subprocess.run([sys.executable, '-c', _TRAIN_WHILE_THE_DISK_FILLS, small_design_dir,
                         str(log_path)], cwd=REPO_ROOT, capture_output=True, text=True,
                        timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu',
                                              JAX_DISABLE_MOST_OPTIMIZATIONS='1'))
  assert proc.returncode == 0, proc.stderr
  directory = log_path / 'checkpoints'
  assert proc.stdout.endswith(
      f'refused: cannot write a checkpoint in {directory} (File too large); the complete '
      'checkpoints are kept, and the same command resumes from the latest once it can write '
      'there\nepochs trained: 21\n'), proc.stdout[-2000:] + proc.stderr[-4000:]
  assert not directory.exists()  # emptied of the unfinished write's temporary directory


# ---------------------------------------------------------------------------------------------
# 9. One compilation per run


def test_epoch_function_compiles_once(small_design_dir, tmp_path, monkeypatch):
  """A ragged training set (216 = 6 x 32 + 24, a different remainder dropped each epoch) and the
  state an epoch returns never trigger a new trace or compilation."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), loss_mode='bce'))
  assert len(dataset.train) % config.batch_size != 0
  traces = []
  real_train_epoch = step.train_epoch

  def counting_train_epoch(*args, **kwargs):
    traces.append(1)  # runs only while tracing
    return real_train_epoch(*args, **kwargs)

  monkeypatch.setattr(step, 'train_epoch', counting_train_epoch)
  epoch_fn = step.compile_epoch(config, models)
  data = jax.device_put(train_arrays(dataset))
  keys = []
  for _ in range(3):
    state, metrics = epoch_fn(state, data)
    assert metrics['critic_loss'].shape == (len(dataset.train) // config.batch_size,)
    keys.append(np.asarray(state.key).tobytes())
  assert len(set(keys)) == 3  # a fresh shuffle every epoch
  assert len(traces) == 1
  if hasattr(epoch_fn, '_cache_size'):
    assert epoch_fn._cache_size() == 1



# ---------------------------------------------------------------------------------------------
# 10. Config validation


@pytest.fixture
def no_model(monkeypatch):
  """Fails the test if training gets as far as building or compiling a model."""
  monkeypatch.setattr(step, 'init', lambda *a: pytest.fail('model built before the error'))
  monkeypatch.setattr(step, 'compile_epoch', lambda *a: pytest.fail('compiled before the error'))


@pytest.mark.parametrize('field', ['gan_model', 'loss_mode', 'gen_mode', 'disc_mode', 'optimizer',
                                   'datashape', 'gen_norm', 'attention', 'attention_noise'])
def test_unknown_choice_is_refused_with_the_allowed_values(field, small_design_dir, tmp_path,
                                                           no_model):
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'))
  config[field] = 'nope'
  with pytest.raises(ConfigError) as excinfo:
    trainer.train(config)
  message = str(excinfo.value)
  assert field in message and 'nope' in message
  for allowed in config_lib.CHOICES[field]:
    assert allowed in message
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


@pytest.mark.parametrize('overrides,expected', [
    (dict(embed_dim=16, num_heads=3, gen_mode='selfattention'),
     ['embed_dim=16', 'num_heads=3', '1, 2, 4, 8, 16']),
    (dict(learning_rate_gen=-1e-4), ['learning_rate_gen', '> 0']),
    (dict(learning_rate_disc=0.0), ['learning_rate_disc', '> 0']),
    (dict(batch_size=217), ['batch_size=217', '216', 'batch_size <= 216']),
    (dict(width=30), ['width=30', 'dropempty', '14']),
    (dict(height=11), ['height=11', '10']),
    (dict(input_dim=900), ['input_dim=900', '420']),
    (dict(datashape='original', width=14), ['width=14', '30']),
    (dict(critic_iter=0), ['critic_iter', 'positive integer']),
    (dict(critic_iter=10 ** 6), ['critic_iter must be at most 1000']),
    (dict(gen_dropout=1.0), ['gen_dropout', '[0, 1)']),
    (dict(num_heads=1, attention='axial', disc_mode='selfattention'),
     ['attention=axial', 'num_heads >= 2', 'full']),
    (dict(seed=-1), ['seed must be a non-negative integer, got -1']),
    # jax.random.PRNGKey raised an OverflowError (a traceback) once the data had loaded, and the
    # run left its log and an empty checkpoints/ behind.
    (dict(seed=2**63 - 2), ['seed must be at most 9223372036854775805 with num_seeds=1',
                            'got 9223372036854775806']),
    (dict(seed=2**63 - 9, num_seeds=8), ['seed must be at most 9223372036854775798 with '
                                          'num_seeds=8']),
    (dict(num_output_images=-1), ['num_output_images must be a positive integer, got -1']),
    (dict(attention_features=-1), ['attention_features must be an integer >= 0 (0: the mean of '
                                   'the tokens), got -1']),
    (dict(attention_features=True), ['attention_features must be an integer >= 0', 'got True']),
    (dict(gen_mode='selfattention', gen_dropout=0.3, gen_norm='batch'),
     ["gen_dropout=0.3 and gen_norm='batch' would be ignored", 'gen_mode=mlp']),
    (dict(disc_mode='selfattention', disc_norm='none'),
     ["disc_norm='none' would be ignored", 'disc_norm=layer']),
    # An infinite weight or learning rate failed after compilation as a non-finite loss; None (a
    # config file's) raised a TypeError; mask_input=None trained without the mask.
    (dict(lambda_gp=float('inf')), ['lambda_gp must be a finite number >= 0, got inf']),
    (dict(learning_rate_gen=float('inf')), ['learning_rate_gen must be a finite number > 0']),
    (dict(learning_rate_disc=None), ['learning_rate_disc must be a finite number > 0, got None']),
    (dict(gen_dropout=None), ['gen_dropout must be in [0, 1), got None']),
    (dict(mask_input=None), ['mask_input must be True or False, got None']),
    (dict(gen_hidden_dims=(True,)), ['gen_hidden_dims must be a non-empty list of widths']),
    # optax's int32 step count overflowed (a traceback once the data had loaded).
    (dict(lr_decay_steps=2**30, critic_iter=2),
     ['lr_decay_steps must be at most 1073741823 with critic_iter=2', 'got 1073741824']),
    # A config file's misspelt field was a new field nothing read: the default trained instead.
    (dict(gen_hiden_dims=(64,)), ["field 'gen_hiden_dims' that nothing reads (did you mean "
                                  'gen_hidden_dims?)']),
], ids=['heads', 'lr_gen', 'lr_disc', 'batch', 'width', 'height', 'input_dim', 'original_width',
        'critic_iter', 'critic_iter_huge', 'dropout', 'axial_heads', 'seed', 'seed_huge',
        'seed_huge_sweep',
        'num_output_images', 'attention_features', 'attention_features_bool',
        'attention_gen_dropout', 'attention_disc_norm', 'lambda_gp_inf',
        'lr_gen_inf', 'lr_disc_none', 'dropout_none', 'mask_input_none', 'hidden_dims_bool',
        'lr_decay_steps_huge', 'misspelt_field'])
def test_invalid_config_is_refused_before_compilation(overrides, expected, small_design_dir,
                                                      tmp_path, no_model):
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), **overrides)
  with pytest.raises(ConfigError) as excinfo:
    trainer.train(config)
  for text in expected:
    assert text in str(excinfo.value)


def test_an_mlp_model_is_not_refused_for_attention_settings_it_does_not_read():
  """embed_dim=16 with num_heads=3 was refused for MLP networks too, which have no heads."""
  config = default.get_config()
  config.update(gen_mode='mlp', disc_mode='mlp', embed_dim=16, num_heads=3)
  assert config_lib.resolve(config).num_heads == 3
  config.num_heads = 1  # axial attention needs two heads, an MLP none
  assert config_lib.resolve(config).attention == 'axial'


def test_a_log_path_that_is_not_utf8_is_refused_before_anything_is_written(tmp_path):
  """orbax (TensorStore) cannot write under such a name: the run trained its first epoch, then
  failed its first checkpoint save as 'cannot write a checkpoint ... (Unable to cast Python
  instance of type str ...)', and said the same command would resume once it could write."""
  config = default.get_config()
  config.log_path = os.path.join(str(tmp_path), os.fsdecode(b'run\xff'))
  with pytest.raises(ConfigError, match=r"log_path '.*run\\udcff' has a name that is not UTF-8, "
                     'under which orbax .* cannot write checkpoints; give a UTF-8 name'):
    config_lib.resolve(config)
  assert not os.listdir(tmp_path)


def test_an_empty_log_path_or_a_config_missing_fields_is_refused():
  config = default.get_config()
  config.log_path = ' '
  with pytest.raises(ConfigError, match='log_path is empty'):
    config_lib.resolve(config)
  partial = ml_collections.ConfigDict({'epochs': 3, 'log_path': 'runs/x'})
  with pytest.raises(ConfigError, match=r'no field attention, attention_features, attention_noise, '
                     r'aux_lambda and \d+ more; start a config file from configs/default.py'):
    config_lib.resolve(partial)


def test_a_saved_attention_config_with_the_ignored_norm_or_dropout_still_loads():
  """Checkpoints written before those settings were refused for attention networks load, and
  resume with the settings that say what the networks always did."""
  saved = config_lib.resolve(default.get_config()).to_dict()
  saved.update(gen_mode='selfattention', gen_dropout=0.3, gen_norm='batch', disc_dropout=0.3,
               disc_norm='none')
  loaded = config_lib.from_saved(saved)
  assert (loaded.gen_dropout, loaded.gen_norm) == (0.0, 'layer')
  assert (loaded.disc_dropout, loaded.disc_norm) == (0.3, 'none')  # the MLP critic uses them
  new = config_lib.resolve(ml_collections.ConfigDict(dict(saved, gen_dropout=0.0,
                                                          gen_norm='layer')))
  assert config_lib.model_fields(saved) == config_lib.model_fields(new)


def test_an_mlp_run_saved_before_attention_fields_resumes_with_todays_defaults():
  """Its saved config has no `attention` (legacy 'full') and embed_dim 32 (the old default):
  neither enters an MLP network, so neither may refuse the resume; with an attention network
  both still do."""
  saved = config_lib.resolve(default.get_config()).to_dict()
  del saved['attention']
  saved['embed_dim'] = 32
  new = config_lib.resolve(default.get_config())
  assert config_lib.model_fields(config_lib.from_saved(saved)) == config_lib.model_fields(new)
  saved['gen_mode'] = new.gen_mode = 'selfattention'
  old = config_lib.model_fields(config_lib.from_saved(saved))
  changed = {k for k, v in config_lib.model_fields(new).items() if old[k] != v}
  assert changed == {'attention', 'embed_dim'}


def test_attention_networks_saved_before_token_noise_and_dense_features_are_rebuilt_as_trained():
  """A saved config without `attention_noise` and `attention_features` (legacy 'shared' and 0)
  builds the attention networks it was trained with: no per-token noise projection, a critic
  that mean-pools its tokens; a resume with today's values is a model change. Each field counts
  only where its network is an attention network."""
  saved = config_lib.resolve(ml_collections.ConfigDict(dict(
      default.get_config().to_dict(), gen_mode='selfattention', disc_mode='selfattention')))
  saved = saved.to_dict()
  del saved['attention_noise'], saved['attention_features']
  old = config_lib.from_saved(saved)
  assert (old.attention_noise, old.attention_features) == ('shared', 0)
  new = config_lib.resolve(ml_collections.ConfigDict(dict(saved, attention_noise='token',
                                                          attention_features=256)))
  build = lambda c: (networks.build_generator(c, (10, 14, 3), 10, 12, nnx.Rngs(0)),
                     networks.build_critic(c, (10, 14, 3), 10, 12, nnx.Rngs(0)))
  (old_gen, old_critic), (new_gen, new_critic) = build(old), build(new)
  assert (old_gen.noise_in, old_critic.body.readout) == (None, None)
  assert new_gen.noise_in is not None and new_critic.body.num_features == 256
  changed = lambda a, b: {k for k, v in config_lib.model_fields(a).items()
                          if config_lib.model_fields(b)[k] != v}
  assert changed(old, new) == {'attention_noise', 'attention_features'}
  for network, field in (('gen', 'attention_features'), ('disc', 'attention_noise')):
    # The other network an MLP: only this network's field counts.
    mlp = {f'{"disc" if network == "gen" else "gen"}_mode': 'mlp'}
    old_one = ml_collections.ConfigDict(dict(old.to_dict(), **mlp))
    new_one = ml_collections.ConfigDict(dict(new.to_dict(), **mlp))
    assert changed(old_one, new_one) == {'attention_noise', 'attention_features'} - {field}


@pytest.mark.parametrize('field, value, reads', [
    ('gen_hidden_dims', (32,), dict(gen_mode='mlp')),
    ('disc_hidden_dims', (32,), dict(disc_mode='mlp')),
    ('hidden_dim', 7, dict(gan_model='infogan')),
    ('hidden_dim', 7, dict(aux_lambda=1.0)),
], ids=['gen_hidden_dims', 'disc_hidden_dims', 'hidden_dim_q_head', 'hidden_dim_aux_head'])
def test_a_width_no_network_reads_does_not_refuse_a_resume_but_is_logged(field, value, reads):
  """A self-attention run's gen/disc_hidden_dims and a vanilla run's hidden_dim without the
  auxiliary head build nothing: a resume that changes them was refused as a model change. Where a
  network reads them, it still is."""
  unread = dict(gen_mode='selfattention', disc_mode='selfattention', gan_model='vanilla',
                aux_lambda=0.0)
  saved = config_lib.resolve(ml_collections.ConfigDict(dict(
      default.get_config().to_dict(), **unread)))
  new = ml_collections.ConfigDict(dict(saved.to_dict(), **{field: value}))
  assert config_lib.model_fields(saved) == config_lib.model_fields(new)
  assert config_lib.changed_settings(saved, new) == [f'{field}: {saved[field]!r} -> {value!r}']
  saved = ml_collections.ConfigDict(dict(saved.to_dict(), **reads))
  new = ml_collections.ConfigDict(dict(saved.to_dict(), **{field: value}))
  assert config_lib.model_fields(saved)[field] != config_lib.model_fields(new)[field]
  assert config_lib.changed_settings(saved, new) == []


def test_a_run_saved_before_the_aux_head_and_lr_decay_is_refused_naming_their_fields():
  """A checkpoint from before aux_lambda and lr_decay_steps existed (no head, a constant lr),
  resumed with today's defaults: the error names the fields to set, not model_fields' own keys
  (aux_head, aux_regression_head, lr_decay), which no config has."""
  saved = config_lib.resolve(default.get_config()).to_dict()
  for field in ('aux_lambda', 'aux_lambda_critic', 'aux_regression', 'lr_decay_steps'):
    del saved[field]
  with pytest.raises(ConfigError) as refused:
    resume.check_resumable({'config': saved}, config_lib.resolve(default.get_config()), None,
                           'runs/old', True)
  message = str(refused.value)
  assert 'aux_lambda: 0.0 -> 3.0 (the auxiliary classifier head exists only with aux_lambda > 0)' \
      in message
  assert 'lr_decay_steps: 0 -> 7000 (with lr_decay_steps > 0' in message
  assert not re.search(r'aux_head|aux_regression_head|lr_decay:|aux_regression:', message)
  # The regression output alone: named by its own field.
  new = config_lib.resolve(default.get_config())
  new.update(aux_regression=0.0)
  with pytest.raises(ConfigError, match=r'\(aux_regression: 1.0 -> 0.0 \(its regression output '
                                        r'exists only with aux_regression > 0\)\)'):
    resume.check_resumable({'config': config_lib.resolve(default.get_config()).to_dict()}, new,
                           None, 'runs/old', True)


def test_saved_epochs_are_the_numbered_directories_in_numeric_order(tmp_path):
  """A save in progress leaves '<step>.orbax-checkpoint-tmp-<n>' beside the steps; other names
  are not epochs either, and 10 comes after 9 (not after 1 as a name)."""
  for name in ('2', '10', '9', '3.orbax-checkpoint-tmp-1700000000', 'notes'):
    (tmp_path / 'checkpoints' / name).mkdir(parents=True)
  (tmp_path / 'best' / '4').mkdir(parents=True)
  # A stray file named as a step is none, and '²' (str.isdigit, but no int()) no longer raises.
  (tmp_path / 'checkpoints' / '7').write_text('')
  (tmp_path / 'checkpoints' / '\u00b2').mkdir()
  assert resume.saved_epochs(str(tmp_path)) == [2, 9, 10]
  assert resume.saved_epochs(str(tmp_path), 'best') == [4]
  assert resume.saved_epochs(str(tmp_path / 'nowhere')) == []


def test_a_single_run_may_share_its_log_path_with_seed_directories_without_checkpoints(tmp_path):
  """Only a seed_<s> directory that holds a checkpoint is a sweep's run: an empty one (a sweep
  refused before it trained, a user's own folder) does not block a single run there."""
  config = tiny_config(log_path=str(tmp_path / 'run'))
  (tmp_path / 'run' / 'seed_0' / 'checkpoints').mkdir(parents=True)
  resume.check_run_layout(config)
  (tmp_path / 'run' / 'seed_0' / 'checkpoints' / '2').mkdir()
  with pytest.raises(ConfigError, match=r'holds a seed sweep \(seed_0\)'):
    resume.check_run_layout(config)


def test_critic_iter_may_change_on_resume_only_without_an_lr_decay():
  """The critic's lr schedule is what counts its steps: with a constant lr another critic_iter
  resumes, with a decay it is refused."""
  saved = config_lib.resolve(default.get_config())
  saved.update(lr_decay_steps=0)
  spec = types.SimpleNamespace(to_dict=lambda: {'layout': 'same'})
  new = config_lib.resolve(ml_collections.ConfigDict(saved.to_dict()))
  new.update(critic_iter=saved.critic_iter + 3)
  checkpoint = {'config': saved.to_dict(), 'spec': {'layout': 'same'}, 'oracle_applies': True}
  resume.check_resumable(checkpoint, new, spec, 'runs/old', True)
  saved.update(lr_decay_steps=100)
  new.update(lr_decay_steps=100)
  checkpoint['config'] = saved.to_dict()
  with pytest.raises(ConfigError, match=rf'critic_iter={saved.critic_iter}, not '
                                        rf'{saved.critic_iter + 3}'):
    resume.check_resumable(checkpoint, new, spec, 'runs/old', True)


@pytest.mark.parametrize('recorded, writer, foreign', [
    ({'num_seeds': 2, 'seed': 0}, {'num_seeds': 2, 'seed': 0}, False),
    ({'num_seeds': 2, 'seed': 5}, {'num_seeds': 2, 'seed': 0}, True),
    (None, {'num_seeds': 2, 'seed': 0}, True),  # a single run's: sweep_id None
    ('absent', {'num_seeds': 2, 'seed': 0}, False),  # saved before checkpoints recorded it
    ('unreadable', {'num_seeds': 2, 'seed': 0}, False),
])
def test_a_checkpoint_is_another_writers_only_by_what_it_records(recorded, writer, foreign,
                                                                   monkeypatch):
  def read_meta(mngr, step):
    if recorded == 'unreadable':
      raise checkpoints.CheckpointError('damaged')
    return step, {'epoch': step} if recorded == 'absent' else {'epoch': step, 'sweep': recorded}

  monkeypatch.setattr(checkpoints, 'read_meta', read_meta)
  assert resume._written_by_another(None, 3, writer) == foreign


def test_the_original_preset_trains_the_originals_way():
  """No auxiliary head, its raw generator sampled, and Adam at a constant 2e-4 (the docstring):
  the default's lr decay, added after the preset, is not inherited."""
  config = config_lib.resolve(original_vanilla_wgangp.get_config())
  assert (config.aux_lambda, config.ema_decay, config.lr_decay_steps) == (0.0, 0.0, 0)
  assert (config.learning_rate_gen, config.learning_rate_disc) == (2e-4, 2e-4)


def test_a_repeated_tuple_override_is_refused():
  """ml_collections would append the second (32,) to (64,); a repeated scalar keeps the last."""
  config = default.get_config()
  with pytest.raises(ConfigError, match='--config.gen_hidden_dims is given more than once'):
    config_lib.check_repeated_tuple_overrides(
        ['train.py', '--config.gen_hidden_dims=(64,)', '--config.gen_hidden_dims=(32,)'], config)
  config_lib.check_repeated_tuple_overrides(
      ['train.py', '--config.gen_hidden_dims=(64,)', '--config.disc_hidden_dims=(32,)',
       '--config.epochs=3', '--config.epochs=4'], config)
  # absl also takes `--flag value`: (64,) then (32,) gave (64, 32) silently.
  with pytest.raises(ConfigError, match='--config.gen_hidden_dims is given more than once'):
    config_lib.check_repeated_tuple_overrides(
        ['train.py', '--config.gen_hidden_dims=(64,)', '--config.gen_hidden_dims', '(32,)'], config)


def test_data_seed_is_compared_on_resume_as_the_split_it_draws():
  """data_seed -1 means the seed's split: 0 where seed is 0 was refused as another split."""
  config = default.get_config()
  config.update(seed=3, data_seed=-1)
  same, other = (ml_collections.ConfigDict(dict(config.to_dict(), data_seed=s)) for s in (3, 4))
  assert config_lib.model_fields(same) == config_lib.model_fields(config)
  assert config_lib.model_fields(other)['data_seed'] != config_lib.model_fields(config)['data_seed']


def test_matching_geometry_is_accepted(small_design_dir, tmp_path):
  """height / width / input_dim equal to what the data gives pass the check."""
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), height=10,
                       width=14, input_dim=420)
  resolved = config_lib.resolve(config)
  config_lib.check_against_data(resolved, data.load_for_config(resolved).layout)


@pytest.mark.parametrize('field,canonical', [('gan_model', 'vanilla'), ('loss_mode', 'bce'),
                                             ('gen_mode', 'mlp'), ('disc_mode', 'mlp')])
def test_vanila_alias(field, canonical):
  config = default.get_config()
  config[field] = 'vanila'
  resolved = config_lib.resolve(config)
  assert resolved[field] == canonical
  assert config[field] == 'vanila'  # resolve returns a copy
  config[field] = ' Vanila '
  assert config_lib.resolve(config)[field] == canonical


def test_resolve_forces_one_critic_step_for_bce():
  config = default.get_config()
  config.loss_mode, config.critic_iter = 'bce', 5
  assert config_lib.resolve(config).critic_iter == 1
  config.loss_mode = 'wgan'
  assert config_lib.resolve(config).critic_iter == 5


@pytest.mark.parametrize('field', ['data_seed', 'lr_decay_steps', 'eval_every', 'height',
                                   'width', 'input_dim', 'seed', 'epochs', 'num_seeds'])
def test_resolve_refuses_a_bool_for_an_integer_field(field):
  """A config file's `c.data_seed = True` trained with data_seed 1 (True is an int to Python), as
  seed and the positive integer fields already refused."""
  config = default.get_config()
  config[field] = True  # a bool replaces an int field: ConfigDict casts only the other way
  with pytest.raises(ConfigError, match=f'^{field} must be .*, got True$'):
    config_lib.resolve(config)


def test_resolve_makes_the_data_path_absolute(tmp_path, monkeypatch):
  """The run's saved config then finds its data from any working directory (gan.evaluate)."""
  monkeypatch.chdir(tmp_path)
  config = default.get_config()
  config.data_path = 'my/designs'
  assert config_lib.resolve(config).data_path == str(tmp_path / 'my' / 'designs')
  config.data_path = ''  # the embedded designs
  assert config_lib.resolve(config).data_path == ''


def test_resolve_expands_a_home_directory_in_the_output_paths(tmp_path, monkeypatch):
  """`--config.log_path=~/runs/x` reaches Python with its ~ (the shell expands one only at the
  start of a word): training made a directory named '~' in the working directory, while a
  data_path's ~ was expanded."""
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  config = default.get_config()
  config.log_path, config.output_path = '~/runs/x', '~/designs'
  config.data_path = '~/data'  # expanded before it is made absolute: not <cwd>/~/data
  resolved = config_lib.resolve(config)
  assert resolved.log_path == str(tmp_path / 'home' / 'runs' / 'x')
  assert resolved.output_path == str(tmp_path / 'home' / 'designs')
  assert resolved.data_path == str(tmp_path / 'home' / 'data')
  config.output_path = ''  # <log_path>/output
  assert config_lib.resolve(config).output_path == ''


@pytest.mark.parametrize('field,value', [('data_seed', -2), ('lr_decay_steps', -1)])
def test_resolve_refuses_negative_values_below_the_special_ones(field, value):
  """data_seed -1 (use seed) and lr_decay_steps 0 (constant lr) are the only values below 1 they
  take: a typo such as data_seed -2 or lr_decay_steps -1 is refused, not silently trained as the
  special value (the split and the schedule read any negative value as it)."""
  config = default.get_config()
  config[field] = value
  with pytest.raises(ConfigError, match=f'^{field} must be .*, got {value}$'):
    config_lib.resolve(config)


def test_resolve_accepts_a_width_of_0_and_refuses_no_widths():
  """A hidden width of 0 means the image size, as the message says: accepted; an empty list of
  widths (a network with no hidden layer) is refused before anything is built."""
  config = default.get_config()
  config.gen_hidden_dims = (0, 64)
  assert list(config_lib.resolve(config).gen_hidden_dims) == [0, 64]
  config.disc_hidden_dims = ()
  with pytest.raises(ConfigError, match='^disc_hidden_dims must be a non-empty list of widths'):
    config_lib.resolve(config)


def test_resolve_accepts_the_limits_its_messages_name():
  """'at most 1000', 'at most <seed limit>' and '(0, 1]' include their ends: each end passes, the
  next value is refused."""
  config = default.get_config()
  config.update(loss_mode='wgan', critic_iter=1000, seed=config_lib.MAX_SEED - 2, num_seeds=1,
                lr_final_fraction=1.0)
  resolved = config_lib.resolve(config)
  assert (resolved.critic_iter, resolved.seed) == (1000, 2**63 - 3)
  for field, value in (('critic_iter', 1001), ('seed', 2**63 - 2), ('lr_final_fraction', 1.01)):
    with pytest.raises(ConfigError, match=f'^{field} must be'):
      config_lib.resolve(ml_collections.ConfigDict(dict(config.to_dict(), **{field: value})))


@pytest.mark.parametrize('field', ['seed', 'num_seeds'])
def test_resolve_refuses_none_for_the_seeds_in_one_line(field):
  """A config file's `c.seed = None` (or num_seeds) is a ConfigError naming the field, not a
  TypeError from the 64-bit seed limit, which reads both."""
  config = default.get_config()
  config[field] = None
  with pytest.raises(ConfigError, match=f'^{field} must be a (non-negative|positive) integer, '
                     'got None$'):
    config_lib.resolve(config)


def test_resolve_reads_a_choice_by_its_canonical_name_in_every_check():
  """An alias or another spelling of a choice is canonicalised before the checks that read it:
  loss_mode='Vanila' (bce) still gets its one critic step, gen_mode=' SelfAttention ' its head
  and dropout checks."""
  config = default.get_config()
  config.update(loss_mode='Vanila', critic_iter=5)
  assert config_lib.resolve(config).critic_iter == 1
  config = default.get_config()
  config.update(gen_mode=' SelfAttention ', embed_dim=16, num_heads=3)
  with pytest.raises(ConfigError, match='embed_dim=16 must be divisible by num_heads=3'):
    config_lib.resolve(config)


@pytest.mark.parametrize('field,value', [
    ('mask_input', 'no'), ('gen_hidden_dims', (64, -1)), ('lr_final_fraction', None),
    ('best_metric', 'fid')])
def test_resolve_refuses_a_wrong_kind_of_value_in_one_line(field, value):
  """A config file's mask_input='no' (a truthy string: the mask was applied), a negative hidden
  width (an error from flax once the model was built), lr_final_fraction=None (a TypeError from
  the range check) and a misspelt best_metric are each a one-line ConfigError naming the field."""
  config = default.get_config().to_dict()  # a ConfigDict refuses the assignment of some
  with pytest.raises(ConfigError, match=f'^{field}'):
    config_lib.resolve(ml_collections.ConfigDict(dict(config, **{field: value})))


def test_resolve_accepts_the_longest_lr_decay_its_message_names_and_eval_every_0():
  """lr_decay_steps x critic_iter up to the int32 step limit itself is accepted (the message says
  'at most MAX_STEPS // critic_iter'), one more step is refused; eval_every=0 (never) passes."""
  config = default.get_config()
  config.update(loss_mode='wgan', critic_iter=1, lr_decay_steps=config_lib.MAX_STEPS,
                eval_every=0)
  resolved = config_lib.resolve(config)
  assert (resolved.lr_decay_steps, resolved.eval_every) == (2**31 - 1, 0)
  config.lr_decay_steps += 1
  with pytest.raises(ConfigError, match=f'^lr_decay_steps must be at most {2**31 - 1} '):
    config_lib.resolve(config)


def test_data_seed_0_is_its_own_split_not_the_seeds():
  """Only data_seed -1 means 'use seed': data_seed 0 with seed 3 draws split 0 (and a resume
  compares it as 0)."""
  config = default.get_config()
  config.update(seed=3, data_seed=0)
  assert config_lib.data_seed(config) == 0
  assert config_lib.model_fields(config)['data_seed'] == 0
  config.data_seed = -1
  assert config_lib.data_seed(config) == 3


def test_an_aux_regression_without_the_aux_head_is_no_model_change():
  """Without the auxiliary head (aux_lambda 0) there is no regression output to add or remove:
  changing aux_regression there resumes, with the head it is refused as a model change."""
  config = default.get_config()
  config.update(aux_lambda=0.0)
  other = ml_collections.ConfigDict(dict(config.to_dict(), aux_regression=0.0))
  assert config_lib.model_fields(config) == config_lib.model_fields(other)
  config.aux_lambda = other.aux_lambda = 1.0
  assert config_lib.model_fields(config) != config_lib.model_fields(other)


def test_changed_settings_leave_out_epochs():
  """A resume that trains on to more epochs is what resuming is for: `epochs` is not logged as a
  changed setting; another learning rate is."""
  old = config_lib.resolve(default.get_config())
  new = ml_collections.ConfigDict(dict(old.to_dict(), epochs=old.epochs + 5))
  assert config_lib.changed_settings(old, new) == []
  new.learning_rate_gen = old.learning_rate_gen * 2
  assert config_lib.changed_settings(old, new) == [
      f'learning_rate_gen: {old.learning_rate_gen!r} -> {new.learning_rate_gen!r}']

def test_an_attention_critic_alone_keeps_the_attention_fields_in_the_model():
  """With an MLP generator and a self-attention critic the critic reads embed_dim and the other
  attention fields: a resume that changes one is a model change (not only an attention
  generator counts)."""
  config = default.get_config()
  config.update(gen_mode='mlp', disc_mode='selfattention')
  other = ml_collections.ConfigDict(dict(config.to_dict(), embed_dim=config.embed_dim * 2))
  assert config_lib.model_fields(config)['embed_dim'] == config.embed_dim
  assert config_lib.model_fields(config) != config_lib.model_fields(other)


def test_a_config_missing_five_fields_names_all_five():
  """Up to five missing fields are all named; from six on, four and how many more."""
  full = default.get_config().to_dict()
  names = sorted(full)
  for missing, said in ((5, ', '.join(names[:5]) + '; '),
                        (6, ', '.join(names[:4]) + ' and 2 more')):
    partial = ml_collections.ConfigDict({k: v for k, v in full.items() if k not in names[:missing]})
    with pytest.raises(ConfigError, match=f'^the config has no field {re.escape(said)}'):
      config_lib.resolve(partial)


# float() read '1_0' as 10.0 and '\u0661' (Arabic-Indic one) as 1.0; the file names refuse both.
@pytest.mark.parametrize('text', ['1.0,,1.1', '1.0,1.1,', 'a,b', '1_0,1.1', '\u0661,1.1', '1e0',
                                  '-1.0,1.1', 'nan', 'inf', ['1.0', '1_1']])
def test_class_values_must_be_numbers_none_empty(text):
  with pytest.raises(ConfigError, match='^mass_values must be comma-separated numbers'):
    data.parse_class_values(text, 'mass_values')
  assert data.parse_class_values(' 1.0, 1.1 ') == [1.0, 1.1]
  assert data.parse_class_values([1.0, 2.14, '2.2']) == [1.0, 2.14, 2.2]


def test_rmsprop_is_pytorchs_default_rmsprop():
  """torch.optim.RMSprop(lr) (alpha 0.99, eps 1e-8 added to sqrt(v)), written out in NumPy, over
  three steps with gradients from 1e-6 to 1: small gradients must not be damped by eps."""
  lr = 1e-3
  tx = step.make_optimizer('rmsprop', lr, 0.5, 0.999, 0.0)
  params = jnp.zeros(4, jnp.float32)
  opt = tx.init(params)
  expected, v = np.zeros(4), np.zeros(4)
  rng = np.random.default_rng(0)
  for _ in range(3):
    g = np.array([1e-6, 1e-4, 1e-2, 1.0]) * rng.uniform(0.5, 1.5, 4)
    updates, opt = tx.update(jnp.asarray(g, jnp.float32), opt, params)
    params = params + updates
    v = 0.99 * v + 0.01 * g ** 2
    expected = expected - lr * g / (np.sqrt(v) + 1e-8)
  np.testing.assert_allclose(np.asarray(params), expected, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# 11. Command line


def test_cli_reports_a_bad_config_in_one_line():
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, 'train.py', '--config=configs/default.py',
                         '--config.loss_mode=nope'], cwd=REPO_ROOT, capture_output=True,
                        text=True, timeout=120, env=env)
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr, proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, proc.stderr
  assert 'loss_mode' in errors[0] and 'bce, wgan, wgangp' in errors[0]


@pytest.mark.parametrize('epochs', [5, 2])
def test_a_requested_stop_ends_with_the_epoch_in_progress_checkpointed(small_design_dir,
                                                                     tmp_path, epochs):
  """A stop requested in epoch 2 makes it the last; with epochs=2 it is the last anyway, and the
  run is not asked in its last epoch: it finished, and is not called interrupted (train.py would
  say so and exit 130)."""
  asked = []
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=epochs,
                       checkpoint_every=10, **BASE)
  result = trainer.train(config, stop_requested=lambda: asked.append(True) or len(asked) == 2)
  assert result['interrupted'] == (epochs > 2) and result['epochs'] == 2
  assert os.listdir(os.path.join(result['log_path'], 'checkpoints')) == ['2']
  assert len(asked) == (2 if epochs > 2 else 1)
  with open(os.path.join(result['log_path'], 'log_summary'), encoding='utf-8') as f:
    log = f.read()
  assert ('Interrupted: stopped after epoch 2 of 5 (checkpointed)' in log) == (epochs > 2)


@pytest.mark.parametrize('during, saved, said', [
    ('opening', [], 'Interrupted during epoch 1; no checkpoint was written yet'),
    ('epoch', [], 'Interrupted during epoch 1; no checkpoint was written yet'),
    ('closing', [1], 'Interrupted during epoch 1; the last checkpoint is of epoch 1'),
], ids=['opening', 'epoch', 'closing'])
def test_a_ctrl_c_that_a_callback_swallowed_stops_the_run_at_once(small_design_dir, tmp_path,
                                                                  monkeypatch, during, saved,
                                                                  said):
  """Under interrupts.watched() (train.py's second Ctrl-C): the run went on to its last epoch.
  It stops where an unswallowed one would have: before the first epoch when the Ctrl-C came
  while the run opened, before the epoch's closing work (no checkpoint), or after it."""
  compile_epoch, close_epoch = step.compile_epoch, trainer._close_epoch

  def compiled(*args, **kwargs):
    if during == 'opening':
      ctrl_c_swallowed_by_a_gc_callback()
    epoch_fn = compile_epoch(*args, **kwargs)

    def trained(*epoch_args):
      result = epoch_fn(*epoch_args)
      if during == 'epoch':
        ctrl_c_swallowed_by_a_gc_callback()
      return result

    trained.lower = epoch_fn.lower
    return trained

  def closed(*args, **kwargs):
    took = close_epoch(*args, **kwargs)
    if during == 'closing':
      ctrl_c_swallowed_by_a_gc_callback()
    return took

  monkeypatch.setattr(step, 'compile_epoch', compiled)
  monkeypatch.setattr(trainer, '_close_epoch', closed)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=3,
                       checkpoint_every=1, **BASE)
  with pytest.raises(KeyboardInterrupt), interrupts.watched():
    trainer.train(config)
  assert resume.saved_epochs(config.log_path) == saved
  assert said in (tmp_path / 'run' / 'log_summary').read_text()


def test_a_ctrl_c_while_the_epoch_compiles_is_recorded_in_the_log(small_design_dir, tmp_path,
                                                                 monkeypatch):
  """train.py's second Ctrl-C raises KeyboardInterrupt at once. Where that came while the run
  restored or initialised its state or compiled the epoch (10-15 s on a CPU), log_summary ended at
  'Training epochs 1..N' with no word of the stop, while one during the epochs is recorded."""
  compile_epoch = step.compile_epoch

  def compiled(*args, **kwargs):
    epoch_fn = compile_epoch(*args, **kwargs)

    def interrupted(*_):
      raise KeyboardInterrupt

    trained = functools.partial(epoch_fn)
    trained.lower = interrupted
    return trained

  monkeypatch.setattr(step, 'compile_epoch', compiled)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=3,
                       **BASE)
  with pytest.raises(KeyboardInterrupt):
    trainer.train(config)
  log = (tmp_path / 'run' / 'log_summary').read_text()
  assert 'Interrupted before epoch 1 started; no checkpoint was written yet' in log, log


def test_the_training_log_says_how_the_evaluation_classifier_was_had(small_design_dir, tmp_path,
                                                                    capsys):
  """A run that evaluates trains (or loads) the evaluation classifier before its first epoch:
  seconds in which train.py showed nothing, since the classifier's line went to a logger nothing
  printed. It is in log_summary and on the console, once."""
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=1,
                       eval_every=1, eval_per_pair=1, **BASE)
  trainer.train(config)
  said = ('Trained the evaluation classifier in ', 'Loaded the evaluation classifier from ')
  log = (tmp_path / 'run' / 'log_summary').read_text()
  assert sum(s in log for s in said) == 1, log
  printed = capsys.readouterr()
  assert sum(line.startswith(said) for line in printed.out.splitlines()) == 1, printed.out
  assert not any(s in printed.err for s in said), printed.err


@pytest.mark.slow
def test_the_training_log_warns_about_a_class_without_training_designs(small_design_dir,
                                                                      tmp_path):
  masses = ','.join(f'{m:g}' for m in data.load_for_config(tiny_config(
      data_path=small_design_dir, log_path='unused')).spec.mass.values)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=1,
                       eval_every=0, mass_values=masses + ',9.99', **BASE)
  result = trainer.train(config)
  with open(os.path.join(result['log_path'], 'log_summary'), encoding='utf-8') as f:
    assert 'warning: no training design has mass 9.99' in f.read()


def _tree_snapshot(directory: str) -> list:
  """(relative path, size, mtime) of every file under `directory`."""
  found = []
  for root, _, files in os.walk(directory):
    for name in files:
      st = os.stat(os.path.join(root, name))
      found.append((os.path.relpath(os.path.join(root, name), directory), st.st_size,
                    st.st_mtime_ns))
  return sorted(found)


def test_a_second_training_process_on_a_run_is_refused_before_it_writes(base_run, tmp_path):
  """Two processes on one log_path would both write, and prune, its checkpoints: while a live
  process holds the run's lock, training stops with one error and the run is as it was; once
  the lock is gone it resumes, and leaves no lock behind."""
  config, _ = base_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path, config.epochs = str(tmp_path / 'run'), 3
  shutil.copytree(base_run[0].log_path, config.log_path)
  before = _tree_snapshot(config.log_path)
  with run_locked_by_a_live_process(config.log_path) as pid:
    with pytest.raises(paths.OutputPathError, match=f'training process {pid} on '):
      trainer.train(config)
  assert _tree_snapshot(config.log_path) == before
  assert trainer.train(config)['epochs'] == 3
  assert not os.path.exists(os.path.join(config.log_path, run_lock.LOCK_NAME))


def test_a_stale_lock_is_taken_over_and_said_in_the_run_log(base_run, tmp_path):
  """A run killed with SIGKILL leaves its lock: the next run takes it over, and its log_summary
  says so for later (it was said on stderr only)."""
  config, _ = base_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path, config.epochs = str(tmp_path / 'run'), 3
  shutil.copytree(base_run[0].log_path, config.log_path)
  lock = write_run_lock(config.log_path, finished_pid())
  assert trainer.train(config)['epochs'] == 3
  assert not os.path.exists(lock)
  with open(os.path.join(config.log_path, 'log_summary'), encoding='utf-8') as f:
    assert f'warning: removing the stale lock {lock} of process ' in f.read()


def test_a_sweeps_stale_locks_are_said_in_the_logs_of_the_runs_they_claimed(
    small_design_dir, tmp_path, monkeypatch, caplog):
  """A killed sweep leaves a lock in its log_path and in each run directory: each run's log says
  the stale lock of its own directory and the log_path's (which claimed every run), not another
  run's; and the console does not repeat them when the run then fails (no epoch is trained)."""
  log_path = tmp_path / 'run'
  (log_path / 'seed_4').mkdir(parents=True)
  top = write_run_lock(str(log_path), finished_pid())
  own = write_run_lock(str(log_path / 'seed_4'), finished_pid())

  def fail(*_):
    raise RuntimeError('failed once the runs opened')

  monkeypatch.setattr(trainer, '_train_runs', fail)
  with pytest.raises(RuntimeError, match='failed once the runs opened'):
    trainer.train(tiny_config(data_path=small_design_dir, log_path=str(log_path), num_seeds=2,
                              seed=3, eval_every=0, **BASE))
  said = {seed: [lock for lock in (top, own)
                 if f'warning: removing the stale lock {lock} of process ' in
                 (log_path / f'seed_{seed}' / 'log_summary').read_text()] for seed in (3, 4)}
  assert said == {3: [top], 4: [top, own]}, said
  assert not [r for r in caplog.records if r.name == 'root' and 'stale lock' in r.getMessage()]


@pytest.mark.parametrize('fails_in', ['abstract_init', 'compile_epoch'])
def test_a_failed_run_leaves_no_empty_directory_it_made(small_design_dir, tmp_path, monkeypatch,
                                                         fails_in):
  """The run's directories are made before training (so a path the system refuses is found
  first); a run that fails removes those it made and left empty, and keeps its log. That includes
  the checkpoints/ and best/ its checkpoint managers make as they open (they stayed, empty, after
  a non-finite loss in the first epoch or a Ctrl-C while compiling)."""
  (tmp_path / 'existing').mkdir()
  log_path, output_path = tmp_path / 'new' / 'run', tmp_path / 'existing' / 'out' / 'designs'

  def fail(*_, **__):
    raise RuntimeError('failed')

  monkeypatch.setattr(step, fails_in, fail)
  with pytest.raises(RuntimeError, match='failed'):
    trainer.train(tiny_config(data_path=small_design_dir, log_path=str(log_path),
                              output_path=str(output_path), **BASE))
  assert os.listdir(tmp_path / 'existing') == []
  if fails_in == 'abstract_init':  # before the log is opened
    assert os.listdir(tmp_path) == ['existing']
  else:
    assert 'Resolved config' in (log_path / 'log_summary').read_text()
    assert os.listdir(log_path) == ['log_summary']


def test_a_failed_run_removes_its_default_output_directory_before_its_log_path(small_design_dir,
                                                                               tmp_path,
                                                                               monkeypatch):
  """The default output_path is <log_path>/output: removed first, so that log_path, then empty,
  goes too (the directories are removed deepest first, across both paths)."""
  def fail(*_, **__):
    raise RuntimeError('failed')

  monkeypatch.setattr(step, 'abstract_init', fail)
  with pytest.raises(RuntimeError, match='failed'):
    trainer.train(tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'new' / 'run'),
                              **BASE))
  assert os.listdir(tmp_path) == []


def test_a_failed_run_keeps_the_empty_directories_it_did_not_make(small_design_dir, tmp_path,
                                                                  monkeypatch):
  """Only what the run made is removed when it fails: the empty checkpoints/ and best/ of its
  log_path that were there before (made by hand, or by another tool) stay."""
  for name in ('checkpoints', 'best'):
    (tmp_path / 'run' / name).mkdir(parents=True)

  def fail(*_, **__):
    raise RuntimeError('failed')

  monkeypatch.setattr(step, 'abstract_init', fail)
  with pytest.raises(RuntimeError, match='failed'):
    trainer.train(tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), **BASE))
  assert sorted(os.listdir(tmp_path / 'run')) == ['best', 'checkpoints']


def _refused_while_opening(*_):
  raise ConfigError('refused while the run opens')


def test_a_run_that_fails_to_open_closes_the_managers_it_opened(small_design_dir, tmp_path,
                                                                monkeypatch):
  """A run that fails while it opens (here its evaluator) leaves no checkpoint manager open:
  train() releases only the runs it finished opening."""
  monkeypatch.setattr(run_dir, '_Evaluator', _refused_while_opening)
  monkeypatch.setattr(classifier_lib, 'load_or_train_classifier', lambda _: None)
  monkeypatch.setattr(trainer.evaluate, 'reference', lambda *_: None)
  opened, closed = [], []
  manager = checkpoints.manager

  def recorded(*args, **kwargs):
    mngr = manager(*args, **kwargs)
    opened.append(mngr.directory)
    close = mngr.close
    mngr.close = lambda: (closed.append(mngr.directory), close())[-1]
    return mngr

  monkeypatch.setattr(checkpoints, 'manager', recorded)
  with pytest.raises(ConfigError, match='refused while the run opens'):
    trainer.train(tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'),
                              eval_every=1, **BASE))
  assert sorted(map(str, closed)) == sorted(map(str, opened)), (opened, closed)


def _descriptors_open_on(path) -> list[str]:
  """This process's file descriptors open on `path` (Linux: /proc/self/fd)."""
  found = []
  for fd in os.listdir('/proc/self/fd'):
    try:
      if os.readlink(f'/proc/self/fd/{fd}') == os.path.abspath(path):
        found.append(fd)
    except OSError:  # the descriptor listdir itself used, closed meanwhile
      pass
  return found


def _log_files(name: str) -> list:
  """The file handlers of logger `name` (pytest adds its own capturing handlers)."""
  return [h for h in logging.getLogger(name).handlers if isinstance(h, logging.FileHandler)]


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='needs /proc/self/fd')
def test_a_run_closes_its_log_when_train_returns_or_fails(base_run, small_design_dir, tmp_path,
                                                          monkeypatch):
  """train() from a notebook or any process that goes on: the run's log_summary is closed and its
  logger's handlers removed when train() returns, also when it fails (a run refused while it
  opens), instead of one open descriptor and its handler left behind per run directory."""
  config, _ = base_run
  log_path = os.path.abspath(config.log_path)
  assert _descriptors_open_on(os.path.join(log_path, 'log_summary')) == []
  assert not _log_files(f'designgan.train.{log_path}')
  monkeypatch.setattr(run_dir, '_Evaluator', _refused_while_opening)
  monkeypatch.setattr(classifier_lib, 'load_or_train_classifier', lambda _: None)
  monkeypatch.setattr(trainer.evaluate, 'reference', lambda *_: None)
  with pytest.raises(ConfigError, match='refused while the run opens'):
    trainer.train(tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'),
                              eval_every=1, **BASE))
  assert 'Resolved config' in (tmp_path / 'run' / 'log_summary').read_text()
  assert _descriptors_open_on(tmp_path / 'run' / 'log_summary') == []
  assert not _log_files(f'designgan.train.{tmp_path / "run"}')


@pytest.mark.slow
def test_cli_ctrl_c_stops_after_the_epoch_in_progress(small_design_dir, tmp_path):
  """SIGINT (Ctrl-C) once: the run ends with that epoch checkpointed, one line, exit status 130;
  the same command resumes."""
  log_path = tmp_path / 'run'
  args = [sys.executable, 'train.py', '--config=configs/default.py',
          f'--config.data_path={small_design_dir}', f'--config.log_path={log_path}',
          '--config.epochs=100000', '--config.checkpoint_every=100000',
          '--config.batch_size=32', '--config.eval_every=0',
          '--config.gen_hidden_dims=(32,)', '--config.disc_hidden_dims=(32,)']
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  with subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True, env=env) as proc:
    for line in proc.stdout:  # the first epoch's line: compiled and training
      if line.startswith('epoch 1/'):
        break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err
  assert 'Traceback' not in err, err
  assert err.strip().splitlines()[-1].startswith('interrupted: stopped after the epoch'), err
  saved = os.listdir(log_path / 'checkpoints')
  assert len(saved) == 1 and 'Interrupted: stopped after epoch ' + saved[0] in out, (saved, out)


# train.py with the trainer interrupted at once (as by a second Ctrl-C) and an atexit handler
# that says when the interpreter's teardown runs.
_TRAIN_INTERRUPTED = (
    'import atexit, runpy, sys; import gan.trainer\n'
    'def interrupted(*args, **kwargs):\n'
    '  raise KeyboardInterrupt\n'
    'gan.trainer.train = interrupted\n'
    'atexit.register(lambda: print("teardown ran", file=sys.stderr))\n'
    'sys.argv = ["train.py"] + sys.argv[1:]\n'
    'runpy.run_path("train.py", run_name="__main__")\n')


def test_cli_a_second_ctrl_c_exits_130_without_the_interpreter_teardown(tmp_path):
  """Two Ctrl-Cs while the first epoch compiled (default config, 2-core CPU): the 'interrupted:'
  line, then the interpreter's teardown crashed on the XLA work still running, 'Fatal Python
  error: Segmentation fault' and exit status 139 (two of two tries). The teardown is skipped
  now, as in gan.evaluate and gan.bench."""
  proc = subprocess.run([sys.executable, '-c', _TRAIN_INTERRUPTED, '--config=configs/default.py',
                         f'--config.log_path={tmp_path / "run"}'], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 130, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines == ['interrupted: stopped before the first checkpoint; the same command starts '
                   'afresh'], lines



# train.py with two Ctrl-Cs once epoch 1 has closed: the first as usual, the second raised inside
# a garbage-collection callback (where JAX's runs), which Python cannot raise from.
_TRAIN_CTRL_C_TWICE_THE_SECOND_SWALLOWED = (
    'import gc, os, runpy, signal, sys; import gan.trainer\n'
    'def ctrl_c_in_gc_callback(phase, info):\n'
    '  gc.callbacks.remove(ctrl_c_in_gc_callback)\n'
    '  os.kill(os.getpid(), signal.SIGINT)\n'
    'close_epoch = gan.trainer._close_epoch\n'
    'def close_epoch_then_ctrl_c_twice(runs, epoch, *args, **kwargs):\n'
    '  took = close_epoch(runs, epoch, *args, **kwargs)\n'
    '  if epoch == 1:\n'
    '    os.kill(os.getpid(), signal.SIGINT)\n'
    '    gc.callbacks.append(ctrl_c_in_gc_callback)\n'
    '    gc.collect()\n'
    '  return took\n'
    'gan.trainer._close_epoch = close_epoch_then_ctrl_c_twice\n'
    'sys.argv = ["train.py"] + sys.argv[1:]\n'
    'runpy.run_path("train.py", run_name="__main__")\n')


@pytest.mark.slow
@pytest.mark.parametrize('checkpoint_every, eval_every', [(1, 0), (2, 0), (2, 1)])
def test_cli_a_second_ctrl_c_swallowed_by_a_callback_still_stops_at_once(
    small_design_dir, tmp_path, checkpoint_every, eval_every):
  """A second Ctrl-C that landed in JAX's gc callback was reported ('Exception ignored in garbage
  collection callback', a KeyboardInterrupt traceback) and lost: the run trained on to the end of
  the next epoch, as after one Ctrl-C. It stops at once now, as an unswallowed one does there.
  Its line says whether there is a checkpoint to resume from (it said so before the first)."""
  log_path = tmp_path / 'run'
  args = [sys.executable, '-c', _TRAIN_CTRL_C_TWICE_THE_SECOND_SWALLOWED,
          '--config=configs/default.py', f'--config.data_path={small_design_dir}',
          f'--config.log_path={log_path}', '--config.epochs=3',
          f'--config.checkpoint_every={checkpoint_every}', '--config.eval_per_pair=2',
          '--config.batch_size=32', f'--config.eval_every={eval_every}',
          '--config.gen_hidden_dims=(32,)', '--config.disc_hidden_dims=(32,)']
  proc = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))
  assert proc.returncode == 130, proc.stderr
  assert 'Exception ignored' not in proc.stderr and 'Traceback' not in proc.stderr, proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == (
      'interrupted: the checkpoints written so far (every checkpoint_every epochs) are kept; the '
      'same command resumes from the last one' if checkpoint_every == 1 else
      'interrupted: stopped before the first checkpoint; the same command starts afresh'
      if not eval_every else  # best/1 holds a model: the same command is refused
      'interrupted: stopped before the first checkpoint, with best/ holding an evaluated model; '
      'keep it and train under a new --config.log_path, or remove best/ to start afresh'
  ), proc.stderr
  saved = os.listdir(log_path / 'checkpoints') if (log_path / 'checkpoints').exists() else []
  assert saved == (['1'] if checkpoint_every == 1 else [])  # else removed, as empty
  summary = (log_path / 'log_summary').read_text()
  assert 'Interrupted during epoch 1' in summary, summary
  assert ('the last checkpoint is of epoch 1' in summary) == (checkpoint_every == 1), summary
  assert 'epoch 2/' not in proc.stdout, proc.stdout


def test_cli_ctrl_c_line_when_the_run_directory_cannot_be_listed():
  """train.py's Ctrl-C line lists the run's checkpoints; a directory that cannot be listed (an
  unreadable or failing file system) gave a traceback in place of the line."""
  import runpy  # pylint: disable=import-outside-toplevel
  cli = runpy.run_path(os.path.join(REPO_ROOT, 'train.py'), run_name='train_cli')

  def unlistable(config, name='checkpoints'):
    raise PermissionError(13, 'Permission denied', os.path.join(config.log_path, name))

  line = cli['_interrupted_line'](ml_collections.ConfigDict({'log_path': 'run'}), unlistable)
  assert line == ("interrupted: could not list the run's checkpoints ([Errno 13] Permission "
                  "denied: 'run/checkpoints')")


def test_cli_ctrl_c_line_finds_the_checkpoints_under_a_home_directory(tmp_path, monkeypatch):
  """train.py holds the config as its flags give it: with --config.log_path=~/runs/x the Ctrl-C
  line looked for checkpoints under a directory named '~' (resolve expands it for the trainer)
  and said the same command starts afresh, where it resumes."""
  import runpy  # pylint: disable=import-outside-toplevel
  cli = runpy.run_path(os.path.join(REPO_ROOT, 'train.py'), run_name='train_cli')
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'runs' / 'x' / 'checkpoints' / '1').mkdir(parents=True)
  config = default.get_config()
  config.log_path = '~/runs/x'
  assert cli['_interrupted_line'](config, resume.has_checkpoints) == (
      'interrupted: the checkpoints written so far (every checkpoint_every epochs) are kept; the '
      'same command resumes from the last one')

_BAD_CONFIG_FILES = {
    'syntax.py': 'def get_config(:\n',
    'no_get_config.py': 'x = 1\n',
    'raises.py': 'def get_config():\n  raise ValueError("boom")\n',
    'returns_int.py': 'def get_config():\n  return 5\n',
    'returns_none.py': 'def get_config():\n  pass\n',
    'takes_arg.py': 'def get_config(model):\n  return model\n',
    'notes.md': '# Notes\n\nTrained 1.5x faster.\n',
}


@pytest.mark.parametrize('args, expected', [
    (['--config=configs/nope.py'], ['--config=configs/nope.py', 'no such config file']),
    (['--config={dir}/syntax.py'], ['syntax.py', 'not valid Python']),
    (['--config={dir}/notes.md'], ['notes.md is not valid Python']),
    (['--config=configs/'], ['--config=configs/ is a directory', 'configs/default.py']),
    (['--config={dir}/no_get_config.py'], ['no_get_config.py', 'get_config()']),
    (['--config={dir}/raises.py'], ['get_config() failed', 'ValueError: boom']),
    # Without --config, ml_collections applies overrides while defining the flag; with it,
    # while parsing flags: both paths.
    (['--config.nosuchfield=3'], ["no config field 'nosuchfield'", 'configs/default.py']),
    (['--config=configs/default.py', '--config.nosuchfield=3'], ["'nosuchfield'"]),
    # ml_collections adds a 'Did you mean' line to a near miss: still that field alone, no other
    (['--config=configs/default.py', '--config.epoch=2', '--config.log_path={dir}/run'],
     ["error: --config.epoch: no config field 'epoch' (did you mean epochs?)"]),
    (['--config={dir}/returns_int.py', '--config.log_path={dir}/run'],
     ['returns_int.py: get_config() returned an int', 'not an ml_collections.ConfigDict']),
    (['--config={dir}/returns_int.py'], ['returns_int.py: get_config() returned an int']),
    # ml_collections' warning 'did you forget a return statement?' came first, on two lines
    (['--config={dir}/returns_none.py'], ['get_config() returned None (a missing return']),
    # --config=FILE:ARG calls get_config(ARG): 'get_config() takes 0 positional arguments ...'
    (['--config=configs/default.py:infogan'],
     ['get_config() of configs/default.py takes no argument, and ":infogan" gives it one']),
    (['--config={dir}/takes_arg.py'], ['get_config() needs an argument', 'takes_arg.py:VALUE']),
    # named every override, the innocent --config.data_path too, as 'cannot be applied'
    (['--config.gen_hidden_dims.x=3'],
     ['error: --config.gen_hidden_dims.x: gen_hidden_dims is one value',
      '--config.gen_hidden_dims=VALUE']),
    # blamed the config file: "--config=configs/default.py cannot be used: ... Could not parse"
    (['--config.gen_hidden_dims.0=3'], ['error: --config.gen_hidden_dims.0: gen_hidden_dims is']),
    (['--config.epochs=abc'], ['--config.epochs=abc']),
    # said how the conversion failed ("invalid literal for int() with base 10"), not what is allowed
    (['--config.epochs=1.5'], ["--config.epochs=1.5: epochs takes a whole number (default 200)"]),
    # "('Non-boolean argument to boolean flag', 'maybe')"
    (['--config.mask_input=maybe'], ['mask_input takes True or False', "got 'maybe'"]),
    # the value was cut at its own ': ' ("--config.epochs=3: epochs takes ..., got '3'")
    (['--config.epochs=3: x'], ["--config.epochs=3: x: epochs takes a whole number", "got '3: x'"]),
    (['--config.epochs', '1.5'], ["--config.epochs=1.5: epochs takes a whole number"]),
    # the value as the next argument, holding its own ': ' too: it was cut there as well
    (['--config.epochs', '3: x'], ["--config.epochs=3: x: epochs takes a whole number",
                                   "got '3: x'"]),
    (['--config.epochs=1', 'extra'], ['unexpected arguments: extra', '--config=FILE']),
    (['--config.epochs=1', '--config=configs/default.py'],
     ['--config.epochs', 'give --config=FILE before the --config.<field> overrides']),
    (['--config.log_path={dir}/a_file'], ['log_path', 'a_file is a file']),
    (['--config.log_path={dir}/a_file/run'], ['a_file is a file']),
    (['--config.output_path={dir}/a_file'], ['output_path', 'a_file is a file']),
    # blamed the config file: "--config=configs/default.py cannot be used: ValueError: ..."
    (['--config.=1'], ['--config.=1: no field name after --config.']),
    # the shell leaves a ~ after '=' as it is: it was 'no such config file'
    (['--config=~/syntax.py'], ['--config={dir}/syntax.py', 'not valid Python']),
], ids=['missing_file', 'syntax_error', 'not_python', 'a_directory', 'no_get_config',
        'get_config_raises', 'unknown_field', 'unknown_field_with_file', 'near_miss_field',
        'config_not_a_configdict_with_field', 'config_not_a_configdict',
        'config_returns_none', 'argument_not_taken', 'argument_missing', 'field_of_a_tuple',
        'item_of_a_tuple', 'bad_int', 'float_for_int', 'bad_bool', 'value_with_colon',
        'value_as_next_argument', 'next_argument_with_colon', 'extra_argument',
        'override_first', 'log_path_file', 'log_path_under_file',
        'output_path_file', 'no_field_name', 'home_directory'])
def test_cli_reports_a_bad_config_file_field_or_path_in_one_line(args, expected, tmp_path):
  """Each is one `error:` line naming the problem, exit status 1, before any data is loaded
  (nothing is written)."""
  for name, text in _BAD_CONFIG_FILES.items():
    (tmp_path / name).write_text(text)
  (tmp_path / 'a_file').write_text('')
  before = sorted(os.listdir(tmp_path))
  args = [a.format(dir=tmp_path) for a in args]
  env = dict(os.environ, JAX_PLATFORMS='cpu', HOME=str(tmp_path))
  proc = subprocess.run([sys.executable, 'train.py', *args,
                         f'--config.data_path={tmp_path}/no_data'], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=120, env=env)
  assert proc.returncode == 1, proc.stderr
  assert 'Traceback' not in proc.stderr, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), proc.stderr
  assert '\\' not in lines[0], lines[0]  # no escaped quotes or newlines of a repr
  for fragment in expected:
    assert fragment.format(dir=tmp_path) in lines[0], (fragment, lines[0])
  assert sorted(os.listdir(tmp_path)) == before


def test_wrong_type_message_names_the_whole_value_the_error_starts_with():
  """Of a field's values on the command line, the message names the one absl's error starts
  with, and of those the longest: '3' and '3: x' both start "flag --config.epochs=3: x: ...",
  and '3' is only the cut-off one."""
  argv = ['--config.epochs=3', '--config.epochs', '3: x', '--config.batch_size=3: y']
  error = flags.IllegalFlagValueError(
      "flag --config.epochs=3: x: invalid literal for int() with base 10: '3: x'")
  message = config_lib._wrong_type_message(error, default.get_config(), argv)
  assert message.startswith('--config.epochs=3: x: epochs takes a whole number'), message
  assert message.endswith("got '3: x'"), message


def test_a_training_state_larger_than_memory_is_refused_before_the_run_writes(small_design_dir,
                                                                              tmp_path):
  """A network thousands of times too wide failed with an out-of-memory traceback as its
  parameters were initialised, after the run's log was written."""
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'),
                       gen_hidden_dims=(10**11,))
  with pytest.raises(OutOfMemoryError, match=r'^the training state takes .* GiB, more than the '
                     r'.*; give smaller networks \(gen_hidden_dims, '):
    trainer.train(config)
  assert os.listdir(tmp_path) == []


def test_a_devices_memory_is_a_containers_limit_shared_by_the_cpu_devices(tmp_path,
                                                                           monkeypatch):
  """The state check compared one copy of the state with the host's RAM: with N CPU devices
  (each holds a copy) or in a container with a lower limit, a state between the two got the
  process killed instead of an error; a GPU without memory statistics was compared with RAM."""
  limit = tmp_path / 'memory.max'
  limit.write_text('4294967296\n')
  monkeypatch.setattr(trainer, '_CGROUP_LIMITS', (str(tmp_path / 'none'), str(limit)))
  monkeypatch.setattr(jax, 'local_device_count', lambda: 4)
  assert trainer.device_memory() == 2**30
  limit.write_text('max\n')
  ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  assert trainer.device_memory() == ram // 4
  gpu = types.SimpleNamespace(platform='gpu', memory_stats=lambda: None)
  monkeypatch.setattr(jax, 'local_devices', lambda: [gpu])
  assert trainer.device_memory() == 0
  gpu.memory_stats = lambda: {'bytes_limit': 80 * 2**30}
  assert trainer.device_memory() == 80 * 2**30


def test_the_state_check_counts_each_model_of_a_sweep_in_bytes(monkeypatch):
  """The state compared with a device's memory is num_seeds copies (a sweep holds one state per
  model on every device) of every array's bytes, not its element count; a state of exactly the
  device's memory fits."""
  abstract = dict(w=jax.ShapeDtypeStruct((1000,), jnp.float32),
                  step=jax.ShapeDtypeStruct((), jnp.int32))  # 4,004 bytes
  one, two = (ml_collections.ConfigDict(dict(num_seeds=k)) for k in (1, 2))
  monkeypatch.setattr(trainer, 'device_memory', lambda: 4004)
  trainer.check_state_fits(one, abstract)
  with pytest.raises(OutOfMemoryError, match=r'^the training state takes 7.46e-06 GiB, more '
                     r'than the 3.73e-06 GiB of a device\'s memory'):
    trainer.check_state_fits(two, abstract)
  monkeypatch.setattr(trainer, 'device_memory', lambda: 4003)
  with pytest.raises(OutOfMemoryError, match='takes 3.73e-06 GiB'):
    trainer.check_state_fits(one, abstract)


def test_running_out_of_memory_while_training_is_one_error(small_design_dir, tmp_path,
                                                            monkeypatch):
  """An allocation XLA refuses once training runs (a state that fits, its epoch not) was a
  JaxRuntimeError traceback."""
  def oom(*args, **kwargs):
    raise jax.errors.JaxRuntimeError('RESOURCE_EXHAUSTED: Out of memory allocating 8 bytes.\nmore')
  monkeypatch.setattr(step, 'init', oom)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'))
  with pytest.raises(OutOfMemoryError, match=r'^training ran out of memory \(RESOURCE_EXHAUSTED: '
                     r'Out of memory allocating 8 bytes.\); give smaller networks'):
    trainer.train(config)


def test_an_output_path_a_pseudo_filesystem_refuses_fails_before_training(small_design_dir,
                                                                           tmp_path):
  """/proc passes os.access for root: the run used to train, then end in a traceback when it
  wrote its designs."""
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'),
                       output_path='/proc/designgan-test/out')
  with pytest.raises(paths.OutputPathError, match='^output_path /proc/designgan-test/out '):
    trainer.train(config)
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_a_log_path_a_pseudo_filesystem_refuses_is_named_as_log_path(small_design_dir):
  """The error named output_path, which the command did not set, as /proc/.../output."""
  config = tiny_config(data_path=small_design_dir, log_path='/proc/designgan-test/run')
  with pytest.raises(paths.OutputPathError, match='^log_path /proc/designgan-test/run cannot be '):
    trainer.train(config)


@pytest.mark.parametrize('what', ['log_path', 'output_path'])
def test_an_output_path_under_a_file_is_refused_before_the_data_loads(tmp_path, what):
  """Loading the data can take minutes: a log_path or output_path that cannot become a directory
  is refused first (the data_path here does not exist, and is not reached)."""
  (tmp_path / 'a_file').write_text('')
  paths_ = dict(log_path=str(tmp_path / 'run'), output_path='')
  paths_[what] = str(tmp_path / 'a_file' / 'run')
  with pytest.raises(paths.OutputPathError, match=f'^{what} .* cannot be created: .*a_file is a '
                                                  'file'):
    trainer.train(tiny_config(data_path=str(tmp_path / 'no_data'), **paths_))
  assert sorted(os.listdir(tmp_path)) == ['a_file']


@pytest.mark.parametrize('num_seeds, output', [(1, 'run/checkpoints/99'), (2, 'run/seed_0/best')])
def test_an_output_path_in_the_runs_checkpoint_directories_fails_before_training(
    tmp_path, num_seeds, output):
  """checkpoints/ and best/ do not exist before the first save: an output_path in them used to
  pass, and the run then failed on the directory it had made there ('checkpoint 99 ... is
  unreadable')."""
  config = tiny_config(data_path=str(tmp_path / 'no_data'), log_path=str(tmp_path / 'run'),
                       output_path=str(tmp_path / output), num_seeds=num_seeds)
  with pytest.raises(paths.OutputPathError, match='a directory of checkpoints'):
    trainer.train(config)  # before the data loads: there are none
  assert os.listdir(tmp_path) == []


def test_configs_default_py_says_what_every_field_means():
  """README, Training: every field is listed with its meaning in configs/default.py: on its line,
  or named by the comment just above it."""
  with open(os.path.join(REPO_ROOT, 'configs', 'default.py')) as f:
    source = f.read()
  lines = source[source.index('def get_config'):source.index('  return c')].splitlines()
  unexplained, comment_above = [], ''
  for line in lines:
    field = re.match(r'  c\.(\w+) = ', line)
    if field and '#' not in line and not re.search(rf'\b{field[1]}\b', comment_above):
      unexplained.append(field[1])
    comment_above = line if line.startswith('  #') else comment_above if field else ''
  fields = [m[1] for m in map(re.compile(r'  c\.(\w+) = ').match, lines) if m]
  assert sorted(fields) == sorted(default.get_config().keys())
  assert not unexplained, unexplained


def _logged_runs(count: int) -> list:
  """Stand-ins for `count` runs whose log.info records each formatted line in run.lines."""
  def run():
    lines = []
    return types.SimpleNamespace(lines=lines, log=types.SimpleNamespace(
        info=lambda message, *args: lines.append(message % args)))
  return [run() for _ in range(count)]


def test_each_run_logs_the_epochs_it_is_about_to_train():
  """The plan line numbers epochs from 1 and, resumed, from the epoch after the checkpoint's;
  every model of a sweep says it (or that it has nothing left), not only the first."""
  config = ml_collections.ConfigDict(dict(epochs=5, batch_size=32, critic_iter=2, num_seeds=2))
  for start, expected in ((0, 'Training epochs 1..5: 6 batches of 32 per epoch, 2 critic step(s) '
                              'per generator step; 2 models in one vmapped step'),
                          (3, 'Training epochs 4..5: 6 batches'),
                          (5, 'Already trained 5 epochs (epochs=5): nothing to train')):
    runs = _logged_runs(2)
    trainer._log_plan(config, runs, start, 6)
    for run in runs:
      assert len(run.lines) == 1 and run.lines[0].startswith(expected), (start, run.lines)


def test_each_run_logs_why_it_stopped_early():
  """Every model of a sweep records the stop, not only the first; a time budget's line gives the
  budget in seconds (time_budget_min is in minutes) and the time used, an interrupt's neither."""
  config = ml_collections.ConfigDict(dict(epochs=50, time_budget_min=0.5))
  runs = _logged_runs(2)
  trainer._log_stopped_early(config, runs, 3, False, 31.25)
  trainer._log_stopped_early(config, runs, 4, True, 40.0)
  for run in runs:
    assert run.lines == [
        'time_budget_min=0.5 (30 s): stopped after epoch 3 of 50 (checkpointed), 31.2 s after the '
        'run started (data loading and compilation included)',
        'Interrupted: stopped after epoch 4 of 50 (checkpointed)'], run.lines


@pytest.mark.parametrize('saved, said', [
    ([[2]], ['the last checkpoint is of epoch 2']),
    ([[]], ['no checkpoint was written yet']),
    ([[1, 2], [1]], ['the last checkpoint is of epoch 2; the sweep resumes together from epoch '
                     '1, the last its runs all saved', 'the last checkpoint is of epoch 1']),
    ([[2], []], ['the last checkpoint is of epoch 2; the sweep trains afresh, as one of its runs '
                 'saved none', 'no checkpoint was written yet'])],
    ids=['one_run', 'one_run_unsaved', 'sweep', 'sweep_one_unsaved'])
def test_each_run_logs_which_checkpoint_an_interrupted_run_resumes_from(monkeypatch, saved, said):
  """After a Ctrl-C every run's line names its own last checkpoint; only a run whose last
  checkpoint is not the one the sweep resumes from adds where the sweep resumes (a single run, or
  a sweep's run at the shared epoch, says nothing of a sweep)."""
  runs = _logged_runs(len(saved))
  for k, run in enumerate(runs):
    run.log_path = f'run{k}'
  monkeypatch.setattr(resume, 'saved_epochs', lambda log_path: saved[int(log_path[3:])])
  trainer._log_interrupted(runs, 3, 'during epoch %d')
  assert [run.lines for run in runs] == [[f'Interrupted during epoch 3; {s}'] for s in said]


def test_a_finished_run_run_again_trains_nothing(base_run, tmp_path):
  """... and removes the temporary directories of saves a killed run left unfinished."""
  config, _ = base_run
  config = ml_collections.ConfigDict(config.to_dict())
  config.log_path = copy_run(config.log_path, tmp_path / 'again')
  config.output_path = ''
  leftovers = [os.path.join(config.log_path, d, '3.orbax-checkpoint-tmp-1764000000')
               for d in ('checkpoints', 'best')]
  for leftover in leftovers:
    os.makedirs(os.path.join(leftover, 'state'))
  result = trainer.train(config)
  # orbax removes them in a background thread that only a save waits for
  deadline = time.monotonic() + 30
  while any(os.path.exists(p) for p in leftovers) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert [p for p in leftovers if os.path.exists(p)] == []
  assert result['epochs'] == config.epochs and result['start_epoch'] == config.epochs
  with open(os.path.join(config.log_path, 'log_summary'), encoding='utf-8') as f:
    log = f.read()
  assert f'Already trained {config.epochs} epochs (epochs={config.epochs}): nothing to train' in log
  assert f'Training epochs {config.epochs + 1}..' not in log
  assert ' Trained 0 epoch(s) in ' in log  # this run's, after the first run's 2


def test_a_time_budget_stops_after_the_epoch_that_reaches_it(small_design_dir, tmp_path):
  """The run ends early with everything a last epoch gets: checkpoint, log line, outputs."""
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=50,
                       checkpoint_every=10, time_budget_min=0.001, **BASE)
  result = trainer.train(config)
  assert result['epochs'] == 1
  assert os.listdir(os.path.join(result['log_path'], 'checkpoints')) == ['1']
  with open(os.path.join(result['log_path'], 'log_summary')) as f:
    log = f.read()
  # The budget's clock starts before the log's first line (data loading), so the line says how
  # much of the budget was used, at least the time the log spans until then.
  stop = re.search(r'^(\S+ \S+) time_budget_min=0.001 \(0.06 s\): stopped after epoch 1 of 50 '
                   r'\(checkpointed\), ([0-9.]+) s after the run started \(data loading and '
                   r'compilation included\)$', log, re.MULTILINE)
  assert stop, log[-600:]
  stamp = lambda line: datetime.datetime.strptime(line[:23], '%Y-%m-%d %H:%M:%S,%f')
  spanned = (stamp(stop.group(1)) - stamp(log)).total_seconds()
  assert float(stop.group(2)) >= spanned - 0.05, (stop.group(0), spanned)
  assert len(os.listdir(os.path.join(result['output_path'], 'fake'))) == NUM_OUTPUTS


def test_every_time_budget_decision_counts_the_time_before_the_first_epoch(
    small_design_dir, tmp_path, monkeypatch):
  """The budget is the command's wall-clock, not its epochs': each decision counts from the call
  to train, so data loading and compilation use it up too (here a load slowed by 0.5 s)."""
  loaded, decisions = [], []
  load, decide = data.load_for_config, trainer._next_epoch_past_budget

  def slow_load(config):
    loaded.append(time.perf_counter())
    time.sleep(0.5)
    return load(config)

  def recording(elapsed_s, epoch_s, last_s, budget_s):
    decisions.append((elapsed_s, time.perf_counter()))
    return decide(elapsed_s, epoch_s, last_s, budget_s)

  monkeypatch.setattr(data, 'load_for_config', slow_load)
  monkeypatch.setattr(trainer, '_next_epoch_past_budget', recording)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=3,
                       eval_every=0, time_budget_min=60, **BASE)
  assert trainer.train(config)['epochs'] == 3
  assert len(loaded) == 1 and len(decisions) == 2, (loaded, decisions)  # after epochs 1 and 2
  for elapsed_s, now in decisions:
    # Counted from the first epoch's start instead, elapsed_s fell short by the load's 0.5 s
    # and the compilation; the margin is the microseconds between elapsed_s and `now`.
    assert elapsed_s > now - loaded[0] - 0.01, (elapsed_s, now - loaded[0])


def _record_budget_decisions(monkeypatch) -> list:
  """The closing estimate of every time-budget decision the trainer makes, in order."""
  seen = []
  decide = trainer._next_epoch_past_budget

  def recording(elapsed_s, epoch_s, last_s, budget_s):
    seen.append(last_s)
    return decide(elapsed_s, epoch_s, last_s, budget_s)

  monkeypatch.setattr(trainer, '_next_epoch_past_budget', recording)
  return seen


def test_a_time_budget_knows_the_cost_of_a_closing_evaluation_from_the_first_epoch(
    small_design_dir, tmp_path, monkeypatch):
  """With evaluations, checkpoints and grids due only at the end, the budget still knows their
  cost from the start: the first epoch closes with all three, and every budget decision sees it."""
  seen = _record_budget_decisions(monkeypatch)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=3,
                       checkpoint_every=100, sample_every=100, eval_every=100, eval_per_pair=2,
                       time_budget_min=60, **BASE)
  result = trainer.train(config)
  assert result['epochs'] == 3
  assert sorted(os.listdir(os.path.join(result['log_path'], 'checkpoints'))) == ['1', '3']
  with open(os.path.join(result['log_path'], 'log_summary'), encoding='utf-8') as f:
    log = f.read()
  assert 'eval epoch 1 ' in log and 'eval epoch 3 ' in log and 'eval epoch 2 ' not in log
  assert len(seen) == 2 and min(seen) > 0.01, seen  # after epochs 1 and 2; 3 is the last


def test_closing_work_is_timed_without_its_compilation():
  """A kind's first closing compiles what it runs (the evaluation: 9.3 s on an H200, where each
  later one took under 1 s); counted as work, it made a short budget stop after epoch 1."""
  compiled = []
  def on_duration(event, seconds, **_):
    if event in run_dir._COMPILE_EVENTS:
      compiled.append(seconds)

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  try:
    took = {}
    started = time.perf_counter()
    with run_dir._timed(took, 'evaluation'):
      fresh = jax.jit(lambda x: functools.reduce(lambda a, k: jnp.sin(a) * k, range(200), x))
      fresh(jnp.ones(3)).block_until_ready()
    wall = time.perf_counter() - started
  finally:
    jax.monitoring.unregister_event_duration_listener(on_duration)
  assert sum(compiled) > 0.05, compiled  # each jit lowered, then compiled by XLA
  assert took['evaluation'] == pytest.approx(wall - sum(compiled), abs=0.02)


def test_only_the_closing_threads_compilation_is_left_out():
  took = {}
  started = time.perf_counter()
  with run_dir._timed(took, 'checkpoint'):
    time.sleep(0.3)
    other = threading.Thread(target=lambda: jax.monitoring.record_event_duration_secs(
        run_dir._COMPILE_EVENTS[1], 0.25))
    other.start()
    other.join()
    jax.monitoring.record_event_duration_secs(run_dir._COMPILE_EVENTS[1], 0.2)
  wall = time.perf_counter() - started
  assert took['checkpoint'] == pytest.approx(wall - 0.2, abs=0.01), (took, wall)


def test_the_time_budget_estimates_each_kind_of_closing_work_on_its_own():
  """The first closing also compiles the sampler and the evaluation: each kind's estimate is its
  first time only until that kind has closed a later epoch, then the longest later time, so a
  slow first evaluation stops counting once an evaluation has run again, whatever else was due."""
  closing = trainer._ClosingTime()
  closing.add(dict(grid=5.0, evaluation=10.0, checkpoint=1.0), first=True)
  assert closing.estimate_s() == 16.0
  closing.add(dict(evaluation=1.0), first=False)  # eval_every=3 at epoch 3, say
  assert closing.estimate_s() == 7.0 and closing.estimate_s(('evaluation',)) == 1.0
  closing.add(dict(checkpoint=0.2), first=False)
  closing.add(dict(grid=0.5), first=False)
  assert closing.estimate_s() == pytest.approx(1.7)
  closing.add(dict(evaluation=2.0, checkpoint=0.1), first=False)  # the longest later time counts
  assert closing.estimate_s() == pytest.approx(2.7)
  assert closing.estimate_s(()) == 0.0


def test_a_time_budget_is_told_what_each_closing_did_and_decides_with_it(
    small_design_dir, tmp_path, monkeypatch):
  """The trainer reports each closing's work by kind, with periods that do not divide each other
  (evaluation every 2 epochs, checkpoint every 3), and decides with the resulting estimates."""
  added, estimates = [], []

  class Recording(trainer._ClosingTime):
    def add(self, took, first):
      added.append((first, sorted(took)))
      super().add(took, first)
      estimates.append(self.estimate_s())

  monkeypatch.setattr(trainer, '_ClosingTime', Recording)
  decided = _record_budget_decisions(monkeypatch)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=4,
                       checkpoint_every=3, sample_every=100, eval_every=2, eval_per_pair=2,
                       time_budget_min=60, **BASE)
  assert trainer.train(config)['epochs'] == 4
  every = sorted(run_dir.CLOSING_WORK)
  # Epoch 1 closes fully to measure; 2 evaluates; 3 checkpoints; 4 is the last.
  assert added == [(True, every), (False, ['evaluation']), (False, ['checkpoint']),
                   (False, every)], added
  # A decision after each closing but the last's, with the estimate that closing left.
  assert decided == estimates[:3], (decided, estimates)


def test_a_budget_that_stops_after_a_partial_closing_adds_the_rest_of_a_last_one(
    small_design_dir, tmp_path, monkeypatch):
  """The budget decides after the epoch's own closing work (here an evaluation alone); an epoch
  it makes the last then also gets the checkpoint and grid a last epoch has, and its log line."""
  added = []

  class Recording(trainer._ClosingTime):
    def add(self, took, first):
      added.append((first, sorted(took)))
      super().add(took, first)

  monkeypatch.setattr(trainer, '_ClosingTime', Recording)
  decisions = iter([False, True])  # go on after epoch 1, stop after epoch 2
  monkeypatch.setattr(trainer, '_next_epoch_past_budget', lambda *args: next(decisions))
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=6,
                       checkpoint_every=100, sample_every=100, eval_every=2, eval_per_pair=2,
                       log_every=100, time_budget_min=60, **BASE)
  result = trainer.train(config)
  assert result['epochs'] == 2
  assert added == [(True, sorted(run_dir.CLOSING_WORK)), (False, ['evaluation']),
                   (False, ['checkpoint', 'grid'])], added
  assert sorted(os.listdir(os.path.join(result['log_path'], 'checkpoints'))) == ['1', '2']
  with open(os.path.join(result['log_path'], 'log_summary'), encoding='utf-8') as f:
    log = f.read()
  assert log.count('epoch 2/6 ') == 1 and log.count('eval epoch 2 ') == 1
  assert 'stopped after epoch 2 of 6' in log


def test_a_first_closing_slowed_by_compilation_does_not_stop_a_budget_early(
    small_design_dir, tmp_path, monkeypatch):
  """Each kind's first closing also compiles it (on an H200 9.3 s, each later one under 1 s).
  Deciding before an epoch's closing counted that first time twice, for the work due now and for
  the last closing, and a 60 s budget stopped after epoch 10 of 200 with 42.8 s used. Here a first
  time of 0.3 budgets a kind: the old decision (0.3 + 0.9 > 1) stopped after epoch 2; deciding
  after the epoch's evaluation, measured, trains every epoch."""
  budget_s = 3600.0

  class SlowFirst(trainer._ClosingTime):
    def add(self, took, first):
      super().add({k: 0.3 * budget_s for k in took} if first else took, first)

  monkeypatch.setattr(trainer, '_ClosingTime', SlowFirst)
  config = tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'), epochs=3,
                       checkpoint_every=100, sample_every=100, eval_every=2, eval_per_pair=2,
                       time_budget_min=budget_s / 60, **BASE)
  assert trainer.train(config)['epochs'] == 3


def test_no_epoch_the_time_budget_measures_includes_compilation(small_design_dir, tmp_path,
                                                               monkeypatch):
  """The budget estimates an epoch by the one just trained, so the first one must not include
  compiling it (a short budget used to stop after epoch 1, taking its compilation for training):
  no XLA compilation happens while the trainer runs an epoch."""
  during_epochs = []

  class Timed:
    """Wraps the epoch function to count the compilations that happen inside an epoch call."""

    def __init__(self, fn):
      self.fn = fn

    def __call__(self, *args):
      before = len(compiles)
      out = jax.block_until_ready(self.fn(*args))
      during_epochs.append(len(compiles) - before)
      return out

    def lower(self, *args):
      return self.fn.lower(*args)

  compile_epoch = step.compile_epoch
  monkeypatch.setattr(step, 'compile_epoch', lambda *a, **k: Timed(compile_epoch(*a, **k)))
  with compilations() as compiles:
    trainer.train(tiny_config(data_path=small_design_dir, log_path=str(tmp_path / 'run'),
                              epochs=2, eval_every=0, **BASE))
  assert compiles and during_epochs == [0, 0], (compiles, during_epochs)


@pytest.mark.parametrize('elapsed, past', [
    (70, False),  # 70 (this epoch's closing included) + 10 epoch + 20 closing = 100: just within
    (71, True),   # 71 + 10 + 20 = 101: the next epoch's closing counts too
    (50, False),
])
def test_the_time_budget_counts_the_closing_work(elapsed, past):
  """An epoch whose last closing takes 20 s: the closing the next epoch would end with is part of
  when the next epoch ends."""
  assert trainer._next_epoch_past_budget(elapsed, epoch_s=10, last_s=20, budget_s=100) == past


def test_closing_an_epoch_sums_each_kind_of_work_over_a_sweeps_runs():
  """The time budget sees the closing work of all of a sweep's models (they close one after the
  other), kind by kind, and each run's state getter gives its own model of the stacked state,
  also when called after the other runs closed."""
  getters, took = [], ({'grid': 1.0, 'checkpoint': 2.0}, {'grid': 0.5})

  def run(k):
    def end_epoch(epoch, get_state, metrics, *rest):
      assert (epoch, metrics, rest) == (7, {'loss': k}, (3.0, 0.5, True, False, None, False))
      getters.append(get_state)
      return took[k]
    return types.SimpleNamespace(end_epoch=end_epoch)

  state = step.TrainState(*(np.array([10 * k for k in (1, 2)]),) * len(step.TrainState._fields))
  closed = trainer._close_epoch([run(0), run(1)], 7, state, [{'loss': 0}, {'loss': 1}], 3.0,
                                0.5, True, False, None, sweep=True)
  assert closed == {'grid': 1.5, 'checkpoint': 2.0}
  assert [int(get().gen_params) for get in getters] == [10, 20]


def test_evaluation_is_checked_only_for_a_run_that_evaluates():
  """eval_every=0: no evaluation, so neither its best_metric nor eval_per_pair can refuse the run
  (the dataset is not even looked at)."""
  config = ml_collections.ConfigDict(dict(eval_every=0, eval_per_pair=10**9, best_metric='fd'))
  trainer.check_evaluation(config, None)


def test_dropout_masks_are_the_step_keys_threefry_draws():
  """`step.dropout_rngs`: JAX's Threefry-2x32 stream of the raw step key (drawn by gan.prng's
  fused kernel, the same bits), so the same key gives the same masks, another key others, and
  nnx.Dropout keeps 1 - rate of the units."""
  key = jax.random.PRNGKey(3)
  dropout = nnx.Dropout(0.3)
  ones = jnp.ones((512, 1024))
  masks = [dropout(ones, deterministic=False, rngs=step.dropout_rngs(k)) != 0
           for k in (key, key, jax.random.PRNGKey(4))]
  jax_default = dropout(ones, deterministic=False,
                        rngs=nnx.Rngs(dropout=jax.random.wrap_key_data(key)))
  np.testing.assert_array_equal(masks[0], jax_default != 0)
  np.testing.assert_array_equal(masks[0], masks[1])
  assert float(jnp.mean(masks[0] != masks[2])) > 0.3
  assert abs(float(jnp.mean(masks[0])) - 0.7) < 0.005


def test_every_network_call_of_an_update_draws_dropout_from_dropout_rngs(small_design_dir, tmp_path,
                                                                          monkeypatch):
  """Both networks' dropout in both steps comes from `step.dropout_rngs`: tracing one update (one
  critic step) makes 4 calls, for G and D in the critic step and in the generator step."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path), gen_dropout=0.1, disc_dropout=0.1,
      critic_iter=1))
  calls = []
  original = step.dropout_rngs
  monkeypatch.setattr(step, 'dropout_rngs', lambda key: calls.append(key) or original(key))
  jax.eval_shape(lambda s, b: step.update(config, models, s, b), state,
                 spread_batch(config, dataset))
  assert len(calls) == 4


def test_strut_positions_spelt_otherwise_are_the_same_model_on_resume():
  """'7,11; 5,14' (or a trailing ';') names the run's struts: not a change that refuses the
  resume; other pixels are."""
  saved = config_lib.resolve(default.get_config()).to_dict()
  new = config_lib.resolve(default.get_config())
  new.strut_positions = ' 7, 11; 5,14;'
  assert config_lib.model_fields(config_lib.from_saved(saved)) == config_lib.model_fields(new)
  new.strut_positions = '7,11;5,15'
  assert (config_lib.model_fields(config_lib.from_saved(saved))['strut_positions']
          != config_lib.model_fields(new)['strut_positions'])


class _Steps:
  """A checkpoint manager's steps, for resume.resume_epoch."""

  def __init__(self, steps):
    self.steps = list(steps)

  def latest_step(self):
    return max(self.steps, default=None)

  def all_steps(self):
    return list(self.steps)

  def delete(self, step):
    self.steps.remove(step)


@pytest.mark.parametrize('epochs, kept', [(2, [1, 3]), (4, [1])])
def test_best_checkpoints_after_the_resumed_epoch_stay_where_nothing_is_trained_again(epochs,
                                                                                      kept):
  """best/ steps after the latest checkpoint go only where those epochs are trained and evaluated
  again: resumed with epochs at the checkpoint (nothing to train), the run keeps them."""
  best = _Steps([1, 3])
  run = types.SimpleNamespace(mngr=_Steps([2]), evaluator=types.SimpleNamespace(best=best),
                              config=types.SimpleNamespace(epochs=epochs), log_path='runs/x',
                              log=types.SimpleNamespace(info=lambda *args: None))
  assert resume.resume_epoch([run]) == 2
  assert best.steps == kept and run.mngr.steps == [2]


def test_a_run_without_the_epoch_the_others_resume_from_is_refused_not_emptied():
  """The last guard before the checkpoints after the shared epoch go: a run that got further but
  no longer holds that epoch (keep_checkpoints removed it) is refused, not cut back to nothing,
  which deleted its only checkpoints and left nothing to restore (check_cut_back_early refuses
  it earlier, from the directories, before the runs log)."""
  log = types.SimpleNamespace(info=lambda *args: None)
  behind, further = (types.SimpleNamespace(
      mngr=_Steps(steps), evaluator=types.SimpleNamespace(best=None), log_path=f'runs/seed_{s}',
      config=types.SimpleNamespace(epochs=5), log=log) for s, steps in ((0, [1, 2]), (1, [4])))
  with pytest.raises(ConfigError, match='seed_1 has no checkpoint of epoch 2, the last one the '
                                        'others share'):
    resume.resume_epoch([behind, further])
  assert (behind.mngr.steps, further.mngr.steps) == ([1, 2], [4])


def test_a_run_cut_back_to_the_shared_epoch_loses_its_later_best_checkpoints_too():
  """A sweep resumed with epochs at the shared epoch trains nothing, yet the run that got further
  is cut back to it: its best/ steps after it go with its checkpoints, as evaluations of training
  it no longer holds (kept, best/ would rank a model no checkpoint holds, of epochs trained
  again once the sweep goes on)."""
  log = types.SimpleNamespace(info=lambda *args: None)
  behind, further = (types.SimpleNamespace(
      mngr=_Steps(steps), evaluator=types.SimpleNamespace(best=_Steps(best)),
      log_path=f'runs/seed_{s}', config=types.SimpleNamespace(epochs=2), log=log)
      for s, steps, best in ((0, [1, 2], [1]), (1, [1, 2, 3], [1, 3])))
  assert resume.resume_epoch([behind, further]) == 2
  assert (further.mngr.steps, further.evaluator.best.steps) == ([1, 2], [1])
  assert behind.evaluator.best.steps == [1]
