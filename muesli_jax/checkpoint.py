"""Saving and restoring a `TrainState` with orbax (atomic, no pickle)."""

import os

import jax
import orbax.checkpoint as ocp


def save(path: str, state) -> str:
  """Writes `state` (a pytree on host or one device) to `path`; returns it."""
  path = os.path.abspath(path)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(path, jax.device_get(state), force=True)
  checkpointer.wait_until_finished()
  return path


def restore(path: str, like):
  """Reads the pytree at `path` into the structure of `like`."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"no checkpoint at {path}")
  return ocp.StandardCheckpointer().restore(path, jax.device_get(like))
