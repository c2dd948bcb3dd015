"""The training loop: the dataset on the device, one compiled epoch at a time; each run's
directory (log_summary, TensorBoard, checkpoints, output BMPs) is gan/run_dir.py's.

The host wakes once per epoch: to check that every loss stayed finite, then, when due, to log,
draw grids and checkpoint. Re-running the same command resumes from the latest checkpoint.
Training uses every device of every process (gan/parallel.py: state replicated, rows sharded);
process 0 alone writes the log, TensorBoard and images, all processes write checkpoints.
"""

import contextlib
import logging
import os
import sys
import time
from typing import Callable

import jax
import numpy as np

from gan import config as config_lib
from gan import data
from gan import evaluate
from gan import interrupts
from gan import metrics as metrics_lib
from gan import parallel
from gan import paths
from gan import resume
from gan import run_dir
from gan import run_lock
from gan import step
from gan.errors import MEMORY_HINT, ConfigError, OutOfMemoryError, out_of_memory



class _Progress:
  """A one-line progress bar on an interactive terminal; silent otherwise."""

  def __init__(self, total: int, enabled: bool = True):
    self.total = total
    self.enabled = enabled and sys.stdout.isatty()

  def show(self, epoch: int, means: dict, samples_per_s: float):
    if not self.enabled:
      return
    done = int(30 * epoch / self.total)
    sys.stdout.write(f'\r[{"#" * done}{"." * (30 - done)}] epoch {epoch}/{self.total} '
                     f'critic {means["critic_loss"]:.4f} gen {means["gen_loss"]:.4f} '
                     f'{samples_per_s:,.0f} samples/s ')
    sys.stdout.flush()

  def clear(self):
    if self.enabled:
      sys.stdout.write('\r' + ' ' * 100 + '\r')


def _lock_dirs(config) -> list:
  """The directories a run claims (run_lock): every run directory, and a sweep's log_path too, so
  that a single run there and a sweep there (which writes only its seed_* directories) do not
  train into one log_path at once."""
  return ([config.log_path] if config.num_seeds > 1 else []) + [
      c.log_path for c in config_lib.seed_configs(config)]


def check_batch_fits(config, dataset, resuming: bool = False) -> None:
  """An epoch needs at least one whole batch of training designs. `resuming`: the run has
  checkpoints, whose batch_size cannot change (a smaller one is refused on resume)."""
  if config.batch_size > len(dataset.train):
    size = f'({len(dataset.train)} design{"s" * (len(dataset.train) != 1)})'
    if resuming:  # 'use batch_size <= N' sent the user to a resume that is refused
      raise ConfigError(f'batch_size={config.batch_size} is larger than the training set '
                        f'{size} of {data.shown(dataset.data_dir)}, and the checkpoints in '
                        f'{config.log_path} keep their batch_size on resume: resume on the '
                        'designs the run was trained on, or use a new --config.log_path')
    raise ConfigError(f'batch_size={config.batch_size} is larger than the training set '
                      f'{size}; use batch_size <= {len(dataset.train)}')


def check_state_fits(config, abstract) -> None:
  """The training state (parameters, EMA, optimiser states; one per model of a sweep) must fit in
  a device's memory: a network thousands of times too wide failed with an out-of-memory traceback
  as its parameters were initialised, after the run's log was written."""
  state_bytes = config.num_seeds * sum(
      leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(abstract))
  limit = device_memory()
  if limit and state_bytes > limit:
    raise OutOfMemoryError(f'the training state takes {state_bytes / 2**30:.3g} GiB, more than '
                           f'the {limit / 2**30:.3g} GiB of a device\'s memory; {MEMORY_HINT}')


def device_memory() -> int:
  """The memory of one device in bytes, or 0 where it cannot be told. An accelerator reports
  its own; the CPU devices share the machine's (its RAM, or a container's smaller limit), each
  holding a copy of the state (gan/parallel.py replicates it)."""
  try:
    device = jax.local_devices()[0]
    stats = device.memory_stats() or {}
    if stats.get('bytes_limit'):
      return int(stats['bytes_limit'])
    if device.platform != 'cpu':  # the host's RAM says nothing of this device's
      return 0
    limits = [os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')] + _cgroup_limits()
    return min(limits) // jax.local_device_count()
  except (OSError, ValueError, AttributeError, RuntimeError):
    return 0


_CGROUP_LIMITS = ('/sys/fs/cgroup/memory.max',  # cgroup v2: a number of bytes, or 'max'
                  '/sys/fs/cgroup/memory/memory.limit_in_bytes')  # v1: a huge number if none


def _cgroup_limits() -> list:
  """The memory limits of this process's container, in bytes ([] where none is set or found)."""
  limits = []
  for path in _CGROUP_LIMITS:
    try:
      with open(path, encoding='ascii') as f:
        text = f.read().strip()
    except OSError:
      continue
    if text.isdigit():
      limits.append(int(text))
  return limits


def check_evaluation(config, dataset) -> None:
  """Refuses, before the run directory is made or written to and before the evaluation classifier
  is trained, evaluations (eval_every > 0) the data cannot give: a best_metric it cannot rank by
  (an oracle metric on designs the oracle does not label; fd without 2 held-out designs, where
  every fd is null; 'auto' always can), or more designs than one evaluation generates."""
  if config.eval_every <= 0:
    return
  evaluate.check_per_pair(config.eval_per_pair, dataset.spec, 'eval_per_pair')
  metric = config.best_metric
  if metric.startswith('oracle') and not metrics_lib.is_synthetic(dataset):
    raise ConfigError(f'best_metric={metric} needs the synthetic designs (the oracle does not '
                      'label this data); use classifier_accuracy_generated or fd')
  held_out = len(dataset.held_out()[1])
  if metric == 'fd' and held_out < 2:
    raise ConfigError(f'best_metric=fd needs at least 2 held-out designs to measure the Frechet '
                      f'distance against, this data has {held_out}; use more designs, a larger '
                      'val_fraction or another best_metric')


def train(config, stop_requested: Callable[[], bool] = lambda: False) -> dict:
  """Trains (or resumes) the run `config.log_path` describes; returns a summary dict.

  With num_seeds = K > 1, trains K independently seeded models in one vmapped program, each with
  its own run directory (see `config.seed_configs`). When `stop_requested()` turns true (train.py:
  at Ctrl-C), the epoch in progress is the last: checkpointed and evaluated, and the summary's
  `interrupted` is set."""
  started = time.perf_counter()  # the time budget counts data loading and compilation too
  config = config_lib.resolve(config)
  # Before minutes of training: where the run writes must be (or become) a writable directory.
  paths.check_output_dir(config.log_path, 'log_path')
  paths.check_output_dir(config_lib.output_dir(config), 'output_path')
  # ... and outside the checkpoint directories of its runs, which may not exist yet
  seeds = config_lib.seed_configs(config)
  managed = [d for c in seeds for d in _manager_dirs(c)]
  for c in seeds:
    paths.check_outside_checkpoints(config_lib.output_dir(c), 'output_path', managed)
  dataset = data.load_for_config(config)
  config_lib.check_against_data(config, dataset.layout)
  resuming = resume.has_checkpoints(config)
  check_batch_fits(config, dataset, resuming)
  check_evaluation(config, dataset)
  if not resuming:  # else once the resume is checked: its batch_size, the one to divide
    parallel.check_batch_size(config.batch_size)
  resume.check_run_layout(config)
  made = []  # the directories this run creates, deepest first
  stale = []  # (directory, message) of each stale run lock taken over
  try:
    for c in config_lib.seed_configs(config):  # now, not at the end: see paths.make_output_dir
      # log_path first: where it cannot be made (under /proc), the error named output_path, a
      # field the command did not set (its default is <log_path>/output)
      for path, what in ((c.log_path, 'log_path'),
                         (config_lib.output_dir(c), 'output_path')):
        made = paths.missing_dirs(path) + made
        paths.make_output_dir(path, what)
    with contextlib.ExitStack() as release:  # also after an error: see run_dir.Run.release
      if parallel.is_main():  # process 0 claims the directories for every process of the run
        for path in _lock_dirs(config):  # released last: after every pending write
          release.enter_context(run_lock.RunLock(
              path, on_stale=lambda message, path=path: stale.append((path, message))))
      # The checkpoint managers make these as they open (after the lock: no other run makes
      # them meanwhile); a run that fails before saving into them leaves them empty.
      made = [d for c in config_lib.seed_configs(config) for d in _manager_dirs(c)
              if not os.path.exists(d)] + made
      # After the lock: no other run writes them now.
      synthetic = metrics_lib.is_synthetic(dataset)  # what best_metric='auto' ranks by
      resume.check_resumable_early(config, dataset.spec, synthetic)
      resume.check_cut_back_early(config)
      # A run with checkpoints keeps its batch_size: then only another device count helps.
      parallel.check_batch_size(config.batch_size, resuming=resuming)
      models, abstract = step.abstract_init(config, dataset.spec, dataset.mask)
      check_state_fits(config, abstract)  # before the runs' logs: nothing written yet
      shared = run_dir.Shared(config, dataset, models, synthetic)
      runs = []
      for c in config_lib.seed_configs(config):
        prefix = f'[seed {c.seed}] ' if config.num_seeds > 1 else ''
        runs.append(run_dir.Run(c, shared, prefix=prefix))
        release.callback(runs[-1].release)
        for path, message in stale:  # a killed run's lock: said in the log, for later
          if os.path.abspath(path) in (os.path.abspath(c.log_path),
                                       os.path.abspath(config.log_path)):
            runs[-1].log.warning('warning: %s', message)
      stale.clear()
      return _train_runs(config, runs, shared, abstract, started, stop_requested)
  except BaseException as e:  # an error or Ctrl-C: no empty output directory left behind
    for _, message in stale:  # taken over before the runs' logs opened: said on the console
      logging.warning('warning: %s', message)
    paths.remove_if_empty(made)
    if isinstance(e, Exception) and (reason := out_of_memory(e)):  # too large for memory
      # from e: XLA's own message lists what held the memory, for a library caller to read
      raise OutOfMemoryError(f'training ran out of memory ({reason}); {MEMORY_HINT}, or free '
                             'the device of other processes') from e
    raise


def _log_interrupted(runs, epoch: int, when: str) -> None:
  """Records in every run's log that a Ctrl-C stopped it at once `when` (% epoch), and which
  checkpoint the same command resumes from: a sweep's runs resume together from the last epoch
  they all saved (`resume.resume_epoch`). Call it once the pending checkpoint writes are done:
  what is on disk then is what the same command finds."""
  latest = [_last_saved(run) for run in runs]
  together = min(latest)
  for run, last in zip(runs, latest):
    said = f'the last checkpoint is of epoch {last}' if last else 'no checkpoint was written yet'
    if last != together:
      said += (f'; the sweep resumes together from epoch {together}, the last its runs all saved'
               if together else '; the sweep trains afresh, as one of its runs saved none')
    run.log.info('Interrupted %s; %s', when % epoch, said)


def _last_saved(run) -> int:
  """The epoch of the run's latest checkpoint on disk (0: none); its manager's where the
  directory cannot be listed."""
  try:
    return max(resume.saved_epochs(run.log_path), default=0)
  except OSError:
    return run.mngr.latest_step() or 0


@contextlib.contextmanager
def _interruption_logged(runs, epoch: int, when: str):
  """Logs a KeyboardInterrupt raised in the block (`_log_interrupted`) and raises it on."""
  try:
    yield
  except KeyboardInterrupt:
    _log_interrupted(runs, epoch, when)
    raise


def _manager_dirs(config) -> list[str]:
  """The directories a run's checkpoint managers make in its log_path (see `run_dir.Run`)."""
  return [os.path.join(os.path.abspath(config.log_path), name)
          for name in ('checkpoints', 'best')]


def _train_runs(config, runs, shared, abstract, started: float, stop_requested) -> dict:
  """`train` once its runs are open: restore or initialise, compile, then the epochs."""
  dataset, models = shared.dataset, shared.models
  sweep = config.num_seeds > 1
  mesh = parallel.make_mesh()
  for run in runs:
    run.log.info('Training on %s', parallel.describe(mesh))
  start_epoch = resume.resume_epoch(runs)
  for run in runs:  # what resume._first_save reads: a first save is one of a run trained afresh
    run.meta['trained_from'] = start_epoch
  # A Ctrl-C (train.py: the second) while the state is restored or initialised or the epoch
  # compiles (seconds to minutes) is recorded in log_summary too, as one during the epochs.
  with _interruption_logged(runs, start_epoch + 1, 'before epoch %d started'):
    state = _initial_state(config, runs, dataset, abstract, mesh, start_epoch)
    shared.load_classifier(runs)  # after a resume's checks: a refused one trains none

    arrays = {k: getattr(dataset.train, k) for k in ('images', 'durability', 'mass', 'fixed')}
    device_data, num_rows = parallel.shard_rows(mesh, arrays)
    epoch_fn = step.compile_epoch(config, models, config.num_seeds,
                                  **parallel.epoch_options(mesh, num_rows))
    num_batches = len(dataset.train) // config.batch_size
    # The losses are computed before each update: the state an epoch ends with is checked itself.
    finite_fn = jax.jit(lambda s: step.finite(s, config.num_seeds))
    progress = _Progress(config.epochs, shared.main)
    _log_plan(config, runs, start_epoch, num_batches)
    if start_epoch < config.epochs:
      # Compiled ahead of the first epoch (the jitted function then finds the executable in its
      # cache), so that epoch's time, which the time budget takes as its estimate of an epoch, is
      # training alone.
      compile_started = time.perf_counter()
      epoch_fn.lower(state, device_data).compile()
      for run in runs:
        run.log.info('Compiled the training epoch in %.1f s',
                     time.perf_counter() - compile_started)
  start = time.perf_counter()
  budget_s = 60 * config.time_budget_min
  closing = _ClosingTime()
  interrupted = False
  end_epoch = start_epoch
  stopped_at_once = False  # by a KeyboardInterrupt (train.py's second Ctrl-C)
  try:
    # Under train.py (interrupts.watched), a second Ctrl-C that a callback swallowed (JAX's gc
    # callback, at any allocation) stops the run at the next of these checks: before the first
    # epoch (one while the run opened or compiled), after each epoch's training, and after its
    # closing work, as an unswallowed one would have stopped it there.
    interrupts.raise_if_interrupted()
    for epoch in range(start_epoch + 1, config.epochs + 1):
      t0 = time.perf_counter()
      steps_before = (epoch - 1) * num_batches  # known on the host: no device sync
      new_state, metrics = epoch_fn(state, device_data)
      metrics = jax.device_get(metrics)
      seconds = time.perf_counter() - t0
      per_run = ([{n: v[k] for n, v in metrics.items()} for k in range(len(runs))] if sweep
                 else [metrics])
      state_finite = np.broadcast_to(jax.device_get(finite_fn(new_state)), (len(runs),))
      interrupts.raise_if_interrupted()
      for run, run_metrics, run_finite in zip(runs, per_run, state_finite):
        run.check_finite(run_metrics, bool(run_finite), epoch, steps_before, progress)
      state = new_state
      samples_per_s = len(runs) * num_batches * config.batch_size / seconds
      # With a time budget, stop after the last epoch that is expected to end within it. The
      # first epoch closes with everything a last one does (evaluation, checkpoint, grid), so the
      # budget knows what that costs before it decides anything; each later decision follows the
      # epoch's own closing work, which is then measured, not estimated (its compilation left
      # out: `run_dir._timed`).
      final = epoch == config.epochs
      stop = 0 if final else _stop_reason(stop_requested(), False)
      interrupted = stop == _INTERRUPTED
      last = final or interrupted
      first = epoch == start_epoch + 1
      full = last or (budget_s > 0 and first)
      took = _close_epoch(runs, epoch, state, per_run, samples_per_s, seconds, first, full,
                          progress, sweep)
      closing.add(took, first=first)
      if budget_s > 0 and not last:
        last = _stop_reason(False, _next_epoch_past_budget(
            time.perf_counter() - started, seconds, closing.estimate_s(), budget_s)) > 0
        if last and not full:  # the rest of a last epoch's closing work
          closing.add(_close_epoch(runs, epoch, state, per_run, samples_per_s, seconds, first,
                                   True, progress, sweep, rest=True), first=False)
      # A failed write stops the run now, not checkpoint_every epochs later (a last epoch's
      # checkpoint is waited for by run.close() below). One process only: with several, the one
      # whose write failed would stop alone and the others wait for it in the next collective
      # (how several processes meet a failed write is a known problem: README, "Training").
      if not last and jax.process_count() == 1:
        for run in runs:
          run.raise_if_a_write_failed()
      interrupts.raise_if_interrupted()  # before this epoch counts as trained, as in the closing
      end_epoch = epoch
      if last:
        if epoch < config.epochs:
          _log_stopped_early(config, runs, epoch, interrupted, time.perf_counter() - started)
        break
  except KeyboardInterrupt:
    stopped_at_once = True
    raise
  finally:  # also on errors and Ctrl-C: pending checkpoint writes complete before we exit
    progress.clear()
    try:
      for run in runs:
        run.close()
    finally:  # after the writes: the log says what the same command resumes from
      if stopped_at_once:
        _log_interrupted(runs, end_epoch + 1, 'during epoch %d')
  # One training time for all of a sweep's models (they train together), taken before the first
  # run writes its outputs: each later run's would count the earlier runs' writing too.
  seconds = time.perf_counter() - start
  results = [run.finish(end_epoch, end_epoch - start_epoch, seconds,
                        step.unstack(state, k) if sweep else state)
             for k, run in enumerate(runs)]
  return dict(results[0], state=state, models=models, runs=results, log_path=os.path.abspath(
      config.log_path), start_epoch=start_epoch, interrupted=interrupted)


def _initial_state(config, runs, dataset, abstract, mesh, start_epoch: int):
  """The training state on the mesh: the runs' checkpoints of `start_epoch` (stacked for a sweep)
  or, at epoch 0, a freshly initialised one."""
  sweep = config.num_seeds > 1
  if start_epoch:  # restored into shapes only: initialising a state first costs seconds
    target = parallel.replicated_like(mesh, abstract)
    restored = [run.restore(start_epoch, target) for run in runs]
    return step.stack(restored) if sweep else restored[0]
  if sweep:
    seeds = [c.seed for c in config_lib.seed_configs(config)]
    state = step.init_sweep(config, dataset.spec, dataset.mask, seeds)[1]
  else:
    state = step.init(config, dataset.spec, dataset.mask)[1]
  state = parallel.replicate(mesh, state)
  for run in runs:  # the events of a run that died before its first checkpoint: replaced
    run.tb.purge_from(0)
  return state


def _log_plan(config, runs, start_epoch: int, num_batches: int) -> None:
  """Each run's log: the epochs it is about to train, or that it has none left."""
  for run in runs:
    if start_epoch >= config.epochs:
      run.log.info('Already trained %d epochs (epochs=%d): nothing to train; a larger '
                   '--config.epochs continues this run', start_epoch, config.epochs)
      continue
    run.log.info('Training epochs %d..%d: %d batches of %d per epoch, %d critic step(s) per '
                 'generator step%s', start_epoch + 1, config.epochs, num_batches,
                 config.batch_size, config.critic_iter,
                 f'; {len(runs)} models in one vmapped step' if config.num_seeds > 1 else '')


def _log_stopped_early(config, runs, epoch: int, interrupted: bool, elapsed_s: float) -> None:
  """Each run's log: why it stopped before `config.epochs`."""
  # The budget's clock started before the log's first line (data loading, the evaluation
  # classifier), so the log alone cannot tell how much of it was used: say so. The first epoch
  # always runs, so the time can exceed the budget.
  for run in runs:
    if interrupted:
      run.log.info('Interrupted: stopped after epoch %d of %d (checkpointed)', epoch, config.epochs)
    else:
      run.log.info('time_budget_min=%g (%g s): stopped after epoch %d of %d (checkpointed), '
                   '%.1f s after the run started (data loading and compilation included)',
                   config.time_budget_min, 60 * config.time_budget_min, epoch, config.epochs,
                   elapsed_s)


def _close_epoch(runs, epoch: int, state, per_run, samples_per_s: float, seconds: float,
                 first: bool, full: bool, progress, sweep: bool, rest: bool = False) -> dict:
  """Every run's `end_epoch`; the seconds each kind of closing work took, summed over the runs.
  `rest`: only the closing work a last epoch adds to what was due (the budget decided after it)."""
  took = {}
  for k, (run, run_metrics) in enumerate(zip(runs, per_run)):
    for kind, s in run.end_epoch(
        epoch, (lambda k=k: step.unstack(state, k)) if sweep else (lambda: state),
        run_metrics, samples_per_s, seconds, first, full, progress, rest).items():
      took[kind] = took.get(kind, 0.0) + s
  return took


def _next_epoch_past_budget(elapsed_s: float, epoch_s: float, last_s: float,
                            budget_s: float) -> bool:
  """Whether one more epoch would end after the time budget, decided once this epoch's own
  closing work is done (so `elapsed` includes it):

    elapsed + one epoch + a last epoch's closing work > budget

  A last epoch always closes with all of run_dir.CLOSING_WORK, estimated by `_ClosingTime` (the
  trainer closes its first epoch fully to see each kind); an epoch is estimated by the one just
  trained."""
  return elapsed_s + epoch_s + last_s > budget_s


class _ClosingTime:
  """The time budget's estimate of closing work (run_dir.CLOSING_WORK: image grid, evaluation,
  checkpoint), kind by kind: the longest time a kind took after the first epoch, or until one is
  seen, the first epoch's. That one also compiles the sampler and the evaluation (about 15.8 s in
  all on an H100, where each later evaluation took 0.7-0.8 s and an epoch 0.04 s): `run_dir._timed`
  leaves the compilation out, and what else a first time costs more (files and directories created,
  memory first touched) is forgotten for each kind as soon as that kind has closed a later epoch,
  even where the periods of the three do not divide each other."""

  def __init__(self):
    self._first, self._later = {}, {}

  def add(self, took: dict, first: bool) -> None:
    """One epoch's closing: the seconds each kind of work it did took (summed over a sweep's
    runs)."""
    seen = self._first if first else self._later
    for kind, seconds in took.items():
      seen[kind] = max(seen.get(kind, 0.0), seconds)

  def estimate_s(self, kinds=None) -> float:
    """The estimated seconds of `kinds` (default: all of run_dir.CLOSING_WORK, a last epoch's)."""
    return sum(self._later.get(kind, self._first.get(kind, 0.0))
               for kind in (run_dir.CLOSING_WORK if kinds is None else kinds))


_INTERRUPTED, _OVER_BUDGET = 2, 1


def _stop_reason(interrupted: bool, over_budget: bool) -> int:
  """The reason to stop after this epoch (_INTERRUPTED, _OVER_BUDGET or 0: go on), the same on
  every process, since processes stopping at different epochs would wait for each other forever:
  the largest of the processes' own (a Ctrl-C that reaches any one process, as a cluster's job
  manager may send it, stops them all; so does any process's clock passing the budget)."""
  local = _INTERRUPTED if interrupted else _OVER_BUDGET if over_budget else 0
  return parallel.max_over_processes(local)

