"""Tests of gan/classifier.py: accuracy on held-out designs, the cache and its key."""

import logging
import os

import jax
import numpy as np
from flax import nnx
from helpers import fast_compilation, relabelled

from gan import classifier as classifier_lib
from gan import data


# ---------------------------------------------------------------------------------------------
# Accuracy and the cache


def test_classifier_beats_chance_on_held_out_designs(classifier, dataset):
  acc = classifier.accuracy
  assert classifier.info['held_out'] == 'val'
  assert classifier.info['num_held_out'] == len(dataset.val)
  # Chance is 1/10 (durability), 1/12 (mass), 1/120 (both).
  assert acc['durability'] > 0.5 and acc['mass'] > 0.4 and acc['joint'] > 0.25
  again = classifier_lib.accuracy(classifier.predict(dataset.val.images),
                                  dataset.val.durability, dataset.val.mass)
  assert again == acc


def test_classifier_is_cached_and_reloaded(small_design_dir, tmp_path, monkeypatch):
  small = data.load_dataset(small_design_dir)
  first = classifier_lib.load_or_train_classifier(small, str(tmp_path))
  path = classifier_lib.classifier_dir(small, str(tmp_path))
  assert os.path.isfile(os.path.join(path, 'info.json'))
  assert [n for n in os.listdir(os.path.dirname(path)) if 'partial' in n] == []

  def no_training(*args, **kwargs):
    raise AssertionError('the classifier was trained again instead of loaded from the cache')

  monkeypatch.setattr(classifier_lib, 'train_classifier', no_training)
  second = classifier_lib.load_or_train_classifier(small, str(tmp_path))
  assert second.info == first.info
  for x, y in zip(first.apply(small.val.images), second.apply(small.val.images)):
    np.testing.assert_array_equal(x, y)


def test_classifier_cache_ignores_partial_and_broken_entries(small_design_dir, tmp_path,
                                                              monkeypatch, caplog):
  small = data.load_dataset(small_design_dir)
  path = classifier_lib.classifier_dir(small, str(tmp_path))
  os.makedirs(path)  # an interrupted write that somehow kept the final name: no info.json
  trained = []
  real_train = classifier_lib.train_classifier

  def counting(*args, **kwargs):
    trained.append(1)
    return real_train(*args, **kwargs)

  monkeypatch.setattr(classifier_lib, 'train_classifier', counting)
  classifier_lib.load_or_train_classifier(small, str(tmp_path))
  assert len(trained) == 1 and os.path.isfile(os.path.join(path, 'info.json'))
  # Damaged parameters: retrained and replaced, not an error.
  for root, _, files in os.walk(os.path.join(path, 'params')):
    for name in files:
      os.remove(os.path.join(root, name))
  with caplog.at_level(logging.WARNING):
    classifier = classifier_lib.load_or_train_classifier(small, str(tmp_path))
  assert len(trained) == 2 and classifier.info['num_train'] == len(small.train)
  # Said as every tool's warnings are: 'warning: ...', as errors are 'error: ...'.
  assert [r.getMessage().split(' is unreadable')[0] for r in caplog.records
          if r.levelno == logging.WARNING] == [f'warning: the cached classifier {path}']
  classifier_lib.restore_classifier(small.spec, path)  # the replacement is readable


def test_a_cached_classifier_measures_the_held_out_designs_it_is_given(small_design_dir, tmp_path,
                                                                       monkeypatch):
  """The key covers the training split only: a cached classifier met with other validation
  designs (a validation file rewritten under its name) reports its accuracy on those, not the
  accuracy saved with it."""
  small = data.load_dataset(small_design_dir)
  classifier_lib.load_or_train_classifier(small, str(tmp_path))
  fewer = data.Dataset(small.spec, small.train, small.val.take(np.arange(len(small.val) // 2)),
                       small.mask, small.data_dir)
  assert classifier_lib.cache_key(fewer) == classifier_lib.cache_key(small)

  def no_training(*args, **kwargs):
    raise AssertionError('the classifier was trained again instead of loaded from the cache')

  monkeypatch.setattr(classifier_lib, 'train_classifier', no_training)
  loaded = classifier_lib.load_or_train_classifier(fewer, str(tmp_path))
  assert loaded.info['held_out'] == 'val' and loaded.info['num_held_out'] == len(fewer.val)
  assert loaded.accuracy == classifier_lib.accuracy(loaded.predict(fewer.val.images),
                                                    fewer.val.durability, fewer.val.mass)


def test_cache_key_depends_on_the_training_data(dataset, small_design_dir):
  small = data.load_dataset(small_design_dir)
  assert classifier_lib.cache_key(dataset) == classifier_lib.cache_key(dataset)
  assert classifier_lib.cache_key(dataset) != classifier_lib.cache_key(small)
  assert classifier_lib.cache_key(dataset) != classifier_lib.cache_key(relabelled(dataset))


def test_classifier_handles_no_images(classifier, dataset):
  d_logits, m_logits, feats = classifier.apply(dataset.val.images[:0])
  assert d_logits.shape == (0, len(dataset.spec.durability))
  assert m_logits.shape == (0, len(dataset.spec.mass))
  assert feats.shape == (0, classifier_lib.FEATURES)


def test_training_returns_to_python_after_each_epoch_has_run(dataset, monkeypatch):
  """So a Ctrl-C (handled between bytecodes) stops the training within an epoch, not after all
  of them: each epoch's results are ready when the next epoch is started."""
  ready_at_next_call = []
  make_epoch = classifier_lib._epoch_fn  # pylint: disable=protected-access

  def recording_epoch_fn(*args):
    epoch, previous = make_epoch(*args), []

    def recording_epoch(*inputs):
      ready_at_next_call.extend(all(x.is_ready() for x in jax.tree.leaves(out))
                                for out in previous[-1:])
      previous.append(epoch(*inputs))
      return previous[-1]

    return recording_epoch

  monkeypatch.setattr(classifier_lib, '_epoch_fn', recording_epoch_fn)
  classifier_lib.train_classifier(dataset, epochs=6)
  assert ready_at_next_call == [True] * 5


def test_features_after_a_fast_compilation_module_are_the_optimised_programs():
  """The suite's `fast_compilation` (tests/helpers.py) leaves no program behind: one compiled
  inside was reused after it (JAX's jit cache ignores the setting), and rounds differently, so
  an evaluation in a later module on the same worker gave two FDs for one request."""
  graphdef, params = nnx.split(classifier_lib.DesignClassifier((10, 14, 3), 10, 12,
                                                               rngs=nnx.Rngs(0)))
  images = np.random.default_rng(0).uniform(-1, 1, (classifier_lib.APPLY_CHUNK, 10, 14, 3))
  images = images.astype(np.float32)
  apply = lambda: jax.device_get(classifier_lib._apply(graphdef, params, images))
  with fast_compilation():
    apply()
  after = apply()
  jax.clear_caches()
  for a, b in zip(after, apply()):
    np.testing.assert_array_equal(a, b)
