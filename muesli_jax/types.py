"""The types that travel between the modules: a replay batch, an env's
spec, frame stacks, a traced-function counter. They stand below every
module that uses them."""

from typing import Any, Callable, NamedTuple, Sequence, Tuple

import numpy as np


class Traced:
  """Wraps `fn` and counts the times it is traced (it runs in Python only
  while a `jit`/`pmap`/`scan` traces it)."""

  def __init__(self, fn: Callable):
    self.fn, self.traces = fn, 0

  def __call__(self, *args):
    self.traces += 1
    return self.fn(*args)


def window_length(sequence_length: int, unroll_steps: int) -> int:
  """`W = T + K + 1`: the steps of one replay window (see `Batch`)."""
  return sequence_length + unroll_steps + 1


class Batch(NamedTuple):
  """`B` windows of `W = T + K + 1` consecutive steps from replay.

  Steps 0..T-1 are the learning positions. From each, the model is unrolled
  K steps along the actions taken, so step t+k (k <= K) must be present for
  its targets; the last step, T+K, supplies the bootstrap value of the value
  target for step T+K-1. Field `[t]` describes step t and the transition out
  of it. A window may cross episode ends: `discount` and `mask` mark them.
  """
  observation: Any  # [B, W, ...]
  action: Any  # [B, W] int32, or [B, W, D] float32 (continuous)
  reward: Any  # [B, W] reward of the transition out of each step
  discount: Any  # [B, W] 0 where that transition terminated the episode
  mask: Any  # [B, W] 0 where that transition is not real (reset step)
  behaviour_logits: Any  # [B, W, A], or [B, W, 2D] Gaussian (mean, std)
  mc_return: Any  # [B, W] discounted return to episode end ("mc" target)
  mc_valid: Any  # [B, W] 1 where mc_return is known


class EnvSpec(NamedTuple):
  observation_shape: Tuple[int, ...]  # one frame, before stacking
  observation_dtype: np.dtype
  num_actions: int  # A; 0 for continuous actions
  # The networks divide observations by this inside the jitted functions
  # (255 for camera frames; small integer codes for MinAtar and MiniGrid).
  observation_scale: float = 1.0
  action_dim: int = 0  # D for continuous actions in [-1, 1]^D; 0: discrete

  @property
  def policy_size(self) -> int:
    """Numbers per policy output (and per stored behaviour policy): `A`
    logits, or a Gaussian's `D` means and `D` stds."""
    return 2 * self.action_dim if self.action_dim else self.num_actions




def stack_frames(frames: np.ndarray, frame_ndim: int) -> np.ndarray:
  """`[..., S, *frame] -> ` one observation, oldest frame first.

  Vector frames `[D]` are concatenated to `[S * D]`; images `[H, W, C]` along
  their channels to `[H, W, S * C]`.
  """
  num_frames = frames.shape[-frame_ndim - 1]
  if num_frames == 1:
    return frames.reshape(frames.shape[:-frame_ndim - 1] +
                          frames.shape[-frame_ndim:])
  if frame_ndim == 1:
    return frames.reshape(frames.shape[:-2] + (-1,))
  frames = np.moveaxis(frames, -frame_ndim - 1, -2)  # [..., H, W, S, C]
  return frames.reshape(frames.shape[:-2] + (-1,))


def stacked_shape(frame_shape: Sequence[int], stack: int):
  """The shape of one stacked observation (see `stack_frames`)."""
  frame_shape = tuple(frame_shape)
  return frame_shape[:-1] + (frame_shape[-1] * stack,)


class FrameStack:
  """The last `stack` frames of each env, `[E, stack, ...]`, oldest first.

  A new episode starts with its first frame repeated, as the replay rebuilds
  stacks at sample time.
  """

  def __init__(self, first_frames: np.ndarray, stack: int):
    self._frame_ndim = first_frames.ndim - 1
    self.frames = np.repeat(first_frames[:, None], stack, axis=1)

  def observation(self) -> np.ndarray:
    """The stacked observation `[E, ...]` the networks take."""
    return stack_frames(self.frames, self._frame_ndim)

  def newest(self) -> np.ndarray:
    return self.frames[:, -1]

  def push(self, frames: np.ndarray, restart: np.ndarray) -> None:
    """Appends each env's new frame; envs in `restart` begin a new stack."""
    self.frames = np.concatenate([self.frames[:, 1:], frames[:, None]], axis=1)
    if restart.any():
      self.frames[restart] = frames[restart][:, None]
