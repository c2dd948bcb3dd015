"""Shared fixtures: small generated datasets, built once per test session; one persistent XLA
compilation cache shared by every test and worker of the session."""

import os
import shutil
import signal
import sys
import tempfile
import threading

import jax
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gan import classifier as classifier_lib  # pylint: disable=wrong-import-position
from gan import data  # pylint: disable=wrong-import-position
from gan import designs  # pylint: disable=wrong-import-position
from tests import helpers  # pylint: disable=wrong-import-position


_JAX_CACHE = 'designgan_jax_cache'  # the key of the cache directory in a worker's workerinput
# JAX writes a cache entry in place (no lock, no rename): a process that reads it while another
# writes it warns with this and compiles instead. Not a failure, so not on a test's stderr.
_CACHE_READ_RACE = 'Error reading persistent compilation cache entry'


def pytest_configure(config):
  """Most of a tiny run's time is compilation, and many tests (and the CLIs they start) compile
  the same programs: they share one persistent compilation cache, every executable kept, made by
  the controlling process and removed when the session ends. Through the environment, so the
  subprocesses inherit it; a test that counts compilations counts cache hits too
  (`helpers.compilations`). What it changes is restored at the end (pytest.main in a notebook)."""
  if hasattr(config, 'workerinput'):  # a pytest-xdist worker: the controller's directory
    cache = config.workerinput[_JAX_CACHE]
  else:
    cache = config.designgan_jax_cache = tempfile.mkdtemp(prefix='designgan-jax-cache-')
  config.designgan_restore = []
  warnings = os.environ.get('PYTHONWARNINGS')
  for name, value in (('jax_compilation_cache_dir', cache),
                      ('jax_persistent_cache_min_compile_time_secs', 0.0),
                      ('jax_persistent_cache_min_entry_size_bytes', 0),
                      ('PYTHONWARNINGS', ','.join(filter(None, (
                          warnings, f'ignore:{_CACHE_READ_RACE}:UserWarning'))))):
    config.designgan_restore.append((name, os.environ.get(name.upper()),
                                     getattr(jax.config, name, None)))
    os.environ[name.upper()] = str(value)  # for the subprocesses
    if name.startswith('jax_'):
      jax.config.update(name, value)
  config.addinivalue_line('filterwarnings', f'ignore:{_CACHE_READ_RACE}:UserWarning')
  # A suite started in the background by a script (`make test &`) inherits SIGINT ignored, as do
  # the tools its tests start: the tests of Ctrl-C would then fail. They set up an ignored SIGINT
  # themselves where they test it. Only the main thread may set a handler (pytest.main may run in
  # another), and one that is not ignored is left alone.
  config.designgan_sigint_ignored = (signal.getsignal(signal.SIGINT) is signal.SIG_IGN
                                     and threading.current_thread() is threading.main_thread())
  if config.designgan_sigint_ignored:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
  """pytest-xdist: every worker uses the controller's cache."""
  node.workerinput[_JAX_CACHE] = node.config.designgan_jax_cache


def pytest_unconfigure(config):
  for name, environment, value in config.designgan_restore:
    if environment is None:
      os.environ.pop(name.upper(), None)
    else:
      os.environ[name.upper()] = environment
    if name.startswith('jax_'):
      jax.config.update(name, value)
  if config.designgan_sigint_ignored:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
  if not hasattr(config, 'workerinput'):
    shutil.rmtree(config.designgan_jax_cache, ignore_errors=True)


@pytest.fixture(scope='session', autouse=True)
def private_cache(tmp_path_factory):
  """Tests never read or write the user's cache (default dataset, evaluation classifiers)."""
  with helpers.environment_variable('DESIGNGAN_CACHE', str(tmp_path_factory.mktemp('cache'))):
    yield


@pytest.fixture(autouse=True)
def sigint_handler_restored():
  """A test that runs a tool's code in-process may leave SIGINT ignored (interrupts.finished):
  every later test of the worker, and every subprocess it starts, would then ignore Ctrl-C."""
  previous = signal.getsignal(signal.SIGINT)
  yield
  if signal.getsignal(signal.SIGINT) is not previous:
    signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope='module')
def fast_compilation():
  """Cheaper XLA compilation for a module whose tests check behaviour, not speed (most of a tiny
  run's time is compilation); restored afterwards (`helpers.fast_compilation`). Use with
  `pytest.mark.usefixtures`."""
  with helpers.fast_compilation():
    yield


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
