"""Tests of inference (issue 4): infer.py and gan/inference_output.py on real tiny training runs.

Module fixtures train tiny runs on `small_design_dir` with `gan.trainer.train(config)` in worker
processes, with XLA's costly CPU optimisations off: `main_run`, of the default family (vanilla,
wgangp, mlp), trains 2 epochs with a checkpoint after each, so `--step` can be tested; `runs` adds
one run of each of the other 11 families (gan_model x loss x network), trained by two workers at
once (each calls `trainer.train` for half of them; compiling dominates and is single-threaded).
Only the test marked slow needs `runs`.

Most generation goes through `gan.inference_output.run(...)` in-process; the command line
(`infer.py` in a subprocess, cwd = repo root) is used for the documented example command, the
default output path, --sweep and every kind of bad input. What one request may write, and for
models with other than two struts, is in tests/test_infer_requests.py.
"""

import concurrent.futures
import csv
import itertools
import json
import os
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from gan import checkpoints
from gan import images as images_lib
from gan import inference
from gan import oracle
from gan import paths as paths_lib
from gan import summaries
from gan.errors import DesignGanError
from tests.infer_helpers import (CLI_TIMEOUT_S, ENV, FULL_SHAPE, REPO, TINY, TRAIN_ENV,
                                 TRAIN_TIMEOUT_S, TRAIN_WORKER, assert_names_problem, bmp_names,
                                 generate, infer_cli, read_bytes, read_manifest, request, rgb)

STRUT_PIXELS = ((7, 11), (5, 14))
DURABILITIES = oracle.DURABILITY_CLASSES  # the vocabulary of small_design_dir: 1.0 .. 1.9
MASSES = oracle.MASS_CLASSES              # 2.13 .. 2.24
FAMILIES = tuple(itertools.product(('vanilla', 'infogan'), ('bce', 'wgan', 'wgangp'),
                                   ('mlp', 'selfattention')))
MAIN = ('vanilla', 'wgangp', 'mlp')  # trained 2 epochs, checkpoints 1 and 2
DROPPED_COLUMNS = tuple(range(6, 10)) + tuple(range(16, 20)) + tuple(range(22, 30))


def _family_id(family) -> str:
  """('vanilla', 'bce', 'mlp') -> 'vanilla_bce_mlp'."""
  return '_'.join(family)


def _has_gpu() -> bool:
  """True when JAX sees a GPU (then --device=gpu is valid)."""
  return any(d.platform == 'gpu' for d in jax.devices())


# ---------------------------------------------------------------------------------------------
# Fixtures


def _train(base, families, small_design_dir) -> dict:
  """{family: log_path} of tiny runs of `families` under `base`, trained by up to two worker
  processes at once. MAIN trains 2 epochs with a checkpoint after each."""
  overrides = {}
  for family in families:
    gan_model, loss, net = family
    o = dict(TINY, data_path=small_design_dir, gan_model=gan_model, loss_mode=loss, gen_mode=net,
             disc_mode=net, log_path=str(base / _family_id(family)))
    if family == MAIN:
      o.update(epochs=2, checkpoint_every=1)
    overrides[family] = o
  # Balance the two workers: self-attention runs compile about twice as long as MLP runs.
  mlp = [f for f in families if f[2] == 'mlp']
  attn = [f for f in families if f[2] == 'selfattention']
  workers = min(2, os.cpu_count() or 1)
  shares = ([mlp[0::2] + attn[1::2], mlp[1::2] + attn[0::2]] if workers == 2
            else [list(families)])
  procs = []
  for i, share in enumerate(s for s in shares if s):
    log = open(base / f'worker{i}.log', 'w')  # pylint: disable=consider-using-with
    payload = json.dumps([overrides[f] for f in share])
    procs.append((subprocess.Popen([sys.executable, '-c', TRAIN_WORKER, payload], cwd=REPO,
                                   env=TRAIN_ENV, stdout=log, stderr=subprocess.STDOUT), log))
  failures = []
  for i, (proc, log) in enumerate(procs):
    try:
      rc = proc.wait(timeout=TRAIN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      proc.kill()
      rc = 'timeout'
    log.close()
    if rc != 0:
      with open(base / f'worker{i}.log') as f:
        failures.append(f'training worker {i} exited {rc}:\n{f.read()[-4000:]}')
  if failures:
    pytest.fail('\n'.join(failures))
  paths = {f: o['log_path'] for f, o in overrides.items()}
  for family, path in paths.items():
    assert os.path.isdir(os.path.join(path, 'checkpoints')), family
  return paths


@pytest.fixture(scope='module')
def main_run(small_design_dir, tmp_path_factory):
  """The vanilla/wgangp/mlp run: checkpoints of epochs 1 and 2. Trained on its own, so that the
  tests not marked slow need none of the other 11 families."""
  return _train(tmp_path_factory.mktemp('infer_runs'), [MAIN], small_design_dir)[MAIN]


@pytest.fixture(scope='module')
def runs(main_run, small_design_dir, tmp_path_factory):
  """{family: log_path} of 12 tiny trained runs, one per model family (main_run's among them)."""
  others = [f for f in FAMILIES if f != MAIN]
  return {MAIN: main_run, **_train(tmp_path_factory.mktemp('infer_runs'), others,
                                   small_design_dir)}


# ---------------------------------------------------------------------------------------------
# Helpers


def _assert_bmp_24bit(path):
  """A Windows BMP with a 40-byte (or larger) info header, 30x10 pixels and 24 bits per pixel."""
  with open(path, 'rb') as f:
    header = f.read(30)
  assert header[:2] == b'BM', path
  width = int.from_bytes(header[18:22], 'little', signed=True)
  height = int.from_bytes(header[22:26], 'little', signed=True)
  bpp = int.from_bytes(header[28:30], 'little')
  assert (width, abs(height), bpp) == (30, 10, 24), (path, width, height, bpp)


def _check_output(out_dir, files, requests, struts, seed):
  """Checks designs and manifest; `requests` is the (durability, mass) of each file in order.

  Returns the designs as a (N, 10, 30, 3) uint8 array in file order.
  """
  names = [os.path.basename(p) for p in files]
  assert all(os.path.dirname(p) == str(out_dir) for p in files)
  assert len(names) == len(requests) == len(set(names))
  assert sorted(names) == bmp_names(out_dir)
  designs = []
  for path in files:
    _assert_bmp_24bit(path)
    image = images_lib.read_rgb(path)
    assert image.shape == FULL_SHAPE and image.dtype == np.uint8, path
    assert not image[:, list(DROPPED_COLUMNS)].any(), f'{path}: a dropped column is not black'
    for (r, c), color in zip(STRUT_PIXELS, struts):
      assert tuple(image[r, c]) == tuple(color), (path, (r, c), image[r, c], color)
    designs.append(image)
  designs = np.stack(designs)

  rows = read_manifest(out_dir)
  assert [row['file'] for row in rows] == names
  measured_d, measured_m = oracle.measure(designs)
  for i, (row, (durability, mass)) in enumerate(zip(rows, requests)):
    assert float(row['durability']) == pytest.approx(durability), row
    assert float(row['mass']) == pytest.approx(mass), row
    assert rgb(row['strut1']) == tuple(struts[0]), row
    assert rgb(row['strut2']) == tuple(struts[1]), row
    assert int(row['seed']) == seed, row
    # Trained on the synthetic designs: the oracle's numbers are filled in and are the oracle's.
    assert row['measured_durability'].strip() and row['measured_mass'].strip(), row
    assert float(row['measured_durability']) == pytest.approx(measured_d[i]), row
    assert float(row['measured_mass']) == pytest.approx(measured_m[i]), row
  return designs


def _expected_grid(designs, columns=10) -> np.ndarray:
  """The contact sheet of designs in rows of `columns`, padded with black designs."""
  n = len(designs)
  rows, cols = -(-n // columns), min(columns, n)
  padded = np.zeros((rows * cols,) + designs.shape[1:], np.uint8)
  padded[:n] = designs
  return summaries.design_grid(padded.reshape((rows, cols) + designs.shape[1:]))


# ---------------------------------------------------------------------------------------------
# Every family


@pytest.mark.slow
@pytest.mark.parametrize('family', FAMILIES, ids=[_family_id(f) for f in FAMILIES])
def test_every_family_generates_valid_designs(runs, family, tmp_path):
  """Each of the 12 families restores on the CPU and writes full-layout designs + manifest."""
  i = FAMILIES.index(family)
  durability, mass = DURABILITIES[i % len(DURABILITIES)], MASSES[(5 * i) % len(MASSES)]
  struts = ((20 * i, 255 - 7 * i, 3 * i + 1), (255, i, 128))
  out = tmp_path / 'out'
  out_dir, files = generate(runs[family], out, durability=durability, mass=mass,
                             struts=tuple(','.join(map(str, c)) for c in struts), num=3, seed=i)
  assert out_dir == str(out)
  assert sorted(os.listdir(out)) == sorted(bmp_names(out) + ['manifest.csv'])  # no grid
  designs = _check_output(out, files, [(durability, mass)] * 3, struts, seed=i)
  assert len({d.tobytes() for d in designs}) > 1, 'every design of a request is identical'


# ---------------------------------------------------------------------------------------------
# The command line, model_path forms, steps and seeds


def test_cli_expands_a_home_directory_in_its_paths(main_run, tmp_path):
  """`--model_path=~/run` reaches Python unexpanded (the shell expands a ~ only at the start of a
  word): it was 'no such file or directory', and `--gen_img_path=~/out` made a directory named '~'
  in the working directory."""
  home = tmp_path / 'home'
  home.mkdir()
  os.symlink(main_run, home / 'run')
  result = subprocess.run(
      [sys.executable, 'infer.py', '--model_path=~/run', '--gen_img_path=~/out', '--durability=1.4',
       '--mass=2.14', '--num_gen_image=2', '--device=cpu'],
      cwd=REPO, env=dict(ENV, HOME=str(home)), capture_output=True, text=True,
      timeout=CLI_TIMEOUT_S, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout == (f'wrote 2 designs and manifest.csv to {home / "out"} (step 2 of '
                           f'{home / "run" / "checkpoints"})\n')
  assert len(bmp_names(home / 'out')) == 2
  assert not os.path.exists(os.path.join(REPO, '~'))


def test_cli_example_command_writes_to_default_path(main_run, tmp_path):
  """The documented command (minus --gen_img_path) writes into <run>/inference_output, with a
  grid; the library gives byte-identical files for the same request."""
  default_out = os.path.join(main_run, 'inference_output')
  assert not os.path.exists(default_out)
  result = infer_cli(f'--model_path={main_run}', '--durability=1.4', '--mass=2.14',
                      '--strut1=0,0,0', '--strut2=255,255,255', '--num_gen_image=50',
                      '--device=cpu', '--seed=0', '--grid')
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  assert result.stdout == (f'wrote 50 designs, manifest.csv and grid.png to {default_out} (step '
                           f'2 of {os.path.join(main_run, "checkpoints")})\n')
  names = bmp_names(default_out)
  assert sorted(os.listdir(default_out)) == sorted(names + ['manifest.csv', 'grid.png'])
  files = [os.path.join(default_out, row['file']) for row in read_manifest(default_out)]
  designs = _check_output(default_out, files, [(1.4, 2.14)] * 50,
                          ((0, 0, 0), (255, 255, 255)), seed=0)
  grid = images_lib.read_rgb(os.path.join(default_out, 'grid.png'))
  np.testing.assert_array_equal(grid, _expected_grid(designs))

  _, lib_files = generate(main_run, tmp_path / 'lib', num=50, grid=True)
  assert [os.path.basename(p) for p in lib_files] == [os.path.basename(p) for p in files]
  assert read_bytes(tmp_path / 'lib') == read_bytes(default_out)


def test_default_output_path_in_library(main_run, tmp_path):
  """out_dir=None writes <run>/inference_output, whichever model_path form names the run."""
  run_dir = str(tmp_path / 'run')  # a copy: main_run must keep no inference_output
  shutil.copytree(main_run, run_dir)
  step_dir = os.path.join(run_dir, 'checkpoints', '1')
  out_dir, files = generate(step_dir, None, num=2)
  assert out_dir == os.path.join(run_dir, 'inference_output')
  assert len(files) == 2 and all(os.path.isfile(p) for p in files)
  assert all(os.path.dirname(p) == out_dir for p in files)


def test_a_class_given_as_float32_or_with_a_trailing_zero_is_that_class(main_run, tmp_path):
  """A request names a class exactly, up to float32 rounding: a caller's np.float32(1.4)."""
  expected = read_bytes(generate(main_run, tmp_path / 'a', num=2)[0])
  assert read_bytes(generate(main_run, tmp_path / 'b', num=2, durability=np.float32(1.4),
                             mass=2.140)[0]) == expected


def test_model_path_forms_give_identical_images(main_run, tmp_path, monkeypatch):
  """The run dir, its checkpoints dir and the latest step dir (absolute, relative, with a
  trailing slash) all load the same checkpoint."""
  ckpts = os.path.join(main_run, 'checkpoints')
  forms = {'run': main_run, 'checkpoints': ckpts, 'step': os.path.join(ckpts, '2'),
           'step_slash': os.path.join(ckpts, '2') + os.sep}
  generate(main_run, tmp_path / 'reference', num=4)
  reference = read_bytes(tmp_path / 'reference')
  assert len(reference) == 5
  for name, path in forms.items():
    generate(path, tmp_path / name, num=4)
    assert read_bytes(tmp_path / name) == reference, name
  monkeypatch.chdir(os.path.dirname(main_run))
  generate(os.path.basename(main_run), tmp_path / 'relative', num=4)
  assert read_bytes(tmp_path / 'relative') == reference


def test_loading_restores_the_checkpoint_without_initialising_a_model(main_run, monkeypatch):
  """inference.load restores into a target of shapes only: no network is initialised (eagerly,
  that compiles about 70 small XLA programs: 8 s of infer.py's 10 s), and every restored array
  is the one restored into an initialised model, on the requested device."""
  ckpts = os.path.join(main_run, 'checkpoints')
  reference = inference.load(main_run)
  mngr = checkpoints.manager(ckpts, keep=10, create=False)
  try:
    _, initialised = inference.step.init(reference.config, reference.spec,
                                         reference.spec.layout.strut_mask())
    expected = checkpoints.restore_state(mngr, 2, initialised)
  finally:
    mngr.close()

  def no_init(*args, **kwargs):
    raise AssertionError('inference.load initialised a model')

  monkeypatch.setattr(inference.step, 'init', no_init)
  cpu = jax.devices('cpu')[0]
  model = inference.load(main_run, device=cpu)
  flat, tree = jax.tree.flatten(model.state)
  expected_flat, expected_tree = jax.tree.flatten(expected)
  assert tree == expected_tree
  for leaf, want in zip(flat, expected_flat):
    assert leaf.devices() == {cpu}
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(want))


def test_step_selects_checkpoint(main_run, tmp_path):
  """--step picks a checkpoint; the default is the latest; a step dir is the same as --step."""
  ckpts = os.path.join(main_run, 'checkpoints')
  assert sorted(os.listdir(ckpts)) == ['1', '2']
  for name, kwargs in {'latest': {}, 'step2': {'step': 2}, 'step1': {'step': 1},
                       'dir1': {'model_path': os.path.join(ckpts, '1')},
                       'ckpts_step1': {'model_path': ckpts, 'step': 1}}.items():
    written = request(kwargs.pop('model_path', main_run), tmp_path / name, num=4, **kwargs)
    assert (written.checkpoint_dir, written.step) == (ckpts, 2 if name[-1] != '1' else 1), name
  latest = read_bytes(tmp_path / 'latest')
  assert read_bytes(tmp_path / 'step2') == latest
  first = read_bytes(tmp_path / 'step1')
  assert read_bytes(tmp_path / 'dir1') == first
  assert read_bytes(tmp_path / 'ckpts_step1') == first
  assert first != latest, 'the checkpoints of epochs 1 and 2 generate the same designs'

  with pytest.raises(DesignGanError, match=r'1, 2'):
    generate(main_run, tmp_path / 'no_step', step=7)
  with pytest.raises(DesignGanError):
    generate(os.path.join(ckpts, '2'), tmp_path / 'conflict', step=1)
  assert not os.path.exists(tmp_path / 'no_step') and not os.path.exists(tmp_path / 'conflict')


def test_same_seed_same_bytes_other_seed_other_designs(main_run, tmp_path):
  """Generation is a function of the seed."""
  generate(main_run, tmp_path / 'a', num=5, seed=0)
  generate(main_run, tmp_path / 'b', num=5, seed=0)
  out_dir, files = generate(main_run, tmp_path / 'c', num=5, seed=1)
  same = read_bytes(tmp_path / 'a')
  assert read_bytes(tmp_path / 'b') == same
  other = read_bytes(tmp_path / 'c')
  assert other.keys() == same.keys()
  assert all(other[n] != same[n] for n in bmp_names(tmp_path / 'a')), \
      'seed 1 repeats a design of seed 0'
  _check_output(out_dir, files, [(1.4, 2.14)] * 5, ((0, 0, 0), (255, 255, 255)), seed=1)


def test_designs_follow_requested_struts_and_classes(main_run, tmp_path):
  """The strut colours are pasted exactly whatever the model drew; whitespace-separated colours
  and the lowest/highest classes (spelled 1 and 2.24 in names) work."""
  struts = ((1, 2, 3), (250, 128, 0))
  out_dir, files = generate(main_run, tmp_path / 'out', durability=1.0, mass=2.24,
                             struts=('1 2 3', ' 250, 128 ,0 '), num=2, seed=3)
  _check_output(out_dir, files, [(1.0, 2.24)] * 2, struts, seed=3)
  assert all(os.path.basename(p).startswith('1_2.24_') for p in files), files


# ---------------------------------------------------------------------------------------------
# Grids and sweeps


def test_grid_without_sweep(main_run, tmp_path):
  """--grid alone: rows of 10 designs, the last row padded with black designs."""
  out_dir, files = generate(main_run, tmp_path / 'out', num=12, grid=True)
  designs = _check_output(out_dir, files, [(1.4, 2.14)] * 12, ((0, 0, 0), (255, 255, 255)), 0)
  grid = images_lib.read_rgb(os.path.join(out_dir, 'grid.png'))
  assert grid.shape == summaries.design_grid(np.zeros((2, 10) + FULL_SHAPE, np.uint8)).shape
  np.testing.assert_array_equal(grid, _expected_grid(designs))


def test_a_grid_of_fewer_designs_than_a_row_is_as_wide_as_they_are(main_run, tmp_path):
  """--grid with 3 designs: one row of 3, not a row of 10 with 7 black designs."""
  out_dir, files = generate(main_run, tmp_path / 'out', num=3, grid=True)
  designs = np.stack([images_lib.read_rgb(p) for p in files])
  grid = images_lib.read_rgb(os.path.join(out_dir, 'grid.png'))
  np.testing.assert_array_equal(grid, summaries.design_grid(designs[None]))


def test_cli_sweep_writes_every_pair_and_grid(main_run, tmp_path):
  """--sweep: num designs for each of the 10 x 12 (durability, mass) pairs and a 10 x 12 grid of
  the first design of each pair."""
  out = tmp_path / 'sweep'
  result = infer_cli(f'--model_path={main_run}', '--sweep', '--grid', '--num_gen_image=2',
                      '--strut1=9,8,7', '--strut2=0,255,0', '--device=cpu', '--seed=5',
                      f'--gen_img_path={out}')
  assert result.returncode == 0, result.stderr
  rows = read_manifest(out)
  assert len(rows) == len(bmp_names(out)) == 10 * 12 * 2
  requests = [(float(r['durability']), float(r['mass'])) for r in rows]
  pairs = {(d, m) for d in DURABILITIES for m in MASSES}
  counts = {}
  for d, m in requests:
    key = (round(d, 2), round(m, 2))
    counts[key] = counts.get(key, 0) + 1
  assert counts == {p: 2 for p in pairs}
  files = [str(out / r['file']) for r in rows]
  designs = _check_output(out, files, requests, ((9, 8, 7), (0, 255, 0)), seed=5)

  first = {}
  for key, design in zip(requests, designs):
    first.setdefault((round(key[0], 2), round(key[1], 2)), design)
  expected = np.stack([np.stack([first[(d, m)] for m in MASSES]) for d in DURABILITIES])
  grid = images_lib.read_rgb(str(out / 'grid.png'))
  assert grid.shape == summaries.design_grid(np.zeros((10, 12) + FULL_SHAPE, np.uint8)).shape
  np.testing.assert_array_equal(grid, summaries.design_grid(expected))


# ---------------------------------------------------------------------------------------------
# Bad input: one line on stderr, non-zero exit, nothing written


def _truncate_files(directory, size=0, pattern=''):
  """Cuts every file under `directory` whose relative path contains `pattern` to `size` bytes."""
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      if pattern in os.path.relpath(path, directory):
        with open(path, 'r+b') as f:
          f.truncate(min(size, os.path.getsize(path)))


def _overwrite_files(directory, pattern):
  """Replaces every file under `directory` whose relative path contains `pattern` with random
  bytes (at least 16)."""
  for root, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(root, name)
      if pattern in os.path.relpath(path, directory):
        size = os.path.getsize(path)
        with open(path, 'wb') as f:
          f.write(np.random.default_rng(0).bytes(max(size, 16)))


def _edit_meta(step_dir, edit):
  """Applies `edit(meta_dict)` to the JSON metadata of a step (the file under meta/)."""
  meta_dir = os.path.join(step_dir, 'meta')
  path = [os.path.join(meta_dir, n) for n in os.listdir(meta_dir)
          if n not in ('commit_success.txt',) and not n.startswith('_')]
  assert len(path) == 1, os.listdir(meta_dir)
  with open(path[0]) as f:
    meta = json.load(f)
  edit(meta)
  with open(path[0], 'w') as f:
    json.dump(meta, f)


def _set_config(key, value):
  """A `_edit_meta` edit setting one (existing) config field."""
  def edit(meta):
    assert key in meta['config']
    meta['config'][key] = value
  return edit


def _copy_model(main_run, model_dir):
  """A copy of the main run's checkpoints (to damage) under model_dir/checkpoints."""
  shutil.copytree(os.path.join(main_run, 'checkpoints'), os.path.join(model_dir, 'checkpoints'))
  return str(model_dir)


def _step2(model_dir):
  """The latest step directory of a model copy."""
  return os.path.join(model_dir, 'checkpoints', '2')


def _only_in_best(model_dir):
  """The model copy as a run stopped between its first evaluation and its first checkpoint:
  checkpoints/ empty, best/ holding step 2."""
  os.makedirs(os.path.join(model_dir, 'best'))
  os.rename(_step2(model_dir), os.path.join(model_dir, 'best', '2'))
  shutil.rmtree(os.path.join(model_dir, 'checkpoints', '1'))


# Through infer.py. name -> (flags replacing the example's, setup(model dir) or None, fragments
# the error line must contain). {model} is the model copy's directory.
_CLI_CASES = {
    'durability_not_in_vocabulary': (['--durability=2.5'], None,
                                     ['durability', '2.5'] + [f'{d:g}' for d in DURABILITIES]),
    'mass_not_in_vocabulary': (['--mass=3.14'], None,
                               ['mass', '3.14'] + [f'{m:g}' for m in MASSES]),
    'strut_two_values': (['--strut1=0,0'], None, ['strut1']),
    'strut_above_255': (['--strut2=0,0,256'], None, ['strut2', '256']),
    'missing_path': (['--model_path={model}/does_not_exist'], None, ['does_not_exist']),
    'no_checkpoint': (['--model_path={model}/empty'],
                      lambda m: os.makedirs(os.path.join(m, 'empty')), ['checkpoint']),
    'state_files_emptied': ([], lambda m: _truncate_files(os.path.join(_step2(m), 'state')),
                            ['checkpoint']),
    'state_data_truncated': ([], lambda m: _truncate_files(os.path.join(_step2(m), 'state'), 100,
                                                           'd' + os.sep),
                             ['checkpoint']),
    'state_manifest_overwritten': ([], lambda m: _overwrite_files(
        os.path.join(_step2(m), 'state'), 'manifest.ocdbt'), ['checkpoint']),
    'meta_zdim_changed': ([], lambda m: _edit_meta(_step2(m), _set_config('zdim', 16)),
                          ['checkpoint']),
    'meta_gen_mode_changed': ([], lambda m: _edit_meta(_step2(m), _set_config(
        'gen_mode', 'selfattention')), ['checkpoint']),
    'meta_vocabulary_changed': ([], lambda m: _edit_meta(
        _step2(m), lambda meta: meta['spec'].update(durability=[1.0, 1.1])), ['checkpoint']),
    'empty_step_dir': ([], lambda m: os.makedirs(os.path.join(m, 'checkpoints', '7')),
                       ['checkpoint 7']),  # orbax's warning about it stays silent
    'flag_misspelt': (['--durabilty=1.4'], None, ['durabilty', 'durability', '--helpshort']),
    'flag_not_an_integer': (['--seed=abc'], None, ['--seed', 'abc']),
    'device_gpu': (['--device=gpu'], None, ['GPU']),
    'device_bogus': (['--device=bogus'], None, ['bogus', 'auto', 'cpu', 'gpu']),
}
_GPU_CASES = ('device_gpu', 'device_cuda')  # valid where there is a GPU

# In-process (gan.inference_output.run): further variants, cheaper than a process each. (A
# restore that fails part-way through reading arrays is only tested through infer.py: it leaves
# orbax coroutines behind in the process.)
# name -> (keyword arguments replacing the example's, setup(model dir) or None, fragments).
_LIB_CASES = {
    'durability_between_classes': ({'durability': 1.45}, None, ['1.45', '1.9']),
    'durability_missing': ({'durability': None}, None, ['durability', '1.9']),
    'mass_missing': ({'mass': None}, None, ['mass', '2.24']),
    'strut_four_values': ({'struts': ('0,0,0', '1,2,3,4')}, None, ['strut2']),
    'strut_negative': ({'struts': ('-1,0,0', '0,0,0')}, None, ['strut1']),
    'strut_words': ({'struts': ('0,0,0', 'red')}, None, ['strut2']),
    'strut_empty': ({'struts': ('', '0,0,0')}, None, ['strut1']),
    'strut_not_integer': ({'struts': ('0.5,0,0', '0,0,0')}, None, ['strut1']),
    'num_zero': ({'num': 0}, None, ['num_gen_image']),
    # jax.random.PRNGKey takes 64-bit seeds: an OverflowError traceback before.
    'seed_beyond_64_bits': ({'seed': 2**63}, None, ['--seed', '9223372036854775808']),
    'seed_below_64_bits': ({'seed': -2**63 - 1}, None, ['--seed', '-9223372036854775809']),
    'device_empty': ({'device': ''}, None, ['cpu']),
    'empty_checkpoints_dir': ({'model_path': '{model}/checkpoints'},
                              lambda m: [shutil.rmtree(os.path.join(m, 'checkpoints', s))
                                         for s in ('1', '2')], ['checkpoint']),
    # abspath('') is the working directory, which the message named as the model path.
    'model_path_empty': ({'model_path': ''}, None, ['--model_path is empty']),
    # Was the default <run>/inference_output, where gan.designs refuses an empty --out.
    'out_dir_empty': ({'out_dir': ''}, None, ['--gen_img_path is empty']),
    'file_not_dir': ({'model_path': '{model}/file'},
                     lambda m: open(os.path.join(m, 'file'), 'w').close(), ['file']),
    'state_metadata_deleted': ({}, lambda m: os.remove(os.path.join(_step2(m), 'state',
                                                                    '_METADATA')),
                               ['checkpoint']),
    'meta_without_spec': ({}, lambda m: _edit_meta(_step2(m), lambda meta: meta.pop('spec')),
                          ['checkpoint']),
    'meta_not_json': ({}, lambda m: _overwrite_files(os.path.join(_step2(m), 'meta'),
                                                     'metadata'), ['checkpoint']),
    'missing_step': ({'step': 7}, None, ['7', '1, 2']),
    # A step that only best/ holds: the message says where it is.
    'step_only_in_best': ({'step': 1}, lambda m: [
        shutil.copytree(os.path.join(m, 'checkpoints', '1'), os.path.join(m, 'best', '1'),
                        dirs_exist_ok=True),
        shutil.rmtree(os.path.join(m, 'checkpoints', '1'))],
                          ['available: 2;', 'best holds step 1: --model_path=', f'{os.sep}best']),
    # A run stopped between its first evaluation and its first checkpoint: its model is in best/.
    'only_best_holds_a_checkpoint': ({}, lambda m: _only_in_best(m),
                                     ['no checkpoint in', 'best holds the run\'s best checkpoint',
                                      f'{os.sep}best']),
    # Rounded to 2 decimals, 1.404 would be class 1.4: a request names a class exactly.
    'durability_near_a_class': ({'durability': 1.404}, None,
                                ['--durability=1.404 is not a class', '1.4']),
    'mass_large': ({'mass': 1234567.891}, None, ['--mass=1234567.891 is not a class']),
    'mass_near_a_class': ({'mass': 2.140001}, None, ['--mass=2.140001 is not a class']),
    'device_cuda': ({'device': 'cuda'}, None, ['GPU']),
    'sweep_with_classes': ({'sweep': True}, None, ['--sweep', '--durability']),
    'seed_sweep_directory': ({'model_path': '{model}/sweep'}, lambda m: [shutil.copytree(
        os.path.join(m, 'checkpoints'), os.path.join(m, 'sweep', f'seed_{k}', 'checkpoints'))
                                                                      for k in (12, 3)],
                             ['seed sweep', 'sweep/seed_3, ', 'sweep/seed_12']),
}


def _cli_case_args(name, model, out):
  """infer.py arguments of a bad-input case: the example command with some flags replaced."""
  flags = {'--model_path': model, '--durability': '1.4', '--mass': '2.14', '--strut1': '0,0,0',
           '--strut2': '255,255,255', '--num_gen_image': '3', '--device': 'cpu', '--seed': '0',
           '--gen_img_path': str(out)}
  for flag in _CLI_CASES[name][0]:
    key, value = flag.split('=', 1)
    flags[key] = value.format(model=model)
  return [f'{k}={v}' for k, v in flags.items()]


@pytest.fixture(scope='module')
def cli_bad_input_results(main_run, tmp_path_factory):
  """{case: (CompletedProcess, model dir, output parent)}; three subprocesses at a time."""
  root = tmp_path_factory.mktemp('bad_input_cli')
  jobs = {}
  for name, (_, setup, _) in _CLI_CASES.items():
    if name in _GPU_CASES and _has_gpu():
      continue
    model = _copy_model(main_run, root / name / 'model')
    if setup is not None:
      setup(model)
    out_parent = root / name / 'out_parent'
    out_parent.mkdir()
    jobs[name] = (_cli_case_args(name, model, out_parent / 'out'), model, out_parent)
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    futures = {name: pool.submit(infer_cli, *args) for name, (args, _, _) in jobs.items()}
    return {name: (futures[name].result(), model, out_parent)
            for name, (_, model, out_parent) in jobs.items()}


# With a GPU, --device=gpu|cuda is valid input, not a bad-input case.
@pytest.mark.parametrize('case', [n for n in _CLI_CASES
                                  if not (n in _GPU_CASES and _has_gpu())])
def test_cli_bad_input_is_one_error_line_and_writes_nothing(cli_bad_input_results, case):
  """Non-zero exit, exactly one stderr line (`error: ...`) naming the problem, no traceback, and
  neither the output directory nor any temporary directory beside it is created."""
  result, model, out_parent = cli_bad_input_results[case]
  stderr = result.stderr
  assert result.returncode != 0, (result.stdout, stderr)
  assert 'Traceback' not in stderr, stderr
  lines = [line for line in stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), stderr
  allowed = {'durability_not_in_vocabulary': DURABILITIES,
             'mass_not_in_vocabulary': MASSES}.get(case)
  assert_names_problem(lines[0], _CLI_CASES[case][2], allowed)
  assert os.listdir(out_parent) == [], os.listdir(out_parent)
  assert not os.path.exists(os.path.join(model, 'inference_output'))


def test_cli_without_model_path_is_one_error_line(tmp_path):
  result = infer_cli('--durability=1.4', '--mass=2.14', f'--gen_img_path={tmp_path / "out"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      'error: give --model_path: a training run directory (log_path), its checkpoints/ directory '
      'or one step directory (python infer.py --helpshort lists the flags)'], result.stderr
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('flag', ['--durability=2e0', '--mass=+2.14', '--mass=nan'])
def test_cli_refuses_a_class_no_file_name_writes(flag, tmp_path):
  """--durability and --mass were float flags: 2e0, +2.14 or nan were taken, where a design file
  name's label refuses them. Refused now as the flag's value, before the model is looked for."""
  result = infer_cli('--model_path=no_such_run', '--durability=1.4', '--mass=2.14', flag,
                     f'--gen_img_path={tmp_path / "out"}')
  assert result.returncode == 1
  value = flag.split('=', 1)[1]
  assert result.stderr.strip().splitlines() == [
      f"error: flag {flag}: {value!r} is not a plain decimal (such as 1, 1.4 or .5: ASCII digits "
      'with at most one ".", no sign, exponent or "_", not nan or inf) (python infer.py '
      '--helpshort lists the flags)'], result.stderr
  assert os.listdir(tmp_path) == []


def test_cli_help_shows_the_example_commands_as_written():
  """The usage text is the module docstring: its line continuations must stay backslashes."""
  result = infer_cli('--helpshort')
  assert ('python infer.py --model_path=runs/default --durability=1.4 --mass=2.14 \\\n'
          '      --strut1=0,0,0' in result.stdout), result.stdout


def test_cli_with_an_argument_that_is_no_flag_is_one_error_line(tmp_path):
  """absl's UsageError printed the whole help (46 lines) before the message."""
  result = infer_cli('--model_path=run', '--durability=1.4', '--mass=2.14', '1.5',
                     f'--gen_img_path={tmp_path / "out"}')
  assert result.returncode == 1
  assert result.stderr.strip().splitlines() == [
      'error: unexpected arguments: 1.5; every value is given as --flag=value (python infer.py '
      '--helpshort lists the flags)'], result.stderr
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('case', [n for n in _LIB_CASES
                                  if not (n in _GPU_CASES and _has_gpu())])
def test_library_bad_input_raises_one_line_and_writes_nothing(main_run, tmp_path, case):
  """inference_output.run raises a DesignGanError with a one-line message and writes nothing."""
  kwargs, setup, fragments = _LIB_CASES[case]
  model = _copy_model(main_run, tmp_path / 'model')
  if setup is not None:
    setup(model)
  out_parent = tmp_path / 'out_parent'
  out_parent.mkdir()
  kwargs = {k: v.format(model=model) if k == 'model_path' else v for k, v in kwargs.items()}
  kwargs.setdefault('model_path', model)
  kwargs.setdefault('out_dir', out_parent / 'out')
  with pytest.raises(DesignGanError) as info:
    generate(**kwargs)
  message = str(info.value)
  assert message and '\n' not in message, message
  assert_names_problem(message, fragments)
  assert os.listdir(out_parent) == []
  assert not os.path.exists(os.path.join(model, 'inference_output'))


@pytest.mark.parametrize('unreadable', ['checkpoints', 'run'])
def test_a_run_directory_that_cannot_be_read_is_a_checkpoint_error(tmp_path, monkeypatch,
                                                                   unreadable):
  """Another user's run (mode 0700): the listing's PermissionError was a traceback under
  infer.py and gan.evaluate, which report only a DesignGanError as one `error:` line."""
  run = tmp_path / 'run'
  denied = run / 'checkpoints' if unreadable == 'checkpoints' else run
  denied.mkdir(parents=True)
  denied = str(denied)
  listdir = os.listdir

  def refusing(path='.'):
    if os.path.abspath(path) == denied:
      raise PermissionError(13, 'Permission denied', path)
    return listdir(path)

  monkeypatch.setattr(os, 'listdir', refusing)
  with pytest.raises(checkpoints.CheckpointError,
                     match=re.escape(f'--model_path {run}: cannot read {denied} (Permission '
                                     'denied); give a run directory you can read')):
    inference.find_checkpoints(str(run))


def test_load_closes_its_checkpoint_manager_also_when_the_checkpoint_is_refused(main_run,
                                                                                tmp_path,
                                                                                monkeypatch):
  """orbax asks that a manager be closed (its background reads end): inference.load closes the
  one it opens, after a restore and where the checkpoint's metadata is refused."""
  model = _copy_model(main_run, tmp_path / 'model')
  _edit_meta(_step2(model), lambda meta: meta.pop('spec'))
  closed = []
  manager = checkpoints.manager

  def recorded(*args, **kwargs):
    mngr = manager(*args, **kwargs)
    close = mngr.close
    mngr.close = lambda: (closed.append(str(mngr.directory)), close())[-1]
    return mngr

  monkeypatch.setattr(checkpoints, 'manager', recorded)
  assert inference.load(main_run).epoch == 2
  with pytest.raises(checkpoints.CheckpointError, match='has invalid metadata'):
    inference.load(model)
  assert closed == [os.path.join(main_run, 'checkpoints'), os.path.join(model, 'checkpoints')]


def test_a_checkpoint_that_does_not_say_what_it_was_trained_on_gets_no_oracle_numbers(
    main_run, tmp_path):
  """Checkpoints from before infer.py do not record whether their designs were the synthetic
  ones: the oracle's numbers are not claimed for them (the manifest's measured columns stay
  empty), where the same checkpoint saying so gets them."""
  model = _copy_model(main_run, tmp_path / 'model')
  _edit_meta(_step2(model), lambda meta: meta.pop('oracle_applies'))
  assert inference.load(main_run).oracle_applies
  assert not inference.load(model).oracle_applies


def test_checkpoint_from_before_newer_config_fields_still_loads(main_run, tmp_path):
  """Config fields added after a checkpoint was written take their defaults."""
  model = _copy_model(main_run, tmp_path / 'old_model')

  def drop_new_fields(meta):
    for key in ('eval_every', 'eval_per_pair', 'best_metric'):
      meta['config'].pop(key)

  _edit_meta(_step2(model), drop_new_fields)
  old, _ = generate(model, str(tmp_path / 'old'))
  new, _ = generate(main_run, str(tmp_path / 'new'))
  assert read_bytes(old) == read_bytes(new)


# ---------------------------------------------------------------------------------------------
# The output directory


@pytest.mark.parametrize('target', ['a_file', 'a_file/out'])
def test_an_output_path_that_is_or_sits_under_a_file_is_refused(main_run, tmp_path, target):
  (tmp_path / 'a_file').write_text('keep')
  with pytest.raises(DesignGanError, match='a_file is a file'):
    generate(main_run, tmp_path / target)
  assert sorted(os.listdir(tmp_path)) == ['a_file']
  assert (tmp_path / 'a_file').read_text() == 'keep'


def test_a_clash_with_a_directory_moves_nothing_in(main_run, tmp_path):
  """An output name taken by a directory is found before the first file moves: the directory is
  left as it was, and no staging directory stays behind."""
  out = tmp_path / 'out'
  (out / 'grid.png').mkdir(parents=True)
  with pytest.raises(DesignGanError, match='grid.png'):
    generate(main_run, out, grid=True, num=10)
  assert os.listdir(out) == ['grid.png'] and os.listdir(out / 'grid.png') == []
  assert sorted(os.listdir(tmp_path)) == ['out']


def test_a_new_request_replaces_the_earlier_requests_outputs(main_run, tmp_path):
  """The directory matches its manifest after the second request: the first request's designs
  and grid are gone, files it did not write stay."""
  out = tmp_path / 'out'
  generate(main_run, out, num=5, grid=True)
  (out / 'notes.txt').write_text('mine')
  _, files = generate(main_run, out, num=2, mass=2.24)
  with open(out / 'manifest.csv', newline='') as f:
    listed = [row['file'] for row in csv.DictReader(f)]
  assert sorted(listed) == sorted(os.path.basename(p) for p in files) and len(listed) == 2
  assert sorted(os.listdir(out)) == sorted(listed + ['manifest.csv', 'notes.txt'])


def test_error_messages_leave_out_python_object_reprs():
  error = ValueError('read failed in <bound method Reader.read of <Reader object at 0x7f>> '
                     'for key "d/1"\nsecond line')
  assert checkpoints.one_line(error) == 'read failed in ... for key "d/1"'
  assert checkpoints.one_line(ValueError('<function f at 0x1> failed')) == '... failed'


def test_a_model_path_that_is_not_utf8_is_named_as_such(tmp_path):
  """orbax cannot read under such a name (it cannot write there either: a run renamed since);
  its error blamed the checkpoint, 'damaged or incomplete: Unable to cast Python instance'."""
  run = os.path.join(str(tmp_path), os.fsdecode(b'run\xff'))
  os.makedirs(os.path.join(run, 'checkpoints', '1'))
  with pytest.raises(checkpoints.CheckpointError, match=r"--model_path '.*run\\udcff' has a name "
                     'that is not UTF-8.*rename it with a UTF-8 name'):
    inference.find_checkpoints(run)


def _steps(directory, *steps, marked=True):
  """Makes `directory` with one (empty) step directory per step, orbax's marker in each."""
  for step_ in steps:
    os.makedirs(os.path.join(directory, str(step_)))
    if marked:
      open(os.path.join(directory, str(step_), paths_lib.CHECKPOINT_MARKER), 'w').close()


# name -> (setup(tmp dir), model_path under it, step, the message's start after '--model_path
# <model_path>' or '' for a message of its own, fragments it must not contain)
_PATH_PROBLEMS = {
    'missing': (lambda t: None, 'run', None, ': no such file or directory', ()),
    'a_file': (lambda t: (t / 'run').write_text(''), 'run', None, ' is a file;', ()),
    # seed_* directories without checkpoints (a sweep's log_path holding other things)
    'seed_dirs_without_checkpoints': (lambda t: (t / 'run' / 'seed_1').mkdir(parents=True), 'run',
                                      None, ' holds no checkpoint;', ('seed sweep',)),
    # a run that failed before its first save: both of its managers' directories empty
    'best_empty_too': (lambda t: [(t / 'run' / d).mkdir(parents=True)
                                  for d in ('checkpoints', 'best')],
                       'run', None, ' holds no checkpoint;', ('best',)),
    # best/ beside a directory of checkpoints not named checkpoints/ is another run's
    'best_beside_another_directory': (lambda t: [(t / 'run' / 'mine').mkdir(parents=True),
                                                 _steps(t / 'run' / 'best', 2)],
                                      'run/mine', None, ' holds no checkpoint;', ('best',)),
    # listed in the order of their seeds
    'seed_sweep': (lambda t: [_steps(t / 'run' / f'seed_{k}' / 'checkpoints', 1) for k in (12, 3)],
                   'run', None, ' is a seed sweep (num_seeds > 1) with one run directory per '
                   'model; give one of: {model_path}/seed_3, {model_path}/seed_12', ()),
    'step_missing_without_best': (lambda t: _steps(t / 'run' / 'checkpoints', 1, 2), 'run', 7,
                                  '', ('best',)),
    'step_missing_beside_another_directory': (
        lambda t: [_steps(t / 'run' / 'mine', 1, 2), _steps(t / 'run' / 'best', 7)],
        'run/mine', 7, '', ('best',)),
}


@pytest.mark.parametrize('case', _PATH_PROBLEMS)
def test_find_checkpoints_says_what_is_wrong_with_a_model_path(tmp_path, case):
  """Each model_path problem has its own message: a missing path is not called a file, and
  seed_* directories or a best/ directory are named only where they hold checkpoints of this run
  (no model or training needed: step directories are looked for by name)."""
  setup, model_path, step_, said, never = _PATH_PROBLEMS[case]
  setup(tmp_path)
  model_path = str(tmp_path / model_path)
  with pytest.raises(checkpoints.CheckpointError) as info:
    inference.find_checkpoints(model_path, step_)
  message = str(info.value)
  if said:
    assert message.startswith(f'--model_path {model_path}' + said.format(model_path=model_path)), \
        message
  else:
    assert message.startswith(f'no checkpoint for step {step_} in '), message
    assert message.endswith('available: 1, 2'), message
  for fragment in never:  # in what the message says, not in the test's directory names
    assert fragment not in message.replace(str(tmp_path), '<tmp>'), message


@pytest.mark.parametrize('directory', ['checkpoints', 'best'])
def test_a_step_directory_without_orbaxs_marker_is_still_a_step(tmp_path, directory):
  """A damaged step (orbax's marker lost) given as --model_path is that step of its checkpoints/
  or best/ directory, for the restore to name it as damaged: not a directory holding none."""
  _steps(tmp_path / 'run' / directory, 3, marked=False)
  step_dir = str(tmp_path / 'run' / directory / '3')
  assert inference.find_checkpoints(step_dir) == (os.path.dirname(step_dir), 3,
                                                  str(tmp_path / 'run'))
