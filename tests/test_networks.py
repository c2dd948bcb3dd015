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
  e, n = x.shape[-1], layer.num_heads
  h = e // n
  q, k, v = jnp.split(layer.qkv(x).reshape(B, H * W, 3 * n, h), 3, axis=2)   # (B, S, N, h)
  if not axial:
    o = jax.nn.dot_product_attention(q, k, v)
    return layer.out(o.reshape(B, H * W, e))
  grid = lambda a: a.reshape(B, H, W, n, h)
  q, k, v = grid(q), grid(k), grid(v)
  rows = lambda a: a[..., :n // 2, :].reshape(B * H, W, n // 2, h)         # sequences = rows
  cols = lambda a: a[..., n // 2:, :].transpose(0, 2, 1, 3, 4).reshape(B * W, H, n - n // 2, h)
  o_rows = jax.nn.dot_product_attention(rows(q), rows(k), rows(v)).reshape(B, H, W, n // 2, h)
  o_cols = jax.nn.dot_product_attention(cols(q), cols(k), cols(v))
  o_cols = o_cols.reshape(B, W, H, n - n // 2, h).transpose(0, 2, 1, 3, 4)
  return layer.out(jnp.concatenate([o_rows, o_cols], axis=3).reshape(B, H * W, e))


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


def _randomised(module, seed=7):
  """`module` with every parameter drawn at random (N(0, 0.5^2)): zero-initialised FiLM and class
  embeddings and unit LayerNorm scales would otherwise hide the terms they enter."""
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  flat, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed), len(flat))
  flat = [0.5 * jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, flat)]
  return nnx.merge(graphdef, jax.tree.unflatten(treedef, flat), rest)


def _layer_norm(layer, y):
  """nnx.LayerNorm written out: (y - mean) / sqrt(var + eps) [* scale + bias]."""
  y = np.asarray(y, np.float64)
  out = (y - y.mean(-1, keepdims=True)) / np.sqrt(y.var(-1, keepdims=True) + layer.epsilon)
  if layer.scale is not None:
    out = out * np.asarray(layer.scale[...]) + np.asarray(layer.bias[...])
  return out


def _gelu(y):
  """jax.nn.gelu's default tanh approximation."""
  return 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y ** 3)))


def _dense(layer, y):
  return np.asarray(y, np.float64) @ np.asarray(layer.kernel[...]) + np.asarray(layer.bias[...])


@pytest.mark.parametrize('cond_dim', [0, 5], ids=['plain', 'film'])
def test_transformer_block_is_a_pre_layernorm_residual_block(cond_dim):
  """x1 = x + MHA(m1(LN1(x))), y = x1 + MLP(m2(LN2(x1))), MLP = W_out gelu(W_in .), with the
  FiLM modulation m_i(u) = (1 + s_i(c)) u + b_i(c) (identity without a condition)."""
  block = _randomised(networks.TransformerBlock(E, N, 2, cond_dim, nnx.Rngs(0), grid=(H, W)))
  x = np.asarray(_tokens(), np.float64)
  cond = np.asarray(jax.random.normal(jax.random.key(2), (B, cond_dim)), np.float64)
  s1 = b1 = s2 = b2 = 0.0
  if cond_dim:
    s1, b1, s2, b2 = np.split(_dense(block.film, cond)[:, None, :], 4, axis=-1)
  attn = lambda u: np.asarray(block.attn(jnp.asarray(u, jnp.float32)), np.float64)
  x1 = x + attn(_layer_norm(block.ln1, x) * (1 + s1) + b1)
  mlp_in = (_layer_norm(block.ln2, x1) * (1 + s2) + b2)
  expected = x1 + _dense(block.mlp_out, _gelu(_dense(block.mlp_in, mlp_in)))
  got = block(jnp.asarray(x, jnp.float32), jnp.asarray(cond, jnp.float32) if cond_dim else None)
  np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_axial_attention_gives_the_odd_head_to_the_columns():
  """N = 3: heads 0 along the row, heads 1 and 2 along the column (the class docstring)."""
  n, e = 3, 6
  layer = networks.SelfAttention(e, n, nnx.Rngs(0), grid=(H, W))
  x = jax.random.normal(jax.random.key(1), (B, H * W, e))
  np.testing.assert_allclose(layer(x), _reference(layer, x, True), atol=1e-5, rtol=1e-5)


def _leaky(y):
  return np.where(y > 0, y, 0.2 * y)


def test_dense_block_is_dense_layernorm_leaky_relu():
  block = _randomised(networks.DenseBlock(6, 5, 'layer', 0.0, nnx.Rngs(0)))
  x = np.asarray(jax.random.normal(jax.random.key(3), (B, 6)), np.float64)
  expected = _leaky(_layer_norm(block.norm, _dense(block.dense, x)))
  got = block(jnp.asarray(x, jnp.float32), train=True, rngs=None)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def _critic(body, conditional=True):
  return _randomised(networks.Critic(body, num_durability=3, num_mass=4, conditional=conditional,
                                     infogan=False, class_head_hidden=8, rngs=nnx.Rngs(0)))


def test_critic_score_is_the_projection_discriminators():
  """score = w . f + b + <embed_d(d), f> + <embed_m(m), f> (the module docstring), per example."""
  body = networks.MLPBody(image_shape=(H, W, 3), hidden_dims=(8,), norm='layer', dropout=0.0,
                          conditional=True, mask_input=True, rngs=nnx.Rngs(1))
  critic = _critic(body)
  f = np.asarray(jax.random.normal(jax.random.key(4), (3, 8)), np.float64)
  d, m = np.array([0, 2, 1]), np.array([3, 0, 1])
  emb_d = np.asarray(critic.durability_embed.embedding[...])[d]
  emb_m = np.asarray(critic.mass_embed.embedding[...])[m]
  expected = _dense(critic.head, f)[:, 0] + np.sum(f * (emb_d + emb_m), axis=-1)
  np.testing.assert_allclose(critic.score(jnp.asarray(f, jnp.float32), d, m), expected,
                             atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('features', [0, 5], ids=['mean', 'dense'])
def test_attention_body_reads_out_the_normalised_tokens(features):
  """t_s = LN(blocks(position_s + W_in [x_s, fixed_s, mask_s])); the features are
  LeakyReLU(W_f [t_1, ..., t_S]) (`features` of them), or mean_s t_s with features=0."""
  body = _randomised(networks.AttentionBody(image_shape=(H, W, 3), embed_dim=E, num_heads=N,
                                            num_layers=1, mlp_ratio=2, conditional=True,
                                            mask_input=True, rngs=nnx.Rngs(0), axial=True,
                                            features=features))
  keys = jax.random.split(jax.random.key(5), 3)
  x = jax.random.uniform(keys[0], (B, H, W, 3), minval=-1, maxval=1)
  fixed = jax.random.uniform(keys[1], (B, H, W, 3), minval=-1, maxval=1)
  mask = (jax.random.uniform(keys[2], (H, W, 1)) > 0.7).astype(jnp.float32) * jnp.ones(3)
  pixels = jnp.concatenate([x, fixed, jnp.broadcast_to(mask[..., :1], (B, H, W, 1))], -1)
  tokens = body.position[None] + body.pixel_in(pixels.reshape(B, H * W, 7))
  tokens = _layer_norm(body.ln_out, body.blocks[0](tokens))
  if features:
    expected = _leaky(_dense(body.readout, tokens.reshape(B, H * W * E)))
  else:
    expected = tokens.mean(axis=1)
  assert body.num_features == (features or E)
  np.testing.assert_allclose(body(x, fixed, mask), expected, atol=1e-5, rtol=1e-5)


def _generator_inputs(seed=6, zdim=4):
  keys = jax.random.split(jax.random.key(seed), 3)
  z = jax.random.normal(keys[0], (B, zdim))
  fixed = jax.random.uniform(keys[1], (B, H, W, 3), minval=-1, maxval=1)
  mask = (jax.random.uniform(keys[2], (H, W, 1)) > 0.7).astype(jnp.float32) * jnp.ones(3)
  return z, jnp.array([2, 0]), jnp.array([1, 3]), fixed, mask


def test_mlp_generator_is_tanh_of_the_mlp_of_noise_classes_and_fixed_pixels():
  """G = tanh(W_out MLP([W_z z, embed_d(d), embed_m(m), W_f [fixed, mask]])), as (B, H, W, 3)."""
  gen = _randomised(networks.MLPGenerator(
      zdim=4, image_shape=(H, W, 3), num_durability=3, num_mass=4, class_embed_dim=2,
      hidden_dims=(8,), norm='layer', dropout=0.0, mask_input=True, rngs=nnx.Rngs(0)))
  z, d, m, fixed, mask = _generator_inputs()
  cond = jnp.concatenate([fixed, jnp.broadcast_to(mask[..., :1], (B, H, W, 1))], -1)
  embed = lambda layer, k: np.asarray(layer.embedding[...])[k]
  x = np.concatenate([_dense(gen.noise_proj, z), embed(gen.durability_embed, d),
                      embed(gen.mass_embed, m), _dense(gen.fixed_proj, cond.reshape(B, -1))], -1)
  block = gen.blocks[0]
  x = _leaky(_layer_norm(block.norm, _dense(block.dense, x)))
  expected = np.tanh(_dense(gen.out, x)).reshape(B, H, W, 3)
  np.testing.assert_allclose(gen(z, d, m, fixed, mask), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('token_noise', [True, False], ids=['token_noise', 'shared_noise'])
def test_attention_generator_conditions_every_token_and_every_block(token_noise):
  """tokens = position + W_in [fixed, mask] + W_c c (+ the token's share of W_z z, with
  token_noise) with c = [z, embed_d(d), embed_m(m)], the blocks FiLM'd by c, then
  tanh(W_out LN(tokens)) per pixel."""
  gen = _randomised(networks.AttentionGenerator(
      zdim=4, image_shape=(H, W, 3), num_durability=3, num_mass=4, class_embed_dim=2,
      embed_dim=E, num_heads=N, num_layers=1, mlp_ratio=2, mask_input=True, rngs=nnx.Rngs(0),
      axial=True, token_noise=token_noise))
  z, d, m, fixed, mask = _generator_inputs()
  c = jnp.concatenate([z, gen.durability_embed.embedding[...][d],
                       gen.mass_embed.embedding[...][m]], -1)
  pixels = jnp.concatenate([fixed, jnp.broadcast_to(mask[..., :1], (B, H, W, 1))], -1)
  tokens = (gen.position[None] + gen.pixel_in(pixels.reshape(B, H * W, 4))
            + gen.cond_in(c)[:, None, :])
  assert (gen.noise_in is not None) == token_noise
  if token_noise:
    assert gen.noise_in.kernel.shape == (4, H * W * E)
    tokens = tokens + _dense(gen.noise_in, z).reshape(B, H * W, E)
  tokens = gen.blocks[0](tokens, c)
  expected = np.tanh(_dense(gen.out, _layer_norm(gen.ln_out, tokens))).reshape(B, H, W, 3)
  np.testing.assert_allclose(gen(z, d, m, fixed, mask), expected, atol=1e-5, rtol=1e-5)


def test_class_head_is_linear_heads_on_a_normalised_leaky_hidden_layer():
  """h = LeakyReLU(LN(W f + b)); durability, mass and regression outputs W_k h + b_k."""
  head = _randomised(networks.ClassHead(6, 5, 3, 4, nnx.Rngs(0), regression=True))
  f = np.asarray(jax.random.normal(jax.random.key(8), (B, 6)), np.float64)
  h = _leaky(_layer_norm(head.ln, _dense(head.hidden, f)))
  got = head(jnp.asarray(f, jnp.float32))
  assert len(got) == 3
  for out, layer in zip(got, (head.durability, head.mass, head.regression)):
    np.testing.assert_allclose(out, _dense(layer, h), atol=1e-5, rtol=1e-5)
