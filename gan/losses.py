"""GAN losses: one small pure function per term, composed by the training step.

Conventions (as in TF-GAN's `losses` module):
  * B is the batch size; logits / scores have shape (B,) or (B, 1) and every mean is over all
    their entries.
  * Every loss and logged measure returns a float32 scalar (gradient_penalty also the (B,) norms;
    inputs are cast to float32 first, so bfloat16 activations do not lose the small differences
    the losses are made of) and is pure and jit-compatible: no Python control flow on traced
    values. is_weight_matrix returns a bool, clip_weights a pytree.
  * Weights (the config's lambda_gp, constraint_lambda, info_lambda, aux_lambda, ...) are applied
    by the caller.

Terms:
  critic_loss_bce / generator_loss_bce                 non-saturating GAN on logits
  critic_loss_wasserstein / generator_loss_wasserstein WGAN on unbounded scores
  wasserstein_estimate                                 the critic's W1 estimate, for logging
  gradient_penalty                                     WGAN-GP two-sided penalty, per example
  strut_penalty / strut_max_error                      fixed ("strut") pixels must be kept
  class_cross_entropy                                  both classes' cross-entropy on logits
  info_loss                                            InfoGAN categorical code recovery
  aux_class_loss                                       AC-GAN auxiliary classifier (+ regression)
  clip_weights / is_weight_matrix                      WGAN weight clipping
  clip_fraction                                        the share of the clipped weights, for logging
"""

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

# Added under the square root of the gradient norm: d sqrt(s)/ds is infinite at s = 0, so without
# it a critic whose input gradient is exactly zero gives NaN parameter gradients.
GRAD_NORM_EPS = 1e-10


def _f32(x) -> jax.Array:
  return jnp.asarray(x, jnp.float32)


# --- Non-saturating GAN (binary cross-entropy on logits) -------------------------------------


def critic_loss_bce(real_logits, fake_logits) -> jax.Array:
  """Discriminator loss of the standard GAN, on logits.

    L_D = mean_b BCE(real_b, 1) + mean_b BCE(fake_b, 0)
        = mean_b softplus(-real_b) + mean_b softplus(fake_b)

  with BCE(l, y) = -y log sigmoid(l) - (1 - y) log(1 - sigmoid(l)), computed stably by
  `optax.sigmoid_binary_cross_entropy`. Minimised by real logits -> +inf, fake logits -> -inf.

  Args:
    real_logits: (B,) or (B, 1) discriminator logits on real images.
    fake_logits: (B',) or (B', 1) discriminator logits on generated images.

  Returns:
    float32 scalar.
  """
  real, fake = _f32(real_logits), _f32(fake_logits)
  real_loss = optax.sigmoid_binary_cross_entropy(real, jnp.ones_like(real))
  fake_loss = optax.sigmoid_binary_cross_entropy(fake, jnp.zeros_like(fake))
  return jnp.mean(real_loss) + jnp.mean(fake_loss)


def generator_loss_bce(fake_logits) -> jax.Array:
  """Non-saturating generator loss of the standard GAN, on logits.

    L_G = mean_b BCE(fake_b, 1) = mean_b softplus(-fake_b) = -mean_b log sigmoid(fake_b)

  (the generator maximises log D(G(z)) instead of minimising log(1 - D(G(z))), which saturates
  when the discriminator wins early).

  Args:
    fake_logits: (B,) or (B, 1) discriminator logits on generated images.

  Returns:
    float32 scalar.
  """
  fake = _f32(fake_logits)
  return jnp.mean(optax.sigmoid_binary_cross_entropy(fake, jnp.ones_like(fake)))


# --- Wasserstein GAN ------------------------------------------------------------------------


def critic_loss_wasserstein(real_scores, fake_scores) -> jax.Array:
  """WGAN critic loss: L_C = mean_b f(fake_b) - mean_b f(real_b)  (= -wasserstein_estimate).

  Args:
    real_scores: (B,) or (B, 1) critic scores f(x) on real images (unbounded).
    fake_scores: (B',) or (B', 1) critic scores on generated images.

  Returns:
    float32 scalar.
  """
  return jnp.mean(_f32(fake_scores)) - jnp.mean(_f32(real_scores))


def generator_loss_wasserstein(fake_scores) -> jax.Array:
  """WGAN generator loss: L_G = -mean_b f(fake_b).

  Args:
    fake_scores: (B,) or (B, 1) critic scores on generated images.

  Returns:
    float32 scalar.
  """
  return -jnp.mean(_f32(fake_scores))


def wasserstein_estimate(real_scores, fake_scores) -> jax.Array:
  """The critic's estimate of the Wasserstein-1 distance: W = mean_b f(real_b) - mean_b f(fake_b).

  A lower bound on W1(P_real, P_fake) when f is 1-Lipschitz; for logging only.

  Args:
    real_scores: (B,) or (B, 1) critic scores on real images.
    fake_scores: (B',) or (B', 1) critic scores on generated images.

  Returns:
    float32 scalar.
  """
  return jnp.mean(_f32(real_scores)) - jnp.mean(_f32(fake_scores))


def gradient_penalty(critic_fn: Callable[..., Any], real, fake, alpha,
                     *per_example_args) -> tuple[jax.Array, jax.Array]:
  """WGAN-GP two-sided gradient penalty (Gulrajani et al. 2017), one gradient per example.

    x_hat_b = alpha_b * real_b + (1 - alpha_b) * fake_b
    g_b     = d f(x_hat_b, *args_b) / d x_hat_b                  (jax.vmap(jax.grad(f)))
    n_b     = sqrt(sum g_b^2 + 1e-10)                            (sum over H, W, C)
    GP      = mean_b (n_b - 1)^2

  Each g_b is the gradient of example b's own score with respect to its own input, not the
  gradient of the batch sum (which differs when the critic couples examples, e.g. batch
  statistics). The conditions `args_b` are held fixed: no gradient is taken with respect to them.
  The 1e-10 keeps d n_b / d g_b finite when g_b = 0. Computed in float32; the caller multiplies
  by lambda_gp.

  Args:
    critic_fn: f(x_single, *args_single) -> score of ONE example; x_single has shape
      real.shape[1:] (e.g. (H, W, C)) and the score has one element (shape () or (1,), ...).
    real: (B, H, W, C) real images.
    fake: (B, H, W, C) generated images.
    alpha: (B,) interpolation weights in [0, 1], one per example, broadcast over the image.
    *per_example_args: arrays (or pytrees of arrays) with leading axis B, e.g. the example's
      condition labels; vmap maps them together with x_hat.

  Returns:
    (GP float32 scalar, n: (B,) float32 gradient norms, for logging).
  """
  real, fake = _f32(real), _f32(fake)
  alpha = jnp.reshape(_f32(alpha), (-1,) + (1,) * (real.ndim - 1))
  x_hat = alpha * real + (1.0 - alpha) * fake

  def score(x, *args):
    return jnp.reshape(_f32(critic_fn(x, *args)), ())

  grads = jax.vmap(jax.grad(score))(x_hat, *per_example_args)
  norms = jnp.sqrt(jnp.sum(jnp.square(grads), axis=tuple(range(1, grads.ndim))) + GRAD_NORM_EPS)
  return jnp.mean(jnp.square(norms - 1.0)), norms


# --- Fixed ("strut") pixels -------------------------------------------------------------------


def strut_penalty(images, fixed, mask) -> jax.Array:
  """Mean squared error on the strut pixels only.

    P = sum_{b,h,w,c} m_bhwc (x_bhwc - s_bhwc)^2 / sum_{b,h,w,c} m_bhwc

  with m the 0/1 mask broadcast to (B, H, W, C): the mean over the B * K strut entries (the
  Hyundai parts: K = 2 struts x 3 channels = 6). Zero iff every strut entry matches; does not
  depend on the non-strut pixels, on B (for repeated examples) or on the image size. An all-zero
  mask gives 0.

  Args:
    images: (B, H, W, C) generated images.
    fixed: (B, H, W, C) or (H, W, C) target values at the strut pixels (others are ignored).
    mask: (H, W, C) or (B, H, W, C), 1 at strut entries and 0 elsewhere
      (`DesignLayout.strut_mask()`).

  Returns:
    float32 scalar.
  """
  images = _f32(images)
  mask = jnp.broadcast_to(_f32(mask), images.shape)
  squared = mask * jnp.square(images - _f32(fixed))
  return jnp.sum(squared) / jnp.maximum(jnp.sum(mask), 1.0)


def strut_max_error(images, fixed, mask) -> jax.Array:
  """Largest absolute error over the strut entries: max_{b,h,w,c: m=1} |x_bhwc - s_bhwc|.

  For logging; 0 for an all-zero mask. Shapes as in `strut_penalty`.

  Returns:
    float32 scalar.
  """
  images = _f32(images)
  mask = jnp.broadcast_to(_f32(mask), images.shape)
  error = jnp.where(mask > 0, jnp.abs(images - _f32(fixed)), 0.0)
  return jnp.max(error)


# --- InfoGAN ------------------------------------------------------------------------------------


def info_loss(durability_logits, mass_logits, durability_codes, mass_codes) -> jax.Array:
  """InfoGAN categorical mutual-information term (up to the constant entropy H(c)).

    L_I = mean_b CE(q_dur(x_b), c_dur_b) + mean_b CE(q_mass(x_b), c_mass_b)
    CE(l, k) = -log softmax(l)_k = logsumexp(l) - l_k

  Minimising L_I maximises the variational lower bound on I(c; G(z, c)): the auxiliary head Q
  must recover the codes the generator was given. Works on LOGITS, not probabilities.

  Args:
    durability_logits: (B, Kd) Q-head logits over the Kd durability classes.
    mass_logits: (B, Km) Q-head logits over the Km mass classes.
    durability_codes: (B,) integer durability codes in [0, Kd).
    mass_codes: (B,) integer mass codes in [0, Km).

  Returns:
    float32 scalar.
  """
  return class_cross_entropy(durability_logits, mass_logits, durability_codes, mass_codes)


def class_cross_entropy(durability_logits, mass_logits, durability, mass) -> jax.Array:
  """The two class terms of a batch, on logits:

    L = mean_b CE(l_dur_b, d_b) + mean_b CE(l_mass_b, m_b),   CE(l, k) = -log softmax(l)[k]

  The loss of InfoGAN's Q head (`info_loss`), of the auxiliary classifier (`aux_class_loss`) and
  of the evaluation classifier (gan/classifier.py).

  Args:
    durability_logits: (B, Kd); mass_logits: (B, Km).
    durability: (B,) integer classes in [0, Kd); mass: (B,) integer classes in [0, Km).

  Returns:
    float32 scalar.
  """
  dur = optax.softmax_cross_entropy_with_integer_labels(_f32(durability_logits),
                                                        jnp.asarray(durability, jnp.int32))
  mass = optax.softmax_cross_entropy_with_integer_labels(_f32(mass_logits),
                                                         jnp.asarray(mass, jnp.int32))
  return jnp.mean(dur) + jnp.mean(mass)


# --- Auxiliary classifier (AC-GAN) --------------------------------------------------------------


def aux_class_loss(head_outputs, durability, mass, regression_weight: float = 0.0) -> jax.Array:
  """Auxiliary-classifier loss of a batch against its class labels (AC-GAN).

    L_A = mean_b CE(l_dur_b, d_b) + mean_b CE(l_mass_b, m_b)
          + w_r [ mean_b (r_dur_b - d_b)^2 + mean_b (r_mass_b - m_b)^2 ]

  with (l_dur, l_mass[, r]) = head_outputs: logits and, optionally, (B, 2) continuous predictions
  of the class *indices* (the regression term is left out when r is absent or w_r = 0). The
  critic minimises it on real designs with their labels; the generator minimises it on its
  designs with the classes it was asked for. The squared error is in class-index units, so one
  class step costs 1 whichever label.

  Args:
    head_outputs: (durability logits (B, Kd), mass logits (B, Km)[, regression (B, 2)]).
    durability: (B,) integer durability classes in [0, Kd).
    mass: (B,) integer mass classes in [0, Km).
    regression_weight: w_r >= 0.

  Returns:
    float32 scalar.
  """
  loss = class_cross_entropy(head_outputs[0], head_outputs[1], durability, mass)
  if len(head_outputs) > 2 and regression_weight:
    target = jnp.stack([durability, mass], axis=-1).astype(jnp.float32)
    loss = loss + regression_weight * 2 * jnp.mean(jnp.square(_f32(head_outputs[2]) - target))
  return loss


# --- WGAN weight clipping -----------------------------------------------------------------------


def is_weight_matrix(path, leaf) -> bool:
  """Default clipping predicate: True for weight matrices, i.e. leaves with ndim >= 2.

  This covers dense and convolution kernels, embedding tables and attention kernels. Biases and
  normalisation scales / offsets (ndim <= 1) are not clipped: a LayerNorm scale starts at 1.0, and
  clipping it to e.g. 0.01 shrinks every normalised activation 100-fold and cripples the critic.
  Decided from the static shape only, so it is safe under jit.

  Args:
    path: the leaf's key path (unused; present so custom predicates can select by name).
    leaf: an array.
  """
  del path
  return jnp.ndim(leaf) >= 2


def clip_weights(params, clip: float,
                 predicate: Callable[[Any, Any], bool] = is_weight_matrix):
  """WGAN weight clipping (Arjovsky et al. 2017): w <- clip(w, -c, c) for selected leaves.

  Applied to the critic's parameters after each optimiser step. Leaves for which
  predicate(path, leaf) is True are clipped to [-clip, clip]; the others are returned unchanged.

  Args:
    params: any pytree of arrays (a dict, an `nnx.State` from `nnx.split(model, nnx.Param)`).
    clip: c > 0.
    predicate: f(key_path, leaf) -> bool, evaluated on static information (path, shape, dtype);
      defaults to `is_weight_matrix`.

  Returns:
    A pytree of the same structure.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.clip(leaf, -clip, clip) if predicate(path, leaf) else leaf, params)


def clip_fraction(params, clip: float,
                  predicate: Callable[[Any, Any], bool] = is_weight_matrix) -> jax.Array:
  """The share of the entries clip_weights bounds that sit at the bound: mean_i [|w_i| >= c] over
  every entry of the leaves for which predicate(path, leaf) is True (0 if none). Logged for WGAN:
  near 1, the critic lives on the clip box's corners and its capacity is the clip's, not the
  network's (Gulrajani et al. 2017, section 3).

  Args:
    params: the clipped parameters (any pytree of arrays).
    clip: c > 0.
    predicate: as for clip_weights.

  Returns:
    A float32 scalar in [0, 1].
  """
  selected = [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(params)
              if predicate(path, leaf)]
  if not selected:
    return jnp.zeros((), jnp.float32)
  at_bound = sum(jnp.sum(jnp.abs(leaf) >= clip) for leaf in selected)
  return (at_bound / sum(leaf.size for leaf in selected)).astype(jnp.float32)
