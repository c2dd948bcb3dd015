"""Tests of what one infer.py request may write, and for which models (gan/inference_output.py):
models with other than two strut pixels, output directories holding files infer.py did not
write, read-only directories, requests too large for memory, and Ctrl-C. They use two tiny runs
(1 and 3 strut pixels) trained by one worker process, cheaper than tests/test_infer.py's twelve.
"""

import dataclasses
import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from gan import checkpoints
from gan import data
from gan import images as images_lib
from gan import inference
from gan import inference_output
from gan import interrupts
from gan.errors import DesignGanError
from tests.helpers import finished_pid
from tests.infer_helpers import (CLI_TIMEOUT_S, ENV, FULL_SHAPE, REPO, TINY, TRAIN_ENV,
                                 TRAIN_TIMEOUT_S, TRAIN_WORKER, assert_names_problem, bmp_names,
                                 generate, infer_cli, read_bytes, read_manifest, rgb)


@pytest.fixture(scope='module')
def strut_runs(small_design_dir, tmp_path_factory):
  """{number of strut pixels: log_path} of two tiny default-family runs with 1 and 3 strut
  pixels, trained by one worker process (about 25 s); cheaper than `runs` for tests that need
  any model."""
  base = tmp_path_factory.mktemp('strut_runs')
  positions = {1: '7,11', 3: '7,11;5,14;2,3'}
  overrides = [dict(TINY, data_path=small_design_dir, strut_positions=p,
                    log_path=str(base / f'struts{k}')) for k, p in positions.items()]
  result = subprocess.run([sys.executable, '-c', TRAIN_WORKER, json.dumps(overrides)], cwd=REPO,
                          env=TRAIN_ENV, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S,
                          check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return {k: o['log_path'] for k, o in zip(positions, overrides)}


@pytest.fixture(scope='module')
def one_strut_run(strut_runs):
  """A tiny run whose layout has a single strut pixel, (7, 11)."""
  return strut_runs[1]


@pytest.fixture(scope='module')
def untrained_class_run(small_design_dir, tmp_path_factory):
  """A tiny run whose fixed durability vocabulary adds 2.5, which no design has."""
  overrides = [dict(TINY, data_path=small_design_dir, log_path=str(
      tmp_path_factory.mktemp('untrained') / 'run'), durability_values=', '.join(
          f'{1 + k / 10:.1f}' for k in range(10)) + ', 2.5')]
  result = subprocess.run([sys.executable, '-c', TRAIN_WORKER, json.dumps(overrides)], cwd=REPO,
                          env=TRAIN_ENV, capture_output=True, text=True, timeout=TRAIN_TIMEOUT_S,
                          check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
  return overrides[0]['log_path']


@pytest.mark.parametrize('request_, warned', [
    (dict(durability=2.5), 'durability 2.5'),
    (dict(durability=None, mass=None, sweep=True, num=1), 'durability 2.5'),
    (dict(durability=1.4), None)])
def test_a_class_no_training_design_had_is_generated_with_a_warning(untrained_class_run, tmp_path,
                                                                     request_, warned):
  warnings = []
  out, paths = generate(untrained_class_run, tmp_path / 'out', struts=(), warn=warnings.append,
                        **request_)
  assert paths and all(os.path.exists(p) for p in paths)
  if warned is None:
    assert warnings == []
  else:
    assert warnings == [f'no training design had {warned}: the generator was never trained on '
                        'it, so these designs are extrapolations']


def test_a_model_built_without_untrained_classes_has_none():
  """TrainedModel's untrained_classes defaults to {} (a caller that builds one, or a checkpoint
  from before the field), not None, which the untrained-class check cannot read."""
  spec = data.DataSpec(None, data.ClassVocab((1.4, 2.5)), data.ClassVocab((2.14,)))
  model = inference.TrainedModel(spec=spec, **dict.fromkeys(
      ('config', 'models', 'state', 'epoch', 'checkpoint_dir', 'run_dir', 'sample_fn',
       'oracle_applies')))
  assert model.untrained_classes == {}
  assert inference_output._untrained_requested(model, [(1, 0)]) == ''
  model = dataclasses.replace(model, untrained_classes={'durability': ['2.5']})
  requested = inference_output._untrained_requested(model, [(0, 0), (1, 0)])
  assert requested == 'durability 2.5'


def test_class_index_gives_the_durability_and_the_mass_position():
  """TrainedModel.class_index(durability, mass) looks each up in its own vocabulary."""
  spec = data.DataSpec(None, data.ClassVocab((1.4, 2.5)), data.ClassVocab((2.14, 2.2, 2.24)))
  model = inference.TrainedModel(spec=spec, **dict.fromkeys(
      ('config', 'models', 'state', 'epoch', 'checkpoint_dir', 'run_dir', 'sample_fn',
       'oracle_applies')))
  assert model.class_index(2.5, 2.2) == (1, 1) and model.class_index(1.4, 2.24) == (0, 2)
  with pytest.raises(data.DataError):
    model.class_index(2.2, 2.5)


def test_the_cli_prints_the_untrained_class_warning_on_stderr(untrained_class_run, tmp_path):
  result = infer_cli(f'--model_path={untrained_class_run}', '--durability=2.5', '--mass=2.14',
                     '--num_gen_image=1', '--device=cpu', f'--gen_img_path={tmp_path / "out"}')
  assert result.returncode == 0, result.stderr
  assert result.stderr.splitlines() == [
      'warning: no training design had durability 2.5: the generator was never trained on it, '
      'so these designs are extrapolations'], result.stderr
  assert bmp_names(tmp_path / 'out') == ['2.5_2.14_000.bmp']
  assert result.stdout.startswith('wrote 1 design and manifest.csv to '), result.stdout


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
    generate(one_strut_run, out, struts=('0,0,0',), num=2, mass=2.14)
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
    generate(one_strut_run, out, struts=('0,0,0',), num=2, grid=grid)
  assert _snapshot(out) == {'grid.png': b'my grid'}


def test_a_grid_png_beside_an_earlier_request_without_grid_is_the_users(one_strut_run, tmp_path):
  """A request without --grid writes no grid.png: one there later is the user's, refused by the
  next request with or without --grid (it was deleted as the earlier request's); a grid.png that
  a request wrote goes with that request's outputs."""
  out = tmp_path / 'out'
  generate(one_strut_run, out, struts=('0,0,0',), num=2)
  (out / 'grid.png').write_bytes(b'my grid')
  for grid in (False, True):
    with pytest.raises(DesignGanError, match='holds grid.png, which infer.py did not write'):
      generate(one_strut_run, out, struts=('0,0,0',), num=1, grid=grid)
    assert (out / 'grid.png').read_bytes() == b'my grid'
  (out / 'grid.png').unlink()
  generate(one_strut_run, out, struts=('0,0,0',), num=2, grid=True)
  ours = (out / 'grid.png').read_bytes()
  generate(one_strut_run, out, struts=('0,0,0',), num=1, grid=True)
  assert (out / 'grid.png').read_bytes() != ours  # one design now, not two
  generate(one_strut_run, out, struts=('0,0,0',), num=1)
  assert not (out / 'grid.png').exists()


def test_a_file_named_like_a_new_design_is_not_overwritten(one_strut_run, tmp_path):
  """Files an earlier request's manifest does not list are not replaced, even beside one."""
  out = tmp_path / 'out'
  generate(one_strut_run, out, struts=('0,0,0',), num=2)
  (out / '1.4_2.14_002.bmp').write_bytes(b'mine')
  before = _snapshot(out)
  with pytest.raises(DesignGanError, match=r'holds 1\.4_2\.14_002\.bmp,'):
    generate(one_strut_run, out, struts=('0,0,0',), num=3)
  assert _snapshot(out) == before


def test_files_infer_does_not_write_stay(one_strut_run, tmp_path):
  """Other files (no manifest, no clash) stay through a first and a second request; the second
  replaces only the first one's outputs."""
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'design_0.bmp').write_bytes(b'mine')
  (out / 'notes.txt').write_text('mine')
  generate(one_strut_run, out, struts=('0,0,0',), num=3, grid=True)
  _, files = generate(one_strut_run, out, struts=('0,0,0',), num=1, mass=2.24)
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
    generate(model, None, struts=('0,0,0',))
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
    generate(one_strut_run, out, struts=('0,0,0',))
def test_cli_someone_elses_manifest_is_one_error_line(one_strut_run, tmp_path):
  out = tmp_path / 'mine'
  out.mkdir()
  (out / 'a.bmp').write_bytes(b'mine')
  (out / 'manifest.csv').write_text('file,note\na.bmp,x\n')
  before = _snapshot(out)
  result = infer_cli(f'--model_path={one_strut_run}', '--durability=1.4', '--mass=2.14',
                      '--strut1=0,0,0', '--num_gen_image=2', '--device=cpu',
                      f'--gen_img_path={out}')
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1 and len(lines) == 1, result.stderr
  assert lines[0].startswith('error: ') and 'manifest.csv' in lines[0], result.stderr
  assert _snapshot(out) == before


def test_cli_an_output_path_that_is_not_utf8_is_printed_escaped(one_strut_run, tmp_path):
  """A strict UTF-8 stdout (Python's outside the C locales) raised a UnicodeEncodeError on the
  last line, 'wrote ... to <path>': a traceback and exit status 1 after the designs were
  written."""
  out = os.path.join(str(tmp_path), os.fsdecode(b'out\xff'))
  result = subprocess.run(
      [sys.executable, 'infer.py', f'--model_path={one_strut_run}', '--durability=1.4',
       '--mass=2.14', '--strut1=0,0,0', '--num_gen_image=2', '--device=cpu',
       f'--gen_img_path={out}'], cwd=REPO, env=dict(ENV, PYTHONIOENCODING='utf-8:strict'),
      capture_output=True, timeout=CLI_TIMEOUT_S, check=False)
  assert result.returncode == 0 and b'Traceback' not in result.stderr, result.stderr
  assert b'out\\udcff' in result.stdout and len(bmp_names(out)) == 2


# ---------------------------------------------------------------------------------------------
# Models with other than two struts


def _strut_pixels(files, positions):
  """[[RGB of each strut pixel] for each design file]."""
  return [[tuple(images_lib.read_rgb(p)[r, c]) for r, c in positions] for p in files]


def test_cli_one_strut_model_takes_strut1_alone(one_strut_run, tmp_path):
  """--strut1 alone on a one-strut model (--strut2's default does not count as given)."""
  out = tmp_path / 'out'
  result = infer_cli(f'--model_path={one_strut_run}', '--durability=1.4', '--mass=2.14',
                      '--strut1=1,2,3', '--num_gen_image=2', '--device=cpu',
                      f'--gen_img_path={out}')
  assert result.returncode == 0, result.stderr
  rows = read_manifest(out)
  assert list(rows[0]) == ['file', 'durability', 'mass', 'strut1', 'seed',
                           'measured_durability', 'measured_mass']
  assert _strut_pixels([out / r['file'] for r in rows], [(7, 11)]) == [[(1, 2, 3)]] * 2


def test_cli_a_strut_beyond_the_models_is_one_error_line(one_strut_run, tmp_path):
  result = infer_cli(f'--model_path={one_strut_run}', '--durability=1.4', '--mass=2.14',
                      '--strut2=255,255,255', '--device=cpu', f'--gen_img_path={tmp_path / "o"}')
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1 and len(lines) == 1, result.stderr
  assert lines[0].startswith('error: --strut2 was given but this model has 1 strut pixel;')
  assert '--strut1' in lines[0] and '--struts' in lines[0], lines[0]
  assert os.listdir(tmp_path) == []


def test_cli_three_strut_model_takes_struts(strut_runs, tmp_path):
  out = tmp_path / 'out'
  result = infer_cli(f'--model_path={strut_runs[3]}', '--durability=1.4', '--mass=2.14',
                      '--struts=1,2,3; 4,5,6;7,8,9', '--num_gen_image=2', '--device=cpu',
                      f'--gen_img_path={out}')
  assert result.returncode == 0, result.stderr
  rows = read_manifest(out)
  assert [(rgb(r['strut1']), rgb(r['strut2']), rgb(r['strut3'])) for r in rows] == \
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
  _, files = generate(strut_runs[3], tmp_path / 'out', num=1, **{'struts': (), **kwargs})
  assert _strut_pixels(files, [(7, 11), (5, 14), (2, 3)]) == [pixels]


@pytest.mark.parametrize('kwargs, fragments', [
    ({'strut_list': '0,0,0;1,1,1;2,2,2;3,3,3'}, ['--struts gives 4 colours', '3 strut pixels']),
    ({'strut_list': '0,0,0;1,1;2,2,2'}, ['--struts=', 'colour 2', "'1,1'", 'three integers']),
    ({'strut_list': ''}, ['--struts', 'colour 1', 'three integers']),
    ({'strut_list': '0,0,0', 'struts': ('1,1,1',)}, ['--struts', '--strut1', 'not both']),
], ids=['too_many', 'bad_colour', 'empty', 'both'])
def test_bad_struts_are_refused(strut_runs, tmp_path, kwargs, fragments):
  with pytest.raises(DesignGanError) as info:
    generate(strut_runs[3], tmp_path / 'out', **{'struts': (), **kwargs})
  assert_names_problem(str(info.value), fragments)
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# Large requests


def test_too_many_designs_are_refused_before_loading(one_strut_run, tmp_path, monkeypatch):
  _never_load(monkeypatch)
  with pytest.raises(DesignGanError, match=r'--num_gen_image .* from 1 to 100,000, got 100001'):
    generate(one_strut_run, tmp_path / 'out', struts=(), num=100_001)
  assert os.listdir(tmp_path) == []


def test_a_grid_of_too_many_designs_is_refused_before_loading(tmp_path, monkeypatch):
  """--grid draws every design of a request without --sweep: 45,000 made a 189,002-pixel-tall
  grid.png that Pillow refused to open (a decompression bomb), with 2.0 GB of memory."""
  _never_load(monkeypatch)
  with pytest.raises(DesignGanError, match=r'--grid draws every design on one sheet, at most '
                                           r'10,000 .* got --num_gen_image=10001; leave out '
                                           r'--grid'):
    generate(tmp_path / 'no_run', tmp_path / 'out', num=10_001, grid=True)
  assert os.listdir(tmp_path) == []


class _Loaded(Exception):
  """Raised by a stubbed inference.load: the request passed every check made before loading."""


@pytest.mark.parametrize('kwargs', [dict(num=100_000), dict(num=10_000, grid=True)],
                         ids=['num', 'grid'])
def test_the_design_limits_are_inclusive(tmp_path, monkeypatch, kwargs):
  """At most 100,000 designs, and at most 10,000 on a --grid: a request of exactly the limit
  gets as far as loading the model (the messages say 'from 1 to 100,000', 'at most 10,000')."""
  def load(*args, **kw):
    raise _Loaded
  monkeypatch.setattr(inference_output.inference, 'load', load)
  with pytest.raises(_Loaded):
    generate(tmp_path / 'no_run', tmp_path / 'out', **kwargs)
  assert os.listdir(tmp_path) == []


def test_a_sweep_of_too_many_designs_is_refused_before_generating(one_strut_run, tmp_path):
  """834 for each of the 120 pairs is 100,080 designs: the message says how many fit."""
  with pytest.raises(DesignGanError) as info:
    generate(one_strut_run, tmp_path / 'out', struts=(), num=834, durability=None, mass=None,
              sweep=True)
  assert_names_problem(str(info.value), ['100,080 designs', '120 class pairs', '100,000',
                                          '--num_gen_image=833'])
  assert os.listdir(tmp_path) == []


def test_a_large_request_is_generated_in_chunks_and_reports_progress(one_strut_run, tmp_path,
                                                                      monkeypatch):
  """Above CHUNK_SIZE designs, a line per chunk generated and written; the designs are those of
  one batch (the noise does not depend on the chunk size)."""
  generate(one_strut_run, tmp_path / 'whole', struts=(), num=10)
  monkeypatch.setattr(inference_output, 'CHUNK_SIZE', 4)
  lines = []
  generate(one_strut_run, tmp_path / 'chunked', struts=(), num=10, progress=lines.append)
  assert lines == [f'{verb} {k} of 10 designs' for verb in ('generated', 'wrote')
                   for k in (4, 8, 10)]
  whole, chunked = read_bytes(tmp_path / 'whole'), read_bytes(tmp_path / 'chunked')
  assert whole.keys() == chunked.keys()
  for name in bmp_names(tmp_path / 'whole'):
    np.testing.assert_allclose(images_lib.read_rgb(str(tmp_path / 'chunked' / name)),
                               images_lib.read_rgb(str(tmp_path / 'whole' / name)), atol=1)
  lines.clear()
  generate(one_strut_run, tmp_path / 'small', struts=(), num=4, progress=lines.append)
  assert lines == []  # a request of at most CHUNK_SIZE designs is quick: no progress


def test_load_takes_a_device_name_as_select_device_does(one_strut_run):
  """From Python, load(..., device='cpu') is the natural call: it failed with a 'checkpoint is
  damaged' error (the name reached orbax as a sharding's device)."""
  by_name = inference.load(one_strut_run, device='cpu')
  assert {d for leaf in jax.tree.leaves(by_name.state) for d in leaf.devices()} == {
      jax.devices('cpu')[0]}
  with pytest.raises(DesignGanError, match="--device='tpu' is not allowed"):
    inference.load(one_strut_run, device='tpu')


def test_select_device_reads_names_in_any_case_and_auto_prefers_the_first_gpu(monkeypatch):
  """--device=CPU (or AUTO) is the device cpu names; auto is the first GPU where JAX sees one,
  else the CPU; a GPU JAX does not have is one line (no GPU is needed: JAX's device list is
  replaced)."""
  cpu = jax.devices('cpu')[0]
  assert inference.select_device('CPU') == cpu
  gpus = [types.SimpleNamespace(platform='gpu', id=k) for k in range(2)]
  monkeypatch.setattr(jax, 'devices', lambda backend=None: [cpu] if backend else [cpu] + gpus)
  assert inference.select_device('AUTO') is gpus[0]

  def cpu_only(backend=None):
    if backend not in (None, 'cpu'):
      raise RuntimeError(f'Unknown backend {backend}')
    return [cpu]

  monkeypatch.setattr(jax, 'devices', cpu_only)
  assert inference.select_device('auto') is cpu
  with pytest.raises(DesignGanError, match='^--device=Cuda: no GPU is available on this machine; '
                                           'use --device=cpu$'):
    inference.select_device('Cuda')  # the alias names the platform it stands for


@pytest.mark.parametrize('durability, mass, fixed_rows, expected', [
    ([10], [0], 1, r'durability .*0\.\.9.*got 10'),
    ([0], [-1], 1, r'mass .*0\.\.11.*got -1'),
    ([1.4], [0], 1, r'durability .*class_index.*got 1\.4'),
    ([0, 1], [0], 2, 'mass has 1 .* 2 designs'),
    ([0, 1], [0, 1], 1, 'fixed has 1 .* 2 designs'),
    ([True], [0], 1, r'durability .*got \[True\]'),
    (0, [0], 1, r'durability .*one per design .*got 0$'),
], ids=['past-the-vocabulary', 'negative', 'a-class-value', 'short-mass', 'short-fixed', 'a-bool',
        'one-index-for-all'])
def test_generate_refuses_what_names_no_class_or_design(one_strut_run, durability, mass,
                                                        fixed_rows, expected):
  """From Python, generate takes class indices: one past the vocabulary gave an all-black design,
  a negative one the last class, a class value (1.4) its integer part, and arrays of other lengths
  a bare IndexError; each is a DataError saying what is allowed, as are booleans (True is no
  index) and one index instead of one per design."""
  model = inference.load(one_strut_run)
  fixed = np.zeros((fixed_rows,) + model.spec.layout.shape, np.float32)
  with pytest.raises(data.DataError, match=expected):
    inference.generate(model, durability, mass, fixed, seed=0)


def test_class_indices_given_as_whole_floats_are_those_indices(one_strut_run):
  """generate takes indices of any numeric type that are whole numbers (1.0 from NumPy
  arithmetic): the designs are those of the same integer indices."""
  model = inference.load(one_strut_run)
  fixed = np.zeros((2,) + model.spec.layout.shape, np.float32)
  np.testing.assert_array_equal(
      inference.generate(model, np.array([1.0, 9.0]), np.array([0.0, 11.0]), fixed, seed=1),
      inference.generate(model, [1, 9], [0, 11], fixed, seed=1))


def test_generate_of_no_designs_is_an_empty_array(one_strut_run):
  model = inference.load(one_strut_run)
  designs = inference.generate(model, [], [], np.zeros((0,) + model.spec.layout.shape), seed=0)
  assert designs.shape == (0,) + FULL_SHAPE and designs.dtype == np.uint8


@pytest.mark.parametrize('colors', [[[300, 0, 0]], np.array([[300, 0, 0]]), [[-1, 0, 0]],
                                    [[0.5, 0, 0]], [[True, False, True]], [['0', '0', '0']]],
                         ids=['300', 'array-300', '-1', '0.5', 'bools', 'strings'])
def test_fixed_pixels_refuses_a_colour_outside_0_255(one_strut_run, colors):
  """A list with 300 raised NumPy's OverflowError; an array with 300 (or -1) wrapped silently to
  another colour (44, 255); booleans are no colour values (True would be 1)."""
  model = inference.load(one_strut_run)
  with pytest.raises(data.DataError, match='integers 0..255'):
    inference.fixed_pixels(model, colors)
  assert inference.fixed_pixels(model, np.array([[44, 0, 0]]))[7, 7, 0] > -1


def test_a_shorter_last_chunk_runs_the_compiled_shape_of_the_others(one_strut_run):
  """10 designs in chunks of 4: the last two were sampled at a shape of their own (a compilation
  more); padded, every chunk runs one executable (the designs and progress lines are checked by
  test_a_large_request_is_generated_in_chunks_and_reports_progress)."""
  model = inference.load(one_strut_run)
  n = 10
  d, m = np.arange(n) % len(model.spec.durability), np.arange(n) % len(model.spec.mass)
  fixed = np.zeros((n,) + model.spec.layout.shape, np.float32)
  chunked = inference.generate(model, d, m, fixed, seed=3, chunk_size=4)
  assert chunked.shape == (n,) + FULL_SHAPE
  assert model.sample_fn._cache_size() == 1
  # Each chunk samples its own rows, padded to the chunk size; a chunk size above the request's
  # is its size (else a request of 3 designs would sample infer.py's CHUNK_SIZE, 10,000 rows).
  rows = []

  def sample(*args):
    rows.append(len(args[-1]))  # the fixed-pixel images of the chunk
    return model.sample_fn(*args)

  counted = dataclasses.replace(model, sample_fn=sample)
  np.testing.assert_array_equal(inference.generate(counted, d, m, fixed, seed=3, chunk_size=4),
                                chunked)
  assert inference.generate(counted, d[:3], m[:3], fixed[:3], seed=3,
                            chunk_size=10_000).shape == (3,) + FULL_SHAPE
  assert rows == [4, 4, 4, 3], rows


def test_a_request_removes_the_staging_directory_a_killed_request_left(one_strut_run, tmp_path):
  """A request killed (SIGKILL) while its designs were staged left its staging directory beside
  the output for good (a hidden '.inference-*', one more per kill); the next request to that
  output removes it. One of a live process, or of another output, stays."""
  host = socket.gethostname()
  killed = tmp_path / f'out.partial-{host}-{finished_pid()}-abc'
  live = tmp_path / f'out.partial-{host}-{os.getppid()}-abc'
  other = tmp_path / f'other.partial-{host}-{finished_pid()}-abc'
  for d in (killed, live, other):
    d.mkdir()
    (d / 'design_0.bmp').write_bytes(b'half')
  generate(one_strut_run, tmp_path / 'out', struts=('0,0,0',), num=2)
  assert sorted(os.listdir(tmp_path)) == sorted(['out', live.name, other.name])
  assert len(bmp_names(tmp_path / 'out')) == 2


def test_an_output_directory_a_pseudo_filesystem_refuses_is_one_error(one_strut_run):
  """/proc passes os.access for root; the staging directory's mkdtemp named its own name."""
  # ... and left out --gen_img_path, which every other output path error names
  with pytest.raises(DesignGanError, match='--gen_img_path /proc/designgan-test/out cannot be '
                                           'created.*give a directory you can write'):
    generate(one_strut_run, '/proc/designgan-test/out', struts=(), num=3)


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


def test_cli_ctrl_c_after_it_wrote_is_ignored(one_strut_run, tmp_path):
  """SIGINT once the designs are written and reported: no traceback from the interpreter's
  teardown ("Exception ignored in atexit callback"), exit status 0, the designs kept."""
  out = tmp_path / 'out'
  args = [sys.executable, 'infer.py', f'--model_path={one_strut_run}', '--durability=1.4',
          '--mass=2.14', '--num_gen_image=2', '--device=cpu', f'--gen_img_path={out}']
  with subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True) as proc:
    wrote = proc.stdout.readline()
    proc.send_signal(signal.SIGINT)  # during JAX's and orbax's atexit handlers
    _, err = proc.communicate(timeout=CLI_TIMEOUT_S)
  assert wrote == (f'wrote 2 designs and manifest.csv to {out} (step 1 of '
                   f'{os.path.join(one_strut_run, "checkpoints")})\n'), (wrote, err)
  assert proc.returncode == 0, err
  assert 'Traceback' not in err and 'KeyboardInterrupt' not in err, err
  assert len(bmp_names(out)) == 2


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
    generate(one_strut_run, tmp_path / 'a' / 'b' / 'out', struts=(), num=5)
  assert os.listdir(tmp_path) == []


def test_a_ctrl_c_that_a_callback_swallowed_still_writes_nothing(one_strut_run, tmp_path,
                                                                 monkeypatch):
  """As under infer.py (interrupts.watched): a Ctrl-C swallowed while the designs are generated
  (JAX's gc callback runs Python where a KeyboardInterrupt cannot propagate) stops the request
  before anything moves in."""
  generate_designs = inference_output.inference.generate

  def generate_then_swallowed_sigint(*args, **kwargs):
    designs = generate_designs(*args, **kwargs)
    try:
      os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt:
      pass  # swallowed
    return designs

  monkeypatch.setattr(inference_output.inference, 'generate', generate_then_swallowed_sigint)
  with pytest.raises(KeyboardInterrupt), interrupts.watched():
    generate(one_strut_run, tmp_path / 'a' / 'out', struts=(), num=3)
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
    generate(one_strut_run, out, struts=(), num=3)
  monkeypatch.undo()
  assert len(bmp_names(out)) == 3 and len(read_manifest(out)) == 3
  assert os.listdir(tmp_path) == ['out']


def test_a_ctrl_c_while_a_failing_move_runs_leaves_its_error_standing(one_strut_run, tmp_path,
                                                                       monkeypatch):
  """A SIGINT while the files move in, then a move that fails half-way: the error ('cannot
  write', exit 1 under infer.py) stands, not a Ctrl-C that infer.py reports as 'interrupted:
  nothing written' while a design did move in."""
  replace = os.replace
  moved = []

  def replace_sigint_then_fail(src, dst):
    if moved:
      raise OSError(errno.ENOSPC, 'No space left on device')
    replace(src, dst)
    moved.append(dst)
    os.kill(os.getpid(), signal.SIGINT)

  monkeypatch.setattr(inference_output.os, 'replace', replace_sigint_then_fail)
  out = tmp_path / 'out'
  with interrupts.watched():
    with pytest.raises(DesignGanError, match='cannot write to .*No space left'):
      generate(one_strut_run, out, struts=(), num=3)
    assert not interrupts.interrupted()
  monkeypatch.undo()
  assert len(os.listdir(out)) == 1


def test_a_full_disk_while_staging_is_one_error_and_leaves_nothing(one_strut_run, tmp_path,
                                                                     monkeypatch):
  """A disk that fills while the designs are written into the staging directory (before anything
  moves in): infer.py ended with Pillow's OSError traceback; now one error naming the output
  directory and the reason, and the staged files are gone."""
  write_rgb = images_lib.write_rgb
  written = []

  def write_then_fill(path, image, **kwargs):
    if written:
      raise OSError(errno.ENOSPC, 'No space left on device')
    write_rgb(path, image, **kwargs)
    written.append(path)

  monkeypatch.setattr(images_lib, 'write_rgb', write_then_fill)
  out = tmp_path / 'out'
  with pytest.raises(DesignGanError, match=f'{out}.*No space left on device'):
    generate(one_strut_run, out, struts=(), num=3)
  monkeypatch.undo()
  assert os.listdir(tmp_path) == []


def test_a_second_ctrl_c_while_cleaning_up_does_not_claim_the_designs_were_written(
    one_strut_run, tmp_path, monkeypatch):
  """Ctrl-C while writing, and again while the staged files are removed: still nothing written,
  and the interrupt says nothing of written designs."""
  write_rgb = images_lib.write_rgb
  rmtree = shutil.rmtree

  def interrupted_write(path, image, **kwargs):
    write_rgb(path, image, **kwargs)
    raise KeyboardInterrupt

  def rmtree_then_sigint(path, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    rmtree(path, **kwargs)

  monkeypatch.setattr(images_lib, 'write_rgb', interrupted_write)
  monkeypatch.setattr(inference_output.shutil, 'rmtree', rmtree_then_sigint)
  with pytest.raises(KeyboardInterrupt) as info:
    generate(one_strut_run, tmp_path / 'out', struts=(), num=3)
  monkeypatch.undo()
  assert 'written' not in str(info.value)
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('seed, other', [(0, 2**32), (-1, 2**32 - 1), (5, -2**63 + 5)])
def test_seeds_that_share_their_low_32_bits_give_other_designs(one_strut_run, tmp_path, seed,
                                                               other):
  """Every seed --seed allows is its own noise: jax.random.PRNGKey keeps only the low 32 bits
  without jax_enable_x64, so 2**32 drew the designs of 0 (and -1 those of 2**32 - 1)."""
  a, _ = generate(one_strut_run, tmp_path / 'a', struts=(), seed=seed)
  b, _ = generate(one_strut_run, tmp_path / 'b', struts=(), seed=other)
  designs = [{n: v for n, v in read_bytes(d).items() if n.endswith('.bmp')} for d in (a, b)]
  assert designs[0] != designs[1]


def test_a_damaged_step_directory_names_the_earlier_one_as_a_model_path(one_strut_run, tmp_path):
  """--model_path=<checkpoints>/2 with --step=1 is refused (two steps named), so the message of a
  damaged step 2 given as a directory names the directory of step 1, which loads; given as a run
  directory, it says --step=1."""
  ckpts = tmp_path / 'model' / 'checkpoints'
  shutil.copytree(os.path.join(one_strut_run, 'checkpoints', '1'), ckpts / '1')
  shutil.copytree(ckpts / '1', ckpts / '2')
  os.remove(ckpts / '2' / 'state' / '_METADATA')  # refused before any array is read
  with pytest.raises(checkpoints.CheckpointError, match='damaged') as info:
    inference.load(str(ckpts / '2'), device=jax.devices('cpu')[0])
  hint = f'read one with --model_path={ckpts / "1"})'
  assert str(info.value).endswith(hint), str(info.value)
  assert inference.load(str(ckpts / '1'), device=jax.devices('cpu')[0]).epoch == 1
  with pytest.raises(checkpoints.CheckpointError, match='damaged') as info:
    inference.load(str(tmp_path / 'model'), device=jax.devices('cpu')[0])
  assert str(info.value).endswith('read one with --step=N, e.g. --step=1)'), str(info.value)


@pytest.mark.parametrize('requested, allowed', [
    (12345678.0, True), ('12345678', True), (np.float32(12345678), True),
    (12345678.01, False),  # another value of 2 places
    # Rounds to the class but is not it, which float32 could not tell: it was taken as the class.
    ('12345678.001', False), (12345678.001, False),
    # ... where float32 is how the caller gave it: a scalar, a 0-d array, a JAX scalar
    (np.float32(1.4), True), (np.array(1.4, np.float32), True), (jax.numpy.float32(1.4), True)])
def test_a_requested_class_is_compared_at_the_precision_it_was_given_in(requested, allowed):
  vocab = data.ClassVocab((1.4, 12345678.0))
  model = type('Model', (), {})()  # only its spec is read
  model.spec = type('S', (), {'durability': vocab, 'mass': vocab})()
  request = lambda: inference_output._class_indices(  # pylint: disable=protected-access
      model, requested, 1.4, sweep=False)
  if allowed:
    assert request() == [(vocab.index(requested), 0)]
  else:
    with pytest.raises(DesignGanError, match=f'--durability={requested} is not a class'):
      request()


def test_a_sweep_numbers_each_pairs_designs_from_000(one_strut_run, tmp_path):
  """--sweep writes <durability>_<mass>_000.bmp, _001.bmp, ... for each pair (the README's
  names), not one count running on across the 120 pairs."""
  _, files = generate(one_strut_run, tmp_path / 'out', struts=(), num=2, durability=None,
                      mass=None, sweep=True)
  names = [os.path.basename(f) for f in files]
  assert len(set(names)) == len(names) == 120 * 2
  assert [n.rsplit('_', 1)[1] for n in names] == ['000.bmp', '001.bmp'] * 120
  assert sorted(bmp_names(tmp_path / 'out')) == sorted(names)


@pytest.mark.parametrize('given', [dict(durability=1.4, mass=None),
                                   dict(durability=None, mass=2.14)], ids=['durability', 'mass'])
def test_a_sweep_with_one_class_given_is_refused(one_strut_run, tmp_path, given):
  """--sweep generates every pair: a --durability or a --mass given with it is refused, as both
  are, not silently ignored."""
  with pytest.raises(DesignGanError, match='--sweep generates every .* leave out --durability'):
    generate(one_strut_run, tmp_path / 'out', struts=(), num=1, sweep=True, **given)
  assert os.listdir(tmp_path) == []


def test_the_lowest_64_bit_seed_is_accepted(one_strut_run, tmp_path):
  """--seed takes every 64-bit integer: -2**63, the lowest (the range the error names), too."""
  _, files = generate(one_strut_run, tmp_path / 'out', struts=(), num=1, seed=-2**63)
  assert len(files) == 1 and os.path.isfile(files[0])


def test_only_design_names_an_earlier_manifest_lists_are_replaced(one_strut_run, tmp_path):
  """A manifest.csv of infer.py's columns that lists other files (edited by hand, or written by
  another tool) removes none of them: a request replaces only names of designs it writes."""
  out = tmp_path / 'out'
  out.mkdir()
  (out / 'notes.txt').write_text('mine')
  (out / 'manifest.csv').write_text(
      'file,durability,mass,strut1,seed,measured_durability,measured_mass\n'
      'notes.txt,1.4,2.14,"0,0,0",0,,\n')
  _, files = generate(one_strut_run, out, struts=('0,0,0',), num=1)
  assert sorted(os.listdir(out)) == sorted([os.path.basename(files[0]), 'manifest.csv',
                                            'notes.txt'])
  assert (out / 'notes.txt').read_text() == 'mine'


def test_an_earlier_requests_design_numbered_1000_or_more_is_replaced(one_strut_run, tmp_path):
  """A request of more than 1,000 designs names them _000 .. _999, _1000, ...: those of four
  digits are an earlier request's too, so a later request into the directory removes them with
  the rest, and the directory matches its new manifest."""
  out = tmp_path / 'out'
  out.mkdir()
  earlier = ['1.4_2.14_999.bmp', '1.4_2.14_1000.bmp', '1.4_2.14_12345.bmp']
  for name in earlier:
    (out / name).write_bytes(b'earlier')
  (out / 'manifest.csv').write_text(
      'file,durability,mass,strut1,seed,measured_durability,measured_mass\n'
      + ''.join(f'{n},1.4,2.14,"0,0,0",0,,\n' for n in earlier))
  _, files = generate(one_strut_run, out, struts=('0,0,0',), num=1)
  assert sorted(os.listdir(out)) == sorted([os.path.basename(files[0]), 'manifest.csv'])


@pytest.mark.parametrize('header', [
    'design,durability,mass,strut1,seed,measured_durability,measured_mass',
    'file,mass,durability,strut1,seed,measured_durability,measured_mass',
    'file,durability,mass,strut2,seed,measured_durability,measured_mass',
    'file,durability,mass,strut1,seed,measured_mass,measured_durability',
    'file,durability,mass,strut1,run_seed,measured_durability,measured_mass',
], ids=['first_column', 'classes_swapped', 'strut_numbering', 'measured_swapped', 'seed_renamed'])
def test_a_manifest_with_other_columns_is_someone_elses(one_strut_run, tmp_path, header):
  """Only a manifest.csv with exactly infer.py's columns, in its order, is an earlier request's:
  one that differs in any of them is the user's, and the designs it lists are not replaced."""
  out = tmp_path / 'out'
  out.mkdir()
  (out / '1.4_2.14_000.bmp').write_bytes(b'mine')
  (out / 'manifest.csv').write_text(f'{header}\n1.4_2.14_000.bmp,1.4,2.14,"0,0,0",0,,\n')
  before = _snapshot(out)
  with pytest.raises(DesignGanError, match='which infer.py did not write'):
    generate(one_strut_run, out, struts=('0,0,0',), num=1)
  assert _snapshot(out) == before


def test_a_manifest_without_strut_columns_is_someone_elses(one_strut_run, tmp_path):
  """infer.py's manifest.csv has a strut1 column at least: one with its other columns but none
  for struts is not an earlier request's, so the designs it lists are not replaced."""
  out = tmp_path / 'out'
  out.mkdir()
  (out / '1.4_2.14_000.bmp').write_bytes(b'mine')
  (out / 'manifest.csv').write_text('file,durability,mass,seed,measured_durability,'
                                    'measured_mass\n1.4_2.14_000.bmp,1.4,2.14,0,,\n')
  before = _snapshot(out)
  with pytest.raises(DesignGanError, match='which infer.py did not write'):
    generate(one_strut_run, out, struts=('0,0,0',), num=1)
  assert _snapshot(out) == before
