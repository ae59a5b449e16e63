"""Envs with action spaces the agent refuses, registered on import; a run
names them as `fake_action_envs:<id>` (with `tests/` on PYTHONPATH)."""

import gymnasium as gym
import numpy as np


class _FakeEnv(gym.Env):
  observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
  action_space = gym.spaces.Discrete(2)

  def reset(self, *, seed=None, options=None):
    return np.zeros(3, np.float32), {}

  def step(self, action):
    return np.zeros(3, np.float32), 0.0, False, False, {}


class InfiniteBoxActions(_FakeEnv):
  action_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)


class MultiDiscreteActions(_FakeEnv):
  action_space = gym.spaces.MultiDiscrete([3, 2])


class DictActions(_FakeEnv):
  action_space = gym.spaces.Dict({"move": gym.spaces.Discrete(2),
                                  "force": gym.spaces.Box(-1, 1, (1,))})


gym.register("InfiniteBoxActions-v0", entry_point=InfiniteBoxActions)
gym.register("MultiDiscreteActions-v0", entry_point=MultiDiscreteActions)
gym.register("DictActions-v0", entry_point=DictActions)


class RenderingBoxActions(_FakeEnv):
  """A valid env with bounded continuous actions and an rgb_array renderer."""
  metadata = {"render_modes": ["rgb_array"], "render_fps": 30}
  action_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)

  def __init__(self, render_mode=None):
    self.render_mode = render_mode

  def render(self):
    return np.zeros((8, 8, 3), np.uint8)


gym.register("RenderingBoxActions-v0", entry_point=RenderingBoxActions)


class Float64Observations(RenderingBoxActions):
  """A valid env whose observations are float64, as MuJoCo's are."""
  observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float64)

  def reset(self, *, seed=None, options=None):
    return np.full(3, 1 / 3), {}

  def step(self, action):
    return np.full(3, 1 / 3), 0.0, False, False, {}


gym.register("Float64Observations-v0", entry_point=Float64Observations)
