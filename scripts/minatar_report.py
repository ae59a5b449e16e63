"""The MinAtar results: a table, learning curves and aggregate scores of the
Muesli runs, with the uncertainty rliable's methodology (Agarwal et al. 2021)
asks for: bootstrap confidence intervals over seeds, interquartile mean (IQM)
and optimality gap of normalised scores with stratified-bootstrap intervals.

`python scripts/minatar_report.py [RESULTS_DIR] [--out DIR] [--reps N]`
RESULTS_DIR (default docs/results/minatar/) holds run folders named
`muesli_<game>_s<seed>/` (game in lower case: asterix, breakout, freeway,
seaquest, spaceinvaders), each with the `summary.json` and `episodes.csv`
that `scripts/train.py` writes. Runs without a summary, interrupted runs and
runs that stopped short of the others' env steps are named and left out.
Writes to DIR (default docs/): minatar_table.md (also printed),
minatar_summary.json, minatar_curves.png and minatar_aggregate.png.
"""

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import sys

import numpy as np


def _sibling(name: str):
  """`scripts/<name>.py` as a module. scripts/ is no package, and putting it
  on sys.path would let its file names (train, sweep, ...) shadow modules
  of the process that imports this one."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                         f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# The episode log's reader and its mean100, shared with the curves'
# plotting script.
_plot_results = _sibling("plot_results")
load_episodes, rolling_mean = (_plot_results.load_episodes,
                               _plot_results.rolling_mean)

GAMES = ("asterix", "breakout", "freeway", "seaquest", "spaceinvaders")
GAME_NAMES = {"asterix": "Asterix", "breakout": "Breakout",
              "freeway": "Freeway", "seaquest": "Seaquest",
              "spaceinvaders": "SpaceInvaders"}

# Published scores that the table puts beside Muesli's, per game. Every
# figure, table column and normalised aggregate reads them from here, so a
# corrected value needs changing in this one place.
ANCHORS = {
    # MinAtar paper (Young & Tian 2019), read off its learning-curve figure
    # (the MinAtar repository's img/learning_curves.gif): moving average of
    # 100 training episodes over 30 runs, 6 actions, sticky 0.1, ramping.
    "minatar_dqn_1m": {
        "label": "MinAtar DQN 1M",
        "scores": {"asterix": 7, "breakout": 9.2, "freeway": 48,
                   "seaquest": 1.0, "spaceinvaders": 32}},
    "minatar_ac_lambda_1m": {
        "label": "MinAtar AC(λ) 1M",
        "scores": {"asterix": 0.8, "breakout": 9.9, "freeway": 0,
                   "seaquest": 0.6, "spaceinvaders": 52}},
    # The same figure: its best agent per game at 5M steps (AC(0), AC(λ),
    # DQN, DQN, AC(λ)).
    "minatar_best_5m": {
        "label": "MinAtar best 5M",
        "scores": {"asterix": 20.4, "breakout": 17.4, "freeway": 50.2,
                   "seaquest": 20.3, "spaceinvaders": 185.6}},
    # Pgx (Koyamada et al. 2023), examples/minatar-ppo: PPO's final point at
    # 19.9M steps, mean return of 100 episodes with sampled actions, minimal
    # action set, sticky 0.1, ramping.
    "pgx_ppo_20m": {
        "label": "Pgx PPO 20M",
        "scores": {"asterix": 22.3, "breakout": 49.9, "freeway": 63.5,
                   "seaquest": 54.3, "spaceinvaders": 144.4}},
}
# The anchors that normalise the scores of the aggregates (the first is the
# main one) and those drawn as dashed lines on the learning curves.
REFERENCES = ("pgx_ppo_20m", "minatar_best_5m")
CURVE_ANCHORS = ("minatar_dqn_1m", "minatar_best_5m")
# A normalised score of 1 is the reference's: the optimality gap is how far
# below it the scores fall on average.
OPTIMALITY_THRESHOLD = 1.0
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
DEFAULT_REPS = 10_000
# Runs end on a multiple of the envs' step, so a complete run may stop a
# little before another; only a run further short than this fraction of the
# longest run's env steps counts as unfinished.
STEP_TOLERANCE = 0.01
CURVE_STEP = 10_000  # env steps between the points of the learning curves
_RUN_NAME = re.compile(r"^muesli_([a-z]+)_s(\d+)$")


class ReportError(Exception):
  """Input the report cannot be made from: the CLI's `error:` line."""


@dataclasses.dataclass
class Run:
  """One run folder, and once read, its summary and episode log."""
  name: str
  path: str
  game: str
  seed: int
  summary: dict | None = None
  env_steps: np.ndarray | None = None  # at each episode's end
  returns: np.ndarray | None = None

  @property
  def final(self) -> float:
    """The mean of the last 100 training episodes' returns at the run's end."""
    return float(self.summary["mean_return_last_100"])


def find_runs(results_dir: str) -> list[Run]:
  """The MinAtar Muesli run folders of `results_dir`, by game then seed;
  folders of other agents or envs are not runs of this report."""
  if not os.path.isdir(results_dir):
    raise ReportError(f"{results_dir} is not a directory")
  runs = []
  for name in sorted(os.listdir(results_dir)):
    match = _RUN_NAME.match(name)
    path = os.path.join(results_dir, name)
    if match and match.group(1) in GAMES and os.path.isdir(path):
      runs.append(Run(name, path, match.group(1), int(match.group(2))))
  if not runs:
    raise ReportError(
        f"no run folders muesli_<game>_s<seed> in {results_dir} "
        f"(games: {', '.join(GAMES)})")
  return sorted(runs, key=lambda run: (GAMES.index(run.game), run.seed))


def _read(run: Run) -> str | None:
  """Reads `run`'s summary and episode log; the reason it cannot be used,
  or None when it can (before comparing its env steps with the others')."""
  try:
    with open(os.path.join(run.path, "summary.json")) as f:
      run.summary = json.load(f)
  except FileNotFoundError:
    return "no summary.json (still running, or killed)"
  except (OSError, ValueError) as e:
    return f"unreadable summary.json ({e})"
  summary = run.summary
  if not isinstance(summary, dict):
    return "summary.json holds no JSON object"
  env_game = str(summary.get("env_id", "")).split("/")[-1].split("-")[0]
  if env_game.lower() != run.game:
    return f"its env_id {summary.get('env_id')!r} is not {run.game}"
  if summary.get("interrupted"):
    return f"interrupted at {summary.get('env_steps')} env steps"
  if summary.get("mean_return_last_100") is None or "env_steps" not in summary:
    return "summary.json without env_steps or mean_return_last_100"
  try:
    run.env_steps, run.returns = load_episodes(run.path)
  except (OSError, ValueError) as e:
    return f"no readable episodes.csv ({e})"
  if not len(run.returns):
    return "no episode in episodes.csv"
  return None


def load_runs(runs: list[Run]) -> tuple[list[Run], list[dict], int]:
  """`(complete runs, excluded runs with their reasons, env-step budget)`.

  The budget is the longest run's env steps: a run that stopped well short
  of it would compare an earlier point of training with the others', so it
  is excluded like a run that is missing its summary or was interrupted.
  """
  reasons = {run.name: _read(run) for run in runs}
  readable = [run for run in runs if reasons[run.name] is None]
  if not readable:
    raise ReportError("no complete run: " + "; ".join(
        f"{name}: {reason}" for name, reason in reasons.items()))
  budget = max(int(run.summary["env_steps"]) for run in readable)
  for run in readable:
    steps = int(run.summary["env_steps"])
    if steps < (1 - STEP_TOLERANCE) * budget:
      reasons[run.name] = (f"stopped at {steps} env steps, short of the "
                           f"{budget} of the longest run")
  excluded = [{"run": name, "reason": reason}
              for name, reason in reasons.items() if reason is not None]
  return [run for run in runs if reasons[run.name] is None], excluded, budget


@contextlib.contextmanager
def _numpy_global_seed(seed: int):
  """Seeds numpy's global RNG for the block, then restores its state.

  rliable 1.2 draws its bootstrap indices from the global RNG (its
  `random_state` argument never reaches those draws), so this is how its
  intervals are made reproducible without disturbing the caller's RNG.
  """
  state = np.random.get_state()
  np.random.seed(seed)
  try:
    yield
  finally:
    np.random.set_state(state)


def bootstrap_mean(values: np.ndarray, reps: int, seed: int = BOOTSTRAP_SEED,
                   confidence: float = CONFIDENCE) -> np.ndarray | None:
  """Percentile-bootstrap interval `[lower, upper]` of the mean over seeds
  (axis 0; later axes, such as curve points, get one interval each), or None
  with one seed, from which no spread can be estimated."""
  values = np.asarray(values, float)
  if len(values) < 2:
    return None
  rng = np.random.default_rng(seed)
  means = values[rng.integers(0, len(values), (reps, len(values)))].mean(1)
  tail = 100 * (1 - confidence) / 2
  return np.percentile(means, [tail, 100 - tail], axis=0)


def game_table(runs: list[Run], reps: int) -> dict:
  """Per game with runs: its seeds, their final mean100s, the mean over
  seeds with its bootstrap interval, the worst and best seed, the anchors."""
  table = {}
  for game in GAMES:
    game_runs = [run for run in runs if run.game == game]
    if not game_runs:
      continue
    finals = np.array([run.final for run in game_runs])
    interval = bootstrap_mean(finals, reps)
    anchors = {key: anchor["scores"][game] for key, anchor in ANCHORS.items()}
    table[game] = {
        **target_status(game, finals, anchors),
        "seeds": [run.seed for run in game_runs],
        "final_mean100": finals.tolist(),
        "mean": float(finals.mean()),
        "ci": None if interval is None else [float(x) for x in interval],
        "min": float(finals.min()),
        "max": float(finals.max()),
        "anchors": anchors,
    }
  return table


# The targets the table reports per game: the mean over seeds at least the
# MinAtar paper's better 1M agent, and where the published DQN is far behind
# its best (Breakout, SpaceInvaders) no seed below it; the moonshot, the
# mean at least the paper's best agent at 5M steps.
EVERY_SEED_ABOVE_DQN = ("breakout", "spaceinvaders")


def target_status(game: str, finals: np.ndarray, anchors: dict) -> dict:
  better_1m = max(anchors["minatar_dqn_1m"], anchors["minatar_ac_lambda_1m"])
  met = bool(finals.mean() >= better_1m)
  if game in EVERY_SEED_ABOVE_DQN:
    met = met and bool(finals.min() >= anchors["minatar_dqn_1m"])
  return {"met": met,
          "moonshot": bool(finals.mean() >= anchors["minatar_best_5m"])}


def normalised_scores(table: dict, reference: str) -> list[np.ndarray]:
  """Each game's final mean100s divided by the reference's score on it, as
  a `[seeds, 1]` array per game: rliable's runs-by-tasks layout."""
  scores = ANCHORS[reference]["scores"]
  return [np.asarray(row["final_mean100"], float)[:, None] / scores[game]
          for game, row in table.items()]


def _iqm_and_gap(*games: np.ndarray) -> np.ndarray:
  """IQM and optimality gap over all runs of all games, pooled."""
  from rliable import metrics
  scores = np.concatenate(games)
  return np.array([
      metrics.aggregate_iqm(scores),
      metrics.aggregate_optimality_gap(scores, gamma=OPTIMALITY_THRESHOLD)])


def aggregate(table: dict, reference: str, reps: int) -> dict:
  """IQM and optimality gap of the scores normalised by `reference`, with
  rliable's stratified-bootstrap intervals (runs resampled within each game).

  The games go to rliable as a list of per-game arrays, which it resamples
  independently: the same stratified bootstrap as its runs-by-games matrix,
  and games may have different numbers of seeds. With one seed per game
  there is nothing to resample, and the intervals are None.
  """
  from rliable import library
  scores = normalised_scores(table, reference)
  with _numpy_global_seed(BOOTSTRAP_SEED):
    points, intervals = library.get_interval_estimates(
        {reference: scores}, _iqm_and_gap, method="percentile", reps=reps,
        confidence_interval_size=CONFIDENCE)
  point, interval = points[reference], intervals[reference]
  resampled = max(len(game) for game in scores) > 1
  return {
      "reference": ANCHORS[reference]["label"],
      "games": list(table),
      "runs": int(sum(len(game) for game in scores)),
      "iqm": float(point[0]),
      "iqm_ci": [float(x) for x in interval[:, 0]] if resampled else None,
      "optimality_gap": float(point[1]),
      "optimality_gap_ci": ([float(x) for x in interval[:, 1]]
                            if resampled else None),
  }


def hold_on_grid(env_steps: np.ndarray, values: np.ndarray,
                 grid: np.ndarray) -> np.ndarray:
  """`values`, recorded at episode ends `env_steps`, at the `grid`'s steps:
  the last value recorded at or before each step (mean100 changes only when
  an episode ends), NaN before the first episode's end."""
  index = np.searchsorted(env_steps, grid, side="right") - 1
  return np.where(index >= 0, values[np.maximum(index, 0)], np.nan)


def game_curves(runs: list[Run], games: list[str], reps: int) -> dict:
  """Per game: the grid of env steps, the mean over seeds of mean100 on it,
  and the bootstrap band (None with one seed), where every seed has one."""
  curves = {}
  for game in games:
    game_runs = [run for run in runs if run.game == game]
    end = min(int(run.summary["env_steps"]) for run in game_runs)
    grid = np.arange(CURVE_STEP, end + 1, CURVE_STEP)
    values = np.stack([hold_on_grid(run.env_steps, rolling_mean(run.returns),
                                    grid) for run in game_runs])
    covered = np.all(np.isfinite(values), axis=0)
    grid, values = grid[covered], values[:, covered]
    curves[game] = {"steps": grid, "mean": values.mean(0),
                    "band": bootstrap_mean(values, reps)}
  return curves


def _pyplot():
  """matplotlib's pyplot on a backend that needs no display."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def plot_curves(curves: dict, budget: int, path: str) -> None:
  """One panel per game: mean100 against env steps, the mean over seeds with
  its 95% band, and the anchors as dashed lines."""
  plt = _pyplot()
  cols = min(3, len(curves))
  rows = -(-len(curves) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows),
                           squeeze=False)
  styles = {"minatar_dqn_1m": "tab:grey", "minatar_best_5m": "tab:red"}
  for ax, (game, curve) in zip(axes.flat, curves.items()):
    ax.plot(curve["steps"], curve["mean"], color="tab:blue", label="Muesli")
    if curve["band"] is not None:
      ax.fill_between(curve["steps"], *curve["band"], color="tab:blue",
                      alpha=0.25, linewidth=0)
    for key in CURVE_ANCHORS:
      ax.axhline(ANCHORS[key]["scores"][game], color=styles.get(key, "k"),
                 linestyle="--", linewidth=1, label=ANCHORS[key]["label"])
    ax.set_title(GAME_NAMES[game], fontsize=10)
    ax.set_xlim(0, budget)
    ax.xaxis.set_major_formatter(lambda steps, _: steps_label(int(steps)))
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
  for ax in list(axes.flat)[len(curves):]:
    ax.axis("off")
  for ax in axes[-1]:
    ax.set_xlabel("env steps", fontsize=9)
  for ax in axes[:, 0]:
    ax.set_ylabel("mean100 return", fontsize=9)
  axes.flat[0].legend(fontsize=7, loc="best")
  fig.suptitle(f"Muesli on MinAtar: mean over seeds, {CONFIDENCE:.0%} "
               "bootstrap band", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_aggregate(aggregates: dict, budget: int, path: str) -> None:
  """IQM and optimality gap with their intervals, one row per reference:
  small enough to read at the README's width."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(7, 1.1 + 0.45 * len(aggregates)))
  labels = [f"÷ {agg['reference']}" for agg in aggregates.values()]
  for ax, metric, title in zip(axes, ("iqm", "optimality_gap"),
                               ("IQM (higher is better)",
                                "Optimality gap (lower is better)")):
    for row, agg in enumerate(aggregates.values()):
      interval = agg[f"{metric}_ci"]
      if interval is not None:
        ax.barh(row, interval[1] - interval[0], left=interval[0], height=0.5,
                color="tab:blue", alpha=0.35)
      ax.plot([agg[metric]] * 2, [row - 0.3, row + 0.3], color="tab:blue",
              linewidth=2)
    ax.axvline(OPTIMALITY_THRESHOLD if metric == "iqm" else 0, color="grey",
               linestyle=":", linewidth=1)
    ax.set_yticks(range(len(labels)), labels if ax is axes[0] else [""] *
                  len(labels), fontsize=8)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    highest = max(max([agg[metric], *(agg[f"{metric}_ci"] or ())])
                  for agg in aggregates.values())
    ax.set_xlim(0, 1.05 * max(OPTIMALITY_THRESHOLD, highest))
    ax.invert_yaxis()
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("normalised score", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
  first = next(iter(aggregates.values()))
  fig.suptitle(f"Muesli on MinAtar at {steps_label(budget)} steps: "
               f"{len(first['games'])} games, {first['runs']} runs, "
               f"{CONFIDENCE:.0%} CIs", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def steps_label(steps: int) -> str:
  """1000000 -> "1M", 500000 -> "500k": the table's way of naming budgets."""
  if steps >= 1_000_000:
    return f"{steps / 1e6:g}M"
  return f"{steps / 1e3:g}k" if steps >= 1000 else f"{steps:g}"


def _interval(value: float, interval, digits: int) -> str:
  """"value [lower, upper]", or "value [n/a]" without an interval."""
  if interval is None:
    return f"{value:.{digits}f} [n/a]"
  lower, upper = interval
  return f"{value:.{digits}f} [{lower:.{digits}f}, {upper:.{digits}f}]"


def markdown(report: dict) -> str:
  """The results section's tables: per game, then the aggregates, then which
  games are missing and which runs were left out."""
  anchors = list(ANCHORS)
  header = ["Game", "Seeds",
            f"Muesli mean100 at {steps_label(report['budget_env_steps'])} "
            f"(mean [{CONFIDENCE:.0%} CI])", "Min–max",
            *(ANCHORS[key]["label"] for key in anchors),
            "≥ better 1M agent", "≥ best 5M"]
  lines = ["| " + " | ".join(header) + " |",
           "|---|---:|---|---|" + "---:|" * len(anchors) + "---|---|"]
  for game, row in report["games"].items():
    cells = [GAME_NAMES[game], str(len(row["seeds"])),
             _interval(row["mean"], row["ci"], 1),
             f"{row['min']:.1f}–{row['max']:.1f}",
             *(f"{row['anchors'][key]:g}" for key in anchors),
             "yes" if row["met"] else "no",
             "yes" if row["moonshot"] else "no"]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "| Aggregate of Muesli's score ÷ reference | Games | Runs | "
            f"IQM [{CONFIDENCE:.0%} CI] | Optimality gap [{CONFIDENCE:.0%} CI] |",
            "|---|---:|---:|---|---|"]
  for agg in report["aggregates"].values():
    lines.append(
        f"| ÷ {agg['reference']} | {len(agg['games'])} | {agg['runs']} | "
        f"{_interval(agg['iqm'], agg['iqm_ci'], 2)} | "
        f"{_interval(agg['optimality_gap'], agg['optimality_gap_ci'], 2)} |")
  lines += ["", f"Mean100: the mean return of the last 100 training episodes "
            f"at the run's end. CIs: percentile bootstrap over seeds "
            f"({report['reps']} resamples); aggregates: IQM and optimality "
            f"gap (threshold {OPTIMALITY_THRESHOLD:g}) over all games × "
            "seeds, stratified bootstrap (rliable). ≥ better 1M agent: the "
            "mean over seeds at least the MinAtar paper's better agent at 1M "
            "steps, and on Breakout and SpaceInvaders no seed below its DQN; "
            "≥ best 5M: the mean at least its best agent at 5M steps."]
  if report["missing_games"]:
    lines.append("Missing games (no complete run): " + ", ".join(
        GAME_NAMES[game] for game in report["missing_games"]) + ".")
  for run in report["excluded_runs"]:
    lines.append(f"Excluded: {run['run']}: {run['reason']}.")
  return "\n".join(lines) + "\n"


def build_report(results_dir: str, out: str, reps: int = DEFAULT_REPS,
                 echo=print) -> dict:
  """Reads the runs, writes the table, the summary and the two figures into
  `out` and returns the summary; `echo` gets the notes and the table."""
  if reps < 1:
    raise ReportError(f"--reps must be positive, got {reps}")
  runs, excluded, budget = load_runs(find_runs(results_dir))
  for run in excluded:
    echo(f"note: excluded {run['run']}: {run['reason']}")
  table = game_table(runs, reps)
  report = {
      "results_dir": results_dir,
      "budget_env_steps": budget,
      "reps": reps,
      "confidence": CONFIDENCE,
      "bootstrap_seed": BOOTSTRAP_SEED,
      "optimality_threshold": OPTIMALITY_THRESHOLD,
      "games": table,
      "missing_games": [game for game in GAMES if game not in table],
      "excluded_runs": excluded,
      "aggregates": {key: aggregate(table, key, reps) for key in REFERENCES},
      "anchors": ANCHORS,
  }
  os.makedirs(out, exist_ok=True)
  text = markdown(report)
  paths = {name: os.path.join(out, f"minatar_{name}")
           for name in ("table.md", "summary.json", "curves.png",
                        "aggregate.png")}
  with open(paths["table.md"], "w", encoding="utf-8") as f:
    f.write(text)
  with open(paths["summary.json"], "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2, ensure_ascii=False)
    f.write("\n")
  plot_curves(game_curves(runs, list(table), reps), budget,
              paths["curves.png"])
  plot_aggregate(report["aggregates"], budget, paths["aggregate.png"])
  echo(text)
  echo("wrote " + ", ".join(paths.values()))
  return report


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("results_dir", nargs="?",
                      default=os.path.join("docs", "results", "minatar"))
  parser.add_argument("--out", default="docs",
                      help="folder for the table, summary and figures")
  parser.add_argument("--reps", type=int, default=DEFAULT_REPS,
                      help="bootstrap resamples")
  args = parser.parse_args(argv)
  try:
    build_report(args.results_dir, args.out, args.reps)
  except (ReportError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
