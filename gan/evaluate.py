r"""Evaluating a conditional design generator: does it make what was asked for, and how varied?

`python -m gan.evaluate --model_path=RUN [--step=N] [--per_pair=10] [--seed=0] [--json=out.json]`

For every (durability, mass) class pair `per_pair` designs are generated, N = pairs x per_pair in
all; each design is given the strut colours of a held-out real design drawn at random (seeded).
Metrics, each over the N designs unless said otherwise (formulas in gan/metrics.py):

  oracle_exact      share whose oracle-measured durability and mass classes both equal the
                    requested ones; null unless the data are the synthetic designs (`is_synthetic`)
  oracle_within1    share whose measured classes are each at most one class step from the
                    requested ones (`oracle_agreement`)
  classifier_accuracy_generated
                    share whose durability and mass a classifier trained on the real training
                    split predicts as the requested classes (conditional fidelity on any data)
  classifier_accuracy_real
                    the same classifier's accuracy on the held-out real designs (the reference)
  fd                Frechet distance (`frechet_distance`) between the classifier's penultimate
                    features of the generated and of the held-out real designs, measured on as
                    many generated designs as the baseline has training designs (`fd_designs`,
                    at least `per_pair` per pair): FD is biased upwards by small samples (1,200
                    real training designs score 2.10 on average against the held-out set of the
                    synthetic data, all 9,000 score 1.56), so only equal sizes compare
  fd_real_baseline  FD(train real, held-out real): what a perfect generator would reach where
                    every class pair is equally common (the generated set asks for every pair
                    equally often; on imbalanced data even real designs score above it)
  strut_exact       share whose strut pixels equal the requested colours exactly (must be 1)
  diversity, diversity_real
                    mean within-condition pairwise L1 distance (`diversity`) of the generated and
                    of the held-out real designs (real conditions with at least two designs)

The classifier (gan/classifier.py) is trained once per dataset and cached. `evaluate_generator`
takes the dataset and the classifier, so training can call it every few epochs without reloading
or retraining anything.

"Held-out" is the validation split, or the training split when the dataset has no validation
designs (then `fd_real_baseline` is null: there is nothing independent to compare with).
"""

import dataclasses
import logging
import os
import sys
from typing import Callable, Optional, Sequence

from gan import interrupts

if __name__ == '__main__':  # before the imports below: they take seconds (JAX)
  interrupts.quiet_while_starting('the evaluation')
# pylint: disable=wrong-import-position,wrong-import-order
import jax
import numpy as np

from gan import checkpoints
from gan import classifier as classifier_lib
from gan import data
from gan import images as images_lib
from gan import inference
from gan import metrics as metrics_lib
from gan import paths
from gan import prng
from gan.config import MAX_SEED
from gan.errors import (ArgumentParser, DataError, DesignGanError, LayoutError,
                        escape_unencodable_stdout, messages_on_stderr)

log = logging.getLogger('gan.evaluate')  # not __name__: '__main__' under python -m gan.evaluate

GenerateFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]

# The evaluation seed (noise and strut draws) of `python -m gan.evaluate` and of the evaluations
# during training, whatever the training seed: a run logs what gan.evaluate reports for it, and a
# sweep's models are compared on the same designs asked for.
DEFAULT_SEED = 0


class EvaluationError(DesignGanError):
  """An evaluation cannot be done as asked (bad arguments, data that do not fit the model)."""


# The most designs one evaluation generates (per_pair x class pairs), as one infer.py request:
# they, their classifier features and labels are held in memory at once (--per_pair 100000000
# failed with a MemoryError traceback; a training run's eval_per_pair only after its first epoch).
MAX_DESIGNS = 100_000


def check_per_pair(per_pair: int, spec: data.DataSpec, name: str = '--per_pair') -> None:
  """An EvaluationError unless `per_pair` designs for each class pair of `spec` are 1 to
  MAX_DESIGNS designs in all; `name` is the option or config field in the message."""
  pairs = len(spec.durability) * len(spec.mass)
  if int(per_pair) < 1:
    raise EvaluationError(f'{name} must be at least 1 design per class pair, got {per_pair}')
  if pairs > MAX_DESIGNS:  # even one each is too many: '--per_pair=1 or less' would be refused
    advice = '; eval_every=0 trains without evaluations' if name == 'eval_per_pair' else ''
    raise EvaluationError(f'the data has {pairs:,} class pairs, and one evaluation generates at '
                          f'most {MAX_DESIGNS:,} designs, at least one per pair: it cannot be '
                          f'evaluated whatever {name}{advice}')
  if int(per_pair) * pairs > MAX_DESIGNS:
    raise EvaluationError(f'{name}={per_pair} asks for {int(per_pair) * pairs:,} designs '
                          f'({per_pair} for each of the {pairs} class pairs); one evaluation '
                          f'generates at most {MAX_DESIGNS:,}, so give {name}='
                          f'{max(1, MAX_DESIGNS // pairs)} or less')


# ---------------------------------------------------------------------------------------------
# Evaluating a generator


@dataclasses.dataclass(frozen=True, eq=False)
class Reference:
  """Everything about the real designs that `evaluate_generator` compares with; computed once.

  Attributes:
    held_out_name: 'val' or 'train' (see `data.Dataset.held_out`).
    held_out: the held-out real designs (strut source and comparison set).
    synthetic: whether the oracle labels these data (`metrics_lib.is_synthetic`).
    features: classifier features of the held-out designs, float64 (N, classifier_lib.FEATURES).
    fd_real_baseline: FD(train features, held-out features); None without validation designs, or
      with fewer than 2 training or 2 validation designs (FD needs 2 of each).
    fd_designs: how many generated designs `fd` is measured on: the baseline's training designs
      (or the held-out ones when there is no baseline).
    diversity_real: `metrics_lib.diversity` of the held-out designs grouped by their class pair.
  """
  held_out_name: str
  held_out: data.DesignArrays
  synthetic: bool
  features: np.ndarray
  fd_real_baseline: Optional[float]
  fd_designs: int
  diversity_real: Optional[float]


def reference(dataset: data.Dataset, classifier: classifier_lib.Classifier) -> Reference:
  """Computes the `Reference` of a dataset for `classifier`."""
  name, part = dataset.held_out()
  features = classifier.features(part.images)
  baseline, fd_designs = None, len(part)
  if name == 'val' and len(dataset.train) >= 2 and len(part) >= 2:
    baseline = metrics_lib.frechet_distance(classifier.features(dataset.train.images), features)
    fd_designs = len(dataset.train)
  real_groups = metrics_lib.group_by_condition(data.denormalize(part.images), part.durability,
                                               part.mass)
  return Reference(name, part, metrics_lib.is_synthetic(dataset), features, baseline,
                   fd_designs, metrics_lib.diversity(real_groups))


def evaluate_generator(generate_fn: GenerateFn, dataset: data.Dataset,
                       classifier: classifier_lib.Classifier, per_pair: int = 10,
                       seed: int = DEFAULT_SEED, ref: Optional[Reference] = None) -> dict:
  """Generates `per_pair` designs for every class pair and measures them (module docstring).

  Args:
    generate_fn: (durability idx (N,), mass idx (N,), fixed-pixel images (N, H, W, 3) float32,
      seed) -> uint8 (N, full_H, full_W, 3) designs in the full layout with struts set.
    dataset: the data the generator was trained on (spec, train/validation split).
    classifier: `classifier_lib.load_or_train_classifier(dataset)`.
    per_pair: designs per (durability, mass) pair.
    seed: seeds the strut draw and is passed to `generate_fn`.
    ref: `reference(dataset, classifier)`, to reuse across calls; computed when None.

  Returns:
    A JSON-serialisable dict of the metrics, `per_class` tables and counts.

  Raises:
    EvaluationError: per_pair < 1, or more than MAX_DESIGNS designs in all.
    ValueError: generate_fn returned something other than the designs asked for.
  """
  check_per_pair(per_pair, dataset.spec)
  ref = ref or reference(dataset, classifier)
  spec, layout = dataset.spec, dataset.layout
  d_idx, m_idx, source, full = _generate(generate_fn, ref, spec, layout, int(per_pair), seed)
  train_layout = layout.from_full(full)

  d_logits, m_logits, features = classifier.apply(data.normalize(train_layout))
  fd_per_pair = -(-ref.fd_designs // (len(spec.durability) * len(spec.mass)))
  fd_designs = len(d_idx)
  if fd_per_pair > per_pair:  # a larger set for FD alone, its struts drawn independently
    _, _, _, fd_full = _generate(generate_fn, ref, spec, layout, fd_per_pair, seed + 1)
    features = classifier.features(data.normalize(layout.from_full(fd_full)))
    fd_designs = len(fd_full)
  predicted = (d_logits.argmax(-1), m_logits.argmax(-1))
  clf_ok = classifier_lib.accuracy(predicted, d_idx, m_idx)
  joint_ok = (predicted[0] == d_idx) & (predicted[1] == m_idx)
  oracle_ok = None
  if ref.synthetic:
    oracle_ok = metrics_lib.oracle_agreement(full, metrics_lib.class_values(spec.durability, d_idx),
                                 metrics_lib.class_values(spec.mass, m_idx))
  has_oracle = oracle_ok is not None
  return {
      'num_generated': len(d_idx),
      'per_pair': int(per_pair),
      'num_pairs': len(spec.durability) * len(spec.mass),
      'seed': int(seed),
      'synthetic': ref.synthetic,
      'oracle_exact': metrics_lib.share(oracle_ok['exact']) if has_oracle else None,
      'oracle_within1': metrics_lib.share(oracle_ok['within1']) if has_oracle else None,
      'classifier_accuracy_generated': clf_ok['joint'],
      'classifier_accuracy_real': classifier.accuracy['joint'],
      'fd': (metrics_lib.frechet_distance(features, ref.features) if len(ref.features) >= 2
             else None),
      'fd_real_baseline': ref.fd_real_baseline,
      'fd_designs': fd_designs,
      'strut_exact': metrics_lib.share(metrics_lib.strut_agreement(full, source.strut_colors,
                                                                   layout.strut_positions)),
      'diversity': metrics_lib.diversity(metrics_lib.group_by_condition(train_layout, d_idx, m_idx),
                                         prng.unsigned_seed(seed)),
      'diversity_real': ref.diversity_real,
      'classifier': {'generated': clf_ok, 'held_out': classifier.accuracy,
                     'held_out_set': classifier.info['held_out'],
                     'num_train': classifier.info['num_train'],
                     'num_held_out': classifier.info['num_held_out'],
                     'key': classifier.info['key']},
      'per_class': per_class_tables(spec, d_idx, m_idx, oracle_ok, joint_ok),
  }


def _generate(generate_fn: GenerateFn, ref: Reference, spec: data.DataSpec, layout,
              per_pair: int, seed: int):
  """`per_pair` designs for every class pair, struts drawn (seeded) from held-out designs:
  (durability idx, mass idx, strut source designs, uint8 full-layout designs)."""
  d_idx, m_idx = spec.class_pairs(per_pair)
  source = ref.held_out.take(np.random.default_rng(prng.unsigned_seed(seed)).integers(
      0, len(ref.held_out), len(d_idx)))
  full = _check_designs(generate_fn(d_idx, m_idx, source.fixed, seed), len(d_idx), layout)
  return d_idx, m_idx, source, full


def per_class_tables(spec: data.DataSpec, d_idx, m_idx, oracle_ok: Optional[dict],
                     classifier_ok) -> dict:
  """Rates by requested durability class, mass class and pair.

  Each row: the class value(s), 'count', 'classifier_accuracy' (both classes predicted right) and,
  when the oracle applies (else None), 'oracle_exact', 'oracle_within1' and 'oracle_label_exact'
  (the row's own label measured right; durability and mass rows only).
  """

  def row(selected, label: Optional[str]) -> dict:
    out = {'count': int(selected.sum()),
           'classifier_accuracy': metrics_lib.share(classifier_ok[selected])}
    has_oracle = oracle_ok is not None
    for key in ('exact', 'within1'):
      out[f'oracle_{key}'] = metrics_lib.share(oracle_ok[key][selected]) if has_oracle else None
    if label:
      out['oracle_label_exact'] = (metrics_lib.share(oracle_ok[label][selected]) if has_oracle
                                   else None)
    return out

  tables = {'durability': [dict(value=v, **row(d_idx == i, 'durability'))
                           for i, v in enumerate(spec.durability.values)],
            'mass': [dict(value=v, **row(m_idx == i, 'mass'))
                     for i, v in enumerate(spec.mass.values)],
            'pairs': []}
  for i, d in enumerate(spec.durability.values):
    for j, m in enumerate(spec.mass.values):
      tables['pairs'].append(dict(durability=d, mass=m, **row((d_idx == i) & (m_idx == j), None)))
  return tables


def _check_designs(images, n: int, layout) -> np.ndarray:
  images = np.asarray(images)
  expected = (n, layout.full_height, layout.full_width, 3)
  if images.shape != expected or images.dtype != np.uint8:
    raise ValueError(f'generate_fn must return uint8 designs of shape {expected} (full layout), '
                     f'got {images.dtype} {images.shape}')
  return images


# ---------------------------------------------------------------------------------------------
# A trained run


def evaluate_model(model_path: str, step: Optional[int] = None, per_pair: int = 10,
                   seed: int = DEFAULT_SEED, device: str = 'cpu', cache_dir: Optional[str] = None,
                   data_path: Optional[str] = None) -> dict:
  """Loads a run's checkpoint, its dataset and the (cached) classifier; evaluates the generator.

  The dataset is the one the run's config names, or `data_path` (the same designs, moved).

  Raises:
    DesignGanError: no such checkpoint, the data cannot be loaded or no longer fit the model,
      per_pair < 1, a seed outside 64 bits, or the device is unavailable.
  """
  if int(per_pair) < 1:
    raise EvaluationError(f'--per_pair must be at least 1 design per class pair, got {per_pair}')
  if not -MAX_SEED - 1 <= int(seed) < MAX_SEED:  # the FD designs are drawn with seed + 1
    raise EvaluationError(f'--seed must be an integer from {-MAX_SEED - 1} to {MAX_SEED - 1} '
                          f'(JAX seeds are 64-bit integers, and the evaluation also uses seed '
                          f'+ 1), got {seed}')
  dev = inference.select_device(device)
  with jax.default_device(dev):
    model = inference.load(model_path, step, dev)
    check_per_pair(per_pair, model.spec)  # before the data and the classifier
    dataset = _load_data(model, data_path)
    if dataset.spec.to_dict() != model.spec.to_dict():
      raise EvaluationError(
          f'the data at {dataset.data_dir} no longer match the model in {model.run_dir} (model '
          f'-> data: {data.spec_changes(model.spec.to_dict(), dataset.spec.to_dict())}); '
          'evaluate with the data the model was trained on (--data_path names their directory '
          'where they moved)')
    data_change = data.fingerprint_change(model.data_fingerprint, dataset)
    if data_change:
      log.warning('warning: %s', data_change)
    # Other designs than the model's: what its own training designs lacked is its checkpoint's
    # record (these designs' split says only what the classifier, trained on them, lacks).
    untrained = untrained_pairs_note(dataset, model.untrained_classes if data_change else None)
    if untrained:
      log.warning('warning: %s', untrained)
    classifier = classifier_lib.load_or_train_classifier(dataset, cache_dir)
    result = evaluate_generator(lambda d, m, f, s: inference.generate(model, d, m, f, s),
                                dataset, classifier, per_pair, seed)
  result['model'] = {'run_dir': model.run_dir, 'checkpoint_dir': model.checkpoint_dir,
                     'step': model.epoch, 'data': dataset.data_dir}
  return result


def untrained_pairs_note(dataset: data.Dataset,
                         generator_untrained: Optional[dict] = None) -> str:
  """'' when every class has training designs, else which do not and what that does to the
  numbers: their pairs are asked for and counted like the others, though neither the generator
  nor the classifier (trained on the training split) saw a design of them.

  `generator_untrained`: the classes the generator's own training designs lacked, where they are
  not `dataset`'s (a model evaluated on other designs; `TrainedModel.untrained_classes`); None:
  the generator was trained on `dataset`'s training split, as the classifier is."""
  untrained = dataset.untrained_classes()
  if generator_untrained is not None and generator_untrained != untrained:
    parts = ([f'the generator was trained on no design of {_class_names(generator_untrained)} '
              '(its checkpoint\'s record of its training designs)'] if generator_untrained else [])
    parts += ([f'the classifier, trained on the training split of these designs, on none of '
               f'{_class_names(untrained)}'] if untrained else [])
    return '; '.join(parts) + ': their class pairs count in every number below like the others'
  if not untrained:
    return ''
  nd, nm = len(dataset.spec.durability), len(dataset.spec.mass)
  trained = (nd - len(untrained.get('durability', ()))) * (nm - len(untrained.get('mass', ())))
  return (f'no training design has {_class_names(untrained)}: {nd * nm - trained} of the '
          f'{nd * nm} class pairs count in every number below, although neither the generator '
          'nor the classifier was trained on any design of them')


def _class_names(classes: dict) -> str:
  """{'durability': ['9.9'], 'mass': ['20']} -> 'durability 9.9; mass 20'."""
  return '; '.join(f'{label} {", ".join(values)}' for label, values in classes.items())


def _load_data(model, data_path: Optional[str]) -> data.Dataset:
  """The run's dataset, from `data_path` when given; a DataError that says where the path came
  from when the run's own data_path fails, and, where its designs are gone, how to name where
  they moved (not for a design damaged since training)."""
  config = model.config.copy_and_resolve_references()
  if data_path is not None:
    config.data_path = os.path.abspath(os.path.expanduser(data_path)) if data_path else ''
    try:
      return data.load_for_config(config)
    except (DataError, LayoutError) as e:  # named: the user gave the path, not the run
      raise DataError(f'--data_path: {e}') from None
  try:
    return data.load_for_config(config)
  except (DataError, LayoutError) as e:  # LayoutError: designs of another size in its place
    moved = bool(config.data_path) and _designs_gone(config.data_path)
    raise DataError(f'{e} (the data_path the run in {model.run_dir} was trained with)'
                    + ('; if the designs moved, give their directory with --data_path' if moved
                       else '')) from None


def _designs_gone(directory: str) -> bool:
  """No `directory`, or no image file in it: the designs moved (a damaged one stays)."""
  try:
    return not any(images_lib.is_image_file(n) for n in os.listdir(directory))
  except OSError:
    return True


# ---------------------------------------------------------------------------------------------
# Command line


def _fmt(value, digits: int = 3) -> str:
  return 'n/a' if value is None else f'{value:.{digits}f}'


HEADLINE = ('oracle_exact', 'oracle_within1', 'classifier_accuracy_generated',
            'classifier_accuracy_real', 'fd', 'fd_real_baseline', 'strut_exact', 'diversity',
            'diversity_real')


def scalar_metrics(metrics: dict) -> dict:
  """The headline numbers that are defined (for TensorBoard and checkpoint metadata)."""
  return {k: float(metrics[k]) for k in HEADLINE if metrics.get(k) is not None}


def format_summary(metrics: dict) -> str:
  """One log line of the headline numbers."""
  return '  '.join(f'{k} {v:.4f}' for k, v in scalar_metrics(metrics).items())


def format_report(metrics: dict) -> str:
  """A readable table of the headline metrics and the per-class oracle_exact rates (the
  classifier's accuracy instead on data the oracle does not label); first the checkpoint where
  `metrics` has one (evaluate_model's: a model's --step may be the latest)."""
  model = metrics.get('model')
  lines = ([f'checkpoint            step {model["step"]} of {model["checkpoint_dir"]}']
           if model else [])
  lines += [
      f'designs generated     {metrics["num_generated"]} ({metrics["num_pairs"]} class '
      f'pair{"s" if metrics["num_pairs"] != 1 else ""} x '
      f'{metrics["per_pair"]})',
      f'oracle exact          {_fmt(metrics["oracle_exact"])}   within one class '
      f'{_fmt(metrics["oracle_within1"])}' + ('' if metrics['synthetic'] else
                                              '   (not the synthetic designs)'),
      f'classifier accuracy   generated {_fmt(metrics["classifier_accuracy_generated"])}   '
      + ('held-out real' if metrics['classifier']['held_out_set'] == 'val' else
         'real (training designs: no validation split)')
      + f' {_fmt(metrics["classifier_accuracy_real"])}',
      f'Frechet distance      generated {_fmt(metrics["fd"], 4)} ({metrics["fd_designs"]} '
      f'designs)   real baseline {_fmt(metrics["fd_real_baseline"], 4)}',
      f'strut exact           {_fmt(metrics["strut_exact"])}',
      f'diversity (L1)        generated {_fmt(metrics["diversity"], 4)}   real '
      f'{_fmt(metrics["diversity_real"], 4)}',
  ]
  for label in ('durability', 'mass'):
    rows = metrics['per_class'][label]
    key = 'oracle_exact' if metrics['synthetic'] else 'classifier_accuracy'
    what = 'oracle exact' if metrics['synthetic'] else 'classifier accuracy'
    lines.append(f'{what} by {label}:')
    # A class as the file names write it: `:g` kept 6 digits, so mass 100000.5 read 100000 and
    # 12345.67 and 12345.68 were both 12345.7.
    lines.append('  ' + '  '.join(f'{data.format_class(r["value"])}:{_fmt(r[key], 2)}'
                                  for r in rows))
  return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = ArgumentParser(
      prog='python -m gan.evaluate',
      description='Evaluate a trained generator: oracle/classifier fidelity, Frechet distance, '
                  'strut exactness and diversity over every (durability, mass) pair.')
  parser.add_argument('--model_path', required=True, type=os.path.expanduser,
                      help='training run directory (log_path), its checkpoints/ or one step dir')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step (default: latest)')
  parser.add_argument('--per_pair', type=int, default=10, help='designs per class pair')
  parser.add_argument('--seed', type=int, default=DEFAULT_SEED,
                      help='seed of noise and strut colours')
  parser.add_argument('--device', default='cpu',
                      help='cpu (default) | gpu | auto (a GPU when present)')
  parser.add_argument('--json', default=None, type=os.path.expanduser,
                      help='also write the metrics to this JSON file')
  parser.add_argument('--data_path', default=None,
                      help='the designs the model was trained on, if they moved since (default: '
                           'the data_path of the run\'s config; "" for the embedded designs)')
  parser.add_argument('--cache_dir', default=None, type=os.path.expanduser,
                      help='cache of evaluation classifiers (default: the designgan cache)')
  args = parser.parse_args(argv)
  checkpoints.silence_abandoned_checkpoint_reads()
  written = False
  try:
    # interrupts.watched: also a Ctrl-C a callback swallowed stops the run
    with messages_on_stderr(), interrupts.watched() as interrupted:
      if args.json is not None:  # fail before the work, not after it ('' too)
        paths.check_output_file(args.json, '--json')
      metrics = evaluate_model(args.model_path, args.step, args.per_pair, args.seed, args.device,
                               args.cache_dir, args.data_path)
      interrupts.raise_if_interrupted()
      if args.json:
        paths.write_json(args.json, metrics)
        written = True
      print(format_report(metrics))
      if args.json:
        print(f'metrics written to {os.path.abspath(args.json)}')
  except DesignGanError as e:
    if not interrupted:
      print(f'error: {e}', file=sys.stderr)
      return 1
    print('\ninterrupted: no metrics written', file=sys.stderr)  # e.g. a restore cut short
    return 130
  except KeyboardInterrupt:  # Ctrl-C: one line, the shell's status for SIGINT, as train.py
    print(f'\ninterrupted: metrics written to {os.path.abspath(args.json)}' if written else
          '\ninterrupted: no metrics written', file=sys.stderr)
    return 130
  return 0


def cli() -> None:
  """`python -m gan.evaluate`: main's status; after an error or Ctrl-C at once, without the
  interpreter's teardown, which can crash while XLA threads are still busy with the interrupted
  work, or print the tracebacks of a damaged checkpoint's abandoned reads (nothing is left to
  write: --json is written whole or not at all)."""
  interrupts.exit_cli(main())


if __name__ == '__main__':
  escape_unencodable_stdout()
  interrupts.started()
  cli()
