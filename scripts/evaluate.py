"""Plays fresh episodes with a trained checkpoint and prints mean/std return.

`python scripts/evaluate.py RUN_DIR [--episodes 100] [--greedy] [--seed 10000]
[--video episode.mp4|episode.gif] [--fps N] [--out evaluation.json]`
RUN_DIR is a folder written by `scripts/train.py` (config.json and its
checkpoints). Acts with the target (prior) params, as training does.
`--video` records env 0's first episode (up to 1000 frames) and writes it.
`--out` writes every episode's return and length, the checkpoint's env step
and the settings as JSON (what results tables pool over runs).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from muesli_jax import builder, checkpoint, envs as envs_lib, learner  # noqa: E402
from muesli_jax import video  # noqa: E402
from muesli_jax.config import ConfigError, load_run_config  # noqa: E402

from muesli_jax.evaluation import EvalResult, Evaluator  # noqa: E402
from muesli_jax.hparams import LearnerHparams  # noqa: E402


def evaluate(run_dir: str, episodes: int, greedy: bool, seed: int,
             num_envs: int = 10, record: bool = False):
  """`(EvalResult, fps)` of `episodes` fresh episodes with the run's policy.

  Works for every config: vector states, stacked pixel frames, MinAtar,
  MiniGrid (Dict observations) and Atari; envs are built as in training.
  """
  config = load_run_config(run_dir)
  probe = envs_lib.make_vector_env(config, num_envs=1, asynchronous=False)
  spec = envs_lib.env_spec(probe, config.env_id)
  probe.close()
  networks = builder.build_networks(config, spec)
  like = learner.init_state(networks, LearnerHparams.from_config(config),
                            jax.random.PRNGKey(0))
  state = checkpoint.load_train_state(run_dir, like)
  with Evaluator(config, networks, episodes, greedy,
                 num_envs=num_envs) as evaluator:
    result: EvalResult = evaluator(state.target_params, seed, record=record)
    return result, evaluator.fps


def write_result(path: str, run_dir: str, result: EvalResult, greedy: bool,
                 seed: int) -> None:
  step = None
  if os.path.isdir(os.path.join(run_dir, checkpoint.CHECKPOINT_DIR)):
    checkpoints = checkpoint.Checkpoints(run_dir)
    try:
      step = checkpoints.latest_step()
    finally:
      checkpoints.close()
  record = dict(run_dir=run_dir, checkpoint_env_steps=step,
                greedy=greedy, seed=seed, episodes=len(result.returns),
                mean=float(result.returns.mean()),
                returns=[float(r) for r in result.returns],
                lengths=[int(n) for n in result.lengths])
  with open(path, "w") as f:
    json.dump(record, f, indent=1)


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("run_dir")
  parser.add_argument("--episodes", type=int, default=100)
  parser.add_argument("--greedy", action="store_true",
                      help="argmax actions instead of sampling")
  parser.add_argument("--seed", type=int, default=10_000)
  parser.add_argument("--video", metavar="PATH",
                      help="write env 0's first episode to PATH (.mp4 or .gif)")
  parser.add_argument("--fps", type=float, default=None,
                      help="video frame rate (default: the env's real time)")
  parser.add_argument("--out", metavar="PATH",
                      help="write the episodes' returns and lengths as JSON")
  args = parser.parse_args()

  def fail(message) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2

  if args.episodes < 1:
    return fail(f"--episodes must be positive, got {args.episodes}")
  if args.fps is not None and args.fps <= 0:
    return fail(f"--fps must be positive, got {args.fps}")
  if args.video:
    try:  # Before the evaluation, not after it.
      video.check_video_path(args.video)
    except (ValueError, ImportError) as e:
      return fail(e)
  if not os.path.isfile(os.path.join(args.run_dir, "config.json")):
    return fail(f"{args.run_dir} is not a run folder (no config.json)")
  if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
    return fail(f"--out {args.out}: its folder does not exist")
  try:
    result, fps = evaluate(args.run_dir, args.episodes, args.greedy,
                           args.seed, record=bool(args.video))
  except (envs_lib.UnknownEnvError, checkpoint.CheckpointError, ConfigError,
          OSError) as e:
    return fail(e)
  returns = result.returns
  mode = "greedy" if args.greedy else "sampled"
  print(f"{len(returns)} episodes ({mode} actions): mean {returns.mean():.1f}, "
        f"std {returns.std():.1f}, min {returns.min():.1f}, "
        f"max {returns.max():.1f}")
  if args.out:
    try:
      write_result(args.out, args.run_dir, result, args.greedy, args.seed)
    except OSError as e:
      return fail(f"cannot write {args.out}: {e}")
    print(f"episodes: {args.out}")
  if args.video:
    try:
      video.write_video(args.video, result.frames, fps=args.fps or fps)
    except OSError as e:
      return fail(f"cannot write {args.video}: {e}")
    print(f"video: {args.video} ({len(result.frames)} frames of env 0's "
          "first episode)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
