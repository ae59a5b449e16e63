"""Muesli with continuous actions on LunarLanderContinuous-v3.

The discrete config's agent with a Gaussian policy over the two engine
throttles (main, lateral), learned with sampled CMPO (`action_samples`
actions from the prior per state).
"""

from configs import lunar


def get_config():
  c = lunar.shared_config()
  c.env_id = "LunarLanderContinuous-v3"
  return c
