"""Muesli on gymnax's CartPole-v1, the whole loop on the device (Anakin).

Many envs and one update per vector step: each update sees 256 new env
steps and learns on 64 x 8 positions (a replay ratio of 2).
"""

from configs import cartpole


def get_config():
  c = cartpole.get_config()
  c.env_id = "gymnax:CartPole-v1"
  c.num_envs = 256
  c.total_env_steps = 1_000_000
  c.replay_capacity = 1_000  # steps per env: the last ~1000 updates' data
  c.batch_size = 64
  c.sequence_length = 8
  c.learning_rate = 2e-3
  c.discount = 0.997  # sees the cart drifting off long before it does
  c.iterations_per_call = 100  # updates per jitted call (one host round trip)
  c.solve_return = 475.0
  c.stop_when_solved = True
  c.checkpoint_interval = 0  # Anakin runs are not checkpointed
  c.eval_interval = 0  # nor evaluated on separate episodes
  return c
