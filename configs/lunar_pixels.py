"""Muesli on LunarLander-v3 seen only through its rendered frames.

The state vector is never shown to the agent: each step renders the
400x600 RGB frame, which is resized to 64x96 (the aspect ratio kept) and
turned grey; 4 frames are stacked so velocities can be seen. The envs run
in subprocesses, because rendering is the slow part of a step.
"""

from configs import lunar


def get_config():
  c = lunar.shared_config()
  c.pixels = True
  c.frame_size = 64
  c.frame_width = 96
  c.grayscale = True
  c.stack = 4
  c.async_envs = True
  c.total_env_steps = 2_000_000
  c.checkpoint_interval = 100_000  # the replay holds ~2.4 GiB of frames
  c.keep_checkpoints = 2
  c.num_envs = 16
  c.steps_per_update = 1
  c.replay_capacity = 25_000  # x 16 envs = 400k frames (~2.4 GiB)
  # The vector config's learner and model; only the torso sees pixels:
  # 64x96 -> 32x48 -> 16x24 -> 8x12 over three ResNet sections.
  c.torso = "conv"
  c.conv_channels = (16, 32, 32)
  c.conv_blocks = 1
  return c
