"""Several processes of one run (`config.distributed`, `jax.distributed`).

Every process runs the host loop in lockstep with its own envs, actor and
replay (seeded by `process_seed`) and its own batch of `batch_size`
sequences; the update is one computation over the devices of all processes,
so the params stay identical everywhere. Process 0 writes the run folder;
process `k` writes its episodes and summary to `RUN_DIR/process_<k>/`
(`process_dir`). Every decision that ends the loop is taken by all
processes at the same iteration (`from_process_0`, `stop_point_reached`),
since a process that stopped early would leave the others waiting in the
update's collectives.
"""

import os
import signal
import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from muesli_jax.errors import ConfigError


def is_multi_process() -> bool:
  return jax.process_count() > 1


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


def process_seed(seed: int) -> int:
  """The seed of this process's envs, actor sampling and replay sampling.

  Process 0 (so every single-process run) uses `seed`; process `k` derives
  its own from `(seed, k)`, so that the processes of a multi-process run
  collect different episodes. The network's init always uses `seed`: every
  process starts from the same params.
  """
  index = jax.process_index()
  if index == 0:
    return seed
  words = np.random.SeedSequence([seed % 2**32, index]).generate_state(1)
  return int(words[0] >> 1)  # 31 bits: any env or PRNGKey takes it


def process_dir(run_dir: str, index: int) -> str:
  """The folder process `index` writes: the run folder itself for process 0,
  `RUN_DIR/process_<index>/` for the others."""
  return run_dir if index == 0 else os.path.join(run_dir, f"process_{index}")


def from_process_0(value: int) -> int:
  """Process 0's `value` (an int32) on every process (one collective)."""
  if jax.process_count() == 1:
    return value
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


def broadcast(tree):
  """Process 0's host tree on every process."""
  return multihost_utils.broadcast_one_to_all(tree)


def shared_stamp() -> str:
  """Process 0's time stamp on every process: all name the same run."""
  stamp = np.frombuffer(time.strftime('%Y%m%d-%H%M%S').encode(), np.uint8)
  stamp = multihost_utils.broadcast_one_to_all(stamp.astype(np.int32))
  return bytes(np.asarray(stamp, np.uint8)).decode()


def forward_interrupts_to_jax():
  """Over several processes, Ctrl-C becomes a SIGTERM to this process.

  jax's preemption notifier (installed by `jax.distributed.initialize`)
  catches SIGTERM and tells every process; `stop_point_reached` then stops
  them all at the same iteration. Returns the handler it replaced.
  """
  def forward(signum, frame):
    del signum, frame
    os.kill(os.getpid(), signal.SIGTERM)
  return signal.signal(signal.SIGINT, forward)


def stop_point_reached(step: int) -> bool:
  """Whether all processes are to stop here after a SIGTERM to any of them."""
  try:
    return multihost_utils.reached_preemption_sync_point(step)
  except RuntimeError:  # jax_enable_preemption_service is off
    return False
