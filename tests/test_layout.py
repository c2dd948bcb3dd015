"""Tests of gan/layout.py: full <-> training layout mappings and strut positions."""

import json

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest

from gan.errors import LayoutError
from gan.layout import (DEFAULT_STRUT_POSITIONS, HYUNDAI_ACTIVE_COLUMNS, HYUNDAI_HEIGHT,
                        HYUNDAI_WIDTH, DesignLayout, column_ranges, parse_strut_positions)


@st.composite
def layouts_and_images(draw, dtype):
  """A layout with random kept columns and a batch of images black in the dropped columns."""
  height = draw(st.integers(1, 6))
  width = draw(st.integers(1, 12))
  kept = draw(st.sets(st.integers(0, width - 1), min_size=1))
  layout = DesignLayout(height, width, tuple(sorted(kept)), ())
  batch = draw(st.integers(1, 3))
  seed = draw(st.integers(0, 2**32 - 1))
  rng = np.random.default_rng(seed)
  if dtype == np.uint8:
    images, background = rng.integers(0, 256, (batch, height, width, 3), dtype=np.uint8), 0
  else:
    images, background = rng.uniform(-1, 1, (batch, height, width, 3)).astype(dtype), -1
  dropped = [c for c in range(width) if c not in kept]
  images[..., dropped, :] = background
  return layout, images, background


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.sampled_from([np.uint8, np.float32]).flatmap(layouts_and_images))
def test_round_trip_numpy(case):
  layout, images, background = case
  training = layout.from_full(images)
  assert training.shape == images.shape[:-2] + (layout.width, 3)
  np.testing.assert_array_equal(layout.to_full(training, background), images)
  assert layout.to_full(training, background).dtype == images.dtype


# Few examples: every new shape makes JAX compile the gather again.
@hypothesis.settings(max_examples=10, deadline=None)
@hypothesis.given(st.sampled_from([np.uint8, np.float32]).flatmap(layouts_and_images))
def test_round_trip_jax(case):
  layout, images, background = case
  full = layout.to_full(layout.from_full(jnp.asarray(images)), background)
  assert isinstance(full, jnp.ndarray)
  np.testing.assert_array_equal(np.asarray(full), images)


def test_to_full_fills_dropped_columns_with_background():
  layout = DesignLayout(2, 4, (1, 3), ())
  full = layout.to_full(np.ones((2, 2, 3), np.float32), background=-1)
  np.testing.assert_array_equal(full[:, [0, 2]], -1)
  np.testing.assert_array_equal(full[:, [1, 3]], 1)


def test_wrong_width_is_refused():
  layout = DesignLayout(2, 4, (1, 3), ())
  with pytest.raises(LayoutError, match='full layout'):
    layout.from_full(np.zeros((2, 3, 3)))
  with pytest.raises(LayoutError, match='training layout'):
    layout.to_full(np.zeros((2, 4, 3)))


@pytest.mark.parametrize('height', [1, 3])
def test_wrong_height_is_refused(height):
  # The columns alone would map a (1, 4) or (3, 4) image without complaint.
  layout = DesignLayout(2, 4, (1, 3), ())
  with pytest.raises(LayoutError, match=r'full layout \(\.\.\., 2, 4, C\)'):
    layout.from_full(np.zeros((height, 4, 3)))
  with pytest.raises(LayoutError, match=r'training layout \(\.\.\., 2, 2, C\)'):
    layout.to_full(np.zeros((height, 2, 3)))


def hyundai(datashape='dropempty', struts=DEFAULT_STRUT_POSITIONS):
  return DesignLayout.from_datashape(datashape, HYUNDAI_HEIGHT, HYUNDAI_WIDTH,
                                     HYUNDAI_ACTIVE_COLUMNS, struts)


def test_hyundai_strut_positions():
  layout = hyundai()
  assert layout.shape == (10, 14, 3)
  assert layout.datashape == 'dropempty'
  assert layout.train_strut_positions == ((7, 7), (5, 10))
  mask = layout.strut_mask()
  assert mask.shape == (10, 14, 3) and mask.dtype == np.float32
  assert mask.sum() == 3 * 2
  assert mask[7, 7].tolist() == [1, 1, 1] and mask[5, 10].tolist() == [1, 1, 1]


def test_original_keeps_struts_where_they_are():
  layout = hyundai('original')
  assert layout.shape == (10, 30, 3)
  assert layout.datashape == 'original'
  assert layout.train_strut_positions == DEFAULT_STRUT_POSITIONS


def test_strut_pixel_survives_round_trip():
  layout = hyundai()
  full = np.zeros((10, 30, 3), np.uint8)
  full[7, 11] = (200, 100, 50)
  training = layout.from_full(full)
  assert training[7, 7].tolist() == [200, 100, 50]


def test_strut_in_dropped_column_is_refused():
  with pytest.raises(LayoutError, match='col 7.*dropped'):
    hyundai(struts=((7, 7),))


@pytest.mark.parametrize('strut', [(10, 0), (0, 30), (-1, 0)])
def test_strut_out_of_bounds_is_refused(strut):
  with pytest.raises(LayoutError, match='outside'):
    hyundai('original', struts=(strut,))


def test_dropempty_sorts_the_occupied_columns():
  # Columns found in another order (a set, a caller's list) give the same layout, not an error.
  shuffled = list(HYUNDAI_ACTIVE_COLUMNS[::-1])
  layout = DesignLayout.from_datashape('dropempty', HYUNDAI_HEIGHT, HYUNDAI_WIDTH, shuffled,
                                       DEFAULT_STRUT_POSITIONS)
  assert layout == hyundai()
  assert layout.kept_columns == HYUNDAI_ACTIVE_COLUMNS


def test_repeated_strut_pixel_is_refused():
  with pytest.raises(LayoutError, match='distinct'):
    DesignLayout.original(10, 30, ((7, 11), (5, 14), (7, 11)))
  with pytest.raises(LayoutError, match='distinct'):
    DesignLayout.from_dict({'full_height': 10, 'full_width': 30, 'kept_columns': list(range(30)),
                            'strut_positions': [[7, 11], [7.0, '11']]})


@pytest.mark.parametrize('height', [0, -2])
def test_a_grid_without_rows_is_refused(height):
  # No strut to fall outside it: only the size check stands between this and an empty layout.
  with pytest.raises(LayoutError, match='must be positive'):
    DesignLayout(height, 30, (0, 1), ())


def test_unknown_datashape_is_refused():
  with pytest.raises(LayoutError, match='unknown datashape.*original, dropempty'):
    hyundai('squash')


def test_dropempty_with_nothing_occupied_is_refused():
  with pytest.raises(LayoutError, match='nothing'):
    DesignLayout.from_datashape('dropempty', 10, 30, [], ())


@pytest.mark.parametrize('struts', [((7.5, 11),), ((7, 11.2),), ((7, True),), ((7, '11x'),)])
def test_fractional_strut_pixel_is_refused_not_truncated(struts):
  # int(7.5) would silently put the strut at row 7.
  with pytest.raises(LayoutError, match='whole number'):
    DesignLayout.original(10, 30, struts)


# (-1, 2): NumPy would read column -1 as the last one, silently.
@pytest.mark.parametrize('kept', [(), (2, 1), (1, 1), (0, 30), (-1, 2)])
def test_bad_kept_columns_are_refused(kept):
  with pytest.raises(LayoutError, match='kept columns'):
    DesignLayout(10, 30, kept, ())


def test_dict_round_trip_through_json():
  layout = hyundai()
  d = json.loads(json.dumps(layout.to_dict()))
  assert DesignLayout.from_dict(d) == layout
  assert DesignLayout.from_dict(d).to_dict() == d


def test_from_dict_refuses_garbage():
  with pytest.raises(LayoutError, match='invalid layout metadata'):
    DesignLayout.from_dict({'full_height': 10})


@pytest.mark.parametrize('value', ['7,11;5,14', ' 7, 11 ; 5, 14 ', [[7, 11], [5, 14]],
                                   ((7, 11), (5, 14)), '7,11;5,14;'])
def test_parse_strut_positions(value):
  assert parse_strut_positions(value) == ((7, 11), (5, 14))


@pytest.mark.parametrize('value', [[[7, 11.0], [5.0, 14]],
                                   [[np.int64(7), 11], [5, np.float32(14)]]])
def test_parse_strut_positions_takes_whole_numbers_of_any_type(value):
  assert parse_strut_positions(value) == ((7, 11), (5, 14))


@pytest.mark.parametrize('value', ['', '7', '7,11,3', 'a,b', [7, 11], [[7]], None,
                                   [[7.5, 11]], [[7, 11.9]], '7.5,11', [[True, 11]],
                                   '7,1_1', '\u0667,11', [['7', '1_1']]])
def test_parse_strut_positions_refuses_garbage(value):
  with pytest.raises(LayoutError, match='pairs'):
    parse_strut_positions(value)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.lists(st.tuples(st.integers(0, 999), st.integers(0, 999)), min_size=1,
                           max_size=4),
                  st.lists(st.sampled_from(['', ' ', '  ']), min_size=6, max_size=6),
                  st.booleans())
def test_parse_strut_positions_reads_back_what_it_is_given(pairs, spaces, trailing):
  """Any pairs written as 'r,c;r,c', with spaces around the numbers and separators and an optional
  trailing ';', read back as those pairs, in order."""
  a, b, c, d, e, f = spaces
  text = ';'.join(f'{a}{r}{b},{c}{col}{d}' for r, col in pairs) + (f'{e};{f}' if trailing else '')
  assert parse_strut_positions(text) == tuple(pairs)


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(st.lists(st.tuples(st.integers(0, 99), st.integers(0, 99)), min_size=1,
                           max_size=4).flatmap(
                               lambda pairs: st.tuples(st.just(pairs),
                                                       st.integers(0, len(pairs) - 1),
                                                       st.sampled_from(['row', 'col']))))
def test_parse_strut_positions_refuses_a_pair_without_one_index(case):
  """A pair missing its row or its column anywhere in the list is refused, not left out: the
  model would be trained with one strut fewer than asked for."""
  pairs, broken, missing = case
  parts = [f'{r},{c}' for r, c in pairs]
  parts[broken] = str(pairs[broken][1 if missing == 'row' else 0])
  with pytest.raises(LayoutError, match='pairs'):
    parse_strut_positions(';'.join(parts))


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(st.sets(st.integers(0, 40), min_size=1))
def test_column_ranges_names_each_run_of_columns_once(cols):
  """'0-5, 10-15, 20-21' in the dataset summary and the dropped-column error: each maximal run of
  consecutive columns as 'first-last', a lone column as itself (not '7-7'), ascending."""
  cols = sorted(cols)
  text = column_ranges(cols)
  named = []
  for part in text.split(', '):
    first, _, last = part.partition('-')
    if last:
      assert int(first) < int(last), text
    named.append(range(int(first), int(last or first) + 1))
  assert [c for r in named for c in r] == cols
  assert all(b.start > a.stop for a, b in zip(named, named[1:])), text  # runs are maximal


@pytest.mark.parametrize('value', ['7,1 1', '7 1,11', '7,11;5,1 4', '1 0,1 1'])
def test_parse_strut_positions_refuses_a_space_inside_a_number(value):
  """'7,1 1' was (7, 11): every space was deleted before the text was split, so a space inside a
  number joined its digits and moved the strut silently, as '1_1' would have."""
  with pytest.raises(LayoutError, match='pairs'):
    parse_strut_positions(value)
