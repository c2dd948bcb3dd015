"""The self-attention layer against jax.nn.dot_product_attention, and which pixels axial heads
see."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gan import networks

B, H, W, E, N = 2, 3, 5, 8, 4


def _layer(grid):
  return networks.SelfAttention(E, N, nnx.Rngs(0), grid=grid)


def _tokens(seed=1):
  return jax.random.normal(jax.random.key(seed), (B, H * W, E))


def _reference(layer, x, axial: bool):
  """The layer's output via jax.nn.dot_product_attention, per head group."""
  h = E // N
  q, k, v = jnp.split(layer.qkv(x).reshape(B, H * W, 3 * N, h), 3, axis=2)   # (B, S, N, h)
  if not axial:
    o = jax.nn.dot_product_attention(q, k, v)
    return layer.out(o.reshape(B, H * W, E))
  grid = lambda a: a.reshape(B, H, W, N, h)
  q, k, v = grid(q), grid(k), grid(v)
  rows = lambda a: a[..., :N // 2, :].reshape(B * H, W, N // 2, h)         # sequences = rows
  cols = lambda a: a[..., N // 2:, :].transpose(0, 2, 1, 3, 4).reshape(B * W, H, N - N // 2, h)
  o_rows = jax.nn.dot_product_attention(rows(q), rows(k), rows(v)).reshape(B, H, W, N // 2, h)
  o_cols = jax.nn.dot_product_attention(cols(q), cols(k), cols(v))
  o_cols = o_cols.reshape(B, W, H, N - N // 2, h).transpose(0, 2, 1, 3, 4)
  return layer.out(jnp.concatenate([o_rows, o_cols], axis=3).reshape(B, H * W, E))


@pytest.mark.parametrize('axial', [False, True], ids=['full', 'axial'])
def test_attention_matches_dot_product_attention(axial):
  layer = _layer((H, W) if axial else None)
  x = _tokens()
  np.testing.assert_allclose(layer(x), _reference(layer, x, axial), atol=1e-5, rtol=1e-5)


def _dependence(layer):
  """(S, S) bool: does output token t depend on input token s (any example, any channel)?"""
  jac = jax.jacobian(lambda x: layer(x[None])[0])(_tokens()[0])             # (S, E, S, E)
  return np.asarray(jnp.abs(jac).sum(axis=(1, 3)) > 0)


def test_axial_heads_see_only_the_pixels_row_and_column():
  seen = _dependence(_layer((H, W)))
  for t, s in itertools.product(range(H * W), repeat=2):
    (ty, tx), (sy, sx) = divmod(t, W), divmod(s, W)
    assert seen[t, s] == (ty == sy or tx == sx), (t, s)


def test_full_attention_sees_every_pixel():
  assert _dependence(_layer(None)).all()


def test_two_axial_blocks_connect_every_pair_of_pixels():
  blocks = [networks.TransformerBlock(E, N, 2, 0, nnx.Rngs(k), grid=(H, W)) for k in range(2)]
  jac = jax.jacobian(lambda x: blocks[1](blocks[0](x[None]))[0])(_tokens()[0])
  assert (jnp.abs(jac).sum(axis=(1, 3)) > 0).all()
