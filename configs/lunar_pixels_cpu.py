"""LunarLander-v3 from pixels, sized for a laptop CPU.

`lunar_pixels.py` with DQN's strided conv torso in place of the ResNet
(17 against 133 GFLOP per update: 3.4 against 0.2 updates/s on a 2-core
CPU) and one update every 2 vector steps, so that a run of 500k env steps
takes about two hours there. The frames (64x96 grey, 4 stacked) are the
same.
"""

from configs import lunar_pixels


def get_config():
  c = lunar_pixels.get_config()
  c.torso = "dqn"
  c.conv_channels = (16, 32, 32)  # 8x8/4 -> 16x24, 4x4/2 -> 8x12, 3x3 -> 8x12
  c.steps_per_update = 2
  c.total_env_steps = 500_000  # the lr decays to zero over the run
  return c
