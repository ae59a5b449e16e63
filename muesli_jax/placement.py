"""Device placement of the update: `jit` on one device, `pmap` over several
(and over the devices of every process of a multi-process run).

`DeviceUpdate` hides the difference from the loops and counts the update's
compilations (`types.Traced`: one per run is the rule the loops report);
`first_replica` reads one replica of a replicated tree.
"""

import ctypes
import ctypes.util

import jax
import jax.numpy as jnp
import numpy as np

from muesli_jax import learner
from muesli_jax.errors import ConfigError
from muesli_jax.types import Traced


# glibc's mallopt parameters, and its defaults.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


def keep_host_memory(keep: bool = True) -> bool:
  """Lets freed host memory be reused rather than unmapped (glibc only).

  XLA's CPU runtime allocates the temporaries of every call anew. glibc
  serves blocks over 32 MB with fresh mmaps and unmaps them on free, so every
  update would fault in and zero its pages again: a third of the MinAtar
  update's time on one core (its temporaries are 40 MB; `scripts/benchmark.py
  --config minatar.py --baseline keep_host_memory=false`). From the heap,
  and without trimming it, they stay mapped. `keep=False` restores glibc's
  default thresholds. Returns whether the allocator took the setting (False
  where there is no glibc).
  """
  try:
    mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
  except (OSError, AttributeError, TypeError):
    return False
  if keep:
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
  else:
    settings = ((_M_MMAP_MAX, _DEFAULT_MMAP_MAX),
                (_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD),
                (_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD))
  return all([bool(mallopt(param, value)) for param, value in settings])


def check_batch_split(batch_size: int, num_devices: int) -> None:
  """`batch_size` is per process: each process samples it from its own
  replay and splits it over its `num_devices` local devices."""
  if batch_size % num_devices:
    raise ConfigError(f"batch_size {batch_size} must be divisible by the "
                      f"{num_devices} local devices")


def replicas_identical(state) -> bool:
  """Whether every replica `[D, ...]` holds bit-identical params (they must)."""
  trees = (state.params, state.target_params)
  return all(bool(np.all(np.asarray(x) == np.asarray(x)[:1]))
             for x in jax.tree.leaves(trees))


def first_replica(tree, replicated: bool):
  """One replica of a tree that is `[D, ...]` where `replicated`.

  Read from the first local device's shards, in one jitted call: `x[0]` on
  a replicated array is a gather over every device per leaf (tens of
  dispatches for the params, which took two thirds of a two-device CPU
  loop's time), and over several processes a program over all local
  devices (a 2-process CPU run whose actor acted on such slices hung in its
  second policy step).
  """
  if not replicated:
    return tree
  return _squeeze_first(
      jax.tree.map(lambda x: x.addressable_shards[0].data, tree))


@jax.jit
def _squeeze_first(tree):
  """`[1, ...]` leaves on one device -> `[...]`."""
  return jax.tree.map(lambda x: x[0], tree)


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

  def __init__(self, networks, hparams, batch_size: int, devices=None):
    self.devices = list(devices or jax.local_devices())
    self.num_processes = jax.process_count()
    num_devices = len(self.devices)
    check_batch_split(batch_size, num_devices)
    if self.num_processes > 1:
      if set(self.devices) != set(jax.local_devices()):
        raise ValueError("over several processes the update runs on every "
                         "local device of each")
      self._traced = Traced(learner.make_update(networks, hparams,
                                                learner.AXIS))
      # Without `devices`, pmap maps over the devices of all processes
      # (`devices` would have to list them all, identically everywhere).
      self._update = jax.pmap(self._traced, axis_name=learner.AXIS,
                              donate_argnums=0)
    elif num_devices > 1:
      self._traced = Traced(learner.make_update(networks, hparams,
                                                learner.AXIS))
      self._update = jax.pmap(self._traced, axis_name=learner.AXIS,
                              devices=self.devices, donate_argnums=0)
    else:
      self._traced = Traced(learner.make_update(networks, hparams))
      self._update = jax.jit(self._traced, donate_argnums=0)
    if self.replicated:
      # The local part of the update's output sharding (over several
      # processes pmap returns each process its local [D, ...] part).
      mesh = jax.sharding.Mesh(np.asarray(self.devices), (learner.AXIS,))
      self._sharding = jax.sharding.NamedSharding(
          mesh, jax.sharding.PartitionSpec(learner.AXIS))

  @property
  def traces(self) -> int:
    return self._traced.traces

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
    return first_replica(tree, self.replicated)

  def replicas_identical(self, state) -> bool:
    return replicas_identical(state) if self.replicated else True


def actor_device(name: str):
  """The device of the actor's policy steps: the host CPU for `"cpu"`, else
  None (jax's default device, the learner's)."""
  return jax.devices("cpu")[0] if name == "cpu" else None


def acting_copy(params, actor_device_, update: DeviceUpdate,
                acting_on_thread: bool):
  """`params` on the actor's device, as buffers the next update cannot free.

  For acting on a thread they must not share buffers with the state: the
  update running meanwhile donates (frees) those. A replica taken out of a
  replicated state, or params put on another device, are new buffers
  already; only a single device's own state is copied.
  """
  if actor_device_ is not None:
    params = jax.device_put(params, actor_device_)
  if (acting_on_thread and not update.replicated and
      (actor_device_ is None or actor_device_ in update.devices)):
    params = _copy_tree(params)
  return params


@jax.jit
def _copy_tree(tree):
  return jax.tree.map(jnp.copy, tree)


