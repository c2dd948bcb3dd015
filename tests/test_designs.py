"""The synthetic dataset and its oracle: labels reproducible, benchmark fair, output atomic."""

import dataclasses
import errno
import os
import re
import signal
import subprocess
import sys

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from gan import data
from gan import designs
from gan import images as images_lib
from gan import oracle
from gan.errors import DataError, DesignGanError

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_oracle_reproduces_every_label(default_designs):
  durability, mass = oracle.measure(default_designs.images)
  np.testing.assert_array_equal(durability, default_designs.durability)
  np.testing.assert_array_equal(mass, default_designs.mass)


def test_oracle_reproduces_labels_of_written_files(small_design_dir):
  names = sorted(os.listdir(small_design_dir))
  assert len(names) == 240
  for name in names:
    tokens = name[:-len('.bmp')].split('_')
    image = images_lib.read_rgb(os.path.join(small_design_dir, name))
    assert image.shape == (10, 30, 3)
    assert oracle.measure(image) == (float(tokens[0]), float(tokens[-2])), name


def test_oracle_formula_on_a_hand_computed_design():
  # Every cell thickness 1, grade 0, treatment 0; struts black (no stiffening).
  image = np.zeros((10, 30, 3), np.uint8)
  image[:, list(oracle.FOOTPRINT_COLUMNS), 0] = 255
  for r, c in oracle.STRUTS:
    image[r, c] = 0
  d_raw, m_raw = oracle.measure_raw(image)
  row_weight = 0.4 + 0.6 * ((np.arange(10) - 4.5) / 4.5) ** 2
  cells_per_row = np.full(10, 14)
  cells_per_row[[5, 7]] = 13  # the strut pixels are not cells
  mean_row_weight = np.sum(cells_per_row * row_weight) / 138
  assert m_raw == pytest.approx(2.10 + 0.30 * 1.0)
  assert d_raw == pytest.approx(0.51 + 1.15 * 0.5 * mean_row_weight)
  # A white strut adds k=1 times the (full) thickness of its neighbours: factor 1 + 0.25.
  image[7, 11] = 255
  d_white, m_white = oracle.measure_raw(image)
  assert m_white == pytest.approx(m_raw)
  assert d_white == pytest.approx(0.51 + 1.15 * 0.5 * mean_row_weight * 1.25)


def test_rounding_is_half_up_at_every_class_boundary():
  """A value on a boundary between classes takes the upper one, though the boundary is no binary
  float: 1.45 / 0.1 is 14.499999999999998 (so 1.15, 1.45 and 1.65 used to round down)."""
  for classes, step, decimals in ((oracle.DURABILITY_CLASSES, oracle.DURABILITY_STEP, 1),
                                  (oracle.MASS_CLASSES, oracle.MASS_STEP, 2)):
    for lower, upper in zip(classes, classes[1:]):
      boundary = round(lower + step / 2, decimals + 1)
      assert oracle.to_class_value(boundary, step, decimals) == upper, boundary
      assert oracle.to_class_value(boundary - 1e-7, step, decimals) == lower, boundary
      # Only the quotient's float error (about 1e-15) is rounded away, not a real difference.
      assert oracle.to_class_value(boundary - 1e-7 * step, step, decimals) == lower, boundary


def test_a_design_exactly_on_a_mass_boundary_has_the_upper_class():
  """Mass is 2.10 + 0.30 X / (255 1020 138) with X = sum_cells R (1020 + G) an integer, so a
  design can lie exactly on 2.215 (X = 13,759,290 here): it is class 2.22, not 2.21."""
  x = 13_759_290
  cells = list(zip(*np.nonzero(oracle.CELLS)))
  image = np.zeros((10, 30, 3), np.uint8)
  g = x % 1020  # four cells of R = 1 carry G values summing to g; the rest share R, G = 0
  for i, (r, c) in enumerate(cells[:4]):
    image[r, c] = (1, min(255, max(0, g - 255 * i)), 0)
  base, extra = divmod((x - 4 * 1020 - g) // 1020, len(cells) - 4)
  for i, (r, c) in enumerate(cells[4:]):
    image[r, c, 0] = base + (i < extra)
  px = image.astype(np.int64)
  assert np.sum(px[..., 0] * (1020 + px[..., 1]) * oracle.CELLS) == x
  assert oracle.measure(image)[1] == 2.22


def test_labels_depend_on_every_cell(default_designs):
  image = default_designs.images[7]
  d0, m0 = oracle.measure_raw(image)
  rows, cols = np.nonzero(oracle.CELLS)
  assert len(rows) == 138
  for channel in range(3):
    bumped = np.repeat(image[None], len(rows), axis=0).astype(np.int32)
    bumped[np.arange(len(rows)), rows, cols, channel] += np.where(
        bumped[np.arange(len(rows)), rows, cols, channel] > 200, -20, 20)
    d, m = oracle.measure_raw(bumped.astype(np.uint8))
    assert np.all(d != d0), f'channel {channel}: durability ignores some cell'
    if channel < 2:  # thickness and grade weigh; heat treatment does not
      assert np.all(m != m0), f'channel {channel}: mass ignores some cell'
    else:
      np.testing.assert_allclose(m, m0)


def test_pixels_outside_the_footprint_are_ignored(default_designs):
  image = default_designs.images[3].copy()
  before = oracle.measure_raw(image)
  image[:, 6:10] = 255
  image[:, 22:] = 123
  assert oracle.measure_raw(image) == before


def test_oracle_rejects_training_layout_images():
  with pytest.raises(ValueError, match='to_full'):
    oracle.measure(np.zeros((10, 14, 3), np.uint8))


def test_benchmark_is_fair(default_designs):
  stats = designs.statistics(default_designs)
  assert stats['pairs_present'] == 120
  assert stats['pair_imbalance'] <= 0.10
  assert stats['designs_per_class'] == {'durability': [1000, 1000], 'mass': [833, 834]}
  assert abs(stats['class_index_correlation']) < 0.3
  assert {'none', 'steel'} <= set(stats['strut_type_counts'])  # black and white struts
  assert all(n > 0 for n in stats['strut_type_counts'].values())
  assert stats['strut_changes_durability_share'] > 0.2
  palette = {c for _, c in designs.STRUT_PALETTE}
  assert (0, 0, 0) in palette and (255, 255, 255) in palette


def test_designs_have_spatial_structure(default_designs):
  """The statistic the README reports (0.976) against the same designs with their cells shuffled
  within each design: structure gone, the statistic must drop. It mixes in the variance between
  designs, so shuffled cells still score about 0.5: a bare 'above 0.5' would pass them too."""
  real = designs.statistics(default_designs)['neighbour_thickness_correlation']
  rng = np.random.default_rng(0)
  images = default_designs.images.copy()
  cells = oracle.CELLS.astype(bool)
  for image in images:
    image[cells] = rng.permutation(image[cells])
  shuffled = designs.statistics(dataclasses.replace(default_designs, images=images))
  assert real > 0.9
  assert shuffled['neighbour_thickness_correlation'] < real - 0.3


def test_inactive_columns_black_and_struts_from_palette(default_designs):
  imgs = default_designs.images
  inactive = [c for c in range(30) if c not in oracle.FOOTPRINT_COLUMNS]
  assert not imgs[:, :, inactive].any()
  palette = np.asarray([c for _, c in designs.STRUT_PALETTE])
  for i, (r, c) in enumerate(oracle.STRUTS):
    np.testing.assert_array_equal(imgs[:, r, c], palette[default_designs.strut_types[:, i]])
  # No footprint column is black everywhere (dropempty keeps all 14).
  assert all(imgs[:, :, c].any() for c in oracle.FOOTPRINT_COLUMNS)


def test_generation_is_deterministic_by_seed():
  a, b, c = designs.generate(300, 5), designs.generate(300, 5), designs.generate(300, 6)
  assert designs.fingerprint(a) == designs.fingerprint(b)
  assert designs.fingerprint(a) != designs.fingerprint(c)


def test_cli_writes_named_files(small_design_dir):
  names = os.listdir(small_design_dir)
  assert all(n.endswith('.bmp') for n in names)
  tokens = [n[:-4].split('_') for n in names]
  assert all(len(t) == 6 for t in tokens)
  assert {float(t[0]) for t in tokens} == set(oracle.DURABILITY_CLASSES)
  assert {float(t[-2]) for t in tokens} == set(oracle.MASS_CLASSES)


def test_cli_refuses_a_non_empty_directory(small_design_dir, capsys):
  before = sorted(os.listdir(small_design_dir))
  assert designs.main(['--out', small_design_dir, '--num', '5']) == 1
  assert 'not empty' in capsys.readouterr().err
  assert sorted(os.listdir(small_design_dir)) == before


def test_cli_overwrite_replaces(tmp_path):
  out = tmp_path / 'data'
  assert designs.main(['--out', str(out), '--num', '20', '--seed', '2']) == 0
  assert designs.main(['--out', str(out), '--num', '7', '--seed', '3', '--overwrite']) == 0
  assert len(os.listdir(out)) == 7
  assert sorted(os.listdir(tmp_path)) == ['data']


# A child that replaces `out` with --overwrite and is killed (SIGKILL: no cleanup runs) at the
# call of os.rename or shutil.rmtree named by argv[2] (the n-th call given by argv[3]).
_KILLED_WHILE_REPLACING = """
import os, shutil, signal, sys
from gan import designs
target, calls = getattr(os, sys.argv[2], None) or getattr(shutil, sys.argv[2]), []
def killing(*args, **kwargs):
  calls.append(args)
  if len(calls) == int(sys.argv[3]):
    os.kill(os.getpid(), signal.SIGKILL)
  return target(*args, **kwargs)
setattr(os if hasattr(os, sys.argv[2]) else shutil, sys.argv[2], killing)
designs.main(['--out', sys.argv[1], '--num', '7', '--seed', '3', '--overwrite'])
"""


@pytest.mark.parametrize('kill_at, designs_after', [
    (('rename', 2), 20),  # the old dataset moved aside, the new one not yet in place
    (('rmtree', 1), 7)])  # the new one in place, the old one not yet removed
def test_a_replacement_killed_half_way_is_completed_or_undone_by_the_next_run(
    tmp_path, capsys, kill_at, designs_after):
  """Killed between its renames, `--overwrite` left no dataset at --out, and the old one in a
  staging directory that the next run deleted as abandoned: now that run puts it back (or, once
  the new one was in place, removes it) before anything else."""
  out = tmp_path / 'data'
  assert designs.main(['--out', str(out), '--num', '20', '--seed', '2']) == 0
  old = sorted(os.listdir(out))
  killed = subprocess.run([sys.executable, '-c', _KILLED_WHILE_REPLACING, str(out),
                           *map(str, kill_at)], check=False, capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert killed.returncode == -9, killed.stderr
  assert out.exists() == (designs_after == 7)
  if designs_after == 20:  # training on it says where its designs are
    with pytest.raises(DataError, match=r'does not exist; .* stopped half-way and set its designs '
                       r'aside in .*data\.replaced-'):
      data.load_dataset(str(out))
  assert designs.main(['--out', str(out), '--num', '5']) == 1  # not empty: the refusal
  err = capsys.readouterr().err
  assert ('are back' in err) == (designs_after == 20) and 'not empty' in err
  assert len(os.listdir(out)) == designs_after
  if designs_after == 20:
    assert sorted(os.listdir(out)) == old
  assert [n for n in os.listdir(tmp_path) if '.replaced-' in n] == []
  assert designs.main(['--out', str(out), '--num', '5', '--overwrite']) == 0
  assert os.listdir(tmp_path) == ['data']  # the killed one's staged designs removed too


def test_cli_overwrite_replaces_only_a_directory_of_designs(tmp_path, monkeypatch, capsys):
  """Not one with other files; never the working directory or one above it; nothing deleted."""
  out = tmp_path / 'data'
  assert designs.main(['--out', str(out), '--num', '4']) == 0
  (out / 'notes.txt').write_text('mine')
  before = sorted(os.listdir(out))
  assert designs.main(['--out', str(out), '--num', '4', '--overwrite']) == 1
  assert 'notes.txt' in capsys.readouterr().err
  (out / 'notes.txt').unlink()
  monkeypatch.chdir(out)
  for target in ('.', str(tmp_path)):
    assert designs.main(['--out', target, '--num', '4', '--overwrite']) == 1
    assert 'holds the current directory' in capsys.readouterr().err
  assert sorted(os.listdir(out)) == [n for n in before if n != 'notes.txt']
  empty = tmp_path / 'empty'
  empty.mkdir()
  monkeypatch.chdir(empty)  # renaming the dataset over it would pull it from under the shell
  inode = empty.stat().st_ino
  assert designs.main(['--out', '.', '--num', '4']) == 1
  assert 'holds the current directory' in capsys.readouterr().err
  assert empty.stat().st_ino == inode and os.listdir(empty) == []


def test_cli_writes_through_an_out_directory_that_is_a_symlink(tmp_path):
  """The rename into place met the link, not its directory: a NotADirectoryError traceback after
  generating; with --overwrite the link was replaced by a real directory, a 'link.partial-*.old'
  link left behind and the old dataset kept, then a traceback (rmtree refuses a link)."""
  (tmp_path / 'real').mkdir()
  (tmp_path / 'link').symlink_to('real')
  assert designs.main(['--out', str(tmp_path / 'link'), '--num', '4']) == 0
  assert len(os.listdir(tmp_path / 'real')) == 4
  assert designs.main(['--out', str(tmp_path / 'link'), '--num', '3', '--overwrite']) == 0
  assert len(os.listdir(tmp_path / 'real')) == 3
  assert os.path.islink(tmp_path / 'link') and sorted(os.listdir(tmp_path)) == ['link', 'real']


@pytest.mark.parametrize('args, message', [
    (['--out', ''], '--out is empty'),
    (['--out', '  '], '--out is empty'),  # not a directory named by blanks
    (['--out', '{tmp}/a_file/data'], 'a_file is a file'),
    (['--out', '{tmp}/data', '--seed', '-1'], '--seed must be a non-negative integer'),
    (['--out', '{tmp}/data', '--num', '0'], 'from 1 to 200,000, got 0'),
    (['--out', '{tmp}/data', '--num', '100000000'], 'from 1 to 200,000, got 100000000'),
])
def test_cli_bad_arguments_are_one_error_line(tmp_path, monkeypatch, capsys, args, message):
  monkeypatch.chdir(tmp_path)  # a relative --out accepted by mistake is written (and seen) here
  (tmp_path / 'a_file').write_text('')
  args = [a.format(tmp=tmp_path) for a in args]
  assert designs.main(['--num', '4'] + args) == 1  # a --num in args comes last and wins
  err = capsys.readouterr().err
  assert err.startswith('error: ') and err.count('\n') == 1 and message in err, err
  assert sorted(os.listdir(tmp_path)) == ['a_file']


def test_cli_out_starting_with_a_tilde_is_in_the_home_directory(tmp_path, monkeypatch):
  """A quoted '~/designs' (or one from a config) is the shell's: not a directory named '~'."""
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  monkeypatch.chdir(tmp_path)
  assert designs.main(['--out', '~/designs', '--num', '2']) == 0
  assert len(os.listdir(tmp_path / 'home' / 'designs')) == 2
  assert sorted(os.listdir(tmp_path)) == ['home']


@pytest.mark.parametrize('setup, message', [
    ('file', 'is a file'), ('dataset', 'is not empty'), ('other', 'also holds notes.txt')])
def test_cli_refuses_the_out_directory_before_generating(tmp_path, monkeypatch, capsys, setup,
                                                         message):
  """Generating 100,000 designs takes most of a minute; a bad --out used to be found after it."""
  out = tmp_path / 'out'
  if setup == 'file':
    out.write_text('')
  else:
    out.mkdir()
    (out / ('notes.txt' if setup == 'other' else '1.0_1_2_3_2.13_0.bmp')).write_text('')
  monkeypatch.setattr(designs, 'generate', lambda *a, **k: pytest.fail('generated first'))
  args = ['--out', str(out), '--num', '100000'] + (['--overwrite'] if setup == 'other' else [])
  assert designs.main(args) == 1
  err = capsys.readouterr().err
  assert err.startswith('error: ') and message in err, err


def test_a_directory_a_pseudo_filesystem_refuses_is_one_error():
  """/proc passes os.access for root: it used to end in mkdtemp's traceback."""
  with pytest.raises(DesignGanError, match='^--out /proc/designgan-test/data '):
    designs.write_dataset('/proc/designgan-test/data', designs.generate(4, 0))


def test_the_dataset_directory_follows_the_umask(tmp_path):
  """tempfile.mkdtemp makes 0700 directories; renamed into place, nobody else could read it."""
  old = os.umask(0o022)
  try:
    designs.write_dataset(str(tmp_path / 'data'), designs.generate(4, 0))
  finally:
    os.umask(old)
  assert (tmp_path / 'data').stat().st_mode & 0o777 == 0o755


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
  calls = []

  def failing_write(path, image, atomic=True):
    calls.append(path)
    if len(calls) > 5:
      raise OSError('disk full')
    images_lib.Image.fromarray(image).save(path)

  monkeypatch.setattr(images_lib, 'write_rgb', failing_write)
  with pytest.raises(OSError):
    designs.write_dataset(str(tmp_path / 'data'), designs.generate(20, 0))
  assert os.listdir(tmp_path) == []


def test_default_dataset_is_generated_once(tmp_path):
  path = designs.ensure_default_dataset(str(tmp_path), num=30, seed=0)
  assert len(os.listdir(path)) == 30
  stamp = os.stat(path).st_mtime_ns
  assert designs.ensure_default_dataset(str(tmp_path), num=30, seed=0) == path
  assert os.stat(path).st_mtime_ns == stamp
  assert os.listdir(tmp_path) == [os.path.basename(path)]


def test_default_dataset_another_process_wrote_while_this_one_generated_is_used(tmp_path,
                                                                                 monkeypatch):
  """The processes of one training run generate the default dataset at once: the one that
  finishes last used to fail ('... is not empty; ... --overwrite')."""
  generate = designs.generate

  def other_process_first(num, seed):
    monkeypatch.setattr(designs, 'generate', generate)
    designs.ensure_default_dataset(str(tmp_path), num=num, seed=seed)
    return generate(num, seed)

  monkeypatch.setattr(designs, 'generate', other_process_first)
  path = designs.ensure_default_dataset(str(tmp_path), num=30, seed=0)
  assert os.listdir(tmp_path) == [os.path.basename(path)]  # no staging directory left
  assert len(os.listdir(path)) == 30


def test_default_dataset_another_process_wrote_just_before_the_rename_stays(tmp_path,
                                                                            monkeypatch):
  """A copy another process moved in after this one's checks is not replaced (renamed away and
  deleted while that process may be reading it): rename refuses a non-empty directory."""
  check_out_dir = designs.check_out_dir
  calls, others = [], []

  def other_process_after_the_check(*args, **kwargs):
    checked = check_out_dir(*args, **kwargs)
    calls.append(checked)
    if len(calls) == 2:  # write_dataset's check: the other process finishes now
      designs.write_dataset(checked, designs.generate(30, 0), what='other')
      others.append(os.stat(checked).st_ino)
    return checked

  monkeypatch.setattr(designs, 'check_out_dir', other_process_after_the_check)
  path = designs.ensure_default_dataset(str(tmp_path), num=30, seed=0)
  assert others == [os.stat(path).st_ino]  # the other process's copy, in place
  assert os.listdir(tmp_path) == [os.path.basename(path)]  # no staging directory left
  assert len(os.listdir(path)) == 30


@pytest.mark.parametrize('cache', ['FILE/cache', '/proc/designgan-test/cache'])
def test_a_cache_that_cannot_be_written_says_how_to_choose_another_before_generating(
    tmp_path, monkeypatch, cache):
  (tmp_path / 'f').write_text('')
  monkeypatch.setattr(designs, 'generate', lambda *a: pytest.fail('generated first'))
  with pytest.raises(DesignGanError, match='^the (default dataset|cache) directory .* '
                                           'DESIGNGAN_CACHE sets it; or .* --config.data_path'):
    designs.ensure_default_dataset(cache.replace('FILE', str(tmp_path / 'f')), num=30, seed=0)


def test_loader_reads_the_generated_dataset_back(small_design_dir):
  from gan import data  # pylint: disable=import-outside-toplevel
  dataset = data.load_dataset(small_design_dir, datashape='dropempty', val_fraction=0.1, seed=0)
  spec = dataset.spec
  assert (spec.layout.full_height, spec.layout.full_width) == (10, 30)
  assert spec.layout.kept_columns == oracle.FOOTPRINT_COLUMNS
  assert spec.layout.shape == (10, 14, 3)
  assert spec.layout.train_strut_positions == ((7, 7), (5, 10))
  assert spec.durability.values == oracle.DURABILITY_CLASSES
  assert spec.mass.values == oracle.MASS_CLASSES
  assert len(dataset.train) + len(dataset.val) == 240 and len(dataset.val) == 24
  # Back to the full layout, the pixels still measure as their labels.
  for part in (dataset.train, dataset.val):
    full = spec.layout.to_full(data.denormalize(part.images))
    durability, mass = oracle.measure(full)
    np.testing.assert_allclose(durability, np.asarray(spec.durability.values)[part.durability])
    np.testing.assert_allclose(mass, np.asarray(spec.mass.values)[part.mass])
  original = data.load_dataset(small_design_dir, datashape='original')
  assert original.spec.layout.shape == (10, 30, 3)
  assert original.spec.layout.train_strut_positions == ((7, 11), (5, 14))


@pytest.mark.parametrize('where', ['generate', 'write_dataset'])
def test_cli_ctrl_c_is_one_line_and_writes_nothing(where, tmp_path, monkeypatch, capsys):
  """Ctrl-C while generating or writing: one 'interrupted:' line, status 130, no traceback and no
  dataset or staging directory left."""
  real = getattr(designs, where)

  def interrupted(*args, **kwargs):
    if where == 'write_dataset':  # part-way: the staged files exist when the interrupt comes
      monkeypatch.setattr(designs.images_lib, 'write_rgb', _interrupt_after(3))
      return real(*args, **kwargs)
    raise KeyboardInterrupt

  monkeypatch.setattr(designs, where, interrupted)
  assert designs.main(['--out', str(tmp_path / 'data'), '--num', '20']) == 130
  err = capsys.readouterr().err
  assert err.strip().splitlines() == ['interrupted: nothing written (a dataset is written whole '
                                      'or not at all)'], err
  assert os.listdir(tmp_path) == []


def _interrupt_after(n):
  write = images_lib.write_rgb
  count = []

  def write_rgb(*args, **kwargs):
    count.append(1)
    if len(count) > n:
      raise KeyboardInterrupt
    return write(*args, **kwargs)
  return write_rgb


def test_statistics_of_a_single_design_have_no_nan():
  """A correlation of labels that take one value is undefined: None, not NaN."""
  stats = designs.statistics(designs.generate(1, 0))
  assert stats['class_index_correlation'] is None
  assert not any(isinstance(v, float) and v != v for v in stats.values())


def test_cli_ctrl_c_while_overwrite_removes_the_old_dataset(tmp_path, monkeypatch, capsys):
  """A Ctrl-C while --overwrite removed the replaced dataset (seconds for many designs) said
  'nothing written' although the new dataset was in place, and left the old one in a staging
  directory beside it. It is held back until the swap is done, and the line says what happened."""
  out = tmp_path / 'data'
  assert designs.main(['--out', str(out), '--num', '5']) == 0
  rmtree = designs.shutil.rmtree

  def interrupted_rmtree(path, *args, **kwargs):
    if '.replaced-' in os.path.basename(path):  # the old dataset, set aside
      os.kill(os.getpid(), signal.SIGINT)
    return rmtree(path, *args, **kwargs)

  monkeypatch.setattr(designs.shutil, 'rmtree', interrupted_rmtree)
  capsys.readouterr()
  assert designs.main(['--out', str(out), '--num', '3', '--overwrite']) == 130
  err = capsys.readouterr().err
  assert err.strip().splitlines() == [f'interrupted: the designs had already been written to '
                                      f'{out}'], err
  assert os.listdir(tmp_path) == ['data']
  assert len(os.listdir(out)) == 3


def test_a_large_dataset_reports_its_progress_on_stderr(tmp_path, monkeypatch, capsys):
  """50,000 designs took 32 s, and nothing showed until the final line. Here a progress step of
  40 designs stands for 10,000: lines while generating and while writing, none for a dataset of
  at most one step."""
  monkeypatch.setattr(designs, 'PROGRESS_EVERY', 40)
  assert designs.main(['--out', str(tmp_path / 'large'), '--num', '100']) == 0
  captured = capsys.readouterr()
  generated = [line for line in captured.err.splitlines() if line.startswith('generated ')]
  assert generated and generated[-1] == 'generated 100 of 100 designs', captured.err
  assert [line for line in captured.err.splitlines() if line.startswith('wrote ')] == [
      'wrote 40 of 100 designs', 'wrote 80 of 100 designs', 'wrote 100 of 100 designs'], \
      captured.err
  assert captured.out.startswith('wrote 100 designs to ')
  assert designs.main(['--out', str(tmp_path / 'small'), '--num', '40']) == 0
  assert capsys.readouterr().err == ''
  assert designs.main(['--out', str(tmp_path / 'one'), '--num', '1']) == 0
  assert capsys.readouterr().out.startswith('wrote 1 design to ')  # not '1 designs'
  assert len(os.listdir(tmp_path / 'large')) == 100


# Runs a tool (argv[1]: a script or a module) with --help, then says how its stdout writes what it
# cannot encode.
_STDOUT_ERRORS = """
import atexit, runpy, sys
tool = sys.argv[1]
sys.argv = [tool, '--help']
atexit.register(lambda: print('stdout errors:', sys.stdout.errors))
if tool.endswith('.py'):
  runpy.run_path(tool, run_name='__main__')
else:
  runpy.run_module(tool, run_name='__main__', alter_sys=True)
"""


@pytest.mark.parametrize('tool', ['gan.designs', 'gan.evaluate', 'gan.compare', 'gan.bench',
                                  'train.py', 'infer.py'])
def test_every_tool_escapes_what_its_stdout_cannot_encode(tool):
  """A path with non-UTF-8 bytes on a strict UTF-8 stdout (Python's outside the C locales) was a
  UnicodeEncodeError traceback after the work was done ('wrote 2 designs to <path>'). Every tool
  now escapes it, as Python's stderr does."""
  result = subprocess.run([sys.executable, '-c', _STDOUT_ERRORS, tool], cwd=_REPO,
                          env=dict(os.environ, PYTHONIOENCODING='utf-8:strict'),
                          capture_output=True, text=True, timeout=120, check=False)
  assert result.stdout.splitlines()[-1:] == ['stdout errors: backslashreplace'], result.stderr


def test_a_dataset_directory_that_is_not_utf8_is_printed_escaped(tmp_path):
  out = os.path.join(str(tmp_path), os.fsdecode(b'designs\xff'))
  result = subprocess.run([sys.executable, '-m', 'gan.designs', '--out', out, '--num', '2'],
                          cwd=_REPO, env=dict(os.environ, PYTHONIOENCODING='utf-8:strict'),
                          capture_output=True, timeout=120, check=False)
  assert result.returncode == 0 and b'Traceback' not in result.stderr, result.stderr
  assert b'designs\\udcff' in result.stdout and len(os.listdir(out)) == 2


def test_cli_ctrl_c_while_the_statistics_are_computed_is_one_line(tmp_path, monkeypatch, capsys):
  """--stats measures every design again after the dataset is written (about 15 s for 200,000
  designs): a Ctrl-C then was a KeyboardInterrupt traceback. It is the 'interrupted:' line that
  says the designs were written, and status 130."""
  def interrupted(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(designs, 'statistics', interrupted)
  out = tmp_path / 'data'
  assert designs.main(['--out', str(out), '--num', '5', '--stats']) == 130
  err = capsys.readouterr().err
  assert err.strip().splitlines() == [f'interrupted: the designs had already been written to '
                                      f'{out}'], err
  assert len(os.listdir(out)) == 5


def test_cli_a_dataset_that_cannot_be_written_is_one_error_line(tmp_path, monkeypatch, capsys):
  """A full disk while the designs were written ended in an OSError traceback (the staged files
  removed, as `write_dataset` leaves nothing): now one error line naming --out, and status 1."""
  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(images_lib, 'write_rgb', full_disk)
  out = tmp_path / 'data'
  assert designs.main(['--out', str(out), '--num', '5']) == 1
  err = capsys.readouterr().err
  assert err == f'error: --out {out}: cannot write (No space left on device)\n', err
  assert os.listdir(tmp_path) == []


def test_every_design_is_within_the_readmes_margin_of_its_class_centre(default_designs):
  """The README's 'margin to the class boundary': within +-0.26 of a class step of its centre
  (the generator's +-25% target, plus the uint8 rounding of the pixels; one default design
  rounded to 0.264 before such designs were redrawn). Classes alone do not show it: a design just
  inside a boundary still measures as its label."""
  assert designs.CLASS_MARGIN == 0.26
  d_raw, m_raw = oracle.measure_raw(default_designs.images)
  assert np.abs(d_raw - default_designs.durability).max() <= 0.26 * oracle.DURABILITY_STEP
  assert np.abs(m_raw - default_designs.mass).max() <= 0.26 * oracle.MASS_STEP


def test_file_names_spell_labels_struts_and_mean_grade_from_the_pixels():
  """`<durability>_<thickness_mm>_<grade_pct>_<strut_code>_<mass>_<id>.bmp`: the strut code is
  the palette index of each strut pixel's colour (struts in oracle.STRUTS order), the grade the
  mean cell grade G/255 in percent, the thickness 1 + 4 x the mean cell thickness R/255 (1-5 mm),
  the id the design's index in 5 digits."""
  generated = designs.generate(60, 4)
  names = generated.file_names()
  palette = [c for _, c in designs.STRUT_PALETTE]
  cells = oracle.CELLS.astype(bool)
  mean_t = []
  for i, (name, image) in enumerate(zip(names, generated.images)):
    d, thickness, grade, struts, m, ident = name[:-len('.bmp')].split('_')
    assert (float(d), float(m), ident) == (generated.durability[i], generated.mass[i], f'{i:05d}')
    assert struts == ''.join(str(palette.index(tuple(image[r, c]))) for r, c in oracle.STRUTS)
    assert int(grade) == round(100 * image[cells][:, 1].mean() / 255)
    mean_t.append((image[cells][:, 0].mean() / 255, float(thickness)))
  x, y = np.asarray(mean_t).T
  assert np.abs(1 + 4 * x - y).max() <= 0.005  # written to 0.01 mm
  assert len(set(names)) == len(names)


def test_ids_take_five_digits_or_as_many_as_the_largest_id_needs():
  assert [designs.id_width(n) for n in (1, 60, 100_000, 100_001, 1_000_001)] == [5, 5, 5, 6, 7]


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(nd=st.integers(1, 13), nm=st.integers(1, 13), num=st.integers(1, 400),
                  seed=st.integers(0, 2 ** 32 - 1))
def test_class_pairs_are_dealt_evenly_over_pairs_and_over_each_label(nd, nm, num, seed):
  """Whatever the count, no pair, durability class or mass class gets two more designs than
  another (version 1 gave the r < nd * nm left over to the first r pairs: durability 1.0 first)."""
  pairs = designs.deal_class_pairs(np.random.default_rng(seed), num, nd, nm)
  assert pairs.shape == (num,) and pairs.min() >= 0 and pairs.max() < nd * nm
  for counts in (np.bincount(pairs, minlength=nd * nm), np.bincount(pairs // nm, minlength=nd),
                 np.bincount(pairs % nm, minlength=nm)):
    assert counts.max() - counts.min() <= 1, counts


def test_a_partial_round_of_class_pairs_favours_no_class():
  """Which classes get the extra designs is drawn: over seeds, every class gets them."""
  nd, nm = len(oracle.DURABILITY_CLASSES), len(oracle.MASS_CLASSES)
  favoured_d, favoured_m = set(), set()
  for seed in range(8):
    generated = designs.generate(60, seed)
    d_index = np.round((generated.durability - 1.0) / oracle.DURABILITY_STEP).astype(int)
    m_index = np.round((generated.mass - 2.13) / oracle.MASS_STEP).astype(int)
    assert np.bincount(d_index, minlength=nd).tolist() == [6] * nd
    assert np.bincount(m_index, minlength=nm).tolist() == [5] * nm
    pair = designs.deal_class_pairs(np.random.default_rng(seed), 7, nd, nm)
    favoured_d.update((pair // nm).tolist())
    favoured_m.update((pair % nm).tolist())
  assert favoured_d == set(range(nd)) and favoured_m == set(range(nm))


def test_label_pairs_are_shuffled_over_the_designs():
  """Dealt evenly, then shuffled: the ids (the order of the designs) say nothing of labels."""
  generated = designs.generate(240, 1)
  d_index = np.round((generated.durability - 1.0) / oracle.DURABILITY_STEP)
  m_index = np.round((generated.mass - 2.13) / oracle.MASS_STEP)
  pair = d_index * len(oracle.MASS_CLASSES) + m_index
  assert np.bincount(pair.astype(int)).tolist() == [2] * 120
  assert np.mean(pair == np.arange(240) % 120) < 0.1
  assert abs(np.corrcoef(np.arange(240), pair)[0, 1]) < 0.3


def test_progress_lines_come_only_when_another_step_is_done(monkeypatch):
  monkeypatch.setattr(designs, 'PROGRESS_EVERY', 40)
  lines = []
  designs.generate(300, 0, progress=lines.append)
  counts = [int(line.split()[1].replace(',', '')) for line in lines]
  assert lines[-1] == 'generated 300 of 300 designs'
  steps = [n // 40 for n in counts[:-1]]
  assert steps == sorted(set(steps)) and 0 not in steps, lines  # a new step each, none before
  assert len(lines) <= 300 // 40 + 1


def test_the_largest_number_of_designs_is_allowed(monkeypatch):
  monkeypatch.setattr(designs, 'MAX_NUM_DESIGNS', 3)
  assert len(designs.generate(3, 0)) == 3
  with pytest.raises(DesignGanError, match='from 1 to 3, got 4'):
    designs.generate(4, 0)


@pytest.mark.parametrize('exists', [False, True])
def test_cli_overwrite_of_a_new_or_empty_directory_writes_it(tmp_path, exists):
  out = tmp_path / 'data'
  if exists:
    out.mkdir()
  assert designs.main(['--out', str(out), '--num', '3', '--overwrite']) == 0
  assert len(os.listdir(out)) == 3 and os.listdir(tmp_path) == ['data']


@pytest.mark.parametrize('fails, code', [('new', errno.EIO), ('old', errno.EBUSY)])
def test_a_replacement_whose_rename_fails_keeps_the_old_dataset_and_leaves_nothing(
    tmp_path, monkeypatch, fails, code):
  """The new dataset failing to go into place puts the old one back; the old one failing to be
  set aside (EBUSY: --out is a mount point) left an empty '<out>.replaced-...' beside it."""
  out = tmp_path / 'data'
  designs.write_dataset(str(out), designs.generate(4, 0))
  old = sorted(os.listdir(out))
  rename = os.rename

  def failing(src, dst):
    if ('.partial-' in os.path.basename(src) if fails == 'new'
        else '.replaced-' in os.path.basename(dst)):
      raise OSError(code, os.strerror(code))
    return rename(src, dst)

  monkeypatch.setattr(designs.os, 'rename', failing)
  with pytest.raises(OSError, match=os.strerror(code)):
    designs.write_dataset(str(out), designs.generate(3, 1), overwrite=True)
  assert sorted(os.listdir(out)) == old
  assert os.listdir(tmp_path) == ['data']


@pytest.mark.parametrize('entries, refused', [
    (['a.png', 'B.BMP'], None),
    (['a.bmp', 'sub.bmp/'], 'holds sub.bmp; '),  # a directory, though named like a design
    (['x', 'y', 'z'], 'holds x, y, z; '),
    (['w', 'x', 'y', 'z'], 'holds w, x, y ...; '),
])
def test_overwrite_replaces_a_directory_of_bmp_or_png_files_only(tmp_path, entries, refused):
  out = tmp_path / 'data'
  out.mkdir()
  for entry in entries:
    if entry.endswith('/'):
      (out / entry).mkdir()
    else:
      (out / entry).write_text('')
  if refused is None:
    assert designs.check_out_dir(str(out), overwrite=True) == str(out)
  else:
    with pytest.raises(DesignGanError, match=re.escape(refused)):
      designs.check_out_dir(str(out), overwrite=True)


def test_the_cache_is_designgan_cache_then_xdg_cache_home_then_home(monkeypatch, tmp_path):
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  monkeypatch.setenv('DESIGNGAN_CACHE', str(tmp_path / 'mine'))
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert designs.default_cache_dir() == str(tmp_path / 'mine')
  monkeypatch.setenv('DESIGNGAN_CACHE', '')
  assert designs.default_cache_dir() == str(tmp_path / 'xdg' / 'designgan')
  monkeypatch.delenv('XDG_CACHE_HOME')
  assert designs.default_cache_dir() == str(tmp_path / 'home' / '.cache' / 'designgan')


def test_a_cache_of_another_generator_version_is_not_reused(tmp_path, monkeypatch):
  first = designs.ensure_default_dataset(str(tmp_path), num=3, seed=0)
  monkeypatch.setattr(designs, 'GENERATOR_VERSION', designs.GENERATOR_VERSION + 1)
  second = designs.ensure_default_dataset(str(tmp_path), num=3, seed=0)
  assert second != first and len(os.listdir(second)) == 3
  assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (first, second))


def test_the_fingerprint_covers_the_labels_too():
  generated = designs.generate(5, 0)
  relabelled = dataclasses.replace(generated, mass=generated.mass[::-1].copy())
  assert designs.fingerprint(relabelled) != designs.fingerprint(generated)


def test_designs_that_miss_their_targets_in_every_round_are_an_error_not_returned():
  """Designs still unfinished after `max_rounds` would be black images with labels they do not
  measure as (300 designs need more than one round: 255 reach their targets in the first)."""
  with pytest.raises(RuntimeError, match=r'^\d+ designs did not reach their targets in 1 rounds'):
    designs.generate(300, 0, max_rounds=1)


def test_statistics_measure_horizontal_neighbours_and_strut_effects():
  """The README's rows: 'correlation of horizontally adjacent cell thicknesses' is 1 for designs
  whose thickness changes only from row to row; no design changes class when struts that are
  already absent (black) are removed."""
  generated = designs.generate(40, 2)
  images = generated.images.copy()
  rows = np.random.default_rng(0).integers(0, 256, (40, 10, 1), dtype=np.uint8)
  images[..., 0] = rows * oracle.CELLS
  for r, c in oracle.STRUTS:
    images[:, r, c] = 0
  stats = designs.statistics(dataclasses.replace(generated, images=images))
  assert stats['neighbour_thickness_correlation'] == pytest.approx(1.0)
  assert stats['strut_changes_durability_share'] == 0.0


_FOOTPRINT = [c for a, b in ((0, 6), (10, 16), (20, 22)) for c in range(a, b)]  # the docstring's
_STRUT_PIXELS = ((7, 11), (5, 14))


def _oracle_by_the_docstring(image):
  """(d_raw, m_raw) of one design, cell by cell as the docstring of gan/oracle.py states them."""
  px = image.astype(np.float64) / 255
  cells = [(r, c) for r in range(10) for c in _FOOTPRINT if (r, c) not in _STRUT_PIXELS]
  t, g, h = ({cell: px[cell][i] for cell in cells} for i in range(3))
  m_raw = 2.10 + 0.30 * sum(t[x] * (1 + 0.25 * g[x]) for x in cells) / len(cells)
  load = sum((0.4 + 0.6 * ((x[0] - 4.5) / 4.5) ** 2) * t[x] * (0.5 + g[x]) * (1 + h[x])
             for x in cells)
  path = load / (sum(t.values()) + 1e-6)
  stiffening = 0.0
  for r, c in _STRUT_PIXELS:
    red, green, blue = (float(v) for v in image[r, c])
    neighbours = [t[(r + dr, c + dc)] for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    stiffening += (0.5 * red + 0.3 * green + 0.2 * blue) / 255 * np.mean(neighbours)
  return 0.51 + 1.15 * path * (1 + 0.25 * stiffening), m_raw


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(seed=st.integers(0, 2 ** 32 - 1), empty=st.floats(0, 0.9))
def test_the_oracle_is_its_docstring_formulas_on_random_designs(seed, empty):
  """Every constant, channel and neighbour of the formulas, on designs of random pixels (a share
  `empty` of cells without material, struts of any colour, noise outside the footprint): the
  hand-computed design above has no grade, treatment or coloured strut to tell them apart."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (3, 10, 30, 3), dtype=np.uint8)
  images[..., 0] *= (rng.random((3, 10, 30)) >= empty).astype(np.uint8)
  d_raw, m_raw = oracle.measure_raw(images)
  for image, d, m in zip(images, d_raw, m_raw):
    expected_d, expected_m = _oracle_by_the_docstring(image)
    assert d == pytest.approx(expected_d, rel=1e-12) and m == pytest.approx(expected_m, rel=1e-12)


def test_one_design_measures_as_python_floats_and_other_dtypes_are_refused():
  image = np.zeros((10, 30, 3), np.uint8)
  durability, mass = oracle.measure(image)
  assert type(durability) is float and type(mass) is float  # pylint: disable=unidiomatic-typecheck
  assert oracle.measure(image[None])[0].shape == (1,)
  with pytest.raises(ValueError, match='uint8'):  # 0..1 floats would measure as nearly empty
    oracle.measure(image.astype(np.float32))
