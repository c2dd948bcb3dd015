"""One model's run directory, as training fills it: log_summary and the console, TensorBoard
scalars and grids, checkpoints (every checkpoint_every epochs, and the best in best/), evaluations
and, at the end, the output BMPs. `Shared` holds what the runs of a sweep share (the data, the
compiled sampler, the evaluation classifier); gan/trainer.py runs the epochs and calls each
`Run` when an epoch closes.
"""

import contextlib
import logging
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from gan import checkpoints
from gan import classifier as classifier_lib
from gan import config as config_lib
from gan import data
from gan import evaluate
from gan import parallel
from gan import paths
from gan import prng
from gan import resume
from gan import step
from gan import summaries
from gan.errors import DesignGanError, TrainingError, messages_to

# The work that closes an epoch when due, in the order it is done; a last epoch does all of it.
CLOSING_WORK = ('grid', 'evaluation', 'checkpoint')


def _logger(log_path: str, prefix: str = '', enabled: bool = True) -> logging.Logger:
  """log_summary and the console, lines prefixed by `prefix` on the console; silent when not
  `enabled` (processes other than 0)."""
  logger = logging.getLogger(f'designgan.train.{log_path}')
  logger.setLevel(logging.INFO)
  logger.propagate = False
  for handler in list(logger.handlers):
    logger.removeHandler(handler)
  if not enabled:
    logger.addHandler(logging.NullHandler())
    return logger
  # A non-UTF-8 file name in a message must not cost the line (logging would print a traceback).
  file_handler = logging.FileHandler(os.path.join(log_path, 'log_summary'),
                                     errors='backslashreplace')
  file_handler.setFormatter(logging.Formatter('%(asctime)s %(message)s'))
  console = logging.StreamHandler(sys.stdout)
  console.setFormatter(logging.Formatter(prefix.replace('%', '%%') + '%(message)s'))
  logger.addHandler(file_handler)
  logger.addHandler(console)
  return logger


def _close_logger(logger: logging.Logger) -> None:
  """Removes and closes `_logger`'s handlers: a process that goes on after `train` (a notebook)
  would otherwise keep every run's log_summary open."""
  for handler in list(logger.handlers):
    logger.removeHandler(handler)
    handler.close()


def _close_tensorboard(board) -> None:
  """Closes `board` where an error may be on its way out (`Run.release`). `Run.finish` closes it
  once training succeeded, so it is still open here only after training failed: its own error (a
  full disk at the last write) is then dropped, as it would replace the failure that stopped the
  training (a CheckpointError, a Ctrl-C), which is the one to report."""
  failing = sys.exc_info()[1]
  try:
    board.close()
  except DesignGanError:
    if failing is None:
      raise


def _first_non_finite(metrics: dict):
  """(step index within the epoch, term) of the first non-finite metric, or None."""
  first = None
  for name, values in metrics.items():
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size and (first is None or bad[0] < first[0]):
      first = (int(bad[0]), name)
  return first


def _class_grid_inputs(config, spec, fixed_example):
  """Fixed noise and conditions for the durability x mass grid (one design per pair)."""
  d, m = spec.class_pairs()
  z = prng.noise(config.seed + 1, len(d), config.zdim)
  fixed = np.broadcast_to(fixed_example, (len(d),) + fixed_example.shape)
  return z, jnp.asarray(d), jnp.asarray(m), jnp.asarray(fixed)


def _real_class_grid(dataset) -> np.ndarray:
  """One real design per (durability, mass) pair (black where the data has none)."""
  spec, part = dataset.spec, dataset.train
  nd, nm = len(spec.durability), len(spec.mass)
  full = data.full_designs(spec.layout, part.images)
  grid = np.zeros((nd, nm) + full.shape[1:], np.uint8)
  seen = set()
  for i, (d, m) in enumerate(zip(part.durability, part.mass)):
    if (d, m) not in seen:
      seen.add((d, m))
      grid[d, m] = full[i]
  return grid


class Shared:
  """What every run of a sweep shares: the data, the compiled sampler, the eval classifier."""

  def __init__(self, config, dataset, models, synthetic: bool):
    self.dataset, self.models = dataset, models
    # In each run's checkpoint metadata: which checkpoints a re-run of the sweep may replace.
    self.sweep = resume.sweep_id(config)
    self.main = parallel.is_main()  # logs, TensorBoard and images come from process 0 only
    self.synthetic = synthetic  # metrics_lib.is_synthetic(dataset): the oracle labels the designs
    self.sample_fn = step.compile_sampler(models)
    self.real_grid = summaries.design_grid(_real_class_grid(dataset))
    self.evaluates = config.eval_every > 0
    self.classifier = self.reference = None  # load_classifier, once the runs' logs are open

  def load_classifier(self, runs) -> None:
    """Where the runs evaluate: the evaluation classifier (trained once per dataset, then cached)
    and the reference statistics of the real designs. Its line (trained in how long, with what
    held-out accuracy, or loaded from where) and warnings go to every run's log: under train.py
    nothing showed them, and the classifier trains for seconds (about 11 s on the default designs)
    before the first epoch."""
    if not self.evaluates or self.classifier is not None:
      return
    with messages_to(_ToRunLogs(runs), classifier_lib.log.name):
      self.classifier = classifier_lib.load_or_train_classifier(self.dataset)
    self.reference = evaluate.reference(self.dataset, self.classifier)


class _ToRunLogs(logging.Handler):
  """Passes each record on to every run's log (log_summary and the console)."""

  def __init__(self, runs):
    super().__init__()
    self.runs = runs

  def emit(self, record):
    for run in self.runs:
      run.log.log(record.levelno, '%s', record.getMessage())


class Run:
  """One model's run directory: log_summary, TensorBoard, checkpoints, evaluation, outputs."""

  def __init__(self, config, shared: Shared, prefix: str = ''):
    self.config, self.shared = config, shared
    self.seed_note = f' (seed {config.seed})' if prefix else ''
    dataset = shared.dataset
    self.log_path = os.path.abspath(config.log_path)
    self.output_path = os.path.abspath(config_lib.output_dir(config))
    self.log = _logger(self.log_path, prefix, shared.main)
    self.log.info('=' * 64)
    self.log.info('designgan training: %s GAN, %s loss, %s generator, %s critic',
                  config.gan_model, config.loss_mode, config.gen_mode, config.disc_mode)
    self.log.info('Resolved config:\n%s', '\n'.join(
        f'  {k} = {v!r}' for k, v in sorted(config.to_dict().items())))
    self.log.info('Dataset:\n%s', dataset.summary())
    for warning in dataset.warnings():
      self.log.warning('warning: %s', warning)
    self.meta = {'config': config.to_dict(), 'spec': dataset.spec.to_dict(),
                 'oracle_applies': shared.synthetic, 'data': dataset.fingerprint(),
                 'untrained_classes': dataset.untrained_classes(), 'sweep': shared.sweep}
    self.mngr = checkpoints.manager(os.path.join(self.log_path, 'checkpoints'),
                                    config.keep_checkpoints)
    try:  # train() releases only a run it finished opening: this one closes its own manager
      self.evaluator = _Evaluator(config, shared, self.log_path)
    except BaseException:
      checkpoints.close(self.mngr)  # nothing written yet: nothing to fail
      _close_logger(self.log)
      raise
    self.grid_inputs = _class_grid_inputs(config, dataset.spec, dataset.train.fixed[0])
    self.tb = (summaries.TensorBoard(self.log_path) if shared.main
               else summaries.NoTensorBoard())
    self.means = {}

  def restore(self, epoch: int, target):
    damaged = os.path.join(self.mngr.directory, str(epoch))
    earlier_hint = f'remove {damaged} to resume from checkpoint {{step}}'
    _, saved = checkpoints.read_meta(self.mngr, epoch, earlier_hint)
    saved_config = resume.check_resumable(saved, self.config, self.shared.dataset.spec,
                                          self.log_path, self.shared.synthetic)
    state = checkpoints.restore_state(self.mngr, epoch, target, earlier_hint=earlier_hint)
    self.log.info('Resumed from the checkpoint of epoch %d in %s', epoch, self.mngr.directory)
    self.tb.purge_from(epoch + 1)  # scalars and grids are stepped by epoch: replayed ones replace
    changed = config_lib.changed_settings(saved_config, self.config)
    if changed:
      self.log.info('Settings changed since that checkpoint: %s', '; '.join(changed))
    data_change = data.fingerprint_change(saved.get('data'), self.shared.dataset)
    if data_change:
      self.log.warning('warning: %s', data_change)
    return state

  def check_finite(self, metrics: dict, state_finite: bool, epoch: int, steps_before: int,
                   progress):
    """Stops at the first non-finite loss of the epoch, or, where every loss is finite (they are
    computed before each update), at a state the epoch's last update made non-finite: never
    checkpointed, evaluated or written out."""
    bad = _first_non_finite(metrics)
    if bad is None and state_finite:
      return
    progress.clear()
    last = self.mngr.latest_step()
    if bad is None:
      what = 'the training state (parameters or optimiser state)'
      where = f'in the update of generator step {steps_before + len(metrics["gen_loss"])}'
    else:
      what, where = bad[1], f'at generator step {steps_before + bad[0] + 1}'
    self.log.info('Stopped: %s became non-finite in epoch %d', what, epoch)
    raise TrainingError(
        f'{what} became non-finite {where} (epoch {epoch}){self.seed_note}; training stopped. '
        + (f'The last good checkpoint (epoch {last}) is kept in {self.mngr.directory}. '
           if last else '')
        + 'Try lower learning rates or a smaller constraint_lambda/lambda_gp.')

  def work_due(self, epoch: int, full: bool) -> tuple[str, ...]:
    """The closing work due after `epoch`, of CLOSING_WORK (all of it when `full`)."""
    config = self.config
    due = dict(grid=self.shared.main and (epoch % config.sample_every == 0 or full),
               evaluation=self.evaluator.due(epoch, full),
               checkpoint=epoch % config.checkpoint_every == 0 or full)
    return tuple(kind for kind in CLOSING_WORK if due[kind])

  def end_epoch(self, epoch: int, get_state, metrics: dict, samples_per_s: float,
                seconds: float, first: bool, full: bool, progress, rest: bool = False) -> dict:
    """Logs, draws, checkpoints and evaluates as the config says is due after `epoch`; all of it
    when `full` (a last epoch). `rest`: an epoch closed with what was due turned out to be the
    last (the time budget decided after its closing work): only what a last epoch adds, and its
    log line if that was not written. Returns the seconds each kind of closing work done took."""
    config, layout, spec = self.config, self.shared.dataset.layout, self.shared.dataset.spec
    logged = epoch % config.log_every == 0 or first
    if not rest:
      self.means = {k: float(np.mean(metrics[k])) for k in step.active_metrics(config)}
      progress.show(epoch, self.means, samples_per_s)
      if first:
        self.tb.image('real/designs_by_class', epoch - 1, self.shared.real_grid)
    if (logged or full) and not (rest and logged):
      progress.clear()
      self.log.info('epoch %d/%d  %s  samples/s %.0f  time %.2fs', epoch, config.epochs,
                    '  '.join(f'{k} {v:.4f}' for k, v in self.means.items()), samples_per_s,
                    seconds)
      self.tb.scalars(epoch, dict(self.means, samples_per_s=samples_per_s))
    done = self.work_due(epoch, False) if rest else ()
    due, took = tuple(k for k in self.work_due(epoch, full) if k not in done), {}
    if not due:
      return took
    state = get_state()
    if 'grid' in due:
      with _timed(took, 'grid'):
        fake = self.shared.sample_fn(*parallel.host_local(step.sampling_params(state)),
                                     *self.grid_inputs)
        full = data.full_designs(layout, fake).reshape((len(spec.durability), len(spec.mass))
                                                    + (layout.full_height, layout.full_width, 3))
        self.tb.image('fake/designs_by_class', epoch, summaries.design_grid(full))
    # Evaluation (and its best/ save, committed) before the checkpoint: a run killed in between
    # resumes from an earlier checkpoint and evaluates this epoch again, instead of resuming
    # after an epoch whose best/ save was lost.
    if 'evaluation' in due:
      with _timed(took, 'evaluation'):
        progress.clear()
        metrics_now = self.evaluator(epoch, state, self.shared.sample_fn,
                                     dict(self.meta, epoch=epoch))
        self.log.info('eval epoch %d  %s', epoch, evaluate.format_summary(metrics_now))
        self.tb.scalars(epoch, evaluate.scalar_metrics(metrics_now), prefix='eval/')
    if 'checkpoint' in due:
      with _timed(took, 'checkpoint'):
        checkpoints.save(self.mngr, epoch, state, dict(self.meta, epoch=epoch))
    return took

  def raise_if_a_write_failed(self):
    """The CheckpointError of a checkpoint write that failed since the last save; no wait."""
    checkpoints.raise_if_a_write_failed(self.mngr)

  def close(self):
    """Waits for pending checkpoint writes (also after an error); a CheckpointError where one
    failed, once both managers' writes are done."""
    try:
      checkpoints.wait_until_finished(self.mngr)
    finally:
      self.evaluator.close()

  def release(self):
    """Closes the checkpoint managers, the event file and the log, also when training failed, as
    orbax asks of a manager: a notebook, or any process that calls `train` again, would otherwise
    keep every run's managers open. Each is closed even where one before it fails (a failed
    write)."""
    with contextlib.ExitStack() as later:
      later.callback(_close_logger, self.log)  # last: the others may fail
      later.callback(_close_tensorboard, self.tb)
      later.callback(self.evaluator.release)
      checkpoints.close(self.mngr)

  def finish(self, epoch: int, trained: int, seconds: float, state) -> dict:
    self.tb.close()
    self.log.info('Trained %d epoch(s) in %.1f s; checkpoints in %s', max(trained, 0), seconds,
                  self.mngr.directory)
    if self.shared.main:
      try:
        written = _write_outputs(self.config, self.shared.dataset, state, self.shared.sample_fn,
                                 self.output_path)
      except OSError as e:  # a full disk, a directory made read-only during training
        reason = f'{e.strerror}: {e.filename}' if e.strerror and e.filename else e.strerror or e
        raise paths.OutputPathError(
            f'cannot write the designs to {self.output_path} ({reason}); the training is '
            'checkpointed, and the same command writes them once it can write there') from None
      self.log.info('Wrote %d generated and %d real designs to %s', len(written[0]),
                    len(written[1]), self.output_path)
    return {'log_path': self.log_path, 'output_path': self.output_path,
            'epochs': epoch, 'metrics': self.means}


# JAX's compilation of a jitted function (lowering to MLIR, then XLA), recorded once per
# compilation; tracing is left out, as a nested jit's tracing is recorded inside its caller's.
_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')


@contextlib.contextmanager
def _timed(took: dict, kind: str):
  """Adds the block's seconds to took[kind], less those this thread spent compiling: a one-off
  that a later closing of the kind finds cached, so the time budget's estimate leaves it out (a
  first closing took 9.3 s on an H200, compilation included, where each later one took under 1 s;
  on a CPU 9.5 s, or 1.8 s without its compilation)."""
  thread, compiling = threading.get_ident(), [0.0]

  def on_duration(event: str, seconds: float, **_):
    if event in _COMPILE_EVENTS and threading.get_ident() == thread:
      compiling[0] += seconds

  jax.monitoring.register_event_duration_secs_listener(on_duration)
  started = time.perf_counter()
  try:
    yield
  finally:
    jax.monitoring.unregister_event_duration_listener(on_duration)
    took[kind] = took.get(kind, 0.0) + max(0.0, time.perf_counter() - started - compiling[0])


class _Evaluator:
  """Runs gan.evaluate every eval_every epochs and keeps the best checkpoint in <log>/best."""

  def __init__(self, config, shared: Shared, log_path: str):
    self.config, self.shared = config, shared
    self.enabled = config.eval_every > 0
    self.best = None
    if not self.enabled:
      return
    metric = resume.best_metric(config.best_metric, shared.synthetic)  # train() checked it
    self.metric = metric
    self.best = checkpoints.manager(os.path.join(log_path, 'best'), keep=1, best_fn=(
        lambda m: m[metric]), best_mode='max' if config_lib.BEST_METRICS[metric] else 'min')

  def due(self, epoch: int, last: bool) -> bool:
    return self.enabled and (epoch % self.config.eval_every == 0 or last)

  def __call__(self, epoch: int, state, sample_fn, meta: dict) -> dict:
    dataset, zdim = self.shared.dataset, self.config.zdim
    gen_params, gen_rest = parallel.host_local(step.sampling_params(state))

    def generate_fn(d, m, fixed, seed):
      z = prng.noise(seed, len(d), zdim)
      images = sample_fn(gen_params, gen_rest, z, d, m, fixed)
      return data.full_designs(dataset.layout, images)

    metrics = evaluate.evaluate_generator(generate_fn, dataset, self.shared.classifier,
                                          self.config.eval_per_pair, evaluate.DEFAULT_SEED,
                                          ref=self.shared.reference)
    # Every process evaluates alike, but the ranking of `best` checkpoints must agree exactly.
    checkpoints.save(self.best, epoch, state, dict(meta, metrics=evaluate.scalar_metrics(metrics)),
                     metrics={self.metric: parallel.broadcast_from_main(metrics[self.metric])})
    checkpoints.wait_until_finished(self.best)  # committed before the epoch's regular checkpoint
    return metrics

  def close(self):
    if self.enabled:
      checkpoints.wait_until_finished(self.best)

  def release(self):
    if self.enabled:
      checkpoints.close(self.best)


def _write_outputs(config, dataset, state, sample_fn, output_path):
  """output_path/fake and /real: generated designs and the real designs whose conditions they
  were generated for, BMPs of the data's full size (10x30 for the embedded designs) with dropped
  columns re-inserted and struts exact."""
  part = dataset.held_out()[1]
  n = min(config.num_output_images, len(part))
  # Files are in name (= label) order: a seeded shuffle gives a spread of conditions.
  part = part.take(np.sort(np.random.default_rng(config.seed).permutation(len(part))[:n]))
  z = prng.noise(config.seed + 2, n, config.zdim)
  fake = sample_fn(*parallel.host_local(step.sampling_params(state)), z, part.durability,
                   part.mass, part.fixed)
  layout = dataset.layout
  fake_paths = summaries.write_designs(os.path.join(output_path, 'fake'), 'fake',
                                       data.full_designs(layout, fake))
  real_paths = summaries.write_designs(os.path.join(output_path, 'real'), 'real',
                                       data.full_designs(layout, part.images))
  return fake_paths, real_paths
