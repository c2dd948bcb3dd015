"""Tests of gan/data.py: file-name labels, vocabularies, loading, arrays and the split."""

import decimal
import json
import os
import struct
import threading
import zlib

import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from PIL import PngImagePlugin

from gan import data
from gan import evaluate
from gan import images
from gan.errors import DataError, LayoutError
from gan.images import write_rgb
from gan.layout import DEFAULT_STRUT_POSITIONS, HYUNDAI_ACTIVE_COLUMNS

FAST = hypothesis.settings(max_examples=200, deadline=None)

# ---------------------------------------------------------------------------------------------
# Helpers


def hyundai_image(rng, height=10, width=30):
  """A random design with material (never black) only in the Hyundai column blocks."""
  image = np.zeros((height, width, 3), np.uint8)
  cols = list(HYUNDAI_ACTIVE_COLUMNS)
  image[:, cols] = rng.integers(1, 256, (height, len(cols), 3), dtype=np.uint8)
  return image


def write_designs(directory, names, seed=0, **kwargs):
  """Writes one random Hyundai-like design per name; returns {name: uint8 image}."""
  rng = np.random.default_rng(seed)
  written = {}
  for name in names:
    written[name] = hyundai_image(rng, **kwargs)
    write_rgb(os.path.join(directory, name), written[name])
  return written


def labelled_names(count, durabilities=(1.4, 2.2, 3.0), masses=(10.0, 20.5)):
  return [f'{durabilities[i % len(durabilities)]}_part{i}_{masses[i % len(masses)]}_x.bmp'
          for i in range(count)]


# ---------------------------------------------------------------------------------------------
# parse_labels


def spell(value: decimal.Decimal, variant: str) -> str:
  """Writes a decimal in one of the ways people write labels."""
  text = format(value, 'f')
  if variant == 'trailing_zeros':
    return text + ('00' if '.' in text else '.00')
  if variant == 'no_leading_zero' and text.startswith('0.'):
    return text[1:]
  if variant == 'minimal' and '.' in text:
    return text.rstrip('0').rstrip('.') or '0'
  return text


labels_values = st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False,
                            allow_infinity=False)
spellings = st.sampled_from(['plain', 'trailing_zeros', 'no_leading_zero', 'minimal'])
# Middle and last tokens: anything but the token separator and a path separator.
tokens = st.text(st.characters(exclude_characters='_/\\\x00'), max_size=5)


@FAST
@hypothesis.given(d=labels_values, m=labels_values, d_spelling=spellings, m_spelling=spellings,
                  middle=st.lists(tokens, max_size=3), last=tokens,
                  ext=st.sampled_from(['.bmp', '.BMP', '.png', '.PNG', '.Png']))
def test_parse_labels_property(d, m, d_spelling, m_spelling, middle, last, ext):
  name = '_'.join([spell(d, d_spelling)] + middle + [spell(m, m_spelling), last]) + ext
  assert data.parse_labels(name) == (float(round(d, 2)), float(round(m, 2)))


def test_parse_labels_examples():
  assert data.parse_labels('1.4_a_b_2.20_x.bmp') == (1.4, 2.2)
  assert data.parse_labels('2.2_x_1_y.png') == data.parse_labels('2.20_x_1.0_y.png')
  assert data.parse_labels('.5_7_z.bmp') == (0.5, 7.0)  # 3 tokens: mass is the middle one
  assert data.parse_labels('/some/dir/1.234_m_0.125_k.bmp') == (1.23, 0.12)  # half to even


@pytest.mark.parametrize('name', [
    'a_b_c.bmp', '1.4_2.bmp', 'design.bmp', 'inf_x_2_y.bmp', 'nan_x_2_y.bmp', '1.4_x_NaN_y.bmp',
    '1e3_x_2_y.bmp', '1.4_x_-2_y.bmp', '+1_x_2_y.bmp', '1.4_x__y.bmp', '1,4_x_2_y.bmp',
    '\u0661_x_2_y.bmp', '0x10_x_2_y.bmp', ' 1_x_2_y.bmp', '1.4.1_x_2_y.bmp', '._x_2_y.bmp'])
def test_parse_labels_refuses_garbage(name):
  with pytest.raises(DataError) as e:
    data.parse_labels(name)
  assert name in str(e.value)
  assert '<durability>_<...>_<mass>_<anything>' in str(e.value)


# What people type where a class is asked for: decimals in every spelling, signs, exponents,
# nan and inf, spaces and other scripts' digits; and anything at all.
typed_classes = st.one_of(
    st.text(st.sampled_from(list('0123456789.+-eE naif\t\u0661\uff11')), max_size=8),
    st.text(st.characters(exclude_characters='_/\\\x00'), max_size=8))


@FAST
@hypothesis.given(text=typed_classes)
def test_a_requested_class_is_spelt_as_a_file_names_label(text):
  """infer.py's --durability and --mass (`requested_class`) take what a design file name's label
  takes, spaces around it aside: as float flags they also took 2e0, +1.4, nan and inf."""
  try:
    label = data.parse_labels(f'{text.strip()}_x_2_y.bmp')[0]
  except DataError:
    label = None
  try:
    requested = data.requested_class(text)
  except ValueError as e:
    requested = None
    assert 'such as 1, 1.4 or .5' in str(e)
  assert (label is None) == (requested is None), (text, label, requested)
  if requested is not None:  # the number as written, which the label rounds to 2 places
    assert requested == float(text) and abs(requested - label) <= 0.005 + 1e-12 * label


@pytest.mark.parametrize('text, value', [('1.4', 1.4), (' 1.4 ', 1.4), ('1.40', 1.4), ('.5', 0.5),
                                         ('1.', 1.0), ('01.404', 1.404)])
def test_requested_class_examples(text, value):
  assert data.requested_class(text) == value


@pytest.mark.parametrize('text', ['2e0', '+1.4', '-1', 'nan', 'inf', '1_4', '1,4', '', '\u0661',
                                  '1' * 400])
def test_requested_class_refuses_what_a_file_name_refuses(text):
  with pytest.raises(ValueError):
    data.requested_class(text)


# ---------------------------------------------------------------------------------------------
# ClassVocab and DataSpec


def test_vocab_rounds_sorts_and_merges():
  vocab = data.ClassVocab((3, 2.20, 1.4, 2.2, '2.2'))
  assert vocab.values == (1.4, 2.2, 3.0)
  assert len(vocab) == 3
  assert vocab.index(2.2) == 1 and vocab.index('2.20') == 1 and vocab.index(np.float32(3)) == 2
  assert [vocab.format(v) for v in (1.4, 2.14, 3.0, 0.5, 2.141)] == ['1.4', '2.14', '3', '0.5',
                                                                     '2.14']


def test_a_large_float_value_is_its_class_as_its_name_is():
  """repr(1e26) is '1e+26': the context's digits were counted from that string, quantize
  overflowed, and the value was refused as 'not a finite number' while names spelled it out."""
  name = '1' + '0' * 26 + '_x_2_y.bmp'
  assert data.ClassVocab((1e26,)).values == (data.parse_labels(name)[0],) == (1e26,)
  with pytest.raises(DataError, match='inf is not a finite number'):
    data.ClassVocab((float('inf'),))


def test_a_value_that_rounds_to_zero_is_class_0_not_minus_0():
  """A small negative number (a config's durability_values) rounds to -0.0: one class 0, never
  written '-0' in a message or a file name."""
  for value in (-0.0, -0.004, np.float32(-0.001)):
    assert np.copysign(1.0, data.class_value(value)) == 1.0, value
    assert data.format_class(value) == '0'
  vocab = data.ClassVocab((-0.001, 0.0, 1.5))
  assert vocab.values == (0.0, 1.5) and np.copysign(1.0, vocab.values[0]) == 1.0
  assert vocab.describe() == '0, 1.5'


def test_vocab_index_lists_allowed_values():
  with pytest.raises(DataError, match='allowed values: 1.4, 2.2, 3'):
    data.ClassVocab((1.4, 2.2, 3.0)).index(9)


def test_vocab_index_rounds_the_value_it_is_given_as_a_name_is_rounded():
  """A class index is looked up for the value rounded to 2 places, as a file name's label is
  read: inference_output finds a request's class this way (then checks it was named exactly), so
  a caller's np.float32(2.2), which is 2.2000000476837 as a float, must still find class 2.2."""
  vocab = data.ClassVocab((1.4, 2.2, 2.68))
  assert vocab.index(np.float32(2.2)) == 1 == vocab.index(np.float32(1.4)) + 1
  assert vocab.index(2.201) == 1 and vocab.index('2.199') == 1
  assert vocab.index(2.675) == 2 == vocab.index('2.675')


@pytest.mark.parametrize('values', [(), (float('nan'),), (float('inf'),), ('x',), (-1,)])
def test_vocab_refuses_garbage(values):
  with pytest.raises(DataError):
    data.ClassVocab(values)


def test_data_spec_json_round_trip(tmp_path):
  write_designs(tmp_path, labelled_names(6))
  spec = data.load_dataset(str(tmp_path)).spec
  d = json.loads(json.dumps(spec.to_dict()))
  assert data.DataSpec.from_dict(d) == spec
  assert data.DataSpec.from_dict(d).to_dict() == spec.to_dict()


@pytest.mark.parametrize('per_pair', [1, 3])
def test_class_pairs_are_every_pair_per_pair_times_durability_major(per_pair):
  spec = data.DataSpec(data.DesignLayout.original(10, 30), data.ClassVocab((1.0, 1.1)),
                       data.ClassVocab((2.0, 2.1, 2.2)))
  d, m = spec.class_pairs(per_pair)
  assert d.dtype == m.dtype == np.int32
  expected = [(i, j) for i in range(2) for j in range(3) for _ in range(per_pair)]
  assert list(zip(d.tolist(), m.tolist())) == expected


def test_data_spec_from_dict_refuses_garbage():
  with pytest.raises(DataError, match='invalid data spec'):
    data.DataSpec.from_dict({'layout': {}})


# ---------------------------------------------------------------------------------------------
# Loading: geometry, arrays, vocabularies


def test_dropempty_hyundai_layout(tmp_path):
  written = write_designs(tmp_path, labelled_names(6))
  ds = data.load_dataset(str(tmp_path), val_fraction=0)
  layout = ds.spec.layout
  assert (layout.full_height, layout.full_width) == (10, 30)
  assert layout.kept_columns == HYUNDAI_ACTIVE_COLUMNS
  assert layout.shape == (10, 14, 3)
  assert layout.train_strut_positions == ((7, 7), (5, 10))
  assert ds.train.images.shape == (6, 10, 14, 3)
  # Dropped columns are black in every file, so the full images come back exactly.
  full = data.denormalize(layout.to_full(ds.train.images, background=-1))
  for name, image in zip(ds.train.names, full):
    np.testing.assert_array_equal(image, written[name])


def test_original_keeps_all_columns(tmp_path):
  write_designs(tmp_path, labelled_names(4))
  ds = data.load_dataset(str(tmp_path), datashape='original', val_fraction=0)
  assert ds.spec.layout.shape == (10, 30, 3)
  assert ds.spec.layout.train_strut_positions == DEFAULT_STRUT_POSITIONS
  assert ds.train.images.shape == (4, 10, 30, 3)


def test_geometry_comes_from_the_files(tmp_path):
  write_designs(tmp_path, labelled_names(3), height=8, width=25)
  ds = data.load_dataset(str(tmp_path), strut_positions='7,11;5,14', val_fraction=0)
  assert (ds.spec.layout.full_height, ds.spec.layout.full_width) == (8, 25)
  assert ds.spec.layout.kept_columns == tuple(range(6)) + tuple(range(10, 16)) + (20, 21)


def test_arrays_types_ranges_and_fixed_pixels(tmp_path):
  written = write_designs(tmp_path, labelled_names(5))
  ds = data.load_dataset(str(tmp_path), val_fraction=0)
  train = ds.train
  assert train.images.dtype == np.float32 and train.fixed.dtype == np.float32
  assert train.images.min() >= -1 and train.images.max() <= 1
  assert train.strut_colors.dtype == np.uint8 and train.strut_colors.shape == (5, 2, 3)
  assert train.durability.dtype == np.int32 and train.mass.dtype == np.int32
  assert len(train) == 5 and len(ds.val) == 0
  np.testing.assert_array_equal(ds.mask, ds.spec.layout.strut_mask())
  assert ds.mask.sum() == 3 * 2
  on = ds.mask.astype(bool)
  for i, name in enumerate(train.names):
    assert (train.fixed[i][~on] == -1).all()
    for s, ((r, c), (tr, tc)) in enumerate(zip(DEFAULT_STRUT_POSITIONS,
                                               ds.spec.layout.train_strut_positions)):
      assert train.strut_colors[i, s].tolist() == written[name][r, c].tolist()
      np.testing.assert_array_equal(train.fixed[i, tr, tc], data.normalize(written[name][r, c]))
      np.testing.assert_array_equal(train.fixed[i, tr, tc], train.images[i, tr, tc])


def test_inferred_vocabularies_are_sorted(tmp_path):
  names = ['3_a_20.5_x.bmp', '1.40_b_10_x.bmp', '2.2_c_20.50_x.png', '1.4_d_5_x.bmp']
  write_designs(tmp_path, names)
  ds = data.load_dataset(str(tmp_path), val_fraction=0)
  assert ds.spec.durability.values == (1.4, 2.2, 3.0)
  assert ds.spec.mass.values == (5.0, 10.0, 20.5)
  by_name = dict(zip(ds.train.names, zip(ds.train.durability, ds.train.mass)))
  assert by_name['3_a_20.5_x.bmp'] == (2, 2)
  assert by_name['1.4_d_5_x.bmp'] == (0, 0)
  assert ds.train.names == tuple(sorted(names))  # sorted name order


def test_fixed_vocabulary(tmp_path):
  write_designs(tmp_path, labelled_names(4))
  ds = data.load_dataset(str(tmp_path), durability_values=[3, 2.2, 1.4, 9.9],
                         mass_values=['10', '20.5'], val_fraction=0)
  assert ds.spec.durability.values == (1.4, 2.2, 3.0, 9.9)
  # Sorted names: 1.4_part0, 1.4_part3, 2.2_part1, 3.0_part2.
  assert ds.train.durability.tolist() == [0, 0, 1, 2]
  assert ds.train.mass.tolist() == [0, 1, 1, 0]


def test_fixed_vocabulary_violation_names_file_and_allowed_values(tmp_path):
  write_designs(tmp_path, labelled_names(4))
  with pytest.raises(DataError) as e:
    data.load_dataset(str(tmp_path), durability_values=[1.4, 2.2])
  assert '3.0_part2_10.0_x.bmp' in str(e.value)
  assert 'allowed values: 1.4, 2.2' in str(e.value)


def test_strut_in_dropped_column_is_refused(tmp_path):
  write_designs(tmp_path, labelled_names(2))
  with pytest.raises(LayoutError, match='dropped'):
    data.load_dataset(str(tmp_path), strut_positions=[(7, 7)])
  assert data.load_dataset(str(tmp_path), 'original', strut_positions=[(7, 7)]).train


def test_unknown_datashape_is_refused(tmp_path):
  write_designs(tmp_path, labelled_names(2))
  with pytest.raises(LayoutError, match='unknown datashape'):
    data.load_dataset(str(tmp_path), datashape='squash')


def test_summary(tmp_path):
  write_designs(tmp_path, labelled_names(10))
  text = data.load_dataset(str(tmp_path)).summary()
  for expected in (str(tmp_path), 'train 9, val 1', 'full 10x30', 'training 10x14',
                   '0-5, 10-15, 20-21', '(7,11)->(7,7)', '(5,14)->(5,10)',
                   '1.4 (4), 2.2 (3), 3 (3)', '10 (5), 20.5 (5)'):
    assert expected in text


def test_warnings_name_a_single_class_and_classes_without_training_designs(tmp_path):
  write_designs(tmp_path, labelled_names(6, masses=(10.0,)))
  one_mass = data.load_dataset(str(tmp_path), val_fraction=0)
  assert one_mass.warnings() == [
      'every training design has mass 10: the model cannot learn to vary mass']
  assert 'mass: 1 class: 10 (6)' in one_mass.summary()
  ds = data.load_dataset(str(tmp_path), durability_values=[1.4, 2.2, 3.0, 9.9],
                         mass_values=[10, 20], val_fraction=0)
  never = ('the generator is never trained on it, so designs asked for it are extrapolations, '
           'and the evaluations count them')
  assert ds.warnings() == [
      f'no training design has durability 9.9: {never}',
      'every training design has mass 10: the model cannot learn to vary mass',
      f'no training design has mass 20: {never}']
  assert ds.untrained_classes() == {'durability': ['9.9'], 'mass': ['20']}
  # 4 x 2 pairs, of which 3 x 1 have training designs.
  assert evaluate.untrained_pairs_note(ds) == (
      'no training design has durability 9.9; mass 20: 5 of the 8 class pairs count in every '
      'number below, although neither the generator nor the classifier was trained on any '
      'design of them')
  # Evaluated on these designs, a model trained on others: what its own training designs lacked
  # is its checkpoint's record; these designs' split says what the classifier lacks.
  assert evaluate.untrained_pairs_note(ds, ds.untrained_classes()) == (
      evaluate.untrained_pairs_note(ds))
  assert evaluate.untrained_pairs_note(ds, {}) == (
      'the classifier, trained on the training split of these designs, on none of durability '
      '9.9; mass 20: their class pairs count in every number below like the others')
  assert evaluate.untrained_pairs_note(ds, {'durability': ['2.5']}) == (
      "the generator was trained on no design of durability 2.5 (its checkpoint's record of its "
      'training designs); the classifier, trained on the training split of these designs, on '
      'none of durability 9.9; mass 20: their class pairs count in every number below like the '
      'others')
  os.makedirs(tmp_path / 'both')
  write_designs(tmp_path / 'both', labelled_names(6))
  # Without a fixed vocabulary too: a rare class whose only design fell in the validation split.
  os.makedirs(tmp_path / 'rare')
  write_designs(tmp_path / 'rare',
                labelled_names(9, durabilities=(1.4, 2.2)) + ['3.0_r_10.0_x.bmp'])
  rare = data.load_dataset(str(tmp_path / 'rare'), val_fraction=0.1, seed=3)
  assert rare.val.names == ('3.0_r_10.0_x.bmp',)
  assert rare.untrained_classes() == {'durability': ['3']}
  both = data.load_dataset(str(tmp_path / 'both'), val_fraction=0)
  assert both.warnings() == [] and both.untrained_classes() == {}
  assert evaluate.untrained_pairs_note(both) == ''


# ---------------------------------------------------------------------------------------------
# Image modes and skipped files


def test_grayscale_and_palette_are_converted(tmp_path):
  gray = np.zeros((10, 30), np.uint8)
  gray[:, :6] = 77
  Image.fromarray(gray, 'L').save(tmp_path / '1_g_2_x.png')
  Image.fromarray(gray, 'L').convert('P').save(tmp_path / '1_p_2_x.bmp')
  ds = data.load_dataset(str(tmp_path), strut_positions=[(0, 0)], val_fraction=0)
  assert ds.spec.layout.kept_columns == tuple(range(6))
  np.testing.assert_array_equal(data.denormalize(ds.train.images), 77)


def test_opaque_rgba_accepted_translucent_refused(tmp_path):
  rgba = np.zeros((10, 30, 4), np.uint8)
  rgba[..., 3] = 255
  Image.fromarray(rgba, 'RGBA').save(tmp_path / '1_a_2_x.png')
  assert len(data.load_dataset(str(tmp_path), 'original', val_fraction=0).train) == 1
  rgba[0, 0, 3] = 128
  Image.fromarray(rgba, 'RGBA').save(tmp_path / '1_b_2_x.png')
  with pytest.raises(DataError, match='1_b_2_x.png.*transparent'):
    data.load_dataset(str(tmp_path), 'original')
  # Any alpha short of 255 is translucent, however nearly opaque (and LA as much as RGBA).
  (tmp_path / '1_b_2_x.png').unlink()
  rgba[0, 0, 3] = 254
  Image.fromarray(rgba, 'RGBA').save(tmp_path / '1_c_2_x.png')
  with pytest.raises(DataError, match='1_c_2_x.png.*transparent'):
    data.load_dataset(str(tmp_path), 'original')
  (tmp_path / '1_c_2_x.png').unlink()
  Image.fromarray(rgba[..., [0, 3]], 'LA').save(tmp_path / '1_d_2_x.png')
  with pytest.raises(DataError, match='1_d_2_x.png.*transparent'):
    data.load_dataset(str(tmp_path), 'original')


@pytest.mark.parametrize('mode', ['RGB', 'L', 'P'])
def test_a_colour_marked_transparent_is_refused_like_an_alpha_channel(tmp_path, mode):
  """A PNG may mark one colour (RGB), grey level (L) or palette entry (P) transparent (tRNS):
  a white background so marked is empty space to its author, not white material."""
  image = np.full((10, 30, 3), 255, np.uint8)
  image[:, :6] = 77
  opaque = Image.fromarray(image).convert(mode)
  white = {'RGB': (255, 255, 255), 'L': 255, 'P': opaque.getpixel((29, 0))}[mode]
  opaque.save(tmp_path / '1_a_2_x.png')
  assert len(data.load_dataset(str(tmp_path), 'original', val_fraction=0).train) == 1
  opaque.save(tmp_path / '1_b_2_x.png', transparency=white)
  with pytest.raises(DataError, match='1_b_2_x.png: image has transparent pixels'):
    data.load_dataset(str(tmp_path), 'original')


def png_with_trns(samples, bit_depth, trns):
  """A PNG of `samples`, (H, W) grey levels or (H, W, 3) colours at `bit_depth`, whose tRNS chunk
  marks the grey or colour `trns` transparent, written as given (Pillow writes no 16-bit RGB)."""
  samples = np.asarray(samples)
  if bit_depth == 16:
    rows = [row.astype('>u2').tobytes() for row in samples.reshape(len(samples), -1)]
  else:  # each sample's low bit_depth bits, packed from the high end of a byte
    rows = [np.packbits(np.unpackbits(row.astype(np.uint8)[:, None], axis=1)[:, 8 - bit_depth:])
            .tobytes() for row in samples]
  colour_type = 2 if samples.ndim == 3 else 0

  def chunk(kind, body):
    return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))

  header = struct.pack('>IIBBBBB', samples.shape[1], len(samples), bit_depth, colour_type, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
          + chunk(b'tRNS', struct.pack(f'>{np.size(trns)}H', *np.ravel(trns)))
          + chunk(b'IDAT', zlib.compress(b''.join(b'\0' + row for row in rows)))  # filter: none
          + chunk(b'IEND', b''))


@pytest.mark.parametrize('bit_depth', [1, 2, 4, 8])
def test_a_grey_marked_transparent_is_refused_at_every_bit_depth(tmp_path, bit_depth):
  """Pillow scales 2- and 4-bit grey levels up to 0..255 but not the tRNS grey, so it missed a
  transparent grey other than black."""
  white = 2 ** bit_depth - 1
  grey = np.full((10, 30), white)
  (tmp_path / '1_a_2_x.png').write_bytes(png_with_trns(grey, bit_depth, trns=0))  # no black
  ds = data.load_dataset(str(tmp_path), 'original', val_fraction=0)
  np.testing.assert_array_equal(data.denormalize(ds.train.images), 255)
  grey[:, :6] = 0
  (tmp_path / '1_b_2_x.png').write_bytes(png_with_trns(grey, bit_depth, trns=white))
  with pytest.raises(DataError, match='1_b_2_x.png: image has transparent pixels'):
    data.load_dataset(str(tmp_path), 'original')


def test_a_1_bit_grey_marked_transparent_is_refused_as_pillow_before_12_1_reads_it(
    tmp_path, monkeypatch):
  """Pillow before 12.1 (requirements allow 10) gives a 1-bit PNG's tRNS grey as stored, 1 for
  white, while it reads a white pixel as 255: it matched no pixel, and an image whose transparent
  pixels are white was accepted with them as drawn."""
  read_trns = PngImagePlugin.PngStream.chunk_tRNS

  def as_before_12_1(self, pos, length):
    s = read_trns(self, pos, length)
    if self.im_mode == '1':
      self.im_info['transparency'] = struct.unpack('>H', s[:2])[0]
    return s

  monkeypatch.setattr(PngImagePlugin.PngStream, 'chunk_tRNS', as_before_12_1)
  grey = np.ones((10, 30), int)
  grey[:, :6] = 0
  (tmp_path / '1_b_2_x.png').write_bytes(png_with_trns(grey, 1, trns=1))
  with pytest.raises(DataError, match='1_b_2_x.png: image has transparent pixels'):
    data.load_dataset(str(tmp_path), 'original')


def test_a_16_bit_colour_marked_transparent_is_refused_only_where_it_may_occur(tmp_path):
  """Pillow keeps a 16-bit sample's high byte, and matched the tRNS colour's low byte against it:
  it refused a colour that does not occur, and missed one that does. Pixels whose high bytes equal
  the tRNS colour's cannot be told apart at 8 bits, so such an image is refused."""
  colours = np.zeros((10, 30, 3), np.uint16)
  colours[:, :6] = (0x1234, 0x5678, 0x9abc)  # read as (0x12, 0x56, 0x9a)
  trns = (0x4412, 0x0056, 0x009a)  # its low bytes are the pixels' high bytes; no pixel is it
  (tmp_path / '1_a_2_x.png').write_bytes(png_with_trns(colours, 16, trns=trns))
  ds = data.load_dataset(str(tmp_path), 'original', val_fraction=0)
  np.testing.assert_array_equal(data.denormalize(ds.train.images)[0], colours >> 8)
  for name, trns in [('1_b_2_x.png', (0x1234, 0x5678, 0x9abc)), ('1_c_2_x.png', (0x12ff, 0x5600,
                                                                                  0x9a01))]:
    (tmp_path / name).write_bytes(png_with_trns(colours, 16, trns=trns))
    with pytest.raises(DataError, match=f'{name}: a 16-bit PNG whose transparent colour'):
      data.load_dataset(str(tmp_path), 'original')
    (tmp_path / name).unlink()


def bmp32(image, alpha, alpha_mask=None):
  """A 32-bit BMP of `image` with fourth byte `alpha`: a BITMAPINFOHEADER (BI_RGB) or, given
  `alpha_mask`, a BITMAPV4HEADER (BI_BITFIELDS) whose masks include it."""
  h, w, _ = image.shape
  bgra = np.concatenate([image[::-1, :, ::-1], np.full((h, w, 1), alpha, np.uint8)], axis=-1)
  pixels = bgra.tobytes()
  size = 40 if alpha_mask is None else 108
  info = struct.pack('<IiiHHIIiiII', size, w, h, 1, 32, 0 if alpha_mask is None else 3,
                     len(pixels), 2835, 2835, 0, 0)
  if alpha_mask is not None:
    info += struct.pack('<IIIII', 0xff0000, 0xff00, 0xff, alpha_mask, 0x73524742) + bytes(48)
  return b'BM' + struct.pack('<IHHI', 14 + size + len(pixels), 0, 0, 14 + size) + info + pixels


def test_a_32_bit_bmp_fourth_byte_is_padding_unless_the_header_masks_it_as_alpha(tmp_path):
  image = write_designs(tmp_path, ['1_a_2_x.bmp'])['1_a_2_x.bmp']
  (tmp_path / '1_b_2_x.bmp').write_bytes(bmp32(image, 0))
  (tmp_path / '1_c_2_x.bmp').write_bytes(bmp32(image, 255, alpha_mask=0xff000000))
  ds = data.load_dataset(str(tmp_path), 'original', val_fraction=0)
  np.testing.assert_array_equal(data.denormalize(ds.train.images), [image] * 3)
  (tmp_path / '1_d_2_x.bmp').write_bytes(bmp32(image, 0, alpha_mask=0xff000000))
  with pytest.raises(DataError, match='1_d_2_x.bmp: image has transparent pixels'):
    data.load_dataset(str(tmp_path), 'original')


def test_a_16_bit_grey_image_is_refused_not_clipped(tmp_path):
  """Pillow reads a 16-bit grey PNG as 'I;16'; converting it to RGB would clip every level above
  255 to white."""
  grey = np.full((10, 30), 40000, np.uint16)
  Image.fromarray(grey).save(tmp_path / '1_a_2_x.png')
  assert Image.open(tmp_path / '1_a_2_x.png').mode.startswith('I;16')
  with pytest.raises(DataError, match=r"1_a_2_x.png: 'I;16\w*' images \(16/32-bit\)"):
    data.load_dataset(str(tmp_path), 'original')


@pytest.mark.parametrize('shape, dtype', [((10, 30, 4), np.uint8), ((10, 30), np.uint8),
                                          ((2, 10, 30, 3), np.uint8), ((10, 30, 3), np.float32)])
def test_write_rgb_takes_only_h_w_3_uint8(tmp_path, shape, dtype):
  with pytest.raises(ValueError, match=r'\(H, W, 3\) uint8'):
    write_rgb(str(tmp_path / 'design.png'), np.zeros(shape, dtype))
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('atomic', [True, False])
def test_png_text_reads_back_what_write_rgb_wrote_and_nothing_from_other_files(tmp_path, atomic):
  """infer.py tells its own grid.png from a user's by such a chunk."""
  image = np.arange(10 * 30 * 3, dtype=np.uint8).reshape(10, 30, 3)
  path = str(tmp_path / 'grid.png')
  write_rgb(path, image, atomic=atomic, text={'designgan key': 'value 1'})
  assert images.png_text(path) == {'designgan key': 'value 1'}
  np.testing.assert_array_equal(images.read_rgb(path), image)
  write_rgb(str(tmp_path / 'plain.png'), image)
  (tmp_path / 'junk.png').write_bytes(b'my grid')
  for name in ('plain.png', 'junk.png', 'missing.png'):
    assert images.png_text(str(tmp_path / name)) == {}, name
  with pytest.raises(ValueError, match='text chunks need a .png file'):
    write_rgb(str(tmp_path / 'design.bmp'), image, text={'k': 'v'})


def test_a_write_that_fails_leaves_neither_the_image_nor_its_temporary_file(tmp_path,
                                                                            monkeypatch):
  def failing_save(self, fp, format=None, **params):  # pylint: disable=redefined-builtin
    fp.write(b'BM half')
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(Image.Image, 'save', failing_save)
  with pytest.raises(OSError, match='No space left'):
    write_rgb(str(tmp_path / 'design.bmp'), np.zeros((10, 30, 3), np.uint8))
  assert not os.listdir(tmp_path)


def test_non_image_files_skipped_with_warning(tmp_path):
  """Named in the dataset's warnings, which the training log carries."""
  write_designs(tmp_path, labelled_names(2))
  (tmp_path / 'notes.txt').write_text('hello')
  (tmp_path / '.DS_Store').write_bytes(b'\0')
  (tmp_path / 'subdir').mkdir()
  write_rgb(str(tmp_path / 'subdir' / 'bad_name.bmp'), np.zeros((3, 3, 3), np.uint8))
  ds = data.load_dataset(str(tmp_path), val_fraction=0)
  assert len(ds.train) == 2
  warnings = [w for w in ds.warnings() if ': skipped ' in w]
  assert len(warnings) == 1
  assert warnings[0].startswith(f'{tmp_path}: skipped 2 file(s)')
  assert 'notes.txt' in warnings[0] and '.DS_Store' in warnings[0]
  assert 'subdir' not in warnings[0]
  assert [w for w in ds.warnings() if 'not searched' in w] == [
      f'{tmp_path}: 1 subdirectory not searched (designs are read from the directory itself): '
      'subdir/']


def test_a_label_written_without_its_leading_zero_is_a_design_not_a_hidden_file(tmp_path):
  """parse_labels reads `.5` (its error message offers it as an example), but the loader skipped
  every such name as hidden: a dataset of durabilities .5 and .7 was 'no .bmp or .png images'."""
  write_designs(tmp_path, ['.5_a_2.2_x.bmp', '.7_b_2.3_y.png', '._.5_a_2.2_x.bmp'])
  ds = data.load_dataset(str(tmp_path), datashape='original', val_fraction=0)
  assert sorted(ds.train.names) == ['.5_a_2.2_x.bmp', '.7_b_2.3_y.png']
  assert ds.spec.durability.values == (0.5, 0.7)
  assert [w for w in ds.warnings() if ': skipped ' in w] == [
      f'{tmp_path}: skipped 1 file(s) that are not .bmp/.png images or are hidden: '
      '._.5_a_2.2_x.bmp']


def test_a_label_written_without_its_leading_zero_may_start_with_a_zero_digit(tmp_path):
  """`.05` is durability 0.05 as `.5` is 0.5: a name starting `.0` is a design, not hidden, or
  every design of a small durability class would be skipped."""
  write_designs(tmp_path, ['.05_a_2.2_x.bmp', '.0_b_2.3_y.png', '1_c_2.3_y.png'])
  ds = data.load_dataset(str(tmp_path), datashape='original', val_fraction=0)
  assert sorted(ds.train.names) == ['.05_a_2.2_x.bmp', '.0_b_2.3_y.png', '1_c_2.3_y.png']
  assert ds.spec.durability.values == (0.0, 0.05, 1.0) and not ds.skipped


def test_a_skipped_name_that_is_not_utf8_is_listed_escaped(tmp_path):
  """It made the training log's handlers fail (a 'Logging error' traceback, the warning lost)."""
  write_designs(tmp_path, labelled_names(2))
  with open(os.path.join(os.fsencode(tmp_path), b'notes\xff.txt'), 'wb') as f:
    f.write(b'x')
  (warning,) = data.load_dataset(str(tmp_path), val_fraction=0).warnings()
  assert warning.endswith('are hidden: notes\\xff.txt'), warning
  warning.encode('utf-8')  # strict: no lone surrogate left


def test_listed_names_count_the_rest_only_when_some_are_left_out():
  """A warning lists at most 10 names, then how many more: exactly 10 are all named, without a
  confusing 'and 0 more'."""
  names = [f'n{i}.txt' for i in range(11)]
  assert data._listed(names[:10]) == ', '.join(names[:10])
  assert data._listed(names) == ', '.join(names[:10]) + ' and 1 more'


def test_a_data_directory_whose_name_is_not_utf8_is_shown_escaped(tmp_path):
  """Escaping the file names was not enough: the directory's own name, in the summary, the
  skipped-files and subdirectory warnings and the changed-designs warning, made a strict UTF-8
  console's handler fail ('Logging error' on stderr, the lines lost from the training log)."""
  directory = os.path.join(os.fsencode(tmp_path), b'Entw\xfcrfe')
  os.mkdir(directory)
  os.mkdir(os.path.join(directory, b'old'))
  write_designs(os.fsdecode(directory), labelled_names(2))
  with open(os.path.join(directory, b'notes.txt'), 'wb') as f:
    f.write(b'x')
  ds = data.load_dataset(os.fsdecode(directory), val_fraction=0)
  lines = [ds.summary(), *ds.warnings(), data.fingerprint_change({'designs': 1}, ds)]
  assert len(lines) == 4 and all('Entw\\xfcrfe' in line for line in lines), lines
  for line in lines:
    line.encode('utf-8')  # strict: no lone surrogate left


def test_labels_written_differently_that_round_to_one_class_are_named(tmp_path):
  write_designs(tmp_path, ['1.4_a_2.131_x.bmp', '1.4_b_2.134_x.bmp', '1.40_c_2.13_x.bmp',
                           '1.5_d_10_x.bmp', '1.5_e_10.0_x.bmp'])
  warnings = data.load_dataset(str(tmp_path), val_fraction=0).warnings()
  assert warnings == ['mass values 2.13, 2.131, 2.134 in the file names were all read as class '
                      '2.13 (labels are rounded to 2 decimals)'], warnings


def test_labels_that_differ_beyond_28_digits_are_named_too():
  """Decimal.normalize() rounded them to its default 28 digits into one spelling."""
  long = '1.4' + '0' * 30 + '1'
  assert data._merged_labels(['1.4_a_2_x.bmp', f'{long}_b_2_x.bmp']) == (
      f'durability values 1.4, {long} in the file names were all read as class 1.4',)


def test_merged_labels_name_at_most_three_classes_then_count_the_rest():
  """One line per merged class would flood the training log for a dataset whose labels carry
  3 decimals throughout: three are named, then how many more."""
  names = [f'1.4_a_{m}{extra}_x.bmp' for m in ('2.13', '3.13', '4.13', '5.13', '6.13')
           for extra in ('1', '4')]
  found = data._merged_labels(names)
  assert len(found) == 4, found
  assert found[0] == 'mass values 2.131, 2.134 in the file names were all read as class 2.13'
  assert found[3] == '... and 2 more mass classes like these'


def test_a_label_that_gives_nearly_every_design_its_own_class_is_questioned(tmp_path):
  """A suffix after the id (x_00007_v2.bmp) makes the id the mass: 30 designs, 30 classes."""
  write_designs(tmp_path, [f'1.4_a_2.13_{i:05d}_v2.bmp' for i in range(30)])
  warnings = [w for w in data.load_dataset(str(tmp_path), val_fraction=0).warnings()
              if 'classes among' in w]
  assert warnings == ['mass has 30 classes among 30 designs: is it read from the right part of '
                      'the names? mass is the second-to-last "_"-separated part of '
                      f'{data.NAME_PATTERN} (e.g. 1.4_a_2.13_00000_v2.bmp -> mass 0)'], warnings


def test_many_classes_are_questioned_only_beyond_half_the_designs(tmp_path_factory):
  """The question fires for more classes than max(20, designs // 2): 40 designs of 20 mass
  classes (two of each, a plausible dataset) must train without a false alarm; 21 raise it."""
  def warned(masses):
    directory = tmp_path_factory.mktemp('d')
    write_designs(directory, [f'1.4_{i}_{m}_x.bmp' for i, m in enumerate(masses)])
    ds = data.load_dataset(str(directory), val_fraction=0)
    return [w for w in ds.warnings() if 'classes among' in w]
  assert not warned([i % 20 for i in range(40)])
  assert warned([i % 21 for i in range(40)])[0].startswith('mass has 21 classes among 40 ')


def test_a_fixed_vocabulary_with_many_values_is_not_questioned(tmp_path):
  """The question is about the names: 30 durability_values of which the names use 3 are fine."""
  write_designs(tmp_path, labelled_names(40))
  vocab = [1.4, 2.2, 3.0] + [5 + i for i in range(27)]
  ds = data.load_dataset(str(tmp_path), durability_values=vocab, val_fraction=0)
  assert len(ds.spec.durability) == 30
  assert not [w for w in ds.warnings() if 'classes among' in w], ds.warnings()


def test_the_many_classes_example_name_is_escaped_when_not_utf8(tmp_path):
  """Like a skipped name: a lone surrogate would make a strict-UTF-8 console's handler fail."""
  names = [f'1.4_a_2.13_{i:05d}_v2.bmp' for i in range(30)]
  write_designs(tmp_path, names)
  os.rename(tmp_path / names[0],
            os.path.join(os.fsencode(tmp_path), b'1.3_\xff_2.13_00000_v2.bmp'))
  (warning,) = [w for w in data.load_dataset(str(tmp_path), val_fraction=0).warnings()
                if 'classes among' in w]
  assert '(e.g. 1.3_\\xff_2.13_00000_v2.bmp -> mass 0)' in warning, warning
  warning.encode('utf-8')  # strict: no lone surrogate left


def test_validation_designs_that_copy_training_designs_are_counted(tmp_path):
  images = write_designs(tmp_path, labelled_names(10))
  for name, image in images.items():  # every design twice, under another name
    write_rgb(str(tmp_path / name.replace('_x.bmp', '_copy.bmp')), image)
  ds = data.load_dataset(str(tmp_path), val_fraction=0.2, seed=0)
  (warning,) = [w for w in ds.warnings() if 'copies' in w]
  assert warning.startswith(f'{len(ds.val)} of {len(ds.val)} validation designs are copies')
  distinct = tmp_path / 'distinct'
  distinct.mkdir()
  write_designs(distinct, labelled_names(10))
  assert not [w for w in data.load_dataset(str(distinct), val_fraction=0.2).warnings()
              if 'copies' in w]


def test_images_only_in_subdirectories_is_an_error_that_says_so(tmp_path):
  (tmp_path / 'train').mkdir()
  write_designs(tmp_path / 'train', labelled_names(2))
  with pytest.raises(DataError, match=r'no .bmp or .png images found.*train/ are not searched'):
    data.load_dataset(str(tmp_path))


def test_the_fingerprint_tells_other_designs_and_says_what_that_means(tmp_path):
  write_designs(tmp_path, labelled_names(4))
  before = data.load_dataset(str(tmp_path), val_fraction=0.25)
  assert data.load_dataset(str(tmp_path), val_fraction=0.5).fingerprint() == before.fingerprint()
  assert data.fingerprint_change(before.fingerprint(), before) == ''
  assert data.fingerprint_change(None, before) == ''  # a checkpoint from before fingerprints
  write_designs(tmp_path, ['9_extra_9_x.bmp'])
  after = data.load_dataset(str(tmp_path), val_fraction=0.25)
  assert after.fingerprint()['designs'] == 5
  assert data.fingerprint_change(before.fingerprint(), after) == (
      f'the designs in {tmp_path} are not those the model was trained on (4 then, 5 now): the '
      'train/validation split is drawn anew, so validation designs may be ones it was trained on')
  os.rename(tmp_path / '9_extra_9_x.bmp', tmp_path / '1.4_part0_10.0_y.bmp')
  (tmp_path / '1.4_part0_10.0_x.bmp').unlink()
  renamed = data.load_dataset(str(tmp_path), val_fraction=0.25)
  assert 'as many, other file names' in data.fingerprint_change(before.fingerprint(), renamed)


def test_spec_changes_name_what_differs():
  layout = {'full_height': 10, 'full_width': 30, 'kept_columns': [0, 1], 'strut_positions': []}
  old = {'layout': layout, 'durability': [1.0, 1.1], 'mass': [2.13]}
  assert data.spec_changes(old, old) == ''
  new = dict(old, durability=[1.0, 1.1, 1.2], layout=dict(layout, kept_columns=[0]))
  assert data.spec_changes(old, new) == 'durability 1, 1.1 -> 1, 1.1, 1.2; layout kept_columns'


def test_spec_changes_name_a_vocabulary_whose_values_changed_but_not_its_size():
  """A checkpoint of classes 1, 1.1 resumed on data of classes 1, 1.2 is refused: the message must
  name the vocabulary that changed, even though it has as many classes as before."""
  old = {'layout': {}, 'durability': [1.0, 1.1], 'mass': [2.13]}
  assert data.spec_changes(old, dict(old, durability=[1.0, 1.2])) == 'durability 1, 1.1 -> 1, 1.2'
  assert data.spec_changes(old, dict(old, mass=[2.14])) == 'mass 2.13 -> 2.14'


def test_a_fixed_vocabulary_that_is_not_one_names_its_field(tmp_path):
  write_designs(tmp_path, labelled_names(2))
  with pytest.raises(DataError, match=r'^durability_values: invalid class values \(-1'):
    data.load_dataset(str(tmp_path), durability_values=[-1, 1])


def test_a_jpeg_named_bmp_is_refused_a_png_named_bmp_is_read(tmp_path):
  image = write_designs(tmp_path, ['1_a_2_x.bmp'])['1_a_2_x.bmp']
  Image.fromarray(image).save(tmp_path / '1_b_2_x.bmp', format='PNG')
  assert len(data.load_dataset(str(tmp_path), val_fraction=0).train) == 2
  Image.fromarray(image).save(tmp_path / '1_c_2_x.bmp', format='JPEG')
  with pytest.raises(DataError, match='1_c_2_x.bmp: the file is a JPEG image, not BMP or PNG'):
    data.load_dataset(str(tmp_path), val_fraction=0)
  os.remove(tmp_path / '1_c_2_x.bmp')
  Image.fromarray(image).save(tmp_path / '1_d_2_x.bmp', format='ICO')
  with pytest.raises(DataError, match='1_d_2_x.bmp: the file is an ICO image, not BMP or PNG'):
    data.load_dataset(str(tmp_path), val_fraction=0)


def test_extension_case_is_ignored(tmp_path):
  write_designs(tmp_path, ['1_a_2_x.BMP', '1_b_2_x.Png'])
  assert len(data.load_dataset(str(tmp_path), val_fraction=0).train) == 2


# ---------------------------------------------------------------------------------------------
# Bad input: one DataError naming the file or directory


def test_corrupt_image(tmp_path):
  write_designs(tmp_path, labelled_names(2))
  (tmp_path / '1_bad_2_x.bmp').write_bytes(b'BM not really a bitmap')
  with pytest.raises(DataError, match='1_bad_2_x.bmp'):
    data.load_dataset(str(tmp_path))


def test_a_broken_link_named_like_a_design_says_where_it_points(tmp_path):
  """The directory lists it, so 'file not found' read as a contradiction."""
  write_designs(tmp_path, labelled_names(2))
  os.symlink(tmp_path / 'gone.bmp', tmp_path / '1_link_2_x.bmp')
  with pytest.raises(DataError, match=(r'1_link_2_x.bmp: a symbolic link to .*gone.bmp, which '
                                       'does not exist; designs must be files, or links to')):
    data.load_dataset(str(tmp_path))


def test_a_file_this_user_cannot_read_is_named_as_such_not_as_corrupt(tmp_path, monkeypatch):
  """A design without read permission (copied from another user's directory) was reported as
  'the file is corrupt or not a BMP/PNG'. Root reads any file, so open() is made to refuse."""
  write_designs(tmp_path, labelled_names(2) + ['1_locked_2_x.bmp'])
  real_open = data.image_io.Image.open

  def refuse_locked(path, *args, **kwargs):
    if str(path).endswith('1_locked_2_x.bmp'):
      raise PermissionError(13, 'Permission denied', str(path))
    return real_open(path, *args, **kwargs)

  monkeypatch.setattr(data.image_io.Image, 'open', refuse_locked)
  with pytest.raises(DataError, match='1_locked_2_x.bmp: cannot read the file') as info:
    data.load_dataset(str(tmp_path))
  assert 'Permission denied' in str(info.value) and 'corrupt' not in str(info.value)


def test_truncated_image(tmp_path):
  write_designs(tmp_path, ['1_a_2_x.png'])
  content = (tmp_path / '1_a_2_x.png').read_bytes()
  (tmp_path / '1_a_2_x.png').write_bytes(content[:len(content) // 2])
  with pytest.raises(DataError, match='1_a_2_x.png'):
    data.load_dataset(str(tmp_path))


@pytest.mark.parametrize('side', [100000, 10000])
def test_a_header_claiming_a_vast_size_is_a_data_error_without_a_warning(tmp_path, recwarn, side):
  """Pillow refuses a header of 10^10 pixels with DecompressionBombError, which is not an
  OSError; one of 10^8 it only warns of (DecompressionBombWarning: two lines on stderr before the
  error line), refused here like the error."""
  write_designs(tmp_path, ['1_a_2_x.bmp'])
  header = bytearray((tmp_path / '1_a_2_x.bmp').read_bytes())
  header[18:26] = side.to_bytes(4, 'little') * 2  # width and height
  (tmp_path / '1_b_2_x.bmp').write_bytes(bytes(header))
  with pytest.raises(DataError, match=r'1_b_2_x.bmp: cannot read image \(Image size'):
    data.load_dataset(str(tmp_path))
  assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_loop_of_links_is_a_data_error_naming_it(tmp_path):
  write_designs(tmp_path, ['1_a_2_x.bmp'])
  os.symlink('1_b_2_x.bmp', tmp_path / '1_b_2_x.bmp')  # a link to itself
  with pytest.raises(DataError, match='1_b_2_x.bmp: cannot read image'):
    data.load_dataset(str(tmp_path))


def test_a_fifo_named_like_a_design_is_refused_not_waited_on(tmp_path):
  write_designs(tmp_path, ['1_a_2_x.bmp'])
  fifo = tmp_path / '1_b_2_x.bmp'
  os.mkfifo(fifo)  # opening it for reading blocks until a writer comes
  done = threading.Event()

  def writer():  # so that a loader that opens the FIFO fails this test rather than hangs it
    while not done.wait(0.01):
      try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while no one reads
      except OSError:
        continue
      os.write(fd, b'not a design')
      os.close(fd)
      return

  thread = threading.Thread(target=writer, daemon=True)
  thread.start()
  try:
    with pytest.raises(DataError, match='1_b_2_x.bmp: not a regular file'):
      data.load_dataset(str(tmp_path))
  finally:
    done.set()
    thread.join()


def test_images_of_different_sizes(tmp_path):
  write_designs(tmp_path, ['1_a_2_x.bmp', '1_b_2_x.bmp'])
  write_rgb(str(tmp_path / '1_c_2_x.bmp'), np.zeros((10, 31, 3), np.uint8))
  with pytest.raises(DataError) as e:
    data.load_dataset(str(tmp_path))
  message = str(e.value)
  assert '1_c_2_x.bmp' in message and '10x31' in message and '10x30' in message


def test_the_odd_size_is_named_even_when_it_comes_first(tmp_path):
  """The message names the files that differ from the majority, not the first file read."""
  write_rgb(str(tmp_path / '1_a_2_x.bmp'), np.zeros((12, 30, 3), np.uint8))
  write_designs(tmp_path, ['1_b_2_x.bmp', '1_c_2_x.bmp', '1_d_2_x.bmp'])
  with pytest.raises(DataError) as e:
    data.load_dataset(str(tmp_path))
  message = str(e.value)
  assert message.startswith('1 of 4 designs are not 10x30 (HxW) like the others: ')
  assert '1_a_2_x.bmp is 12x30' in message and '1_b_2_x' not in message


def test_a_missing_relative_data_path_says_where_it_was_looked_for(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(DataError, match=f'relative to {tmp_path}'):
    data.load_dataset('no/such/dir')


def test_unparsable_name(tmp_path):
  write_designs(tmp_path, ['1_a_2_x.bmp', 'heavy_b_2_x.bmp'])
  with pytest.raises(DataError, match="heavy_b_2_x.bmp: durability 'heavy'"):
    data.load_dataset(str(tmp_path))


def test_empty_directory(tmp_path):
  with pytest.raises(DataError, match=f'{tmp_path}: no .bmp or .png images'):
    data.load_dataset(str(tmp_path))
  (tmp_path / 'readme.txt').write_text('no images here')
  with pytest.raises(DataError, match='no .bmp or .png images'):
    data.load_dataset(str(tmp_path))


def test_missing_directory(tmp_path):
  with pytest.raises(DataError, match=f'{tmp_path / "nope"}: data directory does not exist'):
    data.load_dataset(str(tmp_path / 'nope'))


def test_path_is_a_file(tmp_path):
  write_designs(tmp_path, ['1_a_2_x.bmp'])
  path = str(tmp_path / '1_a_2_x.bmp')
  with pytest.raises(DataError, match=f'{path}: is a file, expected a directory'):
    data.load_dataset(path)


@pytest.mark.parametrize('fraction', [-0.1, 1.0, 1.5, float('nan')])
def test_bad_val_fraction(tmp_path, fraction):
  write_designs(tmp_path, ['1_a_2_x.bmp'])
  with pytest.raises(DataError, match=r'validation fraction must be in \[0, 1\)'):
    data.load_dataset(str(tmp_path), val_fraction=fraction)


# ---------------------------------------------------------------------------------------------
# Normalisation


def test_normalize_range_and_exact_round_trip():
  values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
  x = data.normalize(values)
  assert x.dtype == np.float32
  assert x.min() == -1 and x.max() == 1
  np.testing.assert_array_equal(data.denormalize(x), values)
  np.testing.assert_array_equal(data.denormalize(jnp.asarray(x)), values)


def test_denormalize_clips():
  out = data.denormalize(np.array([-3.0, -1.0, 0.0, 1.0, 7.0, np.nan], np.float32))
  assert out.dtype == np.uint8
  assert out.tolist() == [0, 0, 128, 255, 255, 0]


def test_fixed_pixel_images_shape_check():
  layout = data.DesignLayout.original(10, 30)
  with pytest.raises(DataError, match=r'\(N, 2, 3\)'):
    data.fixed_pixel_images(np.zeros((4, 3, 3), np.uint8), layout)


# ---------------------------------------------------------------------------------------------
# Train/validation split


@FAST
@hypothesis.given(n=st.integers(0, 60), fraction=st.floats(0, 0.999), seed=st.integers(0, 99))
def test_split_indices_property(n, fraction, seed):
  train, val = data.split_indices(n, fraction, seed)
  assert sorted(np.concatenate([train, val]).tolist()) == list(range(n))
  expected = round(n * fraction)
  if fraction > 0 and n >= 2:
    expected = max(expected, 1)
  assert len(val) == min(expected, max(n - 1, 0))
  if n >= 1:
    assert len(train) >= 1
  assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # each part ascending
  train2, val2 = data.split_indices(n, fraction, seed)
  np.testing.assert_array_equal(train, train2)
  np.testing.assert_array_equal(val, val2)


def test_split_small_cases():
  assert [len(p) for p in data.split_indices(1, 0.5, 0)] == [1, 0]
  assert [len(p) for p in data.split_indices(2, 0.1, 0)] == [1, 1]
  assert [len(p) for p in data.split_indices(2, 0.9, 0)] == [1, 1]
  assert [len(p) for p in data.split_indices(10, 0.0, 0)] == [10, 0]
  assert [len(p) for p in data.split_indices(100, 0.1, 0)] == [90, 10]


def test_dataset_split_by_seed(tmp_path):
  names = labelled_names(20)
  write_designs(tmp_path, names)

  def split(seed):
    ds = data.load_dataset(str(tmp_path), val_fraction=0.25, seed=seed)
    return ds.train.names, ds.val.names

  train, val = split(0)
  assert len(val) == 5 and len(train) == 15
  assert not set(train) & set(val)
  assert sorted(train + val) == sorted(names)
  assert split(0) == (train, val)
  assert split(1)[1] != val


def test_split_keeps_labels_with_their_images(tmp_path):
  write_designs(tmp_path, labelled_names(12))
  ds = data.load_dataset(str(tmp_path), val_fraction=0.5, seed=3)
  for part in (ds.train, ds.val):
    for name, d, m in zip(part.names, part.durability, part.mass):
      assert data.parse_labels(name) == (ds.spec.durability.values[d], ds.spec.mass.values[m])


def test_held_out_is_the_validation_part_or_the_training_part_without_one(tmp_path):
  """Evaluation and the output designs use held_out(): with val_fraction=0 there is no
  validation part, and measuring against an empty set would give no metrics at all."""
  write_designs(tmp_path, labelled_names(4))
  ds = data.load_dataset(str(tmp_path), val_fraction=0.5)
  assert ds.held_out()[0] == 'val' and ds.held_out()[1] is ds.val and len(ds.val) == 2
  ds = data.load_dataset(str(tmp_path), val_fraction=0)
  assert ds.held_out()[0] == 'train' and ds.held_out()[1] is ds.train and len(ds.train) == 4


# ---------------------------------------------------------------------------------------------
# resolve_data_path


def test_resolve_data_path_passes_paths_through():
  assert data.resolve_data_path('/some/where') == '/some/where'


def test_resolve_data_path_default(monkeypatch):
  from gan import designs  # pylint: disable=import-outside-toplevel
  monkeypatch.setattr(designs, 'ensure_default_dataset', lambda: '/bundled', raising=False)
  assert data.resolve_data_path('') == '/bundled'
  assert data.resolve_data_path(None) == '/bundled'


def test_the_copies_check_keeps_a_digest_per_training_design_not_its_pixels(tmp_path):
  """A set of the pixels' bytes doubled the memory of a large training set (2 GB more at 100k
  32x32 designs)."""
  write_designs(tmp_path, labelled_names(2))
  ds = data.load_dataset(str(tmp_path), val_fraction=0)
  key = data._design_key(ds.train, 0)
  assert sum(len(k) for k in key if isinstance(k, bytes)) <= 32, key
  assert key == data._design_key(ds.train, 0) != data._design_key(ds.train, 1)


def test_infer_grid_in_a_data_directory_is_skipped_not_an_error(tmp_path):
  """infer.py names its designs for a data directory, and the README offers a --gen_img_path that
  is a data_path to add them to the training data; but with --grid its grid.png (no labels in the
  name) made the directory unloadable: 'grid.png: cannot read the labels from the file name'."""
  from gan import inference_output  # pylint: disable=import-outside-toplevel
  write_designs(tmp_path, labelled_names(4) + ['1.4_2.14_000.bmp'])
  write_rgb(str(tmp_path / inference_output.GRID), np.zeros((22, 62, 3), np.uint8))
  (tmp_path / inference_output.MANIFEST).write_text('file\n')
  ds = data.load_dataset(str(tmp_path), val_fraction=0)
  assert len(ds.train) == 5
  (warning,) = ds.warnings()
  assert warning == (f'{tmp_path}: skipped 2 file(s) that are not .bmp/.png images or are '
                     "hidden: grid.png, manifest.csv (grid.png: infer.py's contact sheet of a "
                     'request, not a design)')
