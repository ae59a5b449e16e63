"""The edge where a config becomes the parts a loop runs: the networks for
an env and the replay sized for it (checked against the memory there is)."""

import os
from typing import Optional

from muesli_jax import networks as nets
from muesli_jax import replay as replay_lib
from muesli_jax.errors import ConfigError
from muesli_jax.types import EnvSpec, stacked_shape, window_length


def build_networks(config, spec: EnvSpec) -> nets.MuesliNetworks:
  """The networks for `spec`'s observations (stacked `config.stack` times)
  and actions."""
  scale = config.observation_scale or spec.observation_scale
  return nets.make_networks(
      stacked_shape(spec.observation_shape, config.stack), spec.num_actions,
      config.num_bins, config.hidden_size, config.num_blocks,
      config.head_size, config.torso, config.dynamics_core,
      observation_scale=scale, conv_channels=tuple(config.conv_channels),
      conv_blocks=config.conv_blocks, action_dim=spec.action_dim,
      policy_init_std=config.policy_init_std,
      policy_min_std=config.policy_min_std,
      policy_squash=config.policy_squash)


def available_memory_bytes() -> int:
  """MemAvailable from /proc/meminfo; physical memory where that is missing."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def make_replay(config, spec: EnvSpec, verbose: bool = True,
                seed: Optional[int] = None) -> replay_lib.SequenceReplay:
  """The run's replay, sampling with `seed` (default `config.seed`); a size
  that does not fit in memory is a `ConfigError` raised before anything is
  allocated."""
  nbytes = replay_lib.replay_nbytes(config.replay_capacity, config.num_envs,
                                    spec.observation_shape,
                                    spec.observation_dtype, spec.policy_size,
                                    spec.action_dim)
  available = available_memory_bytes()
  if nbytes > 0.9 * available:
    raise ConfigError(
        f"the replay needs {nbytes / 2**30:.2f} GiB ({config.replay_capacity} "
        f"steps x {config.num_envs} envs of {spec.observation_shape} "
        f"{spec.observation_dtype}) but only {available / 2**30:.2f} GiB of "
        "memory is available: lower replay_capacity or num_envs")
  if verbose:
    print(f"replay: {nbytes / 2**30:.3f} GiB ({config.replay_capacity} steps x "
          f"{config.num_envs} envs, frames {spec.observation_shape} "
          f"{spec.observation_dtype}, stack {config.stack} at sampling)",
          flush=True)
  return replay_lib.SequenceReplay(
      config.replay_capacity, config.num_envs, spec.observation_shape,
      spec.observation_dtype, spec.policy_size,
      window_length(config.sequence_length, config.unroll_steps),
      config.discount, config.value_target == "mc",
      config.seed if seed is None else seed, stack=config.stack,
      action_dim=spec.action_dim)


def steps_before_first_batch(config) -> int:
  """Vector steps the replay holds before the first batch is drawn: the
  warm-up and one window."""
  return config.warmup_steps + window_length(config.sequence_length,
                                             config.unroll_steps)
