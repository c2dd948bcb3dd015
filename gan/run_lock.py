"""One training process per run directory.

Two `train.py` processes on one log_path (a run started twice, a notebook beside the command
line) would both write its checkpoints, best/ model and event files, and the second would resume
from, and prune, checkpoints the first is still writing. A run therefore claims its directory
with `<log_path>/.designgan.lock`, created exclusively (O_EXCL) and holding the owner's process
id, host and start time, and removes it when it ends, also after an error or Ctrl-C.

A lock whose process is gone (killed with SIGKILL, a machine that went down) is stale: on the same
host that is certain when no process has its id, or (Linux) the one that has it now started at
another time than the lock records, and the lock is taken over with a warning (one process at a time
judges and removes it, under an flock of the directory); so is a lock left empty for more than
10 s (a process killed between creating it and writing its record). A lock of another host cannot
be checked, and the error says how to remove it by hand.
"""

import contextlib
import fcntl
import json
import os
import socket
import time
from typing import Callable, Optional

from absl import logging

from gan.paths import OutputPathError, process_alive

LOCK_NAME = '.designgan.lock'


def _start_ticks(pid: int):
  """When process `pid` started, in clock ticks after boot (Linux's /proc/<pid>/stat); None
  where there is no such process or no /proc."""
  try:
    with open(f'/proc/{pid}/stat', 'rb') as f:
      stat = f.read()
    return int(stat[stat.rindex(b')') + 2:].split()[19])  # field 22, starttime
  except (OSError, ValueError, IndexError):
    return None


@contextlib.contextmanager
def _judging(directory: str):
  """One process at a time judges and removes a stale lock in `directory` (an flock of the
  directory, released when its descriptor closes, also if the process dies). Without it, two
  processes that both read the same stale lock would both remove it, the second removing the
  lock the first had just created in its place, and both would train. A filesystem that cannot
  flock (some network ones) goes unguarded."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    yield
    return
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
      pass
    yield
  finally:
    os.close(fd)


def _holder(path: str):
  """The lock's owner record, or None when it cannot be read (or is being written)."""
  try:
    with open(path, encoding='utf-8') as f:
      holder = json.load(f)
    return holder if isinstance(holder, dict) and isinstance(holder.get('pid'), int) else None
  except (OSError, ValueError):
    return None


# A process writes its record within microseconds of creating the lock: an empty lock this old
# is one whose process was killed in between (SIGKILL), and would otherwise refuse every run.
_EMPTY_LOCK_GRACE_S = 10.0


def _abandoned_empty(path: str) -> bool:
  try:
    stat = os.stat(path)
  except OSError:
    return False
  return stat.st_size == 0 and time.time() - stat.st_mtime > _EMPTY_LOCK_GRACE_S


class RunLock:
  """Context manager: holds `<directory>/.designgan.lock` from enter to exit. Taking over a stale
  lock is reported to `on_stale` (one line; default: absl's warning), e.g. for the run's log."""

  def __init__(self, directory: str, on_stale: Optional[Callable[[str], None]] = None):
    self.path = os.path.join(os.path.abspath(directory), LOCK_NAME)
    self._on_stale = on_stale or (lambda message: logging.warning('warning: %s', message))
    self._held = False

  def __enter__(self) -> 'RunLock':
    self.acquire()
    return self

  def __exit__(self, *exc) -> None:
    self.release()

  def acquire(self) -> None:
    """Claims the directory; an OutputPathError when a live process (or one that cannot be
    checked) holds it."""
    for _ in range(3):  # tried again after a stale lock is removed, or the lock released
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        with _judging(os.path.dirname(self.path)):
          if not os.path.lexists(self.path):  # released, or a stale one removed, meanwhile
            continue
          holder = _holder(self.path)
          if holder is None and _abandoned_empty(self.path):  # a record read is never empty
            self._on_stale(f'removing the empty lock {self.path}, left by a process killed as it '
                           'took it')
          elif not self._stale(holder):
            raise self._held_error(holder) from None
          else:
            self._on_stale(f'removing the stale lock {self.path} of process {holder["pid"]} on '
                           f'{holder.get("host")} (started {holder.get("started")}), which is '
                           'no longer running')
          try:
            os.unlink(self.path)
          except FileNotFoundError:
            pass
        continue
      except OSError as e:
        raise OutputPathError(f'cannot create the run lock {self.path}: {e.strerror}') from None
      try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
          json.dump(dict(pid=os.getpid(), host=socket.gethostname(),
                         started=time.strftime('%Y-%m-%d %H:%M:%S'),
                         pid_start=_start_ticks(os.getpid())), f)
      except BaseException as e:  # a full disk, Ctrl-C: an empty lock would refuse every run
        os.unlink(self.path)
        if isinstance(e, OSError):
          raise OutputPathError(f'cannot write the run lock {self.path}: {e.strerror}') from None
        raise
      self._held = True
      return
    raise self._held_error(_holder(self.path))  # others kept taking it in between

  def release(self) -> None:
    if self._held:
      self._held = False
      try:
        os.unlink(self.path)
      except FileNotFoundError:
        pass

  @staticmethod
  def _stale(holder) -> bool:
    """Whether the lock's process is gone. Its id alone can mislead once reused: a container
    restarted after a SIGKILL often gives the new trainer the old one's id (its own, which was
    never taken over), or another process may have it; where /proc says when that process
    started, a process that started at another time is not the lock's."""
    if holder is None or holder.get('host') != socket.gethostname():
      return False
    pid, recorded = holder['pid'], holder.get('pid_start')
    if isinstance(recorded, int):
      started = _start_ticks(pid)
      if started is not None:
        return started != recorded
    return pid != os.getpid() and not process_alive(pid)

  def _held_error(self, holder) -> OutputPathError:
    directory = os.path.dirname(self.path)
    if holder is None:
      who = 'another training process'
    else:
      who = (f'training process {holder["pid"]} on {holder.get("host")} (started '
             f'{holder.get("started")})')
    return OutputPathError(
        f'{who} is writing to {directory}: wait for it to finish, stop it, or write elsewhere '
        '(train.py: another --config.log_path; gan.compare: another --out). If no training runs '
        f'there any more (a machine that went down), delete {self.path}')
