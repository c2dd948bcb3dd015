"""Tests of gan/losses.py: each loss against its closed form."""

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gan import losses
from gan.layout import DEFAULT_STRUT_POSITIONS, HYUNDAI_ACTIVE_COLUMNS, DesignLayout

SHAPE = (10, 14, 3)


def _softplus(x):
  return np.logaddexp(0.0, np.asarray(x, np.float64))


def _rng(seed=0):
  return np.random.default_rng(seed)


# --- BCE and Wasserstein ------------------------------------------------------------------------


@pytest.mark.parametrize('shape', [(7,), (7, 1)])
def test_bce_losses_equal_softplus_formulas(shape):
  rng = _rng(1)
  real = rng.normal(0, 3, shape).astype(np.float32)
  fake = rng.normal(0, 3, shape).astype(np.float32)
  expected_d = _softplus(-real).mean() + _softplus(fake).mean()
  np.testing.assert_allclose(losses.critic_loss_bce(real, fake), expected_d, rtol=1e-5)
  np.testing.assert_allclose(losses.generator_loss_bce(fake), _softplus(-fake).mean(), rtol=1e-5)


def test_bce_losses_are_stable_for_large_logits():
  big = jnp.array([80.0, -80.0], jnp.float32)
  np.testing.assert_allclose(losses.critic_loss_bce(big, -big), _softplus(-big).mean() * 2,
                             rtol=1e-5)
  assert np.isfinite(losses.generator_loss_bce(jnp.array([-1e4, 1e4])))


def test_critic_bce_is_minimised_by_separating_logits():
  real, fake = jnp.full((4,), 20.0), jnp.full((4,), -20.0)
  assert float(losses.critic_loss_bce(real, fake)) < 1e-7
  assert float(losses.critic_loss_bce(-real, -fake)) > 39.0
  np.testing.assert_allclose(losses.critic_loss_bce(jnp.zeros(4), jnp.zeros(4)), 2 * np.log(2),
                             rtol=1e-6)
  grad_real, grad_fake = jax.grad(losses.critic_loss_bce, argnums=(0, 1))(jnp.zeros(4),
                                                                         jnp.zeros(4))
  assert np.all(grad_real < 0) and np.all(grad_fake > 0)  # descent raises real, lowers fake
  assert float(losses.generator_loss_bce(jnp.full((4,), 20.0))) < 1e-7


def test_wasserstein_losses_equal_formulas():
  rng = _rng(2)
  real = rng.normal(0, 5, (9, 1)).astype(np.float32)
  fake = rng.normal(1, 5, (6, 1)).astype(np.float32)
  np.testing.assert_allclose(losses.critic_loss_wasserstein(real, fake), fake.mean() - real.mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(losses.generator_loss_wasserstein(fake), -fake.mean(), rtol=1e-5)
  np.testing.assert_allclose(losses.wasserstein_estimate(real, fake), real.mean() - fake.mean(),
                             rtol=1e-5)
  np.testing.assert_allclose(losses.wasserstein_estimate(real, fake),
                             -losses.critic_loss_wasserstein(real, fake), rtol=1e-6)


def test_losses_return_float32_scalars_under_jit():
  x = jnp.ones((3, 1), jnp.bfloat16)
  for fn in (losses.critic_loss_bce, losses.critic_loss_wasserstein, losses.wasserstein_estimate):
    out = jax.jit(fn)(x, -x)
    assert out.shape == () and out.dtype == jnp.float32
  for fn in (losses.generator_loss_bce, losses.generator_loss_wasserstein):
    out = jax.jit(fn)(x)
    assert out.shape == () and out.dtype == jnp.float32


# --- Gradient penalty ---------------------------------------------------------------------------


def _images(seed, batch=5, shape=SHAPE):
  rng = _rng(seed)
  real = rng.uniform(-1, 1, (batch,) + shape).astype(np.float32)
  fake = rng.uniform(-1, 1, (batch,) + shape).astype(np.float32)
  alpha = rng.uniform(0, 1, (batch,)).astype(np.float32)
  return real, fake, alpha


@pytest.mark.parametrize('norm', [0.0, 0.3, 1.0, 2.5])
def test_gradient_penalty_linear_critic_closed_form(norm):
  rng = _rng(3)
  direction = rng.normal(size=SHAPE)
  w = jnp.asarray(norm * direction / np.linalg.norm(direction), jnp.float32)
  real, fake, alpha = _images(4)
  penalty, norms = losses.gradient_penalty(lambda x: jnp.sum(w * x) + 0.7, real, fake, alpha)
  expected_norm = np.sqrt(norm**2 + losses.GRAD_NORM_EPS)
  assert norms.shape == (5,)
  np.testing.assert_allclose(norms, np.full(5, expected_norm), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(penalty, (expected_norm - 1.0)**2, rtol=1e-4, atol=1e-6)
  if norm == 1.0:
    assert float(penalty) < 1e-9


def test_gradient_penalty_uses_per_example_conditions():
  rng = _rng(5)
  w = jnp.asarray(rng.normal(size=SHAPE), jnp.float32)
  w_norm = float(jnp.linalg.norm(w))
  cond = jnp.array([0.5, -2.0, 0.0, 1.0, 3.0], jnp.float32)
  labels = jnp.array([0, 1, 2, 1, 0], jnp.int32)
  scale = jnp.array([1.0, 10.0, 100.0])

  def critic(x, c, label):
    return c * jnp.sum(w * x) * scale[label] + jnp.sum(c * c)  # c-only term: no x-gradient

  real, fake, alpha = _images(6)
  penalty, norms = losses.gradient_penalty(critic, real, fake, alpha, cond, labels)
  expected = np.abs(np.asarray(cond)) * w_norm * np.asarray(scale)[np.asarray(labels)]
  np.testing.assert_allclose(norms, expected, rtol=1e-5, atol=1e-4)
  np.testing.assert_allclose(penalty, np.mean((np.sqrt(expected**2 + 1e-10) - 1)**2), rtol=1e-4)


def test_gradient_penalty_is_eps_safe_for_zero_critic_gradient():
  real, fake, alpha = _images(7)

  def penalty_of(params):
    w, b = params
    return losses.gradient_penalty(lambda x: jnp.sum(w * x) + b, real, fake, alpha)[0]

  params = (jnp.zeros(SHAPE, jnp.float32), jnp.float32(3.0))
  penalty = penalty_of(params)
  np.testing.assert_allclose(penalty, 1.0, rtol=1e-4)  # (0 - 1)^2
  grads = jax.grad(penalty_of)(params)
  for g in jax.tree_util.tree_leaves(grads):
    assert np.all(np.isfinite(np.asarray(g)))

  # A constant critic: the input gradient is exactly zero everywhere.
  const_penalty, const_norms = losses.gradient_penalty(lambda x: jnp.float32(2.0), real, fake,
                                                       alpha)
  assert np.isfinite(float(const_penalty)) and np.all(np.isfinite(np.asarray(const_norms)))
  # And a naive sqrt(sum g^2) would give NaN: the test can fail.
  assert np.isnan(np.asarray(jax.grad(lambda v: jnp.sqrt(jnp.sum(v * v)))(jnp.zeros(3)))).any()


def test_gradient_penalty_interpolates_per_example():
  """alpha = 1 gives x_hat = real, alpha = 0 gives fake: seen through a quadratic critic."""
  real, fake, _ = _images(8, batch=4)
  critic = lambda x: 0.5 * jnp.sum(x * x)  # gradient = x_hat, norm = ||x_hat||
  for alpha, target in ((np.ones(4), real), (np.zeros(4), fake)):
    _, norms = losses.gradient_penalty(critic, real, fake, jnp.asarray(alpha, jnp.float32))
    np.testing.assert_allclose(norms, np.linalg.norm(target.reshape(4, -1), axis=1), rtol=1e-5)
  alpha = np.array([1.0, 0.0, 0.25, 0.5], np.float32)
  _, norms = losses.gradient_penalty(critic, real, fake, alpha)
  x_hat = alpha[:, None, None, None] * real + (1 - alpha[:, None, None, None]) * fake
  np.testing.assert_allclose(norms, np.linalg.norm(x_hat.reshape(4, -1), axis=1), rtol=1e-5)


def test_gradient_penalty_is_per_example_not_grad_of_batch_sum():
  """With cross-example coupling (batch mean), the batch-sum gradient differs from per-example."""
  real, fake, alpha = _images(9, batch=4)
  batch_mean = jnp.mean(jnp.asarray(real), axis=0)
  w = jnp.asarray(_rng(10).normal(size=SHAPE), jnp.float32)
  # Per-example critic: the coupling term is closed over (fixed), so the gradient is w.
  _, norms = losses.gradient_penalty(lambda x: jnp.sum(w * (x - batch_mean)), real, fake, alpha)
  np.testing.assert_allclose(norms, np.full(4, float(jnp.linalg.norm(w))), rtol=1e-5)
  # Gradient of the batch sum of a batch-coupled critic: differs from w.
  batched = lambda xs: jnp.sum(jax.vmap(lambda x: jnp.sum(w * x * jnp.sum(xs)))(xs))
  coupled = jax.grad(batched)(jnp.asarray(real))
  assert not np.allclose(np.linalg.norm(coupled.reshape(4, -1), axis=1), np.asarray(norms))


def test_gradient_penalty_jits_and_casts_to_float32():
  real, fake, alpha = _images(11, batch=3)
  w = jnp.ones(SHAPE, jnp.bfloat16)
  fn = jax.jit(lambda r, f, a: losses.gradient_penalty(lambda x: jnp.sum(w * x), r, f, a))
  penalty, norms = fn(real.astype(jnp.bfloat16), fake.astype(jnp.bfloat16), alpha)
  assert penalty.dtype == jnp.float32 and norms.dtype == jnp.float32
  np.testing.assert_allclose(norms, np.sqrt(np.prod(SHAPE)), rtol=1e-3)


# --- Strut penalty ------------------------------------------------------------------------------


def _mask():
  layout = DesignLayout.from_datashape('dropempty', 10, 30, HYUNDAI_ACTIVE_COLUMNS,
                                       DEFAULT_STRUT_POSITIONS)
  mask = layout.strut_mask()
  assert mask.shape == SHAPE and mask.sum() == 6
  return mask


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(seed=st.integers(0, 2**32 - 1), batch=st.integers(1, 4),
                  entry=st.integers(0, 5), delta=st.floats(1e-2, 2.0),
                  per_example_mask=st.booleans())
def test_strut_penalty_zero_iff_strut_pixels_match(seed, batch, entry, delta, per_example_mask):
  rng = _rng(seed)
  mask = _mask()
  full_mask = np.broadcast_to(mask, (batch,) + SHAPE).copy()
  use_mask = full_mask if per_example_mask else mask
  fixed = rng.uniform(-1, 1, (batch,) + SHAPE).astype(np.float32)
  images = rng.uniform(-1, 1, (batch,) + SHAPE).astype(np.float32)
  images[full_mask > 0] = fixed[full_mask > 0]
  assert float(losses.strut_penalty(images, fixed, use_mask)) == 0.0
  assert float(losses.strut_max_error(images, fixed, use_mask)) == 0.0

  # Perturbing any non-strut pixel never changes it.
  noisy = images + (1 - full_mask) * rng.normal(0, 5, images.shape).astype(np.float32)
  assert float(losses.strut_penalty(noisy, fixed, use_mask)) == 0.0
  assert float(losses.strut_max_error(noisy, fixed, use_mask)) == 0.0

  # Perturbing one strut entry makes it positive, by exactly delta^2 / (B * 6).
  b, idx = rng.integers(batch), np.argwhere(mask > 0)[entry]
  bad = noisy.copy()
  bad[(b,) + tuple(idx)] += delta
  penalty = float(losses.strut_penalty(bad, fixed, use_mask))
  assert penalty > 0
  np.testing.assert_allclose(penalty, delta**2 / (batch * 6), rtol=1e-3)
  np.testing.assert_allclose(losses.strut_max_error(bad, fixed, use_mask), delta, rtol=1e-4)


def test_strut_penalty_independent_of_batch_size_and_fixed_broadcast():
  rng = _rng(12)
  mask = _mask()
  image = rng.uniform(-1, 1, (1,) + SHAPE).astype(np.float32)
  fixed = rng.uniform(-1, 1, SHAPE).astype(np.float32)
  single = float(losses.strut_penalty(image, fixed, mask))
  expected = np.sum(mask * (image[0] - fixed)**2) / 6
  np.testing.assert_allclose(single, expected, rtol=1e-5)
  for batch in (2, 7):
    images = np.repeat(image, batch, axis=0)
    np.testing.assert_allclose(losses.strut_penalty(images, fixed, mask), single, rtol=1e-5)
    np.testing.assert_allclose(
        losses.strut_penalty(images, np.broadcast_to(fixed, images.shape), mask), single,
        rtol=1e-5)
  # Also independent of the image size: pad with background.
  padded = np.pad(image, ((0, 0), (0, 3), (0, 5), (0, 0)), constant_values=-1)
  pad_fixed = np.pad(fixed, ((0, 3), (0, 5), (0, 0)))
  pad_mask = np.pad(mask, ((0, 3), (0, 5), (0, 0)))
  np.testing.assert_allclose(losses.strut_penalty(padded, pad_fixed, pad_mask), single, rtol=1e-5)


def test_strut_penalty_empty_mask_and_jit():
  images = jnp.ones((2,) + SHAPE)
  assert float(losses.strut_penalty(images, -images, jnp.zeros(SHAPE))) == 0.0
  assert float(losses.strut_max_error(images, -images, jnp.zeros(SHAPE))) == 0.0
  out = jax.jit(losses.strut_penalty)(images, -images, _mask())
  np.testing.assert_allclose(out, 4.0)
  grad = jax.grad(losses.strut_penalty)(images, -images, _mask())
  assert np.all(np.asarray(grad)[:, _mask() == 0] == 0)


# --- InfoGAN ------------------------------------------------------------------------------------


def test_info_loss_targets_the_given_codes():
  dur_codes = jnp.array([0, 2, 1, 3, 2])
  mass_codes = jnp.array([1, 0, 1, 2, 0])
  dur_logits = 30.0 * jax.nn.one_hot(dur_codes, 4)
  mass_logits = 30.0 * jax.nn.one_hot(mass_codes, 3)
  assert float(losses.info_loss(dur_logits, mass_logits, dur_codes, mass_codes)) < 1e-10
  wrong_dur = jnp.roll(dur_codes, 1)   # every code changed
  wrong_mass = jnp.roll(mass_codes, 1)  # codes [0, 1, 0, 1, 2]: every one changed
  assert np.all(np.asarray(wrong_dur) != np.asarray(dur_codes))
  assert np.all(np.asarray(wrong_mass) != np.asarray(mass_codes))
  assert float(losses.info_loss(dur_logits, mass_logits, wrong_dur, wrong_mass)) > 50.0
  assert float(losses.info_loss(dur_logits, mass_logits, wrong_dur, mass_codes)) > 25.0


def test_info_loss_equals_manual_cross_entropy():
  rng = _rng(13)
  dur_logits = rng.normal(0, 2, (8, 5)).astype(np.float32)
  mass_logits = rng.normal(0, 2, (8, 3)).astype(np.float32)
  dur_codes = rng.integers(0, 5, 8)
  mass_codes = rng.integers(0, 3, 8)

  def ce(logits, codes):
    logits = logits.astype(np.float64)
    log_z = np.log(np.exp(logits).sum(axis=1))
    return np.mean(log_z - logits[np.arange(len(codes)), codes])

  expected = ce(dur_logits, dur_codes) + ce(mass_logits, mass_codes)
  np.testing.assert_allclose(losses.info_loss(dur_logits, mass_logits, dur_codes, mass_codes),
                             expected, rtol=1e-5)
  # Uniform logits: log K per head.
  np.testing.assert_allclose(
      losses.info_loss(np.zeros((8, 5)), np.zeros((8, 3)), dur_codes, mass_codes),
      np.log(5) + np.log(3), rtol=1e-6)


# --- Weight clipping ----------------------------------------------------------------------------


class _Critic(nnx.Module):

  def __init__(self, rngs):
    self.embed = nnx.Embed(4, 8, rngs=rngs)
    self.linear = nnx.Linear(6, 8, rngs=rngs,
                             kernel_init=nnx.initializers.normal(1.0),
                             bias_init=nnx.initializers.constant(0.5))
    self.norm = nnx.LayerNorm(8, rngs=rngs)
    self.out = nnx.Linear(8, 1, rngs=rngs, kernel_init=nnx.initializers.normal(1.0))

  def __call__(self, x, label):
    return self.out(self.norm(self.linear(x) + self.embed(label)))


def _check_clipped(before, after, clip):
  flat_before = jax.tree_util.tree_flatten_with_path(before)[0]
  flat_after = jax.tree_util.tree_flatten_with_path(after)[0]
  assert [p for p, _ in flat_before] == [p for p, _ in flat_after]
  n_clipped = 0
  for (path, old), (_, new) in zip(flat_before, flat_after):
    old, new = np.asarray(old), np.asarray(new)
    assert old.shape == new.shape
    if old.ndim >= 2:
      assert np.all(np.abs(new) <= clip), path
      np.testing.assert_array_equal(new, np.clip(old, -clip, clip))
      n_clipped += int(np.any(np.abs(old) > clip))
    else:
      np.testing.assert_array_equal(new, old)
  assert n_clipped > 0  # the test data actually needed clipping


def test_clip_weights_nnx_state():
  model = _Critic(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  clipped = losses.clip_weights(params, 0.01, losses.is_weight_matrix)
  assert type(clipped) is type(params)
  _check_clipped(params, clipped, 0.01)
  # Unchanged: LayerNorm scale 1.0, biases 0.5.
  nnx.update(model, clipped)
  np.testing.assert_array_equal(model.norm.scale[...], np.ones(8))
  np.testing.assert_array_equal(model.linear.bias[...], np.full(8, 0.5))
  assert float(jnp.max(jnp.abs(model.linear.kernel[...]))) <= 0.01
  assert float(jnp.max(jnp.abs(model.embed.embedding[...]))) <= 0.01
  # The clipped model still runs; clipping under jit gives the same state.
  merged = nnx.merge(graphdef, clipped)
  assert merged(jnp.ones((2, 6)), jnp.array([0, 3])).shape == (2, 1)
  jitted = jax.jit(lambda p: losses.clip_weights(p, 0.01))(params)
  for a, b in zip(jax.tree_util.tree_leaves(jitted), jax.tree_util.tree_leaves(clipped)):
    np.testing.assert_array_equal(a, b)


def test_clip_weights_plain_dict_and_custom_predicate():
  rng = _rng(14)
  params = {
      'conv': {'kernel': rng.normal(0, 1, (3, 3, 3, 4)).astype(np.float32),
               'bias': rng.normal(0, 1, (4,)).astype(np.float32)},
      'dense': {'kernel': rng.normal(0, 1, (5, 2)).astype(np.float32)},
      'norm': {'scale': np.ones(2, np.float32), 'offset': np.zeros(2, np.float32)},
      'temperature': np.float32(3.0),
  }
  clipped = losses.clip_weights(params, 0.1)  # default predicate: is_weight_matrix
  _check_clipped(params, clipped, 0.1)
  assert float(clipped['temperature']) == 3.0

  # A custom predicate selects by path: clip everything except 'dense'.
  not_dense = lambda path, leaf: 'dense' not in jax.tree_util.keystr(path)
  custom = losses.clip_weights(params, 0.1, not_dense)
  np.testing.assert_array_equal(custom['dense']['kernel'], params['dense']['kernel'])
  assert np.all(np.abs(custom['conv']['bias']) <= 0.1)
  assert np.all(custom['norm']['scale'] == 0.1)


def test_clip_fraction_counts_the_selected_entries_at_the_bound():
  """Hand count: conv kernel (36 entries) and dense kernel (10) are the weight matrices; biases,
  norm scales and scalars are not counted, whatever their values."""
  params = {
      'conv': {'kernel': np.zeros((3, 3, 1, 4), np.float32),
               'bias': np.full((4,), 5.0, np.float32)},
      'dense': {'kernel': np.zeros((5, 2), np.float32)},
      'norm': {'scale': np.full(2, 0.1, np.float32)},
  }
  params['conv']['kernel'].reshape(-1)[:9] = [0.1, -0.1, 0.1, 0.3, -7.0, 0.0999, 0.05, 0, -0.0999]
  params['dense']['kernel'][0] = [-0.1, 0.1]
  clipped = losses.clip_weights(params, 0.1)
  # At the bound after clipping: 0.1, -0.1, 0.1, 0.3 -> 0.1, -7 -> -0.1, and the dense pair.
  np.testing.assert_allclose(losses.clip_fraction(clipped, 0.1), 7 / 46, rtol=1e-6)
  assert float(losses.clip_fraction(params, 0.1, lambda path, leaf: False)) == 0.0
  jitted = jax.jit(lambda p: losses.clip_fraction(p, 0.1))(clipped)
  assert jitted.dtype == jnp.float32
  np.testing.assert_allclose(jitted, 7 / 46, rtol=1e-6)


def test_is_weight_matrix():
  assert losses.is_weight_matrix((), np.zeros((3, 4)))
  assert losses.is_weight_matrix((), np.zeros((3, 3, 3, 8)))
  assert not losses.is_weight_matrix((), np.zeros(4))
  assert not losses.is_weight_matrix((), np.float32(1.0))
