"""JAX's default Threefry-2x32 random bits, lowered as one fused kernel on every backend.

Dropout masks are by far the most random bits an update draws (the original preset: one mask per
hidden unit of both networks, batch 512, in every critic step). JAX lowers its Threefry-2x32 hash
unrolled on GPU but as a rolled `fori_loop` on CPU (smaller programs, but a while loop of small
fusions and copies per draw: 2.2 ms for a 512 x 1024 Bernoulli mask). `FUSED_THREEFRY` is the
same PRNG with the hash written out, which XLA fuses into the mask's consumer (0.5 ms); Threefry-
4x32, which jax also lowers fused, spends a whole 128-bit block on every 32-bit word (1.1 ms).

The bits are identical to `jax.random.bits` of the same key data under JAX's default PRNG (with
`jax_threefry_partitionable`, the default): element i of an n-element draw is

  (y1, y2) = Threefry2x32_20(k1, k2; x1 = 0, x2 = i),  bits_i = y1 ^ y2   (32-bit; the low 8 or
                                                                            16 bits for 8 / 16)

and seeding, splitting and folding in are JAX's own, so `wrap_key_data(key_data(k), impl=...)`
names the same stream. Threefry2x32_20 (Salmon et al., "Parallel random numbers: as easy as 1,
2, 3", 2011): key schedule ks = (k1, k2, k1 ^ k2 ^ 0x1BD11BDA); x += (ks0, ks1); five times:
four rounds {x1 += x2; x2 = rotl(x2, r) ^ x1} with r = (13, 15, 26, 6) or (17, 29, 16, 24)
alternately, then x += (ks[(j + 1) % 3], ks[(j + 2) % 3] + j + 1) for j = 0..4.
"""

import math

import jax
import jax.extend.random as jex_random
import jax.numpy as jnp
import numpy as np
from jax import lax

_ROTATIONS = (np.array([13, 15, 26, 6], np.uint32), np.array([17, 29, 16, 24], np.uint32))
_KS_PARITY = np.uint32(0x1BD11BDA)
_BITS_DTYPES = {8: jnp.uint8, 16: jnp.uint16, 32: jnp.uint32}


def _rotate_left(x, d):
  return (x << d) | (x >> (np.uint32(32) - d))


def threefry2x32(k1, k2, x1, x2):
  """The Threefry-2x32 hash with 20 rounds, unrolled; uint32 arrays broadcast elementwise."""
  ks = (k1, k2, k1 ^ k2 ^ _KS_PARITY)
  x1, x2 = x1 + ks[0], x2 + ks[1]
  for j in range(5):
    for r in _ROTATIONS[j % 2]:
      x1 = x1 + x2
      x2 = x1 ^ _rotate_left(x2, r)
    x1 = x1 + ks[(j + 1) % 3]
    x2 = x2 + ks[(j + 2) % 3] + np.uint32(j + 1)
  return x1, x2


def _random_bits(key_data, bit_width: int, shape):
  """`bit_width`-bit random bits of `shape` from raw (2,) uint32 key data (see the module doc)."""
  size = math.prod(shape)
  if bit_width not in _BITS_DTYPES or size >= 2**32:  # 64-bit or huge draws: JAX's own path
    return _JAX_THREEFRY.random_bits(key_data, bit_width, shape)
  counter = lax.iota(jnp.uint32, size).reshape(shape)
  y1, y2 = threefry2x32(key_data[0], key_data[1], jnp.zeros_like(counter), counter)
  return (y1 ^ y2).astype(_BITS_DTYPES[bit_width])


_JAX_THREEFRY = jex_random.threefry_prng_impl

FUSED_THREEFRY = jex_random.define_prng_impl(
    key_shape=(2,), seed=_JAX_THREEFRY.seed, split=_JAX_THREEFRY.split,
    random_bits=_random_bits, fold_in=_JAX_THREEFRY.fold_in,
    name='threefry2x32_fused', tag='fryf')


def fused_key(key):
  """The same Threefry-2x32 stream as `key` (raw uint32[2] or typed), drawn by `FUSED_THREEFRY`."""
  data = jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key
  if data.shape != (2,):  # a key of another PRNG (jax_default_prng_impl): a Threefry key from it
    data = jax.random.bits(key, (2,), jnp.uint32)
  return jax.random.wrap_key_data(data, impl=FUSED_THREEFRY)


def seed_key(seed: int) -> jax.Array:
  """The raw PRNG key (uint32[2]) of a 64-bit seed (-2**63 .. 2**63 - 1), one key for each:

    key = (bits >> 32, bits & 0xFFFFFFFF),   bits = seed mod 2**64   (two's complement)

  which is `jax.random.PRNGKey(seed)` under jax_enable_x64. Without it (the default) PRNGKey keeps
  only the low 32 bits, so seed 2**32 would be seed 0 (and -1 would be 2**32 - 1). A seed in
  0 .. 2**32 - 1 gets exactly PRNGKey's key, so those seeds' runs and designs are unchanged.

  Under another jax_default_prng_impl (rbg: uint32[4]) the key is that PRNG's, as PRNGKey's was:
  a Threefry key there was refused as the wrong shape."""
  if jax.config.jax_default_prng_impl != 'threefry2x32':
    with jax.enable_x64(True):
      return jax.random.PRNGKey(int(seed))
  bits = unsigned_seed(seed)
  return jnp.asarray(np.array([bits >> 32, bits & 0xFFFFFFFF], np.uint32))


def unsigned_seed(seed: int) -> int:
  """A 64-bit seed (-2**63 .. 2**63 - 1) as the unsigned one of the same bits, seed mod 2**64
  (-1 -> 2**64 - 1), one for each: for `seed_key`, and for numpy, which takes no negative seed."""
  return int(seed) % 2**64


def noise(seed: int, n: int, zdim: int) -> jax.Array:
  """The generator's noise z ~ N(0, I), (n, zdim) float32, of designs drawn from a seed rather than
  in a train step (the TensorBoard grid, evaluations, output BMPs, infer.py): one draw for the n
  designs, so an evaluation during training and `python -m gan.evaluate` of the same checkpoint
  generate the same designs, however infer.py chunks them."""
  return jax.random.normal(seed_key(seed), (n, zdim))
