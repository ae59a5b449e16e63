"""The host training loop: act, store, sample, update, log.

`train` reads top to bottom: `builder.setup` (or resume from a
checkpoint), then `loop`: per iteration `act` and `learn` (or
`act_and_learn` with `async_acting`), `log`, and `evaluate` and `save` when
due; `finish` ends every run, however it stops, with the newest checkpoint
and `summary.json`.

The parts live in their own modules: `builder` (a config into a `Run`),
`placement` (the update on one or several devices), `run_record` (run
folder, logs, episodes, summary), `resume` (what a checkpoint holds),
`distributed` (several processes in lockstep) and `interrupts` (Ctrl-C and
SIGTERM at any moment). docs/architecture.md draws the layers.
"""

import os
import signal
import threading
import time
from typing import Any, Callable, Dict, Optional

import jax
import numpy as np

from muesli_jax import builder, distributed, interrupts, placement
from muesli_jax import resume as resume_lib
from muesli_jax import run_record
from muesli_jax.builder import Run
from muesli_jax.errors import NonFiniteLossError


def act(run: Run) -> None:
  """Steps the envs `steps_per_update` times and records finished episodes."""
  run.actor.step(run.actor_params(), run.config.steps_per_update)
  record_episodes(run)


def record_episodes(run: Run) -> None:
  for ret, length in run.actor.pop_episodes():
    run.record.add(run.env_steps, run.seconds(), ret, length)


def sample(run: Run):
  """A replay batch, or None while the replay warms up."""
  config = run.config
  held = run.replay.total_steps - run.replay_lag
  if held < builder.steps_before_first_batch(config):
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
    run_record.check_finite(
        [float(run.update.first(loss))], updates,
        f"env step {run.env_steps}; the last checkpoint is kept")


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
  # Speed of this process (a resumed run starts counting again).
  sps = (run.env_steps - run.first_env_steps) / max(time.time() - run.started,
                                                   1e-9)
  run.logger.learner(jax.device_get(run.update.first(metrics)),
                     run.env_steps, sps, run.record.mean())


def evaluate(run: Run) -> Dict[str, float]:
  """Plays `eval_episodes` fresh episodes with the acting params and logs
  their returns and a strip of frames."""
  config = run.config
  seed = config.seed + 10_000 + 7919 * len(run.progress.evaluations)
  run.logger.message(f"evaluating {config.eval_episodes} episodes at "
                     f"{run.env_steps} env steps")
  result = run.evaluator(run.acting_params(), seed=seed,
                         record=config.eval_video)
  figures = dict(env_steps=run.env_steps,
                 return_mean=float(np.mean(result.returns)),
                 return_std=float(np.std(result.returns)),
                 length_mean=float(np.mean(result.lengths)))
  run.progress.evaluations.append(figures)
  run.logger.evaluation(figures, result.frames, len(result.returns),
                        config.eval_greedy)
  return figures


def save(run: Run) -> None:
  """A checkpoint of the run now; an interrupt waits for it to be whole."""
  with interrupts.deferred():
    check_losses(run)  # never write a state that is not finite
    resume_lib.save(run)


def _due(interval: int, last: int, now: int) -> bool:
  return interval > 0 and now // interval > last // interval


def summarize(run: Run, interrupted: bool,
              stopped_early: bool) -> Dict[str, Any]:
  progress = run.progress
  latest = (run.checkpoints.latest_step() if run.checkpoints is not None
            else None)
  summary = run_record.summary(
      run.config, run.record, updates=progress.updates,
      env_steps=run.env_steps, seconds=run.seconds(),
      interrupted=interrupted, stopped_early=stopped_early,
      update_compilations=run.update.traces, devices=len(run.update.devices),
      replicas_identical=run.update.replicas_identical(run.state),
      evaluations=progress.evaluations, resumed_at=progress.resumed_at,
      exact_resume=progress.exact_resume,
      startup_seconds=run.startup_seconds,
      checkpoint=(os.path.join(run.checkpoints.directory, str(latest))
                  if latest is not None else None),
      params_digest=run_record.params_digest(run.update.first(run.state)))
  if run.update.num_processes > 1:
    summary.update(process_index=jax.process_index(),
                   num_processes=run.update.num_processes,
                   global_devices=jax.device_count(),
                   global_batch_size=(run.config.batch_size *
                                      run.update.num_processes))
  return summary


def finish(run: Run, interrupted: bool, stopped_early: bool,
           failed: bool) -> Dict[str, Any]:
  """Ends every run: the final evaluation (a completed run's; an interrupt
  cuts it short), then, shielded from further interrupts, the final
  checkpoint (unless the state is not finite), summary.json and closing."""
  error = None
  try:
    if not failed:
      try:
        check_losses(run)  # the newest update's, under async acting
      except NonFiniteLossError as e:
        failed, error = True, e
    evaluations = run.progress.evaluations
    if (run.evaluator is not None and
        not (interrupted or failed or stopped_early) and
        not (evaluations and evaluations[-1]["env_steps"] == run.env_steps)):
      evaluate(run)
  except KeyboardInterrupt:
    interrupted = True
    print("\ninterrupted: saving a checkpoint of the current state",
          flush=True)
  with interrupts.shielded() as shield:
    try:
      if not failed and run.progress.last_checkpoint != run.env_steps:
        save(run)
      summary = summarize(run, interrupted or shield.interrupted,
                          stopped_early)
      run_record.write_summary(run.run_dir, summary)
    finally:
      run.close()
  if error is not None:
    raise error
  return summary


def iterate(run: Run, multi_process: bool) -> Optional[Dict[str, Any]]:
  """One iteration; returns its metrics, or None once the run is solved
  (with `stop_when_solved`). An interrupt waits for the iteration's end:
  actor, replay and the (donating) update are then consistent."""
  config = run.config
  with interrupts.deferred():
    metrics = act_and_learn(run) if config.async_acting else act(run)
    solved = bool(config.stop_when_solved and run.record.solved_at_steps)
    if multi_process and config.stop_when_solved:
      solved = bool(distributed.from_process_0(solved))
    if solved:
      return None
    if not config.async_acting:
      metrics = learn(run)
    return metrics or {}


def loop(run: Run, on_log, multi_process: bool) -> bool:
  """Iterates until `total_env_steps`; returns whether `on_log` stopped the
  run early. Interrupts and non-finite losses propagate."""
  config = run.config
  while run.env_steps < config.total_env_steps:
    before = run.env_steps
    metrics = iterate(run, multi_process)
    if metrics is None:
      break
    if metrics and run.progress.updates % config.log_interval == 0:
      log(run, metrics)
      if on_log is not None:
        mean = run.record.mean()
        stop = mean is not None and on_log(run.env_steps, mean)
        if multi_process:
          stop = bool(distributed.from_process_0(bool(stop)))
        if stop:
          return True
    if (_due(config.eval_interval, before, run.env_steps) and
        run.evaluator is not None):  # process 0 alone evaluates
      evaluate(run)
    if _due(config.checkpoint_interval, before, run.env_steps):
      save(run)
    # Counted in iterations: jax's protocol stops all at the step after
    # the largest one any process reported, so steps must go up by 1.
    if multi_process and distributed.stop_point_reached(
        run.env_steps // (config.num_envs * config.steps_per_update)):
      raise KeyboardInterrupt  # a SIGTERM (or Ctrl-C) reached a process
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
  (see `muesli_jax.distributed`): every process calls it with the same
  config and `run_dir`; only process 0 shows progress, and the decisions to
  stop early (`stop_when_solved`, `on_log`) are process 0's.
  """
  distributed.init_distributed(config)
  placement.keep_host_memory(config.keep_host_memory)
  multi_process = distributed.is_multi_process()
  if run_dir is None:
    run_dir = (os.path.join(config.logdir, run_name) if run_name else
               run_record.default_run_dir(
                   config, distributed.shared_stamp() if multi_process
                   else None))
  progress = progress and jax.process_index() == 0
  run = None
  interrupted = stopped_early = failed = False
  previous_sigint = None
  try:
    # An interrupt while the run is built waits for it: then there is a
    # run to close with a summary (and, once resumed, a checkpoint).
    with interrupts.deferred():
      run = builder.setup(config, run_dir, resume, progress)
      run.open_logs(resume, progress)
    if progress:
      builder.warn_if_no_update(config)
    if multi_process and threading.current_thread() is threading.main_thread():
      previous_sigint = distributed.forward_interrupts_to_jax()
    stopped_early = loop(run, on_log, multi_process)
  except KeyboardInterrupt:
    interrupted = True
    print("\ninterrupted: saving a checkpoint of the current state", flush=True)
  except NonFiniteLossError:
    failed = True  # The state is not finite: keep the last checkpoint.
    raise
  finally:
    if previous_sigint is not None:
      signal.signal(signal.SIGINT, previous_sigint)
    if run is not None:  # else setup failed: its error propagates
      summary = finish(run, interrupted, stopped_early, failed)
  return summary
