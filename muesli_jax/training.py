"""The synchronous training loop: act, store, sample, update, log.

`train` reads top to bottom: `setup` (or resume from a checkpoint), then
per iteration `act`, `learn`, `log`, `evaluate` and `save` when due.

Over several processes (`config.distributed`, see `init_distributed`) every
process runs this loop in lockstep with its own envs, actor and replay
(seeded by `process_seed`) and its own batch of `batch_size` sequences; the
update is one computation over the devices of all processes, so the params
stay identical everywhere. Process 0 writes the run folder (TensorBoard,
`episodes.csv`, checkpoints, evaluations); process `k` writes its episodes
and summary to `RUN_DIR/process_<k>/`. Every decision that ends the loop is
taken by all processes at the same iteration, since a process that stopped
early would leave the others waiting in the update's collectives.
"""

import collections
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import jax
from jax.experimental import multihost_utils
import jax.numpy as jnp
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from muesli_jax import checkpoint, envs as envs_lib, learner, networks as nets
from muesli_jax import replay as replay_lib
from muesli_jax import hparams as hparams_lib
from muesli_jax.actor import Actor, restore_envs, snapshot_envs
from muesli_jax.evaluation import Evaluator
from muesli_jax.video import frame_strip
from muesli_jax.errors import ConfigError, NonFiniteLossError
from muesli_jax.types import window_length




@contextlib.contextmanager
def interrupts_deferred():
  """Holds Ctrl-C and SIGTERM until the block ends, then delivers them.

  The update donates the state it is given: an interrupt after its dispatch
  but before its result is assigned would leave no state to checkpoint.

  Over several processes nothing is installed: jax's preemption notifier
  owns SIGTERM there, Ctrl-C is turned into it (`train`) and neither raises,
  so there is nothing to defer (a Python SIGTERM handler here would replace
  jax's for good).
  """
  if (threading.current_thread() is not threading.main_thread() or
      jax.process_count() > 1):
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
  return nets.make_networks(
      hparams_lib.NetworkHparams.from_config(config),
      stacked_shape(spec, config.stack), spec.num_actions, spec.action_dim,
      spec.observation_scale)


def process_seed(config) -> int:
  """The seed of this process's envs, actor sampling and replay sampling.

  Process 0 (so every single-process run) uses `config.seed`; process `k`
  derives its own from `(config.seed, k)`, so that the processes of a
  multi-process run collect different episodes. The network's init always
  uses `config.seed`: every process starts from the same params.
  """
  index = jax.process_index()
  if index == 0:
    return config.seed
  words = np.random.SeedSequence([config.seed % 2**32, index]).generate_state(1)
  return int(words[0] >> 1)  # 31 bits: any env or PRNGKey takes it


def process_dir(run_dir: str, index: int) -> str:
  """The folder process `index` writes: the run folder itself for process 0,
  `RUN_DIR/process_<index>/` for the others."""
  return run_dir if index == 0 else os.path.join(run_dir, f"process_{index}")


def _from_process_0(value: int) -> int:
  """Process 0's `value` (an int32) on every process (one collective)."""
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def init_distributed(config) -> None:
  """Joins the other processes of a multi-process run (`config.distributed`).

  The coordinator's address, the number of processes and this process's id
  come from `coordinator_address`, `num_processes` and `process_id` where
  set, else from the environment (`JAX_COORDINATOR_ADDRESS`, or a cluster
  jax recognises: Slurm, Open MPI, Kubernetes, Cloud TPU). Anything missing
  or unreachable is a `ConfigError` of one line. Must run before anything
  else touches jax's devices.
  """
  if not config.distributed or jax.distributed.is_initialized():
    return
  kwargs = {}
  if config.get("coordinator_address"):
    kwargs["coordinator_address"] = config.coordinator_address
  if config.get("num_processes", 0) > 0:
    kwargs["num_processes"] = config.num_processes
  if config.get("process_id", -1) >= 0:
    kwargs["process_id"] = config.process_id
  try:
    jax.distributed.initialize(**kwargs)
  except (ValueError, TypeError) as e:
    # What jax raises when neither the arguments nor a cluster give it all
    # three, e.g. "coordinator_address should be defined."
    raise ConfigError(
        f"distributed=true but jax cannot tell how to join the run ({e}): set "
        "--config.coordinator_address=HOST:PORT (or JAX_COORDINATOR_ADDRESS), "
        "--config.num_processes=N and --config.process_id=I, or launch under "
        "Slurm or Open MPI") from None
  except Exception as e:  # pylint: disable=broad-except
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise ConfigError(f"distributed=true but joining the run failed: "
                      f"{type(e).__name__}: {first_line}") from None


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


def make_replay(config, spec: envs_lib.EnvSpec, verbose: bool = True,
                seed: Optional[int] = None):
  """The run's replay, sampling with `seed` (default `config.seed`); a size
  that does not fit in memory is a `ConfigError` raised before anything is
  allocated."""
  nbytes = replay_lib.replay_nbytes(config.replay_capacity, config.num_envs,
                                    spec.observation_shape,
                                    spec.observation_dtype, spec.policy_size,
                                    spec.action_dim)
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
  hparams = hparams_lib.ReplayHparams.from_config(config)
  return replay_lib.SequenceReplay(
      hparams.capacity, config.num_envs, spec.observation_shape,
      spec.observation_dtype, spec.policy_size, hparams.window,
      hparams.discount, hparams.mc_returns,
      config.seed if seed is None else seed, stack=hparams.stack,
      action_dim=spec.action_dim)


def replicas_identical(state) -> bool:
  """Whether every replica `[D, ...]` holds bit-identical params (they must)."""
  trees = (state.params, state.target_params)
  return all(bool(np.all(np.asarray(x) == np.asarray(x)[:1]))
             for x in jax.tree.leaves(trees))


def params_digest(state) -> str:
  """SHA-256 of the params and target params of one (unreplicated) state:
  equal digests mean bit-identical params (e.g. across processes)."""
  digest = hashlib.sha256()
  for x in jax.tree.leaves((state.params, state.target_params)):
    digest.update(np.ascontiguousarray(jax.device_get(x)).tobytes())
  return digest.hexdigest()


def check_batch_split(config, num_devices: int) -> None:
  """`batch_size` is per process: each process samples it from its own
  replay and splits it over its `num_devices` local devices."""
  if config.batch_size % num_devices:
    raise ConfigError(f"batch_size {config.batch_size} must be divisible by "
                      f"the {num_devices} local devices")


class DeviceUpdate:
  """The update as training runs it: `jit` on one device, `pmap` over several.

  Counts its traces (`traces` must stay 1 for a run) and hides the
  difference between one and several devices from the training loop.

  Over several processes it is a `pmap` over the devices of every process,
  even with one local device: each process passes its own `[B, ...]` batch,
  split over its local devices, and the update's psums reduce over all the
  devices of all processes, so every replica everywhere gets the same
  gradient and the params stay bit-identical.
  """

  def __init__(self, networks: nets.MuesliNetworks, config, devices=None):
    self.devices = list(devices or jax.local_devices())
    self.num_processes = jax.process_count()
    self.traces = 0
    num_devices = len(self.devices)
    check_batch_split(config, num_devices)
    hparams = hparams_lib.LearnerHparams.from_config(config)

    def counted(update_fn):
      def traced_update(state, batch):
        self.traces += 1
        return update_fn(state, batch)
      return traced_update

    if self.num_processes > 1:
      if set(self.devices) != set(jax.local_devices()):
        raise ValueError("over several processes the update runs on every "
                         "local device of each")
      # Without `devices`, pmap maps over the devices of all processes
      # (`devices` would have to list them all, identically everywhere).
      self._update = jax.pmap(
          counted(learner.make_update(networks, hparams, learner.AXIS)),
          axis_name=learner.AXIS, donate_argnums=0)
    elif num_devices > 1:
      self._update = jax.pmap(
          counted(learner.make_update(networks, hparams, learner.AXIS)),
          axis_name=learner.AXIS, devices=self.devices, donate_argnums=0)
    else:
      self._update = jax.jit(counted(learner.make_update(networks, hparams)),
                             donate_argnums=0)
    if self.replicated:
      # The local part of the update's output sharding (over several
      # processes pmap returns each process its local [D, ...] part).
      mesh = jax.sharding.Mesh(np.asarray(self.devices), (learner.AXIS,))
      self._sharding = jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(learner.AXIS))

  @property
  def replicated(self) -> bool:
    return len(self.devices) > 1 or self.num_processes > 1

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
    if not self.replicated:
      return tree
    if self.num_processes > 1:
      # Read from the first local device alone: `x[0]` would be a program
      # over all local devices, and a 2-process CPU run whose actor acted on
      # such slices hung in its second policy step.
      return jax.tree.map(lambda x: x.addressable_shards[0].data[0], tree)
    return jax.tree.map(lambda x: x[0], tree)

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
      # A kill may leave the last row half written: no newline at its end.
      kept = rows[:1] + [r for r in rows[1:] if r.endswith("\n") and
                         int(r.split(",", 1)[0]) <= env_steps]
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
    if not self._bar.disable:
      self._bar.write(text)

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
               state, actor, checkpoints, evaluator, progress: Progress,
               replay_lag: int = 0):
    # `run_dir` is the folder this process writes (`process_dir`);
    # `checkpoints` and `evaluator` are None on processes other than 0.
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
    # Replay steps that do not count towards the warm-up: after a resume
    # over several processes only process 0 has its replay back, and all
    # must start updating at the same iteration.
    self.replay_lag = replay_lag
    self.actor_device = actor_device(config)
    # With `async_acting` the actor steps the envs on this thread.
    self.actor_thread = (concurrent.futures.ThreadPoolExecutor(
        1, thread_name_prefix="actor") if config.async_acting else None)
    # Losses of updates not yet read back: `(update, loss on the device)`.
    self.unchecked_losses: List[Any] = []

  @property
  def env_steps(self) -> int:
    return self.actor.env_steps

  def seconds(self) -> float:
    return self._seconds_before + time.time() - self.started

  def acting_params(self):
    return self.update.first(self.state.target_params)

  def actor_params(self):
    """The acting params on the actor's device.

    For acting on a thread they must not share buffers with the state: the
    update running meanwhile donates (frees) those. A replica taken out of
    a replicated state, or params put on another device, are new buffers
    already; only a single device's own state is copied.
    """
    params = self.acting_params()
    if self.actor_device is not None:
      params = jax.device_put(params, self.actor_device)
    if (self.actor_thread is not None and not self.update.replicated and
        (self.actor_device is None or self.actor_device in self.update.devices)):
      params = _copy_tree(params)
    return params

  def mean_return(self) -> Optional[float]:
    return float(np.mean(self.recent)) if self.recent else None


@jax.jit
def _copy_tree(tree):
  return jax.tree.map(jnp.copy, tree)


def actor_device(config):
  """The device of the actor's policy steps: the host CPU for
  `actor_device="cpu"`, else None (jax's default device, the learner's)."""
  if config.actor_device == "cpu":
    return jax.devices("cpu")[0]
  return None


def default_run_dir(config, stamp: Optional[str] = None) -> str:
  """`LOGDIR/<env>_seed<seed>_<stamp>`, the stamp being the time by default.

  '/' and ':' in the env id become '_' (TensorBoard reads NAME:PATH in
  `--logdir`, so `gymnax:CartPole-v1` must not name a folder as it is).
  """
  stamp = stamp or time.strftime('%Y%m%d-%H%M%S')
  env = config.env_id.replace('/', '_').replace(':', '_')
  name = f"{env}_seed{config.seed}_{stamp}"
  return os.path.join(config.logdir, name)


def _shared_stamp() -> str:
  """Process 0's time stamp on every process: all name the same run."""
  stamp = np.frombuffer(time.strftime('%Y%m%d-%H%M%S').encode(), np.uint8)
  stamp = multihost_utils.broadcast_one_to_all(stamp.astype(np.int32))
  return bytes(np.asarray(stamp, np.uint8)).decode()


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


def _check_resumable(run_dir: str) -> None:
  if not os.path.isdir(os.path.join(run_dir, checkpoint.CHECKPOINT_DIR)):
    raise checkpoint.CheckpointError(
        f"{run_dir} has no {checkpoint.CHECKPOINT_DIR}/ folder to resume from")


def setup(config, run_dir: str, resume: bool, progress: bool) -> Run:
  """Builds envs, replay, networks, state and actor; restores them from the
  newest checkpoint when `resume`. Bad configs raise before anything is
  written.

  Over several processes, process `k > 0` writes `process_dir(run_dir, k)`
  and keeps no checkpoints: it resumes from what process 0 restored.
  """
  check_batch_split(config, jax.local_device_count())
  index = jax.process_index()
  multi_process = jax.process_count() > 1
  own_dir = process_dir(run_dir, index)
  if resume and not multi_process:
    _check_resumable(run_dir)
  seed = process_seed(config)
  envs = envs_lib.make_vector_env(config, seed=seed)
  spec = envs_lib.env_spec(envs, config.env_id)
  try:
    replay = make_replay(config, spec, verbose=progress, seed=seed)
    if not resume or index > 0:
      _make_run_dir(own_dir)
  except ConfigError:
    envs.close()
    raise
  networks = build_networks(config, spec)
  state = learner.init_state(networks,
                             hparams_lib.LearnerHparams.from_config(config),
                             jax.random.PRNGKey(config.seed))
  actor = Actor(envs, networks, replay, config.stack, seed)
  checkpoints = None
  if index == 0:
    checkpoints = checkpoint.Checkpoints(run_dir, keep=config.keep_checkpoints,
                                         this_process_only=multi_process)
  run_progress = Progress()
  replay_lag = 0
  if resume:
    try:
      if multi_process:
        state, run_progress = restore_processes(checkpoints, config, state,
                                                actor, replay, envs, run_dir,
                                                verbose=progress)
        replay_lag = replay.total_steps
      else:
        state, run_progress = restore(checkpoints, config, state, actor,
                                      replay, envs, verbose=progress)
    except Exception:
      envs.close()
      if checkpoints is not None:
        checkpoints.close()
      raise
  # Written once the checkpoint is known to match: a resume with overrides
  # (e.g. a longer run) records them.
  with open(os.path.join(own_dir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2))
  update = DeviceUpdate(networks, config)
  evaluator = None
  if config.eval_interval > 0 and index == 0:
    evaluator = Evaluator(config, networks, config.eval_episodes,
                          config.eval_greedy)
  return Run(config, own_dir, envs, replay, networks, update,
             update.place(state), actor, checkpoints, evaluator, run_progress,
             replay_lag)


def save(run: Run) -> None:
  """Writes a checkpoint of the whole run at its current env step (only
  process 0 writes; the params are the same on every process)."""
  check_losses(run)  # never write a state that is not finite
  config, progress = run.config, run.progress
  progress.seconds = run.seconds()
  progress.recent_returns = list(run.recent)
  progress.last_checkpoint = run.env_steps
  if run.logger is not None:
    # On disk before the checkpoint: a resume keeps the rows up to its step
    # and cannot rewrite ones a kill left in a buffer.
    run.logger.flush()
  if run.checkpoints is None:
    return
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


def restore_processes(checkpoints, config, state, actor, replay, envs,
                      run_dir: str, verbose: bool):
  """`restore` over several processes; returns `(state, progress)`.

  Process 0 restores its newest checkpoint; the others receive its learner
  state and counters (no shared file system needed) and restart their envs
  with new seeds and an empty replay. Whether process 0 succeeded is shared
  first, so that on an error every process stops rather than waiting for it.
  """
  error, progress = None, Progress()
  if checkpoints is not None:  # process 0
    try:
      _check_resumable(run_dir)
      state, progress = restore(checkpoints, config, state, actor, replay,
                                envs, verbose)
    except Exception as e:  # pylint: disable=broad-except
      error = e
  if not _from_process_0(error is None):
    if error is not None:
      raise error
    raise checkpoint.CheckpointError(
        "process 0 could not resume the run (its error says why)")
  state = multihost_utils.broadcast_one_to_all(jax.device_get(state))
  counters = np.array([actor.env_steps, progress.updates,
                       progress.last_checkpoint, len(progress.resumed_at)],
                      np.int64)
  if np.any(counters >= 2**31):  # jax without x64 carries them as int32
    raise checkpoint.CheckpointError("counters beyond int32: cannot resume "
                                     "over several processes")
  counters = multihost_utils.broadcast_one_to_all(counters.astype(np.int32))
  env_steps, updates, last_checkpoint, resumes = (int(c) for c in counters)
  if checkpoints is None:
    # This process's episodes and replay were not saved: start new ones, at
    # process 0's step count so that every process stops at the same step.
    actor.restart_episodes(seed=process_seed(config) + 7919 * resumes)
    actor.env_steps = env_steps
    progress = Progress(updates=updates, last_checkpoint=last_checkpoint,
                        resumed_at=[env_steps])
  # Not the run an uninterrupted one would have been: the other processes'
  # episodes restart and every process waits for their replays to refill.
  progress.exact_resume = False
  return state, progress


def act(run: Run) -> None:
  """Steps the envs `steps_per_update` times and records finished episodes."""
  run.actor.step(run.actor_params(), run.config.steps_per_update)
  record_episodes(run)


def record_episodes(run: Run) -> None:
  """Logs the episodes the actor finished and notes when the run is solved."""
  progress = run.progress
  for ret, length in run.actor.pop_episodes():
    run.recent.append(ret)
    progress.episodes += 1
    run.logger.episode(run.env_steps, run.seconds(), ret, length)
  if (progress.solved_at_steps is None and len(run.recent) == 100 and
      np.mean(run.recent) >= run.config.solve_return):
    progress.solved_at_steps = run.env_steps
    progress.solved_at_seconds = run.seconds()


def steps_before_first_batch(config) -> int:
  """Vector steps the replay holds before `sample` draws: the warm-up and
  one window."""
  return config.warmup_steps + window_length(config.sequence_length,
                                            config.unroll_steps)


def sample(run: Run):
  """A replay batch, or None while the replay warms up."""
  config = run.config
  held = run.replay.total_steps - run.replay_lag
  if held < steps_before_first_batch(config):
    return None
  return run.replay.sample(config.batch_size, config.steps_per_update,
                           config.replay_proportion)


def update(run: Run, batch):
  """Dispatches one update; its loss is read back by `check_losses`."""
  run.state, metrics = run.update(run.state, batch)
  run.progress.updates += 1
  run.unchecked_losses.append((run.progress.updates, metrics["loss"]))
  return metrics


def check_losses(run: Run, keep_newest: bool = False) -> None:
  """Reads back the losses not yet checked (waiting for their updates) and
  stops the run on one that is not finite; `keep_newest` leaves the newest
  update's for later, so that its update may still run."""
  pending = run.unchecked_losses
  checked = pending[:-1] if keep_newest else pending
  run.unchecked_losses = pending[len(checked):]
  for updates, loss in checked:
    loss = float(run.update.first(loss))
    if not math.isfinite(loss):
      raise NonFiniteLossError(
          f"loss became {loss} at update {updates} (env step "
          f"{run.env_steps}); stopping (the last checkpoint is kept)")


def learn(run: Run):
  """One update on a replay batch; returns its metrics (None in warm-up)."""
  batch = sample(run)
  if batch is None:
    return None
  metrics = update(run, batch)
  check_losses(run)
  return metrics


def act_and_learn(run: Run):
  """One iteration of `async_acting`: the actor steps the envs on its thread
  with the params of the previous update while this update runs on the
  device; returns the update's metrics (None in warm-up).

  The batch is drawn before the actor starts and the actor is joined before
  anything else reads the replay, so the replay is never read and written
  at once and a run is as deterministic as a synchronous one: update `i`
  learns from the steps of iterations `< i`, one iteration behind the
  synchronous loop. No host sync per update: a loss is read back one
  iteration later, when the actor has already waited for its params.
  """
  batch = sample(run)
  acting = run.actor_thread.submit(run.actor.step, run.actor_params(),
                                   run.config.steps_per_update)
  metrics = None
  try:
    if batch is not None:
      metrics = update(run, batch)
  finally:
    acting.result()  # re-raises the actor's error, if any
  record_episodes(run)
  check_losses(run, keep_newest=True)
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
  latest = (run.checkpoints.latest_step() if run.checkpoints is not None
            else None)
  summary = dict(
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
                  if latest is not None else None),
      params_digest=params_digest(run.update.first(run.state)))
  if run.update.num_processes > 1:
    summary.update(process_index=jax.process_index(),
                   num_processes=run.update.num_processes,
                   global_devices=jax.device_count(),
                   global_batch_size=(run.config.batch_size *
                                      run.update.num_processes))
  return summary


def finish(run: Run, interrupted: bool, stopped_early: bool,
           failed: bool) -> Dict[str, Any]:
  """Final evaluation and checkpoint (unless the run broke off), summary.json,
  and closes everything."""
  error = None
  try:
    if not failed:
      try:
        check_losses(run)  # the newest update's, under async acting
      except NonFiniteLossError as e:
        failed, error = True, e
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
    if error is not None:
      raise error
    return summary
  finally:
    run.logger.close()
    if run.actor_thread is not None:
      run.actor_thread.shutdown()
    if run.checkpoints is not None:
      run.checkpoints.close()
    if run.evaluator is not None:
      run.evaluator.close()
    run.envs.close()


def _forward_interrupts_to_jax():
  """Over several processes, Ctrl-C becomes a SIGTERM to this process.

  jax's preemption notifier (installed by `jax.distributed.initialize`)
  catches SIGTERM and tells every process; `_stop_point_reached` then stops
  them all at the same iteration. Returns the handler it replaced.
  """
  def forward(signum, frame):
    del signum, frame
    os.kill(os.getpid(), signal.SIGTERM)
  return signal.signal(signal.SIGINT, forward)


def _stop_point_reached(step: int) -> bool:
  """Whether all processes are to stop here after a SIGTERM to any of them."""
  try:
    return multihost_utils.reached_preemption_sync_point(step)
  except RuntimeError:  # jax_enable_preemption_service is off
    return False


def train(config, run_dir: Optional[str] = None, resume: bool = False,
          progress: bool = True,
          on_log: Optional[Callable[[int, float], bool]] = None,
          run_name: Optional[str] = None) -> Dict[str, Any]:
  """Trains per `config` into `run_dir`; returns a summary (also written as
  summary.json).

  `resume` continues the run in `run_dir` from its newest checkpoint.
  `on_log(env_steps, mean_return_last_100)` is called at every log and may
  return True to stop the run early (e.g. a pruned sweep trial).

  With `config.distributed`, this is one process of a multi-process run
  (see the module docstring): every process calls it with the same config
  and `run_dir`; only process 0 shows progress, and the decisions to stop
  early (`stop_when_solved`, `on_log`) are process 0's.
  """
  init_distributed(config)
  multi_process = jax.process_count() > 1
  if run_dir is None:
    run_dir = (os.path.join(config.logdir, run_name) if run_name else
               default_run_dir(config, _shared_stamp() if multi_process
                               else None))
  progress = progress and jax.process_index() == 0
  run = setup(config, run_dir, resume, progress)
  run.logger = Logger(run.run_dir, config, run.env_steps, resume, progress)
  first_update = steps_before_first_batch(config) * config.num_envs
  if progress and config.total_env_steps < first_update:
    print(f"warning: total_env_steps={config.total_env_steps} ends in the "
          f"replay's warm-up: the first update comes at about {first_update} "
          f"env steps ((warmup_steps + one window of sequence_length + "
          f"unroll_steps + 1) x num_envs), so this run will not learn",
          flush=True)
  interrupted = stopped_early = failed = False
  in_main_thread = threading.current_thread() is threading.main_thread()
  previous_sigint = None
  if multi_process and in_main_thread:
    previous_sigint = _forward_interrupts_to_jax()
  try:
    while run.env_steps < config.total_env_steps:
      before = run.env_steps
      # An interrupt waits for the iteration's end: actor, replay and the
      # (donating) update are then consistent for the checkpoint.
      with interrupts_deferred():
        if config.async_acting:
          metrics = act_and_learn(run)
        else:
          act(run)
          metrics = None
        solved = bool(config.stop_when_solved and run.progress.solved_at_steps)
        if multi_process and config.stop_when_solved:
          solved = bool(_from_process_0(solved))
        if not solved and not config.async_acting:
          metrics = learn(run)
      if solved:
        break
      if metrics is not None and run.progress.updates % config.log_interval == 0:
        log(run, metrics)
        if on_log is not None:
          mean = run.mean_return()
          stop = mean is not None and on_log(run.env_steps, mean)
          if multi_process:
            stop = bool(_from_process_0(bool(stop)))
          if stop:
            stopped_early = True
            break
      if (_due(config.eval_interval, before, run.env_steps) and
          run.evaluator is not None):  # process 0 alone evaluates
        evaluate(run)
      if _due(config.checkpoint_interval, before, run.env_steps):
        save(run)
      # Counted in iterations: jax's protocol stops all at the step after
      # the largest one any process reported, so steps must go up by 1.
      if multi_process and _stop_point_reached(
          run.env_steps // (config.num_envs * config.steps_per_update)):
        raise KeyboardInterrupt  # a SIGTERM (or Ctrl-C) reached a process
  except KeyboardInterrupt:
    interrupted = True
    print("\ninterrupted: saving a checkpoint of the current state", flush=True)
  except NonFiniteLossError:
    failed = True  # The state is not finite: keep the last checkpoint.
    raise
  finally:
    if previous_sigint is not None:
      signal.signal(signal.SIGINT, previous_sigint)
    summary = finish(run, interrupted, stopped_early, failed)
  return summary
