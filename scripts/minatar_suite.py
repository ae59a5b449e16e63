"""Muesli on the five MinAtar games x several seeds, resumable.

  python scripts/minatar_suite.py [--games Breakout,SpaceInvaders | all]
      [--seeds 0-4 | 0,1,2] [--out docs/results/minatar] [--jobs N]
      [--dry-run] [--config.KEY=VALUE ...]

Defaults: all five games (Asterix, Breakout, Freeway, Seaquest,
SpaceInvaders), seeds 0-4, `--out docs/results/minatar` (in the
repository), one run at a time. Every run is `scripts/train.py --config
minatar.py` with its game's `env_id` (`MinAtar/<Game>-v1`) and its `seed`;
the `--config.KEY=VALUE` overrides reach every run, e.g.
`--config.total_env_steps=200000` for a shorter suite. Runs go seed by seed
(seed 0 of every game first), so that a suite stopped early has every game.

Game G, seed S trains into `OUT/muesli_<g>_s<S>/` (`<g>`: G in lower case,
e.g. `muesli_breakout_s0`), which holds the run's files directly:
config.json, episodes.csv and summary.json (what docs/results keeps and
scripts/plot_results.py reads), TensorBoard events, checkpoints/ and
train.log (the run's own output). `OUT/.gitignore`, written once, leaves
out all but the first three.

The same command, run again, continues the suite: a run whose summary.json
says it reached total_env_steps without an interruption is skipped; one
with a complete checkpoint resumes from its newest (`train.py --resume`,
the overrides passed again: a larger total_env_steps extends finished
runs); any other starts anew, after clearing what an attempt without a
checkpoint left (train.log is kept). `--dry-run` prints each run's state
(done / resume / new) and command, and runs nothing.

Ctrl-C or SIGTERM (SIGHUP too) stops the suite: the running runs get the
signal, save a checkpoint and their summary, and the suite exits with
status 130 once they have stopped (a second Ctrl-C does not kill them
mid-save). A suite killed outright (kill -9) sends its runs SIGTERM on
Linux, so they stop the same way. One suite at a time uses an output
folder (`OUT/.suite.lock`, held until its last run has stopped).

`--jobs N` trains N runs at once, each in its own process. Where
`os.sched_setaffinity` exists (Linux) and N is at most the number of cores
this process may use, each run is pinned to a core of its own: XLA then
runs one thread per run, and runs neither contend for a core nor migrate
between them. Otherwise they are not pinned. Each run also gets XLA's
one-thread flags (`--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`, unless XLA_FLAGS is set), which jax 0.10
ignores: only the pinning limits its threads. Exit status: 0 when every run
is done, 1 when one failed, 2 for bad arguments (one `error:` line), 130
when stopped.
"""

import argparse
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import IO, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muesli_jax import config as config_lib  # noqa: E402
from muesli_jax.envs import MINATAR_GAMES  # noqa: E402  (gymnasium, no jax)

TRAIN = os.path.join(config_lib.REPO_ROOT, "scripts", "train.py")
CONFIG_FILE = "minatar.py"
DEFAULT_OUT = os.path.join(config_lib.REPO_ROOT, "docs", "results", "minatar")
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
# Set by the suite for each run: an override of them would break the layout.
SUITE_KEYS = {"env_id": "--games", "seed": "--seeds", "logdir": "--out"}
LOG = "train.log"
LOCK = ".suite.lock"
GITIGNORE = """\
# Written by scripts/minatar_suite.py: each run's results are its
# config.json, episodes.csv and summary.json; the rest serves resuming
# (checkpoints/), TensorBoard and debugging.
checkpoints/
checkpoints_unreadable/
events.out.tfevents.*
train.log
.suite.lock
"""
DONE, RESUME, NEW, BLOCKED = "done", "resume", "new", "blocked"
POLL_SECONDS = 0.2


class SuiteError(ValueError):
  """Bad arguments: one `error:` line, exit 2."""


class _Parser(argparse.ArgumentParser):
  """argparse's own errors as one `error:` line too, without the usage."""

  def error(self, message):
    raise SuiteError(message)


# ---------------------------------------------------------------- arguments


def parse_games(text: str) -> List[str]:
  """`all` or comma-separated games, in any case -> MinAtar's spelling."""
  if text.strip().lower() == "all":
    return list(MINATAR_GAMES)
  known = {g.lower(): g for g in MINATAR_GAMES}
  games = []
  for item in text.split(","):
    game = known.get(item.strip().lower())
    if game is None:
      raise SuiteError(f"unknown game {item.strip()!r} in --games (MinAtar's "
                       f"games: {', '.join(MINATAR_GAMES)}; or all)")
    games.append(game)
  return list(dict.fromkeys(games))


def parse_seeds(text: str) -> List[int]:
  """`0-4` or `0,1,2` (or both, `0-2,7`) -> seeds, in order, each once."""
  seeds = []
  for item in text.split(","):
    match = re.fullmatch(r"([0-9]+)(?:-([0-9]+))?", item.strip())
    if match is None:
      where = f" in {text!r}" if item != text else ""
      raise SuiteError(f"--seeds: cannot read {item.strip()!r}{where} "
                       "(seeds >= 0 as 0-4 or 0,1,2)")
    low, high = int(match[1]), int(match[2] or match[1])
    if high < low:
      raise SuiteError(f"--seeds: the range {item.strip()!r} runs backwards "
                       f"(e.g. {high}-{low})")
    seeds.extend(range(low, high + 1))
  return list(dict.fromkeys(seeds))


def parse_cli(argv: Sequence[str]):
  """`(args, overrides)`: the options, and `[(KEY, VALUE text)]`."""
  parser = _Parser(description=__doc__, allow_abbrev=False,
                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--games", default="all",
                      help="comma-separated games, or all (default)")
  parser.add_argument("--seeds", default="0-4",
                      help="0-4 (default) or 0,1,2")
  parser.add_argument("--out", default=DEFAULT_OUT,
                      help="folder of the run folders (default "
                      "docs/results/minatar in the repository)")
  parser.add_argument("--jobs", type=int, default=1,
                      help="runs training at once (default 1)")
  parser.add_argument("--dry-run", action="store_true",
                      help="print each run's state and command; run nothing")
  args, rest = parser.parse_known_args(argv)
  overrides = config_lib.parse_overrides(
      rest, "; the suite takes --games, --seeds, --out, --jobs, --dry-run "
      "and --config.KEY=VALUE")
  args.games, args.seeds = parse_games(args.games), parse_seeds(args.seeds)
  if args.jobs < 1:
    raise SuiteError(f"--jobs must be at least 1, got {args.jobs}")
  args.out = os.path.abspath(args.out)
  return args, overrides


def check_overrides(overrides: Sequence[Tuple[str, str]]):
  """configs/minatar.py with the overrides: bad ones fail here, once, rather
  than in every run. Returns the config (for its total_env_steps)."""
  for key, _ in overrides:
    if key in SUITE_KEYS:
      raise SuiteError(f"--config.{key} is set by the suite for each run; "
                       f"use {SUITE_KEYS[key]}")
  config = config_lib.load_config_file(CONFIG_FILE)
  config_lib.apply_overrides(config, overrides)
  config_lib.validate(config)
  return config


# ---------------------------------------------------------------- runs


@dataclasses.dataclass
class Run:
  """One game and seed of the suite, and its deterministic folder."""
  game: str
  seed: int
  out: str

  @property
  def name(self) -> str:
    return f"muesli_{self.game.lower()}_s{self.seed}"

  @property
  def env_id(self) -> str:
    return f"MinAtar/{self.game}-v1"

  @property
  def run_dir(self) -> str:
    return os.path.join(self.out, self.name)


def read_summary(run_dir: str) -> Optional[dict]:
  """summary.json, or None where there is none (or a kill cut it short)."""
  try:
    with open(os.path.join(run_dir, "summary.json")) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def newest_checkpoint(run_dir: str) -> Optional[int]:
  """The env step of the newest complete checkpoint, or None. orbax names a
  step's folder by the step once it is complete (`<step>.orbax-checkpoint-
  tmp-...` before): the folder names say it without importing orbax."""
  directory = os.path.join(run_dir, "checkpoints")
  try:
    steps = [int(name) for name in os.listdir(directory)
             if name.isdigit() and os.path.isdir(os.path.join(directory, name))]
  except OSError:
    return None
  return max(steps, default=None)


def finished(summary: Optional[dict], config) -> bool:
  """Whether a summary is of a run that ended by itself at its budget (or
  solved, with stop_when_solved), not by an interrupt or a failure."""
  if summary is None or summary.get("interrupted", True):
    return False
  solved = (config.stop_when_solved and
            summary.get("solved_at_steps") is not None)
  return summary.get("env_steps", 0) >= config.total_env_steps or solved


def run_state(run: Run, config) -> str:
  """done: finished; resume: a complete checkpoint to continue from; new:
  nothing to continue; blocked: a finished shorter run without checkpoints
  (a new run would overwrite its results: the user decides)."""
  summary = read_summary(run.run_dir)
  if finished(summary, config):
    return DONE
  if newest_checkpoint(run.run_dir) is not None:
    return RESUME
  if summary is not None and not summary.get("interrupted", True):
    return BLOCKED
  return NEW


def train_command(run: Run, state: str,
                  overrides: Sequence[Tuple[str, str]]) -> List[str]:
  """train.py's command line: a new run into its folder (`--run-name`), or
  `--resume` of the run's folder with its own config."""
  if state == RESUME:
    args = ["--resume", run.run_dir]
  else:
    args = ["--config", CONFIG_FILE, f"--config.env_id={run.env_id}",
            f"--config.seed={run.seed}", f"--config.logdir={run.out}",
            "--run-name", run.name]
  return [sys.executable, TRAIN, *args,
          *(f"--config.{key}={text}" for key, text in overrides)]


def clear_attempt(run_dir: str) -> bool:
  """Removes what an attempt that left no checkpoint wrote (train.py refuses
  a folder that holds a run), keeping train.log; whether there was any."""
  cleared = False
  for name in os.listdir(run_dir) if os.path.isdir(run_dir) else ():
    if name == LOG:
      continue
    path = os.path.join(run_dir, name)
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path)
    else:
      os.remove(path)
    cleared = True
  return cleared


def describe(run: Run, state: str, config) -> str:
  """What a progress line says of a run in `state`."""
  if state == DONE:
    return f"done ({result(read_summary(run.run_dir))})"
  if state == RESUME:
    return f"resume from env step {newest_checkpoint(run.run_dir)}"
  if state == BLOCKED:
    summary = read_summary(run.run_dir)
    return (f"blocked (it ended at {summary.get('env_steps')} of "
            f"{config.total_env_steps} env steps without a checkpoint to "
            f"continue from: remove {run.run_dir} to train it again)")
  return "new"


def result(summary: Optional[dict]) -> str:
  """The mean return of the last 100 episodes, and how far the run got."""
  if summary is None:
    return "no summary.json"
  mean = summary.get("mean_return_last_100")
  return (f"mean return of the last 100 episodes "
          f"{'n/a' if mean is None else f'{mean:.4g}'}, "
          f"{summary.get('env_steps')} env steps, "
          f"{summary.get('seconds', 0):.0f} s")


def last_error(run_dir: str) -> str:
  """The last `error:` line of a run's log (train.py's one-line errors)."""
  try:
    with open(os.path.join(run_dir, LOG), errors="replace") as f:
      lines = [line.strip() for line in f if line.startswith("error:")]
  except OSError:
    return ""
  return f": {lines[-1]}" if lines else ""


# ---------------------------------------------------------------- processes


def pinned_cores(jobs: int) -> Optional[List[int]]:
  """The core of each of the `jobs` slots, or None (no pinning) where
  affinity cannot be set or there are fewer cores than jobs."""
  if not hasattr(os, "sched_setaffinity"):
    return None
  cores = sorted(os.sched_getaffinity(0))
  return cores[:jobs] if jobs <= len(cores) else None


def child_env(jobs: int) -> Dict[str, str]:
  """One XLA thread a run unless the user chose XLA_FLAGS; logs as written."""
  env = dict(os.environ, PYTHONUNBUFFERED="1")
  env.setdefault("XLA_FLAGS", ONE_THREAD)
  if jobs > 1:  # on a GPU, JAX would give each run 75% of its memory
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  return env


def _prctl():
  """libc's prctl on Linux, else None (loaded before any fork)."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    return ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def child_setup(core: Optional[int], parent: int):
  """Run in the child between fork and exec: pins it to `core`, and asks
  Linux to send it SIGTERM should the suite die (kill -9), so that it saves
  and stops rather than train on where no suite waits for it."""
  def setup():
    if core is not None:
      os.sched_setaffinity(0, {core})
    if _PRCTL is not None:
      _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
      if os.getppid() != parent:  # the suite died before the request
        os._exit(1)
  return setup


@dataclasses.dataclass
class Running:
  """A run being trained: its process, its job slot (and core), its log."""
  run: Run
  proc: subprocess.Popen
  slot: int
  log: IO[str]


class Suite:
  """Starts the runs `jobs` at a time, reports each, and stops them on a
  signal: they get it, save, and the suite waits for them."""

  def __init__(self, runs: List[Tuple[Run, str]], args, overrides, config,
               lock_fd: int):
    self.pending = list(runs)
    self.args, self.overrides, self.config = args, overrides, config
    self.lock_fd = lock_fd
    self.cores = pinned_cores(args.jobs)
    self.env = child_env(args.jobs)
    self.running: List[Running] = []
    self.signals: List[int] = []
    self.failed = 0
    self.done = 0

  def on_signal(self, signum, frame):
    """Only records and forwards: printing here could interrupt a print."""
    del frame
    self.signals.append(signum)
    self.forward()

  def forward(self):
    sig = signal.SIGTERM if self.signals[-1] == signal.SIGHUP else (
        self.signals[-1])
    for r in self.running:
      with contextlib.suppress(ProcessLookupError):
        r.proc.send_signal(sig)

  def start(self, run: Run, state: str) -> None:
    slot = min(set(range(self.args.jobs)) - {r.slot for r in self.running})
    if state == NEW and clear_attempt(run.run_dir):
      print(f"{run.name}: cleared an attempt that left no checkpoint",
            flush=True)
    os.makedirs(run.run_dir, exist_ok=True)
    command = train_command(run, state, self.overrides)
    log = open(os.path.join(run.run_dir, LOG), "a")
    log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} minatar_suite.py: "
              f"{shlex.join(command)}\n")
    log.flush()
    core = self.cores[slot] if self.cores else None
    # Its own session: a Ctrl-C in the terminal reaches the suite alone,
    # which forwards it once.
    proc = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        env=self.env, start_new_session=True,
        pass_fds=(self.lock_fd,), preexec_fn=child_setup(core, os.getpid()))
    self.running.append(Running(run, proc, slot, log))
    if self.signals:  # came while it started
      self.forward()
    where = f"core {core}; " if core is not None else ""
    print(f"start  {run.name}: {describe(run, state, self.config)} ({where}"
          f"log: {os.path.join(run.run_dir, LOG)})", flush=True)

  def reap(self) -> None:
    for r in [r for r in self.running if r.proc.poll() is not None]:
      self.running.remove(r)
      r.log.close()
      self.report(r.run, r.proc.returncode)

  def report(self, run: Run, code: int) -> None:
    summary = read_summary(run.run_dir)
    if code == 0 and finished(summary, self.config):
      self.done += 1
      print(f"done   {run.name}: {result(summary)}", flush=True)
    elif self.signals:  # 130 from train.py; other codes if hit as it began
      at = newest_checkpoint(run.run_dir)
      print(f"stopped {run.name}: " + (f"resumable from env step {at}"
            if at is not None else "before its first step; starts anew"),
            flush=True)
    else:
      self.failed += 1
      print(f"failed {run.name}: exit status {code}{last_error(run.run_dir)} "
            f"(log: {os.path.join(run.run_dir, LOG)})", flush=True)

  def run(self) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
      signal.signal(sig, self.on_signal)
    told = 0
    while self.pending or self.running:
      while (self.pending and not self.signals and
             len(self.running) < self.args.jobs):
        self.start(*self.pending.pop(0))
      if len(self.signals) > told:
        # Not killed on a second signal: a kill while a run saves would
        # leave it at its previous checkpoint, or with none.
        print(f"{'stopping' if not told else 'still stopping'}: waiting for "
              f"{len(self.running)} run(s) to save a checkpoint and stop",
              flush=True)
        told = len(self.signals)
        self.pending.clear()
      time.sleep(POLL_SECONDS)
      self.reap()


# ---------------------------------------------------------------- main


def lock_out(out: str) -> int:
  """Locks `out` for this suite and its runs (they inherit the descriptor);
  returns it."""
  os.makedirs(out, exist_ok=True)
  fd = os.open(os.path.join(out, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    raise SuiteError(f"{out} is in use by another minatar_suite.py (or by "
                     "runs one left running)") from None
  return fd


def write_gitignore(out: str) -> None:
  path = os.path.join(out, ".gitignore")
  if not os.path.exists(path):
    with open(path, "w") as f:
      f.write(GITIGNORE)


def plan(args, config) -> List[Tuple[Run, str]]:
  """Every run, seed by seed, with its state."""
  runs = [Run(game, seed, args.out) for seed in args.seeds
          for game in args.games]
  return [(run, run_state(run, config)) for run in runs]


def dry_run(runs: List[Tuple[Run, str]], overrides, config) -> int:
  for run, state in runs:
    line = f"{run.name}: {describe(run, state, config)}"
    if state in (NEW, RESUME):
      line += f"\n  {shlex.join(train_command(run, state, overrides))}"
    print(line)
  return 0


def main(argv: Sequence[str]) -> int:
  try:
    args, overrides = parse_cli(argv)
    config = check_overrides(overrides)
    if args.dry_run:
      return dry_run(plan(args, config), overrides, config)
    lock_fd = lock_out(args.out)  # before reading the runs' states
    return train_all(args, overrides, config, lock_fd)
  except (SuiteError, config_lib.ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:  # before any run started (then Suite has it)
    return 130


def train_all(args, overrides, config, lock_fd: int) -> int:
  """Skips, resumes and starts the runs; the exit status."""
  write_gitignore(args.out)
  runs = plan(args, config)
  for run, state in runs:
    if state in (DONE, BLOCKED):
      print(f"skip   {run.name}: {describe(run, state, config)}", flush=True)
  todo = [(run, state) for run, state in runs if state in (NEW, RESUME)]
  cores = pinned_cores(args.jobs)
  print(f"{len(todo)} of {len(runs)} runs to train, {args.jobs} at a time, "
        + (f"pinned to cores {', '.join(map(str, cores))}" if cores else
           "not pinned") + f", into {args.out}", flush=True)
  suite = Suite(todo, args, overrides, config, lock_fd)
  suite.run()
  blocked = sum(state == BLOCKED for _, state in runs)
  done = suite.done + sum(state == DONE for _, state in runs)
  print(f"{done} of {len(runs)} runs done", flush=True)
  if suite.signals:
    print("stopped: rerun the same command to continue", flush=True)
    return 130
  return 1 if suite.failed or blocked else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
