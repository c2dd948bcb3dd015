"""Output locations, checked before the work that fills them starts.

A training run, a comparison or a report must not fail after minutes of work because the place
it writes to is a file, sits under a file, or is read-only: the entry points check their output
paths first and say what is wrong.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile

from gan.errors import DesignGanError


class OutputPathError(DesignGanError):
  """An output directory or file cannot be written."""


def _nearest_existing(path: str) -> str:
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def check_output_dir(path: str, what: str) -> str:
  """Absolute `path` if it is a writable directory or can be created as one; else an
  OutputPathError naming `what` (e.g. 'log_path' or '--out')."""
  if not path:  # os.path.abspath('') is the working directory: outputs would land there
    raise OutputPathError(f'{what} is empty; give a directory (created if missing)')
  path = os.path.abspath(path)
  existing = _nearest_existing(path)
  _check_no_dangling_link(path, existing, what)
  if not os.path.isdir(existing):
    where = 'is a file' if existing == path else f'cannot be created: {existing} is a file'
    raise OutputPathError(f'{what} {path} {where}; give a directory (created if missing)')
  if not os.access(existing, os.W_OK | os.X_OK):
    where = 'is' if existing == path else f'cannot be created: {existing} is'
    raise OutputPathError(f'{what} {path} {where} not writable; give a directory you can write')
  _check_name_lengths(path, existing, what)
  check_outside_checkpoints(path, what)
  return path


# orbax writes this file into every checkpoint step directory (checkpoints/<step>/, best/<step>/).
CHECKPOINT_MARKER = '_CHECKPOINT_METADATA'


def check_outside_checkpoints(path: str, what: str, checkpoint_dirs=()) -> None:
  """An output directory that is, or lies inside, a directory of checkpoints (a run's checkpoints/
  or best/, made or not yet, one of `checkpoint_dirs`, or one step directory) is refused: orbax
  takes every numbered directory there for a checkpoint step, so outputs written there (a directory
  named 7) made the run unreadable to train.py, infer.py and gan.evaluate ('checkpoint 7 ... is
  unreadable'), and a step directory with outputs in it is deleted with them once it is rotated
  out."""
  path = os.path.abspath(path)
  managed = {os.path.abspath(d) for d in checkpoint_dirs}
  directory = path
  while True:
    if (directory in managed or holds_checkpoints(directory)
        or os.path.isfile(os.path.join(directory, CHECKPOINT_MARKER))
        or _of_a_run(directory)):
      where = 'is' if directory == path else f'is inside {directory},'
      raise OutputPathError(f'{what} {path} {where} a directory of checkpoints (a run\'s '
                            'checkpoints/ or best/, where every numbered directory is read as a '
                            'checkpoint, or one checkpoint step); give a directory outside it')
    parent = os.path.dirname(directory)
    if parent == directory:
      return
    directory = parent


def _of_a_run(directory: str) -> bool:
  """Whether `directory` is the checkpoints/ or best/ of a run with checkpoints, made or not yet
  (a run trained without evaluation makes its best/ at its first evaluation)."""
  run, name = os.path.split(directory)
  return name in ('checkpoints', 'best') and holds_checkpoints(os.path.join(run, 'checkpoints'))


def is_step_name(name: str) -> bool:
  """Whether `name` is a checkpoint step directory's: a number (orbax names each step's by it)."""
  return re.fullmatch(r'\d+', name) is not None


def step_numbers(directory: str, names) -> list[int]:
  """The steps of the checkpoint step directories among `names` (entries of `directory`), in
  order: numbered directories only (a stray file named 5 is no step)."""
  return sorted(int(n) for n in names
                if is_step_name(n) and os.path.isdir(os.path.join(directory, n)))


def holds_checkpoints(directory: str) -> bool:
  """Whether `directory` holds a checkpoint step directory (<number>/_CHECKPOINT_METADATA)."""
  try:
    names = os.listdir(directory)
  except OSError:  # missing, a file or unreadable
    return False
  return any(is_step_name(n) and os.path.isfile(os.path.join(directory, n, CHECKPOINT_MARKER))
             for n in names)


def _check_no_dangling_link(path: str, existing: str, what: str) -> None:
  """A symbolic link to nothing on the way from `existing` to `path` is refused: os.path.exists
  calls it missing, so it passed as a directory to create, and os.makedirs then failed on it
  ('File exists') once the work was done (infer.py) or the data loaded (train.py)."""
  link = path
  while link != existing:
    if os.path.islink(link):
      raise OutputPathError(f'{what} {path} cannot be created: {link} is a symbolic link to '
                            f'{os.readlink(link)}, which does not exist; create its target or '
                            'give another directory')
    link = os.path.dirname(link)


def utf8_name(path: str) -> bool:
  """Whether the path's bytes (a non-UTF-8 byte arrives as a lone surrogate) are UTF-8."""
  try:
    os.fsencode(path).decode('utf-8')
  except UnicodeDecodeError:
    return False
  return True


def make_output_dir(path: str, what: str) -> str:
  """Creates the directory `path` (with its parents) if missing and returns it, absolute; an
  OutputPathError naming `what` where that fails. `check_output_dir` cannot tell every case in
  advance: a pseudo-filesystem such as /proc or /sys refuses new directories that os.access
  calls writable. A file in the way is an error too (FileExistsError)."""
  path = os.path.abspath(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise cannot_create(path, e, what) from None
  return path


def missing_dirs(path: str) -> list[str]:
  """The directories that creating `path` makes: it and its missing parents, deepest first."""
  path, missing = os.path.abspath(path), []
  while not os.path.exists(path):
    missing.append(path)
    path = os.path.dirname(path)
  return missing


def remove_if_empty(dirs) -> None:
  """Removes those of `dirs` (taken deepest first) that are empty: the directories a failed run
  made and never filled. Anything in one, or a directory gone already, is left alone."""
  for directory in dirs:
    try:
      os.rmdir(directory)
    except OSError:
      pass


def cannot_create(path: str, error: OSError, what: str = '') -> OutputPathError:
  """The error for an output directory `path` (named as `what`) the system refused to create."""
  name = f'{what} {path}' if what else path
  return OutputPathError(f'{name} cannot be created ({error.strerror}); give a directory you can '
                         'write')


def cannot_write(path: str, error: OSError, what: str) -> OutputPathError:
  """The error for an output file `path` (named as `what`) that could not be written; an
  OSError without an errno (Pillow raises some) gives its message."""
  return OutputPathError(f'{what} {path}: cannot write ({error.strerror or error})')


_ROOM_INSIDE = 200  # bytes kept for the paths under an output directory (checkpoints/<step>/...)


def _check_name_lengths(path: str, existing: str, what: str) -> None:
  """A directory name or path longer than the system allows (os.access cannot tell) is refused now,
  not by os.makedirs once the work has started. Checked, not tried: the processes of one run
  check the same log_path at once, and one's trial directory would race the others."""
  try:
    name_max = os.pathconf(existing, 'PC_NAME_MAX')
    path_max = os.pathconf(existing, 'PC_PATH_MAX')
  except (OSError, ValueError):
    return
  if path_max and len(os.fsencode(path)) + _ROOM_INSIDE >= path_max:  # path_max counts the NUL
    raise OutputPathError(f'{what} {path[:40]}... cannot be used: it is '
                          f'{len(os.fsencode(path))} bytes long, this system allows paths of '
                          f'{path_max - 1} bytes, and the files inside it need up to '
                          f'{_ROOM_INSIDE} more; give a shorter one')
  for name in os.path.relpath(path, existing).split(os.sep):
    if name_max and len(os.fsencode(name)) > name_max:
      raise OutputPathError(f'{what} {path} cannot be created: the name {name[:16]}... is '
                            f'{len(os.fsencode(name))} bytes long, and this filesystem allows '
                            f'{name_max}; give a shorter one')


def check_output_file(path: str, what: str) -> str:
  """Absolute `path` if a file can be written there (tried: a temporary file made and removed):
  not a directory, in an existing writable directory; else an OutputPathError naming `what`
  (e.g. '--json')."""
  if not path:  # os.path.abspath('') is the working directory, a directory
    raise OutputPathError(f'{what} is empty; give a file name such as metrics.json')
  path = os.path.abspath(path)
  directory = os.path.dirname(path)
  if os.path.isdir(path):
    raise OutputPathError(f'{what} {path} is a directory; give a file name such as '
                          'metrics.json')
  if not os.path.isdir(directory):
    existing = _nearest_existing(directory)
    reason = (f'{existing} is a file' if not os.path.isdir(existing)
              else f'directory {directory} does not exist; create it first')
    raise OutputPathError(f'{what} {path}: {reason}')
  if not os.access(directory, os.W_OK | os.X_OK):
    raise OutputPathError(f'{what} {path}: directory {directory} is not writable')
  try:  # a file of its own, so no other writer can race it; /proc passes os.access
    fd, tmp = staging_file(path)
    try:
      os.close(fd)
    finally:  # also at a Ctrl-C
      os.unlink(tmp)
  except OSError as e:
    raise cannot_write(path, e, what) from None
  return path


def staging_dir(target: str) -> str:
  """A new temporary sibling directory of `target`, to be renamed to it when complete, with the
  permissions os.makedirs would give (tempfile.mkdtemp makes it private, mode 0700, and the
  rename would keep that: a dataset or cache nobody else could read). Its name is
  `<target's name>.partial-<host>-<pid>-<random>`; those of `target` that a killed process of
  this host left (`remove_abandoned`) go first."""
  parent, name = _staging_place(target)
  remove_abandoned(parent, f'{name}.partial-')
  tmp = tempfile.mkdtemp(prefix=f'{name}.partial-{_owner()}', dir=parent)
  os.chmod(tmp, 0o777 & ~_umask())
  return tmp


def staging_file(target: str, suffix: str = '.tmp') -> tuple[int, str]:
  """(fd, path) of a new temporary file beside `target`, to be renamed to it when written, with
  the permissions open() would give (tempfile.mkstemp makes it private, mode 0600, and the rename
  would keep that: images and metrics nobody else could read). Its name is `<target's
  name>.<host>-<pid>-<random><suffix>`; those of `target` that a killed process left go first."""
  parent, name = _staging_place(target)
  remove_abandoned(parent, f'{name}.', suffix)
  fd, tmp = tempfile.mkstemp(prefix=f'{name}.{_owner()}', suffix=suffix, dir=parent)
  try:
    os.fchmod(fd, 0o666 & ~_umask())
  except BaseException:
    os.close(fd)
    os.unlink(tmp)
    raise
  return fd, tmp


def _staging_place(target: str) -> tuple[str, str]:
  """(directory, name) of `target`'s staging entries: the name cut to 100 bytes, so that with the
  owner and the random part it stays within a filesystem's 255 where the target's name fits."""
  parent, name = os.path.split(os.path.abspath(target))
  while len(os.fsencode(name)) > 100:  # by characters: a cut inside one would change the rest
    name = name[:-1]
  return parent, name


def _owner() -> str:
  """'<host>-<pid>-': which process made a staging entry, so that a later one can tell whether
  it is still being written."""
  return f'{socket.gethostname()}-{os.getpid()}-'


def remove_abandoned(parent: str, prefix: str, suffix: str = '') -> None:
  """Removes the staging entries `<prefix><host>-<pid>-<random><suffix>` in `parent` that a
  process of this host left when it was killed (SIGKILL) while writing them: they stayed, half
  filled, beside the outputs for good, one more per kill. Those of a live process, and of another
  host (which cannot be checked), stay. One with this process's own id is a killed one's whose id
  it got (a restarted container): a process stages one entry of a target at a time."""
  for path in _abandoned(parent, prefix, suffix):
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      with contextlib.suppress(OSError):
        os.unlink(path)


def _abandoned(parent: str, prefix: str, suffix: str = '') -> list[str]:
  """The entries `<prefix><host>-<pid>-<random><suffix>` in `parent` of a killed process of this
  host (see `remove_abandoned`)."""
  # The whole name: mkdtemp's random part has no '-', so host 'node' is not read into 'node-12-...'.
  ours = re.compile(rf'{re.escape(prefix + socket.gethostname())}-(\d+)-[^-]+{re.escape(suffix)}')
  try:
    found = os.listdir(parent)
  except OSError:
    return []
  abandoned = []
  for entry in sorted(found):
    match = ours.fullmatch(entry)
    pid = int(match.group(1)) if match else None
    if match and (pid == os.getpid() or not process_alive(pid)):
      abandoned.append(os.path.join(parent, entry))
  return abandoned


def set_aside_dir(target: str) -> str:
  """A new empty sibling of directory `target` to rename `target` onto while its replacement is
  renamed into place: `<target's name>.replaced-<hash>-<host>-<pid>-<random>`. Unlike a staging
  entry it is not removed when its process was killed: `restore_set_aside` puts it back where
  that left no `target`."""
  parent, prefix = _set_aside_place(target)
  return tempfile.mkdtemp(prefix=f'{prefix}{_owner()}', dir=parent)


def set_aside(target: str) -> list[str]:
  """The directories of `target` set aside (`set_aside_dir`) by processes of this host that were
  killed before renaming them back or removing them; those holding files first."""
  found = [path for path in _abandoned(*_set_aside_place(target))
           if os.path.isdir(path) and not os.path.islink(path)]  # a file of that name: not ours
  return sorted(found, key=_holds_nothing)  # an empty one: killed before use


def _holds_nothing(directory: str) -> bool:
  try:
    return not os.listdir(directory)
  except OSError:  # unreadable: tried last
    return True


def _set_aside_place(target: str) -> tuple[str, str]:
  """(directory, name prefix) of `target`'s set-aside directories. The prefix ends in a hash of
  the whole name: `_staging_place` cuts it to 100 bytes, and one target's set-aside restored as
  another's, or removed, would lose that other dataset."""
  parent, name = _staging_place(target)
  digest = hashlib.sha256(os.fsencode(os.path.basename(os.path.abspath(target)))).hexdigest()
  return parent, f'{name}.replaced-{digest[:12]}-'


def restore_set_aside(target: str) -> str | None:
  """Finishes a replacement of directory `target` that a killed process of this host left
  between its two renames (`set_aside_dir`): where `target` is missing, the set-aside old
  directory is renamed back (its path is returned, to be reported); where `target` is the new
  one, the old one is removed. None when there was nothing to do."""
  restored = None
  for path in set_aside(target):
    if not os.path.lexists(target):
      os.rename(path, target)
      restored = path
    else:  # the replacement completed, or it was killed before the old one was moved aside
      shutil.rmtree(path, ignore_errors=True)
  return restored


def process_alive(pid: int) -> bool:
  """Whether a process `pid` runs on this host (another user's counts)."""
  if pid <= 0:  # os.kill would signal a process group (0: ours, -1: every process): "alive"
    return False
  try:
    os.kill(pid, 0)
  except (ProcessLookupError, OverflowError):  # no such process; a number no process id can be
    return False
  except PermissionError:  # another user's process
    return True
  return True


def write_json(path: str, obj, what: str = '--json') -> None:
  """Writes `obj` as indented JSON atomically (`write_text`)."""
  write_text(path, json.dumps(obj, indent=1) + '\n', what)


def write_text(path: str, text: str, what: str) -> None:
  """Writes `text` atomically (a temporary file beside `path`, then os.replace): an interrupted
  or failed write leaves the earlier file, or none. An OutputPathError naming `what` when it
  cannot be written."""
  path = check_output_file(path, what)
  try:
    fd, tmp = staging_file(path)
    try:
      with os.fdopen(fd, 'w', encoding='utf-8') as f:
        f.write(text)
      os.replace(tmp, path)
    except BaseException:
      os.unlink(tmp)
      raise
  except OSError as e:
    raise cannot_write(path, e, what) from None


def _umask() -> int:
  """The process's umask, read without changing it where Linux tells it (setting it to read it
  would briefly give files other threads create meanwhile the wrong mode)."""
  try:
    with open('/proc/self/status', encoding='ascii') as f:
      for line in f:
        if line.startswith('Umask:'):
          return int(line.split()[1], 8)
  except (OSError, ValueError):
    pass
  umask = os.umask(0)
  os.umask(umask)
  return umask
