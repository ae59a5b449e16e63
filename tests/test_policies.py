"""The policies as distributions (`networks.policy`): each kind's `log_prob`,
`entropy`, `mode` and `sample` against the formulas and the ops the agent
used before (which the CartPole digests depend on)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from muesli_jax import losses, networks as nets
from muesli_jax.hparams import NetworkHparams

SETTINGS = settings(deadline=None, max_examples=10)


def _log_softmax64(logits):
  x = np.asarray(logits, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 5),
       num_actions=st.integers(2, 7), scale=st.floats(0.1, 20.0))
def test_categorical_matches_log_softmax_and_the_losses(seed, batch,
                                                        num_actions, scale):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(scale * rng.normal(size=(batch, num_actions)),
                       jnp.float32)
  actions = jnp.asarray(rng.integers(0, num_actions, batch), jnp.int32)
  pi = nets.Categorical(logits)
  expected = _log_softmax64(logits)
  np.testing.assert_allclose(pi.log_prob(actions),
                             expected[np.arange(batch), actions],
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pi.entropy(),
                             -np.sum(np.exp(expected) * expected, -1),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(pi.mode(), np.argmax(logits, -1))
  # Bit for bit the ops of the policy loss and of the actor's sampling.
  _, extras = losses.policy_loss(logits, logits, actions,
                                 jnp.zeros(batch), logits)
  np.testing.assert_array_equal(pi.entropy(), extras["entropy"])
  np.testing.assert_array_equal(
      pi.log_prob(actions),
      jnp.take_along_axis(jax.nn.log_softmax(logits), actions[:, None],
                          -1)[:, 0])
  key = jax.random.PRNGKey(seed)
  np.testing.assert_array_equal(pi.sample(key),
                                jax.random.categorical(key, logits))


def test_categorical_samples_follow_the_probabilities():
  probs = np.array([[0.1, 0.6, 0.3], [0.5, 0.25, 0.25]])
  pi = nets.Categorical(jnp.asarray(np.log(probs), jnp.float32))
  samples = np.asarray(pi.sample(jax.random.PRNGKey(0), 40000))
  assert samples.shape == (2, 40000)
  for row in range(2):
    freq = np.bincount(samples[row], minlength=3) / samples.shape[1]
    np.testing.assert_allclose(freq, probs[row], atol=0.01)
  lookahead = pi.lookahead_actions(None, 5)  # All actions: no sampling.
  np.testing.assert_array_equal(lookahead, [[0, 1, 2], [0, 1, 2]])


@SETTINGS
@given(seed=st.integers(0, 2**31 - 1), batch=st.integers(1, 4),
       dim=st.integers(1, 4), squash=st.booleans())
def test_gaussian_matches_the_formulas(seed, batch, dim, squash):
  rng = np.random.default_rng(seed)
  mean = rng.uniform(-1.0, 1.0, (batch, dim))
  std = rng.uniform(0.05, 2.0, (batch, dim))
  params = jnp.asarray(np.concatenate([mean, std], -1), jnp.float32)
  pi = nets.Gaussian(params, squash)
  if squash:
    actions = rng.uniform(-0.99, 0.99, (batch, dim))
    u = np.arctanh(actions)
    log_det = np.log(1.0 - actions ** 2)
  else:
    actions = rng.normal(size=(batch, dim))
    u, log_det = actions, 0.0
  expected = np.sum(-0.5 * ((u - mean) / std) ** 2 - np.log(std) -
                    0.5 * np.log(2 * np.pi) - log_det, -1)
  np.testing.assert_allclose(
      pi.log_prob(jnp.asarray(actions, jnp.float32)), expected, rtol=2e-4,
      atol=2e-4)
  # The pre-tanh Gaussian's entropy (a squashed one has no closed form).
  np.testing.assert_allclose(
      pi.entropy(), np.sum(0.5 * np.log(2 * np.pi * np.e * std ** 2), -1),
      rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(pi.mode(), np.tanh(mean) if squash else mean,
                             rtol=1e-5, atol=1e-6)
  # The sample is mean + std * N(0, 1) of that key, as the actor drew it.
  key = jax.random.PRNGKey(seed)
  noise = jax.random.normal(key, (batch, dim), jnp.float32)
  u_sample = params[:, :dim] + params[:, dim:] * noise
  expected_sample = (jnp.clip(jnp.tanh(u_sample), -1 + 1e-6, 1 - 1e-6)
                     if squash else u_sample)
  np.testing.assert_array_equal(pi.sample(key), expected_sample)
  many = pi.lookahead_actions(key, 3)
  assert many.shape == (batch, 3, dim)
  np.testing.assert_array_equal(many, pi.sample(key, 3))


@pytest.mark.parametrize("action_dim, squash", [(0, False), (2, False),
                                                (2, True)])
def test_networks_policy_is_the_distribution_of_the_action_kind(action_dim,
                                                                squash):
  networks = nets.make_networks(
      NetworkHparams(num_bins=11, hidden_size=8, num_blocks=1, head_size=8,
                     policy_squash=squash), (3,), 4, action_dim=action_dim)
  params = networks.init(jax.random.PRNGKey(0))
  obs = jnp.ones((5, 3), jnp.float32)
  logits = networks.predict(params, networks.represent(params, obs)
                            ).policy_logits
  assert logits.shape == (5, networks.policy_size)
  pi = networks.policy(logits)
  action = pi.sample(jax.random.PRNGKey(1))
  assert pi.log_prob(action).shape == (5,) and pi.entropy().shape == (5,)
  # Whatever the kind, the dynamics take the policy's actions.
  hidden, _ = networks.dynamics(params, networks.represent(params, obs),
                                pi.mode())
  assert hidden.shape == (5, 8)
  if action_dim:
    assert isinstance(pi, nets.Gaussian) and pi.squash == squash
    assert action.shape == (5, action_dim)
  else:
    assert isinstance(pi, nets.Categorical) and action.shape == (5,)
    # At init the policy is uniform.
    np.testing.assert_allclose(pi.entropy(), np.log(4), rtol=1e-6)
