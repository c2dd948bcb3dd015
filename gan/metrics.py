r"""Design-quality measures that need no model: Frechet distance, diversity, oracle and struts.

Each takes plain arrays (features, uint8 designs, class indices or values); `gan.evaluate` applies
them to generated and held-out real designs.

  Frechet distance  between Gaussians fitted to two feature samples a and b (rows are samples):
                      FD(a, b) = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})
  diversity         mean pairwise L1 distance between designs of one condition, per pixel and
                    channel in [0, 1] units, averaged over the conditions with two or more designs:
                      mean_{groups g with |g| >= 2} mean_{i<j in g} mean_pixels |x_i - x_j| / 255
  oracle agreement  the oracle-measured durability and mass classes against the requested ones in
                    whole class steps, round((measured - requested) / step): 'exact' when both are
                    0, 'within1' when both are at most 1 in absolute value
  strut agreement   every strut pixel equals its requested colour

The oracle labels only the synthetic designs (`is_synthetic`).
"""

from typing import Optional, Sequence

import numpy as np

from gan import data
from gan import oracle

# Synthetic means the oracle reproduces at least this share of the real labels.
SYNTHETIC_AGREEMENT = 0.99
# Diversity looks at most this many designs of one condition (a seeded subsample beyond it).
MAX_GROUP = 64


# ---------------------------------------------------------------------------------------------
# Frechet distance and diversity


def frechet_distance(feats_a, feats_b) -> float:
  r"""Frechet distance between Gaussians fitted to two feature samples (rows are samples).

    FD = ||mu_a - mu_b||^2 + Tr(S_a) + Tr(S_b) - 2 Tr((S_a S_b)^{1/2})

  with unbiased covariances S. Since S_a^{1/2} S_b S_a^{1/2} is symmetric positive semi-definite
  and similar to S_a S_b, Tr((S_a S_b)^{1/2}) = sum_i sqrt(lambda_i(S_a^{1/2} S_b S_a^{1/2}));
  S_a^{1/2} from `eigh`, those eigenvalues from `eigvalsh`, negative round-off ones clipped to 0.
  float64 throughout; the result is clipped at 0 (it can only be negative by round-off).

  Raises:
    ValueError: the samples are not 2-D with the same number of columns and >= 2 rows each.
  """
  a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
    raise ValueError(f'frechet_distance needs two (n >= 2, F) feature arrays with one F, got '
                     f'shapes {a.shape} and {b.shape}')
  mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
  cov_a, cov_b = _covariance(a), _covariance(b)
  sqrt_a = _psd_sqrt(cov_a)
  middle = sqrt_a @ cov_b @ sqrt_a
  eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
  trace_sqrt = float(np.sum(np.sqrt(np.clip(eigenvalues, 0.0, None))))
  return max(mean_term + float(np.trace(cov_a) + np.trace(cov_b)) - 2.0 * trace_sqrt, 0.0)


def _covariance(x: np.ndarray) -> np.ndarray:
  """Unbiased (F, F) covariance of the rows of x."""
  centred = x - x.mean(0)
  return centred.T @ centred / (len(x) - 1)


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
  """Symmetric square root V sqrt(max(w, 0)) V^T of a symmetric PSD matrix V diag(w) V^T."""
  w, v = np.linalg.eigh((matrix + matrix.T) / 2)
  return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def group_by_condition(images, durability, mass) -> list[np.ndarray]:
  """Splits images by (durability, mass) index pair, pairs in ascending order."""
  images = np.asarray(images)
  keys = np.asarray(durability, np.int64) * (int(np.max(mass, initial=0)) + 1) + np.asarray(mass)
  return [images[keys == k] for k in np.unique(keys)]


def mean_pairwise_l1(images) -> float:
  """mean_{i<j} mean_pixels |x_i - x_j| / 255 for uint8 images (k >= 2, ...)."""
  x = np.asarray(images, np.float32).reshape(len(images), -1) / np.float32(255.0)
  distances = np.abs(x[:, None, :] - x[None, :, :]).mean(-1)
  upper = np.triu_indices(len(x), k=1)
  return float(distances[upper].mean())


def diversity(groups: Sequence[np.ndarray], seed: int = 0) -> Optional[float]:
  r"""Mean within-condition pairwise L1 distance of uint8 designs, in [0, 1] units.

    diversity = mean_{groups g with |g| >= 2} mean_{i<j in g} mean_pixels |x_i - x_j| / 255

  Each group holds the designs of one condition. Pass training-layout images (as
  `gan.evaluate` does): columns empty in every real design would only dilute the distance.
  A group larger than MAX_GROUP is subsampled (seeded) to bound the k^2 cost; the mean pairwise
  distance is an unbiased U-statistic, so the group size does not bias it. None when no group has
  two designs.
  """
  rng = np.random.default_rng(seed)
  values = []
  for group in groups:
    if len(group) < 2:
      continue
    if len(group) > MAX_GROUP:
      group = group[np.sort(rng.choice(len(group), MAX_GROUP, replace=False))]
    values.append(mean_pairwise_l1(group))
  return float(np.mean(values)) if values else None


# ---------------------------------------------------------------------------------------------
# The oracle


def class_values(vocab: data.ClassVocab, indices) -> np.ndarray:
  """Class indices -> class values (float64)."""
  return np.asarray(vocab.values, np.float64)[np.asarray(indices, np.int64)]


def class_steps(measured, requested, step: float) -> np.ndarray:
  """Signed distance in whole class steps: round((measured - requested) / step)."""
  return np.round((np.asarray(measured) - np.asarray(requested)) / step).astype(np.int64)


def oracle_agreement(full_images, durability_values, mass_values) -> dict:
  """Per-design booleans (N,) comparing the oracle's classes of full-layout uint8 designs with
  the given class values: 'durability' / 'mass' (that label exact), 'exact' (both) and
  'within1' (both at most one class step away)."""
  measured_d, measured_m = oracle.measure(np.asarray(full_images))
  steps_d = class_steps(measured_d, durability_values, oracle.DURABILITY_STEP)
  steps_m = class_steps(measured_m, mass_values, oracle.MASS_STEP)
  return {'durability': steps_d == 0, 'mass': steps_m == 0,
          'exact': (steps_d == 0) & (steps_m == 0),
          'within1': (np.abs(steps_d) <= 1) & (np.abs(steps_m) <= 1)}


def is_synthetic(dataset: data.Dataset) -> bool:
  """True when the designs are the synthetic ones the oracle labels: a 10x30 full layout and the
  oracle reproduces both labels of at least SYNTHETIC_AGREEMENT of the real designs."""
  layout = dataset.layout
  if (layout.full_height, layout.full_width) != (oracle.HEIGHT, oracle.WIDTH):
    return False
  parts = [p for p in (dataset.train, dataset.val) if len(p)]
  full = np.concatenate([data.full_designs(layout, p.images) for p in parts])
  durability = np.concatenate([class_values(dataset.spec.durability, p.durability) for p in parts])
  mass = np.concatenate([class_values(dataset.spec.mass, p.mass) for p in parts])
  return float(np.mean(oracle_agreement(full, durability, mass)['exact'])) >= SYNTHETIC_AGREEMENT


# ---------------------------------------------------------------------------------------------
# Struts and shares


def strut_agreement(full_images, strut_colors, strut_positions) -> np.ndarray:
  """(N,) bool: every strut pixel of each full-layout design equals its requested uint8 colour."""
  if not strut_positions:
    return np.ones(len(full_images), bool)
  rows, cols = np.asarray(strut_positions, np.int64).T
  return np.all(np.asarray(full_images)[:, rows, cols, :] == np.asarray(strut_colors), axis=(1, 2))


def share(values) -> Optional[float]:
  """The share of true values (their mean, a float); None when there are none."""
  values = np.asarray(values)
  return float(values.mean()) if values.size else None
