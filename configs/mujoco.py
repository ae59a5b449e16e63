"""Muesli with continuous actions on gymnasium's MuJoCo tasks (v5).

`HalfCheetah-v5` by default; any other runs by its id, e.g.
`--config.env_id=Hopper-v5` (needs the `mujoco` extra). Episodes are 1000
steps; rewards of a running cheetah are ~1-12 a step, so with a discount of
0.99 values reach ~1200, h-transformed ~36: the support spans [-20, 50].

The policy is a tanh-squashed Gaussian. With the clipped Gaussian of the
other continuous configs, HalfCheetah's policy means sat within 1% of an
action bound in four of the six dimensions after 1,000 updates (16k env
steps), where a tanh mean has no gradient left, and by 32k env steps the
stds had grown to 0.5-12 to reach the actions inside: the cheetah flailed
(mean100 -260 at 200k env steps, about a random policy's score).
"""

from configs import lunar


def get_config():
  c = lunar.shared_config()
  c.env_id = "HalfCheetah-v5"
  c.total_env_steps = 1_000_000
  c.num_envs = 16
  c.discount = 0.99
  c.value_min = -20.0
  c.value_max = 50.0
  c.num_bins = 71
  c.policy_squash = True
  c.solve_return = 1e9  # no "solved" level: report the curve
  c.checkpoint_interval = 100_000
  c.eval_interval = 100_000
  return c
