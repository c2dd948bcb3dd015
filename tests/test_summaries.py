"""gan/summaries.py's design grid, cell by cell (TensorBoard's and gan.compare's figure)."""

import numpy as np

from gan import summaries


def test_a_design_grid_puts_each_design_upscaled_in_its_own_cell_on_a_grey_border():
  rows, cols, h, w, scale, pad = 2, 3, 2, 4, 3, 1
  designs = np.arange(rows * cols * h * w * 3, dtype=np.uint8).reshape(rows, cols, h, w, 3)
  grid = summaries.design_grid(designs, scale=scale, pad=pad)
  assert grid.shape == (rows * (h * scale + pad) + pad, cols * (w * scale + pad) + pad, 3)
  covered = np.zeros(grid.shape[:2], bool)
  for r in range(rows):
    for c in range(cols):
      top, left = pad + r * (h * scale + pad), pad + c * (w * scale + pad)
      cell = grid[top:top + h * scale, left:left + w * scale]
      np.testing.assert_array_equal(cell[::scale, ::scale], designs[r, c])  # upscaled...
      np.testing.assert_array_equal(cell, np.kron(designs[r, c], np.ones((scale, scale, 1),
                                                                          np.uint8)))  # ... whole
      covered[top:top + h * scale, left:left + w * scale] = True
  assert (grid[~covered] == summaries.PAD_VALUE).all()  # the rest, the outer edge too, is grey
  assert covered[pad, pad] and not covered[0].any() and not covered[:, -1].any()
