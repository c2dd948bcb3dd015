"""gan.run_lock: one training process per run directory; stale locks of this host are taken over,
the others refused with how to remove them."""

import contextlib
import errno
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from gan import paths
from gan import run_lock
from tests.helpers import finished_pid


def _write_lock(directory, **holder) -> str:
  path = os.path.join(directory, run_lock.LOCK_NAME)
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(holder, f)
  return path


def test_a_held_directory_is_refused_and_freed_on_exit(tmp_path):
  with run_lock.RunLock(str(tmp_path)) as lock:
    with open(lock.path, encoding='utf-8') as f:
      holder = json.load(f)
    assert holder['pid'] == os.getpid() and holder['host'] == socket.gethostname()
    with pytest.raises(paths.OutputPathError) as e:
      run_lock.RunLock(str(tmp_path)).acquire()
    message = str(e.value)
    assert f'training process {os.getpid()} on {socket.gethostname()}' in message
    # Where else to write, for each tool that takes the lock (gan.compare has no --config flags).
    assert '--config.log_path' in message and 'gan.compare: another --out' in message
    assert lock.path in message
  assert os.listdir(tmp_path) == []


def test_the_lock_is_freed_after_an_error(tmp_path):
  with pytest.raises(RuntimeError):
    with run_lock.RunLock(str(tmp_path)):
      raise RuntimeError('training failed')
  assert os.listdir(tmp_path) == []
  run_lock.RunLock(str(tmp_path)).acquire()  # free again


def test_a_stale_lock_of_this_host_is_taken_over(tmp_path):
  """A run killed with SIGKILL leaves its lock; its process id no longer exists."""
  path = _write_lock(str(tmp_path), pid=finished_pid(), host=socket.gethostname(),
                     started='2026-11-27 00:00:00')
  with run_lock.RunLock(str(tmp_path)):
    with open(path, encoding='utf-8') as f:
      assert json.load(f)['pid'] == os.getpid()
  assert not os.path.exists(path)


@pytest.mark.parametrize('pid', [0, -1, 2 ** 70])
def test_a_lock_naming_no_possible_process_id_is_taken_over(tmp_path, pid):
  """os.kill(0 or -1, 0) signals a process group and succeeded: such a lock (a damaged or
  hand-edited one) was held by a live process for good."""
  path = _write_lock(str(tmp_path), pid=pid, host=socket.gethostname(), started='x')
  with run_lock.RunLock(str(tmp_path)):
    with open(path, encoding='utf-8') as f:
      assert json.load(f)['pid'] == os.getpid()


def test_a_live_process_lock_is_refused(tmp_path):
  with subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) as other:
    try:
      path = _write_lock(str(tmp_path), pid=other.pid, host=socket.gethostname(), started='now')
      with pytest.raises(paths.OutputPathError, match=f'training process {other.pid} on '):
        run_lock.RunLock(str(tmp_path)).acquire()
      assert os.path.exists(path)  # not ours to remove
    finally:
      other.kill()


@pytest.mark.parametrize('content', [
    json.dumps(dict(pid=1, host='another-host', started='x')),  # cannot be checked from here
    '',  # being written by a process that has just created it
    'not json'])
def test_a_lock_that_cannot_be_checked_is_refused_with_how_to_remove_it(tmp_path, content):
  path = os.path.join(str(tmp_path), run_lock.LOCK_NAME)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(content)
  with pytest.raises(paths.OutputPathError, match=f'delete {path}$'):
    run_lock.RunLock(str(tmp_path)).acquire()
  with open(path, encoding='utf-8') as f:
    assert f.read() == content


def test_an_empty_lock_left_by_a_killed_process_is_taken_over(tmp_path):
  """A process killed between creating the lock and writing its record left it empty, and every
  later run was refused until it was deleted by hand. Only an old one: a fresh empty lock is being
  written (the test above)."""
  path = os.path.join(str(tmp_path), run_lock.LOCK_NAME)
  open(path, 'w', encoding='utf-8').close()
  long_ago = time.time() - 60
  os.utime(path, (long_ago, long_ago))
  warnings = []
  with run_lock.RunLock(str(tmp_path), on_stale=warnings.append):
    assert run_lock._holder(path)['pid'] == os.getpid()
  assert warnings == [f'removing the empty lock {path}, left by a process killed as it took it']
  assert not os.path.exists(path)


_TAKE_OVER = """
import sys, time
from gan import paths, run_lock
read = run_lock._holder
def slow_holder(path):  # a process slowed down between reading a stale lock and removing it
  holder = read(path)
  time.sleep(float(sys.argv[3]))
  return holder
run_lock._holder = slow_holder
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # both start together
try:
  run_lock.RunLock(sys.argv[1]).acquire()
  print('held', flush=True)
  time.sleep(1.5)  # still training while the other tries
except paths.OutputPathError:
  print('refused', flush=True)
"""


def test_two_processes_that_find_one_stale_lock_do_not_both_take_it_over(tmp_path):
  """Both read the stale lock; without a guard both would remove it, the second (slower) removing
  the lock the first had just created in its place, and both would train."""
  _write_lock(str(tmp_path), pid=finished_pid(), host=socket.gethostname(), started='x')
  start = time.time() + 3
  env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  procs = [subprocess.Popen([sys.executable, '-c', _TAKE_OVER, str(tmp_path), str(start), pause],
                            stdout=subprocess.PIPE, text=True, env=env) for pause in ('0.3', '0.8')]
  results = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
  assert results == ['held', 'refused']


def _start_ticks(pid: int):
  """Field 22 (starttime) of /proc/<pid>/stat; None without /proc."""
  try:
    with open(f'/proc/{pid}/stat', 'rb') as f:
      return int(f.read().rsplit(b')', 1)[1].split()[19])
  except OSError:
    return None


def test_a_lock_whose_process_id_was_reused_is_taken_over(tmp_path):
  """A trainer killed with SIGKILL in a container that restarts: the new trainer often has the old
  one's process id (here this process's own), or another process has it now. The lock records
  when its process started, which tells them apart."""
  started = _start_ticks(os.getpid())
  if started is None:  # no /proc: the process id alone decides, and this process is alive
    _write_lock(str(tmp_path), pid=os.getpid(), host=socket.gethostname(), started='x',
                pid_start=12345)
    with pytest.raises(paths.OutputPathError):
      run_lock.RunLock(str(tmp_path)).acquire()
    return
  path = _write_lock(str(tmp_path), pid=os.getpid(), host=socket.gethostname(), started='x',
                     pid_start=started - 100)
  with run_lock.RunLock(str(tmp_path)):  # before: refused, naming this process
    with open(path, encoding='utf-8') as f:
      assert json.load(f)['pid_start'] == started
    with pytest.raises(paths.OutputPathError):  # held by this very process now
      run_lock.RunLock(str(tmp_path)).acquire()
  with subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']) as other:
    try:
      _write_lock(str(tmp_path), pid=other.pid, host=socket.gethostname(), started='x',
                  pid_start=_start_ticks(other.pid) - 100)
      run_lock.RunLock(str(tmp_path)).acquire()
      _write_lock(str(tmp_path), pid=other.pid, host=socket.gethostname(), started='x',
                  pid_start=_start_ticks(other.pid))
      with pytest.raises(paths.OutputPathError, match=f'training process {other.pid} on '):
        run_lock.RunLock(str(tmp_path)).acquire()
    finally:
      other.kill()


def test_a_lock_that_cannot_be_written_is_not_left_behind(tmp_path, monkeypatch):
  """A full disk when the lock is written: an error, and no empty lock that would refuse every
  later run as held by 'another training process'."""
  def no_space(*_):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
  monkeypatch.setattr(run_lock.json, 'dump', no_space)
  with pytest.raises(paths.OutputPathError, match='cannot write the run lock .*No space left'):
    run_lock.RunLock(str(tmp_path)).acquire()
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('content', [
    json.dumps(dict(pid='12345', host=socket.gethostname(), started='x')),
    json.dumps([12345])], ids=['pid_not_an_integer', 'not_an_object'])
def test_a_damaged_lock_record_is_refused_with_how_to_remove_it(tmp_path, content):
  """A record whose pid is no integer, or that is no JSON object (hand-edited, damaged), cannot be
  checked: refused naming the lock to delete, not a TypeError or AttributeError from judging it."""
  path = os.path.join(str(tmp_path), run_lock.LOCK_NAME)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(content)
  with pytest.raises(paths.OutputPathError, match=f'another training process .*delete {path}$'):
    run_lock.RunLock(str(tmp_path)).acquire()
  assert os.path.exists(path)


def test_an_old_lock_that_cannot_be_read_is_not_taken_over(tmp_path):
  """Only an empty lock is taken over once old (a process killed between creating and writing
  it): an unreadable one with content is refused however old, and left where it is."""
  path = os.path.join(str(tmp_path), run_lock.LOCK_NAME)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('not json')
  long_ago = time.time() - 60
  os.utime(path, (long_ago, long_ago))
  with pytest.raises(paths.OutputPathError, match=f'delete {path}$'):
    run_lock.RunLock(str(tmp_path)).acquire()
  with open(path, encoding='utf-8') as f:
    assert f.read() == 'not json'


def test_a_lock_of_another_host_is_refused_even_if_its_process_id_is_free_here(tmp_path):
  """A run on another machine (a shared filesystem) holds the lock: its process id says nothing
  about this host's processes, so a free id here must not make the lock stale."""
  path = _write_lock(str(tmp_path), pid=finished_pid(), host=socket.gethostname() + '-other',
                     started='x')
  with pytest.raises(paths.OutputPathError, match=f'delete {path}$'):
    run_lock.RunLock(str(tmp_path)).acquire()
  assert os.path.exists(path)


def test_a_lock_released_while_judged_is_taken(tmp_path, monkeypatch):
  """The holder ends between this run's failed create and its look at the lock: the lock is gone,
  so the run takes it rather than being refused as held by 'another training process'."""
  other = run_lock.RunLock(str(tmp_path))
  other.acquire()
  judging = run_lock._judging

  @contextlib.contextmanager
  def released_meanwhile(directory):
    other.release()
    with judging(directory):
      yield
  monkeypatch.setattr(run_lock, '_judging', released_meanwhile)
  with run_lock.RunLock(str(tmp_path)) as lock:
    assert run_lock._holder(lock.path)['pid'] == os.getpid()


def test_releasing_a_lock_not_taken_leaves_the_holders_lock(tmp_path):
  """release() of a RunLock whose acquire was refused (or released twice) removes nothing: the
  lock is the other run's."""
  with run_lock.RunLock(str(tmp_path)) as held:
    refused = run_lock.RunLock(str(tmp_path))
    with pytest.raises(paths.OutputPathError):
      refused.acquire()
    refused.release()
    assert os.path.exists(held.path)
  held.release()  # a second release: nothing left to remove, no error
  assert not os.path.exists(held.path)


def test_a_ctrl_c_while_the_lock_is_written_stays_a_ctrl_c(tmp_path, monkeypatch):
  """Ctrl-C while the record is written: the empty lock is removed and the KeyboardInterrupt
  propagates (it is no 'cannot write the run lock' error)."""
  def interrupted(*_):
    raise KeyboardInterrupt
  monkeypatch.setattr(run_lock.json, 'dump', interrupted)
  with pytest.raises(KeyboardInterrupt):
    run_lock.RunLock(str(tmp_path)).acquire()
  assert os.listdir(tmp_path) == []
