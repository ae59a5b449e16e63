"""A fixed-capacity numpy replay of per-environment streams.

All environments of a vector env step in lockstep, so the buffer is one ring
of `capacity` time steps, each holding a row for every environment:
`[capacity, num_envs, ...]`. A sample is a window of `W` consecutive steps of
one environment's stream; it never mixes environments and never crosses the
write head. Episode ends are not cut out: the step after an episode end is a
reset step with `mask = 0`, and the learner masks what crosses it.
"""

from typing import Dict

import numpy as np

from muesli_jax.learner import Batch


class SequenceReplay:
  """Ring buffer of `[capacity, num_envs]` steps; samples `[B, W]` windows."""

  def __init__(self, capacity: int, num_envs: int, observation_shape,
               observation_dtype, num_actions: int, window: int,
               discount: float = 0.99, mc_returns: bool = False,
               seed: int = 0):
    if capacity < window + 1:
      raise ValueError(f"replay capacity {capacity} is smaller than one "
                       f"window of {window} steps")
    self.capacity, self.num_envs, self.window = capacity, num_envs, window
    self._discount = discount
    self._mc_returns = mc_returns  # Backfill Monte-Carlo returns (costly).
    c, e = capacity, num_envs
    self.observation = np.zeros((c, e) + tuple(observation_shape),
                                observation_dtype)
    self.action = np.zeros((c, e), np.int32)
    self.reward = np.zeros((c, e), np.float32)
    self.discount = np.zeros((c, e), np.float32)
    self.mask = np.zeros((c, e), np.float32)
    self.behaviour_logits = np.zeros((c, e, num_actions), np.float32)
    self.mc_return = np.zeros((c, e), np.float32)
    self.mc_valid = np.zeros((c, e), np.float32)
    self.total_steps = 0  # Steps ever written; the newest is total_steps - 1.
    self._episode_start = np.zeros(e, np.int64)  # Absolute time per env.
    self._rng = np.random.default_rng(seed)

  @property
  def size(self) -> int:
    return min(self.total_steps, self.capacity)

  def nbytes(self) -> int:
    return sum(a.nbytes for a in (self.observation, self.action, self.reward,
                                  self.discount, self.mask,
                                  self.behaviour_logits, self.mc_return,
                                  self.mc_valid))

  def add(self, observation, action, reward, discount, mask,
          behaviour_logits) -> None:
    """Writes one step of every environment (`[E, ...]` arrays).

    `reward`/`discount` belong to the transition out of `observation`;
    `mask` is 0 when that transition is an autoreset step.
    """
    i = self.total_steps % self.capacity
    self.observation[i] = observation
    self.action[i] = action
    self.reward[i] = reward
    self.discount[i] = discount
    self.mask[i] = mask
    self.behaviour_logits[i] = behaviour_logits
    self.mc_valid[i] = 0.0
    if self._mc_returns:
      self._backfill_returns(np.asarray(mask) == 0)
    self.total_steps += 1

  def _backfill_returns(self, reset_envs: np.ndarray) -> None:
    """On a reset step, writes the Monte-Carlo returns of the finished episode."""
    now = self.total_steps
    for env in np.flatnonzero(reset_envs):
      start = max(self._episode_start[env], now - self.capacity + 1)
      ret = 0.0
      for t in range(now - 1, start - 1, -1):
        j = t % self.capacity
        ret = self.reward[j, env] + self._discount * self.discount[j, env] * ret
        self.mc_return[j, env] = ret
        # A truncated episode's tail has no true Monte-Carlo return.
        self.mc_valid[j, env] = float(self.discount[(now - 1) % self.capacity,
                                                    env] == 0.0)
      self._episode_start[env] = now + 1

  def num_windows(self) -> int:
    return max(0, self.size - self.window + 1)

  def sample(self, batch_size: int, fresh_steps: int,
             replay_proportion: float) -> Batch:
    """Samples `[B, W]` windows.

    A fraction `1 - replay_proportion` of the batch starts among the newest
    `fresh_steps` window positions; the rest is uniform over the buffer.
    """
    n = self.num_windows()
    if n <= 0:
      raise ValueError("not enough data in replay for one window")
    oldest = self.total_steps - self.size  # absolute time of oldest step
    num_fresh = int(round(batch_size * (1.0 - replay_proportion)))
    fresh = min(max(fresh_steps, 1), n)
    starts = np.concatenate([
        self._rng.integers(n - fresh, n, num_fresh),
        self._rng.integers(0, n, batch_size - num_fresh)]) + oldest
    envs = self._rng.integers(0, self.num_envs, batch_size)
    rows = (starts[:, None] + np.arange(self.window)[None, :]) % self.capacity
    cols = envs[:, None]
    return Batch(observation=self.observation[rows, cols],
                 action=self.action[rows, cols],
                 reward=self.reward[rows, cols],
                 discount=self.discount[rows, cols],
                 mask=self.mask[rows, cols],
                 behaviour_logits=self.behaviour_logits[rows, cols],
                 mc_return=self.mc_return[rows, cols],
                 mc_valid=self.mc_valid[rows, cols])

  def state_dict(self) -> Dict[str, np.ndarray]:
    return {k: getattr(self, k) for k in ("observation", "action", "reward",
                                          "discount", "mask",
                                          "behaviour_logits", "mc_return",
                                          "mc_valid")}
