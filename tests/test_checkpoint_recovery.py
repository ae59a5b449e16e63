"""A resume past an unreadable checkpoint: it is moved aside, not tripped
over again when the run reaches its step."""

import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from muesli_jax import checkpoint, learner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--config.hidden_size=16", "--config.head_size=16",
         "--config.num_blocks=1", "--config.batch_size=8",
         "--config.sequence_length=4", "--config.eval_interval=0"]


def _env():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
  return env


def _train(*args):
  return subprocess.run([sys.executable, "scripts/train.py", *args], cwd=REPO,
                        env=_env(), capture_output=True, text=True,
                        timeout=600)


def _empty_every_file(folder):
  """What a disk that lost a checkpoint's data leaves: its files, empty."""
  paths = [p for p in glob.glob(os.path.join(folder, "**", "*"),
                                recursive=True) if os.path.isfile(p)]
  assert paths, f"no files under {folder}"
  for path in paths:
    open(path, "wb").close()


def _steps_on_disk(run_dir):
  folder = os.path.join(run_dir, checkpoint.CHECKPOINT_DIR)
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def test_resume_moves_an_unreadable_checkpoint_aside_and_saves_its_step(
    tmp_path):
  logdir = tmp_path / "runs"
  first = _train("--config", "cartpole.py", "--config.total_env_steps=3000",
                 "--config.checkpoint_interval=500", *SMALL,
                 f"--config.logdir={logdir}")
  assert first.returncode == 0, first.stderr[-2000:]
  (run_dir,) = glob.glob(str(logdir / "*"))
  *_, previous, newest = _steps_on_disk(run_dir)
  assert newest == 3000
  _empty_every_file(os.path.join(run_dir, checkpoint.CHECKPOINT_DIR, "3000"))
  os.remove(os.path.join(run_dir, "summary.json"))

  resumed = _train("--resume", run_dir, "--config.total_env_steps=3500")

  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
  assert f"resumed at env step {previous} " in resumed.stdout, resumed.stdout
  aside = os.path.join(run_dir, checkpoint.UNREADABLE_DIR, "3000")
  assert os.path.isdir(aside), os.listdir(run_dir)
  moved_lines = [line for line in resumed.stdout.splitlines()
                 if checkpoint.UNREADABLE_DIR in line]
  assert len(moved_lines) == 1, resumed.stdout
  assert "3000" in moved_lines[0]
  # The emptied files went aside untouched; step 3,000 was written anew.
  assert all(os.path.getsize(p) == 0 for p in glob.glob(
      os.path.join(aside, "**", "*"), recursive=True) if os.path.isfile(p))
  with open(os.path.join(run_dir, "summary.json")) as f:
    summary = json.load(f)
  # 8 envs step together: the run ends at the first multiple of 8 >= 3,500.
  final = summary["env_steps"]
  assert 3500 <= final < 3508 and not summary["interrupted"]
  assert {3000, final} <= set(_steps_on_disk(run_dir))
  assert summary["checkpoint"].endswith(
      os.path.join(checkpoint.CHECKPOINT_DIR, str(final)))


def _small_state(step):
  return learner.TrainState(
      params={"w": np.arange(3, dtype=np.float32)},
      target_params={"w": np.zeros(3, np.float32)},
      opt_state=(), adv_norm=(np.float32(0), np.float32(0)),
      step=np.int32(step))


def _save(checkpoints, step):
  checkpoints.save(step, _small_state(step), loop={"at": step},
                   arrays={"x": np.full(4, step)})


def test_the_manager_no_longer_lists_a_checkpoint_moved_aside(tmp_path):
  checkpoints = checkpoint.Checkpoints(tmp_path, keep=5)
  for step in (100, 200, 300):
    _save(checkpoints, step)
  checkpoints.close()
  for step in (200, 300):
    _empty_every_file(tmp_path / checkpoint.CHECKPOINT_DIR / str(step))

  checkpoints = checkpoint.Checkpoints(tmp_path, keep=5)
  step, state, loop, *_ = checkpoints.restore(_small_state(0))
  assert (step, int(state.step), loop) == (100, 100, {"at": 100})
  assert checkpoints.steps() == [100] and checkpoints.latest_step() == 100
  assert sorted(os.listdir(tmp_path / checkpoint.UNREADABLE_DIR)) == [
      "200", "300"]
  _save(checkpoints, 200)  # the step that was unreadable, saved anew
  assert checkpoints.latest_step() == 200
  checkpoints.close()
  # A fresh manager (a later resume) sees the same.
  checkpoints = checkpoint.Checkpoints(tmp_path, keep=5)
  assert checkpoints.steps() == [100, 200]
  assert checkpoints.restore(_small_state(0))[0] == 200
  checkpoints.close()


def test_a_second_unreadable_copy_of_a_step_does_not_replace_the_first(
    tmp_path):
  checkpoints = checkpoint.Checkpoints(tmp_path, keep=5)
  _save(checkpoints, 100)
  checkpoints.close()
  for _ in range(2):
    checkpoints = checkpoint.Checkpoints(tmp_path, keep=5)
    _save(checkpoints, 200)
    checkpoints.close()
    _empty_every_file(tmp_path / checkpoint.CHECKPOINT_DIR / "200")
    checkpoints = checkpoint.Checkpoints(tmp_path, keep=5)
    assert checkpoints.restore(_small_state(0))[0] == 100
    checkpoints.close()
  assert len(os.listdir(tmp_path / checkpoint.UNREADABLE_DIR)) == 2


def test_evaluating_a_run_leaves_its_checkpoints_where_they_are(tmp_path):
  checkpoints = checkpoint.Checkpoints(tmp_path, keep=5)
  _save(checkpoints, 100)
  _save(checkpoints, 200)
  checkpoints.close()
  _empty_every_file(tmp_path / checkpoint.CHECKPOINT_DIR / "200")
  state = checkpoint.load_train_state(str(tmp_path), _small_state(0))
  assert int(state.step) == 100
  assert _steps_on_disk(tmp_path) == [100, 200]
  assert not os.path.exists(tmp_path / checkpoint.UNREADABLE_DIR)


def test_when_no_checkpoint_is_readable_none_is_moved(tmp_path):
  checkpoints = checkpoint.Checkpoints(tmp_path, keep=5)
  _save(checkpoints, 100)
  checkpoints.close()
  _empty_every_file(tmp_path / checkpoint.CHECKPOINT_DIR / "100")
  checkpoints = checkpoint.Checkpoints(tmp_path, keep=5)
  with pytest.raises(checkpoint.CheckpointError,
                     match="no readable checkpoint"):
    checkpoints.restore(_small_state(0))
  checkpoints.close()
  assert _steps_on_disk(tmp_path) == [100]
