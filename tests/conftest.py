"""Shared fixtures: small generated datasets, built once per test session."""

import os
import sys

import jax
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gan import classifier as classifier_lib  # pylint: disable=wrong-import-position
from gan import data  # pylint: disable=wrong-import-position
from gan import designs  # pylint: disable=wrong-import-position
from tests import helpers  # pylint: disable=wrong-import-position


@pytest.fixture(scope='session', autouse=True)
def private_cache(tmp_path_factory):
  """Tests never read or write the user's cache (default dataset, evaluation classifiers)."""
  with helpers.environment_variable('DESIGNGAN_CACHE', str(tmp_path_factory.mktemp('cache'))):
    yield


@pytest.fixture(scope='module')
def fast_compilation():
  """Cheaper XLA compilation for a module whose tests check behaviour, not speed (most of a tiny
  run's time is compilation); restored afterwards. Use with `pytest.mark.usefixtures`."""
  previous = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations', previous)


@pytest.fixture(scope='session')
def default_designs():
  """The default-size dataset in memory (10,000 designs, seed 0): about 2 s."""
  return designs.generate(designs.DEFAULT_NUM_DESIGNS, designs.DEFAULT_SEED)


@pytest.fixture(scope='session')
def small_design_dir(tmp_path_factory):
  """240 designs (two of every label pair) written as BMPs by the CLI."""
  out = tmp_path_factory.mktemp('designs') / 'data'
  assert designs.main(['--out', str(out), '--num', '240', '--seed', '1']) == 0
  return str(out)


@pytest.fixture(scope='session')
def dataset(tmp_path_factory):
  """For the evaluation tests: 2,400 synthetic designs (20 of every class pair), 10% held out."""
  out = tmp_path_factory.mktemp('eval_designs') / 'data'
  assert designs.main(['--out', str(out), '--num', '2400', '--seed', '2']) == 0
  return data.load_dataset(str(out))


@pytest.fixture(scope='session')
def classifier(dataset, tmp_path_factory):
  """The evaluation classifier of `dataset`, trained once (about 3 s) into a private cache."""
  return classifier_lib.load_or_train_classifier(dataset,
                                                str(tmp_path_factory.mktemp('clf_cache')))
