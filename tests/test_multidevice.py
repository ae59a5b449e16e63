"""Training over several devices: one compilation, replicas that stay equal.

Each test runs in a subprocess with two forced CPU devices (the flag must be
set before jax is imported).
"""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import run_script, script_env
from muesli_jax import learner, networks as nets, placement
from muesli_jax.config import load_config_file
from muesli_jax.hparams import LearnerHparams, NetworkHparams

# Small and short: a run is mostly starting jax and compiling the update;
# the first update comes at (8 + 7) x 8 = 120 env steps.
SHORT_RUN = ["--config.total_env_steps=400", "--config.num_envs=8",
             "--config.batch_size=8", "--config.sequence_length=4",
             "--config.unroll_steps=2", "--config.warmup_steps=8",
             "--config.hidden_size=16", "--config.head_size=16",
             "--config.eval_interval=0"]


@pytest.mark.parametrize("args", [
    ["--config", "cartpole.py", *SHORT_RUN],
    # Continuous actions: each device draws its own prior samples.
    ["--config", "pendulum.py", *SHORT_RUN, "--config.action_samples=4"],
])
def test_whole_run_on_two_devices_compiles_once(tmp_path, args):
  proc = run_script("train.py", *args, f"--config.logdir={tmp_path}",
                    cwd=tmp_path, env=script_env(devices=2))
  assert proc.returncode == 0, proc.stderr[-3000:]
  (summary_path,) = tmp_path.glob("*/summary.json")
  summary = json.loads(summary_path.read_text())
  assert summary["devices"] == 2
  assert summary["updates"] > 10
  assert summary["update_compilations"] == 1
  assert summary["replicas_identical"] is True


def test_benchmark_counts_compilations_on_two_devices(tmp_path):
  out = tmp_path / "bench.json"
  # The loops are training.train runs, whose compilations on two devices
  # the test above counts. The config of its CartPole run: the update it
  # compiled is loaded from the compilation cache.
  proc = run_script("benchmark.py", "--config", "cartpole.py", "--out", out,
                    "--reps", "1", "--seconds", "0.3", "--no-loops",
                    *SHORT_RUN, cwd=tmp_path, env=script_env(devices=2))
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


FIRST_REPLICA = """
import jax, numpy as np
from muesli_jax import placement
tree = {"a": np.arange(6.).reshape(2, 3), "b": [np.array([[1], [2]])]}
replicated = jax.pmap(lambda t: jax.tree.map(lambda x: x * 10, t))(tree)
first = placement.first_replica(replicated, True)
assert first["a"].tolist() == [0., 10., 20.] and first["b"][0].tolist() == [10]
assert {d for x in jax.tree.leaves(first) for d in x.devices()} == {jax.devices()[0]}
assert placement.first_replica(tree, False) is tree
print("ok")
"""


def test_first_replica_is_the_first_device_s(tmp_path):
  proc = subprocess.run([sys.executable, "-c", FIRST_REPLICA], cwd=tmp_path,
                        env=script_env(devices=2), capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]
