"""The learner's update: finite, compiled once, and the same on 1 or 2 devices."""

import os
import textwrap

import jax
import numpy as np
import pytest

import conftest
from muesli_jax import learner, losses, networks as nets
from muesli_jax.hparams import LearnerHparams, NetworkHparams
from configs import cartpole

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config():
  config = cartpole.get_config()
  config.batch_size = 4
  config.sequence_length = 6
  config.hidden_size = 16
  config.head_size = 16
  config.num_bins = 21
  config.value_min, config.value_max = -10.0, 10.0
  # Two model steps unroll like five (k > 1 included) and compile faster.
  config.unroll_steps = 2
  return config


def random_batch(config, num_actions, obs_dim, seed=0):
  """A batch with terminations, truncations and reset steps in it."""
  window = config.sequence_length + config.unroll_steps + 1
  return conftest.random_batch(config.batch_size, window, obs_dim,
                               num_actions=num_actions, seed=seed)


@pytest.mark.parametrize("value_target", ["retrace", "nstep", "mc"])
def test_update_is_finite_and_moves_params(value_target):
  config = small_config()
  config.value_target = value_target
  networks = small_networks(config)
  state = learner.init_state(networks, LearnerHparams.from_config(config),
                             jax.random.PRNGKey(0))
  before = jax.tree.map(np.array, state.params)
  traces = []
  inner = learner.make_update(networks, LearnerHparams.from_config(config))

  def counted(state, batch):
    traces.append(1)  # Runs once per trace, i.e. per compilation.
    return inner(state, batch)

  update = jax.jit(counted, donate_argnums=0)
  state, metrics = update(state, random_batch(config, 2, 4))
  for key, value in metrics.items():
    assert np.isfinite(value), key
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), before, state.params)
  assert max(jax.tree.leaves(moved)) > 0
  assert int(state.step) == 1
  # The target moved by target_update_rate of the way towards the params
  # (init_state starts it at the params, `before`).
  rate = config.target_update_rate
  expected = jax.tree.map(lambda new, old: rate * new + (1 - rate) * old,
                          state.params, before)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6,
                                                       atol=1e-7),
               state.target_params, expected)
  assert 0 < rate < 1  # so a target left behind or copied would fail
  assert np.isfinite(float(state.adv_norm.second_moment))
  # Later batches (and the donated state) reuse the one compilation.
  for seed in range(1, 4):
    state, _ = update(state, random_batch(config, 2, 4, seed))
  assert len(traces) == 1


def test_pmap_on_two_devices_equals_one_device():
  """Two forced CPU devices, each with half the batch, give the same update."""
  script = textwrap.dedent("""
      import jax, numpy as np
      assert jax.local_device_count() == 2, jax.devices()
      from muesli_jax import learner, networks as nets
      from muesli_jax.hparams import LearnerHparams, NetworkHparams
      from tests.test_learner import small_config, random_batch
      from tests.test_learner import small_networks
      config = small_config()
      nets_ = small_networks(config)
      state = learner.init_state(nets_, LearnerHparams.from_config(config),
                                 jax.random.PRNGKey(1))
      one = jax.jit(learner.make_update(nets_,
                                        LearnerHparams.from_config(config)))
      two = jax.pmap(learner.make_update(
          nets_, LearnerHparams.from_config(config), learner.AXIS),
                     axis_name=learner.AXIS)
      s1, s2 = state, jax.tree.map(lambda x: np.stack([x, x]), state)
      for seed in range(3):
        batch = random_batch(config, 2, 4, seed)
        s1, m1 = one(s1, batch)
        s2, m2 = two(s2, jax.tree.map(
            lambda x: x.reshape((2, -1) + x.shape[1:]), batch))
      diff = jax.tree.map(lambda a, b: float(np.abs(a - b[0]).max()), s1, s2)
      worst = max(jax.tree.leaves(diff))
      replicas = jax.tree.map(lambda b: float(np.abs(b[0] - b[1]).max()), s2)
      loss_diff = abs(float(m1["loss"]) - float(m2["loss"][0]))
      print("max diff", worst, max(jax.tree.leaves(replicas)), loss_diff)
      assert worst < 1e-5 and loss_diff < 1e-5
      assert max(jax.tree.leaves(replicas)) == 0.0
      """)
  env = conftest.script_env(devices=2, path=(os.path.join(REPO, "tests"),))
  result = conftest.run_python(script, env=env)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  assert "max diff" in result.stdout


# ---------------------------------------------------------------------------
# The update's parts, one at a time.

SUPPORT = np.linspace(-10.0, 10.0, 21).astype(np.float32)  # bin n at n - 10


def h_inverse(x, eps=1e-3):
  """A scalar whose h-transform is `x`, i.e. which sits on a support point."""
  # rlax.signed_parabolic in float64: in float32 it cancels badly enough to
  # put ~1e-4 of the two-hot target on the neighbouring bin.
  x = np.asarray(x, np.float64)
  root = (np.sqrt(1 + 4 * eps * (eps + 1 + np.abs(x))) - 1) / (2 * eps)
  return (np.sign(x) * (root ** 2 - 1)).astype(np.float32)


def peaked_logits(bins, num_bins=21, height=50.0):
  """`[..., N]` logits with (all but) all mass on `bins[...]`."""
  return np.array(height * jax.nn.one_hot(bins, num_bins), np.float32)


def small_networks(config):
  return nets.make_networks(NetworkHparams.from_config(config), (4,), 2)


def test_unroll_masks_cut_at_resets_and_absorb_after_terminations():
  # Sequence 0 terminates out of step 1 (step 2 is the reset step); sequence
  # 1 is truncated after step 2 (step 3 is the reset step, discount 0 there
  # too). T = 2, K = 2, W = 5.
  mask = np.array([[1, 1, 0, 1, 1], [1, 1, 1, 0, 1]], np.float32)
  discount = np.array([[1, 0, 0, 1, 1], [1, 1, 1, 0, 1]], np.float32)
  batch = learner.Batch(*([None] * 3), discount=discount, mask=mask,
                        behaviour_logits=None, mc_return=None, mc_valid=None)
  valid, absorbing = learner.unroll_masks(batch, K=2, T=2)
  np.testing.assert_array_equal(valid, [[[1, 1, 0], [1, 0, 0]],
                                        [[1, 1, 1], [1, 1, 0]]])
  # Only a termination makes the model's later steps absorbing.
  np.testing.assert_array_equal(absorbing, [[[0, 0, 1], [0, 1, 1]],
                                            [[0, 0, 0], [0, 0, 0]]])


def test_one_step_lookahead_orders_q_by_state_and_action():
  config = small_config()
  networks = small_networks(config)
  params = networks.init(jax.random.PRNGKey(3))
  # The heads' output layers start at zero, which makes every q the same.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
  params = jax.tree.unflatten(tree, [
      x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  B, W, A = 2, 3, 2
  obs = np.random.default_rng(0).normal(size=(B * W, 4)).astype(np.float32)
  hidden = networks.represent(params, obs)  # [B*W, H]
  q = learner.one_step_lookahead(networks, params,
                                 hidden.reshape(B, W, -1), 0.9, SUPPORT)
  assert q.shape == (B, W, A)
  for a in range(A):  # Each action from every state, through the networks.
    next_hidden, reward_logits = networks.dynamics(
        params, hidden, np.full(B * W, a, np.int32))
    value_logits = networks.predict(params, next_hidden).value_logits
    expected = (losses.categorical_to_scalar(reward_logits, SUPPORT) +
                0.9 * losses.categorical_to_scalar(value_logits, SUPPORT))
    np.testing.assert_allclose(q[..., a], expected.reshape(B, W),
                               rtol=1e-5, atol=1e-5)
  # Distinct enough that a mix-up of states or actions shows.
  assert np.abs(q[..., 0] - q[..., 1]).min() > 1e-3
  assert np.abs(q[0, 0] - q[0, 1]).min() > 1e-3


@pytest.mark.parametrize("value_target", ["retrace", "nstep", "mc"])
def test_prior_targets_shapes(value_target):
  config = small_config()
  config.value_target = value_target
  networks = small_networks(config)
  state = learner.init_state(networks, LearnerHparams.from_config(config),
                             jax.random.PRNGKey(0))
  targets, adv_norm = learner.prior_targets(
      networks, config, state.target_params, random_batch(config, 2, 4),
      state.adv_norm)
  assert isinstance(targets, learner.Targets)
  assert isinstance(adv_norm, losses.AdvNormState)
  B, T, K, A = config.batch_size, config.sequence_length, config.unroll_steps, 2
  W = T + K + 1
  shapes = {name: np.shape(value) for name, value in targets._asdict().items()}
  assert shapes == dict(returns=(B, W - 1), pg_adv=(B, T),
                        cmpo_logits=(B, W, A), v_prior=(B, W), sigma=(),
                        adv_mask=(B, T), q_prior=(B, W, A),
                        # Sampled CMPO's fields: None for discrete actions.
                        sample_actions=(), sample_weights=(),
                        sample_log_cmpo=())
  assert targets.sample_actions is None
  # pi_cmpo is a distribution at every step.
  np.testing.assert_allclose(
      jax.scipy.special.logsumexp(targets.cmpo_logits, -1), 0.0, atol=1e-5)


@pytest.mark.parametrize("value_target", ["retrace", "mc"])
def test_policy_loss_term_drops_only_the_pg_where_the_mc_return_is_unknown(
    value_target):
  config = small_config()
  config.value_target = value_target
  batch = random_batch(config, 2, 4)
  rng = np.random.default_rng(1)
  B, T = config.batch_size, config.sequence_length
  W = batch.action.shape[1]
  mc_valid = np.ones((B, W), np.float32)
  mc_valid[0, 2:] = 0.0
  batch = batch._replace(mc_valid=mc_valid)
  targets = learner.Targets(
      returns=None, pg_adv=rng.normal(size=(B, T)).astype(np.float32),
      cmpo_logits=jax.nn.log_softmax(
          rng.normal(size=(B, W, 2)).astype(np.float32)),
      v_prior=None, sigma=None, adv_mask=None, q_prior=None)
  logits = rng.normal(size=(B, T, 2)).astype(np.float32)
  pg, extras = learner.policy_loss_term(LearnerHparams.from_config(config),
                                        logits, batch, targets)
  assert pg.shape == (B, T)
  with_pg = extras["pg_loss"] + config.kl_weight * extras["kl"]
  assert np.abs(extras["pg_loss"]).min() > 0  # so the check below can fail
  if value_target == "mc":
    expected = np.where(mc_valid[:, :T] > 0, with_pg,
                        config.kl_weight * extras["kl"])
  else:  # Other targets ignore mc_valid.
    expected = with_pg
  np.testing.assert_allclose(pg, expected, atol=1e-6)


def test_model_loss_term_is_zero_at_the_targets_and_where_masked():
  rng = np.random.default_rng(2)
  B, T, K, A = 2, 3, 2, 3
  cmpo = np.asarray(jax.nn.log_softmax(
      rng.normal(size=(B, T + K + 1, A)).astype(np.float32)))
  valid = np.ones((B, T, K + 1), np.float32)
  # Model step k from s_t is trained toward pi_cmpo at s_{t+k}.
  idx = np.arange(T)[:, None] + np.arange(1, K + 1)[None, :]  # [T, K]
  at_target = learner.model_loss_term(cmpo[:, idx], cmpo, valid)
  assert at_target.shape == (B, T)
  np.testing.assert_allclose(at_target, 0.0, atol=1e-6)
  off_by_one = learner.model_loss_term(cmpo[:, idx - 1], cmpo, valid)
  assert np.all(off_by_one > 1e-4)
  masked = learner.model_loss_term(cmpo[:, idx - 1], cmpo, 0.0 * valid)
  np.testing.assert_array_equal(masked, 0.0)


def test_value_loss_term_is_zero_on_support_points_and_absorbs_to_zero():
  B, T, K = 1, 3, 2
  # returns[j] sits on bin 11 + j (h-value 1 + j) for steps j = 0..T+K-1.
  returns = h_inverse(1.0 + np.arange(T + K))[None]  # [1, T+K]
  bins = 11 + np.arange(T)[:, None] + np.arange(K + 1)[None, :]  # [T, K+1]
  logits = peaked_logits(bins)[None]  # [1, T, K+1, N]
  valid = np.ones((B, T, K + 1), np.float32)
  absorbing = np.zeros_like(valid)
  on_target = learner.value_loss_term(logits[:, :, 0], logits[:, :, 1:],
                                      returns, valid, absorbing, SUPPORT)
  assert on_target.shape == (B, T)
  np.testing.assert_allclose(on_target, 0.0, atol=1e-3)
  shifted = learner.value_loss_term(logits[:, :, 1], logits[:, :, 1:],
                                    returns, valid, absorbing, SUPPORT)
  assert np.all(shifted > 1.0)
  # Past a termination the target is 0 (bin 10), whatever `returns` says.
  valid[0, 0, 2] = 0.0
  absorbing[0, 0, 2] = 1.0
  logits[0, 0, 2] = peaked_logits(10)
  absorbed = learner.value_loss_term(logits[:, :, 0], logits[:, :, 1:],
                                     returns, valid, absorbing, SUPPORT)
  np.testing.assert_allclose(absorbed, 0.0, atol=1e-3)
  # Neither real nor absorbing: no loss at all.
  none = learner.value_loss_term(logits[:, :, 0], logits[:, :, 1:], returns,
                                 0.0 * valid, 0.0 * absorbing, SUPPORT)
  np.testing.assert_array_equal(none, 0.0)


def test_value_loss_term_ignores_unknown_mc_returns():
  B, T, K = 1, 2, 1
  returns = np.full((B, T + K), 3.0, np.float32)
  logits = np.zeros((B, T, K + 1, 21), np.float32)  # uniform: log(21) each
  valid = np.ones((B, T, K + 1), np.float32)
  mc_valid = np.array([[1, 0, 1, 1]], np.float32)  # return of step 1 unknown
  out = learner.value_loss_term(logits[:, :, 0], logits[:, :, 1:], returns,
                                valid, 0.0 * valid, SUPPORT, mc_valid)
  # t = 0 sees steps 0, 1 and t = 1 steps 1, 2: one known step each.
  np.testing.assert_allclose(out, [[np.log(21) / 2, np.log(21) / 2]],
                             rtol=1e-6)


def test_reward_loss_term_predicts_the_transition_out_of_step_t_plus_k_minus_1():
  B, T, K = 1, 3, 2
  reward = h_inverse(-1.0 - np.arange(T + K + 1))[None]  # step j on bin 9 - j
  bins = 9 - (np.arange(T)[:, None] + np.arange(K)[None, :])  # t + k - 1
  logits = peaked_logits(bins)[None]  # [1, T, K, N]
  valid = np.ones((B, T, K + 1), np.float32)
  absorbing = np.zeros_like(valid)
  on_target = learner.reward_loss_term(logits, reward, valid, absorbing,
                                       SUPPORT)
  assert on_target.shape == (B, T)
  np.testing.assert_allclose(on_target, 0.0, atol=1e-3)
  late = learner.reward_loss_term(peaked_logits(bins - 1)[None], reward,
                                  valid, absorbing, SUPPORT)
  assert np.all(late > 1.0)
  none = learner.reward_loss_term(logits, reward, 0.0 * valid,
                                  0.0 * absorbing, SUPPORT)
  np.testing.assert_array_equal(none, 0.0)


def test_loss_is_the_weighted_sum_of_its_terms():
  config = small_config()
  config.entropy_weight = 0.01
  networks = small_networks(config)
  state = learner.init_state(networks, LearnerHparams.from_config(config),
                             jax.random.PRNGKey(0))
  batch = random_batch(config, 2, 4)
  targets, _ = learner.prior_targets(networks,
                                     LearnerHparams.from_config(config),
                                     state.target_params,
                                     batch, state.adv_norm)
  total, m = learner.loss(networks, LearnerHparams.from_config(config),
                          state.params, batch, targets)
  expected = (config.pg_weight * m["policy_loss"] +
              config.model_weight * m["model_loss"] +
              config.value_weight * m["value_loss"] +
              config.reward_weight * m["reward_loss"] -
              config.entropy_weight * m["entropy"])
  np.testing.assert_allclose(total, expected, rtol=1e-5)
  assert total == m["loss"]
  # Two of the 4 * 6 learning positions are reset steps in `random_batch`.
  np.testing.assert_allclose(m["valid_fraction"], 22 / 24)
