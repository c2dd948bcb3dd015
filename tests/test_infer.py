"""Tests of inference (issue 4): infer.py and gan/inference_output.py on real tiny training runs.

A module fixture trains one tiny run of each of the 12 model families (gan_model x loss x
network) on `small_design_dir` with `gan.trainer.train(config)`. To stay within a few minutes on
a 2-core CPU the runs are trained by two worker processes at once (each calls `trainer.train` for
half of the families; compiling dominates and is single-threaded), with XLA's costly CPU
optimisations off. The run of the default family (vanilla, wgangp, mlp) trains 2 epochs with a
checkpoint after each, so `--step` can be tested.

Most generation goes through `gan.inference_output.run(...)` in-process; the command line
(`infer.py` in a subprocess, cwd = repo root) is used for the documented example command, the
default output path, --sweep and every kind of bad input.
"""

import concurrent.futures
import csv
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from gan import checkpoints
from gan import images as images_lib
from gan import inference_output
from gan import oracle
from gan import summaries
from gan.errors import DesignGanError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FULL_SHAPE = (10, 30, 3)
DROPPED_COLUMNS = tuple(range(6, 10)) + tuple(range(16, 20)) + tuple(range(22, 30))
STRUT_PIXELS = ((7, 11), (5, 14))
DURABILITIES = oracle.DURABILITY_CLASSES  # the vocabulary of small_design_dir: 1.0 .. 1.9
MASSES = oracle.MASS_CLASSES              # 2.13 .. 2.24
FAMILIES = tuple(itertools.product(('vanilla', 'infogan'), ('bce', 'wgan', 'wgangp'),
                                   ('mlp', 'selfattention')))
MAIN = ('vanilla', 'wgangp', 'mlp')  # trained 2 epochs, checkpoints 1 and 2
TINY = dict(epochs=1, batch_size=32, critic_iter=1, gen_hidden_dims=(32,), disc_hidden_dims=(32,),
            zdim=8, embed_dim=8, num_heads=2, num_layers=1, num_output_images=2,
            eval_every=0)  # no evaluation (it trains a classifier): inference needs none
TRAIN_TIMEOUT_S = 900
CLI_TIMEOUT_S = 300
# Subprocesses must not grab most of a GPU each when these tests run on a machine with one.
ENV = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE='false')
# Training workers skip XLA's expensive CPU code optimisations: compiling takes ~40% less time,
# and the checkpoints are the same kind of files.
TRAIN_ENV = dict(ENV, XLA_FLAGS=' '.join(filter(None, (
    os.environ.get('XLA_FLAGS', ''), '--xla_backend_optimization_level=0',
    '--xla_llvm_disable_expensive_passes=true'))))

# Runs in a worker process: trains each config (a JSON list of override dicts) in turn.
_TRAIN_WORKER = """
import json, sys
from configs import default
from gan import trainer
for overrides in json.loads(sys.argv[1]):
  config = default.get_config()
  config.update({k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
  trainer.train(config)
"""


def _family_id(family) -> str:
  """('vanilla', 'bce', 'mlp') -> 'vanilla_bce_mlp'."""
  return '_'.join(family)


def _has_gpu() -> bool:
  """True when JAX sees a GPU (then --device=gpu is valid)."""
  return any(d.platform == 'gpu' for d in jax.devices())


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope='module')
def runs(small_design_dir, tmp_path_factory):
  """{family: log_path} of 12 tiny trained runs, one per model family."""
  base = tmp_path_factory.mktemp('infer_runs')
  overrides = {}
  for gan_model, loss, net in FAMILIES:
    family = (gan_model, loss, net)
    o = dict(TINY, data_path=small_design_dir, gan_model=gan_model, loss_mode=loss, gen_mode=net,
             disc_mode=net, log_path=str(base / _family_id(family)))
    if family == MAIN:
      o.update(epochs=2, checkpoint_every=1)
    overrides[family] = o
  # Balance the two workers: self-attention runs compile about twice as long as MLP runs.
  mlp = [f for f in FAMILIES if f[2] == 'mlp']
  attn = [f for f in FAMILIES if f[2] == 'selfattention']
  workers = min(2, os.cpu_count() or 1)
  shares = ([mlp[0::2] + attn[1::2], mlp[1::2] + attn[0::2]] if workers == 2
            else [list(FAMILIES)])
  procs = []
  for i, share in enumerate(shares):
    log = open(base / f'worker{i}.log', 'w')  # pylint: disable=consider-using-with
    payload = json.dumps([overrides[f] for f in share])
    procs.append((subprocess.Popen([sys.executable, '-c', _TRAIN_WORKER, payload], cwd=REPO,
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
def main_run(runs):
  """The vanilla/wgangp/mlp run: checkpoints of epochs 1 and 2."""
  return runs[MAIN]


@pytest.fixture(scope='module')
def strut_runs(small_design_dir, tmp_path_factory):
  """{number of strut pixels: log_path} of two tiny default-family runs with 1 and 3 strut
  pixels, trained by one worker process (about 25 s); cheaper than `runs` for tests that need
  any model."""
  base = tmp_path_factory.mktemp('strut_runs')
  positions = {1: '7,11', 3: '7,11;5,14;2,3'}
  overrides = [dict(TINY, data_path=small_design_dir, strut_positions=p,
                    log_path=str(base / f'struts{k}')) for k, p in positions.items()]
  result = subprocess.run([sys.executable, '-c', _TRAIN_WORKER, json.dumps(overrides)], cwd=REPO,
                          env=TRAIN_ENV, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S,
                          check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return {k: o['log_path'] for k, o in zip(positions, overrides)}


@pytest.fixture(scope='module')
def one_strut_run(strut_runs):
  """A tiny run whose layout has a single strut pixel, (7, 11)."""
  return strut_runs[1]


# ---------------------------------------------------------------------------------------------
# Helpers


def _generate(model_path, out_dir, **kwargs):
  """inference_output.run with the documented example request as defaults."""
  args = dict(model_path=str(model_path), step=None, durability=1.4, mass=2.14,
              struts=('0,0,0', '255,255,255'), num=3,
              out_dir=None if out_dir is None else str(out_dir), device='cpu', seed=0,
              grid=False, sweep=False)
  args.update(kwargs)
  return inference_output.run(**args)


def _infer_cli(*args):
  """Runs infer.py in a subprocess from the repository root."""
  return subprocess.run([sys.executable, 'infer.py', *map(str, args)], cwd=REPO, env=ENV,
                        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, check=False)


def _bmp_names(directory) -> list[str]:
  """Sorted names of the BMP files in `directory`."""
  return sorted(n for n in os.listdir(directory) if n.endswith('.bmp'))


def _read_bytes(directory) -> dict:
  """{name: bytes} of every design and the manifest in `directory`."""
  names = _bmp_names(directory) + ['manifest.csv']
  out = {}
  for name in names:
    with open(os.path.join(directory, name), 'rb') as f:
      out[name] = f.read()
  return out


def _read_manifest(directory) -> list[dict]:
  """The rows of `directory`/manifest.csv as dicts keyed by the header."""
  with open(os.path.join(directory, 'manifest.csv'), newline='') as f:
    return list(csv.DictReader(f))


def _rgb(text) -> tuple:
  """'0,0,0' (or '0 0 0', '(0, 0, 0)') -> (0, 0, 0)."""
  return tuple(int(v) for v in re.findall(r'\d+', text))


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
  assert sorted(names) == _bmp_names(out_dir)
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

  rows = _read_manifest(out_dir)
  assert [row['file'] for row in rows] == names
  measured_d, measured_m = oracle.measure(designs)
  for i, (row, (durability, mass)) in enumerate(zip(rows, requests)):
    assert float(row['durability']) == pytest.approx(durability), row
    assert float(row['mass']) == pytest.approx(mass), row
    assert _rgb(row['strut1']) == tuple(struts[0]), row
    assert _rgb(row['strut2']) == tuple(struts[1]), row
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


@pytest.mark.parametrize('family', FAMILIES, ids=[_family_id(f) for f in FAMILIES])
def test_every_family_generates_valid_designs(runs, family, tmp_path):
  """Each of the 12 families restores on the CPU and writes full-layout designs + manifest."""
  i = FAMILIES.index(family)
  durability, mass = DURABILITIES[i % len(DURABILITIES)], MASSES[(5 * i) % len(MASSES)]
  struts = ((20 * i, 255 - 7 * i, 3 * i + 1), (255, i, 128))
  out = tmp_path / 'out'
  out_dir, files = _generate(runs[family], out, durability=durability, mass=mass,
                             struts=tuple(','.join(map(str, c)) for c in struts), num=3, seed=i)
  assert out_dir == str(out)
  assert sorted(os.listdir(out)) == sorted(_bmp_names(out) + ['manifest.csv'])  # no grid
  designs = _check_output(out, files, [(durability, mass)] * 3, struts, seed=i)
  assert len({d.tobytes() for d in designs}) > 1, 'every design of a request is identical'


# ---------------------------------------------------------------------------------------------
# The command line, model_path forms, steps and seeds


def test_cli_example_command_writes_to_default_path(main_run, tmp_path):
  """The documented command (minus --gen_img_path) writes into <run>/inference_output, with a
  grid; the library gives byte-identical files for the same request."""
  default_out = os.path.join(main_run, 'inference_output')
  assert not os.path.exists(default_out)
  result = _infer_cli(f'--model_path={main_run}', '--durability=1.4', '--mass=2.14',
                      '--strut1=0,0,0', '--strut2=255,255,255', '--num_gen_image=50',
                      '--device=cpu', '--seed=0', '--grid')
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  assert 'wrote 50 designs' in result.stdout
  assert default_out in result.stdout
  names = _bmp_names(default_out)
  assert sorted(os.listdir(default_out)) == sorted(names + ['manifest.csv', 'grid.png'])
  files = [os.path.join(default_out, row['file']) for row in _read_manifest(default_out)]
  designs = _check_output(default_out, files, [(1.4, 2.14)] * 50,
                          ((0, 0, 0), (255, 255, 255)), seed=0)
  grid = images_lib.read_rgb(os.path.join(default_out, 'grid.png'))
  np.testing.assert_array_equal(grid, _expected_grid(designs))

  _, lib_files = _generate(main_run, tmp_path / 'lib', num=50, grid=True)
  assert [os.path.basename(p) for p in lib_files] == [os.path.basename(p) for p in files]
  assert _read_bytes(tmp_path / 'lib') == _read_bytes(default_out)


def test_default_output_path_in_library(runs, tmp_path):
  """out_dir=None writes <run>/inference_output, whichever model_path form names the run."""
  run_dir = runs[('infogan', 'bce', 'mlp')]
  step_dir = os.path.join(run_dir, 'checkpoints', '1')
  out_dir, files = _generate(step_dir, None, num=2)
  assert out_dir == os.path.join(run_dir, 'inference_output')
  assert len(files) == 2 and all(os.path.isfile(p) for p in files)
  assert all(os.path.dirname(p) == out_dir for p in files)


def test_model_path_forms_give_identical_images(main_run, tmp_path, monkeypatch):
  """The run dir, its checkpoints dir and the latest step dir (absolute, relative, with a
  trailing slash) all load the same checkpoint."""
  ckpts = os.path.join(main_run, 'checkpoints')
  forms = {'run': main_run, 'checkpoints': ckpts, 'step': os.path.join(ckpts, '2'),
           'step_slash': os.path.join(ckpts, '2') + os.sep}
  _generate(main_run, tmp_path / 'reference', num=4)
  reference = _read_bytes(tmp_path / 'reference')
  assert len(reference) == 5
  for name, path in forms.items():
    _generate(path, tmp_path / name, num=4)
    assert _read_bytes(tmp_path / name) == reference, name
  monkeypatch.chdir(os.path.dirname(main_run))
  _generate(os.path.basename(main_run), tmp_path / 'relative', num=4)
  assert _read_bytes(tmp_path / 'relative') == reference


def test_step_selects_checkpoint(main_run, tmp_path):
  """--step picks a checkpoint; the default is the latest; a step dir is the same as --step."""
  ckpts = os.path.join(main_run, 'checkpoints')
  assert sorted(os.listdir(ckpts)) == ['1', '2']
  for name, kwargs in {'latest': {}, 'step2': {'step': 2}, 'step1': {'step': 1},
                       'dir1': {'model_path': os.path.join(ckpts, '1')},
                       'ckpts_step1': {'model_path': ckpts, 'step': 1}}.items():
    _generate(kwargs.pop('model_path', main_run), tmp_path / name, num=4, **kwargs)
  latest = _read_bytes(tmp_path / 'latest')
  assert _read_bytes(tmp_path / 'step2') == latest
  first = _read_bytes(tmp_path / 'step1')
  assert _read_bytes(tmp_path / 'dir1') == first
  assert _read_bytes(tmp_path / 'ckpts_step1') == first
  assert first != latest, 'the checkpoints of epochs 1 and 2 generate the same designs'

  with pytest.raises(DesignGanError, match=r'1, 2'):
    _generate(main_run, tmp_path / 'no_step', step=7)
  with pytest.raises(DesignGanError):
    _generate(os.path.join(ckpts, '2'), tmp_path / 'conflict', step=1)
  assert not os.path.exists(tmp_path / 'no_step') and not os.path.exists(tmp_path / 'conflict')


def test_same_seed_same_bytes_other_seed_other_designs(main_run, tmp_path):
  """Generation is a function of the seed."""
  _generate(main_run, tmp_path / 'a', num=5, seed=0)
  _generate(main_run, tmp_path / 'b', num=5, seed=0)
  out_dir, files = _generate(main_run, tmp_path / 'c', num=5, seed=1)
  same = _read_bytes(tmp_path / 'a')
  assert _read_bytes(tmp_path / 'b') == same
  other = _read_bytes(tmp_path / 'c')
  assert other.keys() == same.keys()
  assert all(other[n] != same[n] for n in _bmp_names(tmp_path / 'a')), \
      'seed 1 repeats a design of seed 0'
  _check_output(out_dir, files, [(1.4, 2.14)] * 5, ((0, 0, 0), (255, 255, 255)), seed=1)


def test_designs_follow_requested_struts_and_classes(main_run, tmp_path):
  """The strut colours are pasted exactly whatever the model drew; whitespace-separated colours
  and the lowest/highest classes (spelled 1 and 2.24 in names) work."""
  struts = ((1, 2, 3), (250, 128, 0))
  out_dir, files = _generate(main_run, tmp_path / 'out', durability=1.0, mass=2.24,
                             struts=('1 2 3', ' 250, 128 ,0 '), num=2, seed=3)
  _check_output(out_dir, files, [(1.0, 2.24)] * 2, struts, seed=3)
  assert all(os.path.basename(p).startswith('1_2.24_') for p in files), files


# ---------------------------------------------------------------------------------------------
# Grids and sweeps


def test_grid_without_sweep(main_run, tmp_path):
  """--grid alone: rows of 10 designs, the last row padded with black designs."""
  out_dir, files = _generate(main_run, tmp_path / 'out', num=12, grid=True)
  designs = _check_output(out_dir, files, [(1.4, 2.14)] * 12, ((0, 0, 0), (255, 255, 255)), 0)
  grid = images_lib.read_rgb(os.path.join(out_dir, 'grid.png'))
  assert grid.shape == summaries.design_grid(np.zeros((2, 10) + FULL_SHAPE, np.uint8)).shape
  np.testing.assert_array_equal(grid, _expected_grid(designs))


def test_cli_sweep_writes_every_pair_and_grid(main_run, tmp_path):
  """--sweep: num designs for each of the 10 x 12 (durability, mass) pairs and a 10 x 12 grid of
  the first design of each pair."""
  out = tmp_path / 'sweep'
  result = _infer_cli(f'--model_path={main_run}', '--sweep', '--grid', '--num_gen_image=2',
                      '--strut1=9,8,7', '--strut2=0,255,0', '--device=cpu', '--seed=5',
                      f'--gen_img_path={out}')
  assert result.returncode == 0, result.stderr
  rows = _read_manifest(out)
  assert len(rows) == len(_bmp_names(out)) == 10 * 12 * 2
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
    'device_empty': ({'device': ''}, None, ['cpu']),
    'empty_checkpoints_dir': ({'model_path': '{model}/checkpoints'},
                              lambda m: [shutil.rmtree(os.path.join(m, 'checkpoints', s))
                                         for s in ('1', '2')], ['checkpoint']),
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
    futures = {name: pool.submit(_infer_cli, *args) for name, (args, _, _) in jobs.items()}
    return {name: (futures[name].result(), model, out_parent)
            for name, (_, model, out_parent) in jobs.items()}


def _assert_names_problem(message, fragments, allowed=None):
  """The message contains each fragment and, after 'allowed', lists every allowed value."""
  for fragment in fragments:
    assert fragment in message, (fragment, message)
  if allowed is not None:
    listed = set(re.findall(r'\d+(?:\.\d+)?', message.split('allowed', 1)[-1]))
    assert {f'{v:g}' for v in allowed} <= listed, message


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
  _assert_names_problem(lines[0], _CLI_CASES[case][2], allowed)
  assert os.listdir(out_parent) == [], os.listdir(out_parent)
  assert not os.path.exists(os.path.join(model, 'inference_output'))


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
  with pytest.raises(DesignGanError) as info:
    _generate(out_dir=out_parent / 'out', **kwargs)
  message = str(info.value)
  assert message and '\n' not in message, message
  _assert_names_problem(message, fragments)
  assert os.listdir(out_parent) == []
  assert not os.path.exists(os.path.join(model, 'inference_output'))


def test_checkpoint_from_before_newer_config_fields_still_loads(main_run, tmp_path):
  """Config fields added after a checkpoint was written take their defaults."""
  model = _copy_model(main_run, tmp_path / 'old_model')

  def drop_new_fields(meta):
    for key in ('eval_every', 'eval_per_pair', 'best_metric'):
      meta['config'].pop(key)

  _edit_meta(_step2(model), drop_new_fields)
  old, _ = _generate(model, str(tmp_path / 'old'))
  new, _ = _generate(main_run, str(tmp_path / 'new'))
  assert _read_bytes(old) == _read_bytes(new)


# ---------------------------------------------------------------------------------------------
# The output directory


@pytest.mark.parametrize('target', ['a_file', 'a_file/out'])
def test_an_output_path_that_is_or_sits_under_a_file_is_refused(main_run, tmp_path, target):
  (tmp_path / 'a_file').write_text('keep')
  with pytest.raises(DesignGanError, match='a_file is a file'):
    _generate(main_run, tmp_path / target)
  assert sorted(os.listdir(tmp_path)) == ['a_file']
  assert (tmp_path / 'a_file').read_text() == 'keep'


def test_a_clash_with_a_directory_moves_nothing_in(main_run, tmp_path):
  """An output name taken by a directory is found before the first file moves: the directory is
  left as it was, and no staging directory stays behind."""
  out = tmp_path / 'out'
  (out / 'grid.png').mkdir(parents=True)
  with pytest.raises(DesignGanError, match='grid.png'):
    _generate(main_run, out, grid=True, num=10)
  assert os.listdir(out) == ['grid.png'] and os.listdir(out / 'grid.png') == []
  assert sorted(os.listdir(tmp_path)) == ['out']


def test_a_new_request_replaces_the_earlier_requests_outputs(main_run, tmp_path):
  """The directory matches its manifest after the second request: the first request's designs
  and grid are gone, files it did not write stay."""
  out = tmp_path / 'out'
  _generate(main_run, out, num=5, grid=True)
  (out / 'notes.txt').write_text('mine')
  _, files = _generate(main_run, out, num=2, mass=2.24)
  with open(out / 'manifest.csv', newline='') as f:
    listed = [row['file'] for row in csv.DictReader(f)]
  assert sorted(listed) == sorted(os.path.basename(p) for p in files) and len(listed) == 2
  assert sorted(os.listdir(out)) == sorted(listed + ['manifest.csv', 'notes.txt'])


def test_error_messages_leave_out_python_object_reprs():
  error = ValueError('read failed in <bound method Reader.read of <Reader object at 0x7f>> '
                     'for key "d/1"\nsecond line')
  assert checkpoints.one_line(error) == 'read failed in ... for key "d/1"'
  assert checkpoints.one_line(ValueError('<function f at 0x1> failed')) == '... failed'


def _snapshot(directory) -> dict:
  """{name: bytes} of every file in `directory`."""
  return {n: (directory / n).read_bytes() for n in sorted(os.listdir(directory))}


def test_someone_elses_manifest_and_designs_are_never_replaced(one_strut_run, tmp_path):
  """A directory with a user's BMPs and a manifest.csv that infer.py did not write (other
  columns) is refused before anything is generated, naming the manifest: nothing is deleted."""
  out = tmp_path / 'mine'
  out.mkdir()
  names = [f'design_{i}.bmp' for i in range(5)]
  for name in names:
    images_lib.write_rgb(str(out / name), np.full(FULL_SHAPE, 7, np.uint8))
  (out / 'manifest.csv').write_text('file,note\n' + ''.join(f'{n},kept\n' for n in names))
  before = _snapshot(out)
  with pytest.raises(DesignGanError, match=r'holds manifest.csv, which infer.py did not write'
                     r'.*--gen_img_path') as info:
    _generate(one_strut_run, out, struts=('0,0,0',), num=2, mass=2.14)
  assert '\n' not in str(info.value)
  assert _snapshot(out) == before
  assert sorted(os.listdir(tmp_path)) == ['mine']  # no staging directory left behind


@pytest.mark.parametrize('grid', [False, True])
def test_someone_elses_grid_png_is_never_replaced(one_strut_run, tmp_path, grid):
  """grid.png in a directory without a manifest of infer.py's is the user's: refused whether or
  not --grid asks for one (a run without --grid used to delete it)."""
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'grid.png').write_bytes(b'my grid')
  with pytest.raises(DesignGanError, match='holds grid.png'):
    _generate(one_strut_run, out, struts=('0,0,0',), num=2, grid=grid)
  assert _snapshot(out) == {'grid.png': b'my grid'}


def test_a_file_named_like_a_new_design_is_not_overwritten(one_strut_run, tmp_path):
  """Files an earlier request's manifest does not list are not replaced, even beside one."""
  out = tmp_path / 'out'
  _generate(one_strut_run, out, struts=('0,0,0',), num=2)
  (out / '1.4_2.14_002.bmp').write_bytes(b'mine')
  before = _snapshot(out)
  with pytest.raises(DesignGanError, match=r'holds 1\.4_2\.14_002\.bmp,'):
    _generate(one_strut_run, out, struts=('0,0,0',), num=3)
  assert _snapshot(out) == before


def test_files_infer_does_not_write_stay(one_strut_run, tmp_path):
  """Other files (no manifest, no clash) stay through a first and a second request; the second
  replaces only the first one's outputs."""
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'design_0.bmp').write_bytes(b'mine')
  (out / 'notes.txt').write_text('mine')
  _generate(one_strut_run, out, struts=('0,0,0',), num=3, grid=True)
  _, files = _generate(one_strut_run, out, struts=('0,0,0',), num=1, mass=2.24)
  assert sorted(os.listdir(out)) == sorted([os.path.basename(files[0]), 'manifest.csv',
                                            'design_0.bmp', 'notes.txt'])
  assert (out / 'design_0.bmp').read_bytes() == b'mine'


def _not_writable(monkeypatch, directory):
  """os.access says `directory` cannot be written (as for a non-root user after chmod a-w)."""
  access = os.access
  monkeypatch.setattr(os, 'access', lambda path, mode, **kw: (
      False if os.path.abspath(path) == str(directory) and mode & os.W_OK
      else access(path, mode, **kw)))


def _never_load(monkeypatch):
  def load(*args, **kwargs):
    raise AssertionError('the model was loaded before the output directory was checked')
  monkeypatch.setattr(inference_output.inference, 'load', load)


def test_a_read_only_run_directory_fails_before_loading(one_strut_run, tmp_path, monkeypatch):
  """The default output directory under a run directory that cannot be written: one error naming
  --gen_img_path, before the model loads."""
  model = shutil.copytree(one_strut_run, tmp_path / 'model')
  _not_writable(monkeypatch, model)
  _never_load(monkeypatch)
  with pytest.raises(DesignGanError, match=r'default output directory .*inference_output cannot '
                     r'be created: .* not writable; .* with --gen_img_path$'):
    _generate(model, None, struts=('0,0,0',))
  assert not os.path.exists(os.path.join(model, 'inference_output'))


def test_an_output_directory_in_a_read_only_directory_fails_before_loading(one_strut_run,
                                                                          tmp_path, monkeypatch):
  """The outputs are staged beside the output directory: a writable one in a directory that
  cannot be written fails at once too."""
  out = tmp_path / 'parent' / 'out'
  out.mkdir(parents=True)
  _not_writable(monkeypatch, tmp_path / 'parent')
  _never_load(monkeypatch)
  with pytest.raises(DesignGanError, match=r'--gen_img_path .*out cannot be written: its directory'
                     r' .*parent is not writable'):
    _generate(one_strut_run, out, struts=('0,0,0',))
def test_cli_someone_elses_manifest_is_one_error_line(one_strut_run, tmp_path):
  out = tmp_path / 'mine'
  out.mkdir()
  (out / 'a.bmp').write_bytes(b'mine')
  (out / 'manifest.csv').write_text('file,note\na.bmp,x\n')
  before = _snapshot(out)
  result = _infer_cli(f'--model_path={one_strut_run}', '--durability=1.4', '--mass=2.14',
                      '--strut1=0,0,0', '--num_gen_image=2', '--device=cpu',
                      f'--gen_img_path={out}')
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1 and len(lines) == 1, result.stderr
  assert lines[0].startswith('error: ') and 'manifest.csv' in lines[0], result.stderr
  assert _snapshot(out) == before


# ---------------------------------------------------------------------------------------------
# Models with other than two struts


def _strut_pixels(files, positions):
  """[[RGB of each strut pixel] for each design file]."""
  return [[tuple(images_lib.read_rgb(p)[r, c]) for r, c in positions] for p in files]


def test_cli_one_strut_model_takes_strut1_alone(one_strut_run, tmp_path):
  """--strut1 alone on a one-strut model (--strut2's default does not count as given)."""
  out = tmp_path / 'out'
  result = _infer_cli(f'--model_path={one_strut_run}', '--durability=1.4', '--mass=2.14',
                      '--strut1=1,2,3', '--num_gen_image=2', '--device=cpu',
                      f'--gen_img_path={out}')
  assert result.returncode == 0, result.stderr
  rows = _read_manifest(out)
  assert list(rows[0]) == ['file', 'durability', 'mass', 'strut1', 'seed',
                           'measured_durability', 'measured_mass']
  assert _strut_pixels([out / r['file'] for r in rows], [(7, 11)]) == [[(1, 2, 3)]] * 2


def test_cli_a_strut_beyond_the_models_is_one_error_line(one_strut_run, tmp_path):
  result = _infer_cli(f'--model_path={one_strut_run}', '--durability=1.4', '--mass=2.14',
                      '--strut2=255,255,255', '--device=cpu', f'--gen_img_path={tmp_path / "o"}')
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1 and len(lines) == 1, result.stderr
  assert lines[0].startswith('error: --strut2 was given but this model has 1 strut pixel;')
  assert '--strut1' in lines[0] and '--struts' in lines[0], lines[0]
  assert os.listdir(tmp_path) == []


def test_cli_three_strut_model_takes_struts(strut_runs, tmp_path):
  out = tmp_path / 'out'
  result = _infer_cli(f'--model_path={strut_runs[3]}', '--durability=1.4', '--mass=2.14',
                      '--struts=1,2,3; 4,5,6;7,8,9', '--num_gen_image=2', '--device=cpu',
                      f'--gen_img_path={out}')
  assert result.returncode == 0, result.stderr
  rows = _read_manifest(out)
  assert [(_rgb(r['strut1']), _rgb(r['strut2']), _rgb(r['strut3'])) for r in rows] == \
      [((1, 2, 3), (4, 5, 6), (7, 8, 9))] * 2
  assert _strut_pixels([out / r['file'] for r in rows], [(7, 11), (5, 14), (2, 3)]) == \
      [[(1, 2, 3), (4, 5, 6), (7, 8, 9)]] * 2


@pytest.mark.parametrize('kwargs, pixels', [
    ({}, [(255, 255, 255)] * 3),
    ({'struts': ('1,2,3',)}, [(1, 2, 3), (255, 255, 255), (255, 255, 255)]),
    ({'struts': (None, '1,2,3')}, [(255, 255, 255), (1, 2, 3), (255, 255, 255)]),
    ({'strut_list': '1,2,3;4,5,6;'}, [(1, 2, 3), (4, 5, 6), (255, 255, 255)]),
], ids=['none_given', 'strut1', 'strut2', 'two_of_three'])
def test_struts_not_given_are_white(strut_runs, tmp_path, kwargs, pixels):
  _, files = _generate(strut_runs[3], tmp_path / 'out', num=1, **{'struts': (), **kwargs})
  assert _strut_pixels(files, [(7, 11), (5, 14), (2, 3)]) == [pixels]


@pytest.mark.parametrize('kwargs, fragments', [
    ({'strut_list': '0,0,0;1,1,1;2,2,2;3,3,3'}, ['--struts gives 4 colours', '3 strut pixels']),
    ({'strut_list': '0,0,0;1,1;2,2,2'}, ['--struts=', 'colour 2', "'1,1'", 'three integers']),
    ({'strut_list': ''}, ['--struts', 'colour 1', 'three integers']),
    ({'strut_list': '0,0,0', 'struts': ('1,1,1',)}, ['--struts', '--strut1', 'not both']),
], ids=['too_many', 'bad_colour', 'empty', 'both'])
def test_bad_struts_are_refused(strut_runs, tmp_path, kwargs, fragments):
  with pytest.raises(DesignGanError) as info:
    _generate(strut_runs[3], tmp_path / 'out', **{'struts': (), **kwargs})
  _assert_names_problem(str(info.value), fragments)
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Large requests


def test_too_many_designs_are_refused_before_loading(one_strut_run, tmp_path, monkeypatch):
  _never_load(monkeypatch)
  with pytest.raises(DesignGanError, match=r'--num_gen_image .* from 1 to 100,000, got 100001'):
    _generate(one_strut_run, tmp_path / 'out', struts=(), num=100_001)
  assert os.listdir(tmp_path) == []


def test_a_sweep_of_too_many_designs_is_refused_before_generating(one_strut_run, tmp_path):
  """834 for each of the 120 pairs is 100,080 designs: the message says how many fit."""
  with pytest.raises(DesignGanError) as info:
    _generate(one_strut_run, tmp_path / 'out', struts=(), num=834, durability=None, mass=None,
              sweep=True)
  _assert_names_problem(str(info.value), ['100,080 designs', '120 class pairs', '100,000',
                                          '--num_gen_image=833'])
  assert os.listdir(tmp_path) == []


def test_a_large_request_is_generated_in_chunks_and_reports_progress(one_strut_run, tmp_path,
                                                                      monkeypatch):
  """Above CHUNK_SIZE designs, a line per chunk generated and written; the designs are those of
  one batch (the noise does not depend on the chunk size)."""
  _generate(one_strut_run, tmp_path / 'whole', struts=(), num=10)
  monkeypatch.setattr(inference_output, 'CHUNK_SIZE', 4)
  lines = []
  _generate(one_strut_run, tmp_path / 'chunked', struts=(), num=10, progress=lines.append)
  assert lines == [f'{verb} {k} of 10 designs' for verb in ('generated', 'wrote')
                   for k in (4, 8, 10)]
  whole, chunked = _read_bytes(tmp_path / 'whole'), _read_bytes(tmp_path / 'chunked')
  assert whole.keys() == chunked.keys()
  for name in _bmp_names(tmp_path / 'whole'):
    np.testing.assert_allclose(images_lib.read_rgb(str(tmp_path / 'chunked' / name)),
                               images_lib.read_rgb(str(tmp_path / 'whole' / name)), atol=1)
  lines.clear()
  _generate(one_strut_run, tmp_path / 'small', struts=(), num=4, progress=lines.append)
  assert lines == []  # a request of at most CHUNK_SIZE designs is quick: no progress


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def test_cli_ctrl_c_is_one_line_and_leaves_nothing(one_strut_run, tmp_path):
  """SIGINT while a large request generates: `interrupted: nothing written`, exit status 130, no
  traceback, and neither the output directory nor a staging directory is left."""
  out = tmp_path / 'parent' / 'out'
  args = [sys.executable, 'infer.py', f'--model_path={one_strut_run}', '--sweep',
          '--num_gen_image=150', '--device=cpu', f'--gen_img_path={out}']
  with subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True) as proc:
    seen = []
    for line in proc.stderr:  # the first chunk's progress line: loaded and generating
      seen.append(line)
      if line.startswith('generated 10,000 of 18,000'):
        break
    proc.send_signal(signal.SIGINT)
    out_text, err = proc.communicate(timeout=CLI_TIMEOUT_S)
  err = ''.join(seen) + err
  assert proc.returncode == 130, err
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err
  assert err.strip().splitlines()[-1] == 'interrupted: nothing written', err
  assert 'wrote' not in out_text
  assert not os.path.exists(tmp_path / 'parent'), os.listdir(tmp_path / 'parent')


def test_ctrl_c_while_writing_leaves_nothing(one_strut_run, tmp_path, monkeypatch):
  """A KeyboardInterrupt while the designs are staged removes the staging directory and the
  directories made for it."""
  write = images_lib.write_rgb
  count = []

  def interrupting_write(path, image, **kwargs):
    count.append(path)
    if len(count) == 3:
      raise KeyboardInterrupt
    write(path, image, **kwargs)

  monkeypatch.setattr(inference_output.images_lib, 'write_rgb', interrupting_write)
  with pytest.raises(KeyboardInterrupt):
    _generate(one_strut_run, tmp_path / 'a' / 'b' / 'out', struts=(), num=5)
  assert os.listdir(tmp_path) == []


def test_ctrl_c_while_moving_in_waits_and_says_so(one_strut_run, tmp_path, monkeypatch):
  """A SIGINT while the staged files move in waits for the move, then says they were written."""
  replace = os.replace

  def replace_then_sigint(src, dst):
    replace(src, dst)
    os.kill(os.getpid(), signal.SIGINT)

  monkeypatch.setattr(inference_output.os, 'replace', replace_then_sigint)
  out = tmp_path / 'out'
  with pytest.raises(KeyboardInterrupt, match=f'already been written to {out}'):
    _generate(one_strut_run, out, struts=(), num=3)
  monkeypatch.undo()
  assert len(_bmp_names(out)) == 3 and len(_read_manifest(out)) == 3
  assert os.listdir(tmp_path) == ['out']
