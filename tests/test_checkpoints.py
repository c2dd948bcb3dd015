"""gan.checkpoints helpers that the trainer and CLI tests do not reach directly."""

import collections
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import types

import jax
import jax.numpy as jnp
import pytest

from gan import checkpoints

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_only_the_abandoned_reads_noise_is_dropped(monkeypatch):
  """The CLIs drop what orbax's abandoned reads of a damaged checkpoint print at random (late
  'Event loop is closed' callback errors, asyncio's 'Task exception was never retrieved') and pass
  on everything else."""
  reached = []
  monkeypatch.setattr(sys, 'unraisablehook', reached.append)
  asyncio_log = logging.getLogger('asyncio')
  monkeypatch.setattr(asyncio_log, 'filters', [])
  checkpoints.silence_abandoned_checkpoint_reads()
  installed = sys.unraisablehook
  checkpoints.silence_abandoned_checkpoint_reads()  # e.g. gan.evaluate.main called again
  assert sys.unraisablehook is installed and len(asyncio_log.filters) == 1
  late = types.SimpleNamespace(exc_value=RuntimeError('Event loop is closed'))
  other_runtime = types.SimpleNamespace(exc_value=RuntimeError('something else'))
  other_type = types.SimpleNamespace(exc_value=ValueError('Event loop is closed'))
  for unraisable in (late, other_runtime, other_type):
    sys.unraisablehook(unraisable)
  assert reached == [other_runtime, other_type]

  def record(msg):
    return asyncio_log.makeRecord('asyncio', logging.ERROR, __file__, 1, msg, (), None)

  assert not asyncio_log.filter(record('Task exception was never retrieved'))
  assert asyncio_log.filter(record('Executing <Task> took 2.0 seconds'))


def _tensorstore_read_error():
  """What orbax raises for an array whose data file is cut short: TensorStore's wrapper, which
  names only the array index and dumps its spec, caused by the read error that says what failed."""
  cause = ValueError('OUT_OF_RANGE: Error reading "gen_params.out.bias.value/0" in OCDBT database '
                     'at local file "/runs/r/checkpoints/6/state/": Requested byte range [0, 9) is '
                     'not valid for value of size 4')
  error = Exception('Encountered error while reading array index: (slice(0, 32, 1),). See full '
                    'TensorStore details: <bound method pybind11_detail_function_record_v1_system_'
                    'libstdcpp_gxx_abi_1xxx_use_cxx11_abi_1.spec of TensorStore({\n'
                    "  'base': {'driver': 'zarr'},\n})>.")
  error.__cause__ = cause
  return error


def test_a_tensorstore_read_error_is_told_by_its_cause():
  text = checkpoints.one_line(_tensorstore_read_error())
  assert text == ('OUT_OF_RANGE: Error reading "gen_params.out.bias.value/0": Requested byte range '
                  '[0, 9) is not valid for value of size 4'), text


class _Manager:
  """The part of a CheckpointManager that restore_state uses, with a damaged latest step."""

  directory = '/runs/r/checkpoints'

  def __init__(self, steps):
    self.steps = steps

  def all_steps(self):
    return self.steps

  def restore(self, *args, **kwargs):
    raise _tensorstore_read_error()


@pytest.mark.parametrize('steps, hint, expected', [
    ([2, 4, 6], {}, '; the earlier checkpoints 2, 4 are kept (infer.py and python -m '
                    'gan.evaluate read one with --step=N, e.g. --step=4)'),
    ([4, 6], dict(earlier_hint='remove 6 to resume from {step}'),
     '; the earlier checkpoint 4 is kept (remove 6 to resume from 4)'),
    ([6], {}, ''),
    ([1, 2, 3, 4, 5, 6, 7], {}, '; the earlier checkpoints 1, 2, 3, 4, 5 are kept (infer.py and '
                                'python -m gan.evaluate read one with --step=N, e.g. --step=5)'),
    # six are listed whole: '0, ..., 1, 2, 3, 4, 5' hid nothing
    ([0, 1, 2, 3, 4, 5, 6], {}, '; the earlier checkpoints 0, 1, 2, 3, 4, 5 are kept (infer.py '
                                'and python -m gan.evaluate read one with --step=N, e.g. '
                                '--step=5)'),
    ([5, 6], dict(earlier_hint='remove /r{x}/6 to resume from {step}'),
     '; the earlier checkpoint 5 is kept (remove /r{x}/6 to resume from 5)'),  # braces in a path
])
def test_a_damaged_checkpoint_names_the_earlier_ones(monkeypatch, steps, hint, expected):
  """One line a user can act on: which checkpoint, that it is damaged, the cause's first line
  without TensorStore's spec dump, and the earlier checkpoints kept (with the CLIs' --step)."""
  state = collections.namedtuple('State', 'params')(jnp.zeros((3,)))
  monkeypatch.setattr(checkpoints, '_stored_tree',
                      lambda *_: {'params': jax.ShapeDtypeStruct((3,), jnp.float32)})
  with pytest.raises(checkpoints.CheckpointError) as info:
    checkpoints.restore_state(_Manager(steps), 6, state, **hint)
  message = str(info.value)
  assert message == ('checkpoint 6 in /runs/r/checkpoints is damaged, its arrays cannot be read '
                     '(OUT_OF_RANGE: Error reading "gen_params.out.bias.value/0": Requested byte '
                     f'range [0, 9) is not valid for value of size 4){expected}'), message


_State = collections.namedtuple('_State', 'params gen_params gen_ema')


def _state(value: float, fields=_State):
  """A small TrainState-like tuple whose every array holds `value` (gen_ema its negative)."""
  arrays = {'params': {'w': jnp.full((3,), value)}, 'gen_params': {'g': jnp.full((2,), value)},
            'gen_ema': {'g': jnp.full((2,), -value)}}
  return fields(**{k: arrays[k] for k in fields._fields})


def test_a_manager_keeps_the_last_checkpoints_and_reads_the_epoch_asked_for(tmp_path):
  mngr = checkpoints.manager(str(tmp_path / 'checkpoints'), keep=2)
  try:
    with pytest.raises(checkpoints.CheckpointError, match='^no checkpoint in '):
      checkpoints.read_meta(mngr)
    for epoch in (1, 2, 3):
      checkpoints.save(mngr, epoch, _state(float(epoch)), {'epoch': epoch})
    checkpoints.wait_until_finished(mngr)
    assert mngr.all_steps() == [2, 3]
    assert checkpoints.read_meta(mngr) == (3, {'epoch': 3})
    assert checkpoints.read_meta(mngr, 2) == (2, {'epoch': 2})
    restored = checkpoints.restore_state(mngr, 2, _state(0.0))
    assert jax.tree.map(float, jax.tree.map(jnp.mean, restored._asdict())) == {
        'params': {'w': 2.0}, 'gen_params': {'g': 2.0}, 'gen_ema': {'g': -2.0}}
    other = _State({'w': jnp.zeros((4,))}, {'g': jnp.zeros((2,))}, {'g': jnp.zeros((2,))})
    with pytest.raises(checkpoints.CheckpointError) as info:
      checkpoints.restore_state(mngr, 2, other)
    assert str(info.value) == (
        f'checkpoint 2 in {tmp_path / "checkpoints"} was written by a different model (3 arrays, '
        "this config expects 3; e.g. shape [((4,), 'float32')] differs); restore it with the "
        'config it was trained with'), info.value
  finally:
    checkpoints.close(mngr)


def test_a_model_with_one_more_array_of_a_shape_it_has_is_named_by_that_shape(tmp_path):
  """The arrays are compared as counted (shape, dtype) pairs: a model with an extra layer as wide
  as another one has no shape the checkpoint lacks, and the message read 'e.g. shape [] differs'."""
  mngr = checkpoints.manager(str(tmp_path / 'checkpoints'), keep=1)
  try:
    checkpoints.save(mngr, 1, _state(1.0), {'epoch': 1})
    checkpoints.wait_until_finished(mngr)
    deeper = _State({'w': jnp.zeros((3,))}, {'g': jnp.zeros((2,)), 'h': jnp.zeros((2,))},
                    {'g': jnp.zeros((2,)), 'h': jnp.zeros((2,))})
    with pytest.raises(checkpoints.CheckpointError) as info:
      checkpoints.restore_state(mngr, 1, deeper)
  finally:
    checkpoints.close(mngr)
  assert ("(3 arrays, this config expects 5; e.g. shape [((2,), 'float32')] differs)"
          in str(info.value)), info.value


@pytest.mark.parametrize('mode, kept', [('min', [2]), ('max', [1])])
def test_a_best_manager_keeps_the_best_checkpoint_by_its_mode(tmp_path, mode, kept):
  mngr = checkpoints.manager(str(tmp_path / 'best'), keep=1, best_fn=lambda m: m['fd'],
                             best_mode=mode)
  try:
    for epoch, fd in ((1, 5.0), (2, 3.0), (3, 4.0)):
      checkpoints.save(mngr, epoch, _state(float(epoch)), {'epoch': epoch}, metrics={'fd': fd})
    checkpoints.wait_until_finished(mngr)
    assert mngr.all_steps() == kept
  finally:
    checkpoints.close(mngr)


def test_a_checkpoint_older_than_a_derived_field_gets_it_rebuilt(tmp_path):
  """A run saved before gen_ema existed restores with gen_ema a copy of its generator."""
  old = collections.namedtuple('_Old', 'params gen_params')
  mngr = checkpoints.manager(str(tmp_path / 'checkpoints'), keep=1)
  try:
    checkpoints.save(mngr, 1, _state(7.0, old), {'epoch': 1})
    checkpoints.wait_until_finished(mngr)
    restored = checkpoints.restore_state(mngr, 1, _state(0.0))
  finally:
    checkpoints.close(mngr)
  assert restored.gen_ema['g'].tolist() == restored.gen_params['g'].tolist() == [7.0, 7.0]


def test_only_a_writing_manager_removes_unfinished_saves(tmp_path):
  """A killed run's unfinished save is removed by the next writing manager; a reading one (infer.py
  while training writes) leaves it, since it may be a save in progress."""
  directory = tmp_path / 'checkpoints'
  unfinished = '5.orbax-checkpoint-tmp-1700000000123'  # orbax 0.11 names them so; 0.12 reads it
  (directory / unfinished / 'state').mkdir(parents=True)
  assert [str(p.get()) for p in checkpoints.ocp.step.all_temporary_paths(str(directory))] == [
      str(directory / unfinished)]
  checkpoints.close(checkpoints.manager(str(directory), keep=2, create=False))
  assert os.listdir(directory) == [unfinished]
  checkpoints.close(checkpoints.manager(str(directory), keep=2))
  assert os.listdir(directory) == []


def test_one_line_is_the_first_line_cut_at_the_limit():
  assert checkpoints.one_line(ValueError('x' * 200)) == 'x' * 200
  assert checkpoints.one_line(ValueError('x' * 201)) == 'x' * 200 + '...'
  assert checkpoints.one_line(ValueError('abcdef'), limit=3) == 'abc...'
  assert checkpoints.one_line(ValueError('  first\nsecond')) == 'first'
  assert checkpoints.one_line(KeyError()) == 'KeyError'


def test_a_write_failure_is_told_by_the_systems_reason():
  reason = checkpoints._write_reason  # pylint: disable=protected-access
  assert reason(OSError(28, 'No space left on device', '/c/1')) == (
      'No space left on device: /c/1')
  assert reason(OSError(28, 'No space left on device')) == 'No space left on device'
  assert reason(ValueError("a/very/long/path: write failed [os_error_code='28']")) == (
      os.strerror(28))
  assert reason(ValueError('disk on fire\nmore')) == 'disk on fire'


def test_a_long_list_of_earlier_checkpoints_names_the_first_and_the_last_five():
  earlier = checkpoints._earlier_checkpoints(  # pylint: disable=protected-access
      _Manager(list(range(1, 10))), 9, '--step={step}')
  assert earlier == '; the earlier checkpoints 1, ..., 4, 5, 6, 7, 8 are kept (--step=8)', earlier


def test_only_orbax_errors_that_are_raised_again_are_dropped(monkeypatch):
  """train.py's filter drops orbax's error records of a write that the main thread raises again
  (as one CheckpointError); its warnings, other orbax errors and anyone else's records pass."""
  absl_log = logging.getLogger('absl')
  monkeypatch.setattr(absl_log, 'filters', [])
  checkpoints.silence_reraised_write_failures()
  checkpoints.silence_reraised_write_failures()
  assert len(absl_log.filters) == 1
  orbax_file = '/site-packages/orbax/checkpoint/async_checkpointer.py'

  def passes(level, pathname, msg):
    return bool(absl_log.filter(logging.LogRecord('absl', level, pathname, 1, msg, (), None)))

  assert not passes(logging.ERROR, orbax_file, 'Error in background save thread: full')
  assert not passes(logging.ERROR, orbax_file, '_SignalingThread.run() raised an exception')
  assert passes(logging.WARNING, orbax_file, 'Error in background save thread: full')
  assert passes(logging.ERROR, '/home/me/notebook.py', 'Error in background save thread: full')
  assert passes(logging.ERROR, orbax_file, 'Something else failed')


class _Saving:
  """A manager with a write in progress or not, whose wait fails as a full disk does."""

  def __init__(self, directory, saving):
    self.directory, self.saving, self.waited = str(directory), saving, False

  def is_saving_in_progress(self):
    return self.saving

  def wait_until_finished(self):
    self.waited = True
    raise OSError(28, 'No space left on device')


def test_a_failed_write_is_raised_once_no_write_is_in_progress(tmp_path):
  in_progress = _Saving(tmp_path, saving=True)
  checkpoints.raise_if_a_write_failed(in_progress)  # returns at once, no wait
  assert not in_progress.waited
  with pytest.raises(checkpoints.CheckpointError, match=r'\(No space left on device\)'):
    checkpoints.raise_if_a_write_failed(_Saving(tmp_path, saving=False))


_RESTORE_A_DAMAGED_CHECKPOINT = '''
import collections, gc, os, shutil, sys, time
import jax.numpy as jnp
from gan import checkpoints
State = collections.namedtuple('State', 'params')
directory = sys.argv[1]
mngr = checkpoints.manager(directory, keep=2)
checkpoints.save(mngr, 1, State({f'w{i}': jnp.ones((64,)) for i in range(40)}), {'epoch': 1})
mngr.wait_until_finished()
state_dir = os.path.join(directory, '1', 'state')
for name in os.listdir(state_dir):  # as a killed copy leaves it: the arrays gone
  if name != '_METADATA':
    path = os.path.join(state_dir, name)
    shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
try:
  checkpoints.restore_state(mngr, 1, State({f'w{i}': jnp.zeros((64,)) for i in range(40)}))
except checkpoints.CheckpointError as e:
  print('refused:', e)
mngr.close()
gc.collect()
time.sleep(1)  # the abandoned reads fail in the background
import logging
print('asyncio filters:', len(logging.getLogger('asyncio').filters))
print('went on')
'''


def test_a_refused_damaged_checkpoint_prints_nothing_later(tmp_path):
  """A library caller (a notebook, anything that goes on after trainer.train refused a damaged
  checkpoint) sees the one error, not the tracebacks of the reads orbax abandoned ('Event loop is
  closed', printed whenever they fail: during the restore, at garbage collection, later)."""
  result = subprocess.run([sys.executable, '-c', _RESTORE_A_DAMAGED_CHECKPOINT,
                           str(tmp_path / 'checkpoints')], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith('refused: checkpoint 1 in ') and 'damaged' in result.stdout
  assert result.stdout.endswith('went on\n'), result.stdout
  # asyncio's records are the caller's: only the CLIs drop its unretrieved-task ones.
  assert 'asyncio filters: 0\n' in result.stdout, result.stdout
  assert 'Event loop is closed' not in result.stderr and 'Traceback' not in result.stderr, (
      result.stderr)


_SAVE_WHERE_NO_STEP_DIRECTORY_CAN_BE_MADE = '''
import collections, shutil, sys
import jax.numpy as jnp
from gan import checkpoints
State = collections.namedtuple('State', 'params')
directory = sys.argv[1]
mngr = checkpoints.manager(directory, keep=2)
state = State({'w': jnp.ones((8,))})
checkpoints.save(mngr, 1, state, {'epoch': 1})
mngr.wait_until_finished()
shutil.rmtree(directory)
open(directory, 'w').close()  # a file now: no step directory can be made in it
try:
  checkpoints.save(mngr, 2, state, {'epoch': 2})
  mngr.wait_until_finished()
except Exception as e:
  print(f'refused: {type(e).__name__}: {e}')
mngr.close()
print('closed')
'''


def _run_script(script: str, directory) -> subprocess.CompletedProcess:
  """`script` in a fresh interpreter with `directory` as its argument; it must exit 0."""
  result = subprocess.run([sys.executable, '-c', script, str(directory)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 0, result.stderr
  return result


def test_a_save_whose_directory_cannot_be_made_fails_at_once_and_nothing_waits(tmp_path):
  """A checkpoints/ directory that training can no longer write (made read-only, replaced):
  orbax made the step's directory in the background, and where that failed the save's other
  writers waited five minutes for it (orbax's coordination timeout), and the process with them,
  before exiting with a page of tracebacks. Now the save says so at once, in one line."""
  directory = tmp_path / 'checkpoints'
  result = _run_script(_SAVE_WHERE_NO_STEP_DIRECTORY_CAN_BE_MADE, directory)
  # orbax 0.12 names the temporary directory 2.orbax-checkpoint-tmp; 0.11 adds a timestamp
  assert re.fullmatch(re.escape(
      f'refused: CheckpointError: cannot write a checkpoint in {directory} (Not a directory: '
      f'{directory}/2.orbax-checkpoint-tmp') + r'(-\d+)?' + re.escape(
          '); the complete checkpoints are kept, and the same command resumes from the latest '
          'once it can write there\nclosed\n'), result.stdout), result.stdout
  assert 'Traceback' not in result.stderr, result.stderr


_SAVE_THAT_FAILS_IN_THE_BACKGROUND = '''
import collections, os, resource, signal, sys
from absl import logging as absl_logging
import jax
from gan import checkpoints
absl_logging.set_verbosity(absl_logging.WARNING)  # as train.py
checkpoints.silence_reraised_write_failures()
State = collections.namedtuple('State', 'params')
mngr = checkpoints.manager(sys.argv[1], keep=2)
state = State({'w': jax.random.normal(jax.random.key(0), (1 << 20,))})  # 4 MiB, incompressible
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
try:
  checkpoints.save(mngr, 1, state, {'epoch': 1})
  checkpoints.wait_until_finished(mngr)
except checkpoints.CheckpointError as e:
  print(f'refused: {e}')
print('left:', sorted(os.listdir(sys.argv[1])))
'''


def _refused(directory) -> str:
  """What the scripts print of the CheckpointError of a write past the file-size limit."""
  return (f'refused: cannot write a checkpoint in {directory} (File too large); the complete '
          'checkpoints are kept, and the same command resumes from the latest once it can write '
          'there\n')


def test_a_write_that_fails_in_the_background_is_one_line(tmp_path):
  """A full disk fails the arrays' write in orbax's background threads, and each thread it passes
  through logged it with its traceback (four, about 320 lines, before train.py's one error line),
  while the same error, raised again at wait_until_finished, is the CheckpointError."""
  directory = tmp_path / 'checkpoints'
  result = _run_script(_SAVE_THAT_FAILS_IN_THE_BACKGROUND, directory)
  # The unfinished write's temporary directory (the 1 MiB written) is gone at once too.
  assert result.stdout == _refused(directory) + 'left: []\n', result.stdout + result.stderr
  assert result.stderr == '', result.stderr


_CLOSE_AFTER_A_WRITE_THAT_FAILS = '''
import collections, resource, signal, sys, threading
from absl import logging as absl_logging
import jax
from gan import checkpoints
absl_logging.set_verbosity(absl_logging.WARNING)  # as train.py
checkpoints.silence_reraised_write_failures()
State = collections.namedtuple('State', 'params')
state = State({'w': jax.random.normal(jax.random.key(0), (1 << 20,))})  # 4 MiB, incompressible
before = set(threading.enumerate())
mngr = checkpoints.manager(sys.argv[1], keep=2)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
checkpoints.save(mngr, 1, state, {'epoch': 1})
try:
  checkpoints.close(mngr)  # the failure is noticed here, at the manager's own wait
except checkpoints.CheckpointError as e:
  print(f'refused: {e}')
# The manager stays referenced, as a notebook keeps a failed train() call's traceback.
for thread in set(threading.enumerate()) - before:
  thread.join(timeout=5)  # a closed part's thread may still be on its way out
print('left:', sorted(t.name for t in set(threading.enumerate()) - before))
'''


def test_a_manager_whose_write_failed_is_closed_all_the_same(tmp_path):
  """orbax's CheckpointManager.close raises a failed background write from its wait, before it
  closes its checkpointer, metadata stores and deleter: a process that goes on (a notebook that
  calls trainer.train again) kept their threads. Now every part is closed, then the one
  CheckpointError is raised."""
  directory = tmp_path / 'checkpoints'
  result = _run_script(_CLOSE_AFTER_A_WRITE_THAT_FAILS, directory)
  assert result.stdout == _refused(directory) + 'left: []\n', result.stdout + result.stderr


def test_closing_a_new_manager_waits_for_its_cleanup_thread(tmp_path, caplog):
  """A writing manager removes unfinished saves of earlier runs in a thread as it opens, which
  orbax's close leaves running: a run that failed as it opened removed its new, empty checkpoints/
  under that thread, which logged a FileNotFoundError traceback, in about 1 of 6 tries (33 of 200
  in one run): 60 tries all pass without the wait with a chance of about 2 in 100,000."""
  for i in range(60):
    run = tmp_path / f'run{i}'
    checkpoints.close(checkpoints.manager(str(run / 'checkpoints'), 1))
    shutil.rmtree(run)
  time.sleep(0.2)  # what a thread still running would log by now
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
