"""Training over several devices: one compilation, replicas that stay equal.

Each test runs in a subprocess with two forced CPU devices (the flag must be
set before jax is imported).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from muesli_jax import learner, networks as nets, placement
from muesli_jax.config import load_config_file
from muesli_jax.hparams import LearnerHparams, NetworkHparams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def two_device_env():
  path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
  return dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
              JAX_PLATFORMS="cpu", PYTHONPATH=path)


@pytest.mark.parametrize("args", [
    ["--config", "cartpole.py", "--config.total_env_steps=1500"],
    # Continuous actions: each device draws its own prior samples.
    ["--config", "pendulum.py", "--config.total_env_steps=1500",
     "--config.hidden_size=32", "--config.head_size=32",
     "--config.action_samples=4", "--config.eval_interval=0"],
])
def test_whole_run_on_two_devices_compiles_once(tmp_path, args):
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "train.py"), *args,
       f"--config.logdir={tmp_path}"],
      env=two_device_env(), cwd=tmp_path, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  (summary_path,) = tmp_path.glob("*/summary.json")
  summary = json.loads(summary_path.read_text())
  assert summary["devices"] == 2
  assert summary["updates"] > 10
  assert summary["update_compilations"] == 1
  assert summary["replicas_identical"] is True


def test_benchmark_counts_compilations_on_two_devices(tmp_path):
  out = tmp_path / "bench.json"
  proc = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"),
       "--config", "cartpole.py", "--out", str(out), "--reps", "1",
       "--seconds", "0.3", "--config.batch_size=4",
       "--config.sequence_length=4"],
      env=two_device_env(), cwd=tmp_path, capture_output=True, text=True,
      timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  figure = json.loads(out.read_text())["figures"]["update compilations"]
  assert figure["values"] == [1]
  assert "on 2 device(s)" in figure["note"]


def test_replica_check_sees_a_difference():
  """`replicas_identical` is the check above: it must be able to fail."""
  config = load_config_file("cartpole.py")
  networks = nets.make_networks(
      NetworkHparams(num_bins=config.num_bins, hidden_size=8, num_blocks=1,
                     head_size=8), (4,), 2)
  state = learner.init_state(networks, LearnerHparams.from_config(config),
                             jax.random.PRNGKey(0))
  replicated = jax.tree.map(lambda x: np.stack([np.asarray(x)] * 2), state)
  assert placement.replicas_identical(replicated)
  leaf = jax.tree.leaves(replicated.params)[0]
  leaf[1].flat[0] += 1e-7
  assert not placement.replicas_identical(replicated)
