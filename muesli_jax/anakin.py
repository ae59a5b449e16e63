"""Anakin: acting, replay and the Muesli update in one jitted loop (gymnax).

The Anakin architecture of Hessel et al. 2021 ("Podracer architectures for
scalable reinforcement learning"): when the environment is itself a JAX
function, the whole agent -- stepping the envs, choosing actions, writing
and sampling the replay, the update -- is one XLA computation per device,
and the host only starts it and reads back what happened. Here it is
`lax.scan` over `iterations_per_call` iterations of

  act `steps_per_update` steps of E envs with the target params
  -> write each step to the on-device replay
  -> sample a batch of windows -> `learner.make_update`'s update,

`jit`ted on one device and `pmap`ped over several (`learner.AXIS`: each
device has its own envs and replay, the batch is split, gradients are
`psum`med inside the update). The networks and the update are the ones the
gymnasium loop uses (`builder.build_networks`, `learner.make_update`); the
policy step is `actor.make_policy_step`'s.

The replay is `[capacity, E, ...]` arrays per device holding exactly the
fields of `learner.Batch`, with the conventions of `muesli_jax.replay`:

- Field `[t]` describes step t and the transition out of it: its
  observation, the action taken there, that transition's reward, discount
  (0 where it terminated the episode) and mask.
- Episode ends are gymnasium's next-step autoreset. gymnax resets an env
  inside the same `step` that ends its episode (it returns the next
  episode's first observation and keeps the last one in
  `info["final_observation"]`), so the actor does what gymnasium's vector
  env does: the step after an episode's last transition is a *reset step*
  that stores the final observation with `mask = 0`, `discount = 0`,
  `reward = 0`, and does not move the env; the first observation of the
  next episode is held back and stored on the step after. A terminated
  episode ends on a transition with `discount = 0`; a truncated one (time
  limit) keeps `discount = 1`, and its final observation is in the replay
  for the value target to bootstrap from. The learner masks what crosses
  an episode end exactly as for the numpy replay. The reset step costs one
  idle env step per episode (the gymnasium actor pays the same) and counts
  as an env step, as there.
- A sample is a window of `W = sequence_length + unroll_steps + 1`
  consecutive steps of one env that never crosses the write head. A
  fraction `1 - replay_proportion` of each batch starts among the newest
  `steps_per_update` start times, the rest uniformly over all stored
  windows. Unlike the numpy replay, the uniform part is drawn with
  replacement (and may repeat a fresh window): with thousands of windows
  stored a repeat is rare, and sampling distinct ids from a count that
  changes every step has no static-shape form. No Monte-Carlo returns
  (`value_target = "mc"` is not available here), no frame stacking
  (`stack = 1`: gymnax observations are full states).

Warm-up acting (until the replay holds `warmup_steps + W` steps, the
gymnasium loop's first update) is part of the jitted call that builds the
run's state, before the first scan. Runs are not checkpointed and play no
evaluation episodes: the returns reported are the training episodes'.
"""

import dataclasses
import os
import time
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from muesli_jax import builder, learner, placement, run_record, types
from muesli_jax.actor import make_policy_step
from muesli_jax.errors import ConfigError, UnknownEnvError
from muesli_jax.hparams import LearnerHparams

GYMNAX_PREFIX = "gymnax:"
Array = jax.Array


def is_anakin(config) -> bool:
  """Whether `config` names a gymnax env (`gymnax:NAME`): an Anakin run."""
  return str(config.env_id).startswith(GYMNAX_PREFIX)


# ---------------------------------------------------------------- envs


def make_env(env_id: str):
  """`gymnax:NAME` -> `(env, env_params)`; `UnknownEnvError` (one line) for
  an id gymnax does not know or an env without discrete actions."""
  if not env_id.startswith(GYMNAX_PREFIX):
    raise UnknownEnvError(f"{env_id!r} is not a gymnax id "
                          f"({GYMNAX_PREFIX}NAME, e.g. gymnax:CartPole-v1)")
  name = env_id[len(GYMNAX_PREFIX):]
  try:
    import gymnax  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise UnknownEnvError(
        f"{env_id} needs gymnax: pip install -c constraints.txt -e "
        "'.[anakin]' && pip install -c constraints.txt --no-deps gymnax (see "
        "docs/scale.md, Anakin)") from None
  known = list(gymnax.registered_envs)
  if name not in known:
    stem = name.split("-")[0].lower()
    close = [k for k in known if stem and stem in k.lower()][:5]
    hint = (f"did you mean {', '.join(GYMNAX_PREFIX + k for k in close)}?"
            if close else f"gymnax has {', '.join(known)}")
    raise UnknownEnvError(f"unknown gymnax env {name!r} in {env_id!r}; {hint}")
  env, env_params = gymnax.make(name)
  space = env.action_space(env_params)
  if not hasattr(space, "n"):
    raise UnknownEnvError(f"{env_id} has a {type(space).__name__} action "
                          "space; Muesli here needs discrete actions")
  return env, env_params


def check_env_id(env_id: str) -> None:
  """Raises `UnknownEnvError` for a gymnax id that cannot be trained on."""
  make_env(env_id)


def env_spec(env, env_params) -> types.EnvSpec:
  """The `EnvSpec` `builder.build_networks` takes, from a gymnax env."""
  space = env.observation_space(env_params)
  return types.EnvSpec(
      observation_shape=tuple(int(d) for d in space.shape),
      observation_dtype=np.dtype(space.dtype),
      num_actions=int(env.action_space(env_params).n),
      observation_scale=1.0)


# ---------------------------------------------------------------- actor


class ActorState(NamedTuple):
  """E envs in lockstep on one device; every leaf is `[E, ...]`."""
  env_state: Any  # gymnax state (after an episode end: the next episode's)
  observation: Array  # [E, ...] the policy acts on it; written next
  reset_observation: Array  # [E, ...] next episode's first, held back
  after_end: Array  # [E] bool: this step is the reset step
  episode_return: Array  # [E] float32, of the episode in progress
  episode_length: Array  # [E] int32


class Episodes(NamedTuple):
  """Episodes ended by one step of E envs: `[E]` each (`[..., E]` stacked)."""
  done: Array  # bool: an episode ended on this step
  episode_return: Array  # float32, where done
  length: Array  # int32, where done


def _where(cond: Array, x, y):
  """`cond [E]` selects per env between pytrees of `[E, ...]` leaves."""
  def pick(a, b):
    return jnp.where(cond.reshape(cond.shape + (1,) * (a.ndim - 1)), a, b)
  return jax.tree.map(pick, x, y)


def make_actor(env, env_params, networks):
  """`(reset, step)` for E gymnax envs acting with the Muesli policy.

  `reset(rng, num_envs) -> ActorState`;
  `step(params, actor, rng, count) -> (actor, row, episodes)` takes one
  step of every env: `row` is a `learner.Batch` of `[E, ...]` fields (the
  replay's row for this step, see the module doc for episode ends) and
  `episodes` the `Episodes` that ended on it. `count` (int32) is folded
  into the sampling key, as the gymnasium actor does.
  """
  policy_step = make_policy_step(networks)
  env_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))
  env_reset = jax.vmap(env.reset, in_axes=(0, None))

  def reset(rng, num_envs: int) -> ActorState:
    observation, env_state = env_reset(jax.random.split(rng, num_envs),
                                       env_params)
    return ActorState(env_state=env_state, observation=observation,
                      reset_observation=observation,
                      after_end=jnp.zeros(num_envs, bool),
                      episode_return=jnp.zeros(num_envs, jnp.float32),
                      episode_length=jnp.zeros(num_envs, jnp.int32))

  def step(params, actor: ActorState, rng, count):
    num_envs = actor.after_end.shape[0]
    policy_key, env_key = jax.random.split(rng)
    action, logits = policy_step(params, actor.observation, policy_key, count)
    action = action.astype(jnp.int32)
    # Every env steps; where this is a reset step the result is dropped (a
    # vmapped select is cheaper than branching per env).
    next_obs, next_state, reward, terminated, truncated, info = env_step(
        jax.random.split(env_key, num_envs), actor.env_state, action,
        env_params)
    is_reset = actor.after_end
    real = ~is_reset
    reward = jnp.where(real, reward, 0.0).astype(jnp.float32)
    row = learner.Batch(
        observation=actor.observation, action=action, reward=reward,
        discount=jnp.where(terminated | is_reset, 0.0, 1.0),
        mask=real.astype(jnp.float32), behaviour_logits=logits,
        mc_return=jnp.zeros(num_envs, jnp.float32),
        mc_valid=jnp.zeros(num_envs, jnp.float32))
    done = (terminated | truncated) & real
    episode_return = actor.episode_return + reward
    episode_length = actor.episode_length + real.astype(jnp.int32)
    episodes = Episodes(done=done, episode_return=episode_return,
                        length=episode_length)
    # gymnax has already reset an env whose episode ended: show the final
    # observation on the next (reset) step and hold the first one back.
    observation = _where(is_reset, actor.reset_observation,
                         _where(done, info["final_observation"], next_obs))
    actor = ActorState(
        env_state=_where(is_reset, actor.env_state, next_state),
        observation=observation,
        reset_observation=_where(done, next_obs, actor.reset_observation),
        after_end=done,
        episode_return=jnp.where(done, 0.0, episode_return),
        episode_length=jnp.where(done, 0, episode_length))
    return actor, row, episodes

  return reset, step


# ---------------------------------------------------------------- replay


class Replay(NamedTuple):
  """Ring of `[capacity, E, ...]` steps on the device (`learner.Batch`
  fields); `total_steps` is how many were ever written."""
  data: learner.Batch
  total_steps: Array  # [] int32; the newest step is total_steps - 1


def init_replay(capacity: int, num_envs: int, observation_shape,
                observation_dtype, num_actions: int) -> Replay:
  c, e = capacity, num_envs
  zeros = lambda *shape: jnp.zeros((c, e) + shape, jnp.float32)
  data = learner.Batch(
      observation=jnp.zeros((c, e) + tuple(observation_shape),
                            observation_dtype),
      action=jnp.zeros((c, e), jnp.int32), reward=zeros(), discount=zeros(),
      mask=zeros(), behaviour_logits=zeros(num_actions), mc_return=zeros(),
      mc_valid=zeros())
  return Replay(data=data, total_steps=jnp.zeros([], jnp.int32))


def replay_add(replay: Replay, row: learner.Batch) -> Replay:
  """Writes one step of every env (`row` fields `[E, ...]`)."""
  capacity = replay.data.action.shape[0]
  i = replay.total_steps % capacity
  data = jax.tree.map(lambda buf, x: buf.at[i].set(x.astype(buf.dtype)),
                      replay.data, row)
  return Replay(data=data, total_steps=replay.total_steps + 1)


def num_windows(replay: Replay, window: int) -> Array:
  """Start times per env whose whole window is stored (traced int32)."""
  capacity = replay.data.action.shape[0]
  size = jnp.minimum(replay.total_steps, capacity)
  return jnp.maximum(size - window + 1, 0)


def replay_sample(replay: Replay, rng, batch_size: int, window: int,
                  fresh_steps: int, replay_proportion: float
                  ) -> learner.Batch:
  """`[B, W]` windows, fresh ones first (see the module doc).

  Needs at least `max(fresh_steps, 1)` windows per env stored (the warm-up
  ensures it): the fresh part is then drawn without replacement from a set
  of static size.
  """
  capacity, num_envs = replay.data.action.shape[:2]
  fresh_total = max(fresh_steps, 1) * num_envs
  num_fresh = min(int(round(batch_size * (1.0 - replay_proportion))),
                  fresh_total)
  total = num_windows(replay, window) * num_envs  # window ids start*E + env
  fresh_key, uniform_key = jax.random.split(rng)
  fresh = total - fresh_total + jax.random.choice(
      fresh_key, fresh_total, (num_fresh,), replace=False)
  uniform = jax.random.randint(uniform_key, (batch_size - num_fresh,), 0,
                               total)
  ids = jnp.concatenate([fresh, uniform])
  first = replay.total_steps - jnp.minimum(replay.total_steps, capacity)
  starts, envs = ids // num_envs + first, ids % num_envs
  rows = (starts[:, None] + jnp.arange(window)[None, :]) % capacity  # [B, W]
  return jax.tree.map(lambda buf: buf[rows, envs[:, None]], replay.data)


# ---------------------------------------------------------------- the loop


class Carry(NamedTuple):
  """Everything one device's loop holds between calls."""
  train: learner.TrainState
  actor: ActorState
  replay: Replay
  rng: Array


def window_length(config) -> int:
  return types.window_length(config.sequence_length, config.unroll_steps)


def warmup_length(config) -> int:
  """Vector-env steps acted before the first iteration.

  The first update then sees `warmup_steps + W` steps, as in the gymnasium
  loop, and at least `steps_per_update` windows per env (fresh sampling).
  """
  window = window_length(config)
  return max(config.warmup_steps + window,
             window + config.steps_per_update - 1) - config.steps_per_update


def iterations_per_call(config) -> int:
  return int(config.get("iterations_per_call", 100))


class Anakin:
  """The compiled pieces of a run over `devices`: `start` and `run`.

  `jit` on one device, `pmap` (axis `learner.AXIS`) over several: `start`
  builds the `Carry` (`[D, ...]` leaves over several devices) and `run`
  maps it to the next. `traces` counts how often the update was traced (1
  for a run).
  """

  def __init__(self, config, env, env_params, networks, devices=None):
    self.config = config
    self.devices = list(devices or jax.local_devices())
    num_devices = len(self.devices)
    check_config(config, num_devices)
    self.envs_per_device = config.num_envs // num_devices
    self.batch_per_device = config.batch_size // num_devices
    self.iterations = iterations_per_call(config)
    spec = env_spec(env, env_params)
    window = window_length(config)
    axis = learner.AXIS if num_devices > 1 else None
    hparams = LearnerHparams.from_config(config)
    self._update = types.Traced(learner.make_update(networks, hparams,
                                                        axis))
    reset, actor_step = make_actor(env, env_params, networks)
    envs, batch = self.envs_per_device, self.batch_per_device

    def act(params, actor, replay, rng, num_steps):
      def body(carry, key):
        actor_, replay_ = carry
        actor_, row, episodes = actor_step(params, actor_, key,
                                           replay_.total_steps)
        return (actor_, replay_add(replay_, row)), episodes
      (actor, replay), episodes = jax.lax.scan(
          body, (actor, replay), jax.random.split(rng, num_steps))
      return actor, replay, episodes  # episodes: [num_steps, E]

    def start(rng):
      """A new run's carry after the warm-up, and the warm-up's episodes."""
      # The same params on every device (the seed, not the device's key).
      train = learner.init_state(networks, hparams,
                                 jax.random.PRNGKey(config.seed))
      rng, reset_key, act_key = jax.random.split(rng, 3)
      replay = init_replay(config.replay_capacity, envs,
                           spec.observation_shape, spec.observation_dtype,
                           spec.num_actions)
      actor, replay, episodes = act(train.target_params,
                                    reset(reset_key, envs), replay, act_key,
                                    warmup_length(config))
      return Carry(train=train, actor=actor, replay=replay,
                   rng=rng), episodes

    def iteration(carry: Carry, _):
      rng, act_key, sample_key = jax.random.split(carry.rng, 3)
      actor, replay, episodes = act(carry.train.target_params, carry.actor,
                                    carry.replay, act_key,
                                    config.steps_per_update)
      sample = replay_sample(replay, sample_key, batch, window,
                             config.steps_per_update,
                             config.replay_proportion)
      train, metrics = self._update(carry.train, sample)
      return Carry(train=train, actor=actor, replay=replay,
                   rng=rng), (metrics, episodes)

    def run(carry: Carry):
      """`iterations` iterations; metrics `[I]`, episodes `[I, S, E]`."""
      return jax.lax.scan(iteration, carry, None, length=self.iterations)

    if num_devices > 1:
      compile_ = lambda fn, **kw: jax.pmap(fn, axis_name=learner.AXIS,
                                           devices=self.devices, **kw)
    else:
      compile_ = jax.jit
    # Init and warm-up in one call: one compilation less before learning.
    self._start = compile_(start)
    self.run = compile_(run, donate_argnums=0)

  @property
  def traces(self) -> int:
    return self._update.traces

  @property
  def replicated(self) -> bool:
    return len(self.devices) > 1

  def start(self, seed: int) -> Tuple[Carry, Episodes]:
    """A new run after its warm-up: `(carry, warm-up episodes)`.

    Each device's envs and sampling get their own key; the params are the
    same on every device.
    """
    key = jax.random.PRNGKey(seed + 1)  # not the params' key
    if self.replicated:
      return self._start(jax.random.split(key, len(self.devices)))
    return self._start(key)

  def first(self, tree):
    """One replica of a (possibly replicated) tree."""
    return placement.first_replica(tree, self.replicated)

  def episodes(self, episodes: Episodes) -> Episodes:
    """Host arrays `[steps, all envs]`, steps in order, from the device's
    `[(D,) (I,) S, E]`."""
    episodes = jax.device_get(episodes)
    def flat(x):
      x = np.asarray(x)
      if not self.replicated:
        x = x[None]
      d, e = x.shape[0], x.shape[-1]
      x = np.moveaxis(x.reshape((d, -1, e)), 0, 1)  # [steps, D, E]
      return x.reshape(x.shape[0], d * e)
    return jax.tree.map(flat, episodes)


def check_config(config, num_devices: int) -> None:
  """What an Anakin run needs beyond `config.validate`; `ConfigError`."""
  if config.stack != 1:
    raise ConfigError(f"Anakin runs use gymnax's full-state observations: "
                      f"stack must be 1, got {config.stack}")
  if config.get("async_acting"):
    raise ConfigError("async_acting does not apply to Anakin (gymnax) runs: "
                      "acting and the update are already one computation on "
                      "the device")
  if config.value_target == "mc":
    raise ConfigError("value_target 'mc' needs Monte-Carlo returns, which "
                      "the Anakin replay does not compute: use retrace or "
                      "nstep")
  for key in ("num_envs", "batch_size"):
    if config[key] % num_devices:
      raise ConfigError(f"{key} {config[key]} must be divisible by the "
                        f"{num_devices} local devices")
  if iterations_per_call(config) < 1:
    raise ConfigError(f"iterations_per_call must be positive, got "
                      f"{iterations_per_call(config)}")
  needed = warmup_length(config) + config.steps_per_update
  if config.replay_capacity < needed:
    raise ConfigError(f"replay_capacity ({config.replay_capacity}) must hold "
                      f"the warm-up and one window ({needed} steps)")


# ---------------------------------------------------------------- training


def record_episodes(record: run_record.EpisodeRecord, episodes: Episodes,
                    env_steps_before: int, num_envs: int,
                    seconds: float) -> None:
  """Records `[steps, envs]` episodes in the order they ended; step j of
  the call ends at `env_steps_before + (j + 1) * num_envs` env steps."""
  steps, envs = np.nonzero(episodes.done)  # row-major: in time order
  for j, e in zip(steps, envs):
    record.add(env_steps_before + (int(j) + 1) * num_envs, seconds,
               float(episodes.episode_return[j, e]),
               int(episodes.length[j, e]))


@dataclasses.dataclass
class _Progress:
  env_steps: int = 0
  updates: int = 0
  interrupted: bool = False
  stopped_early: bool = False
  first_call_seconds: Optional[float] = None  # compilation included


def train_anakin(config, run_dir: Optional[str] = None, progress: bool = True,
                 run_name: Optional[str] = None, resume: bool = False,
                 on_call: Optional[Callable[[int, Optional[float]], bool]]
                 = None) -> Dict[str, Any]:
  """Trains on a gymnax env, the whole loop on the device; returns a summary
  (also written as `summary.json` in `run_dir`).

  The run ends at `total_env_steps` (rounded up to whole calls of
  `iterations_per_call * steps_per_update * num_envs` env steps), or after
  the call in which the mean of the last 100 returns reached
  `solve_return` when `stop_when_solved`. `on_call(env_steps,
  mean_return_last_100)` after each call may return True to stop early.
  `resume` is refused (`ConfigError`): Anakin runs keep no checkpoints.
  """
  started = time.time()
  if resume:
    raise ConfigError("Anakin (gymnax) runs keep no checkpoints and cannot "
                      "be resumed; start a new run")
  placement.keep_host_memory(config.keep_host_memory)
  if config.distributed:
    # Processes would have to agree on when to stop (the host loop's
    # lockstep); one process already spans all of its host's devices.
    raise ConfigError("Anakin (gymnax) runs use one process, over all its "
                      "local devices: distributed must be false")
  env, env_params = make_env(config.env_id)
  devices = jax.local_devices()
  check_config(config, len(devices))
  if run_dir is None:
    run_dir = (os.path.join(config.logdir, run_name) if run_name
               else run_record.default_run_dir(config))
  run_record.make_run_dir(run_dir)
  run_record.write_config(run_dir, config)
  networks = builder.build_networks(config, env_spec(env, env_params))
  anakin = Anakin(config, env, env_params, networks, devices)
  logger = run_record.Logger(run_dir, config.total_env_steps,
                             progress=progress)
  record = run_record.EpisodeRecord(logger, config.solve_return)
  run = _Progress()
  carry = None
  seconds = lambda: time.time() - started
  try:
    carry, episodes = anakin.start(config.seed)
    record_episodes(record, anakin.episodes(episodes), 0, config.num_envs,
                    seconds())
    run.env_steps = warmup_length(config) * config.num_envs
    while run.env_steps < config.total_env_steps:
      carry = _call(anakin, carry, run, record, logger, seconds)
      if config.stop_when_solved and record.solved_at_steps is not None:
        break
      if on_call is not None and on_call(run.env_steps, record.mean()):
        run.stopped_early = True
        break
  except KeyboardInterrupt:
    run.interrupted = True
    print("\ninterrupted", flush=True)
  finally:
    logger.close()
    summary = _summary(config, anakin, record, run, carry, seconds())
    run_record.write_summary(run_dir, summary)
  return summary


def _call(anakin: Anakin, carry: Carry, run: _Progress,
          record: run_record.EpisodeRecord, logger: run_record.Logger,
          seconds: Callable[[], float]) -> Carry:
  """One call of `iterations_per_call` iterations, checked and logged."""
  config = anakin.config
  call_started = time.time()
  carry, (metrics, episodes) = anakin.run(carry)
  metrics = jax.device_get(anakin.first(metrics))  # [I] each
  if run.first_call_seconds is None:
    run.first_call_seconds = time.time() - call_started
  run_record.check_finite(metrics["loss"], run.updates + 1,
                          f"in the call after env step {run.env_steps}")
  record_episodes(record, anakin.episodes(episodes), run.env_steps,
                  config.num_envs, seconds())
  run.env_steps += (anakin.iterations * config.steps_per_update *
                    config.num_envs)
  run.updates += anakin.iterations
  logger.learner({k: np.mean(v) for k, v in metrics.items()}, run.env_steps,
                 run.env_steps / max(seconds(), 1e-9), record.mean())
  return carry


def _summary(config, anakin: Anakin, record: run_record.EpisodeRecord,
             run: _Progress, carry: Optional[Carry],
             seconds: float) -> Dict[str, Any]:
  """summary.json: the gymnasium loop's keys, plus Anakin's own."""
  identical = None  # unknown where the run broke off inside a call
  leaves = jax.tree.leaves(carry.train) if carry is not None else []
  if leaves and not any(x.is_deleted() for x in leaves):
    identical = (placement.replicas_identical(carry.train)
                 if anakin.replicated else True)
  return run_record.summary(
      config, record, updates=run.updates, env_steps=run.env_steps,
      seconds=seconds, interrupted=run.interrupted,
      stopped_early=run.stopped_early,
      update_compilations=anakin.traces, devices=len(anakin.devices),
      replicas_identical=identical, mode="anakin",
      first_call_seconds=run.first_call_seconds,
      env_steps_per_second=run.env_steps / max(seconds, 1e-9),
      resumed_at=[], exact_resume=True, checkpoint=None)
