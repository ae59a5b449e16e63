"""The edge where a config becomes a run: the networks for an env, the
replay sized for it (checked against the memory there is) and, for the host
loop, the whole `Run` (`setup`), resumed from its newest checkpoint when
asked."""

import concurrent.futures
import os
import time
from typing import Any, List, Optional

import jax

import muesli_jax
from muesli_jax import checkpoint, distributed, learner, placement
from muesli_jax import envs as envs_lib
from muesli_jax import hparams as hparams_lib
from muesli_jax import networks as nets
from muesli_jax import replay as replay_lib
from muesli_jax import resume as resume_lib
from muesli_jax import run_record
from muesli_jax.actor import Actor
from muesli_jax.errors import ConfigError
from muesli_jax.evaluation import Evaluator
from muesli_jax.types import EnvSpec, stacked_shape, window_length


def build_networks(config, spec: EnvSpec) -> nets.MuesliNetworks:
  """The networks for `spec`'s observations (stacked `config.stack` times)
  and actions."""
  return nets.make_networks(
      hparams_lib.NetworkHparams.from_config(config),
      stacked_shape(spec.observation_shape, config.stack), spec.num_actions,
      spec.action_dim, spec.observation_scale)


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


def make_replay(config, spec: EnvSpec, verbose: bool = True,
                seed: Optional[int] = None) -> replay_lib.SequenceReplay:
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


def steps_before_first_batch(config) -> int:
  """Vector steps the replay holds before the first batch is drawn: the
  warm-up and one window."""
  return config.warmup_steps + window_length(config.sequence_length,
                                             config.unroll_steps)


def warn_if_no_update(config) -> None:
  """Warns when the run ends before its first update."""
  first_update = steps_before_first_batch(config) * config.num_envs
  if config.total_env_steps < first_update:
    print(f"warning: total_env_steps={config.total_env_steps} ends in the "
          f"replay's warm-up: the first update comes at about {first_update} "
          f"env steps ((warmup_steps + one window of sequence_length + "
          f"unroll_steps + 1) x num_envs), so this run will not learn",
          flush=True)


class Run:
  """Everything one training run holds; built by `setup`."""

  def __init__(self, config, run_dir: str, envs, replay, networks, update,
               state, actor, checkpoints, evaluator,
               progress: resume_lib.Progress, replay_lag: int = 0):
    # `run_dir` is the folder this process writes (`process_dir`);
    # `checkpoints` and `evaluator` are None on processes other than 0.
    self.config, self.run_dir = config, run_dir
    self.envs, self.replay, self.networks = envs, replay, networks
    self.update, self.state, self.actor = update, state, actor
    self.checkpoints, self.evaluator, self.progress = (checkpoints, evaluator,
                                                       progress)
    self.logger: Optional[run_record.Logger] = None
    self.record: Optional[run_record.EpisodeRecord] = None
    self.started = time.time()
    # Imports, envs, replay and networks of this process: not in seconds().
    self.startup_seconds = self.started - muesli_jax.LOADED_AT
    self.first_env_steps = actor.env_steps
    self._seconds_before = progress.seconds  # of the processes before this
    # Replay steps that do not count towards the warm-up: after a resume
    # over several processes only process 0 has its replay back, and all
    # must start updating at the same iteration.
    self.replay_lag = replay_lag
    self.actor_device = placement.actor_device(config.actor_device)
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
    return placement.acting_copy(self.acting_params(), self.actor_device,
                                 self.update, self.actor_thread is not None)

  def close(self) -> None:
    self.logger.close()
    if self.actor_thread is not None:
      self.actor_thread.shutdown()
    if self.checkpoints is not None:
      self.checkpoints.close()
    if self.evaluator is not None:
      self.evaluator.close()
    self.envs.close()

  def open_logs(self, resumed: bool, progress: bool) -> None:
    self.logger = run_record.Logger(self.run_dir, self.config.total_env_steps,
                                    self.env_steps, resumed, progress)
    p = self.progress
    self.record = run_record.EpisodeRecord(
        self.logger, self.config.solve_return, p.recent_returns, p.episodes,
        p.solved_at_steps, p.solved_at_seconds)


def setup(config, run_dir: str, resume_run: bool, progress: bool) -> Run:
  """Builds envs, replay, networks, state and actor; restores them from the
  newest checkpoint when `resume_run`. Bad configs raise before anything is
  written.

  Over several processes, process `k > 0` writes `process_dir(run_dir, k)`
  and keeps no checkpoints: it resumes from what process 0 restored.
  """
  placement.check_batch_split(config.batch_size, jax.local_device_count())
  index, multi_process = jax.process_index(), distributed.is_multi_process()
  own_dir = distributed.process_dir(run_dir, index)
  if resume_run and not multi_process:
    resume_lib.check_resumable(run_dir)
  seed = distributed.process_seed(config.seed)
  envs = envs_lib.make_vector_env(config, seed=seed)
  spec = envs_lib.env_spec(envs, config.env_id)
  checkpoints = None
  try:
    replay = make_replay(config, spec, verbose=progress, seed=seed)
    if not resume_run or index > 0:
      run_record.make_run_dir(own_dir)
    networks = build_networks(config, spec)
    learner_hparams = hparams_lib.LearnerHparams.from_config(config)
    state = learner.init_state(networks, learner_hparams,
                               jax.random.PRNGKey(config.seed))
    actor = Actor(envs, networks, replay, config.stack, seed)
    if index == 0:
      checkpoints = checkpoint.Checkpoints(
          run_dir, keep=config.keep_checkpoints,
          this_process_only=multi_process)
    run_progress, replay_lag = resume_lib.Progress(), 0
    if resume_run and multi_process:
      state, run_progress = resume_lib.restore_processes(
          checkpoints, config, state, actor, replay, envs, run_dir, progress)
      replay_lag = replay.total_steps
    elif resume_run:
      state, run_progress = resume_lib.restore(checkpoints, config, state, actor,
                                               replay, envs, progress)
  except BaseException:
    envs.close()
    if checkpoints is not None:
      checkpoints.close()
    raise
  # Written once the checkpoint is known to match: a resume with overrides
  # (e.g. a longer run) records them.
  run_record.write_config(own_dir, config)
  update = placement.DeviceUpdate(networks, learner_hparams,
                                  config.batch_size)
  evaluator = None
  if config.eval_interval > 0 and index == 0:
    evaluator = Evaluator(config, networks, config.eval_episodes,
                          config.eval_greedy)
  return Run(config, own_dir, envs, replay, networks, update,
             update.place(state), actor, checkpoints, evaluator, run_progress,
             replay_lag)
