"""Generators and critics (Flax NNX): MLP or pixel-token self-attention, conditioned on the labels.

Shapes: B batch, H x W training layout, D = 3 H W, S = H W pixel tokens, E = `embed_dim`.

Every generator receives noise z (B, zdim), the durability and mass class indices (B,) through
learned embeddings, the fixed-pixel image (B, H, W, 3) (strut colours, -1 elsewhere) and the strut
mask (H, W, 3); it returns an image (B, H, W, 3) in [-1, 1] (tanh).

Every critic is a body (MLP or transformer) mapping an image to features f (B, F), plus a linear
head and class projections (`Critic.score`):

  score(x, y) = w . f + b + sum_k <embed_k(y_k), f>        (projection discriminator)

where k runs over durability and mass. The body also sees the fixed-pixel image by concatenation
(pixel channels), so the critic judges a design *for* its requested struts. With
`disc_conditioning='none'` (the original's unconditional critic) both are left out. The score is
linear (a logit for BCE, a critic value for WGAN). An InfoGAN critic adds a Q head on f giving
durability and mass logits; with `aux_lambda > 0` an auxiliary classifier head (AC-GAN) does the
same for the labels of real designs.

The self-attention networks are real pixel-token transformers: each pixel is a token with a
learned position embedding, in residual pre-LayerNorm blocks of multi-head attention and an MLP.
The attention is axial by default (`attention='axial'`: half the heads attend along the pixel's
row, half along its column, the odd one of an odd number along the column) or over all S tokens
(`'full'`). In the generator the condition vector c = [z, embed(durability), embed(mass)] is
added to every token and modulates the two LayerNorms of every block (FiLM: (1 + scale(c)) *
LN(x) + shift(c)).
"""

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

LEAKY_SLOPE = 0.2


def _leaky(x):
  return jax.nn.leaky_relu(x, LEAKY_SLOPE)


def _norm(kind: str, features: int, rngs: nnx.Rngs):
  if kind == 'batch':  # PyTorch momentum 0.1 == Flax momentum 0.9
    return nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)
  if kind == 'layer':
    return nnx.LayerNorm(features, epsilon=1e-5, rngs=rngs)
  return None


class DenseBlock(nnx.Module):
  """Dense -> norm (batch | layer | none) -> LeakyReLU(0.2) -> dropout."""

  def __init__(self, in_features: int, out_features: int, norm: str, dropout: float,
               rngs: nnx.Rngs):
    self.dense = nnx.Linear(in_features, out_features, rngs=rngs)
    self.norm = _norm(norm, out_features, rngs)
    self.dropout = nnx.Dropout(dropout) if dropout > 0 else None

  def __call__(self, x, *, train: bool, rngs: Optional[nnx.Rngs]):
    x = self.dense(x)
    if isinstance(self.norm, nnx.BatchNorm):
      x = self.norm(x, use_running_average=not train)
    elif self.norm is not None:
      x = self.norm(x)
    x = _leaky(x)
    if self.dropout is not None:
      x = self.dropout(x, deterministic=not train, rngs=rngs)
    return x


def _widths(dims: Sequence[int], image_dim: int) -> list[int]:
  """Hidden widths; 0 stands for the image size D (the original's Lin(. -> D) layers)."""
  return [image_dim if d == 0 else int(d) for d in dims]


def _condition_pixels(fixed, mask, use_mask: bool):
  """Per-pixel condition channels: fixed-pixel colours (3) and, optionally, the mask (1)."""
  if not use_mask:
    return fixed
  mask1 = jnp.broadcast_to(mask[..., :1], fixed.shape[:-1] + (1,))
  return jnp.concatenate([fixed, mask1.astype(fixed.dtype)], axis=-1)


class MLPGenerator(nnx.Module):
  """noise -> Dense(D); fixed pixels -> Dense(D); [noise, emb_d, emb_m, fixed] -> MLP -> tanh."""

  def __init__(self, *, zdim: int, image_shape: tuple[int, int, int], num_durability: int,
               num_mass: int, class_embed_dim: int, hidden_dims: Sequence[int], norm: str,
               dropout: float, mask_input: bool, rngs: nnx.Rngs):
    h, w, c = image_shape
    self.image_shape = image_shape
    self.mask_input = mask_input
    d = h * w * c
    cond_dim = h * w * (c + int(mask_input))
    self.noise_proj = nnx.Linear(zdim, d, rngs=rngs)
    self.fixed_proj = nnx.Linear(cond_dim, d, rngs=rngs)
    self.durability_embed = nnx.Embed(num_durability, class_embed_dim, rngs=rngs)
    self.mass_embed = nnx.Embed(num_mass, class_embed_dim, rngs=rngs)
    widths = [2 * d + 2 * class_embed_dim] + _widths(hidden_dims, d)
    self.blocks = nnx.List([DenseBlock(a, b, norm, dropout, rngs)
                            for a, b in zip(widths[:-1], widths[1:])])
    self.out = nnx.Linear(widths[-1], d, rngs=rngs)

  def __call__(self, z, durability, mass, fixed, mask, *, train: bool = False,
               rngs: Optional[nnx.Rngs] = None):
    b = z.shape[0]
    cond = _condition_pixels(fixed, mask, self.mask_input).reshape(b, -1)
    x = jnp.concatenate([self.noise_proj(z), self.durability_embed(durability),
                         self.mass_embed(mass), self.fixed_proj(cond)], axis=-1)
    for block in self.blocks:
      x = block(x, train=train, rngs=rngs)
    return jnp.tanh(self.out(x)).reshape((b,) + self.image_shape)


class MLPBody(nnx.Module):
  """Critic body: flat [image, fixed pixels] -> DenseBlocks (`norm`: layer or none) -> features.

  The fixed pixels (and mask) are concatenated only when `conditional`."""

  def __init__(self, *, image_shape, hidden_dims: Sequence[int], norm: str, dropout: float,
               conditional: bool, mask_input: bool, rngs: nnx.Rngs):
    h, w, c = image_shape
    self.conditional = conditional
    self.mask_input = mask_input
    in_dim = h * w * c + (h * w * (c + int(mask_input)) if conditional else 0)
    widths = [in_dim] + _widths(hidden_dims, h * w * c)
    self.blocks = nnx.List([DenseBlock(a, b, norm, dropout, rngs)
                            for a, b in zip(widths[:-1], widths[1:])])
    self.num_features = widths[-1]

  def __call__(self, x, fixed, mask, *, train: bool = False, rngs: Optional[nnx.Rngs] = None):
    b = x.shape[0]
    x = x.reshape(b, -1)
    if self.conditional:
      x = jnp.concatenate([x, _condition_pixels(fixed, mask, self.mask_input).reshape(b, -1)], -1)
    for block in self.blocks:
      x = block(x, train=train, rngs=rngs)
    return x


class SelfAttention(nnx.Module):
  """Multi-head self-attention over the S = H W pixel tokens, heads n = 1..N of size h = E / N:

    q, k, v = split(x W_qkv + b_qkv)                      one fused (E, 3E) projection
    o_n     = softmax(q_n k_n^T / sqrt(h)) v_n             per head, over the head's keys
    y       = concat_n(o_n) W_out + b_out

  `axial=False`: every head attends over all S tokens (S^2 scores per head).
  `axial=True`: the first N/2 heads attend along the token's row (W keys), the others along its
  column (H keys), so a block costs S (H + W) / 2 scores per head instead of S^2 (11.7x fewer for
  10 x 14) and two blocks connect every pair of pixels (row, then column), still 5.8x fewer
  scores than one full block. Same parameters.

  Written out instead of nnx.MultiHeadAttention or jax.nn.dot_product_attention because on CPU
  those were 2-3x slower here (measured, gan/bench.py): heads are moved in front of the tokens
  so both attention matmuls are plain batched matmuls, and the softmax is normalised after the
  value matmul (exp(l - max l) V / sum exp(l - max l)), which divides a (keys, h) result instead
  of the (queries, keys) weights and keeps their backward pass short.
  """

  def __init__(self, embed_dim: int, num_heads: int, rngs: nnx.Rngs,
               grid: Optional[tuple[int, int]] = None):
    self.num_heads = num_heads
    self.grid = grid  # (H, W) for axial attention, None for full attention
    self.qkv = nnx.Linear(embed_dim, 3 * embed_dim, rngs=rngs)
    self.out = nnx.Linear(embed_dim, embed_dim, rngs=rngs)

  def __call__(self, x):
    b, s, e = x.shape
    n, h = self.num_heads, e // self.num_heads
    qkv = self.qkv(x)
    if self.grid is None:
      qkv = qkv.reshape(b, 1, s, 3, n, h)
      return self.out(_attend(qkv).reshape(b, s, e))
    rows, cols = self.grid
    qkv = qkv.reshape(b, rows, cols, 3, n, h)
    half = n // 2
    along_row = _attend(qkv[..., :half, :])                               # (B, H, W, N/2, h)
    along_col = _attend(qkv[..., half:, :].transpose(0, 2, 1, 3, 4, 5)).transpose(0, 2, 1, 3, 4)
    return self.out(jnp.concatenate([along_row, along_col], axis=3).reshape(b, s, e))


def _attend(qkv):
  """Softmax attention within each group of tokens: qkv (B, G, T, 3, N, h) -> (B, G, T, N, h)."""
  b, g, t, _, n, h = qkv.shape
  qkv = qkv.transpose(3, 0, 1, 4, 2, 5)                                  # (3, B, G, N, T, h)
  q, k, v = qkv[0] * h ** -0.5, qkv[1], qkv[2]
  logits = jnp.einsum('bgnth,bgnsh->bgnts', q, k)
  # Subtracting the row maximum only guards exp against overflow; the result does not depend on
  # it, so it needs no gradient.
  weights = jnp.exp(logits - jax.lax.stop_gradient(logits.max(-1, keepdims=True)))
  o = jnp.einsum('bgnts,bgnsh->bgnth', weights, v) / weights.sum(-1)[..., None]
  return o.transpose(0, 1, 3, 2, 4)


class TransformerBlock(nnx.Module):
  """Pre-LayerNorm residual block: x + MHA(LN(x)); x + MLP(LN(x)); LNs optionally FiLM'd."""

  def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: int, cond_dim: int,
               rngs: nnx.Rngs, grid: Optional[tuple[int, int]] = None):
    self.ln1 = nnx.LayerNorm(embed_dim, use_scale=cond_dim == 0, use_bias=cond_dim == 0,
                             rngs=rngs)
    self.attn = SelfAttention(embed_dim, num_heads, rngs, grid)
    self.ln2 = nnx.LayerNorm(embed_dim, use_scale=cond_dim == 0, use_bias=cond_dim == 0,
                             rngs=rngs)
    self.mlp_in = nnx.Linear(embed_dim, mlp_ratio * embed_dim, rngs=rngs)
    self.mlp_out = nnx.Linear(mlp_ratio * embed_dim, embed_dim, rngs=rngs)
    # FiLM: 4 E numbers per example (scale and shift for both LayerNorms), zero-initialised so a
    # fresh block starts as a plain pre-LN block.
    self.film = (nnx.Linear(cond_dim, 4 * embed_dim, kernel_init=nnx.initializers.zeros,
                            rngs=rngs) if cond_dim else None)

  def __call__(self, x, cond=None):
    if self.film is not None:
      s1, b1, s2, b2 = jnp.split(self.film(cond)[:, None, :], 4, axis=-1)
      mod1 = lambda y: y * (1 + s1) + b1
      mod2 = lambda y: y * (1 + s2) + b2
    else:
      mod1 = mod2 = lambda y: y
    h = mod1(self.ln1(x))
    x = x + self.attn(h)
    h = mod2(self.ln2(x))
    return x + self.mlp_out(jax.nn.gelu(self.mlp_in(h)))


class AttentionGenerator(nnx.Module):
  """Pixel tokens -> blocks -> per-pixel RGB. Token s of the S = H W starts as

    x_s = p_s + W_pix [fixed pixel s, mask s] + W_c c + (W_z z)_s      c = [z, emb_d, emb_m]

  with p_s the learned position, and every block FiLM-modulated by c. `token_noise=False` drops
  the last term: the noise then reaches every token as the same shift W_c c, and trained models
  made nearly the same design for every z (diversity 0.025-0.061 against the real 0.158; the MLP
  generator also projects z to every pixel). W_z keeps its default initialisation: started at
  zero, it stayed unused (diversity 0.043 after 10 epochs).
  """

  def __init__(self, *, zdim: int, image_shape, num_durability: int, num_mass: int,
               class_embed_dim: int, embed_dim: int, num_heads: int, num_layers: int,
               mlp_ratio: int, mask_input: bool, rngs: nnx.Rngs, axial: bool = False,
               token_noise: bool = True):
    h, w, c = image_shape
    self.image_shape = image_shape
    self.mask_input = mask_input
    cond_dim = zdim + 2 * class_embed_dim
    self.durability_embed = nnx.Embed(num_durability, class_embed_dim, rngs=rngs)
    self.mass_embed = nnx.Embed(num_mass, class_embed_dim, rngs=rngs)
    self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (h * w, embed_dim)))
    self.pixel_in = nnx.Linear(c + int(mask_input), embed_dim, rngs=rngs)
    self.cond_in = nnx.Linear(cond_dim, embed_dim, rngs=rngs)
    self.noise_in = nnx.Linear(zdim, h * w * embed_dim, rngs=rngs) if token_noise else None
    self.blocks = nnx.List([TransformerBlock(embed_dim, num_heads, mlp_ratio, cond_dim, rngs,
                                             (h, w) if axial else None)
                            for _ in range(num_layers)])
    self.ln_out = nnx.LayerNorm(embed_dim, rngs=rngs)
    self.out = nnx.Linear(embed_dim, c, rngs=rngs)

  def __call__(self, z, durability, mass, fixed, mask, *, train: bool = False,
               rngs: Optional[nnx.Rngs] = None):
    del train, rngs  # no dropout or batch statistics
    b = z.shape[0]
    cond = jnp.concatenate([z, self.durability_embed(durability), self.mass_embed(mass)], -1)
    pixels = _condition_pixels(fixed, mask, self.mask_input).reshape(b, -1, fixed.shape[-1]
                                                                    + int(self.mask_input))
    x = self.position[None] + self.pixel_in(pixels) + self.cond_in(cond)[:, None, :]
    if self.noise_in is not None:
      x = x + self.noise_in(z).reshape(x.shape)
    for block in self.blocks:
      x = block(x, cond)
    return jnp.tanh(self.out(self.ln_out(x))).reshape((b,) + self.image_shape)


class AttentionBody(nnx.Module):
  """Critic body: pixel tokens [rgb, fixed pixels] + position -> blocks -> LN -> features

    f = LeakyReLU(W_f [t_1, ..., t_S])   (F = `features` of them; t_s the normalised tokens)
    f = mean_s t_s                         (E of them; `features=0`)

  The mean pool told the score and the class heads only E = 16 numbers, the same whichever
  pixel they came from; the dense readout sees each token at its place.
  """

  def __init__(self, *, image_shape, embed_dim: int, num_heads: int, num_layers: int,
               mlp_ratio: int, conditional: bool, mask_input: bool, rngs: nnx.Rngs,
               axial: bool = False, features: int = 0):
    h, w, c = image_shape
    self.conditional = conditional
    self.mask_input = mask_input
    in_channels = c + ((c + int(mask_input)) if conditional else 0)
    self.position = nnx.Param(0.02 * jax.random.normal(rngs.params(), (h * w, embed_dim)))
    self.pixel_in = nnx.Linear(in_channels, embed_dim, rngs=rngs)
    self.blocks = nnx.List([TransformerBlock(embed_dim, num_heads, mlp_ratio, 0, rngs,
                                             (h, w) if axial else None)
                            for _ in range(num_layers)])
    self.ln_out = nnx.LayerNorm(embed_dim, rngs=rngs)
    self.readout = nnx.Linear(h * w * embed_dim, features, rngs=rngs) if features else None
    self.num_features = features or embed_dim

  def __call__(self, x, fixed, mask, *, train: bool = False, rngs: Optional[nnx.Rngs] = None):
    del train, rngs
    if self.conditional:
      x = jnp.concatenate([x, _condition_pixels(fixed, mask, self.mask_input)], axis=-1)
    b = x.shape[0]
    tokens = self.position[None] + self.pixel_in(x.reshape(b, -1, x.shape[-1]))
    for block in self.blocks:
      tokens = block(tokens)
    if self.readout is None:
      return self.ln_out(tokens).mean(axis=1)
    return _leaky(self.readout(self.ln_out(tokens).reshape(b, -1)))


class ClassHead(nnx.Module):
  """Class head on critic features f: Dense -> LN -> LeakyReLU -> h, then

    durability logits W_d h + b_d  (B, Kd),   mass logits W_m h + b_m  (B, Km)
    [regression r = W_r h + b_r  (B, 2): continuous (durability, mass) class indices]

  Used twice: as the InfoGAN Q head (codes recovered from fakes, labels from real designs) and as
  the auxiliary classifier (AC-GAN: labels learned from real designs, asked of fakes). The
  regression output exists only when `regression` is set: the class index is ordered, and a
  squared error in index units pulls a design towards the centre of its class where a saturated
  cross-entropy no longer pulls.
  """

  def __init__(self, num_features: int, hidden: int, num_durability: int, num_mass: int,
               rngs: nnx.Rngs, regression: bool = False):
    self.hidden = nnx.Linear(num_features, hidden, rngs=rngs)
    self.ln = nnx.LayerNorm(hidden, rngs=rngs)
    self.durability = nnx.Linear(hidden, num_durability, rngs=rngs)
    self.mass = nnx.Linear(hidden, num_mass, rngs=rngs)
    self.regression = nnx.Linear(hidden, 2, rngs=rngs) if regression else None

  def __call__(self, features):
    """(durability logits, mass logits) or, with regression, (..., (B, 2) class indices)."""
    h = _leaky(self.ln(self.hidden(features)))
    if self.regression is None:
      return self.durability(h), self.mass(h)
    return self.durability(h), self.mass(h), self.regression(h)


class Critic(nnx.Module):
  """Body + linear real/fake head + class projection (+ InfoGAN Q head) (+ auxiliary classifier).

  The Q head and the auxiliary head are separate modules because different optimisers train
  them (Q: the generator's, on fakes and real designs; aux: the critic's, on real designs).
  """

  def __init__(self, body, *, num_durability: int, num_mass: int, conditional: bool,
               infogan: bool, class_head_hidden: int, rngs: nnx.Rngs, aux: bool = False,
               aux_regression: bool = False):
    f = body.num_features
    self.body = body
    self.head = nnx.Linear(f, 1, rngs=rngs)
    self.durability_embed = (nnx.Embed(num_durability, f, embedding_init=nnx.initializers.zeros,
                                       rngs=rngs) if conditional else None)
    self.mass_embed = (nnx.Embed(num_mass, f, embedding_init=nnx.initializers.zeros, rngs=rngs)
                       if conditional else None)
    self.q_head = (ClassHead(f, class_head_hidden, num_durability, num_mass, rngs) if infogan
                   else None)
    self.aux_head = (ClassHead(f, class_head_hidden, num_durability, num_mass, rngs,
                               regression=aux_regression) if aux else None)

  def features(self, x, fixed, mask, *, train: bool = False, rngs: Optional[nnx.Rngs] = None):
    return self.body(x, fixed, mask, train=train, rngs=rngs)

  def score(self, features, durability, mass):
    """(B,) linear critic value / logit from body features and the requested classes."""
    s = self.head(features)[:, 0]
    if self.durability_embed is not None:
      s = s + jnp.sum(features * (self.durability_embed(durability) + self.mass_embed(mass)), -1)
    return s

  def __call__(self, x, durability, mass, fixed, mask, *, train: bool = False,
               rngs: Optional[nnx.Rngs] = None):
    return self.score(self.features(x, fixed, mask, train=train, rngs=rngs), durability, mass)


def build_generator(config, image_shape, num_durability: int, num_mass: int, rngs: nnx.Rngs):
  """The generator `config.gen_mode` asks for (config already resolved)."""
  common = dict(zdim=config.zdim, image_shape=tuple(image_shape), num_durability=num_durability,
                num_mass=num_mass, class_embed_dim=config.class_embed_dim,
                mask_input=config.mask_input, rngs=rngs)
  if config.gen_mode == 'mlp':
    return MLPGenerator(hidden_dims=config.gen_hidden_dims, norm=config.gen_norm,
                        dropout=config.gen_dropout, **common)
  return AttentionGenerator(embed_dim=config.embed_dim, num_heads=config.num_heads,
                            num_layers=config.num_layers, mlp_ratio=config.mlp_ratio,
                            axial=config.attention == 'axial',
                            token_noise=config.attention_noise == 'token', **common)


def build_critic(config, image_shape, num_durability: int, num_mass: int, rngs: nnx.Rngs):
  """The critic `config.disc_mode` asks for, with an InfoGAN Q head when gan_model=infogan and an
  auxiliary classifier head when aux_lambda > 0."""
  conditional = config.disc_conditioning == 'projection'
  if config.disc_mode == 'mlp':
    body = MLPBody(image_shape=tuple(image_shape), hidden_dims=config.disc_hidden_dims,
                   norm=config.disc_norm, dropout=config.disc_dropout, conditional=conditional,
                   mask_input=config.mask_input, rngs=rngs)
  else:
    body = AttentionBody(image_shape=tuple(image_shape), embed_dim=config.embed_dim,
                         num_heads=config.num_heads, num_layers=config.num_layers,
                         mlp_ratio=config.mlp_ratio, conditional=conditional,
                         mask_input=config.mask_input, axial=config.attention == 'axial',
                         features=config.attention_features, rngs=rngs)
  return Critic(body, num_durability=num_durability, num_mass=num_mass, conditional=conditional,
                infogan=config.gan_model == 'infogan', class_head_hidden=config.hidden_dim,
                rngs=rngs, aux=config.aux_lambda > 0, aux_regression=config.aux_regression > 0)
