"""The benchmark script runs end to end and reports every figure it promises."""

import json

import numpy as np
import pytest

from conftest import load_script, run_script

SPEED_FIGURES = (
    "raw env steps/s", "actor env steps/s", "actor / raw",
    "learner updates/s (sampled)", "learner samples/s (sampled)",
    "learner updates/s (fixed batch)", "learner samples/s (fixed batch)",
    "learner GFLOP/s (fixed batch)", "matmul GFLOP/s (peak reference)",
    "learner / matmul peak", "policy step ms (idle device)",
    "policy step ms (update in flight)", "update compilations")
LOOP_FIGURES = (
    "sync loop env steps/s", "sync loop learner utilisation",
    "async loop env steps/s", "async loop learner utilisation",
    "minutes per 1M env steps (sync loop)", "async / sync loop")


def run_benchmark(tmp_path, *args):
  out = tmp_path / "bench.json"
  proc = run_script("benchmark.py", "--config", "cartpole.py", "--out", out,
                    "--config.batch_size=4", "--config.sequence_length=4",
                    "--config.hidden_size=16", "--config.head_size=16",
                    "--config.num_blocks=1",
                    *args, cwd=tmp_path)
  return proc, out


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
  """One run of every figure: speed, both loops, and two solve runs (a
  random CartPole policy averages ~22, so 15 is reached after the first 100
  episodes: two short runs that each stop early)."""
  proc, out = run_benchmark(tmp_path_factory.mktemp("bench"), "--reps", "2",
                            "--seconds", "0.3", "--solve", "15",
                            "--solve-seeds", "2", "--solve-budget", "20000")
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout, json.loads(out.read_text())


def test_speed_figures_are_measured_and_consistent(benchmark):
  stdout, results = benchmark
  figures = results["figures"]
  assert set(SPEED_FIGURES) <= set(figures), sorted(figures)
  reps = {"update compilations": 1, "policy step ms (idle device)": 5,
          "policy step ms (update in flight)": 5}  # max(--reps, 5)
  for name in SPEED_FIGURES:
    f = figures[name]
    assert len(f["values"]) == f["reps"] == reps.get(name, 2), name
    assert f["min"] > 0 and all(np.isfinite(f["values"])), name
  assert figures["update compilations"]["values"] == [1]
  for line in ("raw env steps/s", "learner / matmul peak", "async / sync loop"):
    assert line in stdout  # the printed table
  # No update runs faster than the machine's matmul peak.
  assert figures["learner / matmul peak"]["max"] < 1.0
  assert figures["checkpoint MiB on disk"]["min"] > 0
  # Both training loops ran end to end, alternating, in the same run; each
  # acts and updates, so neither steps the envs as fast as the actor alone.
  assert set(LOOP_FIGURES) <= set(figures), sorted(figures)
  for name in LOOP_FIGURES:
    assert figures[name]["reps"] == 2 and figures[name]["min"] > 0, name
  for mode in ("sync", "async"):
    assert (figures[f"{mode} loop env steps/s"]["median"] <
            figures["actor env steps/s"]["median"]), mode
    # The learner is busy at most all of the time it would be alone (with
    # slack: the figures are measured at different moments).
    assert figures[f"{mode} loop learner utilisation"]["max"] < 1.5
  np.testing.assert_allclose(
      figures["minutes per 1M env steps (sync loop)"]["values"],
      [1e6 / r / 60 for r in figures["sync loop env steps/s"]["values"]])


def test_bad_option_is_a_one_line_error(tmp_path):
  proc, _ = run_benchmark(tmp_path, "--reps", "0")
  assert proc.returncode == 2
  assert proc.stderr.strip().startswith("error:")
  assert "Traceback" not in proc.stderr


def test_baseline_is_measured_in_the_same_run_and_printed_beside(tmp_path):
  proc, out = run_benchmark(tmp_path, "--reps", "1", "--seconds", "0.2",
                            "--no-loops", "--baseline",
                            "batch_size=2,sequence_length=3")
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads(out.read_text())
  assert results["baseline_config"]["batch_size"] == 2
  assert results["baseline_config"]["sequence_length"] == 3
  assert results["config"]["batch_size"] == 4
  before = results["baseline_figures"]["learner samples/s (fixed batch)"]
  after = results["figures"]["learner samples/s (fixed batch)"]
  assert before["median"] > 0 and after["median"] > 0
  row = next(l for l in proc.stdout.splitlines()
             if l.startswith("learner samples/s (fixed batch)"))
  assert f"{after['median'] / before['median']:.2f}" in row.split()
  assert "config / baseline" in proc.stdout


@pytest.mark.parametrize("baseline", ["batch_size", "=3", "nokey=1"])
def test_bad_baseline_is_a_one_line_error(tmp_path, baseline):
  proc, _ = run_benchmark(tmp_path, "--no-loops", "--baseline", baseline)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().startswith("error:")
  assert len(proc.stderr.strip().splitlines()) == 1


def test_solve_median_counts_unsolved_runs_as_slowest():
  median = load_script("benchmark").solve_median
  assert median([5]) == 5
  assert median([3, 1]) == 2
  assert median([None, 1, 2]) == 2
  assert median([None, 1, None]) is None
  assert median([None, 4, 2, 1]) == 3
  assert median([None]) is None


def test_solve_runs_every_seed_and_stops_when_solved(benchmark):
  _, results = benchmark
  summaries = results["solve_summaries"]
  assert [s["seed"] for s in summaries] == [0, 1]
  for s in summaries:
    assert s["solved_at_steps"] is not None
    assert s["env_steps"] == s["solved_at_steps"] < 20000
    assert s["update_compilations"] == 1
  figures = results["figures"]
  assert figures["solved runs"]["values"] == [2]
  steps = sorted(s["solved_at_steps"] for s in summaries)
  assert figures["solved at env steps"]["median"] == sum(steps) / 2
  assert figures["solved at env steps"]["min"] == steps[0]


def test_layouts_run_each_in_its_own_process_side_by_side(tmp_path):
  """Two layouts on one core: XLA's default, and two CPU devices of one
  thread each (the update pmapped over them, the batch split)."""
  proc, out = run_benchmark(tmp_path, "--reps", "1", "--seconds", "0.2",
                            "--no-loops", "--layouts", "1c,1c2d1t")
  assert proc.returncode == 0, proc.stderr[-2000:]
  layouts = json.loads(out.read_text())["layouts"]
  assert list(layouts) == ["1c", "1c2d1t"]
  assert len(layouts["1c"]["devices_seen"]) == 1
  assert len(layouts["1c2d1t"]["devices_seen"]) == 2
  assert "--xla_cpu_multi_thread_eigen=false" in layouts["1c2d1t"]["xla_flags"]
  assert "multi_thread_eigen" not in layouts["1c"]["xla_flags"]
  for layout in layouts.values():
    figures = layout["figures"]
    assert figures["update compilations"]["values"] == [1]
    assert figures["learner updates/s (fixed batch)"]["median"] > 0
    assert "sync loop env steps/s" not in figures  # --no-loops
  ratio = (layouts["1c2d1t"]["figures"]["learner updates/s (fixed batch)"]
           ["median"] / layouts["1c"]["figures"]
           ["learner updates/s (fixed batch)"]["median"])
  # The side-by-side table comes last, after each process's own output.
  table = proc.stdout.split("1c2d1t / 1c")[-1]
  row = next(l for l in table.splitlines()
             if l.startswith("learner updates/s (fixed batch)"))
  assert f"{ratio:.2f}" in row.split()


@pytest.mark.parametrize("args, words", [
    (["--layouts", "2x1"], "--layouts takes items such as"),
    (["--layouts", "1c,1c"], "names a layout twice"),
    (["--layouts", "999c"], "asks for 999 cores"),
    (["--layouts", "1c3d", "--config.batch_size=4"], "divisible by the 3"),
    (["--layouts", "1c", "--solve", "10"], "does not combine"),
])
def test_bad_layouts_are_a_one_line_error(capsys, args, words):
  code = load_script("benchmark").main(["--config", "cartpole.py",
                                        "--no-loops", *args])
  stderr = capsys.readouterr().err
  assert code == 2, stderr
  assert stderr.startswith("error:") and words in stderr
  assert len(stderr.strip().splitlines()) == 1
