"""Trains Muesli.

  python scripts/train.py --config lunar.py [--run-name NAME]
      [--config.KEY=VALUE ...]
  python scripts/train.py --resume runs/RUN [--config.KEY=VALUE ...]

A run trains into `LOGDIR/<env>_seed<seed>_<date>-<time>`, or into
`LOGDIR/NAME` with `--run-name NAME`: a folder known in advance, for
scripts that find their runs again (scripts/minatar_suite.py); it must not
hold a run yet.

`--resume` continues a run from its newest complete checkpoint, with the
run's own config (overrides such as a larger total_env_steps allowed).
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_stopping = []


def _stop(signum, frame):
  """The first Ctrl-C or SIGTERM stops the run: `train` saves a checkpoint
  and the summary, then returns. Later ones only say so: an exception
  raised anywhere while the run closes could cut its save short."""
  del frame
  if _stopping:
    print("already stopping: the checkpoint and summary are being written",
          file=sys.stderr, flush=True)
    return
  _stopping.append(signum)
  raise KeyboardInterrupt


if __name__ == "__main__":
  # Ctrl-C and SIGTERM (e.g. from a job scheduler) both stop cleanly, even
  # when the shell started us in the background with SIGINT ignored, and
  # from the first moment: importing jax takes seconds.
  signal.signal(signal.SIGINT, _stop)
  signal.signal(signal.SIGTERM, _stop)
try:
  from muesli_jax import anakin, envs, training  # noqa: E402
  from muesli_jax.config import parse_args, parse_resume_args  # noqa: E402
  from muesli_jax.errors import (CheckpointError, ConfigError,  # noqa: E402
                                 NonFiniteLossError, UnknownEnvError)
except KeyboardInterrupt:
  sys.exit(130)


def pop_run_name(argv):
  """`(NAME or None, argv without --run-name NAME)`."""
  args = list(argv)
  for i, arg in enumerate(args):
    if arg == "--run-name" or arg.startswith("--run-name="):
      if "=" in arg:
        name, rest = arg.split("=", 1)[1], args[:i] + args[i + 1:]
      elif i + 1 < len(args) and not args[i + 1].startswith("-"):
        name, rest = args[i + 1], args[:i] + args[i + 2:]
      else:
        raise ConfigError("--run-name needs a folder name, e.g. --run-name "
                          "breakout_s0")
      if not name or name in (".", "..") or os.sep in name:
        raise ConfigError(f"--run-name takes one folder name (the run goes "
                          f"into LOGDIR/NAME), got {name!r}")
      return name, rest
  return None, args


def named_run_dir(config, name: str) -> str:
  """`LOGDIR/NAME`, refused where a run already is: a new run there would
  mix its files with the old one's (that one continues with --resume)."""
  run_dir = os.path.join(config.logdir, name)
  if os.path.exists(os.path.join(run_dir, "config.json")):
    raise ConfigError(f"{run_dir} already holds a run: continue it with "
                      f"--resume {run_dir}, or remove it")
  return run_dir


def main(argv) -> int:
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__)
    return 0
  try:
    name, argv = pop_run_name(argv)
    if "--resume" in argv:
      if name is not None:
        raise ConfigError("--run-name names a new run; --resume continues "
                          "the run in its own folder")
      run_dir, config = parse_resume_args(argv)
    else:
      config = parse_args(argv)
      run_dir = named_run_dir(config, name) if name is not None else None
    resume = "--resume" in argv
    if anakin.is_anakin(config):  # gymnax: the whole loop on the device
      summary = anakin.train_anakin(config, run_dir=run_dir, resume=resume)
    else:
      envs.check_env_id(config.env_id)
      summary = training.train(config, run_dir=run_dir, resume=resume)
  except (ConfigError, UnknownEnvError, CheckpointError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    # Before the run had a state to save (imports, envs, the replay).
    print("\ninterrupted before training started: nothing to save",
          file=sys.stderr)
    return 130
  solved = summary["solved_at_steps"]
  if solved is not None:
    seconds = summary["solved_at_seconds"]
    # A first run's start-up counts: what one waits from the command on.
    since_start = ("" if summary.get("resumed_at") or
                   summary.get("startup_seconds") is None else
                   f"; {seconds + summary['startup_seconds']:.0f} s after the "
                   "command started")
    print(f"mean return of the last 100 episodes first reached "
          f"{config.solve_return:g} at {solved} env steps "
          f"({seconds:.0f} s of training{since_start})")
  if summary.get("checkpoint"):
    print(f"checkpoint: {summary['checkpoint']}")
  if summary.get("eval_return_mean") is not None:
    print(f"evaluation: {summary['eval_return_mean']:.4g} ± "
          f"{summary['eval_return_std']:.3g} "
          f"({config.eval_episodes} episodes at {summary['env_steps']} steps)")
  mean = summary["mean_return_last_100"]
  print(f"mean return of the last 100 episodes: "
        f"{'n/a' if mean is None else f'{mean:.4g}'} "
        f"({summary['episodes']} episodes, {summary['env_steps']} env steps, "
        f"{summary['seconds']:.0f} s)")
  return 130 if summary.get("interrupted") else 0


if __name__ == "__main__":
  code = main(sys.argv[1:])
  # The run is saved: a Ctrl-C now would only kill the interpreter's
  # shutdown with a signal instead of this exit code.
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  signal.signal(signal.SIGTERM, signal.SIG_IGN)
  sys.exit(code)
