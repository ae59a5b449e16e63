"""A fixed-capacity numpy replay of per-environment streams.

All environments of a vector env step in lockstep, so the buffer is one ring
of `capacity` time steps, each holding a row for every environment:
`[capacity, num_envs, ...]`. A sample is a window of `W` consecutive steps of
one environment's stream; it never mixes environments and never crosses the
write head. Episode ends are not cut out: the step after an episode end is a
reset step with `mask = 0`, and the learner masks what crosses it.

Each step stores one frame; a stack of `stack` frames is rebuilt when a
window is sampled (frames before an episode's first step repeat that first
step, as the actor stacks them), so pixels are not stored `stack` times.
"""

from typing import Any, Dict, Tuple

import numpy as np

from muesli_jax.types import Batch, stack_frames


def replay_nbytes(capacity: int, num_envs: int, frame_shape, frame_dtype,
                  num_actions: int, action_dim: int = 0) -> int:
  """Bytes a `SequenceReplay` of these sizes holds (checked before it is).

  `num_actions` is the behaviour policy's width (`A`, or `2D` for a
  Gaussian); `action_dim` is `D` for continuous actions.
  """
  frame = int(np.prod(frame_shape)) * np.dtype(frame_dtype).itemsize
  # action int32 (or float32 [D]); reward, discount, mask, mc_return,
  # mc_valid float32; episode start int64; behaviour logits float32 [A].
  per_step = frame + 4 * max(action_dim, 1) + 5 * 4 + 8 + 4 * num_actions
  return capacity * num_envs * per_step


class SequenceReplay:
  """Ring buffer of `[capacity, num_envs]` steps; samples `[B, W]` windows."""

  _ARRAYS = ("observation", "action", "reward", "discount", "mask",
             "behaviour_logits", "mc_return", "mc_valid", "episode_start")

  def __init__(self, capacity: int, num_envs: int, observation_shape,
               observation_dtype, num_actions: int, window: int,
               discount: float = 0.99, mc_returns: bool = False,
               seed: int = 0, stack: int = 1, action_dim: int = 0):
    """`observation_shape` is one frame's; samples stack `stack` of them.

    `num_actions` is the width of the stored behaviour policy (`A` logits,
    or `2D` for a Gaussian); `action_dim = D > 0` stores float32 actions
    `[D]` instead of int32 ones.
    """
    if capacity < window + stack:
      raise ValueError(f"replay capacity {capacity} is smaller than one "
                       f"window of {window} steps and its {stack - 1} "
                       "earlier frames")
    self.capacity, self.num_envs, self.window = capacity, num_envs, window
    self.stack = stack
    self._frame_ndim = len(observation_shape)
    self._discount = discount
    self._mc_returns = mc_returns  # Backfill Monte-Carlo returns (costly).
    c, e = capacity, num_envs
    self.observation = np.zeros((c, e) + tuple(observation_shape),
                                observation_dtype)
    if action_dim:
      self.action = np.zeros((c, e, action_dim), np.float32)
    else:
      self.action = np.zeros((c, e), np.int32)
    self.reward = np.zeros((c, e), np.float32)
    self.discount = np.zeros((c, e), np.float32)
    self.mask = np.zeros((c, e), np.float32)
    self.behaviour_logits = np.zeros((c, e, num_actions), np.float32)
    self.mc_return = np.zeros((c, e), np.float32)
    self.mc_valid = np.zeros((c, e), np.float32)
    # Absolute time of the first step of each stored step's episode.
    self.episode_start = np.zeros((c, e), np.int64)
    self.total_steps = 0  # Steps ever written; the newest is total_steps - 1.
    # Absolute time of the current episode's first step, per env.
    self._episode_start = np.zeros(e, np.int64)
    self._rng = np.random.default_rng(seed)

  @property
  def size(self) -> int:
    return min(self.total_steps, self.capacity)

  def nbytes(self) -> int:
    return sum(getattr(self, k).nbytes for k in self._ARRAYS)

  def add(self, observation, action, reward, discount, mask,
          behaviour_logits) -> None:
    """Writes one step of every environment (`[E, ...]` arrays).

    `observation` is the newest frame only. `reward`/`discount` belong to the
    transition out of it; `mask` is 0 when that transition is an autoreset
    step, so the next step starts an episode.
    """
    i = self.total_steps % self.capacity
    self.episode_start[i] = self._episode_start
    self.observation[i] = observation
    self.action[i] = action
    self.reward[i] = reward
    self.discount[i] = discount
    self.mask[i] = mask
    self.behaviour_logits[i] = behaviour_logits
    self.mc_valid[i] = 0.0
    reset = np.asarray(mask) == 0
    if self._mc_returns:
      self._backfill_returns(reset)
    # The step after an autoreset step starts the env's next episode.
    self._episode_start[reset] = self.total_steps + 1
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

  def num_windows(self) -> int:
    """Start times per env whose window and earlier frames are all stored."""
    return max(0, self.size - self.window - self.stack + 2)

  def _draw_windows(self, batch_size: int, fresh_steps: int,
                    replay_proportion: float) -> np.ndarray:
    """Distinct window ids `start * num_envs + env`, fresh ones first.

    A fraction `1 - replay_proportion` of the batch starts among the newest
    `fresh_steps` start times (of every env); the rest is uniform over all
    windows not drawn yet. Ids repeat only when the batch is larger than the
    number of windows stored.
    """
    e = self.num_envs
    total = self.num_windows() * e
    if batch_size > total:  # Too little data for distinct windows.
      return self._rng.integers(0, total, batch_size)
    fresh_total = min(max(fresh_steps, 1), self.num_windows()) * e
    num_fresh = min(int(round(batch_size * (1.0 - replay_proportion))),
                    fresh_total)
    fresh = total - fresh_total + self._rng.choice(fresh_total, num_fresh,
                                                   replace=False)
    # Uniform over the windows not yet drawn: draw distinct candidates with
    # room for every fresh id among them, drop those, keep the rest in order.
    num_uniform = batch_size - num_fresh
    candidates = self._rng.choice(total, min(total, num_uniform + num_fresh),
                                  replace=False)
    candidates = candidates[~np.isin(candidates, fresh)][:num_uniform]
    return np.concatenate([fresh, candidates])

  def sample(self, batch_size: int, fresh_steps: int,
             replay_proportion: float) -> Batch:
    """Samples `[B, W]` windows, distinct whenever enough are stored."""
    if self.num_windows() <= 0:
      raise ValueError("not enough data in replay for one window")
    ids = self._draw_windows(batch_size, fresh_steps, replay_proportion)
    # Absolute time of the oldest start with all its earlier frames stored.
    first = self.total_steps - self.size + self.stack - 1
    starts, envs = ids // self.num_envs + first, ids % self.num_envs
    times = starts[:, None] + np.arange(self.window)[None, :]  # [B, W]
    rows = times % self.capacity
    cols = envs[:, None]
    return Batch(observation=self._stacked_observations(times, envs),
                 action=self.action[rows, cols],
                 reward=self.reward[rows, cols],
                 discount=self.discount[rows, cols],
                 mask=self.mask[rows, cols],
                 behaviour_logits=self.behaviour_logits[rows, cols],
                 mc_return=self.mc_return[rows, cols],
                 mc_valid=self.mc_valid[rows, cols])

  def _stacked_observations(self, times: np.ndarray, envs: np.ndarray):
    """`[B, W]` absolute times of `envs [B]` -> stacked observations."""
    if self.stack == 1:
      return self.observation[times % self.capacity, envs[:, None]]
    cols = envs[:, None, None]
    start = self.episode_start[times % self.capacity, envs[:, None]]
    back = np.arange(self.stack - 1, -1, -1)  # oldest frame first
    frame_times = np.maximum(times[..., None] - back, start[..., None])
    frames = self.observation[frame_times % self.capacity, cols]
    return stack_frames(frames, self._frame_ndim)


  def state_dict(self) -> Tuple[Dict[str, Any], Dict[str, np.ndarray]]:
    """`(counters, arrays)`: everything a resumed run needs to sample the
    same batches (contents, write position, sampling RNG)."""
    counters = dict(total_steps=self.total_steps,
                    rng=self._rng.bit_generator.state)
    arrays = {k: getattr(self, k) for k in self._ARRAYS}
    arrays["current_episode_start"] = self._episode_start
    return counters, arrays

  def load_state_dict(self, counters: Dict[str, Any],
                      arrays: Dict[str, np.ndarray]) -> None:
    for key in self._ARRAYS:
      if arrays[key].shape != getattr(self, key).shape:
        raise ValueError(f"saved replay {key} has shape {arrays[key].shape}, "
                         f"this run's {getattr(self, key).shape}")
      getattr(self, key)[...] = arrays[key]
    self._episode_start[...] = arrays["current_episode_start"]
    self.total_steps = int(counters["total_steps"])
    self._rng.bit_generator.state = counters["rng"]

  def cut_episodes(self) -> None:
    """Ends every env's episode at the newest step, as a truncation.

    For a resume whose envs restart: the newest step's successor is lost,
    so its transition is masked like an autoreset step, and the next step
    written starts a new episode (its frame stack does not look back).
    """
    if self.total_steps == 0:
      return
    self.mask[(self.total_steps - 1) % self.capacity] = 0.0
    self._episode_start[:] = self.total_steps
