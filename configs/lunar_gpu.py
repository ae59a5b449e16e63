"""LunarLander-v3 sized for one GPU: 4x the envs and 4x the batch of
lunar.py, so every env step is still sampled as often (the replay ratio,
batch_size x sequence_length / (num_envs x steps_per_update) = 32), with
the actor on a thread on the host's CPU while the update runs on the GPU.

The recipe for another device: scale num_envs and batch_size by the same
factor, divide replay_capacity and warmup_steps by it (they count vector
steps, so the replay keeps its size in transitions), and check steps to
solve against lunar.py (docs/performance.md has the figures).
"""

from configs import lunar


def get_config():
  c = lunar.shared_config()
  scale = 4
  c.num_envs = 16 * scale
  c.batch_size = 32 * scale
  c.replay_capacity = 12_500 // scale
  c.warmup_steps = 64 // scale
  c.async_acting = True  # act on a thread while the GPU updates
  c.actor_device = "cpu"  # the small policy steps faster there than launched on a GPU
  c.log_interval = 200  # updates: a log costs a device-to-host copy
  return c
