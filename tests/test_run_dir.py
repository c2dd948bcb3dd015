"""gan/run_dir.py's closing of an epoch, unit by unit: what goes to the log and TensorBoard, at
which step and under which tag, and what is checkpointed, with stand-ins for the training."""

import types

import numpy as np
import pytest
from helpers import tiny_config

from gan import checkpoints
from gan import evaluate
from gan import run_dir
from gan import step
from gan.errors import TrainingError


class _Board:
  """Records TensorBoard writes as (kind, tag or prefix, step)."""

  def __init__(self):
    self.writes = []

  def scalars(self, epoch, values, prefix='train/'):
    self.writes.append(('scalars', prefix, epoch, sorted(values)))

  def image(self, tag, epoch, image):
    del image
    self.writes.append(('image', tag, epoch))


class _Log:
  def __init__(self):
    self.lines = []

  def info(self, message, *args):
    self.lines.append(message % args)


class _Evaluator:
  def __init__(self, every):
    self.every, self.calls = every, []

  def due(self, epoch, last):
    return epoch % self.every == 0 or last

  def __call__(self, epoch, state, sample_fn, meta):
    self.calls.append((epoch, state, meta['epoch']))
    return {'fd': 2.5, 'oracle_exact': 0.25}


class _Progress:
  def show(self, *args):
    pass

  def clear(self):
    pass


def _run(monkeypatch, **overrides):
  """A Run with stand-ins for its board, log, evaluator and checkpoints (saves recorded)."""
  config = tiny_config('unused', 'unused', epochs=10, **overrides)
  run = run_dir.Run.__new__(run_dir.Run)
  run.config, run.means, run.meta = config, {}, {'sweep': None}
  run.shared = types.SimpleNamespace(main=True, real_grid='real grid', sample_fn=None,
                                     dataset=types.SimpleNamespace(layout=None, spec=None))
  run.tb, run.log, run.evaluator = _Board(), _Log(), _Evaluator(config.eval_every)
  run.mngr, run.saved = 'manager', []
  monkeypatch.setattr(checkpoints, 'save', lambda mngr, epoch, state, meta: run.saved.append(
      (mngr, epoch, state, meta['epoch'])))
  return run


def _metrics(config, value=1.0):
  """Each term's four steps of an epoch, whose mean is `value`."""
  return {k: value + np.array([-1.5, -0.5, 0.5, 1.5]) for k in step.active_metrics(config)}


def test_an_epoch_closes_with_its_log_line_scalars_evaluation_and_checkpoint_at_its_step(
    monkeypatch):
  run = _run(monkeypatch, log_every=2, sample_every=100, eval_every=3, checkpoint_every=3)
  train_tags = sorted(step.active_metrics(run.config) + ('samples_per_s',))
  eval_tags = sorted(evaluate.scalar_metrics({'fd': 2.5, 'oracle_exact': 0.25}))
  for epoch in (1, 2, 3):
    run.end_epoch(epoch, lambda: 'state', _metrics(run.config, epoch), 100.0, 1.0,
                  first=epoch == 1, full=False, progress=_Progress())
  assert run.tb.writes == [
      ('image', 'real/designs_by_class', 0),  # the real designs once, before epoch 1's
      ('scalars', 'train/', 1, train_tags),  # a first epoch is logged whatever log_every says
      ('scalars', 'train/', 2, train_tags),
      ('scalars', 'eval/', 3, eval_tags)]
  logged = [line.split('  ')[0] for line in run.log.lines]
  assert logged == ['epoch 1/10', 'epoch 2/10', 'eval epoch 3']
  assert 'gen_loss 2.0000' in run.log.lines[1]  # the mean of the epoch's steps
  assert run.evaluator.calls == [(3, 'state', 3)]
  assert run.saved == [('manager', 3, 'state', 3)]


def test_the_rest_of_a_last_epoch_adds_only_what_its_closing_did_not_do(monkeypatch):
  """An epoch the time budget made the last after its closing work: its log line (logged
  already) and its evaluation (done already) are not repeated; the checkpoint a last epoch has
  is added."""
  run = _run(monkeypatch, log_every=1, sample_every=100, eval_every=2, checkpoint_every=100)
  run.shared.main = False  # no grid: that needs a sampler
  metrics = _metrics(run.config)
  run.end_epoch(2, lambda: 'state', metrics, 100.0, 1.0, first=False, full=False,
                progress=_Progress())
  assert [line.split('  ')[0] for line in run.log.lines] == ['epoch 2/10', 'eval epoch 2']
  assert run.saved == []
  run.end_epoch(2, lambda: 'state', metrics, 100.0, 1.0, first=False, full=True,
                progress=_Progress(), rest=True)
  assert [line.split('  ')[0] for line in run.log.lines] == ['epoch 2/10', 'eval epoch 2']
  assert [w[:3] for w in run.tb.writes] == [('scalars', 'train/', 2), ('scalars', 'eval/', 2)]
  assert len(run.evaluator.calls) == 1 and run.saved == [('manager', 2, 'state', 2)]


def test_the_first_non_finite_metric_is_the_earliest_step_of_any_term():
  nan, inf = np.nan, np.inf
  assert run_dir._first_non_finite({'gen_loss': np.ones(3), 'critic_loss': np.ones(3)}) is None
  assert run_dir._first_non_finite({'gen_loss': np.array([1, 1, nan]),
                                    'critic_loss': np.array([1, inf, nan])}) == (1, 'critic_loss')
  assert run_dir._first_non_finite({'critic_loss': np.array([1, 1, -inf]),
                                    'gen_loss': np.array([1, nan, 1])}) == (1, 'gen_loss')


def test_work_due_follows_each_period_and_a_last_epoch_does_all_of_it(monkeypatch):
  run = _run(monkeypatch, sample_every=2, eval_every=3, checkpoint_every=4)
  due = {epoch: run.work_due(epoch, False) for epoch in range(1, 13)}
  assert due[1] == () and due[2] == ('grid',) and due[3] == ('evaluation',)
  assert due[4] == ('grid', 'checkpoint') and due[12] == run_dir.CLOSING_WORK
  assert run.work_due(5, True) == run_dir.CLOSING_WORK
  run.shared.main = False  # processes other than 0 draw no grid, not even at the end
  assert run.work_due(5, True) == ('evaluation', 'checkpoint')


def test_a_non_finite_epoch_stops_naming_the_first_bad_step_and_the_last_checkpoint(
    monkeypatch):
  run = _run(monkeypatch)
  run.seed_note = ''
  run.mngr = types.SimpleNamespace(latest_step=lambda: 4, directory='/run/checkpoints')
  metrics = {'gen_loss': np.array([1.0, 1.0, np.inf]), 'critic_loss': np.array([1.0, np.nan, 1])}
  with pytest.raises(TrainingError) as raised:
    run.check_finite(metrics, True, 5, 12, _Progress())
  assert str(raised.value).startswith(
      'critic_loss became non-finite at generator step 14 (epoch 5); training stopped. The last '
      'good checkpoint (epoch 4) is kept in /run/checkpoints. ')
  finite = {k: np.ones(3) for k in metrics}
  run.check_finite(finite, True, 5, 12, _Progress())  # nothing to stop
  run.mngr = types.SimpleNamespace(latest_step=lambda: None, directory='/run/checkpoints')
  with pytest.raises(TrainingError) as raised:
    run.check_finite(finite, False, 1, 0, _Progress())
  assert str(raised.value).startswith(
      'the training state (parameters or optimiser state) became non-finite in the update of '
      'generator step 3 (epoch 1); training stopped. Try lower')
  assert run.log.lines[-1] == ('Stopped: the training state (parameters or optimiser state) '
                               'became non-finite in epoch 1')
