"""gan.paths: output locations are checked without creating anything (or only a temporary file,
removed), and created with errors that say which one failed."""

import errno
import json
import os
import re
import socket

import numpy as np
import pytest

from gan import paths
from tests.helpers import finished_pid


def test_an_existing_or_creatable_directory_is_accepted_and_nothing_is_created(tmp_path):
  assert paths.check_output_dir(str(tmp_path), 'log_path') == str(tmp_path)
  nested = tmp_path / 'a' / 'b'
  assert paths.check_output_dir(str(nested), 'log_path') == str(nested)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('name', ['x' * 300, 'ok/' + 'y' * 300])
def test_a_name_too_long_for_the_filesystem_is_refused_and_nothing_is_created(tmp_path, name):
  """It used to pass the check and end in os.makedirs' traceback after the data had loaded."""
  with pytest.raises(paths.OutputPathError, match='cannot be created: the name .* 300 bytes'):
    paths.check_output_dir(str(tmp_path / name), 'log_path')
  assert os.listdir(tmp_path) == []


def test_a_path_too_long_for_the_system_is_refused_and_nothing_is_created(tmp_path):
  """Each name within the limit, the whole over PATH_MAX less the room the run's files need: it
  used to end in os.makedirs' 'File name too long' with part of the tree made."""
  path = os.path.join(str(tmp_path), *['d' * 200] * 20)
  with pytest.raises(paths.OutputPathError, match='cannot be used: it is .* bytes long, this '
                                                  'system allows paths of'):
    paths.check_output_dir(path, 'log_path')
  assert os.listdir(tmp_path) == []


def test_a_relative_directory_comes_back_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert paths.check_output_dir('runs/x', 'log_path') == str(tmp_path / 'runs' / 'x')


@pytest.mark.parametrize('target, fragment', [
    ('f', 'log_path {tmp}/f is a file'),
    ('f/run', 'log_path {tmp}/f/run cannot be created: {tmp}/f is a file'),
    ('f/run/deeper', 'cannot be created: {tmp}/f is a file'),
])
def test_a_directory_that_is_or_sits_under_a_file_is_refused(tmp_path, target, fragment):
  (tmp_path / 'f').write_text('')
  with pytest.raises(paths.OutputPathError) as info:
    paths.check_output_dir(str(tmp_path / target), 'log_path')
  assert fragment.format(tmp=tmp_path) in str(info.value)


@pytest.mark.parametrize('target, fragment', [
    ('.', 'is a directory'),
    ('missing/m.json', 'directory {tmp}/missing does not exist'),
    ('f/m.json', '{tmp}/f is a file'),
    ('f/sub/m.json', '{tmp}/f is a file'),
])
def test_an_output_file_needs_an_existing_directory(tmp_path, target, fragment):
  (tmp_path / 'f').write_text('')
  with pytest.raises(paths.OutputPathError) as info:
    paths.check_output_file(os.path.join(str(tmp_path), target), '--json')
  assert str(info.value).startswith('--json ')
  assert fragment.format(tmp=tmp_path) in str(info.value)
  assert paths.check_output_file(str(tmp_path / 'm.json'), '--json') == str(tmp_path / 'm.json')


def test_a_staging_directory_has_the_permissions_makedirs_would_give(tmp_path):
  old = os.umask(0o027)
  try:
    staged = paths.staging_dir(str(tmp_path / 'target'))
  finally:
    os.umask(old)
  assert os.path.dirname(staged) == str(tmp_path)
  assert os.path.basename(staged).startswith('target.partial-')
  assert os.stat(staged).st_mode & 0o777 == 0o750


@pytest.mark.parametrize('umask, mode', [(0o022, 0o644), (0o027, 0o640)])
def test_files_written_through_a_temporary_file_follow_the_umask(tmp_path, umask, mode):
  """tempfile.mkstemp makes 0600 files; images (output/fake, output/real, inference designs) and
  metrics JSON (gan.evaluate --json, gan.compare's results.json) renamed into place would keep
  that."""
  from gan import images  # pylint: disable=import-outside-toplevel
  old = os.umask(umask)
  try:
    images.write_rgb(str(tmp_path / 'design.bmp'), np.zeros((10, 30, 3), np.uint8))
    paths.write_json(str(tmp_path / 'metrics.json'), {'fd': 1.0})
    fd, staged = paths.staging_file(str(tmp_path / 'other.json'))
    os.close(fd)
  finally:
    os.umask(old)
  for name in ('design.bmp', 'metrics.json', os.path.basename(staged)):
    assert os.stat(tmp_path / name).st_mode & 0o777 == mode, name
  assert sorted(os.listdir(tmp_path)) == sorted(['design.bmp', 'metrics.json',
                                                 os.path.basename(staged)])


# /proc refuses new entries even to root, whom os.access calls able to write there.
PSEUDO = '/proc/designgan-test'


def test_an_output_directory_is_created_with_its_parents(tmp_path):
  nested = tmp_path / 'a' / 'b'
  assert paths.make_output_dir(str(nested), 'log_path') == str(nested)
  assert paths.make_output_dir(str(nested), 'log_path') == str(nested)  # exists: fine
  assert nested.is_dir()


@pytest.mark.parametrize('target', [f'{PSEUDO}/run', 'FILE', 'FILE/run'])
def test_an_output_directory_that_cannot_be_created_names_the_field(tmp_path, target):
  (tmp_path / 'f').write_text('')
  target = target.replace('FILE', str(tmp_path / 'f'))
  with pytest.raises(paths.OutputPathError, match=f'^output_path {target} cannot be created .*'
                     'give a directory you can write'):
    paths.make_output_dir(target, 'output_path')


def test_an_output_file_is_tried_and_nothing_is_left(tmp_path):
  assert paths.check_output_file(str(tmp_path / 'm.json'), '--json') == str(tmp_path / 'm.json')
  assert os.listdir(tmp_path) == []


def test_an_output_file_a_pseudo_filesystem_refuses_is_refused_before_the_work():
  with pytest.raises(paths.OutputPathError, match=f'^--json {PSEUDO}.json: '):
    paths.check_output_file(PSEUDO + '.json', '--json')


def test_the_directories_a_failed_run_made_and_left_empty_are_removed(tmp_path):
  (tmp_path / 'kept').mkdir()
  made = paths.missing_dirs(tmp_path / 'kept' / 'a' / 'b') + paths.missing_dirs(tmp_path / 'c')
  assert made == [str(tmp_path / 'kept' / 'a' / 'b'), str(tmp_path / 'kept' / 'a'),
                  str(tmp_path / 'c')]
  for directory in made:
    paths.make_output_dir(directory, 'log_path')
  (tmp_path / 'c' / 'log_summary').write_text('what went wrong')
  paths.remove_if_empty(made + [str(tmp_path / 'gone')])
  assert sorted(os.listdir(tmp_path)) == ['c', 'kept']  # a directory with a file stays
  assert os.listdir(tmp_path / 'kept') == []  # it existed before


@pytest.mark.parametrize('target', ['link', 'link/run'])
def test_a_directory_that_is_or_sits_under_a_link_to_nothing_is_refused(tmp_path, target):
  """os.path.exists calls a dangling link missing: it passed as a directory to create, and
  infer.py failed only after generating, with 'cannot write to ...: File exists'."""
  (tmp_path / 'link').symlink_to(tmp_path / 'gone')
  with pytest.raises(paths.OutputPathError, match=f'{tmp_path}/link is a symbolic link to '
                                                  f'{tmp_path}/gone, which does not exist'):
    paths.check_output_dir(str(tmp_path / target), '--gen_img_path')
  assert sorted(os.listdir(tmp_path)) == ['link']


def test_a_new_staging_file_removes_those_a_killed_writer_left(tmp_path):
  """A process killed between a staged file's creation and its rename left '<name>.<random>.tmp'
  beside the output for good (an image, a metrics JSON); the next write of that name removes it.
  Those of a live process, of another host and of another name stay."""
  host = socket.gethostname()
  killed = f'metrics.json.{host}-{finished_pid()}-abc.tmp'
  no_such_id = f'metrics.json.{host}-{2 ** 70}-abc.tmp'  # os.kill raised OverflowError
  group_id = f'metrics.json.{host}-0-abc.tmp'  # os.kill(0, 0) signals this process's group
  kept = [f'metrics.json.{host}-{os.getppid()}-abc.tmp',
          f'metrics.json.{host}x-{finished_pid()}-abc.tmp',
          f'other.json.{host}-{finished_pid()}-abc.tmp']
  for name in [killed, no_such_id, group_id] + kept:
    (tmp_path / name).write_text('{"half')
  paths.write_json(str(tmp_path / 'metrics.json'), {'fd': 1.0})
  assert sorted(os.listdir(tmp_path)) == sorted(['metrics.json'] + kept)


def test_the_staging_entries_of_a_long_name_fit_the_filesystem(tmp_path):
  """A target name that fits (250 bytes) with '.partial-<host>-<pid>-<random>' added did not."""
  target = str(tmp_path / ('d' * 250))
  staged = paths.staging_dir(target)
  os.rename(staged, target)
  fd, staged_file = paths.staging_file(os.path.join(target, 'f' * 250))
  os.close(fd)
  assert os.path.dirname(staged_file) == target


def _fake_run(root):
  """A run directory whose checkpoints/ and best/ hold one step each, as orbax lays them out."""
  for manager in ('checkpoints', 'best'):
    step_dir = root / manager / '3'
    step_dir.mkdir(parents=True)
    (step_dir / '_CHECKPOINT_METADATA').write_text('{}')
  return root


@pytest.mark.parametrize('target, inside', [
    ('run/checkpoints', 'run/checkpoints'),
    ('run/checkpoints/7', 'run/checkpoints'),
    ('run/checkpoints/out/deeper', 'run/checkpoints'),
    ('run/checkpoints/3', 'run/checkpoints/3'),
    ('run/best/4', 'run/best'),
])
def test_an_output_directory_in_a_directory_of_checkpoints_is_refused(tmp_path, target, inside):
  """infer.py --gen_img_path=<run>/checkpoints/7 used to write its designs there: every later
  train.py, infer.py and gan.evaluate of the run then failed on 'checkpoint 7 is unreadable'
  (also gan.designs --out and gan.compare --out, through the same check)."""
  _fake_run(tmp_path / 'run')
  before = sorted(str(p) for p in tmp_path.rglob('*'))
  with pytest.raises(paths.OutputPathError, match='directory of checkpoints') as info:
    paths.check_output_dir(str(tmp_path / target), '--gen_img_path')
  message = str(info.value)
  assert message.startswith(f'--gen_img_path {tmp_path / target} ')
  if target != inside:
    assert f'is inside {tmp_path / inside},' in message
  assert sorted(str(p) for p in tmp_path.rglob('*')) == before


@pytest.mark.parametrize('target', ['run/best', 'run/best/designs'])
def test_an_output_directory_in_a_best_dir_not_made_yet_is_refused(tmp_path, target):
  """A run trained without evaluation has checkpoints/ but no best/ yet; an output written to its
  best/ (infer.py --gen_img_path, another run's output_path) was accepted, though refused once
  best/ exists: the run's evaluations, once resumed with them, put checkpoints among its files."""
  (tmp_path / 'run' / 'checkpoints' / '3').mkdir(parents=True)
  (tmp_path / 'run' / 'checkpoints' / '3' / '_CHECKPOINT_METADATA').write_text('{}')
  before = sorted(str(p) for p in tmp_path.rglob('*'))
  with pytest.raises(paths.OutputPathError, match=f'is inside {tmp_path / "run" / "best"},'
                     if target != 'run/best' else 'is a directory of checkpoints'):
    paths.check_output_dir(str(tmp_path / target), '--gen_img_path')
  assert sorted(str(p) for p in tmp_path.rglob('*')) == before
  paths.check_output_dir(str(tmp_path / 'other' / 'best'), '--gen_img_path')  # not a run's


@pytest.mark.parametrize('target', ['run', 'run/inference_output', 'run/output/fake', 'other/7'])
def test_an_output_directory_beside_the_checkpoints_is_accepted(tmp_path, target):
  _fake_run(tmp_path / 'run')
  assert paths.check_output_dir(str(tmp_path / target), 'output_path') == str(tmp_path / target)


def test_a_checkpoint_directory_not_made_yet_is_refused_when_named(tmp_path):
  """A new run's output_path inside its own checkpoints/ (made only once training starts): the
  run used to fail on 'checkpoint 99 ... is unreadable', an empty directory it made itself."""
  log_path = tmp_path / 'run'
  paths.check_output_dir(str(log_path / 'checkpoints' / '99'), 'output_path')  # nothing there yet
  with pytest.raises(paths.OutputPathError, match=f'^output_path {log_path}/checkpoints/99 is '
                                                  f'inside {log_path}/checkpoints, a directory'):
    paths.check_outside_checkpoints(str(log_path / 'checkpoints' / '99'), 'output_path',
                                    [str(log_path / 'checkpoints'), str(log_path / 'best')])
  paths.check_outside_checkpoints(str(log_path / 'output'), 'output_path',
                                  [str(log_path / 'checkpoints'), str(log_path / 'best')])
  assert os.listdir(tmp_path) == []


def test_set_aside_directories_are_those_of_their_own_target(tmp_path):
  """Names are cut to 100 bytes for staging entries: two targets alike in those saw each other's
  set-aside datasets, and one restored the other's, or removed it where it existed itself.
  An empty one (its process killed before the rename) yields to one that holds the dataset."""
  first, second = (str(tmp_path / ('x' * 100 + end)) for end in 'AB')
  os.mkdir(second)
  empty = paths.set_aside_dir(first)  # this process's own: as a killed one's
  aside = paths.set_aside_dir(first)
  with open(os.path.join(aside, 'design.bmp'), 'w', encoding='utf-8') as f:
    f.write('old')
  assert paths.restore_set_aside(second) is None
  assert sorted(paths.set_aside(first)) == sorted([aside, empty])
  assert paths.restore_set_aside(first) == aside
  assert os.listdir(first) == ['design.bmp'] and not os.path.exists(empty)
  assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (first, second))


def test_set_aside_ignores_a_file_of_a_set_aside_name(tmp_path):
  """Listing a set-aside name that is a file to sort the directories raised NotADirectoryError."""
  target = str(tmp_path / 'designs')
  stray = paths.set_aside_dir(target)
  os.rmdir(stray)
  with open(stray, 'w', encoding='utf-8') as f:
    f.write('not a dataset')
  aside = paths.set_aside_dir(target)
  assert paths.set_aside(target) == [aside]
  assert paths.restore_set_aside(target) == aside and os.path.isdir(target)
  assert os.path.isfile(stray)


@pytest.mark.parametrize('check', [paths.check_output_dir, paths.check_output_file])
def test_an_empty_output_path_is_refused_not_read_as_the_working_directory(check):
  with pytest.raises(paths.OutputPathError, match='^--out is empty; give a '):
    check('', '--out')


def _path_of_length(base: str, length: int) -> str:
  """`base`/ddd.../ddd... of exactly `length` bytes, in names of at most 201 bytes."""
  path = base
  while len(path) < length:
    remaining = length - len(path)
    path += '/' + 'd' * (200 if remaining > 202 else remaining - 1)
  assert len(path) == length
  return path


def test_the_longest_name_and_path_allowed_are_accepted_one_byte_more_refused(tmp_path):
  """A name of NAME_MAX bytes can be made; a path may take PATH_MAX (which counts the closing
  NUL) less the room reserved for the files inside it."""
  name_max = os.pathconf(str(tmp_path), 'PC_NAME_MAX')
  longest_name = str(tmp_path / ('x' * name_max))
  assert paths.check_output_dir(longest_name, 'log_path') == longest_name
  os.mkdir(longest_name)  # the system agrees
  with pytest.raises(paths.OutputPathError, match=f'is {name_max + 1} bytes long'):
    paths.check_output_dir(longest_name + 'x', 'log_path')
  path_max = os.pathconf(str(tmp_path), 'PC_PATH_MAX')
  room = paths._ROOM_INSIDE  # pylint: disable=protected-access
  longest_path = _path_of_length(str(tmp_path), path_max - 1 - room)
  assert paths.check_output_dir(longest_path, 'log_path') == longest_path
  with pytest.raises(paths.OutputPathError, match='cannot be used: it is'):
    paths.check_output_dir(longest_path + 'd', 'log_path')


def test_a_directory_this_user_cannot_write_is_refused(tmp_path, monkeypatch):
  """Checked with os.access (root, who runs these tests in a container, may write anywhere)."""
  monkeypatch.setattr(paths.os, 'access', lambda path, mode: False)
  with pytest.raises(paths.OutputPathError, match=f'^log_path {tmp_path} is not writable'):
    paths.check_output_dir(str(tmp_path), 'log_path')
  with pytest.raises(paths.OutputPathError, match=f'^log_path {tmp_path}/new cannot be created: '
                                                  f'{tmp_path} is not writable'):
    paths.check_output_dir(str(tmp_path / 'new'), 'log_path')
  with pytest.raises(paths.OutputPathError, match=f'^--json {tmp_path}/m.json: directory '
                                                  f'{tmp_path} is not writable'):
    paths.check_output_file(str(tmp_path / 'm.json'), '--json')


def test_checkpoint_steps_are_numbered_directories_in_numeric_order(tmp_path):
  for name in ('12', '3', '7a', 'a7', '-1', 'x'):
    (tmp_path / name).mkdir()
  (tmp_path / '5').write_text('a stray file')
  assert paths.step_numbers(str(tmp_path), os.listdir(tmp_path)) == [3, 12]


def test_numbered_directories_without_checkpoint_metadata_are_no_checkpoints(tmp_path):
  """A user's directory of numbered outputs is no run's checkpoints: writing beside them is fine."""
  renders = tmp_path / 'renders'
  (renders / '7').mkdir(parents=True)
  assert not paths.holds_checkpoints(str(renders))
  assert paths.check_output_dir(str(renders / '8'), 'output_path') == str(renders / '8')
  (renders / '7' / paths.CHECKPOINT_MARKER).write_text('{}')
  assert paths.holds_checkpoints(str(renders))


def test_another_users_live_process_counts_as_alive(monkeypatch):
  """os.kill(pid, 0) on another user's process raises PermissionError: its staging entries stay."""
  def not_permitted(pid, signal):
    raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))

  monkeypatch.setattr(paths.os, 'kill', not_permitted)
  assert paths.process_alive(12345)


def test_a_failed_write_keeps_the_earlier_file_and_leaves_no_temporary_one(tmp_path, monkeypatch):
  path = tmp_path / 'm.json'
  paths.write_json(str(path), {'fd': 1.0})

  def full_disk(src, dst):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(paths.os, 'replace', full_disk)
  with pytest.raises(paths.OutputPathError, match=re.escape(
      f'--json {path}: cannot write (No space left on device)')):
    paths.write_json(str(path), {'fd': 2.0})
  assert os.listdir(tmp_path) == ['m.json'] and json.loads(path.read_text()) == {'fd': 1.0}


def test_a_staging_entry_of_a_host_whose_name_extends_this_ones_stays(tmp_path):
  """Host '<host>-<n>' writing '<name>.<host>-<n>-<pid>-<random>.tmp' is another host: its
  <n> is no process id of this host, whatever process <n> here is."""
  host = socket.gethostname()
  other_host = f'metrics.json.{host}-{finished_pid()}-{os.getppid()}-abc.tmp'
  (tmp_path / other_host).write_text('{"half')
  paths.write_json(str(tmp_path / 'metrics.json'), {'fd': 1.0})
  assert sorted(os.listdir(tmp_path)) == sorted(['metrics.json', other_host])


def test_a_write_error_without_an_errno_gives_its_message():
  """Pillow raises some OSErrors with a message only (strerror None)."""
  error = paths.cannot_write('/d/grid.png', OSError('encoder error -2'), '--gen_img_path')
  assert str(error) == '--gen_img_path /d/grid.png: cannot write (encoder error -2)'
