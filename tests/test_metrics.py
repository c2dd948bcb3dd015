"""Tests of gan/metrics.py: the Frechet distance, diversity and the oracle check."""

import numpy as np
import pytest
from helpers import relabelled

from gan import data
from gan import designs
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


def test_frechet_distance_rejects_mismatched_features():
  with pytest.raises(ValueError, match='feature arrays'):
    metrics.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
  with pytest.raises(ValueError, match='feature arrays'):
    metrics.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


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
