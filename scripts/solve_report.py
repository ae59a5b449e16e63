"""How fast a set of runs solved their env: one row per run, and the spread.

  python scripts/solve_report.py RUN_DIR [RUN_DIR ...] [--out table.md]
      [--json report.json] [--eval evaluation.json] [--against RUN_DIR ...]

Each RUN_DIR is a scripts/train.py run folder (its summary.json, and the
evaluation.json that `scripts/evaluate.py RUN_DIR --out
RUN_DIR/evaluation.json` writes, where there is one; `--eval NAME` reads
RUN_DIR/NAME instead, e.g. a second evaluation with sampled actions). Per run: the env steps
at which the mean of the last 100 training returns first reached the
config's `solve_return`, the minutes from the command's start to that point
(the run's start-up, i.e. imports, envs and networks, plus its training
seconds, compilation included), the final mean100 and the evaluation's mean.

Below the rows: how many runs solved; the median env steps and minutes to
solve, an unsolved run counting as never (so the median exists only while
more than half solved), with 95% percentile-bootstrap intervals over runs;
and the evaluation's mean over every episode of every run, its interval
resampling runs (episodes of one run are not independent draws).

`--against` pairs the runs by seed with a second set (e.g. the same config
under another setting): on how many seeds each solved first, an exact
two-sided sign test, and the median of the paired differences in env steps
to solve with its bootstrap interval over seeds. Bad arguments or a folder
without summary.json: one `error:` line, exit 2.
"""

import argparse
import json
import math
import os
import sys

import numpy as np

REPS = 10_000
SEED = 0


class ReportError(ValueError):
  pass


def load_run(run_dir: str, eval_name: str = "evaluation.json") -> dict:
  path = os.path.join(run_dir, "summary.json")
  if not os.path.isfile(path):
    raise ReportError(f"{run_dir} holds no summary.json (not a finished run)")
  with open(path) as f:
    summary = json.load(f)
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  seconds = summary.get("solved_at_seconds")
  startup = summary.get("startup_seconds")
  if seconds is not None and (startup is None or summary.get("resumed_at")):
    raise ReportError(f"{run_dir}: no start-up time of one uninterrupted "
                      "process (older or resumed run)")
  evaluation = None
  eval_path = os.path.join(run_dir, eval_name)
  if os.path.isfile(eval_path):
    with open(eval_path) as f:
      evaluation = json.load(f)
  return dict(
      run=os.path.basename(os.path.normpath(run_dir)), seed=summary["seed"],
      budget=config["total_env_steps"], solve_return=config["solve_return"],
      solved_at_steps=summary["solved_at_steps"],
      solved_at_minutes=(None if seconds is None else (startup + seconds) / 60),
      final_mean100=summary["mean_return_last_100"],
      env_steps=summary["env_steps"],
      eval_returns=None if evaluation is None else evaluation["returns"],
      eval_greedy=None if evaluation is None else evaluation["greedy"])


def bootstrap(values: np.ndarray, statistic, reps: int = REPS,
              seed: int = SEED) -> list:
  """95% percentile-bootstrap interval of `statistic` over axis 0."""
  rng = np.random.default_rng(seed)
  draws = np.array([statistic(values[rng.integers(0, len(values), len(values))])
                    for _ in range(reps)])
  # No interpolation between draws: some may be inf (never solved).
  return [float(x) for x in np.percentile(draws, [2.5, 97.5],
                                          method="inverted_cdf")]


def _steps(run: dict) -> float:
  return math.inf if run["solved_at_steps"] is None else float(run["solved_at_steps"])


def report(run_dirs: list, eval_name: str = "evaluation.json") -> dict:
  runs = sorted((load_run(d, eval_name) for d in run_dirs),
                key=lambda r: r["seed"])
  steps = np.array([_steps(r) for r in runs])
  minutes = np.array([math.inf if r["solved_at_minutes"] is None
                      else r["solved_at_minutes"] for r in runs], float)
  # Unsolved runs are +inf: a median is finite while more than half solved.
  out = dict(runs=runs, solved=int(np.isfinite(steps).sum()), of=len(runs),
             median_steps=float(np.median(steps)),
             median_minutes=float(np.median(minutes)))
  if len(runs) > 1:
    out["median_steps_ci"] = bootstrap(steps, np.median)
    out["median_minutes_ci"] = bootstrap(minutes, np.median)
  evaluated = [r for r in runs if r["eval_returns"] is not None]
  if evaluated:
    pooled = [x for r in evaluated for x in r["eval_returns"]]
    out.update(eval_runs=len(evaluated), eval_episodes=len(pooled),
               eval_mean=float(np.mean(pooled)),
               eval_greedy=all(r["eval_greedy"] for r in evaluated))
    if len(evaluated) > 1:
      per_run = np.array([(sum(r["eval_returns"]), len(r["eval_returns"]))
                          for r in evaluated], float)
      out["eval_mean_ci"] = bootstrap(per_run, lambda x: x[:, 0].sum() / x[:, 1].sum())
  return out


def sign_test(wins: int, losses: int) -> float:
  """Exact two-sided sign test: the chance of a split at least this uneven
  if either set were as likely to solve first on each seed."""
  n = wins + losses
  if n == 0:
    return 1.0
  tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2 ** n
  return min(1.0, 2 * tail)


def paired(runs: list, against: list) -> dict:
  """Runs and `against` runs paired by seed. A difference is the `against`
  run's env steps to solve minus this run's: positive where this one solved
  first (never solving counts as inf; two runs that both never solved tie)."""
  by_seed = {r["seed"]: r for r in against}
  pairs = [(r, by_seed[r["seed"]]) for r in runs if r["seed"] in by_seed]
  if not pairs:
    raise ReportError("--against shares no seed with the runs")
  a = np.array([_steps(r) for r, _ in pairs])
  b = np.array([_steps(r) for _, r in pairs])
  with np.errstate(invalid="ignore"):
    diff = np.where(a == b, 0.0, b - a)
  wins, losses = int((diff > 0).sum()), int((diff < 0).sum())
  out = dict(seeds=[r["seed"] for r, _ in pairs], steps=a.tolist(),
             against_steps=b.tolist(), first=wins, later=losses,
             tied=len(pairs) - wins - losses, sign_test_p=sign_test(wins, losses),
             median_steps=float(np.median(a)),
             against_median_steps=float(np.median(b)),
             median_difference=float(np.median(diff)))
  if len(pairs) > 1:
    out["median_difference_ci"] = bootstrap(diff, np.median)
  return out


def _difference(x: float) -> str:
  """A paired difference; ±∞ where only one of the two runs solved."""
  if math.isinf(x):
    return "+∞" if x > 0 else "−∞"
  return f"{x:+,.0f}" if x else "0"


def paired_markdown(pair: dict) -> str:
  lines = ["", f"Paired by seed with the `--against` runs ({len(pair['seeds'])} "
           "seeds):", "",
           "| seed | env steps to solve | against | against − these |",
           "|---:|---:|---:|---:|"]
  for seed, a, b in zip(pair["seeds"], pair["steps"], pair["against_steps"]):
    lines.append(f"| {seed} | {_number(a)} | {_number(b)} | "
                 f"{_difference(0.0 if a == b else b - a)} |")
  lines += ["",
            f"- These solved first on **{pair['first']}** seeds, later on "
            f"{pair['later']}, tied on {pair['tied']}; exact two-sided sign "
            f"test p = {pair['sign_test_p']:.3f}",
            f"- Median env steps to solve: {_number(pair['median_steps'])} "
            f"against {_number(pair['against_median_steps'])}; median of the "
            f"paired differences **{_difference(pair['median_difference'])}**"
            + ("" if "median_difference_ci" not in pair else
               " [{}, {}]".format(*map(_difference, pair["median_difference_ci"]))),
            ""]
  return "\n".join(lines)


def finite_or_none(x):
  """`x` with every inf (a median never reached) as None: strict JSON."""
  if isinstance(x, float):
    return x if math.isfinite(x) else None
  if isinstance(x, dict):
    return {k: finite_or_none(v) for k, v in x.items()}
  if isinstance(x, list):
    return [finite_or_none(v) for v in x]
  return x


def _number(x: float, digits: int = 0) -> str:
  return "never" if not math.isfinite(x) else f"{x:,.{digits}f}"


def _ci(interval, digits: int = 0) -> str:
  return ("" if interval is None else
          f" [{_number(interval[0], digits)}, {_number(interval[1], digits)}]")


def markdown(rep: dict) -> str:
  runs = rep["runs"]
  lines = ["| seed | solved at (env steps) | minutes to solve (from the command) "
           "| final mean100 | evaluation (mean of episodes) |",
           "|---:|---:|---:|---:|---:|"]
  for r in runs:
    steps = ("not within " + f"{r['env_steps']:,}" if r["solved_at_steps"] is None
             else f"{r['solved_at_steps']:,}")
    minutes = ("–" if r["solved_at_minutes"] is None
               else f"{r['solved_at_minutes']:.2f}")
    evaluation = ("–" if r["eval_returns"] is None else
                  f"{np.mean(r['eval_returns']):.1f} ({len(r['eval_returns'])})")
    lines.append(f"| {r['seed']} | {steps} | {minutes} | "
                 f"{r['final_mean100']:.1f} | {evaluation} |")
  lines.append("")
  lines.append(f"- Solved (mean100 ≥ {runs[0]['solve_return']:g}): "
               f"**{rep['solved']} of {rep['of']}**")
  lines.append(f"- Median env steps to solve: **{_number(rep['median_steps'])}**"
               f"{_ci(rep.get('median_steps_ci'))}")
  lines.append(f"- Median minutes to solve, from the command: "
               f"**{_number(rep['median_minutes'], 2)}**"
               f"{_ci(rep.get('median_minutes_ci'), 2)}")
  if "eval_mean" in rep:
    kind = "greedy" if rep["eval_greedy"] else "sampled"
    lines.append(f"- Evaluation of the final checkpoints ({kind} actions), "
                 f"pooled over {rep['eval_episodes']} episodes of "
                 f"{rep['eval_runs']} runs: **{rep['eval_mean']:.1f}**"
                 f"{_ci(rep.get('eval_mean_ci'), 1)}")
  lines.append("")
  lines.append("Intervals: 95% percentile bootstrap over runs; an unsolved "
               "run counts as never solving.")
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
  parser.add_argument("--out", help="write the markdown table here")
  parser.add_argument("--json", help="write the figures as JSON here")
  parser.add_argument("--eval", default="evaluation.json", metavar="NAME",
                      help="each run's evaluation file (default evaluation.json)")
  parser.add_argument("--against", nargs="+", metavar="RUN_DIR",
                      help="a second set of runs, compared seed by seed")
  args = parser.parse_args(argv)
  try:
    rep = report(args.run_dirs, args.eval)
    if args.against:
      rep["paired"] = paired(rep["runs"], report(args.against, args.eval)["runs"])
  except (ReportError, OSError, KeyError, json.JSONDecodeError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  text = markdown(rep)
  if "paired" in rep:
    text += paired_markdown(rep["paired"])
  print(text, end="")
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(finite_or_none(rep), f, indent=1)
  return 0


if __name__ == "__main__":
  sys.exit(main())
