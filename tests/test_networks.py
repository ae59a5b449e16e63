"""Network shapes, hidden-state scaling and the dynamics gradient scale."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from muesli_jax import networks as nets
from muesli_jax.hparams import NetworkHparams


@pytest.mark.parametrize("torso,core,obs_shape", [
    ("mlp", "mlp", (8,)), ("mlp", "lstm", (8,)), ("conv", "lstm", (16, 16, 6)),
    ("dqn", "mlp", (16, 16, 6)), ("dqn", "lstm", (20, 30, 2)),
])
def test_shapes_and_hidden_range(torso, core, obs_shape):
  n = nets.make_networks(
      NetworkHparams(num_bins=11, hidden_size=16, num_blocks=1, head_size=8,
                     torso=torso, dynamics_core=core), obs_shape, num_actions=3)
  params = n.init(jax.random.PRNGKey(0))
  obs = jax.random.uniform(jax.random.PRNGKey(1), (5,) + obs_shape) * 255.0
  hidden = n.represent(params, obs)
  assert hidden.ndim == 2 and hidden.shape[0] == 5
  assert float(hidden.min()) >= -1.0 - 1e-6 and float(hidden.max()) <= 1.0 + 1e-6
  out = n.predict(params, hidden)
  assert out.policy_logits.shape == (5, 3) and out.value_logits.shape == (5, 11)
  nxt, reward_logits = n.dynamics(params, hidden, jnp.array([0, 1, 2, 0, 1]))
  assert nxt.shape == hidden.shape and reward_logits.shape == (5, 11)
  outk, rewards = n.unroll(params, hidden, jnp.zeros((5, 4), jnp.int32))
  assert outk.policy_logits.shape == (5, 4, 3)
  assert outk.value_logits.shape == (5, 4, 11) and rewards.shape == (5, 4, 11)


def test_dqn_torso_strides_and_cost():
  """8x8/4, 4x4/2, 3x3/1: 64x96 frames reach the linear layer as 8x12x32;
  the ResNet torso of the same channels costs over 5x more per frame."""
  shape = (64, 96, 4)
  make = lambda torso: nets.make_networks(
      NetworkHparams(num_bins=11, hidden_size=128, torso=torso,
                     conv_channels=(16, 32, 32), conv_blocks=1), shape, 4)
  dqn, resnet = make("dqn"), make("conv")
  params = dqn.init(jax.random.PRNGKey(0))
  kernels = [v["w"].shape for k, v in sorted(params.items())
             if k.startswith("representation/")]
  assert kernels == [(8, 8, 4, 16), (4, 4, 16, 32), (3, 3, 32, 32),
                     (8 * 12 * 32, 128)]
  obs = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  def flops(n):
    p = n.init(jax.random.PRNGKey(0))
    lowered = jax.jit(lambda o: n.represent(p, o)).lower(obs)
    return lowered.compile().cost_analysis()["flops"]
  assert flops(resnet) > 5 * flops(dqn)


def test_unroll_matches_repeated_dynamics():
  n = nets.make_networks(
      NetworkHparams(num_bins=7, hidden_size=8, num_blocks=1, head_size=8),
      (4,), 2)
  params = n.init(jax.random.PRNGKey(0))
  hidden = n.represent(params, jnp.ones((3, 4)))
  actions = jnp.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]])
  outk, rewards = n.unroll(params, hidden, actions)
  h = hidden
  for k in range(3):
    h, r = n.dynamics(params, h, actions[:, k])
    np.testing.assert_allclose(rewards[:, k], r, atol=1e-6)
    np.testing.assert_allclose(outk.policy_logits[:, k],
                               n.predict(params, h).policy_logits, atol=1e-6)


def test_scale_gradient_halves_gradient_only():
  x = jnp.array([1.0, -2.0])
  np.testing.assert_allclose(nets.scale_gradient(x, 0.5), x)
  grad = jax.grad(lambda v: jnp.sum(nets.scale_gradient(v, 0.5) * 3.0))(x)
  np.testing.assert_allclose(grad, [1.5, 1.5])


def test_scale_hidden_maps_min_to_minus_one_and_max_to_one():
  h = nets.scale_hidden(jnp.array([[2.0, 4.0, 3.0]]))
  np.testing.assert_allclose(h, [[-1.0, 1.0, 0.0]])


@pytest.mark.parametrize("shape", [(3, 10, 10, 4), (2, 5, 5, 3), (2, 7, 9, 1),
                                   (2, 1, 1, 2), (1, 84, 84, 2)])
@pytest.mark.parametrize("ties", [False, True])
def test_max_pool_has_haikus_values_and_gradients_bit_for_bit(shape, ties):
  """The conv torso's pooling: the values and gradients of `hk.max_pool(x,
  3, 2, "SAME")`, ties (MinAtar's 0/1 frames are full of them) included."""
  import haiku as hk
  x = np.random.default_rng(sum(shape)).normal(size=shape).astype(np.float32)
  if ties:
    x = np.round(x)  # most windows hold their maximum more than once
  x = jnp.asarray(x)
  reference = lambda y: hk.max_pool(y, 3, 2, "SAME")
  fast = lambda y: nets.max_pool(y, 3, 2)
  np.testing.assert_array_equal(fast(x), reference(x))

  def loss(pool):
    # Distinct weights per output: a gradient sent to the wrong input, or
    # summed in another order where windows overlap, changes the result.
    return lambda y: jnp.sum(jnp.sin(pool(y)) *
                             jnp.arange(pool(y).size).reshape(pool(y).shape))

  np.testing.assert_array_equal(jax.jit(jax.grad(loss(fast)))(x),
                                jax.jit(jax.grad(loss(reference)))(x))
