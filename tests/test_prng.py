"""gan.prng: JAX's Threefry-2x32 stream, bit for bit, from a hash XLA can fuse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from gan import prng

shapes = st.lists(st.integers(0, 9), min_size=0, max_size=3).map(tuple)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=shapes, bit_width=st.sampled_from([8, 16, 32]))
def test_bits_equal_jax_default_threefry_bits(seed, shape, bit_width):
  key = jax.random.PRNGKey(seed)
  dtype = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}[bit_width]
  np.testing.assert_array_equal(jax.random.bits(prng.fused_key(key), shape, dtype),
                                jax.random.bits(key, shape, dtype))


def test_64_bit_draws_are_jaxs_own():
  """64-bit bits (jax_enable_x64: uint64, or float64 dropout masks) go to JAX's own Threefry,
  which the unrolled hash does not cover: the same bits, not a KeyError."""
  key = jax.random.PRNGKey(3)
  with jax.enable_x64(True):
    np.testing.assert_array_equal(jax.random.bits(prng.fused_key(key), (4, 3), jnp.uint64),
                                  jax.random.bits(key, (4, 3), jnp.uint64))
    mask = jax.random.bernoulli(prng.fused_key(key), 0.5, (6,))
    np.testing.assert_array_equal(mask, jax.random.bernoulli(jax.random.wrap_key_data(key), 0.5,
                                                             (6,)))


def test_hash_matches_the_random123_known_answer():
  """Threefry2x32_20 known-answer vectors of Random123 (kat_vectors: threefry2x32_20)."""
  u32 = lambda *v: [jnp.uint32(x) for x in v]
  assert tuple(map(int, prng.threefry2x32(*u32(0, 0, 0, 0)))) == (0x6b200159, 0x99ba4efe)
  ones = u32(*[0xffffffff] * 4)
  assert tuple(map(int, prng.threefry2x32(*ones))) == (0x1cb996fc, 0xbb002be7)
  pi = u32(0x13198a2e, 0x03707344, 0x243f6a88, 0x85a308d3)
  assert tuple(map(int, prng.threefry2x32(*pi))) == (0xc4923a9c, 0x483df7a0)


def test_masks_splits_and_fold_ins_follow_jax_under_jit_and_vmap():
  """What nnx.Dropout does with the key (fold_in, bernoulli), jitted and vmapped over a sweep's
  model axis, gives JAX's own masks; so does split."""
  keys = jax.random.split(jax.random.PRNGKey(0), 3)

  def masks(make_key, key):
    return jax.random.bernoulli(jax.random.fold_in(make_key(key), 5), 0.7, (64, 33))

  fused = jax.jit(jax.vmap(lambda k: masks(prng.fused_key, k)))(keys)
  reference = jax.vmap(lambda k: masks(jax.random.wrap_key_data, k))(keys)
  np.testing.assert_array_equal(fused, reference)
  assert 0.65 < float(fused.mean()) < 0.75
  assert not np.array_equal(fused[0], fused[1])
  split = jax.random.split(prng.fused_key(keys[0]), 4)
  np.testing.assert_array_equal(jax.random.key_data(split),
                                jax.random.key_data(jax.random.split(keys[0], 4)))


def test_typed_keys_and_keys_of_other_prngs_are_accepted():
  key = jax.random.PRNGKey(7)
  typed = jax.random.wrap_key_data(key)
  np.testing.assert_array_equal(jax.random.bits(prng.fused_key(typed), (5,)),
                                jax.random.bits(key, (5,)))
  rbg = jax.random.key(7, impl='rbg')
  bits = jax.random.bits(prng.fused_key(rbg), (5,))
  assert bits.shape == (5,) and str(jax.random.key_impl(prng.fused_key(rbg))) == str(
      jax.random.key_impl(prng.fused_key(key)))



def test_a_key_of_another_prng_gives_a_threefry_key_of_all_its_words():
  """An rbg key is 4 words (a seed's repeats the seed's Threefry key): the fused key is drawn
  from the whole key, so rbg keys that share either half still draw other dropout masks."""
  words = ([0, 7, 0, 7], [0, 7, 0, 8], [0, 8, 0, 7])
  keys = [jax.random.wrap_key_data(jnp.array(w, jnp.uint32), impl='rbg') for w in words]
  draws = [np.asarray(jax.random.bits(prng.fused_key(key), (16,))) for key in keys]
  for i in range(len(draws)):
    for j in range(i):
      assert not np.array_equal(draws[i], draws[j]), (words[i], words[j])

def test_one_fused_kernel_on_cpu():
  """The reason for the module: no while loop in the compiled mask (jax's CPU lowering has one)."""
  def mask(key):
    return jax.random.bernoulli(key, 0.7, (256, 128))

  raw = jax.random.PRNGKey(1)
  fused_hlo = jax.jit(lambda k: mask(prng.fused_key(k))).lower(raw).compile().as_text()
  jax_hlo = jax.jit(lambda k: mask(jax.random.wrap_key_data(k))).lower(raw).compile().as_text()
  assert ' while(' not in fused_hlo
  assert ' while(' in jax_hlo  # if jax ever unrolls on CPU too, this module can go


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(-2**63, 2**63 - 1))
def test_a_seed_key_is_prngkeys_key_of_the_whole_64_bit_seed(seed):
  """Without jax_enable_x64, PRNGKey keeps a seed's low 32 bits (2**32 would be seed 0); seed_key
  is its key with x64 on, and for 0 .. 2**32 - 1 the key it always gave (runs stay as they were)."""
  with jax.enable_x64(True):
    np.testing.assert_array_equal(prng.seed_key(seed), jax.random.PRNGKey(seed))
  if 0 <= seed < 2**32:
    np.testing.assert_array_equal(prng.seed_key(seed), jax.random.PRNGKey(seed))
  assert prng.seed_key(seed).dtype == jnp.uint32 and prng.seed_key(seed).shape == (2,)


def test_seeds_that_share_their_low_32_bits_have_other_keys():
  for seed, other in ((0, 2**32), (-1, 2**32 - 1), (5, -2**63 + 5)):
    assert not np.array_equal(prng.seed_key(seed), prng.seed_key(other))


@pytest.mark.parametrize('impl', ['rbg', 'unsafe_rbg'])
def test_a_seed_key_is_the_default_prngs_key(impl):
  """Under another jax_default_prng_impl a seed's key is that PRNG's (training and inference draw
  with it): a Threefry key was refused there as the wrong shape."""
  previous = jax.config.jax_default_prng_impl
  jax.config.update('jax_default_prng_impl', impl)
  try:
    for seed in (0, 7, 2**32 - 1):
      np.testing.assert_array_equal(prng.seed_key(seed), jax.random.PRNGKey(seed))
    assert not np.array_equal(prng.seed_key(2**32), prng.seed_key(0))
    assert jax.random.normal(prng.seed_key(2**40), (3,)).shape == (3,)
  finally:
    jax.config.update('jax_default_prng_impl', previous)


@pytest.mark.parametrize('seed', [0, 7, 2**32, 2**63 - 1])
def test_noise_is_one_normal_draw_of_the_seeds_key(seed):
  """The designs drawn from a seed (grids, evaluations, output BMPs, infer.py) stay those of
  jax.random.normal(seed_key(seed), (n, zdim)), which they were drawn with before `noise`: the
  same seed gives the same designs as before, a seed 2**32 apart other ones."""
  z = prng.noise(seed, 5, 3)
  assert z.shape == (5, 3) and z.dtype == jnp.float32
  np.testing.assert_array_equal(z, jax.random.normal(prng.seed_key(seed), (5, 3)))
  if seed < 2**32:
    np.testing.assert_array_equal(z, jax.random.normal(jax.random.PRNGKey(seed), (5, 3)))
