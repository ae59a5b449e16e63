"""`scripts/minatar_suite.py`: a suite stopped by Ctrl-C continues where it
stopped (finished runs skipped, the stopped one resumed, the rest started);
bad arguments stop with one error line; each run's state is read from its
folder."""

import glob
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import finish, load_script, script_command, script_env

suite = load_script("minatar_suite")

# A run of a few seconds, most of it starting Python and compiling the
# update (once a game: the compilation cache serves the other seed and the
# resume). Env steps go 4 at a time; the first update comes at 28 and the
# first checkpoint at 32.
TINY = dict(total_env_steps=80, num_envs=2, torso="mlp", hidden_size=16,
            head_size=16, num_blocks=1, unroll_steps=1, num_bins=11,
            batch_size=4, sequence_length=4, warmup_steps=8,
            replay_capacity=200, log_interval=5, eval_interval=0,
            checkpoint_interval=32)
TIMEOUT = 600  # generous: the machine may be shared


def suite_args(out, *extra):
  return ["--games", "Breakout,SpaceInvaders", "--seeds", "0-1", "--out", out,
          *extra, *(f"--config.{k}={v}" for k, v in TINY.items())]


def children(pid: int):
  """The processes whose parent is `pid`."""
  found = []
  for stat in glob.glob("/proc/[0-9]*/stat"):
    try:
      with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:  # ended meanwhile
      continue
    if int(fields[1]) == pid:
      found.append(int(stat.split("/")[2]))
  return found


def wait_until(condition, proc, what: str):
  deadline = time.time() + TIMEOUT
  while not condition():
    assert proc.poll() is None, f"the suite ended before {what}"
    assert time.time() < deadline, f"no {what} within {TIMEOUT} s"
    time.sleep(0.05)


def summary(run_dir):
  with open(os.path.join(run_dir, "summary.json")) as f:
    return json.load(f)


def test_a_stopped_suite_skips_resumes_and_starts_the_right_runs(tmp_path):
  out = str(tmp_path / "minatar")
  first, second = (os.path.join(out, name) for name in
                   ("muesli_breakout_s0", "muesli_spaceinvaders_s0"))
  log = tmp_path / "suite.log"
  with open(log, "w") as f:
    proc = subprocess.Popen(script_command("minatar_suite.py",
                                           *suite_args(out)),
                            env=script_env(), stdout=f,
                            stderr=subprocess.STDOUT)
  child = None
  try:
    # The first run has finished and the second has a checkpoint: pause
    # the second there, so that however fast it runs, the Ctrl-C reaches it
    # before its end.
    wait_until(lambda: suite.newest_checkpoint(second) is not None, proc,
               "checkpoint of the second run")
    (child,) = children(proc.pid)
    os.kill(child, signal.SIGSTOP)
    proc.send_signal(signal.SIGINT)
    # Said once the suite has passed the signal on (pending in the child).
    wait_until(lambda: "stopping:" in log.read_text(), proc,
               "stopping line")
    os.kill(child, signal.SIGCONT)
    assert finish(proc, TIMEOUT) == 130, log.read_text()
  finally:
    if proc.poll() is None:  # failed above: end both, not leave it paused
      if child is not None:  # not reaped while the suite lives: still its
        os.kill(child, signal.SIGKILL)
      proc.kill()
      proc.wait()
  output = log.read_text()
  assert "done   muesli_breakout_s0" in output, output
  assert "stopped muesli_spaceinvaders_s0: resumable from env step" in output
  assert summary(second)["interrupted"]
  stopped_at = suite.newest_checkpoint(second)
  assert sorted(os.listdir(out)) == [".gitignore", ".suite.lock",
                                     "muesli_breakout_s0",
                                     "muesli_spaceinvaders_s0"]
  kept = os.stat(os.path.join(first, "summary.json")).st_mtime_ns
  dry = subprocess.run(script_command("minatar_suite.py",
                                      *suite_args(out, "--dry-run")),
                       env=script_env(), capture_output=True, text=True,
                       timeout=TIMEOUT)
  assert dry.returncode == 0, dry.stderr
  assert [line.split(" ")[:2] for line in dry.stdout.splitlines()
          if not line.startswith(" ")] == [
              ["muesli_breakout_s0:", "done"],
              ["muesli_spaceinvaders_s0:", "resume"],
              ["muesli_breakout_s1:", "new"],
              ["muesli_spaceinvaders_s1:", "new"]]
  again = subprocess.run(script_command("minatar_suite.py", *suite_args(out)),
                         env=script_env(), capture_output=True, text=True,
                         timeout=TIMEOUT)
  assert again.returncode == 0, again.stdout + again.stderr
  assert "skip   muesli_breakout_s0: done (mean return" in again.stdout
  assert (f"start  muesli_spaceinvaders_s0: resume from env step "
          f"{stopped_at}") in again.stdout
  assert "4 of 4 runs done" in again.stdout
  # Not run again: its summary is the one it wrote.
  assert os.stat(os.path.join(first, "summary.json")).st_mtime_ns == kept
  resumed = summary(second)
  assert resumed["resumed_at"] == [stopped_at]
  assert not resumed["interrupted"]
  with open(os.path.join(second, "train.log")) as f:
    assert f"resumed at env step {stopped_at}" in f.read()
  for name in ("muesli_breakout_s0", "muesli_spaceinvaders_s0",
               "muesli_breakout_s1", "muesli_spaceinvaders_s1"):
    done = summary(os.path.join(out, name))
    assert done["env_steps"] >= TINY["total_env_steps"], name
    assert not done["interrupted"], name
    assert f"done   {name}" in output + again.stdout
    assert {"config.json", "episodes.csv", "summary.json"} <= set(
        os.listdir(os.path.join(out, name)))


@pytest.mark.parametrize("args, words", [
    (["--games", "Breakout,Pong"], "unknown game 'Pong' in --games (MinAtar's "
     "games: Asterix, Breakout, Freeway, Seaquest, SpaceInvaders"),
    (["--seeds", "a-b"], "--seeds: cannot read 'a-b'"),
    (["--seeds", "3-1"], "the range '3-1' runs backwards"),
    (["--seeds", ""], "--seeds: cannot read ''"),
    (["--seeds", "0,x"], "cannot read 'x' in '0,x'"),
    (["--jobs", "0"], "--jobs must be at least 1"),
    (["--jobs", "two"], "invalid int value"),
    (["--config.seed=3"], "set by the suite for each run; use --seeds"),
    (["--config.no_such_key=1"], "unknown config key 'no_such_key'"),
    (["--frames"], "unexpected argument '--frames'"),
])
def test_bad_arguments_are_one_error_line(tmp_path, capsys, args, words):
  assert suite.main([*args, "--out", str(tmp_path / "out")]) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
  assert words in captured.err
  assert not (tmp_path / "out").exists()


def test_bad_arguments_exit_2_without_a_traceback():
  proc = subprocess.run(script_command("minatar_suite.py", "--games", "Pong",
                                       "--dry-run"),
                        env=script_env(), capture_output=True, text=True,
                        timeout=TIMEOUT)
  assert proc.returncode == 2
  assert proc.stderr.startswith("error: unknown game 'Pong'")
  assert proc.stderr.count("\n") == 1 and proc.stdout == ""


def test_games_and_seeds_are_read_in_order_each_once():
  assert suite.parse_games("all") == list(suite.MINATAR_GAMES)
  assert suite.parse_games("spaceinvaders,Breakout,breakout") == [
      "SpaceInvaders", "Breakout"]
  assert suite.parse_seeds("0-4") == [0, 1, 2, 3, 4]
  assert suite.parse_seeds("2, 0,1-3") == [2, 0, 1, 3]


def _write(path, text=""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.write(text)


def test_the_state_of_a_run_comes_from_its_folder(tmp_path):
  config = suite.check_overrides([("total_env_steps", "1000")])
  run = suite.Run("Breakout", 0, str(tmp_path))
  assert run.run_dir == str(tmp_path / "muesli_breakout_s0")
  state = lambda: suite.run_state(run, config)  # noqa: E731
  assert state() == suite.NEW
  # Killed before its first checkpoint: only orbax's temporary folder.
  _write(os.path.join(run.run_dir, "config.json"), "{}")
  os.makedirs(os.path.join(run.run_dir, "checkpoints",
                           "400.orbax-checkpoint-tmp-1"))
  assert state() == suite.NEW
  os.makedirs(os.path.join(run.run_dir, "checkpoints", "400"))
  assert state() == suite.RESUME
  assert suite.newest_checkpoint(run.run_dir) == 400
  done = dict(interrupted=False, env_steps=1000, solved_at_steps=None)
  _write(os.path.join(run.run_dir, "summary.json"),
         json.dumps({**done, "interrupted": True}))
  assert state() == suite.RESUME
  _write(os.path.join(run.run_dir, "summary.json"), json.dumps(done))
  assert state() == suite.DONE
  # A larger budget continues a finished run from its checkpoint; without
  # one the suite leaves it to the user rather than overwrite it.
  longer = suite.check_overrides([("total_env_steps", "2000")])
  assert suite.run_state(run, longer) == suite.RESUME
  shutil.rmtree(os.path.join(run.run_dir, "checkpoints"))
  assert suite.run_state(run, longer) == suite.BLOCKED


def test_a_new_run_clears_an_attempt_without_checkpoint_but_its_log(tmp_path):
  run_dir = str(tmp_path / "run")
  for name in ("config.json", "episodes.csv", "train.log",
               "checkpoints/8.orbax-checkpoint-tmp-1/x"):
    _write(os.path.join(run_dir, name))
  assert suite.clear_attempt(run_dir)
  assert os.listdir(run_dir) == ["train.log"]
  assert not suite.clear_attempt(run_dir)


def test_commands_name_the_run_folder_or_resume_it(tmp_path):
  run = suite.Run("SpaceInvaders", 3, str(tmp_path))
  overrides = [("total_env_steps", "5000")]
  new = suite.train_command(run, suite.NEW, overrides)
  assert new[1:] == [suite.TRAIN, "--config", "minatar.py",
                     "--config.env_id=MinAtar/SpaceInvaders-v1",
                     "--config.seed=3", f"--config.logdir={tmp_path}",
                     "--run-name", "muesli_spaceinvaders_s3",
                     "--config.total_env_steps=5000"]
  assert suite.train_command(run, suite.RESUME, overrides)[1:] == [
      suite.TRAIN, "--resume", run.run_dir, "--config.total_env_steps=5000"]


def test_runs_are_pinned_only_with_a_core_each(monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5, 3, 9},
                      raising=False)
  monkeypatch.setattr(os, "sched_setaffinity", lambda pid, cores: None,
                      raising=False)
  assert suite.pinned_cores(1) == [3]
  assert suite.pinned_cores(3) == [3, 5, 9]
  assert suite.pinned_cores(4) is None
  monkeypatch.delattr(os, "sched_setaffinity")
  assert suite.pinned_cores(1) is None


def test_runs_get_one_xla_thread_unless_xla_flags_are_set(monkeypatch):
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert suite.child_env(1)["XLA_FLAGS"] == suite.ONE_THREAD
  monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
  assert suite.child_env(1)["XLA_FLAGS"] == "--xla_dump_to=/tmp/x"
