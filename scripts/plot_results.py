"""Plots mean-of-last-100 episode return vs env steps for several runs.

`python scripts/plot_results.py RUN_DIR [RUN_DIR ...] --out docs/lunar.png`
Each RUN_DIR holds the `episodes.csv` written by `scripts/train.py`.
"""

import argparse
import os

import numpy as np


def rolling_mean(values, window=100):
  out = np.empty(len(values))
  for i in range(len(values)):
    out[i] = np.mean(values[max(0, i - window + 1):i + 1])
  return out


def load_episodes(run):
  """`(env_steps, returns)` of a run folder's `episodes.csv`: the env steps
  at each episode's end and its return. The return is the third column,
  named "return" in older runs and "episode_return" since."""
  data = np.genfromtxt(os.path.join(run, "episodes.csv"), delimiter=",",
                       names=True)
  return (np.atleast_1d(data["env_steps"]),
          np.atleast_1d(data[data.dtype.names[2]]))


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("runs", nargs="+")
  parser.add_argument("--out", required=True)
  parser.add_argument("--threshold", type=float, default=200.0)
  parser.add_argument("--title", default="LunarLander-v3")
  args = parser.parse_args()
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for run in args.runs:
    env_steps, returns = load_episodes(run)
    ax.plot(env_steps, rolling_mean(returns),
            label=os.path.basename(os.path.normpath(run)))
  if not np.isnan(args.threshold):  # --threshold nan: no line
    ax.axhline(args.threshold, color="grey", linestyle="--", linewidth=1)
  ax.set_xlabel("env steps")
  ax.set_ylabel("mean return of the last 100 episodes")
  ax.set_title(args.title)
  ax.legend(fontsize=8)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(args.out, dpi=120)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
