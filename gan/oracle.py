r"""The physics oracle of the synthetic car-part designs: durability and mass from pixels alone.

A design is a 10 x 30 RGB grid. Material lives on the part's footprint, the column blocks 0-5,
10-15 and 20-21 (140 pixels); the two strut pixels (row 7, col 11) and (row 5, col 14) hold
bolted-in stiffeners; everything else is empty. Each footprint pixel other than a strut is a
structural *cell* (138 cells) whose colour (R, G, B) / 255 = (t, g, h) encodes

  t  wall thickness,   g  material grade,   h  heat-treatment level     (each in [0, 1]).

Mass (material amount; higher grades are denser alloys)::

  rho(g)  = 1 + 0.25 g
  m_raw   = 2.10 + 0.30 * mean_cells( t * rho(g) )
  mass    = m_raw rounded to 0.01                       (classes 2.13 ... 2.24)

Durability (load-path strength). Rows far from the neutral axis (row 4.5) carry more of the
bending load, stronger material and heat treatment raise the cell strength, and the strength is a
thickness-weighted average, so it depends on *where* and *of what* the material is, not on how
much there is::

  w(r)    = 0.4 + 0.6 ((r - 4.5) / 4.5)^2               bending weight of row r
  sigma   = (0.5 + g) (1 + h)                           cell strength
  P       = sum_cells w t sigma / (sum_cells t + 1e-6)  load-path strength
  k(c)    = (0.5 R + 0.3 G + 0.2 B) / 255               strut stiffness of strut colour c
  n_i     = mean thickness t of the 4 cells next to strut i
  S       = sum_struts k(c_i) n_i                       stiffening (a strut must be attached)
  d_raw   = 0.51 + 1.15 P (1 + 0.25 S)
  durability = d_raw rounded to 0.1                     (classes 1.0 ... 1.9)

Rounding is half-up on the class grid, so a class is the interval [centre - step/2, centre +
step/2). Values outside the vocabulary are returned as they are (a generated design can be too
heavy): callers compare them with the requested class. Pixels outside the footprint are not part
of the part and are ignored. The arithmetic is float64 NumPy on uint8 pixels: deterministic.
"""

import numpy as np

from gan import layout as layout_lib

HEIGHT = layout_lib.HYUNDAI_HEIGHT
WIDTH = layout_lib.HYUNDAI_WIDTH
FOOTPRINT_COLUMNS = layout_lib.HYUNDAI_ACTIVE_COLUMNS
STRUTS = layout_lib.DEFAULT_STRUT_POSITIONS

DURABILITY_STEP = 0.1
MASS_STEP = 0.01
DURABILITY_CLASSES = tuple(round(1.0 + DURABILITY_STEP * i, 1) for i in range(10))
MASS_CLASSES = tuple(round(2.13 + MASS_STEP * i, 2) for i in range(12))

# Formula constants (see the module docstring).
MASS_BASE, MASS_SCALE, DENSITY_PER_GRADE = 2.10, 0.30, 0.25
DUR_BASE, DUR_SCALE, STRUT_GAIN = 0.51, 1.15, 0.25
EPS = 1e-6


def _footprint_masks():
  footprint = np.zeros((HEIGHT, WIDTH), bool)
  footprint[:, list(FOOTPRINT_COLUMNS)] = True
  cells = footprint.copy()
  for r, c in STRUTS:
    cells[r, c] = False
  neighbours = []
  for r, c in STRUTS:
    nb = np.zeros((HEIGHT, WIDTH), bool)
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
      rr, cc = r + dr, c + dc
      if 0 <= rr < HEIGHT and 0 <= cc < WIDTH and cells[rr, cc]:
        nb[rr, cc] = True
    neighbours.append(nb)
  return cells, np.stack(neighbours)


CELLS, STRUT_NEIGHBOURS = _footprint_masks()          # (10, 30) and (num_struts, 10, 30)
ROW_WEIGHT = 0.4 + 0.6 * ((np.arange(HEIGHT) - 4.5) / 4.5) ** 2


def density(g):
  return 1.0 + DENSITY_PER_GRADE * g


def strength(g, h):
  return (0.5 + g) * (1.0 + h)


def strut_stiffness(colors):
  """k(c) for uint8/float colours (..., 3) in 0..255."""
  colors = np.asarray(colors, np.float64)
  return (0.5 * colors[..., 0] + 0.3 * colors[..., 1] + 0.2 * colors[..., 2]) / 255.0


def measure_raw(images) -> tuple[np.ndarray, np.ndarray]:
  """Continuous (d_raw, m_raw) of uint8 designs (..., 10, 30, 3) in the full layout."""
  images = np.asarray(images)
  if images.shape[-3:] != (HEIGHT, WIDTH, 3):
    raise ValueError(f'the oracle measures full-layout {HEIGHT}x{WIDTH} RGB designs, got shape '
                     f'{images.shape}; re-insert dropped columns with DesignLayout.to_full first')
  if images.dtype != np.uint8:
    raise ValueError(f'the oracle measures uint8 pixels, got {images.dtype}')
  px = images.astype(np.float64) / 255.0
  t, g, h = px[..., 0], px[..., 1], px[..., 2]
  num_cells = CELLS.sum()
  m_raw = MASS_BASE + MASS_SCALE * np.sum(t * density(g) * CELLS, axis=(-2, -1)) / num_cells
  w = ROW_WEIGHT[:, None]
  path = (np.sum(w * t * strength(g, h) * CELLS, axis=(-2, -1))
          / (np.sum(t * CELLS, axis=(-2, -1)) + EPS))
  stiffening = 0.0
  for (r, c), nb in zip(STRUTS, STRUT_NEIGHBOURS):
    attached = np.sum(t * nb, axis=(-2, -1)) / nb.sum()
    stiffening = stiffening + strut_stiffness(images[..., r, c, :]) * attached
  d_raw = DUR_BASE + DUR_SCALE * path * (1.0 + STRUT_GAIN * stiffening)
  return d_raw, m_raw


def to_class_value(raw, step: float, decimals: int):
  """Rounds half-up onto the class grid: 1.449.. -> 1.4, 1.45 -> 1.5 (for step 0.1).

    class = step floor(round(raw / step, 9) + 1/2)

  raw / step is rounded to 9 decimals first: a boundary such as 1.45 or 2.215 is not a binary
  float, and its quotient (14.499999999999998, 221.49999999999997) would round down. A uint8
  design can lie exactly on a boundary (its mass is an integer multiple of 0.30 / (255 1020 138),
  about 8e-7 class steps), and nothing closer than that is moved.
  """
  return np.round(np.floor(np.round(np.asarray(raw) / step, 9) + 0.5) * step, decimals)


def measure(images):
  """(durability, mass) class values of uint8 designs (..., 10, 30, 3); scalars for one image."""
  d_raw, m_raw = measure_raw(images)
  durability = to_class_value(d_raw, DURABILITY_STEP, 1)
  mass = to_class_value(m_raw, MASS_STEP, 2)
  if durability.ndim == 0:
    return float(durability), float(mass)
  return durability, mass

