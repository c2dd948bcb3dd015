"""The training loop: the dataset on the device, one compiled epoch at a time, and everything a
user looks at afterwards (log_summary, TensorBoard, checkpoints, output BMPs).

The host wakes once per epoch: to check that every loss stayed finite, then, when due, to log,
draw grids and checkpoint. Re-running the same command resumes from the latest checkpoint.
"""

import logging
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gan import checkpoints
from gan import classifier as classifier_lib
from gan import config as config_lib
from gan import data
from gan import evaluate
from gan import metrics as metrics_lib
from gan import step
from gan import summaries
from gan.errors import ConfigError, DesignGanError


class TrainingError(DesignGanError):
  """Training cannot go on (a non-finite loss)."""


def parse_values(value):
  """'' -> None (infer from the data); '1.0,1.1' or a list -> list of floats."""
  if value in ('', None):
    return None
  if isinstance(value, str):
    try:
      return [float(v) for v in value.split(',') if v.strip()]
    except ValueError:
      raise ConfigError(f'class values must be comma-separated numbers, got {value!r}') from None
  return [float(v) for v in value]


def load_data(config) -> data.Dataset:
  """The dataset a resolved config names (the embedded designs when data_path is empty)."""
  return data.load_dataset(data.resolve_data_path(config.data_path), config.datashape,
                           config.strut_positions, parse_values(config.durability_values),
                           parse_values(config.mass_values), config.val_fraction, config.seed)


def _logger(log_path: str) -> logging.Logger:
  logger = logging.getLogger(f'designgan.train.{log_path}')
  logger.setLevel(logging.INFO)
  logger.propagate = False
  for handler in list(logger.handlers):
    logger.removeHandler(handler)
  file_handler = logging.FileHandler(os.path.join(log_path, 'log_summary'))
  file_handler.setFormatter(logging.Formatter('%(asctime)s %(message)s'))
  console = logging.StreamHandler(sys.stdout)
  console.setFormatter(logging.Formatter('%(message)s'))
  logger.addHandler(file_handler)
  logger.addHandler(console)
  return logger


class _Progress:
  """A one-line progress bar on an interactive terminal; silent otherwise."""

  def __init__(self, total: int):
    self.total = total
    self.enabled = sys.stdout.isatty()

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
  nd, nm = len(spec.durability), len(spec.mass)
  d, m = np.meshgrid(np.arange(nd), np.arange(nm), indexing='ij')
  z = jax.random.normal(jax.random.PRNGKey(config.seed + 1), (nd * nm, config.zdim))
  fixed = np.broadcast_to(fixed_example, (nd * nm,) + fixed_example.shape)
  return z, jnp.asarray(d.ravel(), jnp.int32), jnp.asarray(m.ravel(), jnp.int32), jnp.asarray(
      fixed)


def _to_full_uint8(layout, images) -> np.ndarray:
  return layout.to_full(data.denormalize(np.asarray(images)))


def _real_class_grid(dataset) -> np.ndarray:
  """One real design per (durability, mass) pair (black where the data has none)."""
  spec, part = dataset.spec, dataset.train
  nd, nm = len(spec.durability), len(spec.mass)
  full = _to_full_uint8(spec.layout, part.images)
  grid = np.zeros((nd, nm) + full.shape[1:], np.uint8)
  seen = set()
  for i, (d, m) in enumerate(zip(part.durability, part.mass)):
    if (d, m) not in seen:
      seen.add((d, m))
      grid[d, m] = full[i]
  return grid


def train(config) -> dict:
  """Trains (or resumes) the run `config.log_path` describes; returns a summary dict."""
  config = config_lib.resolve(config)
  dataset = load_data(config)
  spec, layout = dataset.spec, dataset.layout
  config_lib.check_against_data(config, layout)
  if config.batch_size > len(dataset.train):
    raise ConfigError(f'batch_size={config.batch_size} is larger than the training set '
                      f'({len(dataset.train)} designs); use batch_size <= {len(dataset.train)}')
  log_path = os.path.abspath(config.log_path)
  output_path = os.path.abspath(config.output_path or os.path.join(log_path, 'output'))
  os.makedirs(log_path, exist_ok=True)
  log = _logger(log_path)
  log.info('=' * 64)
  log.info('designgan training: %s GAN, %s loss, %s generator, %s critic', config.gan_model,
           config.loss_mode, config.gen_mode, config.disc_mode)
  log.info('Resolved config:\n%s', '\n'.join(f'  {k} = {v!r}'
                                              for k, v in sorted(config.to_dict().items())))
  log.info('Dataset:\n%s', dataset.summary())

  models, state = step.init(config, spec, dataset.mask)
  mngr = checkpoints.manager(os.path.join(log_path, 'checkpoints'), config.keep_checkpoints)
  meta = {'config': config.to_dict(), 'spec': spec.to_dict(),
          'oracle_applies': metrics_lib.is_synthetic(dataset)}
  start_epoch = 0
  if mngr.latest_step() is not None:
    start_epoch, saved = checkpoints.read_meta(mngr)
    _check_resumable(saved, config, spec, log_path)
    state = checkpoints.restore_state(mngr, start_epoch, state)
    log.info('Resumed from the checkpoint of epoch %d in %s', start_epoch, mngr.directory)

  arrays = {k: getattr(dataset.train, k) for k in ('images', 'durability', 'mass', 'fixed')}
  device_data = jax.device_put(arrays)
  epoch_fn = step.compile_epoch(config, models)
  sample_fn = jax.jit(lambda p, r, *a: step.sample(models, p, r, *a))
  grid_inputs = _class_grid_inputs(config, spec, dataset.train.fixed[0])
  tb = summaries.TensorBoard(log_path)
  tb.image('real/designs_by_class', start_epoch, summaries.design_grid(_real_class_grid(dataset)))
  evaluator = _Evaluator(config, dataset, models, log_path, meta['oracle_applies'])
  num_batches = len(dataset.train) // config.batch_size
  progress = _Progress(config.epochs)
  log.info('Training epochs %d..%d: %d batches of %d per epoch, %d critic step(s) per '
           'generator step', start_epoch + 1, config.epochs, num_batches, config.batch_size,
           config.critic_iter)
  means, start = {}, time.perf_counter()
  try:
    for epoch in range(start_epoch + 1, config.epochs + 1):
      t0 = time.perf_counter()
      steps_before = (epoch - 1) * num_batches  # known on the host: no device sync
      new_state, metrics = epoch_fn(state, device_data)
      metrics = jax.device_get(metrics)
      seconds = time.perf_counter() - t0
      bad = _first_non_finite(metrics)
      if bad is not None:
        progress.clear()
        last = mngr.latest_step()
        raise TrainingError(
            f'{bad[1]} became non-finite at generator step {steps_before + bad[0] + 1} (epoch '
            f'{epoch}); training stopped. ' + (f'The last good checkpoint (epoch {last}) is kept '
                                               f'in {mngr.directory}. ' if last else '')
            + 'Try lower learning rates or a smaller constraint_lambda/lambda_gp.')
      state = new_state
      means = {k: float(np.mean(metrics[k])) for k in step.active_metrics(config)}
      samples_per_s = num_batches * config.batch_size / seconds
      progress.show(epoch, means, samples_per_s)
      if epoch % config.log_every == 0 or epoch == config.epochs or epoch == start_epoch + 1:
        progress.clear()
        note = ' (includes compilation)' if epoch == start_epoch + 1 else ''
        log.info('epoch %d/%d  %s  samples/s %.0f  time %.2fs%s', epoch, config.epochs,
                 '  '.join(f'{k} {v:.4f}' for k, v in means.items()), samples_per_s, seconds, note)
        tb.scalars(epoch, dict(means, samples_per_s=samples_per_s))
      if epoch % config.sample_every == 0 or epoch == config.epochs:
        fake = sample_fn(*step.sampling_params(state), *grid_inputs)
        full = _to_full_uint8(layout, fake).reshape((len(spec.durability), len(spec.mass))
                                                    + (layout.full_height, layout.full_width, 3))
        tb.image('fake/designs_by_class', epoch, summaries.design_grid(full))
      if epoch % config.checkpoint_every == 0 or epoch == config.epochs:
        checkpoints.save(mngr, epoch, state, dict(meta, epoch=epoch))
      if evaluator.due(epoch):
        progress.clear()
        metrics_now = evaluator(epoch, state, sample_fn, dict(meta, epoch=epoch))
        log.info('eval epoch %d  %s', epoch, evaluate.format_summary(metrics_now))
        tb.scalars(epoch, evaluate.scalar_metrics(metrics_now), prefix='eval/')
  finally:  # also on errors and Ctrl-C: pending checkpoint writes complete before we exit
    progress.clear()
    mngr.wait_until_finished()
    evaluator.close()
  tb.close()
  trained = max(config.epochs - start_epoch, 0)
  log.info('Trained %d epoch(s) in %.1f s; checkpoints in %s', trained,
           time.perf_counter() - start, mngr.directory)
  paths = _write_outputs(config, dataset, models, state, sample_fn, output_path)
  log.info('Wrote %d generated and %d real designs to %s', len(paths[0]), len(paths[1]),
           output_path)
  return {'log_path': log_path, 'output_path': output_path, 'epochs': config.epochs,
          'start_epoch': start_epoch, 'metrics': means, 'state': state, 'models': models}


class _Evaluator:
  """Runs gan.evaluate every eval_every epochs and keeps the best checkpoint in <log>/best."""

  def __init__(self, config, dataset, models, log_path: str, synthetic: bool):
    self.config, self.dataset = config, dataset
    self.enabled = config.eval_every > 0
    if not self.enabled:
      return
    self.classifier = classifier_lib.load_or_train_classifier(dataset)
    self.reference = evaluate.reference(dataset, self.classifier)
    metric = config.best_metric
    if metric == 'auto':
      metric = 'oracle_exact' if synthetic else 'classifier_accuracy_generated'
    if metric.startswith('oracle') and not synthetic:
      raise ConfigError(f'best_metric={metric} needs the synthetic designs (the oracle does not '
                        'label this data); use classifier_accuracy_generated or fd')
    self.metric = metric
    self.best = checkpoints.manager(os.path.join(log_path, 'best'), keep=1, best_fn=(
        lambda m: m[metric]), best_mode='max' if config_lib.BEST_METRICS[metric] else 'min')

  def due(self, epoch: int) -> bool:
    return self.enabled and (epoch % self.config.eval_every == 0 or epoch == self.config.epochs)

  def __call__(self, epoch: int, state, sample_fn, meta: dict) -> dict:
    layout, zdim = self.dataset.layout, self.config.zdim

    def generate_fn(d, m, fixed, seed):
      z = jax.random.normal(jax.random.PRNGKey(seed), (len(d), zdim))
      images = sample_fn(*step.sampling_params(state), z, d, m, fixed)
      return layout.to_full(data.denormalize(np.asarray(images)))

    metrics = evaluate.evaluate_generator(generate_fn, self.dataset, self.classifier,
                                          self.config.eval_per_pair, self.config.seed,
                                          ref=self.reference)
    checkpoints.save(self.best, epoch, state, dict(meta, metrics=evaluate.scalar_metrics(metrics)),
                     metrics={self.metric: metrics[self.metric]})
    return metrics

  def close(self):
    if self.enabled:
      self.best.wait_until_finished()


def _check_resumable(saved: dict, config, spec, log_path: str):
  old = config_lib.model_fields(saved['config'])
  new = config_lib.model_fields(config)
  diff = [f'{k}: {old.get(k)!r} -> {new[k]!r}' for k in new if old.get(k) != new[k]]
  if diff:
    raise ConfigError(f'{log_path} holds a run with a different model ({"; ".join(diff)}); '
                      'use a new --config.log_path or the original settings')
  if saved['spec'] != spec.to_dict():
    raise ConfigError(f'{log_path} was trained on data with other vocabularies or layout; use a '
                      'new --config.log_path')


def _write_outputs(config, dataset, models, state, sample_fn, output_path):
  """output_path/fake and /real: generated designs and the real designs whose conditions they
  were generated for, 10x30 BMPs with dropped columns re-inserted and struts exact."""
  part = dataset.val if len(dataset.val) else dataset.train
  n = min(config.num_output_images, len(part))
  # Files are in name (= label) order: a seeded shuffle gives a spread of conditions.
  part = part.take(np.sort(np.random.default_rng(config.seed).permutation(len(part))[:n]))
  z = jax.random.normal(jax.random.PRNGKey(config.seed + 2), (n, config.zdim))
  fake = sample_fn(*step.sampling_params(state), z, part.durability, part.mass, part.fixed)
  layout = dataset.layout
  fake_paths = summaries.write_designs(os.path.join(output_path, 'fake'), 'fake',
                                       _to_full_uint8(layout, fake))
  real_paths = summaries.write_designs(os.path.join(output_path, 'real'), 'real',
                                       _to_full_uint8(layout, part.images))
  return fake_paths, real_paths
