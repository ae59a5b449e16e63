"""scripts/minatar_ablation.py on made-up arms whose numbers are known: each
arm's mean and interval, the difference between arms, the seeds below the
paper's DQN, the seed filter, and its bad-input errors."""

import contextlib
import io
import json
import types

import numpy as np
import pytest

from conftest import load_script
from test_minatar_report import write_run

ablation_script = load_script("minatar_ablation")
DEFAULT = [6.0, 12.0, 15.0]   # seed 0 ends below the paper's DQN (9.2)
CHANGED = [20.0, 22.0, 24.0]


def ablation(*args):
  stdout, stderr = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    code = ablation_script.main([str(arg) for arg in args])
  return types.SimpleNamespace(returncode=code, stdout=stdout.getvalue(),
                               stderr=stderr.getvalue())


@pytest.fixture
def arms(tmp_path):
  folders = []
  for name, finals in (("default", DEFAULT), ("changed", CHANGED)):
    root = tmp_path / name
    root.mkdir()
    for seed, final in enumerate(finals):
      write_run(root, "breakout", seed, final)
    # Not part of the comparison: another game, a seed filtered out.
    write_run(root, "spaceinvaders", 0, 500.0)
    write_run(root, "breakout", 5, 1000.0)
    folders.append(root)
  return folders


def test_two_arms_their_means_and_difference(arms, tmp_path):
  out = tmp_path / "out"
  result = ablation("--game", "Breakout", "--arm", "0.001", arms[0],
                    "--arm", "0.003", arms[1], "--seeds", "0-2",
                    "--out", out, "--reps", 500)
  assert result.returncode == 0, result.stderr
  for suffix in ("md", "json", "png"):
    assert (out / f"minatar_ablation_breakout.{suffix}").stat().st_size > 0
  summary = json.loads((out / "minatar_ablation_breakout.json").read_text())
  first, second = summary["arms"]
  assert first["seeds"] == second["seeds"] == [0, 1, 2]
  assert first["final_mean100"] == DEFAULT
  assert first["mean"] == pytest.approx(11.0)
  assert second["mean"] == pytest.approx(22.0)
  assert (first["below_dqn_1m"], second["below_dqn_1m"]) == (1, 0)
  assert "difference" not in first
  assert second["difference"] == pytest.approx(11.0)
  lower, upper = second["difference_ci"]
  # Resampled means lie between each arm's extremes.
  assert min(CHANGED) - max(DEFAULT) <= lower < 11.0 < upper
  assert upper <= max(CHANGED) - min(DEFAULT)
  for arm, finals in ((first, DEFAULT), (second, CHANGED)):
    assert min(finals) <= arm["ci"][0] < arm["mean"] < arm["ci"][1] <= max(finals)
  assert "| 0.003 | 3 | s0 20.0, s1 22.0, s2 24.0 | 22.0 [" in result.stdout
  assert "| 11.0 [" in result.stdout


def test_without_seeds_every_complete_run_of_the_game_counts(arms, tmp_path):
  result = ablation("--game", "breakout", "--arm", "a", arms[0], "--arm", "b",
                    arms[1], "--out", tmp_path, "--reps", 100)
  assert result.returncode == 0, result.stderr
  summary = json.loads((tmp_path / "minatar_ablation_breakout.json").read_text())
  assert [arm["seeds"] for arm in summary["arms"]] == [[0, 1, 2, 5]] * 2


def test_bootstrap_difference_needs_two_seeds_an_arm():
  assert ablation_script.bootstrap_difference([1.0], [1.0, 2.0], 100) is None
  interval = ablation_script.bootstrap_difference([3.0, 3.0], [1.0, 1.0], 100)
  assert interval == [2.0, 2.0]


@pytest.mark.parametrize("args, words", [
    (["--game", "Pong"], "unknown MinAtar game 'Pong'"),
    (["--game", "Breakout", "--seeds", "x"], "--seeds takes a list"),
    (["--game", "Breakout", "--seeds", "7"], "no run of Breakout"),
])
def test_bad_input_is_one_error_line(arms, tmp_path, args, words):
  result = ablation(*args, "--arm", "a", arms[0], "--arm", "b", arms[1],
                    "--out", tmp_path)
  assert result.returncode == 2
  assert result.stderr.count("\n") == 1 and words in result.stderr
  assert result.stderr.startswith("error: ")


def test_one_arm_is_refused(arms, tmp_path):
  result = ablation("--game", "Breakout", "--arm", "a", arms[0],
                    "--out", tmp_path)
  assert result.returncode == 2
  assert result.stderr == "error: an ablation needs two --arm LABEL DIR or more\n"
