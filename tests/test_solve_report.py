"""scripts/solve_report.py: per-run rows, medians with unsolved runs as
never, the pooled evaluation, and one-line errors."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec = importlib.util.spec_from_file_location(
    "solve_report", os.path.join(ROOT, "scripts", "solve_report.py"))
solve_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(solve_report)


def make_run(folder, seed, solved_at=None, seconds=None, startup=6.0,
             returns=None, resumed=()):
  folder.mkdir()
  (folder / "config.json").write_text(json.dumps(dict(
      total_env_steps=300_000, solve_return=200.0, seed=seed)))
  (folder / "summary.json").write_text(json.dumps(dict(
      seed=seed, solved_at_steps=solved_at, solved_at_seconds=seconds,
      startup_seconds=startup, mean_return_last_100=210.0 + seed,
      env_steps=300_000, resumed_at=list(resumed))))
  if returns is not None:
    (folder / "evaluation.json").write_text(json.dumps(dict(
        greedy=True, returns=returns)))
  return str(folder)


def test_rows_medians_and_pooled_evaluation(tmp_path, capsys):
  runs = [make_run(tmp_path / "a", 1, 40_000, 114.0, returns=[250.0, 270.0]),
          make_run(tmp_path / "b", 0, 60_000, 174.0, returns=[100.0]),
          make_run(tmp_path / "c", 2)]  # never solved, not evaluated
  out, js = tmp_path / "t.md", tmp_path / "r.json"
  assert solve_report.main([*runs, "--out", str(out), "--json", str(js)]) == 0
  rep = json.loads(js.read_text())
  assert [r["seed"] for r in rep["runs"]] == [0, 1, 2]
  assert (rep["solved"], rep["of"]) == (2, 3)
  # Median of 40k, 60k and never; minutes count the start-up.
  assert rep["median_steps"] == 60_000
  assert rep["median_minutes"] == pytest.approx((6.0 + 174.0) / 60)
  assert rep["runs"][1]["solved_at_minutes"] == pytest.approx(2.0)
  # Pooled over episodes (3), not the mean of run means.
  assert rep["eval_mean"] == pytest.approx(620 / 3)
  assert (rep["eval_runs"], rep["eval_episodes"]) == (2, 3)
  lo, hi = rep["eval_mean_ci"]
  assert 100.0 <= lo <= 620 / 3 <= hi <= 260.0
  table = out.read_text()
  assert "| 2 | not within 300,000 | – | 212.0 | – |" in table
  assert "**2 of 3**" in table and "**60,000**" in table
  assert table == capsys.readouterr().out


def test_median_is_never_when_half_did_not_solve(tmp_path):
  runs = [make_run(tmp_path / "a", 0, 50_000, 100.0), make_run(tmp_path / "b", 1)]
  rep = solve_report.report(runs)
  assert math.isinf(rep["median_steps"])
  assert solve_report.finite_or_none(rep)["median_steps"] is None
  assert "**never**" in solve_report.markdown(rep)


def test_bootstrap_interval_holds_the_statistic():
  values = np.arange(10.0)
  lo, hi = solve_report.bootstrap(values, np.median, reps=2000)
  assert lo < np.median(values) < hi


@pytest.mark.parametrize("problem", ["no_summary", "resumed"])
def test_errors_are_one_line(tmp_path, capsys, problem):
  if problem == "no_summary":
    (tmp_path / "x").mkdir()
    run = str(tmp_path / "x")
  else:
    run = make_run(tmp_path / "x", 0, 50_000, 100.0, resumed=[20_000])
  assert solve_report.main([run]) == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error:")


def test_another_evaluation_file(tmp_path):
  run = make_run(tmp_path / "a", 0, 50_000, 100.0, returns=[250.0])
  (tmp_path / "a" / "sampled.json").write_text(json.dumps(dict(
      greedy=False, returns=[100.0, 200.0])))
  rep = solve_report.report([run], "sampled.json")
  assert rep["eval_mean"] == 150.0 and not rep["eval_greedy"]
  assert "(sampled actions)" in solve_report.markdown(rep)
  assert solve_report.report([run])["eval_mean"] == 250.0


def test_sign_test_exact_values():
  assert solve_report.sign_test(8, 1) == pytest.approx(2 * (1 + 9) / 2 ** 9)
  assert solve_report.sign_test(3, 3) == 1.0
  assert solve_report.sign_test(0, 0) == 1.0
  assert solve_report.sign_test(0, 5) == solve_report.sign_test(5, 0) == 2 / 32


def test_against_pairs_runs_by_seed(tmp_path, capsys):
  a, b = tmp_path / "a", tmp_path / "b"
  a.mkdir()
  b.mkdir()
  these = [make_run(a / "s0", 0, 40_000, 100.0), make_run(a / "s1", 1, 90_000, 200.0),
           make_run(a / "s2", 2), make_run(a / "s3", 3, 50_000, 120.0),
           make_run(a / "s9", 9, 10_000, 30.0)]  # seed 9 has no pair
  against = [make_run(b / "s3", 3), make_run(b / "s2", 2),
             make_run(b / "s1", 1, 70_000, 150.0), make_run(b / "s0", 0, 60_000, 140.0)]
  js = tmp_path / "r.json"
  assert solve_report.main([*these, "--against", *against, "--json", str(js)]) == 0
  pair = json.loads(js.read_text())["paired"]
  assert pair["seeds"] == [0, 1, 2, 3]
  # Seed 0: +20k; seed 1: -20k; seed 2: both never, a tie; seed 3: +inf.
  assert (pair["first"], pair["later"], pair["tied"]) == (2, 1, 1)
  assert pair["sign_test_p"] == pytest.approx(1.0)
  assert pair["median_difference"] == pytest.approx(10_000)
  assert pair["against_median_steps"] is None  # 2 of 4 never solved
  out = capsys.readouterr().out
  assert "| 3 | 50,000 | never | +∞ |" in out
  assert "| 1 | 90,000 | 70,000 | -20,000 |" in out
  assert "| 0 | 40,000 | 60,000 | +20,000 |" in out
  assert "| 2 | never | never | 0 |" in out
  assert "**+10,000** [-20,000, +∞]" in out


def test_against_without_a_shared_seed_is_one_line(tmp_path, capsys):
  run = make_run(tmp_path / "a", 0, 50_000, 100.0)
  other = make_run(tmp_path / "b", 1, 50_000, 100.0)
  assert solve_report.main([run, "--against", other]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["error: --against shares no seed with the runs"]
