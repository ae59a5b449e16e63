"""What of a host-loop run a checkpoint holds, and how a run resumes.

`save` writes the learner state, the loop's `Progress`, the actor, the
replay and (where they pickle) the envs through `checkpoint.Checkpoints`;
`restore` puts them back, so that a resumed run continues bit-identically
where the envs could be restored. Over several processes
(`restore_processes`) process 0 restores and the others receive its state.
"""

import dataclasses
import os
from typing import Dict, List, Optional

import jax
import numpy as np

from muesli_jax import checkpoint, distributed, interrupts
from muesli_jax.actor import restore_envs, snapshot_envs
from muesli_jax.errors import CheckpointError


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


def check_resumable(run_dir: str) -> None:
  if not os.path.isdir(os.path.join(run_dir, checkpoint.CHECKPOINT_DIR)):
    raise CheckpointError(
        f"{run_dir} has no {checkpoint.CHECKPOINT_DIR}/ folder to resume from")


def save(run) -> None:
  """Writes a checkpoint of the whole run at its current env step (only
  process 0 writes; the params are the same on every process). The caller
  has checked that the state is finite."""
  config, progress, record = run.config, run.progress, run.record
  progress.seconds = run.seconds()
  progress.recent_returns = list(record.recent)
  progress.episodes = record.count
  progress.solved_at_steps = record.solved_at_steps
  progress.solved_at_seconds = record.solved_at_seconds
  progress.last_checkpoint = run.env_steps
  if run.logger is not None:
    # On disk before the checkpoint: a resume keeps the rows up to its step
    # and cannot rewrite ones a kill left in a buffer.
    run.logger.flush()
  if run.checkpoints is None:
    return
  actor_counters, actor_arrays = run.actor.state_dict()
  replay_counters, replay_arrays = run.replay.state_dict()
  envs_state = snapshot_envs(run.envs) if config.checkpoint_envs else None
  if envs_state is not None:
    actor_arrays["envs"] = np.frombuffer(envs_state, np.uint8)
  loop = dict(progress=dataclasses.asdict(progress), actor=actor_counters,
              replay=replay_counters)
  with interrupts.deferred():
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
      check_resumable(run_dir)
      state, progress = restore(checkpoints, config, state, actor, replay,
                                envs, verbose)
    except Exception as e:  # pylint: disable=broad-except
      error = e
  if not distributed.from_process_0(error is None):
    if error is not None:
      raise error
    raise CheckpointError(
        "process 0 could not resume the run (its error says why)")
  state = distributed.broadcast(jax.device_get(state))
  counters = np.array([actor.env_steps, progress.updates,
                       progress.last_checkpoint, len(progress.resumed_at)],
                      np.int64)
  if np.any(counters >= 2**31):  # jax without x64 carries them as int32
    raise CheckpointError("counters beyond int32: cannot resume over several "
                          "processes")
  counters = distributed.broadcast(counters.astype(np.int32))
  env_steps, updates, last_checkpoint, resumes = (int(c) for c in counters)
  if checkpoints is None:
    # This process's episodes and replay were not saved: start new ones, at
    # process 0's step count so that every process stops at the same step.
    actor.restart_episodes(seed=distributed.process_seed(config.seed) +
                           7919 * resumes)
    actor.env_steps = env_steps
    progress = Progress(updates=updates, last_checkpoint=last_checkpoint,
                        resumed_at=[env_steps])
  # Not the run an uninterrupted one would have been: the other processes'
  # episodes restart and every process waits for their replays to refill.
  progress.exact_resume = False
  return state, progress
