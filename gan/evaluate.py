r"""Evaluating a conditional design generator: does it make what was asked for, and how varied?

`python -m gan.evaluate --model_path=RUN [--step=N] [--per_pair=10] [--seed=0] [--json=out.json]`

For every (durability, mass) class pair `per_pair` designs are generated, N = pairs x per_pair in
all; each design is given the strut colours of a held-out real design drawn at random (seeded).
Metrics, each over the N designs unless said otherwise:

  oracle_exact      share whose oracle-measured durability and mass classes both equal the
                    requested ones; null unless the data are the synthetic designs (`is_synthetic`)
  oracle_within1    share whose measured classes are each at most one class step from the
                    requested ones: |round((measured - requested) / step)| <= 1 for both labels
  classifier_accuracy_generated
                    share whose durability and mass a classifier trained on the real training
                    split predicts as the requested classes (conditional fidelity on any data)
  classifier_accuracy_real
                    the same classifier's accuracy on the held-out real designs (the reference)
  fd                Frechet distance between the classifier's penultimate features of the
                    generated and of the held-out real designs:
                      FD(a, b) = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})
  fd_real_baseline  FD(train real, held-out real): what a perfect generator would reach, roughly
  strut_exact       share whose strut pixels equal the requested colours exactly (must be 1)
  diversity, diversity_real
                    mean pairwise L1 distance between designs of one condition, per pixel and
                    channel in [0, 1] units, averaged over the conditions; generated and held-out
                    real (real conditions with at least two designs)

The classifier (`DesignClassifier`) is trained once per dataset and cached under
`<cache>/classifiers/<key>`, the key a hash of the data spec, the training split and the classifier
version. `evaluate_generator` takes the dataset and the classifier, so training can call it every
few epochs without reloading or retraining anything.

"Held-out" is the validation split, or the training split when the dataset has no validation
designs (then `fd_real_baseline` is null: there is nothing independent to compare with).
"""

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from gan import data
from gan import designs
from gan import oracle
from gan.errors import DesignGanError

log = logging.getLogger(__name__)

# Bump when the classifier, its training or its features change: invalidates cached classifiers.
CLASSIFIER_VERSION = 1
HIDDEN = 256
FEATURES = 128
# Adam with a cosine decay from LEARNING_RATE to 0, small batches: on the 9,000 default training
# designs this reaches about 0.9 held-out accuracy (both classes) in under 10 s on 2 CPU cores;
# batch 256 at a constant 1e-3 stops near 0.7 in the same time (optimisation-limited, not data).
LEARNING_RATE = 3e-3
BATCH_SIZE = 64
EPOCHS = 30
CLASSIFIER_SEED = 0
# Synthetic means the oracle reproduces at least this share of the real labels.
SYNTHETIC_AGREEMENT = 0.99
# Diversity looks at most this many designs of one condition (a seeded subsample beyond it).
MAX_GROUP = 64
# Classifier inputs go through one compiled shape: batches are padded to this size.
APPLY_CHUNK = 1024

GenerateFn = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


class EvaluationError(DesignGanError):
  """An evaluation cannot be done as asked (bad arguments, data that do not fit the model)."""


# ---------------------------------------------------------------------------------------------
# Frechet distance and diversity


def frechet_distance(feats_a, feats_b) -> float:
  r"""Frechet distance between Gaussians fitted to two feature samples (rows are samples).

    FD = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^{1/2})

  with unbiased covariances S. Since S_a^{1/2} S_b S_a^{1/2} is symmetric positive semi-definite
  and similar to S_a S_b, Tr((S_a S_b)^{1/2}) = sum_i sqrt(lambda_i(S_a^{1/2} S_b S_a^{1/2}));
  both square roots come from `eigh`, negative round-off eigenvalues clipped to 0. float64
  throughout; the result is clipped at 0 (it can only be negative by round-off).

  Raises:
    ValueError: the samples are not 2-D with the same number of columns and >= 2 rows each.
  """
  a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
    raise ValueError(f'frechet_distance needs two (n >= 2, F) feature arrays with one F, got '
                     f'shapes {a.shape} and {b.shape}')
  mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
  cov_a, cov_b = _covariance(a), _covariance(b)
  sqrt_a = _psd_sqrt(cov_a)
  middle = sqrt_a @ cov_b @ sqrt_a
  eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
  trace_sqrt = float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))
  return max(mean_term + float(np.trace(cov_a) + np.trace(cov_b)) - 2.0 * trace_sqrt, 0.0)


def _covariance(x: np.ndarray) -> np.ndarray:
  """Unbiased (F, F) covariance of the rows of x."""
  centred = x - x.mean(0)
  return centred.T @ centred / (len(x) - 1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root V sqrt(max(w, 0)) V^T of a symmetric PSD matrix V diag(w) V^T."""
  w, v = np.linalg.eigh((matrix + matrix.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def group_by_condition(images, durability, mass) -> list[np.ndarray]:
  """Splits images by (durability, mass) index pair, pairs in ascending order."""
  images = np.asarray(images)
  keys = np.asarray(durability, np.int64) * (int(np.max(mass, initial=0)) + 1) + np.asarray(mass)
  return [images[keys == k] for k in np.unique(keys)]


def mean_pairwise_l1(images) -> float:
  """mean_{i<j} mean_pixels |x_i - x_j| / 255 for uint8 images (k >= 2, ...)."""
  x = np.asarray(images, np.float32).reshape(len(images), -1) / np.float32(255.0)
  distances = np.abs(x[:, None, :] - x[None, :, :]).mean(-1)
  upper = np.triu_indices(len(x), k=1)
  return float(distances[upper].mean())


def diversity(groups: Sequence[np.ndarray], seed: int = 0) -> Optional[float]:
  r"""Mean within-condition pairwise L1 distance of uint8 designs, in [0, 1] units.

    diversity = mean_{groups g with |g| >= 2} mean_{i<j in g} mean_pixels |x_i - x_j| / 255

  Each group holds the designs of one condition. Pass training-layout images (as
  `evaluate_generator` does): columns empty in every real design would only dilute the distance.
  A group larger than MAX_GROUP is subsampled (seeded) to bound the k^2 cost; the mean pairwise
  distance is an unbiased U-statistic, so the group size does not bias it. None when no group has
  two designs.
  """
  rng = np.random.default_rng(seed)
  values = []
  for group in groups:
    if len(group) < 2:
      continue
    if len(group) > MAX_GROUP:
      group = group[np.sort(rng.choice(len(group), MAX_GROUP, replace=False))]
    values.append(mean_pairwise_l1(group))
  return float(np.mean(values)) if values else None


# ---------------------------------------------------------------------------------------------
# The oracle


def class_values(vocab: data.ClassVocab, indices) -> np.ndarray:
  """Class indices -> class values (float64)."""
  return np.asarray(vocab.values, np.float64)[np.asarray(indices, np.int64)]


def class_steps(measured, requested, step: float) -> np.ndarray:
  """Signed distance in whole class steps: round((measured - requested) / step)."""
  return np.round((np.asarray(measured) - np.asarray(requested)) / step).astype(np.int64)


def oracle_agreement(full_images, durability_values, mass_values) -> dict:
  """Per-design booleans (N,) comparing the oracle's classes of full-layout uint8 designs with
  the given class values: 'durability' / 'mass' (that label exact), 'exact' (both) and
  'within1' (both at most one class step away)."""
  measured_d, measured_m = oracle.measure(np.asarray(full_images))
  steps_d = class_steps(measured_d, durability_values, oracle.DURABILITY_STEP)
  steps_m = class_steps(measured_m, mass_values, oracle.MASS_STEP)
  return {'durability': steps_d == 0, 'mass': steps_m == 0,
          'exact': (steps_d == 0) & (steps_m == 0),
          'within1': (np.abs(steps_d) <= 1) & (np.abs(steps_m) <= 1)}


def is_synthetic(dataset: data.Dataset) -> bool:
  """True when the designs are the synthetic ones the oracle labels: a 10x30 full layout and the
  oracle reproduces both labels of at least SYNTHETIC_AGREEMENT of the real designs."""
  layout = dataset.layout
  if (layout.full_height, layout.full_width) != (oracle.HEIGHT, oracle.WIDTH):
    return False
  parts = [p for p in (dataset.train, dataset.val) if len(p)]
  full = np.concatenate([layout.to_full(data.denormalize(p.images)) for p in parts])
  durability = np.concatenate([class_values(dataset.spec.durability, p.durability) for p in parts])
  mass = np.concatenate([class_values(dataset.spec.mass, p.mass) for p in parts])
  return float(np.mean(oracle_agreement(full, durability, mass)['exact'])) >= SYNTHETIC_AGREEMENT


# ---------------------------------------------------------------------------------------------
# The classifier


class DesignClassifier(nnx.Module):
  """Predicts both classes of a training-layout design.

    f = gelu(LN(W2 gelu(LN(W1 x + b1)) + b2))      x the flat image (D = 3 H W), f in R^128
    durability logits = Wd f + bd,   mass logits = Wm f + bm

  f (the penultimate features) is the space the Frechet distance is measured in.
  """

  def __init__(self, image_shape: Sequence[int], num_durability: int, num_mass: int,
               rngs: nnx.Rngs):
    self.hidden = nnx.Linear(math.prod(image_shape), HIDDEN, rngs=rngs)
    self.hidden_norm = nnx.LayerNorm(HIDDEN, rngs=rngs)
    self.feature = nnx.Linear(HIDDEN, FEATURES, rngs=rngs)
    self.feature_norm = nnx.LayerNorm(FEATURES, rngs=rngs)
    self.durability_head = nnx.Linear(FEATURES, num_durability, rngs=rngs)
    self.mass_head = nnx.Linear(FEATURES, num_mass, rngs=rngs)

  def features(self, images):
    """(B, H, W, 3) in [-1, 1] -> (B, FEATURES)."""
    x = images.reshape(images.shape[0], -1)
    x = jax.nn.gelu(self.hidden_norm(self.hidden(x)))
    return jax.nn.gelu(self.feature_norm(self.feature(x)))

  def __call__(self, images):
    """-> (durability logits (B, nd), mass logits (B, nm), features (B, FEATURES))."""
    f = self.features(images)
    return self.durability_head(f), self.mass_head(f), f


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
  """A trained `DesignClassifier` split into graph and parameters, with its held-out record.

  Attributes:
    graphdef: the nnx graph definition.
    params: the nnx.State of all parameters.
    info: JSON-serialisable facts: 'key', 'held_out' ('val' or 'train'), 'num_train',
      'num_held_out', 'accuracy' {'durability', 'mass', 'joint'} on the held-out designs,
      'epochs', 'train_seconds', 'version'.
  """
  graphdef: Any
  params: Any
  info: dict

  @property
  def accuracy(self) -> dict:
    return self.info['accuracy']

  def apply(self, images) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(durability logits, mass logits, float64 features) of training-layout images in [-1, 1]."""
    images = np.asarray(images, np.float32)
    outputs = []
    for start in range(0, max(len(images), 1), APPLY_CHUNK):  # one empty chunk for no images
      chunk = images[start:start + APPLY_CHUNK]
      padded = np.zeros((APPLY_CHUNK,) + images.shape[1:], np.float32)
      padded[:len(chunk)] = chunk
      out = jax.device_get(_apply(self.graphdef, self.params, padded))
      outputs.append([o[:len(chunk)] for o in out])
    d_logits, m_logits, feats = (np.concatenate(parts) for parts in zip(*outputs))
    return d_logits, m_logits, feats.astype(np.float64)

  def predict(self, images) -> tuple[np.ndarray, np.ndarray]:
    """(durability index, mass index) predictions, int32 (N,) each."""
    d_logits, m_logits, _ = self.apply(images)
    return d_logits.argmax(-1).astype(np.int32), m_logits.argmax(-1).astype(np.int32)

  def features(self, images) -> np.ndarray:
    return self.apply(images)[2]


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, params, images):
  return nnx.merge(graphdef, params)(images)


def _loss(graphdef, params, images, durability, mass):
  """CE(durability) + CE(mass), each the batch mean of -log softmax(logits)[label]."""
  d_logits, m_logits, _ = nnx.merge(graphdef, params)(images)
  return (optax.softmax_cross_entropy_with_integer_labels(d_logits, durability).mean()
          + optax.softmax_cross_entropy_with_integer_labels(m_logits, mass).mean())


def _optimizer(total_steps: int) -> optax.GradientTransformation:
  return optax.adam(optax.cosine_decay_schedule(LEARNING_RATE, max(total_steps, 1)))


@functools.lru_cache(maxsize=8)
def _epoch_fn(graphdef, num_batches: int, batch_size: int, total_steps: int):
  """A jitted epoch: a seeded permutation, then one Adam step per batch in a lax.scan.

  Cached, so training the classifier again on data of the same shape does not recompile.
  """
  tx = _optimizer(total_steps)

  def train_step(carry, batch):
    params, opt_state, images, durability, mass = carry
    x, d, m = images[batch], durability[batch], mass[batch]
    loss, grads = jax.value_and_grad(_loss, argnums=1)(graphdef, params, x, d, m)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state, images, durability, mass), loss

  @jax.jit
  def epoch(params, opt_state, key, images, durability, mass):
    order = jax.random.permutation(key, images.shape[0])[:num_batches * batch_size]
    carry = (params, opt_state, images, durability, mass)
    (params, opt_state, *_), losses = jax.lax.scan(
        train_step, carry, order.reshape(num_batches, batch_size))
    return params, opt_state, losses.mean()

  return epoch


def new_classifier(spec: data.DataSpec, seed: int = CLASSIFIER_SEED) -> DesignClassifier:
  return DesignClassifier(spec.layout.shape, len(spec.durability), len(spec.mass),
                          rngs=nnx.Rngs(params=seed))


def held_out(dataset: data.Dataset) -> tuple[str, data.DesignArrays]:
  """('val', validation designs), or ('train', training designs) when there are none."""
  return ('val', dataset.val) if len(dataset.val) else ('train', dataset.train)


def accuracy(predicted: tuple[np.ndarray, np.ndarray], durability, mass) -> dict:
  """{'durability', 'mass', 'joint' (both right)}: shares of correct predictions."""
  d_ok = np.asarray(predicted[0]) == np.asarray(durability)
  m_ok = np.asarray(predicted[1]) == np.asarray(mass)
  return {'durability': _mean(d_ok), 'mass': _mean(m_ok), 'joint': _mean(d_ok & m_ok)}


def train_classifier(dataset: data.Dataset, epochs: int = EPOCHS,
                     seed: int = CLASSIFIER_SEED) -> Classifier:
  """Trains a DesignClassifier on the training split; deterministic in `seed`.

  Loss CE(durability) + CE(mass); Adam with learning rate LEARNING_RATE * (1 + cos(pi t / T)) / 2
  at step t of T; batches of min(BATCH_SIZE, N) from a fresh permutation every epoch (the last
  partial batch dropped); `epochs` compiled epochs.
  """
  start = time.perf_counter()
  train = dataset.train
  graphdef, params = nnx.split(new_classifier(dataset.spec, seed))
  batch_size = min(BATCH_SIZE, len(train))
  num_batches = len(train) // batch_size
  opt_state = _optimizer(num_batches * epochs).init(params)
  epoch = _epoch_fn(graphdef, num_batches, batch_size, num_batches * epochs)
  arrays = jax.device_put((train.images, train.durability, train.mass))
  key = jax.random.PRNGKey(seed)
  for _ in range(epochs):
    key, epoch_key = jax.random.split(key)
    params, opt_state, _ = epoch(params, opt_state, epoch_key, *arrays)
  params = jax.device_get(params)
  seconds = time.perf_counter() - start
  which, part = held_out(dataset)
  classifier = Classifier(graphdef, params, {})
  info = {'version': CLASSIFIER_VERSION, 'key': cache_key(dataset), 'held_out': which,
          'num_train': len(train), 'num_held_out': len(part), 'epochs': epochs,
          'train_seconds': round(seconds, 3),
          'accuracy': accuracy(classifier.predict(part.images), part.durability, part.mass)}
  log.info('Trained the evaluation classifier in %.1f s: held-out (%s) accuracy %s', seconds,
           which, info['accuracy'])
  return Classifier(graphdef, params, info)


# ---------------------------------------------------------------------------------------------
# The classifier cache


def cache_key(dataset: data.Dataset) -> str:
  """First 16 hex digits of sha256(classifier version and settings, spec JSON, training file
  names, sha256 of the training images and labels)."""
  train = dataset.train
  header = {'version': CLASSIFIER_VERSION, 'hidden': HIDDEN, 'features': FEATURES,
            'learning_rate': LEARNING_RATE, 'batch_size': BATCH_SIZE, 'epochs': EPOCHS,
            'seed': CLASSIFIER_SEED, 'spec': dataset.spec.to_dict(), 'names': list(train.names)}
  content = hashlib.sha256()
  for array in (train.images, train.durability, train.mass):
    content.update(np.ascontiguousarray(array).tobytes())
  digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
  digest.update(content.digest())
  return digest.hexdigest()[:16]


def classifier_dir(dataset: data.Dataset, cache_dir: Optional[str] = None) -> str:
  """`<cache_dir or designs.default_cache_dir()>/classifiers/<cache_key>`."""
  return os.path.join(os.path.abspath(cache_dir or designs.default_cache_dir()), 'classifiers',
                      cache_key(dataset))


def save_classifier(classifier: Classifier, path: str) -> None:
  """Writes params (orbax) and info.json to a temporary sibling, then renames it to `path`.

  `path` therefore appears only when complete, and `load_or_train_classifier` trusts only
  entries with an info.json. An entry already at `path` (a broken one, or a concurrent writer's)
  is replaced; if the rename still loses a race, the winner's complete copy is kept.
  """
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=os.path.basename(path) + '.partial-', dir=parent)
  try:
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(os.path.join(tmp, 'params'), classifier.params)
      checkpointer.wait_until_finished()
    with open(os.path.join(tmp, 'info.json'), 'w', encoding='utf-8') as f:
      json.dump(classifier.info, f, indent=1, sort_keys=True)
    if os.path.isdir(path):  # a complete copy appeared meanwhile, or a broken one we replace
      shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)
  except OSError:
    shutil.rmtree(tmp, ignore_errors=True)
    if not os.path.isfile(os.path.join(path, 'info.json')):
      raise
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def restore_classifier(spec: data.DataSpec, path: str) -> Classifier:
  """Reads a classifier saved by `save_classifier` (any exception if it is not readable)."""
  with open(os.path.join(path, 'info.json'), encoding='utf-8') as f:
    info = json.load(f)
  graphdef, fresh = nnx.split(new_classifier(spec))
  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, fresh)
  with ocp.StandardCheckpointer() as checkpointer:
    params = checkpointer.restore(os.path.join(path, 'params'), target)
  return Classifier(graphdef, params, info)


def load_or_train_classifier(dataset: data.Dataset,
                             cache_dir: Optional[str] = None) -> Classifier:
  """The cached classifier of this dataset, training and caching it first if there is none.

  An unreadable cache entry is retrained and replaced; a cache that cannot be written only costs
  a warning (the classifier is still returned).
  """
  path = classifier_dir(dataset, cache_dir)
  if os.path.isfile(os.path.join(path, 'info.json')):
    try:
      classifier = restore_classifier(dataset.spec, path)
      log.info('Loaded the evaluation classifier from %s', path)
      return classifier
    except Exception as e:  # pylint: disable=broad-except  (orbax raises many types)
      log.warning('Cached classifier %s is unreadable (%s); training a new one', path, e)
  classifier = train_classifier(dataset)
  try:
    save_classifier(classifier, path)
  except OSError as e:
    log.warning('Cannot cache the evaluation classifier in %s (%s); set DESIGNGAN_CACHE to a '
                'writable directory to reuse it', path, e)
  return classifier


# ---------------------------------------------------------------------------------------------
# Metrics


@dataclasses.dataclass(frozen=True, eq=False)
class Reference:
  """Everything about the real designs that `evaluate_generator` compares with; computed once.

  Attributes:
    held_out_name: 'val' or 'train' (see `held_out`).
    held_out: the held-out real designs (strut source and comparison set).
    synthetic: whether the oracle labels these data (`is_synthetic`).
    features: classifier features of the held-out designs, float64 (N, FEATURES).
    fd_real_baseline: FD(train features, held-out features); None without validation designs.
    diversity_real: `diversity` of the held-out designs grouped by their class pair.
  """
  held_out_name: str
  held_out: data.DesignArrays
  synthetic: bool
  features: np.ndarray
  fd_real_baseline: Optional[float]
  diversity_real: Optional[float]


def reference(dataset: data.Dataset, classifier: Classifier) -> Reference:
  """Computes the `Reference` of a dataset for `classifier`."""
  name, part = held_out(dataset)
  features = classifier.features(part.images)
  baseline = None
  if name == 'val' and len(dataset.train) >= 2 and len(part) >= 2:
    baseline = frechet_distance(classifier.features(dataset.train.images), features)
  real_groups = group_by_condition(data.denormalize(part.images), part.durability, part.mass)
  return Reference(name, part, is_synthetic(dataset), features, baseline, diversity(real_groups))


def condition_grid(spec: data.DataSpec, per_pair: int) -> tuple[np.ndarray, np.ndarray]:
  """int32 (durability, mass) indices: every pair `per_pair` times, pair by pair."""
  d, m = np.meshgrid(np.arange(len(spec.durability)), np.arange(len(spec.mass)), indexing='ij')
  return (np.repeat(d.ravel(), per_pair).astype(np.int32),
          np.repeat(m.ravel(), per_pair).astype(np.int32))


def strut_agreement(full_images, strut_colors, strut_positions) -> np.ndarray:
  """(N,) bool: every strut pixel of each full-layout design equals its requested uint8 colour."""
  if not strut_positions:
    return np.ones(len(full_images), bool)
  rows, cols = np.asarray(strut_positions, np.int64).T
  return np.all(np.asarray(full_images)[:, rows, cols, :] == np.asarray(strut_colors), axis=(1, 2))


def evaluate_generator(generate_fn: GenerateFn, dataset: data.Dataset, classifier: Classifier,
                       per_pair: int = 10, seed: int = 0,
                       ref: Optional[Reference] = None) -> dict:
  """Generates `per_pair` designs for every class pair and measures them (module docstring).

  Args:
    generate_fn: (durability idx (N,), mass idx (N,), fixed-pixel images (N, H, W, 3) float32,
      seed) -> uint8 (N, full_H, full_W, 3) designs in the full layout with struts set.
    dataset: the data the generator was trained on (spec, train/validation split).
    classifier: `load_or_train_classifier(dataset)`.
    per_pair: designs per (durability, mass) pair.
    seed: seeds the strut draw and is passed to `generate_fn`.
    ref: `reference(dataset, classifier)`, to reuse across calls; computed when None.

  Returns:
    A JSON-serialisable dict of the metrics, `per_class` tables and counts.

  Raises:
    EvaluationError: per_pair < 1.
    ValueError: generate_fn returned something other than the designs asked for.
  """
  if int(per_pair) < 1:
    raise EvaluationError(f'--per_pair must be at least 1 design per class pair, got {per_pair}')
  ref = ref or reference(dataset, classifier)
  spec, layout = dataset.spec, dataset.layout
  d_idx, m_idx = condition_grid(spec, int(per_pair))
  source = ref.held_out.take(np.random.default_rng(seed).integers(0, len(ref.held_out),
                                                                  len(d_idx)))
  full = _check_designs(generate_fn(d_idx, m_idx, source.fixed, seed), len(d_idx), layout)
  train_layout = layout.from_full(full)

  d_logits, m_logits, features = classifier.apply(data.normalize(train_layout))
  predicted = (d_logits.argmax(-1), m_logits.argmax(-1))
  clf_ok = accuracy(predicted, d_idx, m_idx)
  joint_ok = (predicted[0] == d_idx) & (predicted[1] == m_idx)
  oracle_ok = None
  if ref.synthetic:
    oracle_ok = oracle_agreement(full, class_values(spec.durability, d_idx),
                                 class_values(spec.mass, m_idx))
  has_oracle = oracle_ok is not None
  return {
      'num_generated': len(d_idx),
      'per_pair': int(per_pair),
      'num_pairs': len(spec.durability) * len(spec.mass),
      'seed': int(seed),
      'synthetic': ref.synthetic,
      'oracle_exact': _mean(oracle_ok['exact']) if has_oracle else None,
      'oracle_within1': _mean(oracle_ok['within1']) if has_oracle else None,
      'classifier_accuracy_generated': clf_ok['joint'],
      'classifier_accuracy_real': classifier.accuracy['joint'],
      'fd': frechet_distance(features, ref.features) if len(ref.features) >= 2 else None,
      'fd_real_baseline': ref.fd_real_baseline,
      'strut_exact': _mean(strut_agreement(full, source.strut_colors, layout.strut_positions)),
      'diversity': diversity(group_by_condition(train_layout, d_idx, m_idx), seed),
      'diversity_real': ref.diversity_real,
      'classifier': {'generated': clf_ok, 'held_out': classifier.accuracy,
                     'held_out_set': classifier.info['held_out'],
                     'num_train': classifier.info['num_train'],
                     'num_held_out': classifier.info['num_held_out'],
                     'key': classifier.info['key']},
      'per_class': per_class_tables(spec, d_idx, m_idx, oracle_ok, joint_ok),
  }


def per_class_tables(spec: data.DataSpec, d_idx, m_idx, oracle_ok: Optional[dict],
                     classifier_ok) -> dict:
  """Rates by requested durability class, mass class and pair.

  Each row: the class value(s), 'count', 'classifier_accuracy' (both classes predicted right) and,
  when the oracle applies (else None), 'oracle_exact', 'oracle_within1' and 'oracle_label_exact'
  (the row's own label measured right; durability and mass rows only).
  """

  def row(selected, label: Optional[str]) -> dict:
    out = {'count': int(selected.sum()), 'classifier_accuracy': _mean(classifier_ok[selected])}
    has_oracle = oracle_ok is not None
    for key in ('exact', 'within1'):
      out[f'oracle_{key}'] = _mean(oracle_ok[key][selected]) if has_oracle else None
    if label:
      out['oracle_label_exact'] = _mean(oracle_ok[label][selected]) if has_oracle else None
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


def _mean(values) -> Optional[float]:
  values = np.asarray(values)
  return float(values.mean()) if values.size else None


# ---------------------------------------------------------------------------------------------
# A trained run


def evaluate_model(model_path: str, step: Optional[int] = None, per_pair: int = 10, seed: int = 0,
                   device: str = 'cpu', cache_dir: Optional[str] = None) -> dict:
  """Loads a run's checkpoint, its dataset and the (cached) classifier; evaluates the generator.

  Raises:
    DesignGanError: no such checkpoint, the data cannot be loaded or no longer fit the model,
      per_pair < 1, or the device is unavailable.
  """
  # Imported here: the trainer imports this module to evaluate during training.
  from gan import inference  # pylint: disable=import-outside-toplevel
  from gan import trainer  # pylint: disable=import-outside-toplevel
  if int(per_pair) < 1:
    raise EvaluationError(f'--per_pair must be at least 1 design per class pair, got {per_pair}')
  dev = inference.select_device(device)
  with jax.default_device(dev):
    model = inference.load(model_path, step, dev)
    dataset = trainer.load_data(model.config)
    if dataset.spec.to_dict() != model.spec.to_dict():
      raise EvaluationError(
          f'the data at {dataset.data_dir} no longer match the model in {model.run_dir} (other '
          'class values or layout); evaluate with the data the model was trained on')
    classifier = load_or_train_classifier(dataset, cache_dir)
    result = evaluate_generator(lambda d, m, f, s: inference.generate(model, d, m, f, s),
                                dataset, classifier, per_pair, seed)
  result['model'] = {'run_dir': model.run_dir, 'checkpoint_dir': model.checkpoint_dir,
                     'step': model.epoch, 'data': dataset.data_dir}
  return result


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
  """A readable table of the headline metrics and the per-class oracle rates."""
  lines = [
      f'designs generated     {metrics["num_generated"]} ({metrics["num_pairs"]} class pairs x '
      f'{metrics["per_pair"]})',
      f'oracle exact          {_fmt(metrics["oracle_exact"])}   within one class '
      f'{_fmt(metrics["oracle_within1"])}' + ('' if metrics['synthetic'] else
                                              '   (not the synthetic designs)'),
      f'classifier accuracy   generated {_fmt(metrics["classifier_accuracy_generated"])}   '
      f'held-out real {_fmt(metrics["classifier_accuracy_real"])}',
      f'Frechet distance      generated {_fmt(metrics["fd"], 4)}   real baseline '
      f'{_fmt(metrics["fd_real_baseline"], 4)}',
      f'strut exact           {_fmt(metrics["strut_exact"])}',
      f'diversity (L1)        generated {_fmt(metrics["diversity"], 4)}   real '
      f'{_fmt(metrics["diversity_real"], 4)}',
  ]
  for label in ('durability', 'mass'):
    rows = metrics['per_class'][label]
    key = 'oracle_exact' if metrics['synthetic'] else 'classifier_accuracy'
    what = 'oracle exact' if metrics['synthetic'] else 'classifier accuracy'
    lines.append(f'{what} by {label}:')
    lines.append('  ' + '  '.join(f'{r["value"]:g}:{_fmt(r[key], 2)}' for r in rows))
  return '\n'.join(lines)


def _check_json_target(path: str) -> None:
  path = os.path.abspath(path)
  if os.path.isdir(path):
    raise EvaluationError(f'--json {path} is a directory; give a file name such as metrics.json')
  if not os.path.isdir(os.path.dirname(path)):
    raise EvaluationError(f'--json {path}: directory {os.path.dirname(path)} does not exist; '
                          'create it first')


def write_json(path: str, metrics: dict) -> None:
  """Writes `metrics` as JSON atomically (temporary file beside `path`, then os.replace)."""
  _check_json_target(path)
  path = os.path.abspath(path)
  directory = os.path.dirname(path)
  try:
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + '.', suffix='.tmp', dir=directory)
    try:
      with os.fdopen(fd, 'w', encoding='utf-8') as f:
        json.dump(metrics, f, indent=1)
        f.write('\n')
      os.replace(tmp, path)
    except BaseException:
      os.unlink(tmp)
      raise
  except OSError as e:
    raise EvaluationError(f'--json {path}: cannot write ({e.strerror})') from None


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m gan.evaluate',
      description='Evaluate a trained generator: oracle/classifier fidelity, Frechet distance, '
                  'strut exactness and diversity over every (durability, mass) pair.')
  parser.add_argument('--model_path', required=True,
                      help='training run directory (log_path), its checkpoints/ or one step dir')
  parser.add_argument('--step', type=int, default=None, help='checkpoint step (default: latest)')
  parser.add_argument('--per_pair', type=int, default=10, help='designs per class pair')
  parser.add_argument('--seed', type=int, default=0, help='seed of noise and strut colours')
  parser.add_argument('--device', default='cpu', help='cpu | gpu')
  parser.add_argument('--json', default='', help='also write the metrics to this JSON file')
  parser.add_argument('--cache_dir', default=None,
                      help='cache of evaluation classifiers (default: the designgan cache)')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(message)s')
  try:
    if args.json:  # fail before the work, not after it
      _check_json_target(args.json)
    metrics = evaluate_model(args.model_path, args.step, args.per_pair, args.seed, args.device,
                             args.cache_dir)
    if args.json:
      write_json(args.json, metrics)
  except DesignGanError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(format_report(metrics))
  if args.json:
    print(f'metrics written to {os.path.abspath(args.json)}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
