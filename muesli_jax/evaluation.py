"""Evaluation: fresh episodes played with given params, optionally recorded.

`Evaluator(config, networks, episodes, greedy)(params, seed)` plays
`episodes` new episodes in `num_envs` synchronous envs built as in training
(vector states, stacked frames, MinAtar, MiniGrid, Atari) and returns their
returns and lengths. With `record=True` it also returns the RGB frames of env
0's first episode, rendered by the env (`render_mode="rgb_array"`): every
family here has such a renderer (LunarLander and CartPole 400x600, MinAtar
10x10, MiniGrid the whole grid, Atari 210x160 full-colour). An env without
one is pictured from its own observation (`observation_image`).

It depends on the networks only, not on the training loop, so that the
training loop can hold one and evaluate its target params periodically.
"""

import colorsys
import os
import sys
import warnings
from typing import List, NamedTuple, Optional

import gymnasium as gym
import jax
import numpy as np

from muesli_jax import envs as envs_lib
from muesli_jax.types import FrameStack, Traced
from muesli_jax.networks import MuesliNetworks

# A recording stops at whichever comes first (the episode still runs to its
# end): 1000 frames, or 512 MiB of frames (745 of LunarLander's 400x600).
MAX_FRAMES = 1000
MAX_FRAME_BYTES = 512 * 2**20
# MinAtar declares no frame rate; its own display shows a step for 50 ms.
DEFAULT_FPS = 20.0
ATARI_HZ = 60.0  # the console's frame rate, before frame skipping


class EvalResult(NamedTuple):
  returns: np.ndarray  # [episodes] float64, in the order episodes ended
  lengths: np.ndarray  # [episodes] int64 agent steps, same order
  # With `record=True`: the RGB frames uint8 [H, W, 3] of env 0's first
  # episode, from its first observation to its last (length + 1 frames, or
  # fewer at the cap); otherwise None.
  frames: Optional[List[np.ndarray]]


def rgb_frame(frame: np.ndarray) -> np.ndarray:
  """A rendered frame as RGB `uint8 [H, W, 3]`.

  Accepts `uint8` or float frames (MinAtar renders floats in [0, 1]), grey
  `[H, W]` or `[H, W, 1]`, and RGBA.
  """
  frame = np.asarray(frame)
  if np.issubdtype(frame.dtype, np.floating) or frame.dtype == np.bool_:
    frame = frame.astype(np.float64)
    if frame.size and frame.max() <= 1.0:
      frame = frame * 255.0
    frame = np.clip(np.round(frame), 0, 255)
  frame = frame.astype(np.uint8)
  if frame.ndim == 2:
    frame = frame[..., None]
  if frame.ndim != 3 or frame.shape[-1] not in (1, 3, 4):
    raise ValueError(f"cannot show a frame of shape {frame.shape} as RGB")
  if frame.shape[-1] == 1:
    frame = np.repeat(frame, 3, axis=-1)
  return np.ascontiguousarray(frame[..., :3])


def observation_image(observation: np.ndarray, scale: float) -> np.ndarray:
  """An RGB picture `uint8 [H, W, 3]` of one image observation `[H, W, C]`.

  The fallback for an env without an `rgb_array` renderer: grey (C = 1) and
  colour (C = 3) frames are shown as they are, after dividing by `scale`
  (the networks' observation scale); other channel counts are taken as
  object maps, each pixel coloured by the last channel set there (black
  where none is), as MinAtar draws its grids.
  """
  observation = np.asarray(observation)
  if observation.ndim != 3:
    raise ValueError(
        f"cannot record this env: it has no rgb_array renderer and its "
        f"observations of shape {observation.shape} are not images")
  channels = observation.shape[-1]
  if channels in (1, 3):
    return rgb_frame(np.asarray(observation, np.float64) * (255.0 / scale))
  active = observation > 0
  # 1 + index of the last active channel, 0 where none is.
  last = channels - np.argmax(active[..., ::-1], axis=-1)
  index = np.where(active.any(axis=-1), last, 0)
  palette = np.array([(0, 0, 0)] + [
      colorsys.hsv_to_rgb(c / channels, 0.8, 1.0) for c in range(channels)])
  return rgb_frame(palette[index])


def _video_fps(env: gym.Env) -> float:
  """Frames per second of real time for `env`'s frames, one per agent step."""
  wrapper = env
  while isinstance(wrapper, gym.Wrapper):
    if isinstance(wrapper, gym.wrappers.AtariPreprocessing):
      return ATARI_HZ / wrapper.frame_skip
    wrapper = wrapper.env
  fps = env.metadata.get("render_fps")
  return float(fps) if fps else DEFAULT_FPS


class Evaluator:
  """Plays fresh episodes with given params; reuses its envs and its policy.

  The act function is jitted once here, so evaluating again during training
  does not compile again (`traces` counts its compilations); the envs are
  built at the first call and kept open until `close()`. Params must be a
  single copy (not replicated over devices).
  """

  def __init__(self, config, networks: MuesliNetworks, episodes: int,
               greedy: bool, num_envs: Optional[int] = None,
               max_frames: int = MAX_FRAMES,
               max_frame_bytes: int = MAX_FRAME_BYTES):
    """Args:
      config: the run's config (env options, `stack`, `num_envs`).
      networks: built for this config's env, e.g. by
        `builder.build_networks(config, spec)`.
      episodes: episodes per evaluation.
      greedy: act with the policy's argmax instead of sampling from it.
      num_envs: envs stepped in lockstep; default `config.num_envs`. At most
        `episodes` are used: every env's first episode counts, and extra
        envs would favour the episodes that end first.
      max_frames, max_frame_bytes: caps on a recording (see `MAX_FRAMES`).
    """
    if episodes < 1:
      raise ValueError(f"episodes must be positive, got {episodes}")
    self._config = config
    self._episodes = episodes
    self._num_envs = min(num_envs or config.num_envs, episodes)
    self._max_frames = max_frames
    self._max_frame_bytes = max_frame_bytes
    self._envs = None
    self._render_failed = False

    def act(params, observation, rng, step):
      hidden = networks.represent(params, observation)
      logits = networks.predict(params, hidden).policy_logits
      policy = networks.policy(logits)
      if greedy:
        return policy.mode()
      # Folding in the step number avoids host-side key splitting per step.
      return policy.sample(jax.random.fold_in(rng, step))

    self._traced_act = Traced(act)
    self._act = jax.jit(self._traced_act)

  @property
  def traces(self) -> int:
    """How many times the act function was compiled (1 after any calls)."""
    return self._traced_act.traces

  @property
  def num_envs(self) -> int:
    return self._num_envs

  @property
  def fps(self) -> float:
    """Real-time frame rate for a video of recorded frames: the env's
    `render_fps`, 15 for Atari (60 Hz, every 4th frame), else 20."""
    return _video_fps(self._vector_env().envs[0])

  def _vector_env(self) -> gym.vector.SyncVectorEnv:
    if self._envs is None:
      if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        # pygame's renderers (CartPole, LunarLander) draw off-screen; without
        # a display SDL would print a spurious "error:" line at their first
        # render.
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
      # Synchronous, so that env 0 alone can be rendered, in this process;
      # built with its renderer, which costs nothing until render() is
      # called, so that any later call can record.
      self._envs = envs_lib.make_vector_env(
          self._config, num_envs=self._num_envs, asynchronous=False,
          render=True)
      self._renders = self._envs.envs[0].render_mode == "rgb_array"
      scale = (self._config.observation_scale or
               envs_lib.env_spec(self._envs).observation_scale)
      self._observation_scale = scale
    return self._envs

  def _frame(self, observation: np.ndarray) -> np.ndarray:
    """Env 0's current frame; `observation` is its newest (unstacked) one."""
    if self._renders:
      with warnings.catch_warnings():
        # gymnasium's env checker warns, at the first render, of MinAtar's
        # float frames and missing frame rate: both are handled here.
        warnings.filterwarnings(
            "ignore", ".*(No render fps|RGB-array rendering should)",
            UserWarning)
        return rgb_frame(self._envs.envs[0].render())
    return observation_image(observation, self._observation_scale)

  def _safe_frame(self, observation: np.ndarray) -> Optional[np.ndarray]:
    """`_frame`, or None (and no recording from then on) where the env's
    renderer fails, e.g. MuJoCo without an OpenGL context: a video is not
    worth a run."""
    try:
      return self._frame(observation)
    except Exception as e:  # pylint: disable=broad-except
      try:
        first_line = (str(e).strip().splitlines() or [""])[0]
      except Exception:  # pylint: disable=broad-except
        first_line = ""  # Some GL errors cannot even print themselves.
      print(f"warning: evaluation videos are off: {self._config.env_id} "
            f"cannot render here ({type(e).__name__}: {first_line})",
            file=sys.stderr, flush=True)
      self._render_failed = True
      return None

  def __call__(self, params, seed: int, record: bool = False) -> EvalResult:
    """Plays `episodes` fresh episodes with `params` (the target params, as
    the actor uses).

    Envs are reset with `seed` (env i with `seed + i`) and sampling uses
    `jax.random.PRNGKey(seed)`: the same params and seed give the same
    result. With `record=True`, env 0's first episode is recorded.
    """
    envs = self._vector_env()
    num_envs, episodes = self._num_envs, self._episodes
    obs, _ = envs.reset(seed=seed)
    stack = FrameStack(obs, self._config.stack)
    rng = jax.random.PRNGKey(seed)
    frames, recording = None, record and not self._render_failed
    if recording:
      first = self._safe_frame(obs[0])
      if first is None:
        recording = False
      else:
        frames = [first]
        cap = min(self._max_frames,
                  max(1, self._max_frame_bytes // frames[0].nbytes))
        recording = len(frames) < cap
    returns, lengths = [], []
    episode_return = np.zeros(num_envs, np.float64)
    episode_length = np.zeros(num_envs, np.int64)
    after_end = np.zeros(num_envs, bool)
    # Envs play until `episodes` episodes have ended. Only episodes that
    # start before the quota is met count: taking the first `episodes` to
    # end would favour short ones. Every env's first episode counts.
    counted = np.ones(num_envs, bool)
    started = num_envs
    step = 0
    while len(returns) < episodes:
      actions = np.asarray(self._act(params, stack.observation(), rng,
                                     np.int32(step)))
      step += 1
      obs, reward, terminated, truncated, _ = envs.step(actions)
      # The step after an end is the NEXT_STEP autoreset: its action is
      # ignored, its reward is 0 and it is not an agent step.
      episode_return += np.where(after_end, 0.0, reward)
      episode_length += ~after_end
      done = (terminated | truncated) & ~after_end
      if recording:
        # Until its reset, env 0 still shows the end of its episode.
        frame = self._safe_frame(obs[0])
        if frame is None:
          frames, recording = None, False
        else:
          frames.append(frame)
          recording = not done[0] and len(frames) < cap
      for env in np.flatnonzero(done):
        if counted[env]:
          returns.append(episode_return[env])
          lengths.append(episode_length[env])
        counted[env] = started < episodes
        started += 1
      episode_return[done] = 0.0
      episode_length[done] = 0
      # An autoreset frame starts a new stack.
      stack.push(obs, after_end)
      after_end = done
    return EvalResult(returns=np.array(returns, np.float64),
                      lengths=np.array(lengths, np.int64), frames=frames)

  def close(self) -> None:
    if self._envs is not None:
      self._envs.close()
      self._envs = None

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
