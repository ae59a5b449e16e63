"""`scripts/run_scalars.py`: TensorBoard scalars read back, a resumed run's
purged steps dropped, a cut-off events file read up to the cut."""

import glob
import importlib.util
import os
import subprocess
import sys
import time

from tensorboardX import SummaryWriter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "run_scalars.py")


def import_script():
  spec = importlib.util.spec_from_file_location("run_scalars", SCRIPT)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def write(run_dir, points, purge_step=None):
  writer = SummaryWriter(str(run_dir), purge_step=purge_step)
  for step, value in points:
    writer.add_scalar("learner/entropy", value, step)
    writer.add_scalar("learner/kl_cmpo", value / 4, step)
  writer.close()
  time.sleep(1.1)  # events files are named by the second they were opened


def test_scalars_of_a_resumed_run(tmp_path):
  run_scalars = import_script()
  run = tmp_path / "run"
  # Logged up to 300 steps, killed, resumed from a checkpoint at 200: the
  # second writer purges 200 and 300 and logs anew from there.
  write(run, [(100, 1.0), (200, 0.8), (300, 0.6)])
  write(run, [(200, 0.5), (300, 0.25)], purge_step=200)
  scalars = run_scalars.read_scalars(str(run))
  assert scalars["learner/entropy"] == [(100, 1.0), (200, 0.5), (300, 0.25)]
  assert scalars["learner/kl_cmpo"][0] == (100, 0.25)
  assert run_scalars.window_mean(scalars["learner/entropy"], 300, 150) == 0.375
  assert run_scalars.window_mean(scalars["learner/entropy"], 50, 50) is None
  # A kill mid-write leaves a partial record: what precedes it is read.
  newest = sorted(glob.glob(str(run / "events.out.tfevents.*")))[-1]
  with open(newest, "ab") as f:
    f.write(b"\x40\x00\x00\x00\x00\x00\x00\x00abcd\x01\x02")
  assert run_scalars.read_scalars(str(run)) == scalars
  proc = subprocess.run(
      [sys.executable, SCRIPT, str(run), "--at", "100,300", "--window", "150"],
      capture_output=True, text=True, timeout=60)
  assert proc.returncode == 0, proc.stderr
  lines = proc.stdout.splitlines()
  assert lines[0] == ("| run | learner/entropy at 100 | learner/entropy at 300 | "
                      "learner/kl_cmpo at 100 | learner/kl_cmpo at 300 |")
  assert lines[2] == "| run | 1 | 0.375 | 0.25 | 0.0938 |"


def test_bad_arguments_are_one_error_line(tmp_path):
  run = tmp_path / "run"
  write(run, [(100, 1.0)])
  for args, words in (([str(tmp_path)], "holds no TensorBoard events"),
                      ([str(run), "--at", "ten"], "--at"),
                      ([str(run), "--window", "0"], "--window")):
    proc = subprocess.run([sys.executable, SCRIPT, *args], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and words in lines[0]
