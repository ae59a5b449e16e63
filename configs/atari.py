"""Muesli on Atari (ale-py) with the usual preprocessing.

No-op starts (up to 30), frame skip 4 with max-pooling of the last two
frames, 84x84 grey frames, 4 stacked, sticky actions 0.25 (Machado et al.
2018), an episode is a whole game (no end on life loss), rewards not
clipped. Any game runs by changing the id only, e.g.
`--config.env_id=ALE/Breakout-v5`. The network follows the paper's
IMPALA-size agent: a ResNet torso (16, 32, 32 channels, two residual blocks
each) and an LSTM model; values and rewards on 601 bins in [-300, 300].
"""

from configs import lunar


def get_config():
  c = lunar.shared_config()
  c.env_id = "ALE/Pong-v5"
  c.total_env_steps = 10_000_000  # agent steps (x4 frames)
  c.num_envs = 16
  c.stack = 4
  c.frame_size = 84
  c.grayscale = True
  c.sticky_actions = 0.25
  c.noop_max = 30
  c.full_action_space = False
  # Learner (Muesli Table 5, except the batch, sized for one GPU).
  c.batch_size = 64
  c.sequence_length = 30
  c.steps_per_update = 4
  c.discount = 0.995
  c.learning_rate = 3e-4
  c.replay_capacity = 31_250  # x 16 envs = 500k steps (~3.5 GiB of frames)
  c.replay_proportion = 0.75
  c.warmup_steps = 256
  c.entropy_weight = 0.0
  c.torso = "conv"
  c.conv_channels = (16, 32, 32)
  c.conv_blocks = 2
  c.hidden_size = 256
  c.head_size = 256
  c.dynamics_core = "lstm"
  c.num_bins = 601
  c.value_min = -300.0
  c.value_max = 300.0
  c.log_interval = 100
  c.solve_return = 1e9  # no "solved" level: report the curve
  # The replay (~3.5 GiB of frames, less once compressed) is saved with
  # every checkpoint: keep them rare.
  c.checkpoint_interval = 500_000
  c.keep_checkpoints = 2
  c.eval_interval = 250_000
  c.eval_episodes = 5
  return c
