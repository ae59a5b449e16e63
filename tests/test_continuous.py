"""Continuous actions: the Gaussian policy, sampled CMPO and the update."""

import json
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import conftest
from muesli_jax import learner, losses, networks as nets, training
from muesli_jax.config import load_config_file, validate
from muesli_jax.replay import SequenceReplay
from muesli_jax.hparams import LearnerHparams, NetworkHparams
from configs import pendulum

evaluate_script = conftest.load_script("evaluate")


# ------------------------------------------------------------------ losses

@settings(deadline=None, max_examples=30)
@given(st.lists(st.floats(-5.0, 5.0), min_size=1, max_size=12),
       st.floats(0.1, 3.0), st.floats(0.1, 2.0))
def test_sampled_cmpo_weights_are_the_leave_one_out_formula(adv, clip, z_init):
  adv = np.array(adv, np.float32)
  got = np.asarray(losses.sampled_cmpo_weights(jnp.asarray(adv), clip, z_init))
  w = np.exp(np.clip(adv.astype(np.float64), -clip, clip))
  n = len(adv)
  z = np.array([(z_init + w.sum() - w[i]) / n for i in range(n)])
  np.testing.assert_allclose(got, w / z / n, rtol=1e-5)
  if z_init == 1.0:
    assert np.all(got <= np.exp(clip) * (1 + 1e-6))


def test_sampled_weights_are_uniform_for_equal_advantages():
  omega = losses.sampled_cmpo_weights(jnp.full((3, 16), 0.7))
  np.testing.assert_allclose(omega, np.full((3, 16), np.exp(0.7) / (
      1 + 15 * np.exp(0.7))), rtol=1e-6)


def test_sampled_kl_estimates_the_exact_kl_and_its_gradient():
  """On a discrete policy, where the exact KL to pi_cmpo is known, the
  sampled estimate from many prior samples matches its value and gradient."""
  rng = np.random.default_rng(0)
  num_actions, num_samples = 5, 100_000
  prior = jnp.asarray(rng.normal(size=num_actions), jnp.float32)
  adv = jnp.asarray(rng.normal(size=num_actions) * 1.5, jnp.float32)
  logits = jnp.asarray(rng.normal(size=num_actions), jnp.float32)
  cmpo = losses.cmpo_policy_logits(prior, adv, clip=1.0)
  actions = jax.random.categorical(jax.random.PRNGKey(1), prior,
                                   shape=(num_samples,))
  sample_adv = adv[actions]
  omega = losses.sampled_cmpo_weights(sample_adv, 1.0)
  log_cmpo = losses.sampled_cmpo_log_probs(
      jax.nn.log_softmax(prior)[actions], sample_adv, 1.0)

  def exact(lg):
    return losses.categorical_kl(cmpo, lg)

  def sampled(lg):
    return losses.sampled_kl(jax.nn.log_softmax(lg)[actions], omega, log_cmpo)

  np.testing.assert_allclose(sampled(logits), exact(logits), atol=0.02)
  np.testing.assert_allclose(jax.grad(sampled)(logits),
                             jax.grad(exact)(logits), atol=0.03)
  # Its value is 0 at pi = pi_cmpo, up to the normaliser's sampling error.
  assert abs(float(sampled(cmpo))) < 0.02


def test_sampled_policy_loss_has_the_policy_gradient_of_policy_loss():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  behaviour = jnp.asarray(rng.normal(size=(6, 4)), jnp.float32)
  actions = jnp.asarray(rng.integers(0, 4, 6), jnp.int32)
  adv = jnp.asarray(rng.normal(size=6), jnp.float32)
  take = lambda lg: jnp.take_along_axis(jax.nn.log_softmax(lg),
                                        actions[:, None], -1)[:, 0]
  for form in losses.POLICY_GRADIENT_FORMS:
    def discrete(lg):
      _, extras = losses.policy_loss(lg, behaviour, actions, adv, lg,
                                     ratio_clip=0.8, form=form)
      return jnp.sum(extras["pg_loss"])

    def sampled(lg):
      _, extras = losses.sampled_policy_loss(
          take(lg), take(behaviour), adv, jnp.zeros((6, 3)), jnp.zeros((6, 3)),
          ratio_clip=0.8, form=form)
      return jnp.sum(extras["pg_loss"])

    np.testing.assert_allclose(sampled(logits), discrete(logits), rtol=1e-6)
    np.testing.assert_allclose(jax.grad(sampled)(logits),
                               jax.grad(discrete)(logits), rtol=1e-5,
                               atol=1e-7)


def test_retrace_from_log_probs_equals_retrace_on_discrete_actions():
  rng = np.random.default_rng(2)
  t, a = 7, 3
  q, v, r = (jnp.asarray(rng.normal(size=n), jnp.float32)
             for n in (t - 1, t, t))
  discount = jnp.asarray(rng.uniform(0.5, 1.0, t), jnp.float32)
  pi, mu = (jnp.asarray(rng.normal(size=(t - 1, a)), jnp.float32)
            for _ in range(2))
  actions = jnp.asarray(rng.integers(0, a, t - 1), jnp.int32)
  take = lambda lg: jnp.take_along_axis(jax.nn.log_softmax(lg),
                                        actions[:, None], -1)[:, 0]
  np.testing.assert_allclose(
      losses.retrace_targets_from_log_probs(q, v, r, discount, take(pi),
                                            take(mu), 0.9),
      losses.retrace_targets(q, v, r, discount, pi, mu, actions, 0.9),
      rtol=1e-6)


# ---------------------------------------------------------------- networks

def test_gaussian_log_prob_and_entropy_match_the_formulas():
  mean, std = np.array([0.3, -0.5]), np.array([0.2, 1.5])
  policy = jnp.asarray(np.concatenate([mean, std]), jnp.float32)
  x = np.array([0.1, 0.4])
  expected = np.sum(-0.5 * ((x - mean) / std) ** 2 - np.log(std) -
                    0.5 * np.log(2 * np.pi))
  np.testing.assert_allclose(nets.gaussian_log_prob(policy, x), expected,
                             rtol=1e-6)
  np.testing.assert_allclose(nets.gaussian_entropy(policy),
                             np.sum(0.5 * np.log(2 * np.pi * np.e * std**2)),
                             rtol=1e-6)
  samples = nets.gaussian_sample(jax.random.PRNGKey(0), policy, 20000)
  assert samples.shape == (20000, 2)
  np.testing.assert_allclose(samples.mean(0), mean, atol=0.03)
  np.testing.assert_allclose(samples.std(0), std, rtol=0.03)


def test_squashed_gaussian_is_the_density_of_tanh_of_a_gaussian():
  mean, std = np.array([0.8, -2.0]), np.array([0.5, 1.2])
  policy = jnp.asarray(np.concatenate([mean, std]), jnp.float32)
  # The change of variables a = tanh(u), written out independently.
  a = np.array([0.6, -0.97])
  u = np.arctanh(a)
  expected = np.sum(-0.5 * ((u - mean) / std) ** 2 - np.log(std) -
                    0.5 * np.log(2 * np.pi) - np.log(1 - a ** 2))
  np.testing.assert_allclose(nets.gaussian_log_prob(policy, a, squash=True),
                             expected, rtol=1e-5)
  # Each dimension's density integrates to 1 over (-1, 1).
  grid = np.linspace(-1 + 1e-7, 1 - 1e-7, 400001)
  for d in range(2):
    one_dim = jnp.asarray([mean[d], std[d]], jnp.float32)
    density = np.exp(np.asarray(nets.gaussian_log_prob(
        one_dim, jnp.asarray(grid[:, None], jnp.float32), squash=True),
                                np.float64))
    np.testing.assert_allclose(np.trapezoid(density, grid), 1.0, atol=2e-3)
  samples = nets.gaussian_sample(jax.random.PRNGKey(0), policy, 20000,
                                 squash=True)
  assert samples.shape == (20000, 2)
  assert np.all(np.abs(samples) < 1.0)
  np.testing.assert_allclose(samples.mean(0), np.tanh(
      mean + std * np.random.default_rng(0).normal(size=(200000, 2))).mean(0),
                             atol=0.02)
  # Stored actions at the edge keep a finite log-density.
  edge = nets.gaussian_log_prob(policy, jnp.ones(2), squash=True)
  assert np.isfinite(edge)
  np.testing.assert_allclose(
      nets.Gaussian(policy, squash=True).mode(), np.tanh(mean), rtol=1e-6)


def test_squashed_head_keeps_its_pre_tanh_mean_bounded_and_differentiable():
  out = nets.gaussian_policy(jnp.asarray([[0.0, 100.0, 0.0, 0.0]]), 0.5, 0.01,
                             squash=True)
  np.testing.assert_allclose(out[0, :2], [0.0, nets.SQUASH_MEAN_BOUND],
                             rtol=1e-4)
  np.testing.assert_allclose(out[0, 2:], 0.5, rtol=1e-5)
  # A tanh-bounded mean at 3 has almost no gradient; the pre-tanh mean has.
  grad = lambda squash: jax.grad(lambda x: nets.gaussian_policy(
      jnp.stack([x, 0.0]), 0.5, 0.01, squash)[0])(3.0)
  assert grad(False) < 0.01 < 0.5 < grad(True)


def test_gaussian_head_starts_at_mean_zero_and_the_initial_std():
  networks = nets.make_networks(
      NetworkHparams(num_bins=21, hidden_size=16, num_blocks=1, head_size=16,
                     policy_init_std=0.7, policy_min_std=0.05), (3,), 0,
      action_dim=2)
  params = networks.init(jax.random.PRNGKey(0))
  obs = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
  out = networks.predict(params, networks.represent(params, obs))
  assert out.policy_logits.shape == (5, 4) and networks.policy_size == 4
  np.testing.assert_allclose(out.policy_logits[:, :2], 0.0)
  np.testing.assert_allclose(out.policy_logits[:, 2:], 0.7, rtol=1e-5)
  # The dynamics take the action vector.
  hidden, reward = networks.dynamics(params, networks.represent(params, obs),
                                     jnp.ones((5, 2)))
  assert hidden.shape == (5, 16) and reward.shape == (5, 21)


# ----------------------------------------------------------------- learner

def small_config():
  config = pendulum.get_config()
  config.batch_size = 4
  config.sequence_length = 6
  config.hidden_size = 16
  config.head_size = 16
  config.num_bins = 21
  config.action_samples = 5
  # Two model steps unroll like five (k > 1 included) and compile faster.
  config.unroll_steps = 2
  return config


def continuous_batch(config, action_dim, obs_dim, seed=0):
  window = config.sequence_length + config.unroll_steps + 1
  return conftest.random_batch(config.batch_size, window, obs_dim,
                               action_dim=action_dim, seed=seed)


def make(config, action_dim=2, obs_dim=3, squash=False):
  return nets.make_networks(
      NetworkHparams(num_bins=config.num_bins, hidden_size=config.hidden_size,
                     num_blocks=config.num_blocks, head_size=config.head_size,
                     policy_squash=squash), (obs_dim,), 0,
      action_dim=action_dim)


def test_sampled_prior_targets_shapes_and_weights():
  config = small_config()
  networks = make(config)
  state = learner.init_state(networks, LearnerHparams.from_config(config),
                             jax.random.PRNGKey(0))
  batch = continuous_batch(config, 2, 3)
  targets, _ = learner.prior_targets(networks,
                                     LearnerHparams.from_config(config),
                                     state.target_params,
                                     batch, state.adv_norm,
                                     rng=jax.random.PRNGKey(3))
  B, T, K, S = 4, 6, config.unroll_steps, 5
  W = T + K + 1
  assert targets.cmpo_logits is None
  assert targets.sample_actions.shape == (B, W, S, 2)
  assert targets.sample_weights.shape == (B, W, S)
  assert targets.sample_log_cmpo.shape == (B, W, S)
  assert targets.q_prior.shape == (B, W, S)
  assert targets.returns.shape == (B, W - 1)
  # The samples come from the prior: mean 0, std 0.5 at init.
  np.testing.assert_allclose(np.std(targets.sample_actions), 0.5, rtol=0.15)
  # Omegas: positive, summing to about 1 at every state.
  sums = np.sum(targets.sample_weights, -1)
  assert np.all(targets.sample_weights > 0)
  assert np.all((sums > 0.5) & (sums < 1.5))
  with pytest.raises(ValueError, match="need an rng"):
    learner.prior_targets(networks, LearnerHparams.from_config(config),
                          state.target_params, batch,
                          state.adv_norm)


@pytest.mark.parametrize("value_target,squash", [("retrace", False),
                                                ("nstep", False),
                                                ("retrace", True)])
def test_continuous_update_is_finite_moves_params_and_compiles_once(
    value_target, squash):
  config = small_config()
  config.value_target = value_target
  networks = make(config, squash=squash)
  state = learner.init_state(networks, LearnerHparams.from_config(config),
                             jax.random.PRNGKey(0))
  before = jax.tree.map(np.array, state.params)
  traces = []

  def counted(s, b):
    traces.append(1)
    return learner.make_update(networks,
                               LearnerHparams.from_config(config))(s, b)

  update = jax.jit(counted)
  for seed in range(3):
    state, metrics = update(state, continuous_batch(config, 2, 3, seed))
  assert len(traces) == 1
  for key, value in metrics.items():
    assert np.isfinite(value), key
  assert metrics["entropy"] != 0.0 and metrics["model_loss"] != 0.0
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), before, state.params)
  for module in ("representation/linear", "dynamics/linear",
                 "policy_head/linear", "value_head/linear",
                 "reward_head/linear"):
    assert moved[module]["w"] > 0, module


@pytest.mark.parametrize("squash", [False, True])
def test_the_policy_moves_toward_actions_with_higher_lookahead_value(squash):
  """With the model's q fixed to prefer positive actions, the update
  moves the policy's mean up: the sampled CMPO points the right way."""
  config = small_config()
  config.ratio_clip = 0.0  # no policy gradient: only the CMPO regulariser
  config.model_weight = config.value_weight = config.reward_weight = 0.0
  config.entropy_weight = 0.0
  config.learning_rate = 3e-3
  config.lr_decay = False
  config.target_update_rate = 1.0
  # A symmetric support: the initial values are 0, not the support's middle.
  config.value_min, config.value_max = -10.0, 10.0
  networks = make(config, action_dim=1, squash=squash)
  real_lookahead = learner.lookahead_q

  def preferring_positive(networks, params, hidden, actions, discount,
                          support):
    del networks, params, hidden, discount, support
    return 20.0 * jnp.clip(actions[..., 0], -1.0, 1.0)

  learner.lookahead_q = preferring_positive
  try:
    state = learner.init_state(networks, LearnerHparams.from_config(config),
                               jax.random.PRNGKey(0))
    update = jax.jit(learner.make_update(networks,
                                         LearnerHparams.from_config(config)))
    batch = continuous_batch(config, 1, 3)
    for _ in range(20):
      state, _ = update(state, batch)
  finally:
    learner.lookahead_q = real_lookahead
  out = networks.predict(state.params,
                         networks.represent(state.params,
                                            jnp.asarray(batch.observation[:, 0])))
  assert float(jnp.mean(out.policy_logits[:, 0])) > 0.5  # from 0


def test_replay_stores_continuous_actions_and_gaussians():
  replay = SequenceReplay(50, 2, (3,), np.float32, 4, window=5, action_dim=2)
  for t in range(10):
    replay.add(np.full((2, 3), t, np.float32),
               np.full((2, 2), t / 10, np.float32), np.zeros(2), np.ones(2),
               np.ones(2), np.full((2, 4), t, np.float32))
  batch = replay.sample(3, 2, 0.5)
  assert batch.action.shape == (3, 5, 2) and batch.action.dtype == np.float32
  assert batch.behaviour_logits.shape == (3, 5, 4)
  # Each window's actions follow its observations.
  np.testing.assert_allclose(batch.action[..., 0],
                             batch.observation[..., 0] / 10, rtol=1e-6)


# ------------------------------------------------------------ runs, resume

TINY = dict(conftest.TINY_RUN, action_samples=4)


@pytest.mark.parametrize("name", ["pendulum.py", "lunar_continuous.py",
                                  "mujoco.py"])
def test_continuous_configs_train_and_evaluate(tmp_path, name):
  config = load_config_file(name)
  with config.unlocked():
    config.update(TINY, total_env_steps=160, logdir=str(tmp_path),
                  checkpoint_interval=160, eval_interval=0)
  validate(config)
  summary = training.train(config, run_name="run", progress=False)
  assert summary["updates"] > 40 and summary["update_compilations"] == 1
  if name != "pendulum.py":
    return  # Episodes of 1000 steps: too long to play here.
  for greedy in (False, True):
    result, _ = evaluate_script.evaluate(str(tmp_path / "run"), episodes=2,
                                         greedy=greedy, seed=1, num_envs=2)
    assert result.returns.shape == (2,)
    assert np.all((result.returns < 0) & (result.returns > -3000))


def test_a_resumed_continuous_run_is_bit_identical(tmp_path):
  """Pendulum's state pickles: stop at 160 steps, resume to 320, and get
  the params and episodes of the run that never stopped (prior samples
  included: they are drawn from the update's step)."""
  # No learning-rate decay: its schedule would depend on total_env_steps.
  args = ["--config", "pendulum.py", "--config.eval_interval=0",
          "--config.checkpoint_interval=160", "--config.lr_decay=false"]
  args += [f"--config.{k}={v}" for k, v in TINY.items()]

  env = conftest.script_env()

  def start(name, *cli):
    with open(tmp_path / f"{name}.log", "w") as out:
      return conftest.start_script("train.py", *cli, env=env, stdout=out,
                                   stderr=subprocess.STDOUT)

  def check(name, proc):
    log = (tmp_path / f"{name}.log")
    assert conftest.finish(proc) == 0, log.read_text()[-2000:]

  # The first part of one run; then its resume and the uninterrupted run,
  # side by side, load its update from the compilation cache.
  check("b", start("b", *args, "--config.total_env_steps=160",
                   f"--config.logdir={tmp_path / 'b'}"))
  (run_b,) = (tmp_path / "b").iterdir()
  whole = start("a", *args, "--config.total_env_steps=320",
                f"--config.logdir={tmp_path / 'a'}")
  try:
    check("resume", start("resume", "--resume", str(run_b),
                          "--config.total_env_steps=320"))
    check("a", whole)
  finally:
    whole.kill()
  (run_a,) = (tmp_path / "a").iterdir()
  summaries = [json.loads((run / "summary.json").read_text())
               for run in (run_a, run_b)]
  assert summaries[0]["env_steps"] == summaries[1]["env_steps"] == 320
  assert summaries[0]["params_digest"] == summaries[1]["params_digest"]
  episodes = [(run / "episodes.csv").read_text().splitlines()
              for run in (run_a, run_b)]
  strip = lambda rows: [r.split(",")[:1] + r.split(",")[2:] for r in rows]
  assert strip(episodes[0]) == strip(episodes[1])
