"""Muesli with continuous actions on Pendulum-v1 (sampled CMPO).

A quick check of the continuous agent: mean100 above -200 within 50k env
steps is the target. Rewards are -16.3..0 a step, so the value support
spans the h-transformed -1630 (a discount of 0.99) to a little above 0.
"""

from configs import lunar


def get_config():
  c = lunar.get_config()
  c.env_id = "Pendulum-v1"
  c.total_env_steps = 50_000
  c.num_envs = 8
  c.discount = 0.99
  c.replay_capacity = 6_250  # x 8 envs: the whole run
  c.hidden_size = 128
  c.value_min = -45.0
  c.value_max = 15.0
  c.solve_return = -200.0
  c.checkpoint_interval = 10_000
  c.eval_interval = 10_000
  return c
