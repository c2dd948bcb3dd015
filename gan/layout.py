"""Where a design's pixels live: the full grid, the training layout and the strut pixels.

A design is an H x W RGB grid (the Hyundai parts: 10 x 30). Training may use every column
(`datashape=original`) or only the columns that hold material in at least one design
(`datashape=dropempty`: for the Hyundai parts columns 0-5, 10-15 and 20-21, width 14). Strut
("fixed") pixels are given in full-layout (row, col) coordinates and mapped into the training
layout here, the one place that knows about dropped columns.

All mappings work on any array with trailing (H, W, C) axes, NumPy or JAX, and are exact: a full
image whose dropped columns are black survives full -> training -> full unchanged.
"""

import dataclasses
import operator
import re
from typing import Any, Sequence

import numpy as np

from gan.errors import LayoutError

# The Hyundai parts: 10 x 30 grid, material only in these column blocks, struts at these pixels.
HYUNDAI_HEIGHT = 10
HYUNDAI_WIDTH = 30
HYUNDAI_ACTIVE_COLUMNS = tuple(range(0, 6)) + tuple(range(10, 16)) + tuple(range(20, 22))
DEFAULT_STRUT_POSITIONS = ((7, 11), (5, 14))

DATASHAPES = ('original', 'dropempty')


@dataclasses.dataclass(frozen=True)
class DesignLayout:
  """The full grid size, the columns kept for training, and the strut pixels.

  Attributes:
    full_height: rows of a design image.
    full_width: columns of a design image.
    kept_columns: full-layout column indices present in the training layout, ascending.
    strut_positions: (row, col) of each strut pixel in the full layout.
  """
  full_height: int
  full_width: int
  kept_columns: tuple[int, ...]
  strut_positions: tuple[tuple[int, int], ...]

  def __post_init__(self):
    object.__setattr__(self, 'kept_columns', tuple(_pixel_index(c) for c in self.kept_columns))
    object.__setattr__(self, 'strut_positions',
                       tuple((_pixel_index(r), _pixel_index(c)) for r, c in self.strut_positions))
    if self.full_height < 1 or self.full_width < 1:
      raise LayoutError(f'layout size must be positive, got {self.full_height}x{self.full_width}')
    cols = self.kept_columns
    if not cols or list(cols) != sorted(set(cols)) or cols[0] < 0 or cols[-1] >= self.full_width:
      raise LayoutError(f'kept columns must be distinct, ascending and in 0..{self.full_width - 1}'
                        f', got {list(cols)}')
    for r, c in self.strut_positions:
      if not (0 <= r < self.full_height and 0 <= c < self.full_width):
        raise LayoutError(f'strut pixel (row {r}, col {c}) lies outside the '
                          f'{self.full_height}x{self.full_width} design grid')
      if c not in cols:
        raise LayoutError(f'strut pixel (row {r}, col {c}) falls in column {c}, which is dropped '
                          'by datashape=dropempty (it is black in every image); use '
                          'datashape=original or move the strut to a kept column: '
                          f'{column_ranges(cols)}')
    if len(set(self.strut_positions)) != len(self.strut_positions):
      raise LayoutError(f'strut positions must be distinct, got {list(self.strut_positions)}')

  @classmethod
  def original(cls, height: int, width: int,
               strut_positions: Sequence[Sequence[int]] = DEFAULT_STRUT_POSITIONS):
    """Keeps every column."""
    return cls(height, width, tuple(range(width)), tuple(map(tuple, strut_positions)))

  @classmethod
  def from_datashape(cls, datashape: str, height: int, width: int,
                     occupied_columns: Sequence[int],
                     strut_positions: Sequence[Sequence[int]] = DEFAULT_STRUT_POSITIONS):
    """Builds the layout for `datashape` given the columns that are non-black in some image."""
    if datashape == 'original':
      return cls.original(height, width, strut_positions)
    if datashape == 'dropempty':
      if len(occupied_columns) == 0:
        raise LayoutError('datashape=dropempty: every column is black in every image, nothing '
                          'would remain; check the dataset')
      return cls(height, width, tuple(sorted(occupied_columns)),
                 tuple(map(tuple, strut_positions)))
    raise LayoutError(f'unknown datashape {datashape!r}; allowed: {", ".join(DATASHAPES)}')

  @property
  def height(self) -> int:
    """Rows of the training layout (= full rows)."""
    return self.full_height

  @property
  def width(self) -> int:
    """Columns of the training layout."""
    return len(self.kept_columns)

  @property
  def shape(self) -> tuple[int, int, int]:
    """(H, W, 3) of one design in the training layout."""
    return (self.height, self.width, 3)

  @property
  def datashape(self) -> str:
    return 'original' if self.width == self.full_width else 'dropempty'

  @property
  def train_strut_positions(self) -> tuple[tuple[int, int], ...]:
    """Strut (row, col) in the training layout."""
    index = {c: i for i, c in enumerate(self.kept_columns)}
    return tuple((r, index[c]) for r, c in self.strut_positions)

  def strut_mask(self) -> np.ndarray:
    """(H, W, 3) float32 mask, 1 at the strut pixels (all channels) in the training layout."""
    mask = np.zeros(self.shape, np.float32)
    for r, c in self.train_strut_positions:
      mask[r, c, :] = 1.0
    return mask

  def from_full(self, x):
    """Selects the kept columns: (..., H, full_W, C) -> (..., H, W, C)."""
    self._check_width(x, self.full_width, 'full')
    return x[..., np.asarray(self.kept_columns), :]

  def to_full(self, x, background: Any = 0):
    """Re-inserts dropped columns filled with `background`: (..., H, W, C) -> (..., H, full_W, C).

    Use background 0 for uint8 images and -1 for images normalised to [-1, 1] (black).
    """
    self._check_width(x, self.width, 'training')
    xp = _array_module(x)
    pad_shape = x.shape[:-2] + (1, x.shape[-1])
    padded = xp.concatenate([x, xp.full(pad_shape, background, dtype=x.dtype)], axis=-2)
    source = np.full(self.full_width, self.width)  # dropped columns read the background column
    source[np.asarray(self.kept_columns)] = np.arange(self.width)
    return padded[..., source, :]

  def _check_width(self, x, width: int, name: str):
    if x.ndim < 3 or x.shape[-3] != self.full_height or x.shape[-2] != width:
      raise LayoutError(f'expected images of {name} layout (..., {self.full_height}, {width}, C), '
                        f'got shape {tuple(x.shape)}')

  def to_dict(self) -> dict:
    """JSON-serialisable form (for checkpoint metadata)."""
    return {'full_height': self.full_height, 'full_width': self.full_width,
            'kept_columns': list(self.kept_columns),
            'strut_positions': [list(p) for p in self.strut_positions]}

  @classmethod
  def from_dict(cls, d: dict) -> 'DesignLayout':
    try:
      return cls(int(d['full_height']), int(d['full_width']), tuple(d['kept_columns']),
                 tuple(tuple(p) for p in d['strut_positions']))
    except (KeyError, TypeError, ValueError) as e:
      raise LayoutError(f'invalid layout metadata {d!r}: {e}') from None


_DIGITS = re.compile(r'[+-]?[0-9]+')


def _pixel_index(value) -> int:
  """A row or column index: an integer, a whole float (7.0) or a digit string; 7.5 or True is a
  mistake, not pixel 7 or 1 (`int` would truncate it silently)."""
  if isinstance(value, (bool, np.bool_)):
    raise LayoutError(f'a pixel row or column must be a whole number, got {value!r}')
  if isinstance(value, str):  # ASCII digits only: int() reads '1_1' as 11 and other scripts'
    if not _DIGITS.fullmatch(value.strip()):  # digits, a typo that would move the strut silently
      raise LayoutError(f'a pixel row or column must be a whole number, got {value!r}')
    return int(value)
  if isinstance(value, (float, np.floating)) and float(value).is_integer():
    return int(value)
  try:
    return operator.index(value)
  except TypeError:
    raise LayoutError(f'a pixel row or column must be a whole number, got {value!r}') from None


def parse_strut_positions(value) -> tuple[tuple[int, int], ...]:
  """Accepts [[r, c], ...] or the string 'r,c;r,c' and returns ((r, c), ...)."""
  try:
    if isinstance(value, str):
      # Not every space deleted: '7,1 1' would be (7, 11), a typo moving the strut silently.
      pairs = [p.split(',') for p in value.split(';') if p.strip()]
    else:
      pairs = [list(p) for p in value]
    result = tuple((_pixel_index(p[0]), _pixel_index(p[1])) for p in pairs if len(p) == 2)
    if len(result) != len(pairs) or not result:
      raise ValueError
  except (TypeError, ValueError, LayoutError):
    raise LayoutError(f'strut positions must be (row, col) pairs of whole numbers such as '
                      f'"7,11;5,14", got {value!r}') from None
  return result


def _array_module(x):
  if isinstance(x, np.ndarray):
    return np
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  return jnp


def column_ranges(cols: Sequence[int]) -> str:
  """[0,1,2,5,6] -> '0-2, 5-6'."""
  parts, start = [], None
  for i, c in enumerate(cols):
    if start is None:
      start = c
    if i + 1 == len(cols) or cols[i + 1] != c + 1:
      parts.append(f'{start}-{c}' if c != start else f'{c}')
      start = None
  return ', '.join(parts)
