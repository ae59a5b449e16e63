"""The synchronous training loop: act, store, sample, update, log."""

import collections
import contextlib
import json
import math
import os
import signal
import threading
import time
from typing import Any, Dict

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from muesli_jax import checkpoint, envs as envs_lib, learner, networks as nets
from muesli_jax import replay as replay_lib
from muesli_jax.actor import Actor
from muesli_jax.config import ConfigError


class NonFiniteLossError(RuntimeError):
  pass


@contextlib.contextmanager
def interrupts_deferred():
  """Holds Ctrl-C and SIGTERM until the block ends, then delivers them.

  The update donates the state it is given: an interrupt after its dispatch
  but before its result is assigned would leave no state to checkpoint.
  """
  if threading.current_thread() is not threading.main_thread():
    yield  # Only the main thread receives signals.
    return
  received = []
  signals = (signal.SIGINT, signal.SIGTERM)
  previous = {s: signal.signal(s, lambda signum, _: received.append(signum))
              for s in signals}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    for s in dict.fromkeys(received):
      signal.raise_signal(s)


def stacked_shape(spec: envs_lib.EnvSpec, stack: int):
  """Vector observations stack features; pixels stack channels."""
  return replay_lib.stacked_shape(spec.observation_shape, stack)


def build_networks(config, spec: envs_lib.EnvSpec) -> nets.MuesliNetworks:
  scale = config.observation_scale or spec.observation_scale
  return nets.make_networks(
      stacked_shape(spec, config.stack), spec.num_actions, config.num_bins,
      config.hidden_size, config.num_blocks, config.head_size, config.torso,
      config.dynamics_core, observation_scale=scale,
      conv_channels=tuple(config.conv_channels),
      conv_blocks=config.conv_blocks)


def available_memory_bytes() -> int:
  """MemAvailable from /proc/meminfo; physical memory where that is missing."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def make_replay(config, spec: envs_lib.EnvSpec, verbose: bool = True):
  """The run's replay; a size that does not fit in memory is a `ConfigError`
  raised before anything is allocated."""
  nbytes = replay_lib.replay_nbytes(config.replay_capacity, config.num_envs,
                                    spec.observation_shape,
                                    spec.observation_dtype, spec.num_actions)
  available = available_memory_bytes()
  if nbytes > 0.9 * available:
    raise ConfigError(
        f"the replay needs {nbytes / 2**30:.2f} GiB ({config.replay_capacity} "
        f"steps x {config.num_envs} envs of {spec.observation_shape} "
        f"{spec.observation_dtype}) but only {available / 2**30:.2f} GiB of "
        "memory is available: lower replay_capacity or num_envs")
  if verbose:
    print(f"replay: {nbytes / 2**30:.3f} GiB ({config.replay_capacity} steps x "
          f"{config.num_envs} envs, frames {spec.observation_shape} "
          f"{spec.observation_dtype}, stack {config.stack} at sampling)",
          flush=True)
  window = config.sequence_length + config.unroll_steps + 1
  return replay_lib.SequenceReplay(
      config.replay_capacity, config.num_envs, spec.observation_shape,
      spec.observation_dtype, spec.num_actions, window, config.discount,
      config.value_target == "mc", config.seed, stack=config.stack)


def replicas_identical(state) -> bool:
  """Whether every replica `[D, ...]` holds bit-identical params (they must)."""
  trees = (state.params, state.target_params)
  return all(bool(np.all(np.asarray(x) == np.asarray(x)[:1]))
             for x in jax.tree.leaves(trees))


def check_batch_split(config, num_devices: int) -> None:
  if config.batch_size % num_devices:
    raise ConfigError(f"batch_size {config.batch_size} must be divisible by "
                      f"the {num_devices} local devices")


class DeviceUpdate:
  """The update as training runs it: `jit` on one device, `pmap` over several.

  Counts its traces (`traces` must stay 1 for a run) and hides the
  difference between one and several devices from the training loop.
  """

  def __init__(self, networks: nets.MuesliNetworks, config, devices=None):
    self.devices = list(devices or jax.local_devices())
    self.traces = 0
    num_devices = len(self.devices)
    check_batch_split(config, num_devices)

    def counted(update_fn):
      def traced_update(state, batch):
        self.traces += 1
        return update_fn(state, batch)
      return traced_update

    if num_devices > 1:
      self._update = jax.pmap(
          counted(learner.make_update(networks, config, learner.AXIS)),
          axis_name=learner.AXIS, devices=self.devices, donate_argnums=0)
      mesh = jax.sharding.Mesh(np.asarray(self.devices), (learner.AXIS,))
      self._sharding = jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(learner.AXIS))
    else:
      self._update = jax.jit(counted(learner.make_update(networks, config)),
                             donate_argnums=0)

  @property
  def replicated(self) -> bool:
    return len(self.devices) > 1

  def place(self, state):
    """Puts a host `TrainState` where the update expects it.

    Over several devices it is copied to each, sharded the way the pmapped
    update returns its output: the first call and every later one then see
    the same input signature (one trace, and the first state can be donated
    like the others).
    """
    if not self.replicated:
      return jax.device_put(state, self.devices[0])
    n = len(self.devices)
    return jax.tree.map(
        lambda x: jax.device_put(np.stack([np.asarray(x)] * n), self._sharding),
        state)

  def __call__(self, state, batch):
    """One update on a host batch `[B, ...]`; returns `(state, metrics)`."""
    if self.replicated:  # [B, ...] -> [D, B/D, ...]
      n = len(self.devices)
      batch = jax.tree.map(lambda x: x.reshape((n, -1) + x.shape[1:]), batch)
    return self._update(state, batch)

  def first(self, tree):
    """One replica of a (possibly replicated) tree, e.g. state or metrics."""
    return jax.tree.map(lambda x: x[0], tree) if self.replicated else tree

  def replicas_identical(self, state) -> bool:
    return replicas_identical(state) if self.replicated else True


def train(config, run_name: str = None, progress: bool = True,
          run_dir: str = None, on_log=None) -> Dict[str, Any]:
  """Trains per `config`; returns a summary (also written as summary.json)."""
  if config.distributed:
    jax.distributed.initialize()
  check_batch_split(config, jax.local_device_count())
  run_name = run_name or f"{config.env_id.replace('/', '_')}_seed{config.seed}_{time.strftime('%Y%m%d-%H%M%S')}"
  envs = envs_lib.make_vector_env(config)
  spec = envs_lib.env_spec(envs, config.env_id)
  try:  # Bad sizes stop here, before anything is written.
    replay = make_replay(config, spec, verbose=progress)
  except ConfigError:
    envs.close()
    raise
  logdir = run_dir or os.path.join(config.logdir, run_name)
  os.makedirs(logdir, exist_ok=True)
  with open(os.path.join(logdir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2))
  networks = build_networks(config, spec)
  state = learner.init_state(networks, config, jax.random.PRNGKey(config.seed))
  window = config.sequence_length + config.unroll_steps + 1
  actor = Actor(envs, networks, replay, config.stack, config.seed)

  update = DeviceUpdate(networks, config)
  state = update.place(state)
  acting_params = lambda s: update.first(s.target_params)

  writer = SummaryWriter(logdir)
  episodes_csv = open(os.path.join(logdir, "episodes.csv"), "w")
  episodes_csv.write("env_steps,seconds,episode_return,length\n")
  steps_per_iteration = config.num_envs * config.steps_per_update
  recent = collections.deque(maxlen=100)
  summary = dict(env_id=config.env_id, seed=config.seed, solved_at_steps=None,
                 solved_at_seconds=None, updates=0, episodes=0, interrupted=False,
                 stopped_early=False)
  bar = tqdm.tqdm(total=config.total_env_steps, unit="step", disable=not progress,
                  dynamic_ncols=True, mininterval=1.0)
  start = time.time()
  try:
    while actor.env_steps < config.total_env_steps:
      actor.step(acting_params(state), config.steps_per_update)
      bar.update(steps_per_iteration)
      for ret, length in actor.pop_episodes():
        recent.append(ret)
        summary["episodes"] += 1
        writer.add_scalar("episode/return", ret, actor.env_steps)
        writer.add_scalar("episode/length", length, actor.env_steps)
        episodes_csv.write(f"{actor.env_steps},{time.time() - start:.1f},"
                           f"{ret:.2f},{length}\n")
      if (summary["solved_at_steps"] is None and len(recent) == 100 and
          np.mean(recent) >= config.solve_return):
        summary["solved_at_steps"] = actor.env_steps
        summary["solved_at_seconds"] = time.time() - start
        if config.stop_when_solved:
          break
      if replay.total_steps < config.warmup_steps + window:
        continue

      batch = replay.sample(config.batch_size, config.steps_per_update,
                            config.replay_proportion)
      with interrupts_deferred():
        state, metrics = update(state, batch)
      summary["updates"] += 1
      loss = float(update.first(metrics["loss"]))
      if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"loss became {loss} at update {summary['updates']} "
            f"(env step {actor.env_steps}); stopping")
      if summary["updates"] % config.log_interval == 0:
        metrics = jax.device_get(update.first(metrics))
        elapsed = time.time() - start
        for key, value in metrics.items():
          value = np.asarray(value)
          writer.add_scalar(f"learner/{key}", float(value), actor.env_steps)
        episodes_csv.flush()
        writer.add_scalar("speed/env_steps_per_second",
                          actor.env_steps / elapsed, actor.env_steps)
        if on_log is not None and recent and on_log(actor.env_steps,
                                                    float(np.mean(recent))):
          summary["stopped_early"] = True
          break
        bar.set_postfix(sps=f"{actor.env_steps / elapsed:.0f}",
                        ret100=f"{np.mean(recent):.1f}" if recent else "n/a",
                        refresh=False)
  except KeyboardInterrupt:
    summary["interrupted"] = True
    print("\ninterrupted: saving a checkpoint of the current state")
  finally:
    bar.close()
    summary.update(env_steps=actor.env_steps, seconds=time.time() - start,
                   update_compilations=update.traces,
                   devices=len(update.devices),
                   replicas_identical=update.replicas_identical(state),
                   mean_return_last_100=float(np.mean(recent)) if recent else None,
                   returns_last_100=[float(r) for r in recent])
    host_state = update.first(state)
    summary["checkpoint"] = checkpoint.save(
        os.path.join(logdir, "checkpoint"), host_state)
    writer.close()
    episodes_csv.close()
    with open(os.path.join(logdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    envs.close()
  return summary

