"""The TensorBoard scalars of runs, side by side at chosen env steps.

  python scripts/run_scalars.py RUN_DIR [RUN_DIR ...]
      [--tags learner/entropy,learner/kl_cmpo] [--at 100000,500000,1000000]
      [--window 50000] [--list]

For each run folder (as `scripts/train.py` writes it: TensorBoard events
beside `episodes.csv`) and each tag, the mean of the values logged in the
`--window` env steps up to each `--at` step (learner scalars are logged
every `log_interval` updates and are noisy one by one), as a markdown
table; "n/a" where the run logged none there. `--list` prints the tags a
run has. Events a resumed run purged (its steps after the checkpoint it
resumed from) are dropped, as TensorBoard drops them.

E.g. why one seed stalls where another learns: the policy's entropy and
its KL to the CMPO target over training, for every seed of a game.
"""

import argparse
import glob
import os
import struct
import sys
from typing import Dict, List, Sequence, Tuple

from tensorboardX.proto import event_pb2

DEFAULT_TAGS = "learner/entropy,learner/kl_cmpo"


class ScalarsError(ValueError):
  """A bad argument or an unreadable run: one `error:` line, exit 2."""


def _records(path: str):
  """The payloads of a TFRecord file (length, its CRC, data, its CRC); a
  record cut short by a kill ends the file."""
  with open(path, "rb") as f:
    while True:
      header = f.read(12)
      if len(header) < 12:
        return
      (length,) = struct.unpack("<Q", header[:8])
      data = f.read(length)
      if len(data) < length or len(f.read(4)) < 4:
        return
      yield data


def read_scalars(run_dir: str) -> Dict[str, List[Tuple[int, float]]]:
  """Tag -> `[(step, value), ...]` in step order, from every events file of
  `run_dir` (oldest first), without the steps a resumed run purged."""
  paths = sorted(glob.glob(os.path.join(run_dir, "events.out.tfevents.*")),
                 key=lambda p: (os.path.basename(p).split(".")[3], p))
  scalars: Dict[str, List[Tuple[int, float]]] = {}
  for path in paths:
    for data in _records(path):
      event = event_pb2.Event()
      event.ParseFromString(data)
      if (event.HasField("session_log") and
          event.session_log.status == event_pb2.SessionLog.START):
        # A writer with purge_step: what was logged from that step on is
        # superseded by what follows.
        for tag, points in scalars.items():
          scalars[tag] = [(s, v) for s, v in points if s < event.step]
      if event.HasField("summary"):
        for value in event.summary.value:
          if value.HasField("simple_value"):
            scalars.setdefault(value.tag, []).append(
                (int(event.step), float(value.simple_value)))
  for points in scalars.values():
    points.sort(key=lambda p: p[0])
  return scalars


def window_mean(points: Sequence[Tuple[int, float]], at: int,
                window: int):
  """Mean of the values logged at steps in `(at - window, at]`, or None."""
  values = [v for s, v in points if at - window < s <= at]
  return sum(values) / len(values) if values else None


def parse_steps(text: str) -> List[int]:
  try:
    steps = [int(float(s)) for s in text.split(",") if s.strip()]
  except ValueError:
    steps = []
  if not steps or any(s <= 0 for s in steps):
    raise ScalarsError(f"--at takes positive env steps separated by commas, "
                       f"got {text!r}")
  return steps


def table(runs: Sequence[str], tags: Sequence[str], steps: Sequence[int],
          window: int) -> str:
  """The markdown table: a row per run, a column per tag and step."""
  header = ["run"] + [f"{tag} at {step:,}" for tag in tags for step in steps]
  lines = ["| " + " | ".join(header) + " |",
           "|" + "---|" * len(header)]
  for run in runs:
    scalars = read_scalars(run)
    cells = [os.path.basename(os.path.normpath(run))]
    for tag in tags:
      for step in steps:
        value = window_mean(scalars.get(tag, []), step, window)
        cells.append("n/a" if value is None else f"{value:.3g}")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("runs", nargs="+", help="run folders")
  parser.add_argument("--tags", default=DEFAULT_TAGS,
                      help=f"comma-separated tags (default {DEFAULT_TAGS})")
  parser.add_argument("--at", default="100000,500000,1000000",
                      help="env steps (default 100000,500000,1000000)")
  parser.add_argument("--window", type=int, default=50_000,
                      help="env steps averaged up to each step (default 50000)")
  parser.add_argument("--list", action="store_true",
                      help="print each run's tags and stop")
  args = parser.parse_args(argv)
  try:
    if args.window <= 0:
      raise ScalarsError(f"--window must be positive, got {args.window}")
    steps = parse_steps(args.at)
    tags = [t.strip() for t in args.tags.split(",") if t.strip()]
    for run in args.runs:
      if not glob.glob(os.path.join(run, "events.out.tfevents.*")):
        raise ScalarsError(f"{run} holds no TensorBoard events")
    if args.list:
      for run in args.runs:
        print(f"{run}: {', '.join(sorted(read_scalars(run)))}")
      return 0
    print(table(args.runs, tags, steps, args.window))
  except ScalarsError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
