"""The learner's update: finite, compiled once, and the same on 1 or 2 devices."""

import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from muesli_jax import learner, networks as nets
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
  return config


def random_batch(config, num_actions, obs_dim, seed=0):
  """A batch with terminations, truncations and reset steps in it."""
  rng = np.random.default_rng(seed)
  b, w = config.batch_size, config.sequence_length + config.unroll_steps + 1
  mask = np.ones((b, w), np.float32)
  discount = np.ones((b, w), np.float32)
  mask[0, 3] = 0.0; discount[0, 3] = 0.0  # reset step after a truncation
  discount[1, 4] = 0.0; mask[1, 5] = 0.0; discount[1, 5] = 0.0  # termination
  return learner.Batch(
      observation=rng.normal(size=(b, w, obs_dim)).astype(np.float32),
      action=rng.integers(0, num_actions, (b, w)).astype(np.int32),
      reward=rng.normal(size=(b, w)).astype(np.float32),
      discount=discount, mask=mask,
      behaviour_logits=rng.normal(size=(b, w, num_actions)).astype(np.float32),
      mc_return=rng.normal(size=(b, w)).astype(np.float32),
      mc_valid=np.ones((b, w), np.float32))


@pytest.mark.parametrize("value_target", ["retrace", "nstep", "mc"])
def test_update_is_finite_and_moves_params(value_target):
  config = small_config()
  config.value_target = value_target
  networks = nets.make_networks((4,), 2, config.num_bins, config.hidden_size,
                                config.num_blocks, config.head_size)
  state = learner.init_state(networks, config, jax.random.PRNGKey(0))
  before = jax.tree.map(np.array, state.params)
  update = jax.jit(learner.make_update(networks, config))
  state, metrics = update(state, random_batch(config, 2, 4))
  for key, value in metrics.items():
    assert np.isfinite(value), key
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), before, state.params)
  assert max(jax.tree.leaves(moved)) > 0
  assert int(state.step) == 1
  # The target moved by target_update_rate of the way towards the params.
  assert np.isfinite(float(state.adv_norm.second_moment))


def test_update_compiles_once():
  config = small_config()
  networks = nets.make_networks((4,), 2, config.num_bins, config.hidden_size,
                                config.num_blocks, config.head_size)
  state = learner.init_state(networks, config, jax.random.PRNGKey(0))
  traces = []
  inner = learner.make_update(networks, config)

  def counted(state, batch):
    traces.append(1)  # Runs once per trace, i.e. per compilation.
    return inner(state, batch)

  update = jax.jit(counted, donate_argnums=0)
  for seed in range(4):
    state, _ = update(state, random_batch(config, 2, 4, seed))
  assert len(traces) == 1


def test_pmap_on_two_devices_equals_one_device():
  """Two forced CPU devices, each with half the batch, give the same update."""
  script = textwrap.dedent("""
      import jax, numpy as np
      assert jax.local_device_count() == 2, jax.devices()
      from muesli_jax import learner, networks as nets
      from tests.test_learner import small_config, random_batch
      config = small_config()
      nets_ = nets.make_networks((4,), 2, config.num_bins, config.hidden_size,
                                 config.num_blocks, config.head_size)
      state = learner.init_state(nets_, config, jax.random.PRNGKey(1))
      one = jax.jit(learner.make_update(nets_, config))
      two = jax.pmap(learner.make_update(nets_, config, learner.AXIS),
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
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout + result.stderr[-3000:]
  assert "max diff" in result.stdout
