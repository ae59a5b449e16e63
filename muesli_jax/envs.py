"""Environment construction: gymnasium vector envs, pixel wrappers and specs.

`make_vector_env(config)` builds `config.num_envs` copies of one env:
- vector-state envs (LunarLander-v3, CartPole-v1, ...) as they are;
- any env with an `rgb_array` renderer observed only through its frames
  (`config.pixels=True`), resized and optionally grey;
- MinAtar (`MinAtar/...`), whose boolean channels become uint8 0/1;
- MiniGrid/BabyAI, whose Dict observation is reduced to its `image`;
- Atari (`ALE/...`) with the usual preprocessing (Machado et al. 2018).
Actions are discrete (`Discrete(A)`) or a vector of `D` bounded reals
(`Box`), which the agent sees rescaled to [-1, 1] and which are clipped
there before the env gets them.
Frame stacking is not done here: the actor and the replay stack frames, so
the replay stores each frame once.
"""

import importlib
import multiprocessing
import os
import signal

import gymnasium as gym
import numpy as np

from muesli_jax.errors import UnknownEnvError  # noqa: F401  (raised here)
from muesli_jax.types import EnvSpec

# MinAtar's games (ids `MinAtar/<Game>-v1`): named in the error for an
# unknown one, whose id gymnasium would only call unknown.
MINATAR_GAMES = ("Asterix", "Breakout", "Freeway", "Seaquest", "SpaceInvaders")


def _register_optional_envs(env_id: str) -> None:
  """Imports the packages that register Atari, MinAtar and MiniGrid ids."""
  def need(package, install):
    raise UnknownEnvError(f"{env_id} needs the {package} package: pip install "
                          f"{install} (or the project's [pixels] extra)")
  if env_id.startswith("ALE/"):
    try:
      import ale_py
    except ImportError:
      need("ale-py", "ale-py")
    # Its banner goes to stderr, where a run's only line should be an error.
    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gym.register_envs(ale_py)
  if env_id.startswith("MinAtar/"):
    try:
      import minatar.gym
    except ImportError:
      need("minatar", "minatar")
    # gymnasium 1.x does not load them itself. Once only: registering again
    # (a second look-up of an unknown game) warns about every id.
    if not any(k.startswith("MinAtar/") for k in gym.registry):
      minatar.gym.register_envs()
  spec = gym.registry.get(env_id)
  if spec is not None and "mujoco" in str(spec.entry_point):
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
      # Headless: MuJoCo's default (GLFW) aborts the process at the first
      # render; EGL renders where a driver has it and otherwise raises an
      # exception, which the evaluator catches. Read at mujoco's import.
      os.environ.setdefault("MUJOCO_GL", "egl")
    try:
      import mujoco  # pylint: disable=unused-import
    except ImportError:
      raise UnknownEnvError(f"{env_id} needs the mujoco package: pip install "
                            "'mujoco>=3.2,<4' (or the project's [mujoco] "
                            "extra)") from None
  if env_id.startswith("MiniGrid") or env_id.startswith("BabyAI"):
    try:
      import minigrid
    except ImportError:
      need("minigrid", "minigrid")
    gym.register_envs(minigrid)


def check_env_id(env_id: str) -> None:
  """Raises `UnknownEnvError` with a clear message for an unknown id.

  `module:EnvName-v0` (gymnasium's convention) first imports `module`,
  which registers the env: a user's own env needs no change here.
  """
  if ":" in env_id:
    module, env_id = env_id.split(":", 1)
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise UnknownEnvError(f"cannot import {module!r} for env {env_id!r}: "
                            f"{e}") from None
  _register_optional_envs(env_id)
  if env_id not in gym.registry and env_id.startswith("MinAtar/"):
    raise UnknownEnvError(f"unknown MinAtar env_id {env_id!r}: the games are "
                          f"{', '.join(MINATAR_GAMES)} (MinAtar/<Game>-v1)")
  if env_id not in gym.registry:
    close = [k for k in gym.registry if env_id.split("-")[0].lower() in
             k.lower()][:5]
    hint = f" (did you mean one of {close}?)" if close else ""
    raise UnknownEnvError(f"unknown env_id {env_id!r}{hint}")


class ImageFromDict(gym.ObservationWrapper):
  """Keeps the image of a Dict observation (MiniGrid's `image`)."""

  def __init__(self, env, key: str):
    super().__init__(env)
    self._key = key
    self.observation_space = env.observation_space[key]

  def observation(self, observation):
    return observation[self._key]


def _image_key(space: gym.spaces.Dict, env_id: str) -> str:
  for key in ("image", "pixels", "rgb"):
    if key in space.spaces:
      return key
  images = [k for k, s in space.spaces.items()
            if isinstance(s, gym.spaces.Box) and len(s.shape) == 3]
  if len(images) == 1:
    return images[0]
  raise UnknownEnvError(
      f"{env_id} has a Dict observation without an image (keys "
      f"{sorted(space.spaces)}); this agent needs an 'image' entry")


def renders_rgb(env_id: str) -> bool:
  """Whether `env_id` declares an `rgb_array` renderer (the env's metadata)."""
  # A `module:Id` has been imported by `check_env_id`; its spec is `Id`'s.
  creator = gym.spec(env_id.split(":")[-1]).entry_point
  if isinstance(creator, str):
    creator = gym.envs.registration.load_env_creator(creator)
  metadata = getattr(creator, "metadata", None)
  return isinstance(metadata, dict) and "rgb_array" in metadata.get(
      "render_modes", ())


def check_action_space(space: gym.Space, env_id: str) -> None:
  """Raises `UnknownEnvError` unless `space` is Discrete or a bounded 1-D Box."""
  if isinstance(space, gym.spaces.Discrete):
    return
  if isinstance(space, gym.spaces.Box):
    if len(space.shape) != 1:
      raise UnknownEnvError(f"{env_id} has a Box action space of shape "
                            f"{space.shape}; continuous actions must be a "
                            "vector")
    if not (np.all(np.isfinite(space.low)) and
            np.all(np.isfinite(space.high))):
      raise UnknownEnvError(f"{env_id} has an action space with infinite "
                            f"bounds ({space}); continuous actions need "
                            "finite bounds (the policy acts in [-1, 1])")
    return
  raise UnknownEnvError(f"{env_id} has a {space} action space; this agent "
                        "takes Discrete or bounded Box actions")


class BoolToUint8(gym.ObservationWrapper):
  """MinAtar's boolean channels as uint8 0/1: one byte a cell, as stored.

  Not gymnasium's `DtypeObservation`, which gives the same observations
  but pickles as its constructor's arguments (`EzPickle`): an env behind it
  could not be snapshot, and a MinAtar run would lose its exact resume.
  """

  def __init__(self, env):
    super().__init__(env)
    self.observation_space = gym.spaces.Box(
        0, 1, env.observation_space.shape, np.uint8)

  def observation(self, observation):
    return observation.astype(np.uint8)


class UnitBoxActions(gym.ActionWrapper):
  """A bounded Box action space seen as [-1, 1]^D: actions are clipped
  there (the policy's Gaussian samples may fall outside), then mapped
  linearly onto the env's bounds.

  The map runs in float64 and rounds once to the env's dtype, so -1 and 1
  are its bounds exactly. gymnasium's `RescaleAction` rounds its slope and
  offset to the env's dtype (a last-bit difference on 1 action component in
  8 for Humanoid's [-0.4, 0.4]; 0.10000001 for a bound of 0.1), and
  `ClipAction` shows the agent an unbounded space.
  """

  def __init__(self, env):
    super().__init__(env)
    space = env.action_space
    self._low = space.low.astype(np.float64)
    self._high = space.high.astype(np.float64)
    self._dtype = space.dtype
    self.action_space = gym.spaces.Box(-1.0, 1.0, space.shape, np.float32)

  def action(self, action):
    unit = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
    return (self._low + (unit + 1.0) * 0.5 * (self._high - self._low)).astype(
        self._dtype)


def _continuous_actions(env: gym.Env) -> gym.Env:
  if not isinstance(env.action_space, gym.spaces.Box):
    return env
  check_action_space(env.action_space, env.spec.id if env.spec else "env")
  return UnitBoxActions(env)


def _make_one(config, render: bool = False) -> gym.Env:
  return _continuous_actions(_make_env(config, render))


def _make_env(config, render: bool = False) -> gym.Env:
  env_id = config.env_id
  kwargs = {}
  if config.max_episode_steps:
    kwargs["max_episode_steps"] = config.max_episode_steps
  # Only for envs that declare it: others would warn, or fail on the keyword.
  if render and renders_rgb(env_id):
    kwargs["render_mode"] = "rgb_array"
  if env_id.startswith("ALE/"):
    # Frame skipping and max-pooling happen in AtariPreprocessing below.
    env = gym.make(env_id, frameskip=1,
                   repeat_action_probability=config.sticky_actions,
                   full_action_space=config.full_action_space, **kwargs)
    return gym.wrappers.AtariPreprocessing(
        env, noop_max=config.noop_max, frame_skip=4,
        screen_size=config.frame_size, terminal_on_life_loss=False,
        grayscale_obs=config.grayscale, grayscale_newaxis=True)
  if config.pixels:
    kwargs["render_mode"] = "rgb_array"
    env = gym.make(env_id, **kwargs)
    env = gym.wrappers.AddRenderObservation(env, render_only=True)
    env = gym.wrappers.ResizeObservation(
        env, (config.frame_size, config.frame_width or config.frame_size))
    if config.grayscale:
      env = gym.wrappers.GrayscaleObservation(env, keep_dim=True)
    return env
  env = gym.make(env_id, **kwargs)
  if isinstance(env.observation_space, gym.spaces.Dict):
    env = ImageFromDict(env, _image_key(env.observation_space, env_id))
  if (isinstance(env.observation_space, gym.spaces.Box) and
      env.observation_space.dtype == np.bool_):
    env = BoolToUint8(env)
  return env


def _make_in_worker(config, render: bool = False) -> gym.Env:
  """Builds an env inside an `AsyncVectorEnv` subprocess.

  A Ctrl-C (or a scheduler's SIGTERM to the process group) reaches every
  worker too; they ignore it, so the trainer can still step and close them
  while it saves its checkpoint.
  """
  # AsyncVectorEnv also calls this in the trainer itself, for the spaces.
  if multiprocessing.parent_process() is not None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
  return _make_one(config, render)


def observation_scale(space: gym.spaces.Box, env_id: str) -> float:
  """What the networks divide observations by; checks the space."""
  if not isinstance(space, gym.spaces.Box):
    raise UnknownEnvError(f"{env_id} has a {space} observation space; this "
                          "agent needs a Box (vector or image)")
  if len(space.shape) == 3:
    if space.dtype != np.uint8:
      raise UnknownEnvError(
          f"{env_id} gives {space.dtype} images {space.shape}; image "
          "observations must be uint8 (they are stored as bytes)")
    high = float(np.max(space.high))
    return high if 0 < high <= 255 else 255.0
  if len(space.shape) != 1:
    raise UnknownEnvError(f"{env_id} gives observations of shape "
                          f"{space.shape}; expected a vector or an image")
  return 1.0


def make_vector_env(config, num_envs: int = None, seed: int = None,
                    asynchronous: bool = None,
                    render: bool = False) -> gym.vector.VectorEnv:
  """`num_envs` (default `config.num_envs`) copies of `config.env_id`.

  The vector env runs in gymnasium's default NEXT_STEP autoreset mode: the
  step after an episode end returns the reset observation, reward 0 and
  ignores the action; the actor marks it `mask = 0`. The real final
  observation is the one returned by the ending step itself, so a truncated
  episode bootstraps from it. Rendering envs can run in subprocesses
  (`config.async_envs`).

  `render=True` builds the envs with `render_mode="rgb_array"` so that
  `envs.envs[i].render()` gives an RGB frame of a synchronous vector env (as
  `pixels=True` already does), for the envs that declare that mode
  (`renders_rgb`); the observations do not change.
  """
  check_env_id(config.env_id)
  num_envs = config.num_envs if num_envs is None else num_envs
  seed = config.seed if seed is None else seed
  if asynchronous is None:
    asynchronous = config.async_envs
  if asynchronous:
    envs = gym.vector.AsyncVectorEnv(
        [lambda: _make_in_worker(config, render)] * num_envs)
  else:
    envs = gym.vector.SyncVectorEnv([lambda: _make_one(config, render)] *
                                    num_envs)
  try:
    check_action_space(envs.single_action_space, config.env_id)
    env_spec(envs, config.env_id)
  except UnknownEnvError:
    envs.close()
    raise
  envs.action_space.seed(seed)  # The actor resets with the same seed.
  return envs


def env_spec(envs: gym.vector.VectorEnv, env_id: str = "env") -> EnvSpec:
  space = envs.single_observation_space
  scale = observation_scale(space, env_id)
  actions = envs.single_action_space
  check_action_space(actions, env_id)
  continuous = isinstance(actions, gym.spaces.Box)
  dtype = np.dtype(space.dtype)
  if dtype == np.float64:
    # The networks see float32 (jax without x64) whatever is stored, so
    # float64 observations (MuJoCo's) are stored in half the memory.
    dtype = np.dtype(np.float32)
  return EnvSpec(observation_shape=tuple(space.shape),
                 observation_dtype=dtype,
                 num_actions=0 if continuous else int(actions.n),
                 observation_scale=scale,
                 action_dim=int(actions.shape[0]) if continuous else 0)

