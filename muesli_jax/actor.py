"""The actor: steps a gymnasium vector env with a jitted policy step.

It acts with the prior (target) params, as in the paper, samples from the
policy, stacks observations, and writes every step to the replay. It knows
nothing of losses.
"""

import pickle
from typing import Any, Dict, List, Optional, Tuple

import gymnasium as gym
import jax
import numpy as np

from muesli_jax.networks import MuesliNetworks
from muesli_jax.replay import SequenceReplay
from muesli_jax.types import FrameStack  # noqa: F401


def make_policy_step(networks: MuesliNetworks):
  """`(params, obs [E, ...], rng, step) -> (actions [E], logits [E, A])`;
  for continuous actions `(actions [E, D], Gaussian (mean, std) [E, 2D])`."""

  @jax.jit
  def policy_step(params, observation, rng, step):
    rng = jax.random.fold_in(rng, step)  # No host-side key splitting per step.
    hidden = networks.represent(params, observation)
    logits = networks.predict(params, hidden).policy_logits
    return networks.policy(logits).sample(rng), logits

  return policy_step


def _pickles_its_state(env: gym.Env) -> bool:
  """Whether pickling `env` and each env it wraps keeps their state.

  Box2D, MuJoCo and Atari envs define their own pickling (gymnasium's
  `EzPickle`): it records the constructor's arguments, so unpickling builds
  a new env, not the one that was running.
  """
  while env is not None:
    kind = type(env)
    if any(getattr(kind, name, None) is not getattr(object, name, None)
           for name in ("__getstate__", "__setstate__", "__reduce__",
                        "__reduce_ex__")):
      return False
    env = getattr(env, "env", None)
  return True


def snapshot_envs(envs: gym.vector.VectorEnv) -> Optional[bytes]:
  """The state of every env of a `SyncVectorEnv`, or None where it cannot
  be saved.

  Classic-control, MinAtar and MiniGrid envs pickle with their RNGs, so a
  run resumed from the snapshot steps exactly as it would have. Envs that
  pickle only their constructor's arguments (LunarLander, Atari) and envs
  in subprocesses are out of reach.
  """
  if not isinstance(envs, gym.vector.SyncVectorEnv):
    return None
  if not all(_pickles_its_state(env) for env in envs.envs):
    return None
  try:
    return pickle.dumps((envs.envs, envs._autoreset_envs))  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except
    return None


def restore_envs(envs: gym.vector.SyncVectorEnv, snapshot: bytes) -> bool:
  """Puts a `snapshot_envs` state into `envs`, closing the envs it replaces;
  False (nothing changed) where the snapshot could not hold their state.

  Unpickling runs code: a snapshot is read only from the run's own folder.
  """
  restored, autoreset = pickle.loads(snapshot)
  if len(restored) != envs.num_envs:
    raise ValueError(f"the saved env state has {len(restored)} envs, the "
                     f"run {envs.num_envs}")
  if not all(_pickles_its_state(env) for env in restored):
    for env in restored:
      env.close()
    return False
  for env in envs.envs:
    env.close()
  envs.envs = restored
  envs._autoreset_envs = autoreset  # pylint: disable=protected-access
  return True


class Actor:
  """Runs `num_envs` environments in lockstep and fills a replay."""

  def __init__(self, envs: gym.vector.VectorEnv, networks: MuesliNetworks,
               replay: SequenceReplay, stack: int, seed: int):
    self._envs = envs
    self._replay = replay
    self._policy_step = make_policy_step(networks)
    self._rng = jax.random.PRNGKey(seed)
    obs, _ = envs.reset(seed=seed)
    self._frames = FrameStack(obs, stack)
    self._after_episode_end = np.zeros(envs.num_envs, bool)
    self._episode_return = np.zeros(envs.num_envs, np.float64)
    self._episode_length = np.zeros(envs.num_envs, np.int64)
    self.env_steps = 0
    self._num_steps = 0
    self._finished: List[Tuple[float, int]] = []  # (return, length)

  def state_dict(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """`(counters, arrays)`: what a checkpoint needs to act on exactly as
    this actor would (the envs themselves are saved by `snapshot_envs`)."""
    counters = dict(env_steps=self.env_steps, num_steps=self._num_steps)
    arrays = dict(frames=self._frames.frames,
                  after_episode_end=self._after_episode_end,
                  episode_return=self._episode_return,
                  episode_length=self._episode_length)
    return counters, arrays

  def load_state_dict(self, counters: Dict[str, Any],
                      arrays: Dict[str, np.ndarray]) -> None:
    self.env_steps = int(counters["env_steps"])
    self._num_steps = int(counters["num_steps"])
    self._frames.frames = np.array(arrays["frames"])
    self._after_episode_end = np.array(arrays["after_episode_end"], bool)
    self._episode_return = np.array(arrays["episode_return"], np.float64)
    self._episode_length = np.array(arrays["episode_length"], np.int64)

  def restart_episodes(self, seed: int) -> None:
    """Resets every env (their state could not be saved) and starts fresh
    episodes; the replay must cut the episodes in progress."""
    obs, _ = self._envs.reset(seed=seed)
    self._frames = FrameStack(obs, self._frames.frames.shape[1])
    self._after_episode_end[:] = False
    self._episode_return[:] = 0.0
    self._episode_length[:] = 0

  def pop_episodes(self) -> List[Tuple[float, int]]:
    """`(return, length)` of the episodes finished since the last call."""
    finished, self._finished = self._finished, []
    return finished

  def observation(self) -> np.ndarray:
    """The stacked observation `[E, ...]` the policy acts on."""
    return self._frames.observation()

  def step(self, params, num_steps: int) -> None:
    """Takes `num_steps` steps of every env, writing each to the replay."""
    for _ in range(num_steps):
      obs = self.observation()
      actions, logits = self._policy_step(params, obs, self._rng,
                                          np.int32(self._num_steps))
      self._num_steps += 1
      actions, logits = np.asarray(actions), np.asarray(logits)
      next_obs, reward, terminated, truncated, _ = self._envs.step(actions)
      # The step after an episode end is the autoreset: not a transition.
      is_reset = self._after_episode_end
      self._replay.add(self._frames.newest(), actions, reward,
                       discount=np.where(terminated | is_reset, 0.0, 1.0),
                       mask=(~is_reset).astype(np.float32),
                       behaviour_logits=logits)
      done = (terminated | truncated) & ~is_reset
      self._episode_return += np.where(is_reset, 0.0, reward)
      self._episode_length += ~is_reset
      for env in np.flatnonzero(done):
        self._finished.append((float(self._episode_return[env]),
                               int(self._episode_length[env])))
      self._episode_return[done] = 0.0
      self._episode_length[done] = 0
      # Reset envs start a fresh stack; the others push the new frame.
      self._frames.push(next_obs, is_reset)
      self._after_episode_end = done
      self.env_steps += self._envs.num_envs
