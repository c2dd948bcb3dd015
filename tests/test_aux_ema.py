"""Tests of the auxiliary classifier (AC-GAN) term and the generator EMA (gan/step.py).

Tiny networks on the session's 240 generated designs; every check runs single compiled steps, so
the module takes seconds. What is asserted: which labels each auxiliary term is given, which
optimiser moves the auxiliary head, the EMA recurrence, sampling from the EMA, and that a
checkpoint written before either existed still loads.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from gan import checkpoints
from gan import config as config_lib
from gan import data
from gan import inference
from gan import losses
from gan import step
from gan import trainer
from gan.errors import ConfigError
from tests.helpers import record_labels, spread_batch
from tests.test_train import changed_leaves, leaves, setup, tiny_config


pytestmark = pytest.mark.usefixtures('fast_compilation')


def _record_aux_targets(monkeypatch):
  """Patches losses.aux_class_loss and step.generate to record the labels they are given;
  returns the record dict {'aux_class_loss': [(d, m), ...], 'generate': [...]}."""
  calls = {'aux_class_loss': [], 'generate': []}
  record = lambda kind, d, m: calls[kind].append((d, m))
  record_labels(monkeypatch, losses, 'aux_class_loss', (1, 2), record)
  record_labels(monkeypatch, step, 'generate', (4, 5), record)
  return calls


# ---------------------------------------------------------------------------------------------
# The auxiliary classifier


def test_aux_class_loss_formula():
  """CE of each label + w_r * squared error of the class indices, both averaged over the batch."""
  d_logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
  m_logits = jnp.array([[0.0, 1.0], [3.0, -2.0]])
  reg = jnp.array([[0.5, 1.0], [1.0, 0.0]])
  d, m = jnp.array([0, 2]), jnp.array([1, 0])
  ce = lambda l, k: -np.log(np.exp(l[k]) / np.exp(l).sum())
  expected_ce = (np.mean([ce(np.asarray(d_logits[i]), int(d[i])) for i in range(2)])
                 + np.mean([ce(np.asarray(m_logits[i]), int(m[i])) for i in range(2)]))
  np.testing.assert_allclose(losses.aux_class_loss((d_logits, m_logits), d, m), expected_ce,
                             rtol=1e-6)
  # Regression: (0.5-0)^2, (1-2)^2 for durability; (1-1)^2, (0-0)^2 for mass.
  expected_reg = np.mean([0.25, 1.0]) + np.mean([0.0, 0.0])
  np.testing.assert_allclose(losses.aux_class_loss((d_logits, m_logits, reg), d, m, 0.5),
                             expected_ce + 0.5 * expected_reg, rtol=1e-6)
  # Weight 0 ignores the regression output.
  np.testing.assert_allclose(losses.aux_class_loss((d_logits, m_logits, reg), d, m, 0.0),
                             expected_ce, rtol=1e-6)
  # A head without the regression output: the term is left out, whatever the weight.
  np.testing.assert_allclose(losses.aux_class_loss((d_logits, m_logits), d, m, 0.5),
                             expected_ce, rtol=1e-6)


@pytest.mark.parametrize('gan_model', ['vanilla', 'infogan'])
def test_aux_terms_target_real_labels_and_requested_classes(gan_model, small_design_dir, tmp_path,
                                                            monkeypatch):
  """Critic step: A is asked for the real batch's labels. Generator step: A is asked for exactly
  the classes the generator was conditioned on: the batch labels (InfoGAN's codes too)."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), gan_model=gan_model,
      loss_mode='wgangp', aux_lambda=1.0, aux_regression=0.5))
  batch = spread_batch(config, dataset)
  labels = (np.asarray(batch['durability']), np.asarray(batch['mass']))
  calls = _record_aux_targets(monkeypatch)

  _, metrics = jax.jit(functools.partial(step.critic_step, config, models))(
      state, batch, jax.random.PRNGKey(1))
  jax.effects_barrier()
  assert len(calls['aux_class_loss']) == 1
  np.testing.assert_array_equal(calls['aux_class_loss'][0][0], labels[0])
  np.testing.assert_array_equal(calls['aux_class_loss'][0][1], labels[1])
  assert metrics['aux_real_loss'] > 0

  calls['aux_class_loss'].clear(), calls['generate'].clear()
  _, metrics = jax.jit(functools.partial(step.generator_step, config, models))(
      state, batch, jax.random.PRNGKey(2))
  jax.effects_barrier()
  assert len(calls['aux_class_loss']) == 1 and len(calls['generate']) == 1
  (aux_d, aux_m), (gen_d, gen_m) = calls['aux_class_loss'][0], calls['generate'][0]
  np.testing.assert_array_equal(aux_d, gen_d)
  np.testing.assert_array_equal(aux_m, gen_m)
  np.testing.assert_array_equal(aux_d, labels[0])
  np.testing.assert_array_equal(aux_m, labels[1])
  assert metrics['aux_loss'] > 0


def test_the_regression_term_counts_in_both_aux_losses(small_design_dir, tmp_path):
  """L_A = CE + w_r * 2 * mean squared class-index error: at w_r = 0.5, 1 and 1.5 (one model:
  the regression output exists for any w_r > 0) the critic's loss on real designs and the
  generator's on its fakes each grow by one positive step per 0.5."""
  values = []
  for w in (0.5, 1.0, 1.5):
    config, dataset, models, state = setup(tiny_config(
        data_path=small_design_dir, log_path=str(tmp_path / 'run'), aux_lambda=1.0,
        aux_regression=w))
    batch = spread_batch(config, dataset)
    with jax.disable_jit():  # op by op: three compiles of each step took longer
      _, critic = step.critic_step(config, models, state, batch, jax.random.PRNGKey(1))
      _, generator = step.generator_step(config, models, state, batch, jax.random.PRNGKey(2))
    values.append((float(critic['aux_real_loss']), float(generator['aux_loss'])))
  steps = np.diff(np.array(values), axis=0)
  assert np.all(steps > 1e-4), values
  np.testing.assert_allclose(steps[1], steps[0], rtol=1e-3)


def test_aux_head_is_trained_by_the_critic_only_and_never_clipped(small_design_dir, tmp_path):
  """The head is part of the critic's parameters: the critic step moves it (and the body), the
  generator step does not; WGAN weight clipping leaves it alone."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), loss_mode='wgan',
      aux_lambda=1.0))
  aux_keys = [k for k in leaves(state.critic_params) if 'aux_head' in k]
  assert aux_keys and not leaves(state.q_params)
  batch = spread_batch(config, dataset)
  after_critic, _ = jax.jit(functools.partial(step.critic_step, config, models))(
      state, batch, jax.random.PRNGKey(1))
  changed = changed_leaves(state.critic_params, after_critic.critic_params)
  assert set(aux_keys) <= set(changed)
  critic_after = leaves(after_critic.critic_params)
  assert any(np.abs(critic_after[k]).max() > config.weight_clip for k in aux_keys
             if critic_after[k].ndim >= 2)
  for key, value in critic_after.items():
    if value.ndim >= 2 and key not in aux_keys:
      assert np.abs(value).max() <= config.weight_clip, key
  after_gen, _ = jax.jit(functools.partial(step.generator_step, config, models))(
      after_critic, batch, jax.random.PRNGKey(2))
  assert not changed_leaves(after_critic.critic_params, after_gen.critic_params)


def test_aux_off_builds_no_head(small_design_dir, tmp_path):
  config, _, _, state = setup(tiny_config(data_path=small_design_dir,
                                          log_path=str(tmp_path / 'run'), aux_lambda=0.0))
  assert not [k for k in leaves(state.critic_params) if 'aux_head' in k]
  assert set(step.active_metrics(config)).isdisjoint({'aux_loss', 'aux_real_loss'})


def test_aux_config_is_checked():
  config = tiny_config(aux_lambda=1.0, aux_lambda_critic=0.0)
  with pytest.raises(ConfigError, match='aux_lambda_critic'):
    config_lib.resolve(config)
  with pytest.raises(ConfigError, match=r'ema_decay.*\[0, 1\)'):
    config_lib.resolve(tiny_config(ema_decay=1.0))
  # The head's presence is part of the model (resuming without it is refused), its weight not.
  on, off = config_lib.model_fields(tiny_config()), config_lib.model_fields(
      tiny_config(aux_lambda=0.0))
  assert on['aux_head'] and not off['aux_head']
  assert on == config_lib.model_fields(tiny_config(aux_lambda=0.3, aux_lambda_critic=2.0))


# ---------------------------------------------------------------------------------------------
# The generator EMA


@pytest.mark.parametrize('decay', [0.0, 0.9, 0.999])
def test_ema_follows_its_formula(decay, small_design_dir, tmp_path):
  """After a generator step t -> t+1: G_ema = beta G_ema_old + (1 - beta) G_new with
  beta = min(decay, (t + 2) / (t + 11)); decay 0 gives G_ema = G. Checked at t = 0 and t = 200
  (where the warm-up rule no longer binds for decay 0.9)."""
  config, dataset, models, state = setup(tiny_config(
      data_path=small_design_dir, log_path=str(tmp_path / 'run'), ema_decay=decay))
  batch = spread_batch(config, dataset)
  gen_step = jax.jit(functools.partial(step.generator_step, config, models))
  # An average that differs from the weights, so that both terms of the formula show.
  old_ema = jax.tree.map(lambda x: x + 0.5, state.gen_params)
  for t in (0, 200):
    before = state._replace(step=jnp.asarray(t, jnp.int32), gen_ema=old_ema)
    after, _ = gen_step(before, batch, jax.random.PRNGKey(t))
    beta = min(decay, (t + 2) / (t + 11))
    assert changed_leaves(before.gen_params, after.gen_params)
    expected = jax.tree.map(lambda e, p: beta * e + (1 - beta) * p, old_ema, after.gen_params)
    for key, value in leaves(after.gen_ema).items():
      np.testing.assert_allclose(value, leaves(expected)[key], rtol=1e-6, atol=1e-6,
                                 err_msg=key)
    if decay == 0:
      for key, value in leaves(after.gen_ema).items():
        np.testing.assert_array_equal(value, leaves(after.gen_params)[key])
  assert float(step.ema_decay_at(0, 0.999)) == pytest.approx(0.1)
  assert float(step.ema_decay_at(10 ** 6, 0.999)) == pytest.approx(0.999)


@pytest.fixture(scope='module')
def ema_run(small_design_dir, tmp_path_factory):
  config = tiny_config(data_path=small_design_dir, eval_every=0, ema_decay=0.9,
                       log_path=str(tmp_path_factory.mktemp('ema') / 'run'))
  return config, trainer.train(config)


def test_inference_samples_with_the_ema_weights(ema_run):
  """inference.generate (and with it gan.evaluate) draws from G_ema, which differs from G."""
  _, result = ema_run
  model = inference.load(result['log_path'])
  assert changed_leaves(model.state.gen_params, model.state.gen_ema)
  n = 6
  d, m = np.arange(n) % 3, np.arange(n) % 4
  fixed = np.repeat(inference.fixed_pixels(model, [[200, 100, 50], [10, 20, 30]])[None], n, 0)
  got = inference.generate(model, d, m, fixed, seed=3)
  z = jax.random.normal(jax.random.PRNGKey(3), (n, model.config.zdim))
  for params, same in ((model.state.gen_ema, True), (model.state.gen_params, False)):
    images = step.sample(model.models, params, model.state.gen_rest, z, jnp.asarray(d, jnp.int32),
                         jnp.asarray(m, jnp.int32), fixed)
    full = model.spec.layout.to_full(data.denormalize(np.asarray(images)))
    assert np.array_equal(full, got) == same


def test_checkpoint_without_ema_or_aux_head_still_loads(ema_run, tmp_path):
  """A run saved before gen_ema and the auxiliary head existed (state without gen_ema, config
  without the new fields) loads: no aux head, and G_ema starts as the saved G."""
  _, result = ema_run
  current = inference.load(result['log_path'])
  old_config = current.config.to_dict()
  for key in config_lib.LEGACY_VALUES:
    old_config.pop(key)
  _, state = step.init(config_lib.resolve(ml_collections.ConfigDict(
      config_lib.with_legacy_values(old_config))), current.spec, current.models.mask)
  state = state._replace(gen_params=jax.tree.map(lambda x: x + 0.25, state.gen_params))
  old_state = {k: v for k, v in state._asdict().items() if k != 'gen_ema'}
  mngr = checkpoints.manager(str(tmp_path / 'old' / 'checkpoints'), 3)
  meta = {'config': old_config, 'spec': current.spec.to_dict(), 'oracle_applies': False,
          'epoch': 1}
  mngr.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(old_state),
                                       meta=ocp.args.JsonSave(meta)))
  mngr.wait_until_finished()
  model = inference.load(str(tmp_path / 'old'))
  assert model.config.aux_lambda == 0 and model.config.ema_decay == 0
  # nor the metadata of its data: no fingerprint, no untrained classes ({}, which callers read)
  assert model.data_fingerprint is None and model.untrained_classes == {}
  assert not [k for k in leaves(model.state.critic_params) if 'aux_head' in k]
  assert not changed_leaves(state.gen_params, model.state.gen_params)
  assert not changed_leaves(state.gen_params, model.state.gen_ema)


# ---------------------------------------------------------------------------------------------
# Learning-rate decay


def test_learning_rate_schedule_decays_linearly_then_holds():
  assert step.learning_rate_schedule(2e-4, 0, 0.1) == 2e-4  # constant: a plain float
  schedule = step.learning_rate_schedule(2e-4, 100, 0.1)
  for k, expected in ((0, 2e-4), (50, 1.1e-4), (100, 2e-5), (1000, 2e-5)):
    assert float(schedule(k)) == pytest.approx(expected, rel=1e-5), k


def test_lr_decay_changes_the_updates_and_is_checked(small_design_dir, tmp_path):
  """With a decay the optimiser applies the scheduled lr: at the first update it equals the
  constant optimiser's, at the end of the decay it is lr_final_fraction of it."""
  base = dict(data_path=small_design_dir, log_path=str(tmp_path / 'run'))
  config, dataset, models, state = setup(tiny_config(lr_decay_steps=4, lr_final_fraction=0.25,
                                                     **base))
  _, _, const_models, _ = setup(tiny_config(lr_decay_steps=0, **base))
  grads = jax.tree.map(jnp.ones_like, (state.gen_params, state.q_params))
  params = (state.gen_params, state.q_params)
  opt = models.gen_tx.init(params)
  const_opt = const_models.gen_tx.init(params)
  for k in range(6):
    upd, opt = models.gen_tx.update(grads, opt, params)
    const_upd, const_opt = const_models.gen_tx.update(grads, const_opt, params)
    ratio = leaves(upd[0]).popitem()[1] / leaves(const_upd[0]).popitem()[1]
    expected = 1 - 0.75 * min(k, 4) / 4
    np.testing.assert_allclose(ratio, expected, rtol=1e-5)
  # The critic's schedule spans lr_decay_steps x critic_iter of its own updates: it reaches its
  # final lr at the same generator step as the generator's, not critic_iter times earlier.
  config, _, models, state = setup(tiny_config(lr_decay_steps=4, lr_final_fraction=0.25,
                                               critic_iter=3, **base))
  _, _, const_models, _ = setup(tiny_config(lr_decay_steps=0, critic_iter=3, **base))
  grads = jax.tree.map(jnp.ones_like, state.critic_params)
  opt = models.critic_tx.init(state.critic_params)
  const_opt = const_models.critic_tx.init(state.critic_params)
  for k in range(14):
    upd, opt = models.critic_tx.update(grads, opt, state.critic_params)
    const_upd, const_opt = const_models.critic_tx.update(grads, const_opt, state.critic_params)
    ratio = leaves(upd).popitem()[1] / leaves(const_upd).popitem()[1]
    np.testing.assert_allclose(ratio, 1 - 0.75 * min(k, 12) / 12, rtol=1e-5, err_msg=str(k))
  with pytest.raises(ConfigError, match='lr_final_fraction'):
    config_lib.resolve(tiny_config(lr_final_fraction=0.0))
  assert config_lib.model_fields(tiny_config(lr_decay_steps=4))['lr_decay']
  assert not config_lib.model_fields(tiny_config(lr_decay_steps=0))['lr_decay']
