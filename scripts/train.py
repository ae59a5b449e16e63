"""Trains Muesli.

  python scripts/train.py --config lunar.py [--config.KEY=VALUE ...]
  python scripts/train.py --resume runs/RUN [--config.KEY=VALUE ...]

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


def main(argv) -> int:
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__)
    return 0
  try:
    if "--resume" in argv:
      run_dir, config = parse_resume_args(argv)
    else:
      config, run_dir = parse_args(argv), None
    if anakin.is_anakin(config):  # gymnax: the whole loop on the device
      summary = anakin.train_anakin(config, run_dir=run_dir,
                                    resume=run_dir is not None)
    else:
      envs.check_env_id(config.env_id)
      summary = training.train(config, run_dir=run_dir,
                               resume=run_dir is not None)
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
    print(f"mean return of the last 100 episodes first reached "
          f"{config.solve_return:g} at {solved} env steps "
          f"({summary['solved_at_seconds']:.0f} s)")
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
