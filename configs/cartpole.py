"""Muesli on CartPole-v1: a fast check that the agent learns."""

from configs import lunar


def get_config():
  c = lunar.shared_config()
  c.env_id = "CartPole-v1"
  c.num_envs = 8
  c.total_env_steps = 50_000
  c.replay_capacity = 5_000
  c.hidden_size = 64
  c.head_size = 64
  c.num_blocks = 1
  c.discount = 0.99
  c.entropy_weight = 0.0
  c.solve_return = 475.0
  c.checkpoint_interval = 10_000
  c.eval_interval = 10_000
  return c
