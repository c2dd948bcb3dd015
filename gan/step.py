"""The training state and the pure, jit-compiled update: critic steps then one generator step.

All 12 combinations come from one `update`: the model family decides whether the InfoGAN Q losses
are added (a fake is conditioned on a real example's labels and struts in both), the
loss mode decides the adversarial terms (BCE / Wasserstein, + gradient penalty or weight
clipping), and the networks are whatever `gan.networks` built. The models are split once into
graph definitions and states; `TrainState` holds every array (parameters, optimiser states,
batch statistics, step, PRNG key), so `update(state, batch)` and `train_epoch(state, data)` are
pure functions of arrays.

Per generator update with batch (x, d, m, f) and critic_iter = n:
  repeat n times (fresh z, alpha, dropout each time):
    x_fake = G(z, d, m, f)
    L_D = adv_D(D(x, d, m, f), D(x_fake, d, m, f)) [+ lambda_gp GP]
          [+ aux_lambda_critic L_A(A(x), d, m)]                          -> critic optimiser
    wgan: clip the critic's weight matrices to +-weight_clip
  x_fake = G(z'', d, m, f)               fresh noise
  L_G = adv_G(D(x_fake, d, m, f)) + constraint_lambda * strut_penalty(x_fake, f, mask)
        [+ info_lambda (CE(Q(x_fake), (d, m)) + CE(Q(x), (d, m)))]          (infogan)
        [+ aux_lambda L_A(A(x_fake), d, m)]                                -> generator optimiser
  G_ema <- beta_t G_ema + (1 - beta_t) G,   beta_t = min(ema_decay, (1 + t) / (10 + t))
The generator optimiser updates G and the InfoGAN Q head; the critic optimiser the critic body,
head, class projections and the auxiliary classifier A (L_A = `losses.aux_class_loss`: A learns
the labels from real designs only, the generator is asked to make designs A classifies as
requested). Neither Q nor A is clipped or penalised. G_ema is what samples (`sample`).

InfoGAN's codes are the real batch's labels, as vanilla's conditions: the original drew uniform
codes, and a critic that sees the labels then scores a design by how common its label is (on data
where one durability class is 43% of the designs, InfoGAN-WGAN-GP's Wasserstein estimate grew
from 9.6 at epoch 6 to 58 at epoch 60, vanilla's settled at 2.1-3.1); codes drawn from the labels
apart from their struts would let it compare the struts with the label instead.
"""

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gan import losses
from gan import networks
from gan import prng

METRICS = ('critic_loss', 'gen_loss', 'wasserstein', 'gradient_penalty', 'grad_norm',
           'clip_fraction', 'strut_error', 'strut_max_error', 'info_loss', 'q_real_loss',
           'aux_loss', 'aux_real_loss', 'real_score', 'fake_score')


def active_metrics(config) -> tuple[str, ...]:
  """The metrics that mean something for this combination (the rest are constant zeros)."""
  skip = set()
  if config.loss_mode != 'wgangp':
    skip |= {'gradient_penalty', 'grad_norm'}
  if config.loss_mode != 'wgan':
    skip.add('clip_fraction')
  if config.gan_model != 'infogan':
    skip |= {'info_loss', 'q_real_loss'}
  if not uses_aux(config):
    skip |= {'aux_loss', 'aux_real_loss'}
  return tuple(m for m in METRICS if m not in skip)


def uses_aux(config) -> bool:
  """Whether the critic has an auxiliary classifier head (AC-GAN term)."""
  return config.aux_lambda > 0


class TrainState(NamedTuple):
  """Everything that changes during training: one pytree, checkpointed whole."""
  step: jax.Array          # int32 scalar: generator updates so far
  key: jax.Array           # uint32[2] PRNG key (raw, so checkpoints need no key handling)
  gen_params: Any          # nnx.State of generator Params
  gen_ema: Any             # exponential moving average of gen_params: the sampling weights
  gen_rest: Any            # nnx.State of generator batch statistics (may be empty)
  critic_params: Any       # nnx.State of critic Params (body, head, projections)
  q_params: Any            # nnx.State of the InfoGAN Q head (empty for vanilla)
  gen_opt: Any             # optax state over (gen_params, q_params)
  critic_opt: Any          # optax state over critic_params


class Models(NamedTuple):
  """Static parts: graph definitions, optimisers and the constants of the layout."""
  gen_def: Any
  critic_def: Any
  gen_tx: optax.GradientTransformation
  critic_tx: optax.GradientTransformation
  mask: jax.Array          # (H, W, 3) strut mask


def learning_rate_schedule(learning_rate: float, decay_steps: int, final_fraction: float):
  """lr(k) = learning_rate * (1 - (1 - final_fraction) min(k, decay_steps) / decay_steps) after k
  updates of this optimiser: a linear decay, then constant. decay_steps 0 gives the constant lr
  (a plain float, so the optimiser state has no step count and older checkpoints still load).
  The horizon is in steps, not in epochs, so a run resumed with more epochs follows the same
  schedule as one trained straight."""
  if decay_steps <= 0:
    return learning_rate
  return optax.linear_schedule(learning_rate, learning_rate * final_fraction, decay_steps)


def make_optimizer(name: str, learning_rate, b1: float, b2: float,
                   weight_decay: float) -> optax.GradientTransformation:
  """Adam / AdamW / RMSprop; learning_rate a float or an optax schedule.

  RMSprop is PyTorch's default one, as in the original: v <- 0.99 v + 0.01 g^2 and
  update = -lr g / (sqrt(v) + 1e-8). optax's default puts eps under the square root
  (g / sqrt(v + eps)), which damps small gradients about 1e4 times more.
  """
  if name == 'adam':
    return optax.adam(learning_rate, b1=b1, b2=b2)
  if name == 'adamw':
    return optax.adamw(learning_rate, b1=b1, b2=b2, weight_decay=weight_decay)
  return optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, eps_in_sqrt=False)


_Q = nnx.All(nnx.Param, nnx.PathContains('q_head'))


def ema_decay_at(step, decay: float):
  """beta_t = min(decay, (1 + t) / (10 + t)) after t generator steps (TF's num_updates rule):
  the average forgets the random initialisation within the first few hundred steps instead of
  the 1 / (1 - decay) a constant decay would need."""
  t = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def update_ema(ema_params, params, step, decay: float):
  """G_ema <- beta_t G_ema + (1 - beta_t) G (`ema_decay_at`); decay 0 keeps G_ema = G."""
  return optax.incremental_update(params, ema_params, 1.0 - ema_decay_at(step, decay))


def _not_aux_head(path, leaf) -> bool:
  """WGAN clipping predicate: weight matrices outside the auxiliary classifier head."""
  return losses.is_weight_matrix(path, leaf) and 'aux_head' not in jax.tree_util.keystr(path)


def _networks(config, spec, key) -> tuple[nnx.Module, nnx.Module]:
  """The generator and the critic (with its Q and auxiliary heads), initialised from `key`."""
  rngs = nnx.Rngs(params=key)
  shape, nd, nm = spec.layout.shape, len(spec.durability), len(spec.mass)
  return (networks.build_generator(config, shape, nd, nm, rngs),
          networks.build_critic(config, shape, nd, nm, rngs))


def _split(gen, critic):
  """((gen_def, critic_def), (gen_params, gen_rest, q_params, critic_params))."""
  gen_def, gen_params, gen_rest = nnx.split(gen, nnx.Param, ...)
  critic_def, q_params, critic_params = nnx.split(critic, _Q, nnx.Param)
  return (gen_def, critic_def), (gen_params, gen_rest, q_params, critic_params)


def _initializer(config, spec, mask):
  """(Models, state_of): `state_of(key) -> TrainState` is a pure function of the seed's key.

  The graph definitions come from an abstract build (nnx.eval_shape: shapes only, no arrays), so
  a restore target needs no arrays (`abstract_init`). `init` runs `state_of` eagerly: jitted,
  XLA fuses the initialisers' arithmetic and rounds some values differently, which would change
  every earlier run's numbers (and compiling it costs as much as the eager operations do)."""
  abstract = nnx.eval_shape(lambda: _networks(config, spec, jax.random.PRNGKey(0)))
  gen_def, critic_def = _split(*abstract)[0]
  # lr_decay_steps counts generator steps; the critic makes critic_iter updates per step.
  gen_lr = learning_rate_schedule(config.learning_rate_gen, config.lr_decay_steps,
                                  config.lr_final_fraction)
  critic_lr = learning_rate_schedule(config.learning_rate_disc,
                                     config.lr_decay_steps * config.critic_iter,
                                     config.lr_final_fraction)
  gen_tx = make_optimizer(config.optimizer, gen_lr, config.opt_beta1, config.opt_beta2,
                          config.weight_decay)
  critic_tx = make_optimizer(config.optimizer, critic_lr, config.opt_beta1, config.opt_beta2,
                             config.weight_decay)
  models = Models(gen_def, critic_def, gen_tx, critic_tx, jnp.asarray(mask))

  def state_of(key) -> TrainState:
    key, init_key = jax.random.split(key)
    gen_params, gen_rest, q_params, critic_params = _split(*_networks(config, spec, init_key))[1]
    return TrainState(step=jnp.zeros((), jnp.int32), key=key, gen_params=gen_params,
                      gen_ema=jax.tree.map(jnp.copy, gen_params), gen_rest=gen_rest,
                      critic_params=critic_params, q_params=q_params,
                      gen_opt=gen_tx.init((gen_params, q_params)),
                      critic_opt=critic_tx.init(critic_params))

  return models, state_of


def init(config, spec, mask, seed: int | None = None) -> tuple[Models, TrainState]:
  """Builds the models from a resolved config and the data spec; splits them once. The state is
  seeded by `seed` (default `config.seed`)."""
  models, state_of = _initializer(config, spec, mask)
  return models, state_of(_seed_key(config, seed))


def abstract_init(config, spec, mask) -> tuple[Models, TrainState]:
  """`init`'s models and the shapes and dtypes of its state (jax.ShapeDtypeStruct leaves), without
  computing it: the target a checkpoint is restored into. Initialising the arrays would cost a
  fresh process seconds of compiling the initialisers' operations (8 s of infer.py's 10 s)."""
  models, state_of = _initializer(config, spec, mask)
  return models, jax.eval_shape(state_of, _seed_key(config, None))


def init_sweep(config, spec, mask, seeds) -> tuple[Models, TrainState]:
  """K = len(seeds) independent models: every leaf of the state gets a leading model axis (K, ...)
  and model k starts exactly as `init(..., seed=seeds[k])`. The graph definitions are shared."""
  models, state_of = _initializer(config, spec, mask)
  return models, stack([state_of(_seed_key(config, seed)) for seed in seeds])


def _seed_key(config, seed: int | None) -> jax.Array:
  return prng.seed_key(config.seed if seed is None else seed)


def stack(states) -> TrainState:
  """A sweep state of K models' states: every leaf gets a leading model axis (K, ...)."""
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def unstack(state: TrainState, k: int) -> TrainState:
  """Model k of a sweep state (the inverse of `stack` for one model)."""
  return jax.tree.map(lambda leaf: leaf[k], state)


def dropout_rngs(key) -> nnx.Rngs:
  """The dropout stream of one network call: JAX's default Threefry-2x32 stream of the raw step
  key, drawn by `prng.FUSED_THREEFRY` (one fused kernel on CPU instead of jax's rolled loop; the
  same bits). The state keeps its raw key, so checkpoints are unchanged."""
  return nnx.Rngs(dropout=prng.fused_key(key))


def generate(models: Models, gen_params, gen_rest, z, durability, mass, fixed, *, train: bool,
             key=None):
  """G(z, durability, mass, fixed) -> (images (B, H, W, 3), new batch statistics)."""
  # copy=True: fresh Variables in this trace, so BatchNorm may update its statistics inside a
  # jax.grad even though gen_rest was created outside it.
  gen = nnx.merge(models.gen_def, gen_params, gen_rest, copy=True)
  rngs = dropout_rngs(key) if key is not None else None
  images = gen(z, durability, mass, fixed, models.mask, train=train, rngs=rngs)
  return images, nnx.state(gen, nnx.Not(nnx.Param))


def _critic(models: Models, critic_params, q_params):
  return nnx.merge(models.critic_def, q_params, critic_params)


def _adversarial(config, real_scores, fake_scores):
  if config.loss_mode == 'bce':
    return losses.critic_loss_bce(real_scores, fake_scores)
  return losses.critic_loss_wasserstein(real_scores, fake_scores)


def _generator_adversarial(config, fake_scores):
  if config.loss_mode == 'bce':
    return losses.generator_loss_bce(fake_scores)
  return losses.generator_loss_wasserstein(fake_scores)


def critic_step(config, models: Models, state: TrainState, batch, key):
  """One critic update; returns (state, metrics)."""
  # The second key drew InfoGAN's codes (uniform, then a permutation of the batch's labels); it is
  # still split off so that every other key stays as it was (and so every vanilla result).
  k_noise, _, k_alpha, k_gdrop, k_ddrop = jax.random.split(key, 5)
  b = batch['images'].shape[0]
  z = jax.random.normal(k_noise, (b, config.zdim))
  d_fake, m_fake = batch['durability'], batch['mass']  # the fake's conditions: a real example's
  fake, _ = generate(models, state.gen_params, state.gen_rest, z, d_fake, m_fake, batch['fixed'],
                     train=True, key=k_gdrop)
  fake = jax.lax.stop_gradient(fake)

  def loss_fn(critic_params):
    critic = _critic(models, critic_params, state.q_params)
    rngs = dropout_rngs(k_ddrop)
    real_f = critic.features(batch['images'], batch['fixed'], models.mask, train=True, rngs=rngs)
    real_s = critic.score(real_f, batch['durability'], batch['mass'])
    fake_s = critic(fake, d_fake, m_fake, batch['fixed'], models.mask, train=True, rngs=rngs)
    loss = _adversarial(config, real_s, fake_s)
    aux_real = jnp.zeros(())
    if uses_aux(config):
      # Real designs only: fakes carry the labels they were asked for, not the ones they have.
      aux_real = losses.aux_class_loss(critic.aux_head(real_f), batch['durability'],
                                       batch['mass'], config.aux_regression)
      loss = loss + config.aux_lambda_critic * aux_real
    gp, norms = jnp.zeros(()), jnp.zeros((b,))
    if config.loss_mode == 'wgangp':
      def single(x1, d1, m1, f1):
        # Conditions held fixed at the real example's (labels and struts). Dropout off: a random
        # critic makes the penalty noisy.
        return critic(x1[None], d1[None], m1[None], f1[None], models.mask, train=False)[0]
      alpha = jax.random.uniform(k_alpha, (b,))
      gp, norms = losses.gradient_penalty(single, batch['images'], fake, alpha,
                                          batch['durability'], batch['mass'], batch['fixed'])
      loss = loss + config.lambda_gp * gp
    return loss, dict(real_score=real_s.mean(), fake_score=fake_s.mean(), gradient_penalty=gp,
                      grad_norm=norms.mean(), aux_real_loss=aux_real,
                      wasserstein=losses.wasserstein_estimate(real_s, fake_s))

  (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.critic_params)
  updates, critic_opt = models.critic_tx.update(grads, state.critic_opt, state.critic_params)
  critic_params = optax.apply_updates(state.critic_params, updates)
  if config.loss_mode == 'wgan':
    critic_params = losses.clip_weights(critic_params, config.weight_clip, _not_aux_head)
  return state._replace(critic_params=critic_params, critic_opt=critic_opt), dict(
      critic_loss=loss, **aux)


def generator_step(config, models: Models, state: TrainState, batch, key):
  """One generator (+ Q head) update; returns (state, metrics)."""
  k_noise, _, k_gdrop, k_ddrop = jax.random.split(key, 4)  # the second: see critic_step
  b = batch['images'].shape[0]
  z = jax.random.normal(k_noise, (b, config.zdim))
  d_fake, m_fake = batch['durability'], batch['mass']

  def loss_fn(params):
    gen_params, q_params = params
    fake, gen_rest = generate(models, gen_params, state.gen_rest, z, d_fake, m_fake,
                              batch['fixed'], train=True, key=k_gdrop)
    critic = _critic(models, state.critic_params, q_params)
    rngs = dropout_rngs(k_ddrop)
    features = critic.features(fake, batch['fixed'], models.mask, train=True, rngs=rngs)
    fake_s = critic.score(features, d_fake, m_fake)
    adv = _generator_adversarial(config, fake_s)
    strut = losses.strut_penalty(fake, batch['fixed'], models.mask)
    info, q_real = jnp.zeros(()), jnp.zeros(())
    if config.gan_model == 'infogan':
      # The body is frozen here: Q learns to read the codes from the critic's features.
      info = losses.info_loss(*critic.q_head(features), d_fake, m_fake)
      real_features = jax.lax.stop_gradient(
          critic.features(batch['images'], batch['fixed'], models.mask, train=False))
      q_real = losses.info_loss(*critic.q_head(real_features), batch['durability'],
                                batch['mass'])
    aux = jnp.zeros(())
    if uses_aux(config):
      # The critic (with A) is frozen here: only G learns to be classified as requested.
      aux = losses.aux_class_loss(critic.aux_head(features), d_fake, m_fake,
                                  config.aux_regression)
    loss = (adv + config.constraint_lambda * strut + config.info_lambda * (info + q_real)
            + config.aux_lambda * aux)
    return loss, (gen_rest, dict(gen_loss=adv, strut_error=strut, info_loss=info,
                                 q_real_loss=q_real, aux_loss=aux,
                                 strut_max_error=losses.strut_max_error(fake, batch['fixed'],
                                                                        models.mask)))

  params = (state.gen_params, state.q_params)
  (_, (gen_rest, metrics)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, gen_opt = models.gen_tx.update(grads, state.gen_opt, params)
  gen_params, q_params = optax.apply_updates(params, updates)
  num_steps = state.step + 1
  gen_ema = update_ema(state.gen_ema, gen_params, num_steps, config.ema_decay)
  return state._replace(gen_params=gen_params, gen_ema=gen_ema, gen_rest=gen_rest,
                        q_params=q_params, gen_opt=gen_opt, step=num_steps), metrics


def update(config, models: Models, state: TrainState, batch):
  """critic_iter critic steps on the batch, then one generator step: (state, metrics)."""
  key, k_critic, k_gen = jax.random.split(state.key, 3)
  state = state._replace(key=key)

  def one_critic_step(s, k):
    return critic_step(config, models, s, batch, k)

  state, critic_metrics = jax.lax.scan(one_critic_step, state,
                                       jax.random.split(k_critic, config.critic_iter))
  state, gen_metrics = generator_step(config, models, state, batch, k_gen)
  metrics = {k: v[-1] for k, v in critic_metrics.items()}  # the last critic step's values
  # Of the last critic step's clipping too: once per update, not in every critic step.
  metrics['clip_fraction'] = (
      losses.clip_fraction(state.critic_params, config.weight_clip, _not_aux_head)
      if config.loss_mode == 'wgan' else jnp.zeros(()))
  metrics.update(gen_metrics)
  return state, {k: metrics[k] for k in METRICS}


def train_epoch(config, models: Models, state: TrainState, data, num_rows=None,
                batch_sharding=None):
  """One epoch: a lax.scan over shuffled full batches (the remainder is dropped, a different
  one each epoch, so shapes never change). Returns (state, per-step metrics (num_batches,)).

  Data parallel (gan.parallel): `data` is split by rows over a device mesh and padded, `num_rows`
  is its real length (the shuffle never picks padding, and equals the one-device shuffle) and
  each batch is constrained to `batch_sharding`, so every device updates on its share.
  """
  n = data['images'].shape[0] if num_rows is None else num_rows
  key, k_perm = jax.random.split(state.key)
  state = state._replace(key=key)
  order = shuffled_batches(k_perm, n, config.batch_size)

  def body(s, idx):
    batch = jax.tree.map(lambda a: a[idx], data)
    if batch_sharding is not None:
      batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
    return update(config, models, s, batch)

  return jax.lax.scan(body, state, order)


def shuffled_batches(key, num_rows: int, batch_size: int) -> jax.Array:
  """(num_rows // batch_size, batch_size) row indices: a permutation of range(num_rows) cut into
  full batches, the remainder dropped (a different one each epoch, the shape always the same)."""
  num_batches = num_rows // batch_size
  order = jax.random.permutation(key, num_rows)[:num_batches * batch_size]
  return order.reshape(num_batches, batch_size)


def compile_epoch(config, models: Models, num_seeds: int = 1, num_rows=None,
                  batch_sharding=None, out_sharding=None):
  """jit of train_epoch with the state donated (updated in place).

  num_seeds = K > 1: the state carries K models on a leading axis (see `init_sweep`) and the epoch
  is `jax.vmap`ped over it, with the dataset shared: K independent runs (each its own shuffle,
  noise and dropout from its own key) in one compiled program. Metrics are then (K, num_batches).
  The other arguments come from gan.parallel.epoch_options for a data-parallel run."""
  epoch = functools.partial(train_epoch, config, models, num_rows=num_rows,
                            batch_sharding=batch_sharding)
  if num_seeds > 1:
    epoch = jax.vmap(epoch, in_axes=(0, None))
  if out_sharding is None:
    return jax.jit(epoch, donate_argnums=0)
  return jax.jit(epoch, donate_argnums=0, out_shardings=out_sharding)


def finite(state: TrainState, num_seeds: int = 1) -> jax.Array:
  """Whether every floating-point array of the state is finite: a bool scalar, or (K,) for a
  sweep state (`init_sweep`), model by model.

  An epoch's metrics are the losses each update computed before it stepped, so none of them sees
  what the epoch's last update did: a generator that step made non-finite is caught only here,
  before the state is evaluated or checkpointed (the critic's would already show in that update's
  generator losses)."""
  checks = [jnp.all(jnp.isfinite(leaf), axis=tuple(range(1 if num_seeds > 1 else 0, leaf.ndim)))
            for leaf in jax.tree.leaves(state) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
  return functools.reduce(jnp.logical_and, checks,
                          jnp.ones((num_seeds,) if num_seeds > 1 else (), bool))


def sample(models: Models, gen_params, gen_rest, z, durability, mass, fixed):
  """Designs for requested conditions (eval mode), strut pixels set exactly to the request:
  x = mask * fixed + (1 - mask) * G(z, durability, mass, fixed).

  Callers pass `state.gen_ema` (`sampling_params`): the averaged generator is what is evaluated,
  drawn and exported."""
  images, _ = generate(models, gen_params, gen_rest, z, durability, mass, fixed, train=False)
  return models.mask * fixed + (1 - models.mask) * images


def compile_sampler(models: Models):
  """jit of `sample` for `models`: sample_fn(gen_params, gen_rest, z, durability, mass, fixed),
  the one sampler training (grids, evaluation, outputs) and inference both draw with."""
  return jax.jit(lambda p, r, *a: sample(models, p, r, *a))


def sampling_params(state: TrainState):
  """(generator parameters, generator batch statistics) to sample with: the EMA weights."""
  return state.gen_ema, state.gen_rest
