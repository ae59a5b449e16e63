"""Trains Muesli: `python scripts/train.py --config lunar.py [--config.KEY=VALUE ...]`."""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muesli_jax import envs, training  # noqa: E402
from muesli_jax.config import ConfigError, parse_args  # noqa: E402
from muesli_jax.envs import UnknownEnvError  # noqa: E402


def _stop(signum, frame):
  raise KeyboardInterrupt  # train() saves a checkpoint and the logs, then exits


def main(argv) -> int:
  # Ctrl-C and SIGTERM (e.g. from a job scheduler) both stop cleanly, even
  # when the shell started us in the background with SIGINT ignored.
  signal.signal(signal.SIGINT, _stop)
  signal.signal(signal.SIGTERM, _stop)
  if any(a in ("-h", "--help") for a in argv):
    print(__doc__)
    return 0
  try:
    config = parse_args(argv)
    envs.check_env_id(config.env_id)
    summary = training.train(config)
  except (ConfigError, UnknownEnvError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except training.NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  solved = summary["solved_at_steps"]
  if solved is not None:
    print(f"mean return of the last 100 episodes first reached "
          f"{config.solve_return:g} at {solved} env steps "
          f"({summary['solved_at_seconds']:.0f} s)")
  print(f"checkpoint: {summary['checkpoint']}")
  mean = summary["mean_return_last_100"]
  print(f"mean return of the last 100 episodes: "
        f"{'n/a' if mean is None else f'{mean:.4g}'} "
        f"({summary['episodes']} episodes, {summary['env_steps']} env steps, "
        f"{summary['seconds']:.0f} s)")
  return 130 if summary["interrupted"] else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
