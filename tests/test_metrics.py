"""Tests of gan/metrics.py: the Frechet distance, diversity and the oracle check."""

import numpy as np
import pytest
from helpers import relabelled

from gan import data
from gan import designs
from gan import images as images_lib
from gan import metrics
from gan import oracle


# ---------------------------------------------------------------------------------------------
# Frechet distance


def test_frechet_distance_of_a_sample_with_itself_is_zero():
  feats = np.random.default_rng(0).normal(size=(500, 16)) @ np.diag(np.linspace(0.1, 3, 16))
  assert metrics.frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_a_shifted_gaussian_is_the_squared_shift():
  rng = np.random.default_rng(1)
  shift = np.array([1.0, -2.0, 0.5, 0.0])
  a = rng.normal(size=(50_000, 4))
  b = rng.normal(size=(50_000, 4)) + shift
  assert metrics.frechet_distance(a, b) == pytest.approx(np.sum(shift ** 2), rel=0.02)


def test_frechet_distance_matches_the_closed_form_in_one_dimension():
  rng = np.random.default_rng(2)
  a, b = rng.normal(1.0, 2.0, (300, 1)), rng.normal(-0.5, 0.5, (200, 1))
  expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
  assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize('seed', range(5))
def test_frechet_distance_is_symmetric_and_non_negative(seed):
  rng = np.random.default_rng(seed)
  dim = 8
  # Rank-deficient covariances (fewer samples than features) are the hard case for sqrtm.
  a = rng.normal(size=(5, dim)) @ rng.normal(size=(dim, dim))
  b = rng.normal(size=(40, dim)) * rng.uniform(0, 2, dim) + rng.normal(size=dim)
  ab, ba = metrics.frechet_distance(a, b), metrics.frechet_distance(b, a)
  assert ab >= 0 and ba >= 0
  assert ab == pytest.approx(ba, rel=1e-6, abs=1e-9)


def test_frechet_distance_of_a_rank_deficient_sample_with_itself_is_exactly_zero():
  """Fewer samples than features: the square roots' round-off alone gives -0.01 here, which the
  distance must not report (a negative FD would rank a run best)."""
  feats = np.random.default_rng(0).normal(size=(5, 30)) * 100
  assert metrics.frechet_distance(feats, feats) == 0.0


def test_frechet_distance_rejects_mismatched_features():
  with pytest.raises(ValueError, match='feature arrays'):
    metrics.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match='feature arrays'):
    metrics.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_frechet_distance_rejects_a_single_row_or_samples_that_are_not_tables():
  """Either sample with one row has no covariance (a division by zero gave nan, which no ranking
  can use); a 1-D or 3-D array is not rows of features (an IndexError before)."""
  for a, b in ((np.zeros((5, 3)), np.zeros((1, 3))), (np.zeros((1, 3)), np.zeros((5, 3))),
               (np.zeros(5), np.zeros(5)), (np.zeros((5, 3)), np.zeros((5, 3, 1))),
               (np.zeros((5, 3, 1)), np.zeros((5, 3)))):
    with pytest.raises(ValueError, match='feature arrays'):
      metrics.frechet_distance(a, b)


# ---------------------------------------------------------------------------------------------
# Diversity


def test_diversity_of_identical_copies_is_zero():
  design = np.random.default_rng(0).integers(0, 256, (10, 14, 3), np.uint8)
  assert metrics.diversity([np.stack([design] * 5), np.stack([design] * 2)]) == 0.0


def test_diversity_is_the_mean_pixel_l1_distance_in_unit_range():
  black, white = np.zeros((1, 2, 2, 3), np.uint8), np.full((1, 2, 2, 3), 255, np.uint8)
  assert metrics.diversity([np.concatenate([black, white])]) == pytest.approx(1.0)
  # Pairs (b, b), (b, w), (b, w) in a group of three: mean 2/3; single designs are skipped.
  group = np.concatenate([black, black, white])
  assert metrics.diversity([group, black]) == pytest.approx(2 / 3)
  assert metrics.diversity([black, white]) is None


def test_diversity_subsamples_a_large_group_without_repeating_a_design():
  """Design i is black but for entry i: every two designs differ in 2 of the P entries, so any
  subsample of distinct designs has diversity 2 / P; a design drawn twice adds a zero pair."""
  n = 2 * metrics.MAX_GROUP
  group = np.zeros((n, 1, n, 1), np.uint8)
  group[np.arange(n), 0, np.arange(n), 0] = 255
  assert metrics.diversity([group], seed=0) == pytest.approx(2 / n)
  assert metrics.diversity([group], seed=1) == pytest.approx(2 / n)


def test_diversity_subsample_follows_the_seed():
  """The subsample of a large group is drawn from `seed` (gan.evaluate passes its evaluation
  seed): the same seed gives the same value, another seed another subsample; either estimates the
  whole group's mean pairwise distance."""
  n = 3 * metrics.MAX_GROUP
  group = np.random.default_rng(0).integers(0, 256, (n, 2, 2, 1), np.uint8)
  values = [metrics.diversity([group], seed=s) for s in (0, 0, 1, 2)]
  assert values[0] == values[1]
  assert len(set(values[1:])) == 3, values
  whole = metrics.mean_pairwise_l1(group)
  assert all(abs(v - whole) < 0.05 for v in values), (values, whole)


def test_group_by_condition_keeps_every_label_pair_apart():
  """Pairs such as (0, 2) and (1, 0) are two conditions whatever the largest mass class is;
  groups come in ascending (durability, mass) order, designs in their given order."""
  durability = np.array([1, 0, 2, 0, 1, 1, 2, 0, 0])
  mass = np.array([0, 1, 0, 1, 1, 0, 2, 0, 2])
  images = np.arange(9)  # stands for the designs: group_by_condition only indexes them
  groups = metrics.group_by_condition(images, durability, mass)
  assert [g.tolist() for g in groups] == [[7], [1, 3], [8], [0, 5], [4], [2], [6]]


# ---------------------------------------------------------------------------------------------
# Struts and shares


def test_strut_agreement_needs_every_strut_of_a_design():
  positions = ((0, 1), (2, 0))
  colors = np.array([[[10, 20, 30], [40, 50, 60]]] * 3, np.uint8)
  full = np.zeros((3, 3, 2, 3), np.uint8)
  full[:, 0, 1] = (10, 20, 30)
  full[:, 2, 0] = (40, 50, 60)
  full[1, 2, 0] = (40, 50, 61)  # one channel of the second strut off by one
  full[2, 0, 1] = (0, 0, 0)  # the first strut wrong
  assert metrics.strut_agreement(full, colors, positions).tolist() == [True, False, False]
  # A layout without struts: nothing to get wrong.
  assert metrics.strut_agreement(full, np.zeros((3, 0, 3), np.uint8), ()).tolist() == [True] * 3


def test_share_is_the_mean_and_none_without_values():
  assert metrics.share([True, False, True, True]) == 0.75
  assert metrics.share(np.array([], bool)) is None


# ---------------------------------------------------------------------------------------------
# The oracle check


def test_oracle_agreement_counts_whole_class_steps_per_label():
  """A request one class step off either label is not exact but within1; two steps off is
  neither; the per-label booleans name the label that is off. (gan.evaluate's tests only see
  perfect and random generators, where within1 could equal exact unnoticed.)"""
  real = designs.generate(20, seed=3)
  steps = {'durability': oracle.DURABILITY_STEP, 'mass': oracle.MASS_STEP}
  exact = metrics.oracle_agreement(real.images, real.durability, real.mass)
  assert all(exact[k].all() for k in ('durability', 'mass', 'exact', 'within1'))
  for label, step in steps.items():
    for sign in (1, -1):
      for offset, within1 in ((1, True), (2, False)):
        requested = {'durability': real.durability, 'mass': real.mass}
        requested[label] = requested[label] + sign * offset * step
        ok = metrics.oracle_agreement(real.images, requested['durability'], requested['mass'])
        other = 'mass' if label == 'durability' else 'durability'
        assert not ok[label].any() and ok[other].all(), (label, sign, offset)
        assert not ok['exact'].any(), (label, sign, offset)
        assert (ok['within1'] == within1).all(), (label, sign, offset)


def test_synthetic_designs_are_recognised(small_design_dir):
  small = data.load_dataset(small_design_dir)
  assert metrics.is_synthetic(small)
  assert not metrics.is_synthetic(relabelled(small))
  # Both labels count: designs whose mass labels alone were moved are not the oracle's either.
  nm = len(small.spec.mass)
  shift = lambda p: data.DesignArrays(p.images, p.fixed, p.strut_colors, p.durability,
                                      ((p.mass + 1) % nm).astype(np.int32), p.names)
  mass_moved = data.Dataset(small.spec, shift(small.train), shift(small.val), small.mask)
  assert not metrics.is_synthetic(mass_moved)


def test_synthetic_needs_at_least_the_agreement_share(small_design_dir, monkeypatch):
  """'At least SYNTHETIC_AGREEMENT': designs the oracle labels all exactly pass a threshold of 1."""
  small = data.load_dataset(small_design_dir)
  monkeypatch.setattr(metrics, 'SYNTHETIC_AGREEMENT', 1.0)
  assert metrics.is_synthetic(small)


def test_synthetic_counts_the_validation_designs_too(small_design_dir):
  """Both splits are checked: designs whose validation part (10%) the oracle does not reproduce
  are not the synthetic ones, although every training design is."""
  small = data.load_dataset(small_design_dir)
  val_moved = data.Dataset(small.spec, small.train, relabelled(small).val, small.mask)
  assert len(small.val) and not metrics.is_synthetic(val_moved)


def test_designs_of_another_size_are_not_synthetic(tmp_path):
  """The oracle measures 10x30 designs only: other sizes are not its designs, whatever their
  labels say (and are not measured at all)."""
  real = designs.generate(8, seed=0)
  for i, (image, d, m) in enumerate(zip(real.images, real.durability, real.mass)):
    images_lib.write_rgb(str(tmp_path / f'{d:.1f}_a_{m:.2f}_{i}.bmp'), image[:, :20])
  other = data.load_dataset(str(tmp_path), val_fraction=0)
  assert (other.layout.full_height, other.layout.full_width) == (oracle.HEIGHT, 20)
  assert not metrics.is_synthetic(other)
