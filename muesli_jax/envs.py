"""Environment construction: gymnasium vector envs and their specs."""

from typing import NamedTuple, Tuple

import gymnasium as gym
import numpy as np


class EnvSpec(NamedTuple):
  observation_shape: Tuple[int, ...]  # one frame, before stacking
  observation_dtype: np.dtype
  num_actions: int


class UnknownEnvError(ValueError):
  pass


def _register_optional_envs(env_id: str) -> None:
  """Imports the packages that register Atari and Minigrid ids."""
  if env_id.startswith("ALE/"):
    try:
      import ale_py
      gym.register_envs(ale_py)
    except ImportError as e:
      raise UnknownEnvError(f"{env_id} needs ale-py: pip install ale-py") from e
  if env_id.startswith("MiniGrid") or env_id.startswith("BabyAI"):
    try:
      import minigrid
      gym.register_envs(minigrid)
    except ImportError as e:
      raise UnknownEnvError(
          f"{env_id} needs minigrid: pip install minigrid") from e


def check_env_id(env_id: str) -> None:
  """Raises `UnknownEnvError` with a clear message for an unknown id."""
  _register_optional_envs(env_id)
  if env_id not in gym.registry:
    close = [k for k in gym.registry if env_id.split("-")[0].lower() in
             k.lower()][:5]
    hint = f" (did you mean one of {close}?)" if close else ""
    raise UnknownEnvError(f"unknown env_id {env_id!r}{hint}")


def make_vector_env(env_id: str, num_envs: int, seed: int) -> gym.vector.VectorEnv:
  """A synchronous vector env in gymnasium's default NEXT_STEP autoreset mode.

  In that mode the step after an episode end returns the reset observation,
  reward 0 and ignores the action; the actor marks it `mask = 0`. The real
  final observation is the one returned by the ending step itself, so a
  truncated episode bootstraps from it.
  """
  check_env_id(env_id)
  envs = gym.make_vec(env_id, num_envs=num_envs,
                      vectorization_mode="sync")
  if not isinstance(envs.single_action_space, gym.spaces.Discrete):
    raise UnknownEnvError(f"{env_id} has a {envs.single_action_space} action "
                          "space; Muesli here needs discrete actions")
  envs.action_space.seed(seed)  # The actor resets with the same seed.
  return envs


def env_spec(envs: gym.vector.VectorEnv) -> EnvSpec:
  space = envs.single_observation_space
  return EnvSpec(observation_shape=tuple(space.shape),
                 observation_dtype=np.dtype(space.dtype),
                 num_actions=int(envs.single_action_space.n))
