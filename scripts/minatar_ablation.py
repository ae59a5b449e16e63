"""One MinAtar game under two or more settings: an ablation's table and curves.

`python scripts/minatar_ablation.py --game Breakout
    --arm "entropy_weight 0.001 (default)" docs/results/minatar
    --arm "entropy_weight 0.003" docs/results/minatar_ablation/entropy_0.003
    [--seeds 0-2] [--out docs] [--reps N]`

Each `--arm LABEL DIR` names a setting and the folder of its runs
(`muesli_<game>_s<seed>/`, as `scripts/minatar_suite.py` writes them; runs
the report would leave out, such as interrupted ones, are left out here
too). `--seeds` keeps those seeds only, in every arm. Per arm: the seeds,
each seed's mean100 at the end, their mean with its 95% bootstrap interval,
and how many seeds end below the MinAtar paper's DQN at 1M steps (a run that
stalls ends there); per arm after the first, the difference of its mean from
the first arm's, with a bootstrap interval that resamples each arm's seeds
on their own. Writes minatar_ablation_<game>.md (also printed), .json and
.png (each arm's mean100 curve with its band) into `--out`.
"""

import argparse
import json
import os
import sys

import numpy as np

# The report's readers, intervals and plotting. scripts/ goes on the path
# for this one import only: left there, its file names (train, sweep, ...)
# could shadow modules of a process that imports this script.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
  import minatar_report as report_lib  # noqa: E402
finally:
  sys.path.pop(0)
ReportError = report_lib.ReportError


def parse_seeds(text: str) -> list[int]:
  """"0-2" or "0,1,2" -> [0, 1, 2]."""
  seeds = []
  try:
    for part in text.split(","):
      first, _, last = part.strip().partition("-")
      seeds += range(int(first), int(last or first) + 1)
  except ValueError:
    raise ReportError(f"--seeds takes a list such as 0-2 or 0,1,2, got "
                      f"{text!r}") from None
  if not seeds:
    raise ReportError(f"--seeds {text!r} names no seed")
  return sorted(set(seeds))


def game_key(name: str) -> str:
  key = name.lower()
  if key not in report_lib.GAMES:
    raise ReportError(f"unknown MinAtar game {name!r}; the games are "
                      + ", ".join(report_lib.GAME_NAMES.values()))
  return key


def arm_runs(directory: str, game: str, seeds, echo) -> list:
  """The complete runs of `game` in `directory` (only `seeds` if given)."""
  runs = [run for run in report_lib.find_runs(directory) if run.game == game
          and (seeds is None or run.seed in seeds)]
  if not runs:
    raise ReportError(f"no run of {report_lib.GAME_NAMES[game]} in "
                      f"{directory}" + (f" with seeds {seeds}" if seeds else ""))
  runs, excluded, _ = report_lib.load_runs(runs)
  for run in excluded:
    echo(f"note: excluded {directory}/{run['run']}: {run['reason']}")
  return runs


def bootstrap_difference(values, baseline, reps: int,
                         seed: int = report_lib.BOOTSTRAP_SEED):
  """Percentile-bootstrap interval of `mean(values) - mean(baseline)`, each
  arm's seeds resampled on their own; None unless both have 2+ seeds."""
  values, baseline = np.asarray(values, float), np.asarray(baseline, float)
  if len(values) < 2 or len(baseline) < 2:
    return None
  rng = np.random.default_rng(seed)
  draw = lambda x: x[rng.integers(0, len(x), (reps, len(x)))].mean(1)
  differences = draw(values) - draw(baseline)
  tail = 100 * (1 - report_lib.CONFIDENCE) / 2
  return [float(x) for x in np.percentile(differences, [tail, 100 - tail])]


def compare(game: str, arms: list, seeds, reps: int, echo=print) -> dict:
  """The ablation's figures; `arms` is a list of `(label, directory)`."""
  dqn = report_lib.ANCHORS["minatar_dqn_1m"]["scores"][game]
  rows, runs_by_arm = [], []
  for label, directory in arms:
    runs = arm_runs(directory, game, seeds, echo)
    finals = np.array([run.final for run in runs])
    interval = report_lib.bootstrap_mean(finals, reps)
    rows.append({
        "label": label, "results_dir": directory,
        "seeds": [run.seed for run in runs],
        "final_mean100": finals.tolist(), "mean": float(finals.mean()),
        "ci": None if interval is None else [float(x) for x in interval],
        "below_dqn_1m": int((finals < dqn).sum()),
        "env_steps": min(int(run.summary["env_steps"]) for run in runs)})
    runs_by_arm.append(runs)
  for row in rows[1:]:
    row["difference"] = row["mean"] - rows[0]["mean"]
    row["difference_ci"] = bootstrap_difference(
        row["final_mean100"], rows[0]["final_mean100"], reps)
  return {"game": game, "dqn_1m": dqn, "reps": reps,
          "confidence": report_lib.CONFIDENCE, "arms": rows,
          "curves": [report_lib.game_curves(runs, [game], reps)[game]
                     for runs in runs_by_arm]}


def markdown(result: dict) -> str:
  name = report_lib.GAME_NAMES[result["game"]]
  budget = report_lib.steps_label(min(a["env_steps"] for a in result["arms"]))
  first = result["arms"][0]["label"]
  lines = [f"| {name}: setting | Seeds | mean100 at {budget} per seed | "
           f"Mean [{result['confidence']:.0%} CI] | Difference from "
           f"{first} [{result['confidence']:.0%} CI] | Seeds below DQN 1M "
           f"({result['dqn_1m']:g}) |", "|---|---|---|---|---|---:|"]
  for arm in result["arms"]:
    seeds = ", ".join(f"s{s} {v:.1f}" for s, v in
                      zip(arm["seeds"], arm["final_mean100"]))
    difference = ("–" if "difference" not in arm else
                  report_lib._interval(arm["difference"],
                                       arm["difference_ci"], 1))
    lines.append(f"| {arm['label']} | {len(arm['seeds'])} | {seeds} | "
                 f"{report_lib._interval(arm['mean'], arm['ci'], 1)} | "
                 f"{difference} | {arm['below_dqn_1m']} |")
  return "\n".join(lines) + "\n"


def plot(result: dict, path: str) -> None:
  plt = report_lib._pyplot()
  fig, ax = plt.subplots(figsize=(5.5, 3.4))
  for arm, curve, color in zip(result["arms"], result["curves"],
                               ("tab:blue", "tab:orange", "tab:green",
                                "tab:red", "tab:purple")):
    ax.plot(curve["steps"], curve["mean"], color=color,
            label=f"{arm['label']} ({len(arm['seeds'])} seeds)")
    if curve["band"] is not None:
      ax.fill_between(curve["steps"], *curve["band"], color=color, alpha=0.2,
                      linewidth=0)
  ax.axhline(result["dqn_1m"], color="tab:grey", linestyle="--", linewidth=1,
             label=report_lib.ANCHORS["minatar_dqn_1m"]["label"])
  ax.xaxis.set_major_formatter(
      lambda steps, _: report_lib.steps_label(int(steps)))
  ax.set_xlabel("env steps", fontsize=9)
  ax.set_ylabel("mean100 return", fontsize=9)
  ax.set_title(f"{report_lib.GAME_NAMES[result['game']]}: mean over seeds, "
               f"{result['confidence']:.0%} bootstrap band", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--game", required=True)
  parser.add_argument("--arm", nargs=2, action="append", required=True,
                      metavar=("LABEL", "DIR"))
  parser.add_argument("--seeds", default=None)
  parser.add_argument("--out", default="docs")
  parser.add_argument("--reps", type=int, default=report_lib.DEFAULT_REPS)
  args = parser.parse_args(argv)
  try:
    if len(args.arm) < 2:
      raise ReportError("an ablation needs two --arm LABEL DIR or more")
    if args.reps < 1:
      raise ReportError(f"--reps must be positive, got {args.reps}")
    game = game_key(args.game)
    seeds = None if args.seeds is None else parse_seeds(args.seeds)
    result = compare(game, [tuple(arm) for arm in args.arm], seeds,
                     args.reps)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"minatar_ablation_{game}")
    text = markdown(result)
    with open(stem + ".md", "w", encoding="utf-8") as f:
      f.write(text)
    with open(stem + ".json", "w", encoding="utf-8") as f:
      json.dump({k: v for k, v in result.items() if k != "curves"}, f,
                indent=2, ensure_ascii=False)
      f.write("\n")
    plot(result, stem + ".png")
  except (ReportError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(text)
  print(f"wrote {stem}.md, {stem}.json, {stem}.png")
  return 0


if __name__ == "__main__":
  sys.exit(main())
