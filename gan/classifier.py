"""The evaluation classifier: predicts both classes of a design; FD is measured in its features.

`DesignClassifier` is trained on the training split (`train_classifier`) once per dataset and
cached under `<cache>/classifiers/<key>`, the key a hash of the data spec, the training split and
the classifier version (`load_or_train_classifier`). Its accuracy on the held-out designs
(`data.Dataset.held_out`: the validation split, or the training split when there are no
validation designs; measured again whenever a cached classifier is loaded) is the reference that
`gan.evaluate` compares the generated designs with.
"""

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx

from gan import data
from gan import designs
from gan import losses
from gan import metrics as metrics_lib
from gan import paths
from gan import step

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
# Classifier inputs go through one compiled shape: batches are padded to this size.
APPLY_CHUNK = 1024


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
  """CE(durability) + CE(mass), each the batch mean (`losses.class_cross_entropy`)."""
  d_logits, m_logits, _ = nnx.merge(graphdef, params)(images)
  return losses.class_cross_entropy(d_logits, m_logits, durability, mass)


def _optimizer(total_steps: int) -> optax.GradientTransformation:
  return optax.adam(optax.cosine_decay_schedule(LEARNING_RATE, max(total_steps, 1)))


@functools.lru_cache(maxsize=8)
def _epoch_fn(graphdef, batch_size: int, total_steps: int):
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
    carry = (params, opt_state, images, durability, mass)
    (params, opt_state, *_), batch_losses = jax.lax.scan(
        train_step, carry, step.shuffled_batches(key, images.shape[0], batch_size))
    return params, opt_state, batch_losses.mean()

  return epoch


def new_classifier(spec: data.DataSpec, seed: int = CLASSIFIER_SEED) -> DesignClassifier:
  return DesignClassifier(spec.layout.shape, len(spec.durability), len(spec.mass),
                          rngs=nnx.Rngs(params=seed))


def accuracy(predicted: tuple[np.ndarray, np.ndarray], durability, mass) -> dict:
  """{'durability', 'mass', 'joint' (both right)}: shares of correct predictions."""
  d_ok = np.asarray(predicted[0]) == np.asarray(durability)
  m_ok = np.asarray(predicted[1]) == np.asarray(mass)
  return {'durability': metrics_lib.share(d_ok), 'mass': metrics_lib.share(m_ok),
          'joint': metrics_lib.share(d_ok & m_ok)}


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
  epoch = _epoch_fn(graphdef, batch_size, num_batches * epochs)
  arrays = jax.device_put((train.images, train.durability, train.mass))
  key = jax.random.PRNGKey(seed)
  for _ in range(epochs):
    key, epoch_key = jax.random.split(key)
    params, opt_state, _ = epoch(params, opt_state, epoch_key, *arrays)
    # Each epoch waited for: a Ctrl-C is then taken between epochs, not once all are dispatched
    # and the last one waited for (Python runs the SIGINT handler only between bytecodes).
    jax.block_until_ready(params)
  params = jax.device_get(params)
  seconds = time.perf_counter() - start
  classifier = with_held_out(Classifier(graphdef, params, {
      'version': CLASSIFIER_VERSION, 'key': cache_key(dataset), 'num_train': len(train),
      'epochs': epochs, 'train_seconds': round(seconds, 3)}), dataset)
  log.info('Trained the evaluation classifier in %.1f s: held-out (%s) accuracy %s', seconds,
           classifier.info['held_out'], classifier.accuracy)
  return classifier


def with_held_out(classifier: Classifier, dataset: data.Dataset) -> Classifier:
  """The classifier with its held-out record ('held_out', 'num_held_out', 'accuracy') measured
  on `dataset`'s held-out designs.

  The cache key covers only what the parameters depend on (the training split), so a cached
  classifier can meet other held-out designs than it was saved with (a validation file rewritten
  under its name, the training files unchanged): its record is measured again, never read from the
  cache.
  """
  which, part = dataset.held_out()
  return Classifier(classifier.graphdef, classifier.params, dict(
      classifier.info, held_out=which, num_held_out=len(part),
      accuracy=accuracy(classifier.predict(part.images), part.durability, part.mass)))


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


def _checkpointer() -> ocp.StandardCheckpointer:
  """An orbax checkpointer private to this process: in a multi-process run every process loads
  or trains its own copy of the (small, cached) classifier, and orbax's default would make each
  wait at barriers for all the others. (Only process 0 writes the cache: orbax writes no array
  data from a process other than 0.)"""
  if jax.process_count() == 1:
    return ocp.StandardCheckpointer()
  me = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}))


def save_classifier(classifier: Classifier, path: str) -> None:
  """Writes params (orbax) and info.json to a temporary sibling, then renames it to `path`.

  `path` therefore appears only when complete, and `load_or_train_classifier` trusts only
  entries with an info.json. An entry already at `path` (a broken one, or a concurrent writer's)
  is replaced; if the rename still loses a race, the winner's complete copy is kept.
  """
  parent = os.path.dirname(path)
  os.makedirs(parent, exist_ok=True)
  tmp = paths.staging_dir(path)
  try:
    with _checkpointer() as checkpointer:
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
  with _checkpointer() as checkpointer:
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
    except Exception as e:  # pylint: disable=broad-except  (orbax raises many types)
      log.warning('warning: the cached classifier %s is unreadable (%s); training a new one',
                  path, e)
    else:
      log.info('Loaded the evaluation classifier from %s', path)
      return with_held_out(classifier, dataset)
  classifier = train_classifier(dataset)
  if jax.process_index() != 0:  # orbax writes arrays from process 0 only: one writer suffices
    return classifier
  try:
    save_classifier(classifier, path)
  except OSError as e:
    log.warning('warning: cannot cache the evaluation classifier in %s (%s); give a writable %s to '
                'reuse it', path, e, '--cache_dir' if cache_dir else 'DESIGNGAN_CACHE')
  return classifier
