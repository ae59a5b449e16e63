"""Muesli on gymnax's MinAtar Breakout, the whole loop on the device (Anakin).

The network and learning settings of minatar.py; gymnax's own MinAtar
(`gymnax:Breakout-MinAtar`, also `Asterix-MinAtar`, `Freeway-MinAtar`,
`SpaceInvaders-MinAtar`) in place of the `minatar` package, with many envs
per device. Meant for an accelerator: on a CPU, minatar.py is the faster way.
"""

from configs import minatar


def get_config():
  c = minatar.get_config()
  c.env_id = "gymnax:Breakout-MinAtar"
  c.num_envs = 256
  c.steps_per_update = 1  # 256 env steps per update
  c.batch_size = 256  # x 16 positions: a replay ratio of 16, as minatar.py
  c.replay_capacity = 1_000  # steps per env: 256k env steps
  c.iterations_per_call = 100  # updates per jitted call (one host round trip)
  c.checkpoint_interval = 0  # Anakin runs are not checkpointed
  c.eval_interval = 0  # nor evaluated on separate episodes
  return c
