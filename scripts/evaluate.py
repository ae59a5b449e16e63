"""Plays fresh episodes with a trained checkpoint and prints mean/std return.

`python scripts/evaluate.py RUN_DIR [--episodes 100] [--greedy] [--seed 10000]`
RUN_DIR is a folder written by `scripts/train.py` (config.json + checkpoint/).
Acts with the target (prior) params, as training does.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from muesli_jax import checkpoint, envs as envs_lib, learner, training  # noqa: E402
from muesli_jax.actor import FrameStack  # noqa: E402
from muesli_jax.config import load_config_file  # noqa: E402


def load_run_config(run_dir: str) -> ml_collections.ConfigDict:
  """The run's config.json over the current defaults (older runs lack keys)."""
  with open(os.path.join(run_dir, "config.json")) as f:
    saved = json.load(f)
  config = load_config_file("lunar.py")
  with config.unlocked():
    for key, value in saved.items():
      config[key] = tuple(value) if isinstance(value, list) else value
  return config


def evaluate(run_dir: str, episodes: int, greedy: bool, seed: int,
             num_envs: int = 10):
  """Returns `[episodes]` returns of fresh episodes with the run's policy.

  Works for every config: vector states, stacked pixel frames, MinAtar,
  MiniGrid (Dict observations) and Atari; envs are built as in training.
  """
  config = load_run_config(run_dir)
  envs = envs_lib.make_vector_env(config, num_envs=num_envs, seed=seed)
  networks = training.build_networks(config, envs_lib.env_spec(envs,
                                                                config.env_id))
  like = learner.init_state(networks, config, jax.random.PRNGKey(0))
  state = checkpoint.restore(os.path.join(run_dir, "checkpoint"), like)

  @jax.jit
  def act(params, obs, key):
    logits = networks.predict(params, networks.represent(params, obs)).policy_logits
    return jnp.argmax(logits, -1) if greedy else jax.random.categorical(key, logits)

  obs, _ = envs.reset(seed=seed)
  frames = FrameStack(obs, config.stack)
  key = jax.random.PRNGKey(seed)
  returns, running = [], np.zeros(num_envs)
  after_end = np.zeros(num_envs, bool)
  # Every env plays until `episodes` have finished overall; counting only
  # episodes that start before the quota avoids favouring short episodes.
  started = num_envs
  counted = np.ones(num_envs, bool)
  while len(returns) < episodes:
    key, sub = jax.random.split(key)
    actions = np.asarray(act(state.target_params, frames.observation(), sub))
    obs, reward, terminated, truncated, _ = envs.step(actions)
    running += np.where(after_end, 0.0, reward)
    done = (terminated | truncated) & ~after_end
    for env in np.flatnonzero(done):
      if counted[env]:
        returns.append(running[env])
      running[env] = 0.0
      counted[env] = started < episodes
      started += 1
    # The step after an end is the autoreset: its frame starts a new stack.
    frames.push(obs, after_end)
    after_end = done
  envs.close()
  return np.array(returns[:episodes])


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("run_dir")
  parser.add_argument("--episodes", type=int, default=100)
  parser.add_argument("--greedy", action="store_true",
                      help="argmax actions instead of sampling")
  parser.add_argument("--seed", type=int, default=10_000)
  args = parser.parse_args()
  if not os.path.isfile(os.path.join(args.run_dir, "config.json")):
    print(f"error: {args.run_dir} is not a run folder (no config.json)",
          file=sys.stderr)
    return 2
  try:
    returns = evaluate(args.run_dir, args.episodes, args.greedy, args.seed)
  except (envs_lib.UnknownEnvError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  mode = "greedy" if args.greedy else "sampled"
  print(f"{len(returns)} episodes ({mode} actions): mean {returns.mean():.1f}, "
        f"std {returns.std():.1f}, min {returns.min():.1f}, "
        f"max {returns.max():.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
