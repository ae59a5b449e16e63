"""Checkpoints that survive `kill -9`, and an exact resume from them."""

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from conftest import finish, run_script, script_env, start_script
from configs import cartpole
from muesli_jax import builder, checkpoint, envs as envs_lib, learner
from muesli_jax import run_record, training
from muesli_jax.hparams import LearnerHparams

RUN_ARGS = ["--config", "cartpole.py", "--config.total_env_steps=6000",
            "--config.checkpoint_interval=800", "--config.eval_interval=0",
            # Logs never flushed by a log step: the rows up to a checkpoint
            # must reach the disk with it.
            "--config.log_interval=100000", "--config.hidden_size=32",
            "--config.head_size=32"]


def _train(*args):
  return run_script("train.py", *args, env=script_env())


def _run_dir(logdir):
  (run_dir,) = glob.glob(os.path.join(logdir, "*"))
  return run_dir


def _final_state(run_dir):
  config = cartpole.get_config()
  config.hidden_size = config.head_size = 32
  envs = envs_lib.make_vector_env(config, num_envs=1)
  networks = builder.build_networks(config, envs_lib.env_spec(envs))
  envs.close()
  like = learner.init_state(networks, LearnerHparams.from_config(config),
                            jax.random.PRNGKey(0))
  return checkpoint.load_train_state(run_dir, like)


def _returns(run_dir):
  with open(os.path.join(run_dir, "episodes.csv")) as f:
    rows = [line.split(",") for line in f.readlines()[1:]]
  return [(int(r[0]), r[2], int(r[3])) for r in rows]  # not the seconds


@pytest.mark.parametrize("async_acting", [False, True])
def test_kill_9_at_a_random_update_then_resume_is_bit_identical(tmp_path,
                                                                async_acting):
  run_args = RUN_ARGS + [f"--config.async_acting={async_acting}"]
  env = script_env()
  logdir = tmp_path / "b"
  proc = start_script("train.py", *run_args, f"--config.logdir={logdir}",
                      env=env, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
  uninterrupted = None
  try:
    deadline = time.time() + 300
    while not glob.glob(str(logdir / "*" / "checkpoints" / "800")):
      assert proc.poll() is None and time.time() < deadline, "no checkpoint"
      time.sleep(0.05)
    # The uninterrupted run goes on beside the one that is killed and its
    # resume; started once the update has been
    # compiled, it loads it from the compilation cache, as the resume does.
    log = tmp_path / "uninterrupted.log"
    with open(log, "w") as out:
      uninterrupted = start_script("train.py", *run_args,
                                   f"--config.logdir={tmp_path / 'a'}",
                                   env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    time.sleep(random.Random(os.getpid()).uniform(0.0, 1.5))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    run_dir = _run_dir(logdir)
    assert not os.path.exists(os.path.join(run_dir, "summary.json"))
    killed_at = max(checkpoint.Checkpoints(run_dir).steps())
    assert killed_at < 6000, "the run ended before it was killed"

    resumed = _train("--resume", run_dir)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert finish(uninterrupted) == 0, log.read_text()[-2000:]
  finally:
    proc.kill()
    if uninterrupted is not None:
      uninterrupted.kill()
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  assert summary["resumed_at"] == [killed_at]
  assert summary["exact_resume"]
  expected = _final_state(_run_dir(tmp_path / "a"))
  got = _final_state(run_dir)
  for x, y in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # The envs went on exactly too: the same episodes, logged once each.
  assert _returns(run_dir) == _returns(_run_dir(tmp_path / "a"))


def _small_state(width=3):
  return learner.TrainState(
      params={"w": np.arange(width, dtype=np.float32)},
      target_params={"w": np.zeros(width, np.float32)},
      opt_state=(), adv_norm=(np.float32(0), np.float32(0)), step=np.int32(0))


def _save_steps(run_dir, steps):
  checkpoints = checkpoint.Checkpoints(run_dir, keep=5)
  for step in steps:
    state = _small_state()._replace(step=np.int32(step))
    checkpoints.save(step, state, loop={"at": step},
                     arrays={"x": np.full(4, step)})
  checkpoints.close()


def test_a_resume_drops_episode_rows_past_it_and_a_half_written_row(tmp_path):
  with open(tmp_path / "episodes.csv", "w") as f:
    f.write("env_steps,seconds,episode_return,length\n"
            "100,1.0,10.00,10\n200,2.0,20.00,20\n300,3.0,30.00,30\n"
            "250,3.1,4")  # what a kill in the middle of a write leaves
  config = cartpole.get_config()
  logger = run_record.Logger(str(tmp_path), config.total_env_steps, env_steps=200,
                             resumed=True, progress=False)
  logger.episode(208, 2.5, 8.0, 8)
  logger.close()
  assert _returns(tmp_path) == [(100, "10.00", 10), (200, "20.00", 20),
                                (208, "8.00", 8)]


def test_a_checkpoint_cut_while_writing_is_never_loaded(tmp_path):
  _save_steps(tmp_path, [100, 200])
  directory = tmp_path / checkpoint.CHECKPOINT_DIR
  # What a kill in the middle of writing step 300 leaves: orbax's
  # temporary folder, partly written.
  partial = directory / "300.orbax-checkpoint-tmp-1764000000"
  shutil.copytree(directory / "200", partial)
  for path in glob.glob(str(partial / "**" / "*"), recursive=True):
    if os.path.isfile(path):
      open(path, "wb").close()
  checkpoints = checkpoint.Checkpoints(tmp_path)
  assert checkpoints.steps() == [100, 200]
  step, state, loop, arrays, _ = checkpoints.restore(_small_state())
  assert (step, int(state.step), loop, list(arrays["x"])) == (
      200, 200, {"at": 200}, [200] * 4)


def test_an_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path,
                                                                   capsys):
  _save_steps(tmp_path, [100, 200])
  newest = tmp_path / checkpoint.CHECKPOINT_DIR / "200" / "state"
  for path in glob.glob(str(newest / "**" / "*"), recursive=True):
    if os.path.isfile(path) and "metadata" not in os.path.basename(path):
      with open(path, "r+b") as f:
        f.truncate(max(0, os.path.getsize(path) // 3))
  step, state, *_ = checkpoint.Checkpoints(tmp_path).restore(_small_state())
  assert (step, int(state.step)) == (100, 100)
  assert "skipped unreadable checkpoint" in capsys.readouterr().out


def test_a_checkpoint_of_another_network_is_refused(tmp_path):
  _save_steps(tmp_path, [100])
  with pytest.raises(checkpoint.CheckpointError, match=r"params/w is \(3,\)"):
    checkpoint.Checkpoints(tmp_path).restore(_small_state(width=4))


def _one_error_line(result):
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
  return lines[0]


@pytest.mark.parametrize("args, message", [
    (["--resume", "/nonexistent/run"], "not a run folder"),
    (["--config", "cartpole.py", "--config.logdir=/proc/x"],
     "cannot write the run folder"),
])
def test_bad_run_folders_stop_with_one_error_line(args, message):
  assert message in _one_error_line(_train(*args))


def test_resume_with_another_network_or_a_run_without_checkpoints(tmp_path):
  config = cartpole.get_config()
  config.update(total_env_steps=400, eval_interval=0, logdir=str(tmp_path))
  training.train(config, run_name="run", progress=False)
  run_dir = str(tmp_path / "run")
  line = _one_error_line(_train("--resume", run_dir,
                                "--config.hidden_size=16"))
  assert "does not match this config" in line
  shutil.rmtree(os.path.join(run_dir, checkpoint.CHECKPOINT_DIR))
  assert "no checkpoints/" in _one_error_line(_train("--resume", run_dir))


def test_resume_without_the_env_state_restarts_episodes(tmp_path):
  """Where the envs cannot be saved (Box2D, subprocesses), resume starts new
  episodes and the replay cuts the old ones like a truncation."""
  config = cartpole.get_config()
  # No learning-rate decay, whose length the update holds as a constant:
  # the longer resumed run loads the first one's update from the cache.
  config.update(total_env_steps=800, checkpoint_interval=400, eval_interval=0,
                checkpoint_envs=False, hidden_size=32, head_size=32,
                lr_decay=False, logdir=str(tmp_path))
  run_dir = str(tmp_path / "run")
  first = training.train(config, run_dir=run_dir, progress=False)
  assert first["exact_resume"]
  config.total_env_steps = 1200
  summary = training.train(config, run_dir=run_dir, resume=True,
                           progress=False)
  assert summary["resumed_at"] == [800]
  assert not summary["exact_resume"]
  assert summary["env_steps"] == 1200
  assert summary["updates"] > first["updates"]


@pytest.mark.parametrize("config_file, env_id, saved", [
    ("cartpole.py", "CartPole-v1", True),
    ("minatar.py", "MinAtar/Breakout-v1", True),
    ("minigrid.py", "MiniGrid-DoorKey-5x5-v0", True),
    # These pickle only how to build a new env (gymnasium's EzPickle).
    ("lunar.py", "LunarLander-v3", False),
    ("atari.py", "ALE/Pong-v5", False),
])
def test_env_snapshots_continue_exactly_or_are_not_taken(config_file, env_id,
                                                         saved):
  from muesli_jax.actor import restore_envs, snapshot_envs
  from muesli_jax.config import load_config_file
  config = load_config_file(config_file)
  config.update(env_id=env_id, num_envs=2)
  envs = envs_lib.make_vector_env(config)
  copy = envs_lib.make_vector_env(config)
  envs.reset(seed=3)
  copy.reset(seed=4)
  rng = np.random.default_rng(0)
  for _ in range(30):
    envs.step(rng.integers(0, envs.single_action_space.n, 2))
  snapshot = snapshot_envs(envs)
  assert (snapshot is not None) == saved
  if saved:
    restore_envs(copy, snapshot)
    for _ in range(200):  # across episode ends and autoresets
      actions = rng.integers(0, envs.single_action_space.n, 2)
      for a, b in zip(envs.step(actions), copy.step(actions)):
        if isinstance(a, dict):
          continue
        np.testing.assert_array_equal(a, b)
  envs.close()
  copy.close()
