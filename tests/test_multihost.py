"""Training over several processes: one update over the devices of all.

Two processes on this machine's CPU join a `jax.distributed` run through
scripts/train.py (`--config.distributed=true` with a localhost coordinator;
jax 0.10 does cross-process CPU collectives with gloo by default). Each
process acts with its own seed, so they collect different episodes, yet the
update reduces over both, so their params must stay bit-identical.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import pytest

from conftest import script_env
from configs import cartpole
from muesli_jax import builder, checkpoint, envs as envs_lib, learner
from muesli_jax import run_record
from muesli_jax.hparams import LearnerHparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Small and short: most of a run is starting jax and compiling the update.
# Without the learning-rate decay, whose length the update holds as a
# constant, runs of any length compile the same update: a resume and the
# runs of both async settings load it from the compilation cache.
RUN_ARGS = ["--config", "cartpole.py", "--config.hidden_size=16",
            "--config.head_size=16", "--config.batch_size=8",
            "--config.sequence_length=4", "--config.unroll_steps=2",
            "--config.warmup_steps=8", "--config.eval_interval=0",
            "--config.log_interval=10", "--config.lr_decay=false"]
TIMEOUT = 300  # seconds per launch: a hang fails the test, never blocks it


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _env(local_devices: int):
  env = script_env(devices=local_devices)
  # No cluster for jax to detect: the config says how to join.
  return {k: v for k, v in env.items()
          if not k.startswith(("JAX_COORDINATOR", "SLURM_", "OMPI_", "PMI_"))}


class Processes:
  """Both processes of one run, each in its own session so that `kill`
  reaches everything it started; killed for sure on leaving the block."""

  def __init__(self, tmp_path, name: str, args, local_devices: int = 1):
    port = _free_port()
    self.logs = [tmp_path / f"{name}{i}.log" for i in range(2)]
    self.procs = []
    try:
      for i, log in enumerate(self.logs):
        with open(log, "w") as out:
          self.procs.append(subprocess.Popen(
              [sys.executable, "scripts/train.py", *args,
               "--config.distributed=true",
               f"--config.coordinator_address=localhost:{port}",
               "--config.num_processes=2", f"--config.process_id={i}"],
              cwd=ROOT, env=_env(local_devices), stdout=out,
              stderr=subprocess.STDOUT, start_new_session=True))
    except BaseException:
      self.kill()
      raise

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.kill()

  def kill(self):
    # SIGKILL: jax's preemption notifier catches SIGTERM.
    for proc in self.procs:
      if proc.poll() is None:
        try:
          os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
          pass
      proc.wait()

  def wait(self):
    """Both return codes; fails (with their logs) past `TIMEOUT`."""
    deadline = time.time() + TIMEOUT
    codes = []
    for proc in self.procs:
      try:
        codes.append(proc.wait(timeout=max(1.0, deadline - time.time())))
      except subprocess.TimeoutExpired:
        pytest.fail(f"a process hung:\n{self.output()}")
    return codes

  def output(self) -> str:
    return "\n".join(f"--- process {i}:\n{log.read_text()[-3000:]}"
                     for i, log in enumerate(self.logs))


def _summaries(run_dir):
  return [json.loads(open(os.path.join(d, "summary.json")).read())
          for d in (run_dir, os.path.join(run_dir, "process_1"))]


def _returns(folder):
  with open(os.path.join(folder, "episodes.csv")) as f:
    return [line.split(",")[2] for line in f.readlines()[1:]]


def _digest_of(run_dir) -> str:
  """The params digest of a run's newest checkpoint, read here."""
  config = cartpole.get_config()
  config.hidden_size = config.head_size = 16
  config.lr_decay = False  # as RUN_ARGS: the optimizer state has no count
  envs = envs_lib.make_vector_env(config, num_envs=1)
  networks = builder.build_networks(config, envs_lib.env_spec(envs))
  envs.close()
  init = learner.init_state(networks, LearnerHparams.from_config(config),
                            jax.random.PRNGKey(0))
  return (run_record.params_digest(checkpoint.load_train_state(run_dir, init)),
          run_record.params_digest(init))


@pytest.mark.parametrize("async_acting", [False, True])
def test_two_processes_keep_identical_params_and_collect_different_data(
    tmp_path, async_acting):
  logdir = tmp_path / "logs"
  with Processes(tmp_path, "run", RUN_ARGS + [
      "--config.total_env_steps=480", "--config.checkpoint_interval=0",
      f"--config.async_acting={async_acting}",
      f"--config.logdir={logdir}"], local_devices=2) as procs:
    assert procs.wait() == [0, 0], procs.output()
  (run_dir,) = glob.glob(str(logdir / "*"))
  first, second = _summaries(run_dir)
  for summary in (first, second):
    assert summary["num_processes"] == 2
    assert summary["global_devices"] == 4  # 2 processes x 2 local devices
    assert summary["global_batch_size"] == 16  # batch_size is per process
    assert summary["update_compilations"] == 1
    assert summary["replicas_identical"] is True  # within the process
    assert summary["updates"] == first["updates"] > 20
  # One set of params across the processes: the same as process 0 saved.
  saved, initial = _digest_of(run_dir)
  assert first["params_digest"] == second["params_digest"] == saved
  assert saved != initial
  # ... learnt from different data: each process has its own seed.
  assert _returns(run_dir) != _returns(os.path.join(run_dir, "process_1"))
  # Process 0 alone keeps checkpoints (and the TensorBoard of the learner).
  assert first["checkpoint"].endswith("checkpoints/480")
  assert second["checkpoint"] is None
  assert not os.path.exists(os.path.join(run_dir, "process_1", "checkpoints"))


def test_sigterm_to_one_process_stops_both_at_one_step_and_they_resume(
    tmp_path):
  logdir = tmp_path / "logs"
  with Processes(tmp_path, "run", RUN_ARGS + [
      "--config.total_env_steps=100000", "--config.checkpoint_interval=160",
      f"--config.logdir={logdir}"]) as procs:
    deadline = time.time() + TIMEOUT
    # Updates start at 15 iterations (120 env steps): stop after some.
    while not glob.glob(str(logdir / "*" / "checkpoints" / "160")):
      assert time.time() < deadline and all(
          p.poll() is None for p in procs.procs), procs.output()
      time.sleep(0.5)
    os.killpg(procs.procs[1].pid, signal.SIGTERM)  # e.g. a preemption
    assert procs.wait() == [130, 130], procs.output()
  (run_dir,) = glob.glob(str(logdir / "*"))
  first, second = _summaries(run_dir)
  stopped_at = first["env_steps"]
  assert first["interrupted"] and second["interrupted"]
  assert second["env_steps"] == stopped_at < 100000
  assert first["updates"] == second["updates"] > 0
  assert first["params_digest"] == second["params_digest"]
  assert first["checkpoint"].endswith(f"checkpoints/{stopped_at}")

  # Both resume from process 0's checkpoint (process 1 gets it from there).
  with Processes(tmp_path, "resume", [
      "--resume", run_dir, f"--config.total_env_steps={stopped_at + 160}"
  ]) as procs:
    assert procs.wait() == [0, 0], procs.output()
  first, second = _summaries(run_dir)
  for summary in (first, second):
    assert summary["resumed_at"] == [stopped_at]
    assert summary["exact_resume"] is False  # process 1's episodes restart
    assert summary["env_steps"] == stopped_at + 160
  assert first["updates"] == second["updates"]
  assert first["params_digest"] == second["params_digest"] == (
      _digest_of(run_dir)[0])


def test_distributed_without_a_coordinator_is_one_error_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, "scripts/train.py", *RUN_ARGS,
       "--config.distributed=true", f"--config.logdir={tmp_path / 'logs'}"],
      cwd=ROOT, env=_env(1), capture_output=True, text=True, timeout=TIMEOUT)
  assert proc.returncode == 2, proc.stderr[-3000:]
  (line,) = proc.stderr.strip().splitlines()
  assert line.startswith("error: distributed=true but jax cannot tell")
  assert "--config.coordinator_address=HOST:PORT" in line
  assert not (tmp_path / "logs").exists()
