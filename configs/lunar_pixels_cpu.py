"""LunarLander-v3 from pixels, sized for a laptop CPU.

`lunar_pixels.py` with DQN's strided conv torso in place of the ResNet
(17 against 133 GFLOP per update: 3.6 against 0.34 updates/s, measured
side by side on a 2-core CPU) and one update every 2 vector steps, so that
a run of 500k env steps takes about 90 minutes there (95 env steps/s). The
frames (64x96 grey, 4 stacked) are the same. It learns more slowly per env
step than the ResNet: a mean100 of -28 at 500k (seed 0).
"""

from configs import lunar_pixels


def get_config():
  c = lunar_pixels.get_config()
  c.torso = "dqn"
  c.conv_channels = (16, 32, 32)  # 8x8/4 -> 16x24, 4x4/2 -> 8x12, 3x3 -> 8x12
  c.steps_per_update = 2
  c.total_env_steps = 500_000  # the lr decays to zero over the run
  return c
