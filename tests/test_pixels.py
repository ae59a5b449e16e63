"""Image observations end to end: stacking, short training runs of every
pixel config (one compilation each), and evaluation of their checkpoints."""

import json
import os
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from conftest import (TINY_RUN, load_script, script_command, script_env,
                      tiny_config)
from muesli_jax import builder, envs, training
from muesli_jax.actor import Actor

evaluate_script = load_script("evaluate")

TINY = dict(TINY_RUN, conv_channels=(4,), conv_blocks=1, steps_per_update=1)


def test_replay_stacks_match_what_the_actor_saw():
  """Stacks rebuilt from single stored frames equal the actor's own stacks,
  across episode ends (MinAtar Breakout ends fast under a random policy)."""
  config = tiny_config("minatar.py",
                       **{**TINY, "stack": 3, "replay_capacity": 400})
  vec = envs.make_vector_env(config)
  spec = envs.env_spec(vec, config.env_id)
  replay = builder.make_replay(config, spec, verbose=False)
  networks = builder.build_networks(config, spec)
  params = networks.init(jax.random.PRNGKey(0))
  actor = Actor(vec, networks, replay, config.stack, seed=0)
  seen = []
  for _ in range(300):
    seen.append(actor.observation())
    actor.step(params, 1)
  assert len(actor.pop_episodes()) >= 4
  assert replay.observation.shape[2:] == (10, 10, 4)  # one frame stored
  assert seen[0].shape == (2, 10, 10, 12)
  times = np.arange(300)[None, :].repeat(2, 0)  # [E, 300]
  rebuilt = replay._stacked_observations(times, np.arange(2))
  np.testing.assert_array_equal(rebuilt, np.stack(seen, axis=1))
  vec.close()


@pytest.mark.parametrize("name,overrides", [
    ("minatar.py", dict(stack=2)),
    ("minigrid.py", {}),
    # An Atari game lasts thousands of steps: too long to play here.
    ("atari.py", dict(frame_size=42, eval_interval=0)),
    ("lunar_pixels.py", dict(async_envs=False, frame_size=32, frame_width=48)),
    ("lunar_pixels_cpu.py", dict(async_envs=False, frame_size=32,
                                 frame_width=48, conv_channels=(4, 4))),
])
def test_pixel_configs_train_and_evaluate(tmp_path, name, overrides):
  config = tiny_config(name, **{**TINY, **dict(
      total_env_steps=160, logdir=str(tmp_path), eval_episodes=2,
      **overrides)})
  summary = training.train(config, run_name="run", progress=False)
  assert summary["updates"] > 40
  assert summary["update_compilations"] == 1
  run_dir = tmp_path / "run"
  assert os.path.isdir(run_dir / "checkpoints" / "160")
  if not config.eval_interval:
    return
  # The training's closing evaluation, replayed from the checkpoint by
  # scripts/evaluate.py with the same seed: the same episodes exactly.
  (closing,) = summary["evaluations"]
  result, _ = evaluate_script.evaluate(
      str(run_dir), episodes=2, greedy=config.eval_greedy,
      seed=config.seed + 10_000, num_envs=2)
  assert float(np.mean(result.returns)) == closing["return_mean"]
  assert float(np.std(result.returns)) == closing["return_std"]
  assert float(np.mean(result.lengths)) == closing["length_mean"]
  assert np.all(result.lengths >= 1)
  if name == "minatar.py":  # Breakout pays 1 a brick
    np.testing.assert_array_equal(result.returns, np.round(result.returns))
    assert np.all(result.returns >= 0)
  if name == "minigrid.py":  # 1 - 0.9 steps / max_steps at the goal, else 0
    assert np.all((result.returns >= 0) & (result.returns < 1))


def test_ctrl_c_with_env_subprocesses_still_saves(tmp_path):
  """Ctrl-C reaches the whole process group, env workers included; the run
  still closes them and writes its checkpoint and summary (exit 130)."""
  args = ["--config", "lunar_pixels.py", f"--config.logdir={tmp_path}"]
  args += [f"--config.{k}={v}" for k, v in TINY.items()
           if k not in ("conv_channels",)]
  args += ["--config.conv_channels=(4,)", "--config.num_envs=2",
           "--config.frame_size=32", "--config.frame_width=48",
           "--config.async_envs=true", "--config.total_env_steps=1000000"]
  proc = subprocess.Popen(script_command("train.py", *args), cwd=tmp_path,
                          env=script_env(), start_new_session=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
  try:
    # Into the training loop, compiled and updating: episode rows reach
    # episodes.csv at the log steps, which follow updates.
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not any(
        len(path.read_text().splitlines()) > 1
        for path in tmp_path.glob("*/episodes.csv")):
      time.sleep(0.5)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=300)
  finally:  # Never leave the run or its env workers behind.
    try:
      os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass
  assert proc.returncode == 130, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  (summary_path,) = tmp_path.glob("*/summary.json")
  summary = json.loads(summary_path.read_text())
  assert summary["interrupted"] and summary["env_steps"] > 0
  assert os.path.isdir(summary["checkpoint"])
