"""The synchronous training loop: act, store, sample, update, log.

`train` reads top to bottom: `setup` (or resume from a checkpoint), then
per iteration `act`, `learn`, `log`, `evaluate` and `save` when due.
"""

import collections
import contextlib
import dataclasses
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from muesli_jax import checkpoint, envs as envs_lib, learner, networks as nets
from muesli_jax import replay as replay_lib
from muesli_jax.actor import Actor, restore_envs, snapshot_envs
from muesli_jax.evaluation import Evaluator
from muesli_jax.video import frame_strip
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


@dataclasses.dataclass
class Progress:
  """The loop's own counters; saved in every checkpoint (as JSON)."""
  updates: int = 0
  episodes: int = 0
  seconds: float = 0.0  # training time before this process (resumed runs)
  solved_at_steps: Optional[int] = None
  solved_at_seconds: Optional[float] = None
  recent_returns: List[float] = dataclasses.field(default_factory=list)
  evaluations: List[Dict[str, float]] = dataclasses.field(default_factory=list)
  last_checkpoint: int = 0  # env steps
  resumed_at: List[int] = dataclasses.field(default_factory=list)
  exact_resume: bool = True  # False once envs restarted on a resume


class Logger:
  """TensorBoard, `episodes.csv` and the progress bar of one run.

  A resumed run drops what was logged after its checkpoint: CSV rows past
  it are removed and TensorBoard purges events from its step on.
  """

  def __init__(self, run_dir: str, config, env_steps: int, resumed: bool,
               progress: bool):
    path = os.path.join(run_dir, "episodes.csv")
    if resumed and os.path.exists(path):
      with open(path) as f:
        rows = f.readlines()
      kept = rows[:1] + [r for r in rows[1:]
                         if int(r.split(",", 1)[0]) <= env_steps]
      with open(path, "w") as f:
        f.writelines(kept)
      self._csv = open(path, "a")
    else:
      self._csv = open(path, "w")
      self._csv.write("env_steps,seconds,episode_return,length\n")
    self.writer = SummaryWriter(run_dir,
                                purge_step=env_steps if resumed else None)
    self._bar = tqdm.tqdm(total=config.total_env_steps, initial=env_steps,
                          unit="step", disable=not progress,
                          dynamic_ncols=True, mininterval=1.0)

  def episode(self, env_steps: int, seconds: float, ret: float, length: int):
    self.writer.add_scalar("episode/return", ret, env_steps)
    self.writer.add_scalar("episode/length", length, env_steps)
    self._csv.write(f"{env_steps},{seconds:.1f},{ret:.2f},{length}\n")

  def scalars(self, prefix: str, values: Dict[str, Any], env_steps: int):
    for key, value in values.items():
      self.writer.add_scalar(f"{prefix}/{key}", float(np.asarray(value)),
                             env_steps)

  def advance(self, env_steps: int, **postfix):
    self._bar.update(env_steps - self._bar.n)
    if postfix:
      self._bar.set_postfix(refresh=False, **postfix)

  def message(self, text: str):
    self._bar.write(text) if not self._bar.disable else None

  def flush(self):
    self._csv.flush()
    self.writer.flush()

  def close(self):
    self._bar.close()
    self._csv.close()
    self.writer.close()


class Run:
  """Everything one training run holds; built by `setup`."""

  def __init__(self, config, run_dir: str, envs, replay, networks, update,
               state, actor, checkpoints, evaluator, progress: Progress):
    self.config, self.run_dir = config, run_dir
    self.envs, self.replay, self.networks = envs, replay, networks
    self.update, self.state, self.actor = update, state, actor
    self.checkpoints, self.evaluator, self.progress = (checkpoints, evaluator,
                                                       progress)
    self.logger: Optional[Logger] = None
    self.started = time.time()
    self.first_env_steps = actor.env_steps
    self._seconds_before = progress.seconds  # of the processes before this
    self.recent = collections.deque(progress.recent_returns, maxlen=100)

  @property
  def env_steps(self) -> int:
    return self.actor.env_steps

  def seconds(self) -> float:
    return self._seconds_before + time.time() - self.started

  def acting_params(self):
    return self.update.first(self.state.target_params)

  def mean_return(self) -> Optional[float]:
    return float(np.mean(self.recent)) if self.recent else None


def default_run_dir(config) -> str:
  name = (f"{config.env_id.replace('/', '_')}_seed{config.seed}_"
          f"{time.strftime('%Y%m%d-%H%M%S')}")
  return os.path.join(config.logdir, name)


def _make_run_dir(run_dir: str) -> None:
  try:
    os.makedirs(run_dir, exist_ok=True)
    probe = os.path.join(run_dir, ".write_test")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"cannot write the run folder {run_dir}: "
                      f"{e.strerror or e}") from None


def setup(config, run_dir: str, resume: bool, progress: bool) -> Run:
  """Builds envs, replay, networks, state and actor; restores them from the
  newest checkpoint when `resume`. Bad configs raise before anything is
  written."""
  check_batch_split(config, jax.local_device_count())
  if resume and not os.path.isdir(os.path.join(run_dir,
                                               checkpoint.CHECKPOINT_DIR)):
    raise checkpoint.CheckpointError(
        f"{run_dir} has no {checkpoint.CHECKPOINT_DIR}/ folder to resume from")
  envs = envs_lib.make_vector_env(config)
  spec = envs_lib.env_spec(envs, config.env_id)
  try:
    replay = make_replay(config, spec, verbose=progress)
    if not resume:
      _make_run_dir(run_dir)
  except ConfigError:
    envs.close()
    raise
  networks = build_networks(config, spec)
  state = learner.init_state(networks, config, jax.random.PRNGKey(config.seed))
  actor = Actor(envs, networks, replay, config.stack, config.seed)
  checkpoints = checkpoint.Checkpoints(run_dir, keep=config.keep_checkpoints)
  run_progress = Progress()
  if resume:
    try:
      state, run_progress = restore(checkpoints, config, state, actor, replay,
                                    envs, verbose=progress)
    except Exception:
      envs.close()
      checkpoints.close()
      raise
  # Written once the checkpoint is known to match: a resume with overrides
  # (e.g. a longer run) records them.
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2))
  update = DeviceUpdate(networks, config)
  evaluator = None
  if config.eval_interval > 0:
    evaluator = Evaluator(config, networks, config.eval_episodes,
                          config.eval_greedy)
  return Run(config, run_dir, envs, replay, networks, update,
             update.place(state), actor, checkpoints, evaluator, run_progress)


def save(run: Run) -> None:
  """Writes a checkpoint of the whole run at its current env step."""
  config, progress = run.config, run.progress
  progress.seconds = run.seconds()
  progress.recent_returns = list(run.recent)
  progress.last_checkpoint = run.env_steps
  actor_counters, actor_arrays = run.actor.state_dict()
  replay_counters, replay_arrays = run.replay.state_dict()
  envs_state = None
  if config.checkpoint_envs:
    envs_state = snapshot_envs(run.envs)
  if envs_state is not None:
    actor_arrays["envs"] = np.frombuffer(envs_state, np.uint8)
  loop = dict(progress=dataclasses.asdict(progress), actor=actor_counters,
              replay=replay_counters)
  with interrupts_deferred():
    run.checkpoints.save(run.env_steps, run.update.first(run.state), loop,
                         actor_arrays,
                         replay_arrays if config.checkpoint_replay else None)


def restore(checkpoints, config, state, actor, replay, envs, verbose: bool):
  """Loads the newest complete checkpoint into `actor` and `replay`;
  returns `(state, progress)`."""
  env_steps, state, loop, arrays, replay_arrays = checkpoints.restore(state)
  progress = Progress(**loop["progress"])
  actor.load_state_dict(loop["actor"], arrays)
  if replay_arrays is not None:
    replay.load_state_dict(loop["replay"], replay_arrays)
  envs_state = arrays.get("envs")
  if envs_state is not None and not restore_envs(envs, envs_state.tobytes()):
    envs_state = None
  if envs_state is None:
    # The envs' state was not saved: new episodes, the cut ones truncated.
    actor.restart_episodes(seed=config.seed + 7919 * (len(progress.resumed_at)
                                                      + 1))
    replay.cut_episodes()
    progress.exact_resume = False
  progress.resumed_at.append(env_steps)
  if verbose:
    print(f"resumed at env step {env_steps} (update {progress.updates}); "
          f"envs {'restored' if envs_state is not None else 'restarted'}, "
          f"replay {'restored' if replay_arrays is not None else 'empty'}",
          flush=True)
  return state, progress


def act(run: Run) -> None:
  """Steps the envs `steps_per_update` times and records finished episodes."""
  run.actor.step(run.acting_params(), run.config.steps_per_update)
  progress = run.progress
  for ret, length in run.actor.pop_episodes():
    run.recent.append(ret)
    progress.episodes += 1
    run.logger.episode(run.env_steps, run.seconds(), ret, length)
  if (progress.solved_at_steps is None and len(run.recent) == 100 and
      np.mean(run.recent) >= run.config.solve_return):
    progress.solved_at_steps = run.env_steps
    progress.solved_at_seconds = run.seconds()


def learn(run: Run):
  """One update on a replay batch; returns its metrics (None in warm-up)."""
  config = run.config
  window = config.sequence_length + config.unroll_steps + 1
  if run.replay.total_steps < config.warmup_steps + window:
    return None
  batch = run.replay.sample(config.batch_size, config.steps_per_update,
                            config.replay_proportion)
  run.state, metrics = run.update(run.state, batch)
  run.progress.updates += 1
  loss = float(run.update.first(metrics["loss"]))
  if not math.isfinite(loss):
    raise NonFiniteLossError(
        f"loss became {loss} at update {run.progress.updates} (env step "
        f"{run.env_steps}); stopping (the last checkpoint is kept)")
  return metrics


def log(run: Run, metrics) -> None:
  metrics = jax.device_get(run.update.first(metrics))
  run.logger.scalars("learner", metrics, run.env_steps)
  # Speed of this process (a resumed run starts counting again).
  sps = (run.env_steps - run.first_env_steps) / max(time.time() - run.started,
                                                   1e-9)
  run.logger.writer.add_scalar("speed/env_steps_per_second", sps,
                               run.env_steps)
  run.logger.flush()
  mean = run.mean_return()
  run.logger.advance(run.env_steps, sps=f"{sps:.0f}",
                     ret100="n/a" if mean is None else f"{mean:.1f}")


def evaluate(run: Run) -> Dict[str, float]:
  """Plays `eval_episodes` fresh episodes with the acting params; logs
  `eval/return_mean`, `eval/return_std` and a strip of frames."""
  config = run.config
  seed = config.seed + 10_000 + 7919 * len(run.progress.evaluations)
  result = run.evaluator(run.acting_params(), seed=seed,
                         record=config.eval_video)
  figures = dict(env_steps=run.env_steps,
                 return_mean=float(np.mean(result.returns)),
                 return_std=float(np.std(result.returns)),
                 length_mean=float(np.mean(result.lengths)))
  run.progress.evaluations.append(figures)
  run.logger.scalars("eval", {k: v for k, v in figures.items()
                              if k != "env_steps"}, run.env_steps)
  if result.frames:
    run.logger.writer.add_image("eval/episode", frame_strip(result.frames),
                                run.env_steps, dataformats="HWC")
  run.logger.message(f"evaluation at {run.env_steps} env steps: "
                     f"{figures['return_mean']:.1f} ± "
                     f"{figures['return_std']:.1f} over {len(result.returns)} "
                     f"{'greedy' if config.eval_greedy else 'sampled'} episodes")
  return figures


def _due(interval: int, last: int, now: int) -> bool:
  return interval > 0 and now // interval > last // interval


def summarize(run: Run, interrupted: bool, stopped_early: bool) -> Dict[str, Any]:
  progress, last_eval = run.progress, (run.progress.evaluations or [None])[-1]
  latest = run.checkpoints.latest_step()
  return dict(
      env_id=run.config.env_id, seed=run.config.seed,
      solved_at_steps=progress.solved_at_steps,
      solved_at_seconds=progress.solved_at_seconds,
      updates=progress.updates, episodes=progress.episodes,
      interrupted=interrupted, stopped_early=stopped_early,
      env_steps=run.env_steps, seconds=run.seconds(),
      update_compilations=run.update.traces, devices=len(run.update.devices),
      replicas_identical=run.update.replicas_identical(run.state),
      mean_return_last_100=run.mean_return(),
      returns_last_100=[float(r) for r in run.recent],
      eval_return_mean=last_eval and last_eval["return_mean"],
      eval_return_std=last_eval and last_eval["return_std"],
      evaluations=progress.evaluations,
      resumed_at=progress.resumed_at, exact_resume=progress.exact_resume,
      checkpoint=(os.path.join(run.checkpoints.directory, str(latest))
                  if latest is not None else None))


def finish(run: Run, interrupted: bool, stopped_early: bool,
           failed: bool) -> Dict[str, Any]:
  """Final evaluation and checkpoint (unless the run broke off), summary.json,
  and closes everything."""
  try:
    completed = not (interrupted or failed or stopped_early)
    evaluations = run.progress.evaluations
    if (run.evaluator is not None and completed and
        not (evaluations and evaluations[-1]["env_steps"] == run.env_steps)):
      evaluate(run)
    if not failed and run.progress.last_checkpoint != run.env_steps:
      save(run)
    summary = summarize(run, interrupted, stopped_early)
    with open(os.path.join(run.run_dir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
    return summary
  finally:
    run.logger.close()
    run.checkpoints.close()
    if run.evaluator is not None:
      run.evaluator.close()
    run.envs.close()


def train(config, run_dir: Optional[str] = None, resume: bool = False,
          progress: bool = True,
          on_log: Optional[Callable[[int, float], bool]] = None,
          run_name: Optional[str] = None) -> Dict[str, Any]:
  """Trains per `config` into `run_dir`; returns a summary (also written as
  summary.json).

  `resume` continues the run in `run_dir` from its newest checkpoint.
  `on_log(env_steps, mean_return_last_100)` is called at every log and may
  return True to stop the run early (e.g. a pruned sweep trial).
  """
  if config.distributed:
    jax.distributed.initialize()
  if run_dir is None:
    run_dir = (os.path.join(config.logdir, run_name) if run_name
               else default_run_dir(config))
  run = setup(config, run_dir, resume, progress)
  run.logger = Logger(run_dir, config, run.env_steps, resume, progress)
  interrupted = stopped_early = failed = False
  try:
    while run.env_steps < config.total_env_steps:
      before = run.env_steps
      # An interrupt waits for the iteration's end: actor, replay and the
      # (donating) update are then consistent for the checkpoint.
      with interrupts_deferred():
        act(run)
        metrics = None
        if not (config.stop_when_solved and run.progress.solved_at_steps):
          metrics = learn(run)
      if config.stop_when_solved and run.progress.solved_at_steps:
        break
      if metrics is not None and run.progress.updates % config.log_interval == 0:
        log(run, metrics)
        mean = run.mean_return()
        if on_log is not None and mean is not None and on_log(run.env_steps,
                                                              mean):
          stopped_early = True
          break
      if _due(config.eval_interval, before, run.env_steps):
        evaluate(run)
      if _due(config.checkpoint_interval, before, run.env_steps):
        save(run)
  except KeyboardInterrupt:
    interrupted = True
    print("\ninterrupted: saving a checkpoint of the current state", flush=True)
  except NonFiniteLossError:
    failed = True  # The state is not finite: keep the last checkpoint.
    raise
  finally:
    summary = finish(run, interrupted, stopped_early, failed)
  return summary
