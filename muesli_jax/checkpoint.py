"""A run's checkpoints: orbax `CheckpointManager` steps, atomic, no pickle of
params.

`RUN_DIR/checkpoints/<env_steps>/` holds one complete checkpoint:
- `state`: the learner's `TrainState` (params, target params, optimizer
  state with the learning-rate schedule's position, advantage normaliser);
- `loop`: JSON counters of the training loop (env steps, updates, episodes,
  recent returns, elapsed seconds, RNG states of the replay and actor);
- `arrays`: the actor's arrays (frame stacks, episodes in progress) and, when
  the env's state can be saved, a snapshot of it;
- `replay` (optional): the replay's arrays, compressed by orbax (zstd).

orbax writes each step into a temporary folder and renames it when complete,
so a checkpoint cut in the middle of writing (`kill -9`, a full disk) is
never listed; `restore` reads the newest complete one and falls back to
older ones if it cannot be read. Those it skips (e.g. files emptied by a
failing disk) are moved to `RUN_DIR/checkpoints_unreadable/<env_steps>`,
out of orbax's sight: otherwise the resumed run would find their step taken
when it reaches it again.

In a multi-process run only process 0 keeps checkpoints, through a manager
over that process alone (`this_process_only`). orbax 0.12.8 is not suited
to one folder per process: by default process 0 creates and finalizes
every step folder and its barriers wait for all processes, and its numpy
handler writes array data only on process 0, so another process's
checkpoint would be empty.
"""

import os
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from muesli_jax.errors import CheckpointError  # noqa: F401  (raised here)

CHECKPOINT_DIR = "checkpoints"
LEGACY_DIR = "checkpoint"  # runs written before periodic checkpoints
# Beside CHECKPOINT_DIR, not in it: orbax lists every step folder in there.
UNREADABLE_DIR = "checkpoints_unreadable"


def _path_name(path) -> str:
  """`params/linear/w` for dict keys, attributes and indices alike (orbax
  saves NamedTuples as dicts)."""
  names = []
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        names.append(str(getattr(key, attr)))
        break
    else:
      names.append(str(key))
  return "/".join(names)


def _shapes(tree) -> Dict[str, Tuple[Tuple[int, ...], str]]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {_path_name(path): (tuple(np.shape(x)),
                                       str(np.asarray(x).dtype))
          for path, x in flat}


def _check_matches(metadata_tree, like, what: str, where: str) -> None:
  """orbax restores saved shapes even when `like` differs: check first."""
  saved = {k: (tuple(v.shape), str(np.dtype(v.dtype)))
           for k, v in _shapes_of_metadata(metadata_tree).items()}
  expected = _shapes(like)
  if saved.keys() != expected.keys():
    missing = sorted(set(expected) - set(saved))[:2]
    extra = sorted(set(saved) - set(expected))[:2]
    raise CheckpointError(
        f"the {what} in {where} does not match this config (missing "
        f"{missing or 'nothing'}, unexpected {extra or 'nothing'}): was it "
        "written with another network or env?")
  for key, (shape, dtype) in expected.items():
    if saved[key] != (shape, dtype):
      raise CheckpointError(
          f"the {what} in {where} does not match this config: {key} is "
          f"{saved[key][0]} {saved[key][1]} there but {shape} {dtype} here "
          "(another network size or env?)")


def _shapes_of_metadata(metadata_tree):
  tree = getattr(metadata_tree, "item_metadata", metadata_tree)
  tree = getattr(tree, "tree", tree)
  flat, _ = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, "shape") and hasattr(x, "dtype"))
  return {_path_name(path): x for path, x in flat}


class Checkpoints:
  """The periodic checkpoints of one run, keeping the newest `keep`."""

  def __init__(self, run_dir: str, keep: int = 3,
               this_process_only: bool = False):
    """`this_process_only`: in a multi-process run, saves and restores
    involve this process alone (no barrier waits for the others)."""
    self.directory = os.path.join(os.path.abspath(run_dir), CHECKPOINT_DIR)
    # Saved synchronously: the replay and actor arrays change as soon as
    # training goes on, and a save must be complete when `save` returns for
    # the next kill to find it.
    options = dict(max_to_keep=keep, create=True,
                   enable_async_checkpointing=False)
    handler_options = {}
    if this_process_only:
      index = jax.process_index()
      if index != 0:  # orbax writes numpy data on process 0 alone
        raise ValueError("only process 0 can keep checkpoints")
      handler_options = dict(
          multiprocessing_options=ocp.options.MultiprocessingOptions(
              primary_host=index, active_processes={index}))
      # orbax refuses create=True with active_processes: create it here.
      options.update(handler_options, create=False)
      os.makedirs(self.directory, exist_ok=True)
    self._manager = ocp.CheckpointManager(
        self.directory,
        # Named handlers let a fresh process read the items' metadata.
        item_handlers=dict(
            state=ocp.StandardCheckpointHandler(**handler_options),
            loop=ocp.JsonCheckpointHandler(**handler_options),
            arrays=ocp.StandardCheckpointHandler(**handler_options),
            replay=ocp.StandardCheckpointHandler(**handler_options)),
        options=ocp.CheckpointManagerOptions(**options))

  def steps(self):
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, env_steps: int, state, loop: Dict[str, Any],
           arrays: Dict[str, np.ndarray],
           replay: Optional[Dict[str, np.ndarray]] = None) -> str:
    """Writes one complete checkpoint at `env_steps`; returns its folder."""
    items = dict(state=ocp.args.StandardSave(jax.device_get(state)),
                 loop=ocp.args.JsonSave(loop))
    if arrays:  # orbax refuses empty trees
      items["arrays"] = ocp.args.StandardSave(_as_arrays(arrays))
    if replay is not None:
      items["replay"] = ocp.args.StandardSave(_as_arrays(replay))
    self._manager.save(env_steps, args=ocp.args.Composite(**items), force=True)
    self._manager.wait_until_finished()
    return os.path.join(self.directory, str(env_steps))

  def restore(self, like_state, set_aside_unreadable: bool = True):
    """`(env_steps, state, loop, arrays, replay or None)` of the newest
    readable checkpoint; `CheckpointError` when there is none or the state
    does not match `like_state`.

    Newer checkpoints that cannot be read are skipped and, when
    `set_aside_unreadable` (a resume), moved to `UNREADABLE_DIR` beside the
    checkpoints, with one printed line: the resumed run saves their steps
    again. Nothing is moved when no checkpoint is readable.
    """
    steps = self.steps()
    if not steps:
      raise CheckpointError(f"no complete checkpoint in {self.directory}")
    errors, unreadable = [], []

    def skip(step, where, e):
      # orbax's messages may span lines; the warning is one.
      errors.append(" ".join(f"{where}: {type(e).__name__}: {e}".split()))
      unreadable.append(step)

    for step in reversed(steps):
      where = os.path.join(self.directory, str(step))
      try:
        metadata = self._manager.item_metadata(step)
        if metadata["state"] is None:
          raise ValueError("no learner state")
      except Exception as e:  # pylint: disable=broad-except
        skip(step, where, e)
        continue
      _check_matches(metadata["state"], jax.device_get(like_state),
                     "learner state", where)
      items = dict(state=ocp.args.StandardRestore(jax.device_get(like_state)),
                   loop=ocp.args.JsonRestore())
      for optional in ("arrays", "replay"):
        if metadata.get(optional) is not None:
          items[optional] = ocp.args.StandardRestore()
      try:
        restored = self._manager.restore(step,
                                         args=ocp.args.Composite(**items))
      except Exception as e:  # pylint: disable=broad-except
        skip(step, where, e)
        continue  # An unreadable (e.g. truncated) checkpoint: try older.
      if errors:
        moved = ""
        if set_aside_unreadable:
          aside = self._set_aside(unreadable)
          moved = f", moved to {aside}{os.sep}"
        print(f"warning: skipped unreadable checkpoint(s){moved}: "
              f"{'; '.join(errors)}", flush=True)
      replay = restored["replay"] if "replay" in items else None
      arrays = dict(restored["arrays"]) if "arrays" in items else {}
      return step, restored["state"], restored["loop"], arrays, replay
    raise CheckpointError("no readable checkpoint: " + "; ".join(errors))

  def _set_aside(self, steps) -> str:
    """Moves the folders of `steps` out of the manager's folder; returns
    where to. A step set aside before keeps its folder: the new one gets a
    suffix."""
    aside = os.path.join(os.path.dirname(self.directory), UNREADABLE_DIR)
    os.makedirs(aside, exist_ok=True)
    for step in steps:
      target, copy = os.path.join(aside, str(step)), 1
      while os.path.exists(target):
        target, copy = os.path.join(aside, f"{step}.{copy}"), copy + 1
      # A rename within the run folder: atomic, and the data stays intact
      # for whoever wants to look at it.
      os.rename(os.path.join(self.directory, str(step)), target)
    # The manager caches its steps: without this it would still list (and
    # later try to delete) the ones moved.
    self._manager.reload()
    return aside

  def close(self):
    self._manager.close()


def _as_arrays(tree: Dict[str, Any]) -> Dict[str, np.ndarray]:
  # orbax takes arrays, not numpy scalars.
  return {k: np.asarray(v) for k, v in tree.items()}


def load_train_state(run_dir: str, like):
  """The `TrainState` of a run's newest complete checkpoint (e.g. to
  evaluate it), in the structure of `like`.

  Reads `RUN_DIR/checkpoints/` and, for older runs, `RUN_DIR/checkpoint/`.
  Raises `CheckpointError` with one line when there is none or it does not
  match `like` (another network size or env).
  """
  if os.path.isdir(os.path.join(run_dir, CHECKPOINT_DIR)):
    checkpoints = Checkpoints(run_dir)
    try:
      # Only reads: the run may still be training into that folder.
      return checkpoints.restore(like, set_aside_unreadable=False)[1]
    finally:
      checkpoints.close()
  legacy = os.path.abspath(os.path.join(run_dir, LEGACY_DIR))
  if not os.path.isdir(legacy):
    raise CheckpointError(f"no checkpoint in {run_dir} (neither "
                          f"{CHECKPOINT_DIR}/ nor {LEGACY_DIR}/)")
  checkpointer = ocp.StandardCheckpointer()
  like = jax.device_get(like)
  _check_matches(checkpointer.metadata(legacy), like, "learner state", legacy)
  return checkpointer.restore(legacy, like)

