"""Anakin (gymnax): the on-device replay, learning, several devices, errors."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_python, script_env
# gymnax comes with `make` (see the Makefile); without it these tests fail
# rather than skip.
from configs import anakin_cartpole
from muesli_jax import anakin, networks as nets, replay as replay_lib
from muesli_jax.config import ConfigError
from muesli_jax.envs import UnknownEnvError
from muesli_jax.hparams import NetworkHparams


def cartpole_stream(num_envs: int, num_steps: int, capacity: int,
                    max_steps: int):
  """Acts `num_steps` steps of a random-init policy on gymnax CartPole with
  a short time limit; returns the rows written `[n, E]`, the episodes that
  ended `[n, E]`, the replay and the env."""
  env, env_params = anakin.make_env("gymnax:CartPole-v1")
  env_params = env_params.replace(max_steps_in_episode=max_steps)
  networks = nets.make_networks(
      NetworkHparams(num_bins=11, hidden_size=8, num_blocks=1, head_size=8),
      (4,), 2)
  params = networks.init(jax.random.PRNGKey(0))
  reset, step = anakin.make_actor(env, env_params, networks)

  def body(carry, key):
    actor, replay = carry
    actor, row, episodes = step(params, actor, key, replay.total_steps)
    return (actor, anakin.replay_add(replay, row)), (row, episodes)

  @jax.jit
  def run(key):
    replay = anakin.init_replay(capacity, num_envs, (4,), jnp.float32, 2)
    (_, replay), (rows, episodes) = jax.lax.scan(
        body, (reset(key, num_envs), replay),
        jax.random.split(key, num_steps))
    return rows, episodes, replay

  rows, episodes, replay = run(jax.random.PRNGKey(1))
  return jax.device_get(rows), jax.device_get(episodes), replay, env, env_params


def cartpole_next(env, env_params, obs, action):
  """CartPole's deterministic transition from an observation (the state)."""
  from gymnax.environments.classic_control.cartpole import EnvState
  state = EnvState(x=obs[0], x_dot=obs[1], theta=obs[2], theta_dot=obs[3],
                   time=0)
  next_obs, _, _, terminated, _ = env.step_env(
      jax.random.PRNGKey(0), state, int(action), env_params)
  return np.asarray(next_obs), bool(terminated)


def test_replay_holds_each_envs_stream_with_the_numpy_replays_episode_ends():
  E, n, C, limit = 3, 90, 40, 12
  rows, episodes, replay, env, env_params = cartpole_stream(E, n, C, limit)
  seen = dict(terminated=0, truncated=0)
  for e in range(E):
    length = 0
    for t in range(n - 1):
      obs, action = rows.observation[t, e], rows.action[t, e]
      if rows.mask[t, e] == 1:
        # A real transition: the next row is the env's next state (the
        # final observation after an episode's last transition).
        expected, terminated = cartpole_next(env, env_params, obs, action)
        np.testing.assert_allclose(rows.observation[t + 1, e], expected,
                                   atol=1e-5)
        assert rows.reward[t, e] == 1.0
        assert rows.discount[t, e] == (0.0 if terminated else 1.0)
        length += 1
        ended = bool(episodes.done[t, e])
        assert ended == (rows.mask[t + 1, e] == 0)
        if ended:
          truncated = not terminated
          assert (length == limit) if truncated else (length <= limit)
          seen["truncated" if truncated else "terminated"] += 1
          assert episodes.length[t, e] == length
          assert episodes.episode_return[t, e] == length  # reward 1 a step
          length = 0
      else:
        # The reset step: the final observation, nothing learned from it,
        # then the next episode's first observation.
        assert rows.reward[t, e] == 0.0 and rows.discount[t, e] == 0.0
        assert t > 0 and rows.mask[t - 1, e] == 1
        assert np.all(np.abs(rows.observation[t + 1, e]) <= 0.05)
        assert not episodes.done[t, e]
  assert seen["terminated"] > 0 and seen["truncated"] > 0, seen

  # The ring holds the newest C steps exactly where the numpy replay would.
  ref = replay_lib.SequenceReplay(C, E, (4,), np.float32, 2, window=7)
  for t in range(n):
    ref.add(rows.observation[t], rows.action[t], rows.reward[t],
            rows.discount[t], rows.mask[t], rows.behaviour_logits[t])
  data = jax.device_get(replay.data)
  for field in ("observation", "action", "reward", "discount", "mask",
                "behaviour_logits"):
    np.testing.assert_array_equal(getattr(data, field), getattr(ref, field))
  assert int(replay.total_steps) == ref.total_steps == n


def test_sampled_windows_are_consecutive_steps_of_one_env():
  E, n, C, W, B, fresh_steps = 3, 90, 40, 7, 64, 2
  rows, _, replay, _, _ = cartpole_stream(E, n, C, 12)
  batch = jax.device_get(anakin.replay_sample(
      replay, jax.random.PRNGKey(5), B, W, fresh_steps,
      replay_proportion=0.75))
  assert batch.observation.shape == (B, W, 4)
  num_fresh = min(round(B * 0.25), fresh_steps * E)  # as the numpy replay
  starts_seen = set()
  for b in range(B):
    matches = [(s, e) for s in range(n - C, n - W + 1) for e in range(E)
               if np.array_equal(rows.observation[s:s + W, e],
                                 batch.observation[b]) and
               all(np.array_equal(getattr(rows, f)[s:s + W, e],
                                  getattr(batch, f)[b])
                   for f in ("action", "reward", "discount", "mask",
                             "behaviour_logits"))]
    assert matches, f"window {b} is not {W} stored steps of one env"
    (s, _), = matches
    if b < num_fresh:  # among the newest start times
      assert s >= n - W + 1 - fresh_steps
    starts_seen.add(s)
  assert len(starts_seen) > 10  # the uniform part spreads over the replay


def test_anakin_cartpole_learns(anakin_cartpole_run):
  """The shipped config (its learning-rate schedule too), stopped at 400k env
  steps: seed 0 reaches a mean of 400 over 100 episodes near 270k."""
  summary, run_dir = anakin_cartpole_run
  budget = 400_000
  assert summary["solved_at_steps"] is not None, summary["returns_last_100"]
  assert summary["solved_at_steps"] <= budget
  assert len(summary["returns_last_100"]) == 100
  assert summary["mean_return_last_100"] >= 400.0
  assert summary["update_compilations"] == 1
  with open(os.path.join(run_dir, "episodes.csv")) as f:
    episodes = f.read().splitlines()
  assert len(episodes) == summary["episodes"] + 1


TWO_DEVICE_RUN = """
import json, sys
import jax
from configs import anakin_cartpole
from muesli_jax import anakin
assert jax.local_device_count() == 2
config = anakin_cartpole.get_config()
config.update(num_envs=8, batch_size=8, sequence_length=4, unroll_steps=2,
              hidden_size=16, head_size=16, iterations_per_call=5,
              warmup_steps=8, replay_capacity=100, logdir=sys.argv[1],
              total_env_steps=8 * (8 + 7 - 1) + 3 * 5 * 8)
print(json.dumps(anakin.train_anakin(config, run_name="two",
                                     progress=False)))
"""


def test_two_devices_compile_once_and_stay_identical(tmp_path):
  proc = run_python(TWO_DEVICE_RUN, tmp_path, env=script_env(devices=2))
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads(proc.stdout.strip().splitlines()[-1])
  assert summary["devices"] == 2
  assert summary["updates"] == 15  # three calls of five iterations
  assert summary["update_compilations"] == 1
  assert summary["replicas_identical"] is True


def test_bad_gymnax_id_is_one_clear_line():
  with pytest.raises(UnknownEnvError) as error:
    anakin.check_env_id("gymnax:CartPol-v1")
  message = str(error.value)
  assert "\n" not in message
  assert "'CartPol-v1'" in message and "gymnax:CartPole-v1" in message
  with pytest.raises(UnknownEnvError, match="not a gymnax id"):
    anakin.check_env_id("CartPole-v1")


def test_bad_id_stops_a_run_before_it_writes_anything(tmp_path):
  config = anakin_cartpole.get_config()
  config.env_id = "gymnax:NoSuchEnv-v0"
  config.logdir = str(tmp_path)
  with pytest.raises(UnknownEnvError, match="NoSuchEnv"):
    anakin.train_anakin(config, progress=False)
  assert not list(tmp_path.iterdir())


def test_routing_and_config_checks():
  config = anakin_cartpole.get_config()
  assert anakin.is_anakin(config)
  config.env_id = "CartPole-v1"
  assert not anakin.is_anakin(config)
  config = anakin_cartpole.get_config()
  config.stack = 2
  with pytest.raises(ConfigError, match="stack must be 1"):
    anakin.check_config(config, 1)
  config = anakin_cartpole.get_config()
  config.value_target = "mc"
  with pytest.raises(ConfigError, match="Monte-Carlo"):
    anakin.check_config(config, 1)
  config = anakin_cartpole.get_config()
  config.async_acting = True
  with pytest.raises(ConfigError, match="async_acting does not apply"):
    anakin.check_config(config, 1)
  config = anakin_cartpole.get_config()
  config.num_envs = 7
  with pytest.raises(ConfigError, match="num_envs 7 must be divisible"):
    anakin.check_config(config, 2)


def test_resume_and_multi_process_runs_are_refused(tmp_path):
  config = anakin_cartpole.get_config()
  config.logdir = str(tmp_path)
  with pytest.raises(ConfigError, match="cannot be resumed"):
    anakin.train_anakin(config, run_dir=str(tmp_path / "run"), resume=True)
  config.distributed = True
  with pytest.raises(ConfigError, match="distributed must be false"):
    anakin.train_anakin(config, progress=False)
  assert not list(tmp_path.iterdir())
