"""Loading a directory of labelled design images into training arrays.

Each file is one design; its labels live in the name, `<durability>_<...>_<mass>_<anything>.<ext>`:
durability is the first `_` token of the stem, mass the second-to-last, both plain decimals rounded
to 2 places (so `2.2` and `2.20` are one class). Everything the model needs to interpret its
inputs again later (the layout and both class vocabularies) is kept in a `DataSpec`, which is
saved with a checkpoint.

Geometry comes from the files, not from constants: the image size is whatever the files have, and
`datashape='dropempty'` keeps only the columns that hold material in at least one design.
"""

import collections
import dataclasses
import decimal
import hashlib
import os
import re
from typing import Optional, Sequence

import numpy as np

from gan import config as config_lib
from gan import images as image_io
from gan import paths
from gan.errors import ConfigError, DataError
from gan.layout import DEFAULT_STRUT_POSITIONS, DesignLayout, column_ranges, parse_strut_positions


NAME_PATTERN = '<durability>_<...>_<mass>_<anything>.bmp|.png'
# ASCII digits only: `\d` would also accept other scripts' digits, which no one means as a label.
_PLAIN_DECIMAL = re.compile(r'(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\Z')
# What `_PLAIN_DECIMAL` takes, for messages.
PLAIN_DECIMAL_FORMS = ('such as 1, 1.4 or .5: ASCII digits with at most one ".", no sign, '
                       'exponent or "_", not nan or inf')
_TWO_PLACES = decimal.Decimal('0.01')
# Name at most this many skipped files in the warning; a directory full of them would flood the log.
_MAX_LISTED = 10
# infer.py's contact sheet (--grid), never a design: a request into a data directory (its designs
# are named for it) wrote one there, and its name has no labels.
INFER_GRID = 'grid.png'


# ---------------------------------------------------------------------------------------------
# Labels and vocabularies


def _round2(value) -> float:
  """Rounds a label (plain-decimal string or number) to 2 decimal places.

  The rounding is done in decimal arithmetic on the written digits, half to even like `round`,
  so '2.675' and 2.675 give the same class however the float happens to be stored.

  Raises:
    ValueError: `value` is not a finite, non-negative plain decimal.
  """
  if isinstance(value, str):
    if not _PLAIN_DECIMAL.match(value):
      raise ValueError(f'{value!r} is not a plain decimal ({PLAIN_DECIMAL_FORMS})')
    text = value
  else:
    text = repr(float(value))  # repr is the shortest string that reads back as the same float
  exact = decimal.Decimal(text)
  with decimal.localcontext() as ctx:
    # Enough digits that quantize never overflows the context: the written ones, and those an
    # exponent stands for (a float's repr: 1e+26 has 29 to the second place).
    ctx.prec = max(28, len(text) + 4, exact.adjusted() + 4)
    try:
      number = exact.quantize(_TWO_PLACES, rounding=decimal.ROUND_HALF_EVEN)
    except decimal.InvalidOperation:
      raise ValueError(f'{value!r} is not a finite number') from None
  result = float(number)
  if not np.isfinite(result) or result < 0:
    raise ValueError(f'{value!r} is not a finite, non-negative number')
  return result + 0.0  # turns -0.0 into 0.0 so that one class has one spelling


def class_value(value) -> float:
  """A class value given outside a file name (durability_values, mass_values), read as a file
  name's label is: a plain decimal string (ASCII digits, no sign, exponent or `_`) or a number,
  rounded to 2 decimal places. ValueError otherwise."""
  return _round2(value.strip() if isinstance(value, str) else value)


def requested_class(text: str) -> float:
  """A class value as a request names it (infer.py's --durability and --mass): spelt as
  `class_value` reads it, so a request refuses what a file name's label refuses (2e0, +1.4,
  nan), but the number as written, not rounded: a request names a class exactly (1.404 is not
  class 1.4). ValueError, saying what is allowed, otherwise."""
  class_value(text)
  return float(text.strip())


def parse_labels(filename: str) -> tuple[float, float]:
  """Returns (durability, mass) from a design file name, each rounded to 2 decimals.

  Only the base name is looked at; the extension is dropped. Example: '1.4_a_b_2.20_x.bmp' ->
  (1.4, 2.2).

  Raises:
    DataError: the name has fewer than 3 `_` tokens, or a label is not a plain decimal.
  """
  name = os.path.basename(filename)
  tokens = os.path.splitext(name)[0].split('_')
  if len(tokens) < 3:
    raise DataError(f'{filename}: cannot read the labels from the file name: it needs at least 3 '
                    f'"_"-separated parts, expected {NAME_PATTERN}')
  labels = []
  for what, token in (('durability', tokens[0]), ('mass', tokens[-2])):
    try:
      labels.append(_round2(token))
    except ValueError:
      raise DataError(f'{filename}: {what} {token!r} is not a plain decimal number '
                      f'({PLAIN_DECIMAL_FORMS}); expected {NAME_PATTERN}') from None
  return labels[0], labels[1]


def _format_value(value: float) -> str:
  """Shortest decimal for a 2-place value: 1.4 -> '1.4', 2.14 -> '2.14', 3.0 -> '3'."""
  return f'{value:.2f}'.rstrip('0').rstrip('.')


def format_class(value) -> str:
  """A class value as written in a file name: shortest decimal with at most 2 places."""
  return _format_value(_round2(value))


@dataclasses.dataclass(frozen=True)
class ClassVocab:
  """The class values of one label, sorted ascending; a class index is a position in `values`.

  Values are rounded to 2 places and de-duplicated on construction, so ClassVocab((2.2, 2.20))
  has one class.
  """
  values: tuple[float, ...]

  def __post_init__(self):
    try:
      values = tuple(sorted({_round2(v) for v in self.values}))
    except (TypeError, ValueError) as e:
      raise DataError(f'invalid class values {self.values!r}: {e}') from None
    if not values:
      raise DataError('a class vocabulary needs at least one value')
    object.__setattr__(self, 'values', values)

  def index(self, value) -> int:
    """The class index of `value` (rounded to 2 places).

    Raises:
      DataError: `value` is not one of the classes; the message lists the allowed values.
    """
    try:
      return self.values.index(_round2(value))
    except ValueError:
      raise DataError(f'{value!r} is not one of the allowed values: {self.describe()}') from None

  def __len__(self) -> int:
    return len(self.values)

  def format(self, value) -> str:
    return format_class(value)

  def describe(self) -> str:
    """All values, comma-separated, for messages."""
    return ', '.join(_format_value(v) for v in self.values)


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """What a trained model needs to know about its data; saved as checkpoint metadata."""
  layout: DesignLayout
  durability: ClassVocab
  mass: ClassVocab

  def class_pairs(self, per_pair: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """int32 (durability, mass) class indices of every pair, each `per_pair` times, durability
    major: the order of the evaluation's per-class tables and of every (durability x mass) grid
    of designs (TensorBoard, gan.compare's figure, infer.py --sweep)."""
    d, m = np.meshgrid(np.arange(len(self.durability)), np.arange(len(self.mass)), indexing='ij')
    return (np.repeat(d.ravel(), per_pair).astype(np.int32),
            np.repeat(m.ravel(), per_pair).astype(np.int32))

  def to_dict(self) -> dict:
    """JSON-serialisable form; `from_dict(to_dict())` gives an equal spec."""
    return {'layout': self.layout.to_dict(), 'durability': list(self.durability.values),
            'mass': list(self.mass.values)}

  @classmethod
  def from_dict(cls, d: dict) -> 'DataSpec':
    """Inverse of `to_dict`.

    Raises:
      DataError: a vocabulary is missing or malformed.
      LayoutError: the layout is malformed.
    """
    try:
      layout, durability, mass = d['layout'], d['durability'], d['mass']
    except (KeyError, TypeError):
      raise DataError(f'invalid data spec metadata {d!r}: expected the keys layout, durability '
                      'and mass') from None
    return cls(DesignLayout.from_dict(layout), ClassVocab(tuple(durability)),
               ClassVocab(tuple(mass)))


# ---------------------------------------------------------------------------------------------
# Arrays


# eq=False: the default __eq__ would compare arrays element-wise and fail on truth-testing them.
@dataclasses.dataclass(frozen=True, eq=False)
class DesignArrays:
  """A set of designs in the training layout.

  Attributes:
    images: float32 (N, H, W, 3) in [-1, 1].
    fixed: float32 (N, H, W, 3): the strut colours at the strut pixels, -1 elsewhere.
    strut_colors: uint8 (N, num_struts, 3), the colour of each strut pixel.
    durability: int32 (N,) durability class indices.
    mass: int32 (N,) mass class indices.
    names: (N,) file names.
  """
  images: np.ndarray
  fixed: np.ndarray
  strut_colors: np.ndarray
  durability: np.ndarray
  mass: np.ndarray
  names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.names)

  def take(self, indices: np.ndarray) -> 'DesignArrays':
    """The designs at `indices`, in that order."""
    indices = np.asarray(indices, dtype=np.int64)
    return DesignArrays(self.images[indices], self.fixed[indices], self.strut_colors[indices],
                        self.durability[indices], self.mass[indices],
                        tuple(self.names[i] for i in indices))


def normalize(images_uint8) -> np.ndarray:
  """uint8 pixel values 0..255 -> float32 in [-1, 1] (x = v / 127.5 - 1)."""
  return np.asarray(images_uint8, dtype=np.float32) / np.float32(127.5) - np.float32(1.0)


def denormalize(images) -> np.ndarray:
  """Float images in [-1, 1] (NumPy or JAX) -> uint8, round(255 * (x + 1) / 2) clipped to 0..255.

  NaN becomes black: casting NaN to uint8 is undefined, and a generated image is still worth
  saving to see what went wrong.
  """
  x = np.nan_to_num(np.asarray(images, dtype=np.float32), nan=-1.0)
  return np.clip(np.round(255.0 * (x + 1.0) / 2.0), 0, 255).astype(np.uint8)


def full_designs(layout: DesignLayout, images) -> np.ndarray:
  """(N, h, w, 3) images in [-1, 1] in the training layout -> (N, H, W, 3) uint8 designs in the
  full layout (dropped columns re-inserted): what is drawn, written and measured."""
  return layout.to_full(denormalize(images))


def fixed_pixel_images(strut_colors, layout: DesignLayout) -> np.ndarray:
  """(N, num_struts, 3) uint8 strut colours -> (N, H, W, 3) float32 images in the training layout.

  Each image is -1 (black) everywhere except at the strut pixels, which hold their normalised
  colour: this is the conditioning input that tells the generator what the struts look like.
  """
  colors = np.asarray(strut_colors)
  num_struts = len(layout.strut_positions)
  if colors.ndim != 3 or colors.shape[1:] != (num_struts, 3):
    raise DataError(f'expected strut colours of shape (N, {num_struts}, 3) for a layout with '
                    f'{num_struts} struts, got {colors.shape}')
  fixed = np.full((colors.shape[0],) + layout.shape, -1.0, dtype=np.float32)
  if num_struts:
    rows, cols = np.asarray(layout.train_strut_positions).T
    fixed[:, rows, cols, :] = normalize(colors)
  return fixed


# ---------------------------------------------------------------------------------------------
# Dataset


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A loaded dataset: spec, train/validation designs and the strut mask.

  Attributes:
    spec: layout and vocabularies.
    train: training designs.
    val: validation designs (may be empty).
    mask: float32 (H, W, 3), 1 at the strut pixels, shared by all designs.
    data_dir: the directory the designs came from (for messages and the summary).
  """
  spec: DataSpec
  train: DesignArrays
  val: DesignArrays
  mask: np.ndarray
  data_dir: str = ''
  skipped: tuple[str, ...] = ()  # names of the files in data_dir that are not designs
  subdirs: tuple[str, ...] = ()  # names of its (not hidden) subdirectories, not searched
  merged: tuple[str, ...] = ()  # labels written differently that rounding made one class

  @property
  def layout(self) -> DesignLayout:
    return self.spec.layout

  def held_out(self) -> tuple[str, 'DesignArrays']:
    """('val', validation designs), or ('train', training designs) when there are none: what
    evaluation measures against and the output BMPs are generated for."""
    return ('val', self.val) if len(self.val) else ('train', self.train)

  def summary(self) -> str:
    """A multi-line description for logs: sizes, geometry, struts and class counts."""
    layout = self.spec.layout
    struts = ', '.join(f'({r},{c})->({tr},{tc})' for (r, c), (tr, tc)
                       in zip(layout.strut_positions, layout.train_strut_positions)) or 'none'
    lines = [
        f'data: {shown(self.data_dir)}',
        f'designs: {len(self.train) + len(self.val)} (train {len(self.train)}, '
        f'val {len(self.val)})',
        f'geometry: full {layout.full_height}x{layout.full_width}, training '
        f'{layout.height}x{layout.width} (datashape={layout.datashape})',
        f'kept columns: {column_ranges(layout.kept_columns)}',
        f'struts (full -> training row,col): {struts}',
    ]
    for label in ('durability', 'mass'):
      vocab = getattr(self.spec, label)
      indices = np.concatenate([getattr(self.train, label), getattr(self.val, label)])
      counts = np.bincount(indices, minlength=len(vocab))
      classes = ', '.join(f'{_format_value(v)} ({n})' for v, n in zip(vocab.values, counts))
      lines.append(f'{label}: {len(vocab)} class{"es" * (len(vocab) != 1)}: {classes}')
    return '\n'.join(lines)

  def fingerprint(self) -> dict:
    """Which designs these are, for checkpoint metadata: their count and a hash of their file
    names (which carry the labels). Other designs under the same data_path draw another
    train/validation split."""
    names = sorted(self.train.names + self.val.names)
    digest = hashlib.sha256('\n'.join(names).encode('utf-8', 'surrogateescape')).hexdigest()
    return {'designs': len(names), 'names_sha256': digest[:16]}

  def warnings(self) -> list[str]:
    """What is legal but probably a mistake, for the training log: the files of the data
    directory skipped as not designs and its subdirectories, not searched; label values written
    differently that rounding made one class; a label with nearly as many classes as designs (read
    from the wrong part of the names?); validation designs that copy training designs; and what
    limits a conditional model of these designs: training designs of one class of a label (the
    generator cannot learn to vary it), classes no training design has (designs asked for them
    are extrapolations)."""
    found = []
    if self.skipped:
      grid = (f' ({INFER_GRID}: infer.py\'s contact sheet of a request, not a design)'
              if INFER_GRID in self.skipped else '')
      found.append(f'{shown(self.data_dir)}: skipped {len(self.skipped)} file(s) that are not '
                   f'.bmp/.png images or are hidden: {_listed(self.skipped)}{grid}')
    if self.subdirs:
      found.append(f'{shown(self.data_dir)}: {len(self.subdirs)} subdirector'
                   f'{"ies" if len(self.subdirs) > 1 else "y"} not searched (designs are read '
                   f'from the directory itself): {_listed([d + "/" for d in self.subdirs])}')
    found += [f'{m} (labels are rounded to 2 decimals)' for m in self.merged]
    designs = len(self.train) + len(self.val)
    for label in ('durability', 'mass'):
      vocab = getattr(self.spec, label)
      # The classes the names give, not a fixed vocabulary's (durability_values may list more).
      used = len(np.unique(np.concatenate([getattr(self.train, label), getattr(self.val, label)])))
      if used > max(20, designs // 2):
        part = 'first' if label == 'durability' else 'second-to-last'
        found.append(f'{label} has {used} classes among {designs} designs: is it read from '
                     f'the right part of the names? {label} is the {part} "_"-separated part of '
                     f'{NAME_PATTERN} (e.g. {_listed(self.train.names[:1])} -> {label} '
                     f'{_format_value(vocab.values[getattr(self.train, label)[0]])})')
    if len(self.val):
      seen = {_design_key(self.train, i) for i in range(len(self.train))}
      copies = sum(_design_key(self.val, i) in seen for i in range(len(self.val)))
      if copies:
        found.append(f'{copies} of {len(self.val)} validation designs are copies (same pixels '
                     'and labels) of training designs: held-out metrics overstate how well the '
                     'model generalises')
    for label in ('durability', 'mass'):
      present = self._training_classes(label, present=True)
      if len(present) == 1:
        found.append(f'every training design has {label} {present[0]}: the model cannot learn '
                     f'to vary {label}')
      untrained = self._training_classes(label, present=False)
      if untrained:
        found.append(f'no training design has {label} {", ".join(untrained)}: the generator is '
                     'never trained on it, so designs asked for it are extrapolations, and the '
                     'evaluations count them')
    return found

  def untrained_classes(self) -> dict:
    """{label: [its classes (as written) that no training design has]} for the labels with any:
    the classes a fixed vocabulary (durability_values, mass_values) adds to the data's, and a rare
    class whose designs all fell in the validation split (the vocabulary is the whole data's)."""
    return {label: untrained for label in ('durability', 'mass')
            if (untrained := self._training_classes(label, present=False))}

  def _training_classes(self, label: str, present: bool) -> list[str]:
    """The classes of `label` (as written) that training designs have, or (not `present`) that
    none has."""
    vocab = getattr(self.spec, label)
    counts = np.bincount(getattr(self.train, label), minlength=len(vocab))
    return [_format_value(v) for v, n in zip(vocab.values, counts) if (n > 0) == present]


def fingerprint_change(saved: Optional[dict], dataset: 'Dataset') -> str:
  """'' when `dataset` holds the designs a checkpoint's metadata fingerprinted (or the metadata
  predates fingerprints), else what changed and what it means."""
  now = dataset.fingerprint()
  if not saved or saved == now:
    return ''
  count = (f'{saved.get("designs")} then, {now["designs"]} now'
           if saved.get('designs') != now['designs'] else 'as many, other file names')
  return (f'the designs in {shown(dataset.data_dir)} are not those the model was trained on '
          f'({count}): the train/validation split is drawn anew, so validation designs may be ones '
          'it was trained on')


def spec_changes(old: dict, new: dict) -> str:
  """What differs between two `DataSpec.to_dict()`s, for messages: 'durability 1, 1.1 -> 1, 1.1,
  1.2; layout kept_columns'. The values of a layout field are left out (long lists)."""
  changes = []
  for label in ('durability', 'mass'):
    if old.get(label) != new.get(label):
      before, after = ([_format_value(v) for v in d.get(label) or ()] for d in (old, new))
      changes.append(f'{label} {", ".join(before) or "none"} -> {", ".join(after) or "none"}')
  old_layout, new_layout = old.get('layout') or {}, new.get('layout') or {}
  fields = [k for k in sorted(set(old_layout) | set(new_layout))
            if old_layout.get(k) != new_layout.get(k)]
  if fields:
    changes.append(f'layout {", ".join(fields)}')
  return '; '.join(changes)


def _listed(names: Sequence[str]) -> str:
  """The first few names, then how many more; non-UTF-8 bytes of a name escaped (\\xff), so
  that a log line can be written at all."""
  more = f' and {len(names) - _MAX_LISTED} more' if len(names) > _MAX_LISTED else ''
  return ', '.join(shown(n) for n in names[:_MAX_LISTED]) + more


def shown(name: str) -> str:
  """A file or directory name for a log line: its non-UTF-8 bytes escaped (\\xff), since a lone
  surrogate fails a strict UTF-8 console's handler ('Logging error', the line lost)."""
  return os.fsencode(name).decode('utf-8', 'backslashreplace')


def _design_key(arrays: DesignArrays, i: int) -> tuple:
  # A digest, not the pixels' bytes: a set of those would copy the whole training set (GBs).
  digest = hashlib.blake2b(digest_size=16)
  digest.update(np.ascontiguousarray(arrays.images[i]))
  digest.update(np.ascontiguousarray(arrays.fixed[i]))
  return digest.digest(), int(arrays.durability[i]), int(arrays.mass[i])


def _merged_labels(paths: Sequence[str]) -> tuple[str, ...]:
  """Per label, the classes that values written differently in the names were rounded into
  (2.131 and 2.134 -> 2.13): one line each, at most a few."""
  found = []
  for what, part in (('durability', 0), ('mass', -2)):
    written = collections.defaultdict(set)
    for path in paths:
      token = os.path.splitext(os.path.basename(path))[0].split('_')[part]
      # normalize() rounds to its context's precision, 28 digits by default: 1.4 and
      # 1.4000000000000000000000000000001 were one spelling. The token's length is enough.
      exact = decimal.Decimal(token).normalize(decimal.Context(prec=len(token)))
      written[_round2(token)].add(exact)
    merged = [(c, sorted(v)) for c, v in sorted(written.items()) if len(v) > 1]
    for value, spellings in merged[:3]:
      found.append(f'{what} values {", ".join(f"{v:f}" for v in spellings[:4])}'
                   f'{" ..." if len(spellings) > 4 else ""} in the file names were all read as '
                   f'class {_format_value(value)}')
    if len(merged) > 3:
      found.append(f'... and {len(merged) - 3} more {what} classes like these')
  return tuple(found)


def parse_class_values(value, field: str = 'class values'):
  """'' -> None (infer from the data); '1.0,1.1' or a list -> list of floats, each read as a
  file name's label (`class_value`: float() would take '1_0' as 10 and other scripts'
  digits); `field` names the config field in errors."""
  if value in ('', None):
    return None
  try:
    return [class_value(v) for v in (value.split(',') if isinstance(value, str) else value)]
  except (TypeError, ValueError):
    raise ConfigError(f'{field} must be comma-separated numbers such as 1.0,1.1,1.2 (plain '
                      f'decimals as in the file names, none empty), got {value!r}') from None


def load_for_config(config) -> Dataset:
  """The dataset a resolved config names (the embedded designs when data_path is empty)."""
  return load_dataset(resolve_data_path(config.data_path), config.datashape,
                      config.strut_positions,
                      parse_class_values(config.durability_values, 'durability_values'),
                      parse_class_values(config.mass_values, 'mass_values'), config.val_fraction,
                      config_lib.data_seed(config))


def resolve_data_path(data_path: Optional[str]) -> str:
  """'' or None -> the bundled default dataset directory; anything else unchanged."""
  if not data_path:
    from gan import designs  # pylint: disable=import-outside-toplevel  (only needed here)
    return designs.ensure_default_dataset()
  return data_path


def load_dataset(data_path: str, datashape: str = 'dropempty',
                 strut_positions=DEFAULT_STRUT_POSITIONS,
                 durability_values: Optional[Sequence[float]] = None,
                 mass_values: Optional[Sequence[float]] = None,
                 val_fraction: float = 0.1, seed: int = 0) -> Dataset:
  """Loads every .bmp/.png in `data_path` (sorted by name) and splits it into train/validation.

  Args:
    data_path: directory of design images; subdirectories are ignored; hidden files, infer.py's
      grid.png and files of other kinds are skipped with a warning.
    datashape: 'original' keeps every column, 'dropempty' drops the columns black in every image.
    strut_positions: strut (row, col) pixels in full-layout coordinates ([[r, c], ...] or
      'r,c;r,c').
    durability_values, mass_values: fixed class vocabularies; None infers them from the names.
    val_fraction: share of designs held out for validation, in [0, 1).
    seed: seed of the train/validation split.

  Raises:
    DataError: the directory, a file, a name or a label is unusable (one error, naming it), or
      val_fraction is outside [0, 1).
    LayoutError: a strut falls outside the grid or in a dropped column, or datashape is unknown.
  """
  _check_fraction(val_fraction)
  struts = parse_strut_positions(strut_positions)
  paths, skipped, subdirs = _list_images(data_path)
  labels = [parse_labels(p) for p in paths]  # cheap checks first: fail before reading pixels
  durability = _vocab(durability_values, [d for d, _ in labels], 'durability', paths)
  mass = _vocab(mass_values, [m for _, m in labels], 'mass', paths)
  full = _read_images(paths)
  height, width = full.shape[1:3]
  occupied = np.flatnonzero(full.any(axis=(0, 1, 3)))
  layout = DesignLayout.from_datashape(datashape, height, width, occupied, struts)

  rows, cols = np.asarray(layout.strut_positions, dtype=np.int64).reshape(-1, 2).T
  strut_colors = full[:, rows, cols, :]
  arrays = DesignArrays(
      images=normalize(layout.from_full(full)),
      fixed=fixed_pixel_images(strut_colors, layout),
      strut_colors=strut_colors,
      durability=np.array([durability.index(d) for d, _ in labels], dtype=np.int32),
      mass=np.array([mass.index(m) for _, m in labels], dtype=np.int32),
      names=tuple(os.path.basename(p) for p in paths))
  train_idx, val_idx = split_indices(len(paths), val_fraction, seed)
  return Dataset(DataSpec(layout, durability, mass), arrays.take(train_idx), arrays.take(val_idx),
                 layout.strut_mask(), data_dir=data_path, skipped=skipped, subdirs=subdirs,
                 merged=_merged_labels(paths))


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Random (train, val) index arrays, each ascending, together covering range(n) once.

  The validation part has round(n * val_fraction) items, but when val_fraction > 0 and n >= 2
  each part keeps at least one; the training part is never emptied.
  """
  _check_fraction(val_fraction)
  n_val = round(n * val_fraction)
  if val_fraction > 0 and n >= 2:
    n_val = max(n_val, 1)
  n_val = min(n_val, max(n - 1, 0))  # a run cannot train on nothing
  order = np.random.default_rng(seed).permutation(n)
  return np.sort(order[n_val:]), np.sort(order[:n_val])


def _check_fraction(val_fraction: float):
  # `not (0 <= f < 1)` also catches NaN, which compares false with everything.
  if not 0 <= val_fraction < 1:
    raise DataError(f'validation fraction must be in [0, 1), got {val_fraction!r}')


def _list_images(data_path: str) -> tuple[list[str], tuple[str, ...], tuple[str, ...]]:
  """(paths of the image files in `data_path`, names of the other files, names of the
  subdirectories that are not hidden), sorted by name."""
  if not os.path.exists(data_path):
    relative = '' if os.path.isabs(data_path) else f' (relative to {os.getcwd()})'
    aside = paths.set_aside(data_path)
    raise DataError(f'{data_path}: data directory does not exist{relative}' + (
        f'; a `python -m gan.designs --overwrite` replacing it was stopped half-way and set its '
        f'designs aside in {aside[0]}: run that command again (it puts them back first), or '
        'rename that directory back' if aside else ''))
  if not os.path.isdir(data_path):
    raise DataError(f'{data_path}: is a file, expected a directory of {NAME_PATTERN} images')
  try:
    entries = sorted(os.scandir(data_path), key=lambda e: e.name)
  except OSError as e:
    raise DataError(f'{data_path}: cannot list the data directory ({e.strerror})') from None
  files, skipped = [], []
  for entry in entries:
    if _is_dir(entry):
      continue
    if (_is_hidden(entry.name) or not image_io.is_image_file(entry.name)
        or entry.name == INFER_GRID):
      skipped.append(entry.name)
    else:
      files.append(entry.path)
  subdirs = [e.name for e in entries if _is_dir(e) and not _is_hidden(e.name)]
  if not files:
    hint = (f' (subdirectories such as {subdirs[0]}/ are not searched: give the directory that '
            'holds the images)' if subdirs else '')
    raise DataError(f'{data_path}: no .bmp or .png images found; expected files named '
                    f'{NAME_PATTERN}{hint}')
  return files, tuple(skipped), tuple(subdirs)


def _is_dir(entry: os.DirEntry) -> bool:
  """Whether `entry` is a directory or a link to one; a link that cannot be followed (a loop of
  links) is not, so that reading it gives an error naming it rather than a traceback here."""
  try:
    return entry.is_dir()
  except OSError:
    return False


def _is_hidden(name: str) -> bool:
  """Hidden files are editor/OS droppings (.DS_Store, ._x.bmp resource forks), never designs;
  but a name such as `.5_a_2.2_x.bmp` is a design whose durability .5 is written without its
  leading zero, as a label may be."""
  return name.startswith('.') and name[1:2] not in tuple('0123456789')


def _vocab(fixed_values, labels: list[float], what: str, paths: list[str]) -> ClassVocab:
  """The caller's vocabulary (checked against every label) or the one inferred from `labels`."""
  if fixed_values is None:
    return ClassVocab(tuple(labels))
  try:
    vocab = ClassVocab(tuple(fixed_values))
  except DataError as e:
    raise DataError(f'{what}_values: {e}') from None
  allowed = set(vocab.values)
  for path, label in zip(paths, labels):
    if label not in allowed:
      raise DataError(f'{path}: {what} {_format_value(label)} is not one of the allowed values: '
                      f'{vocab.describe()}')
  return vocab


def _read_images(paths: list[str]) -> np.ndarray:
  """Reads all images as one (N, H, W, 3) uint8 array; every image must have the same size."""
  arrays = [image_io.read_rgb(path) for path in paths]
  shapes = collections.Counter(a.shape[:2] for a in arrays)
  if len(shapes) > 1:
    (h, w), _ = shapes.most_common(1)[0]
    odd = [(p, a.shape[:2]) for p, a in zip(paths, arrays) if a.shape[:2] != (h, w)]
    listed = ', '.join(f'{p} is {s[0]}x{s[1]}' for p, s in odd[:3])
    raise DataError(f'{len(odd)} of {len(paths)} designs are not {h}x{w} (HxW) like the others: '
                    f'{listed}{" ..." if len(odd) > 3 else ""}; all designs must have one size')
  return np.stack(arrays)
