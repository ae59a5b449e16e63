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


def evaluate(run_dir: str, episodes: int, greedy: bool, seed: int,
             num_envs: int = 10):
  with open(os.path.join(run_dir, "config.json")) as f:
    config = ml_collections.ConfigDict(json.load(f))
  envs = envs_lib.make_vector_env(config.env_id, num_envs, seed)
  networks = training.build_networks(config, envs_lib.env_spec(envs))
  like = learner.init_state(networks, config, jax.random.PRNGKey(0))
  state = checkpoint.restore(os.path.join(run_dir, "checkpoint"), like)

  @jax.jit
  def act(params, obs, key):
    logits = networks.predict(params, networks.represent(params, obs)).policy_logits
    return jnp.argmax(logits, -1) if greedy else jax.random.categorical(key, logits)

  if config.stack != 1:
    raise SystemExit("error: evaluate.py handles stack=1 configs only")
  obs, _ = envs.reset(seed=seed)
  key = jax.random.PRNGKey(seed)
  returns, running = [], np.zeros(num_envs)
  after_end = np.zeros(num_envs, bool)
  # Every env plays until `episodes` have finished overall; counting only
  # episodes that start before the quota avoids favouring short episodes.
  started = num_envs
  counted = np.ones(num_envs, bool)
  while len(returns) < episodes:
    key, sub = jax.random.split(key)
    actions = np.asarray(act(state.target_params, obs, sub))
    obs, reward, terminated, truncated, _ = envs.step(actions)
    running += np.where(after_end, 0.0, reward)
    done = (terminated | truncated) & ~after_end
    for env in np.flatnonzero(done):
      if counted[env]:
        returns.append(running[env])
      running[env] = 0.0
      counted[env] = started < episodes
      started += 1
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
  returns = evaluate(args.run_dir, args.episodes, args.greedy, args.seed)
  mode = "greedy" if args.greedy else "sampled"
  print(f"{len(returns)} episodes ({mode} actions): mean {returns.mean():.1f}, "
        f"std {returns.std():.1f}, min {returns.min():.1f}, "
        f"max {returns.max():.1f}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
