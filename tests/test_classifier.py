"""Tests of gan/classifier.py: accuracy on held-out designs, the cache and its key."""

import dataclasses
import errno
import logging
import os

import jax
import numpy as np
import pytest
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
  """Under <cache_dir>/classifiers/<key>, a relative cache_dir taken from the working directory
  (orbax takes absolute paths only); loaded, not trained, the next time."""
  small = data.load_dataset(small_design_dir)
  monkeypatch.chdir(tmp_path)
  first = classifier_lib.load_or_train_classifier(small, 'cache')
  path = classifier_lib.classifier_dir(small, 'cache')
  assert path == os.path.join(str(tmp_path), 'cache', 'classifiers',
                              classifier_lib.cache_key(small))
  assert os.path.isfile(os.path.join(path, 'info.json'))
  assert [n for n in os.listdir(os.path.dirname(path)) if 'partial' in n] == []

  def no_training(*args, **kwargs):
    raise AssertionError('the classifier was trained again instead of loaded from the cache')

  monkeypatch.setattr(classifier_lib, 'train_classifier', no_training)
  second = classifier_lib.load_or_train_classifier(small, 'cache')
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
  """16 hex digits, other for other training designs: other labels, other pixels (one pixel of
  one design), or other file names."""
  small = data.load_dataset(small_design_dir)
  key = classifier_lib.cache_key(dataset)
  assert key == classifier_lib.cache_key(dataset)
  assert len(key) == 16 and int(key, 16) >= 0
  assert key != classifier_lib.cache_key(small)
  assert key != classifier_lib.cache_key(relabelled(dataset))
  images = dataset.train.images.copy()
  images[5, 3, 4, 1] = -images[5, 3, 4, 1] if images[5, 3, 4, 1] else 1.0
  names = ('renamed.bmp',) + dataset.train.names[1:]
  for train in (dataclasses.replace(dataset.train, images=images),
                dataclasses.replace(dataset.train, names=names)):
    assert key != classifier_lib.cache_key(dataclasses.replace(dataset, train=train))


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


def test_more_images_than_a_chunk_are_applied_chunk_by_chunk(classifier, dataset):
  """Past APPLY_CHUNK images the next chunk goes through the same compiled shape: every image
  gets its own outputs, in order (those it gets among other images). Features are the float64
  GELU outputs (never below GELU's minimum, about -0.170); predictions are the int32 argmaxes of
  the logits."""
  images = dataset.train.images[:classifier_lib.APPLY_CHUNK + 6]
  d_logits, m_logits, feats = classifier.apply(images)
  assert d_logits.shape == (len(images), len(dataset.spec.durability))
  assert m_logits.shape == (len(images), len(dataset.spec.mass))
  assert feats.shape == (len(images), classifier_lib.FEATURES) and feats.dtype == np.float64
  assert feats.min() >= -0.171
  for start in (0, classifier_lib.APPLY_CHUNK - 3):
    part = classifier.apply(images[start:start + 9])
    for whole, alone in zip((d_logits, m_logits, feats), part):
      np.testing.assert_allclose(whole[start:start + 9], alone, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(classifier.features(images), feats)
  durability, mass = classifier.predict(images)
  assert durability.dtype == mass.dtype == np.int32
  np.testing.assert_array_equal(durability, d_logits.argmax(-1))
  np.testing.assert_array_equal(mass, m_logits.argmax(-1))


def test_accuracy_counts_each_class_and_both():
  predicted = (np.array([0, 1, 2, 3]), np.array([0, 1, 0, 0]))
  assert classifier_lib.accuracy(predicted, [0, 1, 2, 0], [0, 0, 0, 0]) == {
      'durability': 0.75, 'mass': 0.75, 'joint': 0.5}


def test_the_seed_draws_the_initial_parameters_and_every_epochs_batches(small_design_dir,
                                                                         monkeypatch):
  """train_classifier is deterministic in `seed`; another seed starts from other parameters and
  shuffles with other keys, a fresh one every epoch (the same key would give every epoch the same
  batches)."""
  small = data.load_dataset(small_design_dir)
  keys = []
  make_epoch = classifier_lib._epoch_fn  # pylint: disable=protected-access

  def recording_epoch_fn(*args):
    epoch = make_epoch(*args)

    def recording_epoch(params, opt_state, key, *arrays):
      keys.append(tuple(np.asarray(key).ravel().tolist()))
      return epoch(params, opt_state, key, *arrays)

    return recording_epoch

  monkeypatch.setattr(classifier_lib, '_epoch_fn', recording_epoch_fn)
  leaves = lambda c: [np.asarray(x) for x in jax.tree.leaves(c.params)]
  initial = [leaves(classifier_lib.train_classifier(small, epochs=0, seed=s)) for s in (0, 1)]
  assert not all(np.array_equal(a, b) for a, b in zip(*initial))
  assert keys == []
  runs = [classifier_lib.train_classifier(small, epochs=2, seed=s) for s in (0, 0, 1)]
  assert [run.info['epochs'] for run in runs] == [2, 2, 2]
  assert keys[:2] == keys[2:4] and len(set(keys)) == 4  # seed 0 twice, then seed 1
  for a, b in zip(leaves(runs[0]), leaves(runs[1])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('num_train', [40, 150])
def test_batches_of_at_most_64_designs_and_a_schedule_as_long_as_the_run(small_design_dir,
                                                                        monkeypatch, num_train):
  """Batches of min(64, N): with fewer than 64 training designs every epoch is one batch of all
  of them (64 would leave none); the cosine decay spans every step of every epoch (N // batch per
  epoch), so the rate reaches 0 at the last step, not after the first epoch."""
  small = data.load_dataset(small_design_dir)
  small = dataclasses.replace(small, train=small.train.take(np.arange(num_train)))
  made = []
  make_epoch = classifier_lib._epoch_fn  # pylint: disable=protected-access

  def recording_epoch_fn(graphdef, batch_size, total_steps):
    made.append((batch_size, total_steps))
    return make_epoch(graphdef, batch_size, total_steps)

  monkeypatch.setattr(classifier_lib, '_epoch_fn', recording_epoch_fn)
  leaves = lambda c: [np.asarray(x) for x in jax.tree.leaves(c.params)]
  trained = [leaves(classifier_lib.train_classifier(small, epochs=e)) for e in (0, 3)]
  batch = min(64, num_train)
  assert made == [(batch, 0), (batch, num_train // batch * 3)]
  assert not any(np.array_equal(a, b) for a, b in zip(*trained) if a.ndim == 2)  # trained


def test_a_cache_entry_is_written_whole_or_not_at_all(classifier, tmp_path, monkeypatch):
  """A failed save leaves no staging directory behind: a rename that fails (a full disk) is an
  error, unless another writer's complete entry took the name meanwhile, which is kept; an
  interrupt during the write is re-raised."""
  parent = tmp_path / 'classifiers'
  path = str(parent / 'key')
  real_rename = os.rename
  winner = []

  def rename(src, dst, *args, **kwargs):
    if dst != path:  # orbax's own renames
      return real_rename(src, dst, *args, **kwargs)
    if winner:  # another process completed the entry just before this rename
      os.makedirs(path)
      (parent / 'key' / 'info.json').write_text(winner[0])
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(os, 'rename', rename)
  with pytest.raises(OSError, match='No space left'):
    classifier_lib.save_classifier(classifier, path)
  assert os.listdir(parent) == []
  winner.append('{"key": "the winner"}')
  classifier_lib.save_classifier(classifier, path)
  assert os.listdir(parent) == ['key']
  assert (parent / 'key' / 'info.json').read_text() == winner[0]
  monkeypatch.undo()

  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(classifier_lib.json, 'dump', interrupted)
  with pytest.raises(KeyboardInterrupt):
    classifier_lib.save_classifier(classifier, str(parent / 'other'))
  assert os.listdir(parent) == ['key']


def test_an_unwritable_cache_costs_a_warning_naming_where_it_is_set(classifier, dataset,
                                                                   tmp_path, monkeypatch, caplog):
  """The classifier is still returned; the warning names the setting that chose the directory:
  --cache_dir when given, else DESIGNGAN_CACHE."""
  not_a_directory = tmp_path / 'file'
  not_a_directory.write_text('')
  monkeypatch.setattr(classifier_lib, 'train_classifier', lambda _: classifier)
  monkeypatch.setenv('DESIGNGAN_CACHE', str(not_a_directory))
  with caplog.at_level(logging.WARNING):
    assert classifier_lib.load_or_train_classifier(dataset, str(not_a_directory)) is classifier
    assert classifier_lib.load_or_train_classifier(dataset) is classifier
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 2, warnings
  for warning, setting in zip(warnings, ('--cache_dir', 'DESIGNGAN_CACHE')):
    assert warning.startswith('warning: cannot cache the evaluation classifier in '
                              f'{not_a_directory}/classifiers/'), warning
    assert warning.endswith(f'give a writable {setting} to reuse it'), warning
