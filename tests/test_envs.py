"""Environments: every family builds with the spec the agent expects, and bad
observation or action spaces stop with one clear error."""

import os
import subprocess
import sys
import warnings

import gymnasium as gym
import jax.numpy as jnp
import numpy as np
import pytest

from muesli_jax import envs
from muesli_jax import replay as replay_lib
from muesli_jax.config import load_config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")


def config_for(name, **overrides):
  config = load_config_file(name)
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  return config


def make(name, num_envs=2, **overrides):
  config = config_for(name, **overrides)
  vec = envs.make_vector_env(config, num_envs=num_envs)
  return vec, envs.env_spec(vec, config.env_id)


@pytest.mark.parametrize("env_id,channels,actions", [
    ("MinAtar/Breakout-v1", 4, 3), ("MinAtar/SpaceInvaders-v1", 6, 4),
    ("MinAtar/Asterix-v1", 4, 5)])
def test_minatar_games_by_id_only(env_id, channels, actions):
  vec, spec = make("minatar.py", env_id=env_id)
  assert spec.observation_shape == (10, 10, channels)
  assert spec.observation_dtype == np.uint8 and spec.num_actions == actions
  obs, _ = vec.reset(seed=0)
  for _ in range(20):
    obs, *_ = vec.step(vec.action_space.sample())
  assert obs.dtype == np.uint8 and set(np.unique(obs)) <= {0, 1}
  vec.close()


@pytest.mark.parametrize("env_id", ["MiniGrid-DoorKey-5x5-v0",
                                    "MiniGrid-Empty-8x8-v0"])
def test_minigrid_dict_observation_becomes_its_image(env_id):
  vec, spec = make("minigrid.py", env_id=env_id)
  assert spec.observation_shape == (7, 7, 3)
  assert spec.observation_dtype == np.uint8 and spec.num_actions == 7
  obs, _ = vec.reset(seed=0)
  assert obs.shape == (2, 7, 7, 3) and obs.max() <= 10
  vec.close()


def test_atari_preprocessing():
  vec, spec = make("atari.py")
  assert spec.observation_shape == (84, 84, 1)
  assert spec.observation_dtype == np.uint8 and spec.observation_scale == 255
  env = vec.envs[0]
  preprocessing = env
  while not isinstance(preprocessing, gym.wrappers.AtariPreprocessing):
    preprocessing = preprocessing.env
  assert preprocessing.frame_skip == 4 and preprocessing.noop_max == 30
  assert not preprocessing.terminal_on_life_loss
  ale = env.unwrapped
  assert ale._frameskip == 1  # skipping (with max-pool) is the wrapper's
  assert ale.ale.getFloat("repeat_action_probability") == pytest.approx(0.25)
  vec.close()


def test_lunar_pixels_hides_the_state():
  vec, spec = make("lunar_pixels.py", async_envs=False)
  assert spec.observation_shape == (64, 96, 1)
  assert spec.observation_dtype == np.uint8
  obs, _ = vec.reset(seed=0)
  assert obs.shape == (2, 64, 96, 1) and obs.max() > 100  # a real frame
  vec.close()


class FloatImageEnv(gym.Env):
  observation_space = gym.spaces.Box(0.0, 1.0, (8, 8, 3), np.float32)
  action_space = gym.spaces.Discrete(2)

  def reset(self, *, seed=None, options=None):
    return self.observation_space.sample(), {}

  def step(self, action):
    return self.observation_space.sample(), 0.0, False, False, {}


class DictWithoutImageEnv(FloatImageEnv):
  observation_space = gym.spaces.Dict(
      {"position": gym.spaces.Box(-1, 1, (2,), np.float32),
       "goal": gym.spaces.Box(-1, 1, (2,), np.float32)})


gym.register("TestFloatImage-v0", entry_point=FloatImageEnv)
gym.register("TestDictWithoutImage-v0", entry_point=DictWithoutImageEnv)


def test_float_images_are_refused():
  with pytest.raises(envs.UnknownEnvError, match="must be uint8"):
    make("lunar.py", env_id="TestFloatImage-v0")


def test_dict_without_image_is_refused():
  with pytest.raises(envs.UnknownEnvError, match="without an image"):
    make("lunar.py", env_id="TestDictWithoutImage-v0")


def test_an_unknown_minatar_game_is_answered_with_the_games():
  for _ in range(2):  # registered once: a second look-up warns of nothing
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      with pytest.raises(envs.UnknownEnvError,
                         match="the games are Asterix, Breakout, Freeway, "
                         "Seaquest, SpaceInvaders"):
        envs.check_env_id("MinAtar/Pong-v1")


def run_train(tmp_path, *args):
  # tests/ on the path: fake_action_envs registers envs with bad spaces.
  env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "tests"))
  return subprocess.run([sys.executable, TRAIN, *args,
                         f"--config.logdir={tmp_path / 'runs'}"],
                        cwd=tmp_path, capture_output=True, text=True,
                        timeout=300, env=env)


@pytest.mark.parametrize("args,message", [
    (["--config", "lunar.py",
      "--config.env_id=fake_action_envs:InfiniteBoxActions-v0"],
     "infinite bounds"),
    (["--config", "lunar.py",
      "--config.env_id=fake_action_envs:MultiDiscreteActions-v0"],
     "MultiDiscrete"),
    (["--config", "lunar.py", "--config.env_id=fake_action_envs:DictActions-v0"],
     "takes Discrete or bounded Box actions"),
    (["--config", "lunar.py", "--config.env_id=no_such_module:Env-v0"],
     "cannot import 'no_such_module'"),
    # gymnasium would only say "unknown": the error names MinAtar's games.
    (["--config", "minatar.py", "--config.env_id=MinAtar/Pong-v1"],
     "'MinAtar/Pong-v1': the games are Asterix, Breakout, Freeway, Seaquest, "
     "SpaceInvaders"),
    (["--config", "atari.py", "--config.replay_capacity=10000000"],
     "GiB of memory is available"),
])
def test_bad_input_is_one_error_line_and_writes_nothing(tmp_path, args,
                                                        message):
  proc = run_train(tmp_path, *args)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
  assert message in lines[0]
  assert not (tmp_path / "runs").exists()


def test_continuous_actions_are_seen_in_unit_box_and_clipped():
  vec, spec = make("pendulum.py")
  assert spec.action_dim == 1 and spec.num_actions == 0
  assert spec.policy_size == 2
  assert vec.single_action_space == gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
  wrapper = vec.envs[0]
  assert isinstance(wrapper, envs.UnitBoxActions)
  # Pendulum's torque bounds are [-2, 2].
  np.testing.assert_allclose(wrapper.action(np.array([-1.0])), [-2.0])
  np.testing.assert_allclose(wrapper.action(np.array([0.25])), [0.5])
  np.testing.assert_allclose(wrapper.action(np.array([3.0])), [2.0])
  vec.reset(seed=0)
  vec.step(np.array([[5.0], [-5.0]], np.float32))  # out of bounds: clipped
  vec.close()


def test_a_module_env_id_builds_and_renders():
  config = config_for("pendulum.py",
                      env_id="fake_action_envs:RenderingBoxActions-v0")
  sys.path.insert(0, os.path.join(ROOT, "tests"))  # where the module is
  try:
    vec = envs.make_vector_env(config, num_envs=1, render=True)
    assert envs.env_spec(vec, config.env_id).action_dim == 1
    vec.reset(seed=0)
    assert vec.envs[0].render().shape == (8, 8, 3)
    vec.close()
  finally:
    sys.path.remove(os.path.join(ROOT, "tests"))


def test_float64_observations_are_stored_as_float32(tmp_path):
  config = config_for("pendulum.py",
                      env_id="fake_action_envs:Float64Observations-v0")
  sys.path.insert(0, os.path.join(ROOT, "tests"))
  try:
    vec = envs.make_vector_env(config, num_envs=2)
    spec = envs.env_spec(vec, config.env_id)
  finally:
    sys.path.remove(os.path.join(ROOT, "tests"))
  assert spec.observation_dtype == np.float32
  replay = replay_lib.SequenceReplay(
      capacity=8, num_envs=2, observation_shape=spec.observation_shape,
      observation_dtype=spec.observation_dtype, num_actions=spec.policy_size,
      window=4, discount=0.99, action_dim=spec.action_dim)
  obs, _ = vec.reset(seed=0)
  assert obs.dtype == np.float64
  actions = np.zeros((2, 1), np.float32)
  replay.add(obs, actions, np.zeros(2), np.ones(2), np.ones(2),
             np.zeros((2, 2)))
  assert replay.observation.dtype == np.float32
  # The same float32 the networks would get from the float64 observation.
  np.testing.assert_array_equal(replay.observation[0],
                                np.asarray(jnp.asarray(obs)))
  vec.close()


class BoundedBoxActions(gym.Env):
  """A continuous-action env whose bounds are set per id."""
  observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

  def __init__(self, low, high, dtype=np.float32):
    self.action_space = gym.spaces.Box(np.asarray(low, dtype),
                                       np.asarray(high, dtype), dtype=dtype)

  def reset(self, *, seed=None, options=None):
    return np.zeros(3, np.float32), {}

  def step(self, action):
    return np.zeros(3, np.float32), 0.0, False, False, {}


# Humanoid's [-0.4, 0.4] and uneven bounds do not scale by a power of two.
gym.register("TestHumanoidBounds-v0", entry_point=BoundedBoxActions,
             kwargs=dict(low=[-0.4] * 17, high=[0.4] * 17))
gym.register("TestUnevenBounds-v0", entry_point=BoundedBoxActions,
             kwargs=dict(low=[0.1, -3.0, -1.0], high=[0.7, 5.0, 1.0]))
gym.register("TestFloat64Actions-v0", entry_point=BoundedBoxActions,
             kwargs=dict(low=[-2.0], high=[2.0], dtype=np.float64))


@pytest.mark.parametrize("env_id", [
    "LunarLanderContinuous-v3", "Pendulum-v1", "TestHumanoidBounds-v0",
    "TestUnevenBounds-v0", "TestFloat64Actions-v0"])
def test_unit_box_actions_reach_the_env_exactly_rescaled(env_id):
  """The agent's float32 actions in [-1, 1] reach the env clipped, then
  mapped affinely onto its bounds in float64 and rounded once to its dtype:
  -1 and 1 are its bounds exactly, and its dtype is kept."""
  vec = envs.make_vector_env(config_for("pendulum.py", env_id=env_id),
                             num_envs=1, asynchronous=False)
  env = vec.envs[0].unwrapped
  space = env.action_space
  dim = space.shape[0]
  assert vec.single_action_space == gym.spaces.Box(-1.0, 1.0, (dim,),
                                                   np.float32)
  unit = np.random.default_rng(0).uniform(-1.5, 1.5, (200, dim))
  unit[:4] = [[-1.0], [1.0], [-3.0], [3.0]]
  unit = unit.astype(np.float32)
  # What reaches the env from each vector step; LunarLander's reset steps
  # itself, and the step after an episode end resets instead.
  received = {}
  real_step, real_reset = env.step, env.reset
  step_index = [None]

  def step(action):
    if step_index[0] is not None:
      received[step_index[0]] = action
    return real_step(action)

  def reset(**kwargs):
    index, step_index[0] = step_index[0], None
    try:
      return real_reset(**kwargs)
    finally:
      step_index[0] = index

  env.step, env.reset = step, reset
  vec.reset(seed=0)
  for step_index[0], action in enumerate(unit):
    vec.step(action[None])
  vec.close()
  assert all(i in received for i in range(4))
  indices = sorted(received)
  low, high = space.low.astype(np.float64), space.high.astype(np.float64)
  clipped = np.clip(unit[indices].astype(np.float64), -1.0, 1.0)
  expected = (low + (clipped + 1.0) * 0.5 * (high - low)).astype(space.dtype)
  assert all(received[i].dtype == space.dtype for i in indices)
  np.testing.assert_array_equal(np.stack([received[i] for i in indices]),
                                expected)
  for i, bound in enumerate([space.low, space.high] * 2):
    np.testing.assert_array_equal(received[i], bound)


def test_minatar_bool_observations_reach_the_agent_as_uint8():
  env_id = "MinAtar/Breakout-v1"
  vec = envs.make_vector_env(config_for("minatar.py", env_id=env_id),
                             num_envs=1, asynchronous=False)
  raw = gym.make(env_id)
  space = raw.observation_space
  assert space.dtype == np.bool_
  assert vec.single_observation_space == gym.spaces.Box(0, 1, space.shape,
                                                        np.uint8)
  obs, _ = vec.reset(seed=0)
  raw_obs, _ = raw.reset(seed=0)
  seen = 0
  for step in range(100):
    assert obs.dtype == np.uint8
    np.testing.assert_array_equal(obs[0], raw_obs.astype(np.uint8))
    seen += int(raw_obs.sum())
    action = step % raw.action_space.n
    obs, _, terminated, truncated, _ = vec.step(np.array([action]))
    raw_obs, _, raw_terminated, raw_truncated, _ = raw.step(action)
    assert (terminated[0], truncated[0]) == (raw_terminated, raw_truncated)
    if raw_terminated or raw_truncated:
      break
  assert seen > 0  # the frames compared were not all empty
  vec.close()
