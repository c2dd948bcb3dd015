"""An inference request end to end: check the input, generate, write BMPs + manifest + grid.

Every input is checked (struts, device, checkpoint, vocabulary) before anything is generated,
and the files are written into a temporary directory that is moved into place at the end, so a
failed request leaves nothing half-written. A request into a directory that holds an earlier
request's outputs replaces them: the files its manifest.csv lists and its grid.png go, so the
directory always matches its manifest; other files are left alone. Only a manifest.csv with the
exact columns this module writes counts as an earlier request's: a directory whose manifest.csv or
grid.png is someone else's, or that holds a file of the name of an output, is refused before
anything is generated, so no file this module did not write is ever replaced or removed.
"""

import csv
import hashlib
import logging
import os
import re
import shutil
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from gan import data
from gan import images as images_lib
from gan import inference
from gan import interrupts
from gan import oracle
from gan import paths
from gan import summaries
from gan.config import MAX_SEED
from gan.errors import DataError, DesignGanError

GRID_COLUMNS = 10
# One request writes at most this many designs, each a file in one directory; generating
# 120,000 at once peaked at 2.3 GB of memory; in chunks of CHUNK_SIZE, 96,000 peak at 0.7 GB.
MAX_DESIGNS = 100_000
CHUNK_SIZE = 10_000  # designs generated (and written) between progress reports
# Designs at most on the grid.png of a request without --sweep (every design, 10 a row): 1,000
# rows, 42,002 x 1,222 pixels. 45,000 made a 189,002-pixel-tall sheet that Pillow refuses to open
# (a decompression bomb) and took 2.0 GB of memory; 100,000 would take about 4 GB.
GRID_MAX_DESIGNS = 10_000
STRUT_DEFAULT = (255, 255, 255)  # the colour of a strut pixel whose colour is not given
MANIFEST = 'manifest.csv'
GRID = data.INFER_GRID  # a data directory's loader skips it by this name
# The columns of a manifest this module writes: file, durability, mass, strut1..strutN, seed,
# measured_durability, measured_mass; and the design file names it lists.
_HEAD, _TAIL = ['file', 'durability', 'mass'], ['seed', 'measured_durability', 'measured_mass']
_DESIGN_NAME = re.compile(r'[^_/\\]+_[^_/\\]+_\d{3,}\.bmp')
# grid.png's text chunk: the SHA-256 of the manifest.csv written with it, so that only a grid.png
# of the request that manifest describes is replaced (a request without --grid writes none).
_GRID_MANIFEST_KEY = 'designgan manifest sha256'


def parse_rgb(text: str, flag: str, label: Optional[str] = None) -> tuple[int, int, int]:
  """'0,0,0' or '0 0 0' -> (0, 0, 0); anything but three integers in 0..255 is an error naming
  --`flag` (or `label`)."""
  parts = [p for p in re.split(r'[,\s]+', str(text).strip()) if p]
  try:
    values = tuple(int(p) for p in parts)
  except ValueError:
    values = ()
  if len(values) != 3 or not all(0 <= v <= 255 for v in values):
    raise DesignGanError(f'{label or f"--{flag}={text!r}"} must be three integers in 0..255 '
                         'such as 0,0,0 or 255,255,255')
  return values


def _given_struts(struts: Sequence[Optional[str]], strut_list: Optional[str]) -> dict:
  """{strut index: (flag, RGB)} of the strut colours given: struts[i] for strut i + 1 (None: not
  given), or strut_list, 'r,g,b;r,g,b;...' for struts 1, 2, ... (not both)."""
  if strut_list is None:
    return {i: (f'--strut{i + 1}', parse_rgb(s, f'strut{i + 1}'))
            for i, s in enumerate(struts) if s is not None}
  if any(s is not None for s in struts):
    raise DesignGanError('give the strut colours with --struts or with --strut1/--strut2, '
                         'not both')
  parts = str(strut_list).split(';')
  if len(parts) > 1 and not parts[-1].strip():
    parts.pop()  # a trailing ';'
  return {i: ('--struts', parse_rgb(p, 'struts', f'--struts={strut_list!r}: colour {i + 1} '
                                                 f'({p.strip()!r})'))
          for i, p in enumerate(parts)}


def _strut_colors(num_struts: int, given: dict) -> list:
  """The colour of each of the model's strut pixels: the one given, else STRUT_DEFAULT; a colour
  given for a strut beyond the model's is an error."""
  extra = sorted({given[i][0] for i in given if i >= num_struts})
  if extra:
    if extra == ['--struts']:
      what = f'--struts gives {len(given)} colours'
    else:
      what = ' and '.join(extra) + (' was' if len(extra) == 1 else ' were') + ' given'
    plural = 's' if num_struts != 1 else ''
    flags = ' and '.join(f'--strut{i + 1}' for i in range(min(num_struts, 2)))
    raise DesignGanError(
        f'{what} but this model has {num_struts} strut pixel{plural}; give at most {num_struts} '
        f'colour{plural} ({flags}, or --struts=\'r,g,b;...\'); a strut not given is '
        f'{",".join(map(str, STRUT_DEFAULT))}')
  return [given[i][1] if i in given else STRUT_DEFAULT for i in range(num_struts)]


def _class_indices(model, durability, mass, sweep: bool):
  """[(durability index, mass index), ...] for the request."""
  spec = model.spec
  if sweep:
    if durability is not None or mass is not None:
      raise DesignGanError('--sweep generates every (durability, mass) pair: leave out '
                           '--durability and --mass, or leave out --sweep')
    return list(zip(*(indices.tolist() for indices in spec.class_pairs())))
  missing = [f for f, v in (('durability', durability), ('mass', mass)) if v is None]
  if missing:
    raise DesignGanError(f'give --{" and --".join(missing)} (or --sweep for every pair); allowed '
                         f'durability: {spec.durability.describe()}; mass: {spec.mass.describe()}')
  indices = []
  for flag, vocab, value in (('durability', spec.durability, durability),
                             ('mass', spec.mass, mass)):
    try:
      index = vocab.index(value)  # the class of `value` rounded to 2 decimals
      # ... but 3.004 is not class 3: a request names a class exactly, at the precision it was
      # given in (a caller's np.float32(2.2) is class 2.2; a Python float or a flag compares in
      # float64, where 12345678.001 is not class 12345678, as it would be in float32).
      given = np.asarray(value).dtype  # a numpy or JAX float scalar or 0-d array keeps its own
      precision = given.type if np.issubdtype(given, np.floating) else np.float64
      exact = precision(value) == precision(vocab.values[index])
    except (DataError, TypeError, ValueError):
      exact = False
    if not exact:
      raise DesignGanError(f'--{flag}={value} is not a class of this model; allowed: '
                           f'{vocab.describe()}') from None
    indices.append(index)
  return [tuple(indices)]


def _untrained_requested(model, pairs) -> str:
  """'durability 2.5; mass 2.3': the requested classes that no training design had, or ''."""
  found = []
  for label, vocab, indices in (('durability', model.spec.durability, {p[0] for p in pairs}),
                                ('mass', model.spec.mass, {p[1] for p in pairs})):
    names = set(model.untrained_classes.get(label, ()))
    asked = [vocab.format(vocab.values[i]) for i in sorted(indices)]
    if names.intersection(asked):
      found.append(f'{label} {", ".join(a for a in asked if a in names)}')
  return '; '.join(found)


class Written(NamedTuple):
  """What a request wrote, and from which checkpoint (`--step` may be left to the latest)."""
  out_dir: str
  files: list[str]  # the designs' paths, in the manifest's order
  checkpoint_dir: str
  step: int


def run(*, model_path: str, step: Optional[int], durability, mass,
        struts: Sequence[Optional[str]] = (), strut_list: Optional[str] = None, num: int,
        out_dir: Optional[str], device: str, seed: int, grid: bool, sweep: bool,
        progress: Optional[Callable[[str], None]] = None,
        warn: Callable[[str], None] = logging.getLogger(__name__).warning) -> Written:
  """Generates and writes the designs; returns what it wrote (`Written`).

  struts[i] is the colour of strut pixel i + 1 ('r,g,b'; None or left out: STRUT_DEFAULT), or
  strut_list gives them all, 'r,g,b;r,g,b;...'; the model's strut count decides how many.
  A request of more than CHUNK_SIZE designs reports its progress in lines to `progress`; one for
  classes no training design had, a line to `warn` (this module's logger by default)."""
  given = _given_struts(struts, strut_list)
  if not 1 <= num <= MAX_DESIGNS:
    raise DesignGanError(f'--num_gen_image must be a number of designs from 1 to '
                         f'{MAX_DESIGNS:,}, got {num}')
  if grid and not sweep and num > GRID_MAX_DESIGNS:
    raise DesignGanError(f'--grid draws every design on one sheet, at most {GRID_MAX_DESIGNS:,} '
                         f'(larger sheets are too large for image viewers), got '
                         f'--num_gen_image={num}; leave out --grid or ask for fewer designs')
  if not -MAX_SEED - 1 <= seed <= MAX_SEED:  # prng.seed_key takes 64-bit seeds
    raise DesignGanError(f'--seed must be an integer from {-MAX_SEED - 1} to {MAX_SEED} (JAX '
                         f'seeds are 64-bit integers), got {seed}')
  out_dir, what = _output_dir(out_dir, model_path, step)  # before the model loads: at once
  dev = inference.select_device(device)
  model = inference.load(model_path, step, dev)
  colors = _strut_colors(len(model.spec.layout.strut_positions), given)
  pairs = _class_indices(model, durability, mass, sweep)
  if len(pairs) * num > MAX_DESIGNS:
    raise DesignGanError(
        f'--sweep --num_gen_image={num} asks for {len(pairs) * num:,} designs ({num} for each of '
        f'the {len(pairs)} class pairs); one request writes at most {MAX_DESIGNS:,} files (memory '
        f'and one directory), so give --num_gen_image={MAX_DESIGNS // len(pairs)} or less, or '
        'request pairs one at a time with --durability and --mass')
  report = _progress_reporter(progress, len(pairs) * num)
  d_idx = np.repeat([p[0] for p in pairs], num).astype(np.int32)
  m_idx = np.repeat([p[1] for p in pairs], num).astype(np.int32)
  spec = model.spec
  d_val = np.asarray(spec.durability.values)[d_idx]
  m_val = np.asarray(spec.mass.values)[m_idx]
  names = [f'{spec.durability.format(d)}_{spec.mass.format(m)}_{i % num:03d}.bmp'
           for i, (d, m) in enumerate(zip(d_val, m_val))]
  _replaced_outputs(out_dir, names + [MANIFEST] + ([GRID] if grid else []))  # refused early
  untrained = _untrained_requested(model, pairs)
  if untrained:
    warn(f'no training design had {untrained}: the generator was never trained on it, so these '
         'designs are extrapolations')
  fixed = inference.fixed_pixels(model, colors)
  designs = inference.generate(model, d_idx, m_idx, np.broadcast_to(fixed, (len(d_idx),)
                                                                    + fixed.shape), seed,
                               CHUNK_SIZE, report and (lambda k, n: report('generated', k)))
  measured = None
  if model.oracle_applies:  # in chunks: it holds several float64 copies of what it measures
    parts = [oracle.measure(designs[i:i + CHUNK_SIZE]) for i in range(0, len(designs),
                                                                       CHUNK_SIZE)]
    measured = tuple(np.concatenate(p) for p in zip(*parts))
  grid_image = None
  if grid:
    if sweep:
      first = designs.reshape((len(spec.durability), len(spec.mass), num) + designs.shape[1:])
      grid_image = summaries.design_grid(first[:, :, 0])
    else:
      grid_image = summaries.design_grid(_rows(designs, GRID_COLUMNS))
  with _staging(out_dir, what) as tmp:
    try:
      for i, (name, image) in enumerate(zip(names, designs)):
        images_lib.write_rgb(os.path.join(tmp, name), image, atomic=False)
        if report and ((i + 1) % CHUNK_SIZE == 0 or i + 1 == len(names)):
          report('wrote', i + 1)
      _write_manifest(os.path.join(tmp, MANIFEST), names, d_val, m_val, colors, seed,
                      measured, spec)
      if grid_image is not None:
        images_lib.write_rgb(os.path.join(tmp, GRID), grid_image, atomic=False,
                             text={_GRID_MANIFEST_KEY: _sha256(os.path.join(tmp, MANIFEST))})
    except OSError as e:  # a full disk: the staged files go with the staging directory
      raise paths.cannot_write(out_dir, e, what) from None
    interrupts.raise_if_interrupted()  # under infer.py: a Ctrl-C a callback swallowed moves nothing
  return Written(out_dir, [os.path.join(out_dir, n) for n in names], model.checkpoint_dir,
                 model.epoch)


def _progress_reporter(progress, total: int):
  """report(verb, done) writing 'generated 10,000 of 120,000 designs' lines to `progress`;
  None for a request of at most CHUNK_SIZE designs (quick) or without `progress`."""
  if progress is None or total <= CHUNK_SIZE:
    return None
  return lambda verb, done: progress(f'{verb} {done:,} of {total:,} designs')


def _output_dir(out_dir: Optional[str], model_path: str, step: Optional[int]) -> tuple[str, str]:
  """The absolute output directory (`out_dir` or <run>/inference_output), checked writable and
  in a writable directory (the outputs are staged beside it), and its name for messages; an
  OutputPathError otherwise."""
  what, hint = '--gen_img_path', ''
  if out_dir is None:  # not given; an empty one is refused below, as every tool's empty path
    out_dir = os.path.join(inference.find_checkpoints(model_path, step)[2], 'inference_output')
    what, hint = 'the default output directory', ' with --gen_img_path'
  try:
    out_dir = paths.check_output_dir(out_dir, what)
    parent = os.path.dirname(out_dir)
    if os.path.isdir(parent) and not os.access(parent, os.W_OK | os.X_OK):
      raise paths.OutputPathError(f'{what} {out_dir} cannot be written: its directory {parent} is '
                                  'not writable (the outputs are staged there); give a directory '
                                  'you can write')
  except paths.OutputPathError as e:
    raise paths.OutputPathError(f'{e}{hint}') from None
  return out_dir, what


def _rows(designs: np.ndarray, columns: int) -> np.ndarray:
  """(N, H, W, 3) -> (rows, columns, H, W, 3), padded with black designs."""
  n = len(designs)
  rows = -(-n // columns)
  cols = min(columns, n)
  padded = np.zeros((rows * cols,) + designs.shape[1:], np.uint8)
  padded[:n] = designs
  return padded.reshape((rows, cols) + designs.shape[1:])


def _write_manifest(path, names, d_val, m_val, colors, seed, measured, spec):
  with open(path, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(_HEAD + [f'strut{i + 1}' for i in range(len(colors))] + _TAIL)
    for i, name in enumerate(names):
      row = [name, spec.durability.format(d_val[i]), spec.mass.format(m_val[i])]
      row += [','.join(map(str, c)) for c in colors] + [seed]
      row += ([spec.durability.format(measured[0][i]), spec.mass.format(measured[1][i])]
              if measured is not None else ['', ''])
      w.writerow(row)


class _staging:
  """Context manager: a temporary directory whose files move into `out_dir` on success. On
  failure or Ctrl-C, the temporary directory and the directories made for it are removed: the
  request leaves nothing. A Ctrl-C while the files move in and the temporary directory goes waits
  for them; after a completed move it raises KeyboardInterrupt saying the designs were written."""

  def __init__(self, out_dir: str, what: str):
    self.out_dir, self.what = out_dir, what  # what: its name in messages ('--gen_img_path')

  def __enter__(self):
    parent = os.path.dirname(self.out_dir)
    self.made = []  # the directories that did not exist, deepest first
    d = self.out_dir
    while not os.path.exists(d):
      self.made.append(d)
      d = os.path.dirname(d)
    try:
      os.makedirs(parent, exist_ok=True)
      self.tmp = paths.staging_dir(self.out_dir)
    except OSError as e:  # e.g. under /proc, which os.access calls writable
      raise paths.cannot_create(self.out_dir, e, self.what) from None
    return self.tmp

  def __exit__(self, exc_type, exc, tb):
    moved = False
    with interrupts.held_back() as interrupted:
      try:
        if exc_type is None:
          self._move_in()
          moved = True
      finally:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if not moved:
          for d in self.made:  # empty unless the move failed part-way
            try:
              if os.path.isdir(d):
                os.rmdir(d)
            except OSError:
              break
    if interrupted and moved:  # else the exception in flight (a first Ctrl-C, an error) stands
      raise KeyboardInterrupt(f'the designs had already been written to {self.out_dir}')
    return False

  def _move_in(self):
    names = os.listdir(self.tmp)
    try:
      os.makedirs(self.out_dir, exist_ok=True)
      # Checked before the first file moves, so a refusal leaves the directory as it was.
      stale = _replaced_outputs(self.out_dir, names) - set(names)
      for name in names:
        os.replace(os.path.join(self.tmp, name), os.path.join(self.out_dir, name))
      for name in stale:
        os.remove(os.path.join(self.out_dir, name))
    except OSError as e:
      raise DesignGanError(f'cannot write to {self.out_dir}: {e}') from None


def _replaced_outputs(out_dir: str, names: Sequence[str]) -> set:
  """The files of an earlier request in `out_dir` that writing `names` replaces (the files its
  manifest.csv lists, its manifest.csv and grid.png); a DesignGanError when `out_dir` holds a
  directory of one of those names, or a file that is not an earlier request's output and would
  be overwritten, or a manifest.csv or grid.png that is not an earlier request's."""
  try:
    present = set(os.listdir(out_dir))
  except FileNotFoundError:
    return set()
  except OSError as e:
    raise DesignGanError(f'cannot read --gen_img_path {out_dir}: {e}') from None
  kept = {n for n in set(names) | {MANIFEST, GRID} if n in present}
  dirs = {n for n in kept if os.path.isdir(os.path.join(out_dir, n))}
  clashes = dirs & set(names)
  if clashes:
    raise DesignGanError(f'cannot write {out_dir}: {", ".join(sorted(clashes))} already exist '
                         'there as directories; remove them or choose another --gen_img_path')
  earlier = _earlier_outputs(out_dir)
  foreign = sorted(kept - dirs - earlier)
  if foreign:
    shown = ', '.join(foreign[:5]) + (f' and {len(foreign) - 5} more' if len(foreign) > 5 else '')
    raise DesignGanError(
        f'--gen_img_path {out_dir} holds {shown}, which infer.py did not write (it replaces only '
        'the files an earlier request listed in its own manifest.csv, and the grid.png written '
        'with it); choose another --gen_img_path or move them away')
  return earlier


def _earlier_outputs(out_dir: str) -> set:
  """The files an earlier request wrote into `out_dir`: manifest.csv, the designs it lists and
  grid.png if its text chunk holds that manifest's SHA-256; empty unless manifest.csv has exactly
  the columns `_write_manifest` writes."""
  try:
    with open(os.path.join(out_dir, MANIFEST), newline='') as f:
      reader = csv.reader(f)
      header = next(reader, [])
      struts = header[len(_HEAD):len(header) - len(_TAIL)]
      if (header[:len(_HEAD)] != _HEAD or header[len(_HEAD) + len(struts):] != _TAIL
          or not struts or struts != [f'strut{i + 1}' for i in range(len(struts))]):
        return set()  # someone else's manifest.csv
      names = {row[0] for row in reader if row}
  except (OSError, csv.Error, UnicodeDecodeError):
    return set()  # no earlier request (or not a manifest of ours): nothing to replace
  names = {n for n in names if _DESIGN_NAME.fullmatch(n)} | {MANIFEST}
  grid = os.path.join(out_dir, GRID)
  if (images_lib.png_text(grid).get(_GRID_MANIFEST_KEY)
      == _sha256(os.path.join(out_dir, MANIFEST))):
    names.add(GRID)
  return {n for n in names if os.path.isfile(os.path.join(out_dir, n))}


def _sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()
