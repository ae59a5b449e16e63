"""Muesli on MiniGrid (Chevalier-Boisvert et al. 2023), from its image.

Any MiniGrid or BabyAI id runs by changing the id only, e.g.
`--config.env_id=MiniGrid-Empty-8x8-v0`. The Dict observation is reduced
to its egocentric `image` `[7, 7, 3]` of small integer codes (object,
colour, state); the direction and the mission string are not used (the view
already turns with the agent).
"""

from configs import lunar


def get_config():
  c = lunar.shared_config()
  c.env_id = "MiniGrid-DoorKey-5x5-v0"
  c.total_env_steps = 300_000
  c.num_envs = 16
  c.stack = 1
  c.discount = 0.99
  c.steps_per_update = 1
  c.learning_rate = 3e-4
  c.replay_capacity = 6_250  # x 16 envs = 100k steps
  c.entropy_weight = 0.003
  c.torso = "conv"
  c.conv_channels = (16, 32)  # 7x7 -> 4x4 -> 2x2
  c.conv_blocks = 0
  c.hidden_size = 128
  c.head_size = 128
  c.dynamics_core = "mlp"
  c.observation_scale = 10.0  # codes are 0..10
  c.value_min = -5.0  # returns lie in [0, 1]
  c.value_max = 5.0
  c.num_bins = 41
  c.solve_return = 0.9
  return c
