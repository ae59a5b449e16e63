"""SIGTERM or Ctrl-C at any moment of `scripts/train.py` ends the run cleanly:
the newest checkpoint and summary.json are written, no traceback, exit 130.

Each test starts a small CartPole run, waits for a file that marks the
moment to hit (a step folder under `checkpoints/`), signals the process and
reads what it left. `checkpoint_interval` is chosen so that the loop saves
just before the moment: the step folder then appears a few milliseconds
before it starts. The moments hit last seconds (an evaluation of thousands
of episodes, the first compilation of the update), so a short settling
delay after the folder appears lands the signal inside them.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--config", "cartpole.py", "--config.hidden_size=32",
         "--config.head_size=32", "--config.eval_video=false",
         "--config.log_interval=100000"]
# 8 envs step together: every step count below is a multiple of 8.
# Before the first update (warm-up and one window: 86 vector steps): these
# runs never compile the update, so that they reach the evaluation fast.
EARLY_STEP = 400
# Evaluations long enough to be hit (several seconds here), short enough
# to end soon if a first signal lets them finish.
EVAL_EPISODES = 6000
# From the step folder to inside what follows it: milliseconds of work,
# plenty of margin on a loaded machine.
SETTLE_SECONDS = 0.5
TIMEOUT = 300  # generous: the machine may be shared


def _env(compilation_cache: bool = True):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if not compilation_cache:
    env["JAX_ENABLE_COMPILATION_CACHE"] = "false"
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
  return env


class _Run:
  """`scripts/train.py` in the background, its output in files."""

  def __init__(self, tmp_path, *args, compilation_cache: bool = True):
    self.logdir = tmp_path / "runs"
    self._stdout = open(tmp_path / "stdout.txt", "w+")
    self._stderr = open(tmp_path / "stderr.txt", "w+")
    self.proc = subprocess.Popen(
        [sys.executable, "scripts/train.py", *SMALL, *args,
         f"--config.logdir={self.logdir}"], cwd=REPO,
        env=_env(compilation_cache),
        stdout=self._stdout, stderr=self._stderr)

  def output(self):
    outputs = []
    for stream in (self._stdout, self._stderr):
      stream.flush()
      stream.seek(0)
      outputs.append(stream.read())
    return outputs

  def wait_for(self, pattern: str) -> str:
    """The first path matching `RUN_DIR/pattern`, once there."""
    deadline = time.time() + TIMEOUT
    while True:
      found = glob.glob(os.path.join(self.logdir, "*", pattern))
      if found:
        return found[0]
      returncode = self.proc.poll()
      assert returncode is None, (
          f"the run ended (exit {returncode}) before {pattern} appeared:\n"
          f"{self.output()[1][-3000:]}")
      assert time.time() < deadline, f"no {pattern} after {TIMEOUT} s"
      time.sleep(0.01)

  def signal(self, signum):
    assert self.proc.poll() is None, (
        "the run ended before the signal: what was to be hit was too short "
        f"(exit {self.proc.returncode})")
    self.proc.send_signal(signum)

  def finish(self):
    """`(exit code, stdout, stderr, run folder)` once the run has ended."""
    try:
      returncode = self.proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
      self.proc.kill()
      self.proc.wait()
      raise AssertionError(f"still running {TIMEOUT} s after the signal:\n"
                           f"{self.output()[1][-3000:]}") from None
    stdout, stderr = self.output()
    (run_dir,) = glob.glob(os.path.join(self.logdir, "*"))
    return returncode, stdout, stderr, run_dir

  def close(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
    self._stdout.close()
    self._stderr.close()


@pytest.fixture
def start(tmp_path):
  runs = []

  def start_run(*args, **kwargs):
    runs.append(_Run(tmp_path, *args, **kwargs))
    return runs[-1]

  yield start_run
  for run in runs:
    run.close()


def _steps_on_disk(run_dir):
  folder = os.path.join(run_dir, "checkpoints")
  if not os.path.isdir(folder):
    return []
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


def _assert_ended_cleanly(returncode, stderr, run_dir):
  """Exit 130 without a traceback and an interrupted summary; returns it."""
  assert "Traceback" not in stderr, stderr[-4000:]
  assert returncode == 130, stderr[-4000:]
  path = os.path.join(run_dir, "summary.json")
  assert os.path.isfile(path), os.listdir(run_dir)
  with open(path) as f:
    summary = json.load(f)
  assert summary["interrupted"] is True
  return summary


def _assert_newest_checkpoint_is_the_last_step(summary, run_dir):
  steps = _steps_on_disk(run_dir)
  assert steps and steps[-1] == summary["env_steps"], (steps, summary)
  assert summary["checkpoint"] == os.path.join(
      os.path.abspath(run_dir), "checkpoints", str(steps[-1]))
  # Nothing left half-written.
  assert not glob.glob(os.path.join(run_dir, "checkpoints", "*tmp*"))


# `final`: evaluated by the end of the run after the loop saved its last
# step; `periodic`: evaluated in the loop at EARLY_STEP, after a save one
# iteration before.
EVALUATIONS = {
    "final": ([f"--config.total_env_steps={EARLY_STEP}",
               f"--config.checkpoint_interval={EARLY_STEP}",
               "--config.eval_interval=1000000"], EARLY_STEP),
    "periodic": ([f"--config.total_env_steps={2 * EARLY_STEP}",
                  f"--config.checkpoint_interval={EARLY_STEP - 8}",
                  f"--config.eval_interval={EARLY_STEP}"], EARLY_STEP - 8),
}


@pytest.mark.parametrize("evaluation,signals", [
    ("final", [signal.SIGTERM]),
    ("periodic", [signal.SIGTERM]),
    # A second Ctrl-C, half a second after the first, may cut the
    # evaluation short, never the save.
    ("final", [signal.SIGINT, signal.SIGINT]),
])
def test_interrupted_during_an_evaluation(start, evaluation, signals):
  args, saved_before = EVALUATIONS[evaluation]
  run = start(*args, f"--config.eval_episodes={EVAL_EPISODES}")
  run.wait_for(os.path.join("checkpoints", str(saved_before)))
  time.sleep(SETTLE_SECONDS)
  for i, signum in enumerate(signals):
    if i:
      time.sleep(0.5)
      if run.proc.poll() is not None:
        break
    run.signal(signum)

  returncode, _, stderr, run_dir = run.finish()

  summary = _assert_ended_cleanly(returncode, stderr, run_dir)
  assert summary["env_steps"] == EARLY_STEP
  _assert_newest_checkpoint_is_the_last_step(summary, run_dir)


def test_sigterm_during_the_first_compilation_of_the_update(start):
  # With 8 warm-up steps the first batch is drawn at vector step 8 + 22
  # (one window): env step 240, in the iteration after the save at 232.
  # Compiled here, not loaded from the suite's compilation cache.
  run = start("--config.warmup_steps=8", "--config.total_env_steps=2000",
              "--config.checkpoint_interval=232", "--config.eval_interval=0",
              compilation_cache=False)
  run.wait_for(os.path.join("checkpoints", "232"))
  time.sleep(SETTLE_SECONDS)
  run.signal(signal.SIGTERM)

  returncode, _, stderr, run_dir = run.finish()

  summary = _assert_ended_cleanly(returncode, stderr, run_dir)
  assert 232 <= summary["env_steps"] < 2000
  _assert_newest_checkpoint_is_the_last_step(summary, run_dir)


def test_sigterm_as_soon_as_the_run_folder_is_written(start):
  """config.json is written while the run is still being set up."""
  run = start("--config.total_env_steps=2000", "--config.eval_interval=0")
  run.wait_for("config.json")
  run.signal(signal.SIGTERM)

  returncode, _, stderr, run_dir = run.finish()

  summary = _assert_ended_cleanly(returncode, stderr, run_dir)
  assert summary["env_steps"] < 2000
  if summary["checkpoint"] is not None:
    _assert_newest_checkpoint_is_the_last_step(summary, run_dir)


def test_sigterm_while_a_checkpoint_is_written(start):
  """The save being written completes; the run then stops at its step."""
  run = start(f"--config.total_env_steps={EARLY_STEP}",
              "--config.checkpoint_interval=8", "--config.eval_interval=0")
  # orbax writes a step into `<step>.orbax-checkpoint-tmp-<n>` first.
  writing = run.wait_for(os.path.join("checkpoints", "*tmp*"))
  run.signal(signal.SIGTERM)
  step = int(os.path.basename(writing).split(".")[0])

  returncode, _, stderr, run_dir = run.finish()

  summary = _assert_ended_cleanly(returncode, stderr, run_dir)
  assert step in _steps_on_disk(run_dir)
  _assert_newest_checkpoint_is_the_last_step(summary, run_dir)
