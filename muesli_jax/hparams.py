"""The hyperparameters of the learner, the networks and the replay.

Frozen, typed records, one per concern: the learner's math, the networks
and the replay read these, never the run's whole `ConfigDict`. Each is built
from a config by `from_config` (reading its attributes) and checks its own
values when built: a bad value raises `ConfigError` with one line, so each
rule lives here once and `config.validate` applies it by building them.

Defaults are those of `configs/lunar.py`.
"""

import dataclasses
from typing import Tuple

from muesli_jax.errors import ConfigError
from muesli_jax.types import window_length

VALUE_TARGETS = ("retrace", "nstep", "mc")
# The forms of L_pg, see `losses.policy_loss`.
POLICY_GRADIENT_FORMS = ("truncated_is", "surrogate")
TORSOS = ("mlp", "conv", "dqn")
DYNAMICS_CORES = ("mlp", "lstm")


def _one_of(name: str, value, allowed) -> None:
  if value not in allowed:
    listed = ", ".join(allowed[:-1]) + " or " + allowed[-1]
    raise ConfigError(f"{name} must be {listed}, got {value!r}")


def _positive(record, *names: str) -> None:
  for name in names:
    value = getattr(record, name)
    if not value > 0:
      raise ConfigError(f"{name} must be positive, got {value}")


def _unit(record, *names: str) -> None:
  for name in names:
    value = getattr(record, name)
    if not 0.0 <= value <= 1.0:
      raise ConfigError(f"{name} must be in [0, 1], got {value}")


def total_updates(total_env_steps: int, num_envs: int,
                  steps_per_update: int) -> int:
  """Updates in a run: one per `steps_per_update` vector-env steps."""
  return max(1, total_env_steps // (num_envs * steps_per_update))


@dataclasses.dataclass(frozen=True)
class LearnerHparams:
  """What the update reads (`learner.make_update`): targets, losses, the
  optimiser. `T = sequence_length`, `K = unroll_steps`."""
  unroll_steps: int = 5
  sequence_length: int = 16
  discount: float = 0.997
  # Loss weights (Muesli Eq. 9 and Sec. 4.2); the entropy bonus is not in
  # the paper.
  pg_weight: float = 1.0
  model_weight: float = 1.0
  value_weight: float = 0.25
  reward_weight: float = 1.0
  kl_weight: float = 1.0
  entropy_weight: float = 0.003
  # The prior of pi_cmpo: a mixture of the target, behaviour and uniform
  # policies (App. F.2); the weights sum to 1.
  prior_mix_target: float = 0.967
  prior_mix_behaviour: float = 0.03
  prior_mix_uniform: float = 0.003
  retrace_lambda: float = 0.95
  value_target: str = "retrace"  # one of VALUE_TARGETS
  target_update_rate: float = 0.1
  adv_norm_decay: float = 0.99
  cmpo_clip: float = 1.0
  ratio_clip: float = 1.0
  policy_gradient: str = "truncated_is"  # one of POLICY_GRADIENT_FORMS
  # The support of the categorical value and reward heads (h-transformed).
  value_min: float = -30.0
  value_max: float = 30.0
  # Continuous actions: actions drawn from the prior per state (Sec. 4.2),
  # from `fold_in(PRNGKey(seed), step)`.
  action_samples: int = 16
  seed: int = 0
  # The optimiser (App. F.1): Adam, its update clipped, then the learning
  # rate, decayed linearly to 0 over `lr_decay_updates` when `lr_decay`.
  learning_rate: float = 6e-4
  lr_decay: bool = True
  lr_decay_updates: int = 1
  adam_eps: float = 1e-8
  update_clip: float = 1.0
  weight_decay: float = 0.0

  def __post_init__(self):
    _positive(self, "learning_rate", "sequence_length", "unroll_steps",
              "lr_decay_updates")
    _unit(self, "discount", "target_update_rate", "retrace_lambda",
          "adv_norm_decay")
    _one_of("value_target", self.value_target, VALUE_TARGETS)
    _one_of("policy_gradient", self.policy_gradient, POLICY_GRADIENT_FORMS)
    if self.value_min >= self.value_max:
      raise ConfigError("value_min must be below value_max")
    if self.action_samples < 1:
      raise ConfigError(f"action_samples must be at least 1, got "
                        f"{self.action_samples}")
    mix = (self.prior_mix_target + self.prior_mix_behaviour +
           self.prior_mix_uniform)
    if abs(mix - 1.0) > 1e-6:
      raise ConfigError(f"prior_mix_* must sum to 1, got {mix}")

  @classmethod
  def from_config(cls, config) -> "LearnerHparams":
    """From a config's attributes; the decay spans the updates of
    `lr_decay_env_steps` env steps (0: the run's `total_env_steps`), i.e.
    `env_steps / (num_envs * steps_per_update)`."""
    fields = {f.name: getattr(config, f.name)
              for f in dataclasses.fields(cls) if f.name != "lr_decay_updates"}
    horizon = config.get("lr_decay_env_steps", 0)
    if horizon < 0:
      raise ConfigError(f"lr_decay_env_steps must be >= 0 (0: total_env_steps), "
                        f"got {horizon}")
    return cls(lr_decay_updates=total_updates(
        horizon or config.total_env_steps, config.num_envs,
        config.steps_per_update), **fields)

  @property
  def window(self) -> int:
    """`W = T + K + 1` steps of a replay window."""
    return window_length(self.sequence_length, self.unroll_steps)


@dataclasses.dataclass(frozen=True)
class NetworkHparams:
  """The shape of the networks (`networks.make_networks`)."""
  hidden_size: int = 128
  num_blocks: int = 2
  head_size: int = 128
  num_bins: int = 61  # N, bins of the value and reward heads
  torso: str = "mlp"  # one of TORSOS
  dynamics_core: str = "mlp"  # one of DYNAMICS_CORES
  conv_channels: Tuple[int, ...] = (16, 32, 32)
  conv_blocks: int = 2
  # Observations are divided by this inside the networks; 0: by the env's
  # own scale (255 for frames).
  observation_scale: float = 0.0
  # Continuous actions: the Gaussian's std at init and its floor; `tanh(u)`
  # actions when `policy_squash`.
  policy_init_std: float = 0.5
  policy_min_std: float = 0.01
  policy_squash: bool = False

  def __post_init__(self):
    object.__setattr__(self, "conv_channels", tuple(self.conv_channels))
    _positive(self, "hidden_size", "num_bins")
    _one_of("torso", self.torso, TORSOS)
    _one_of("dynamics_core", self.dynamics_core, DYNAMICS_CORES)
    if not self.conv_channels or not all(
        isinstance(c, int) and c > 0 for c in self.conv_channels):
      raise ConfigError(f"conv_channels must be positive ints, got "
                        f"{self.conv_channels!r}")
    if not 0.0 < self.policy_min_std < self.policy_init_std:
      raise ConfigError(f"need 0 < policy_min_std < policy_init_std, got "
                        f"{self.policy_min_std} and {self.policy_init_std}")

  @classmethod
  def from_config(cls, config) -> "NetworkHparams":
    return cls(**{f.name: getattr(config, f.name)
                  for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class ReplayHparams:
  """What the replay and its sampling read: `capacity` time steps per env,
  windows of `window` steps, an update every `steps_per_update` vector-env
  steps of `batch_size` windows, a `replay_proportion` of them replayed."""
  capacity: int = 12_500
  window: int = 22
  discount: float = 0.997  # of the Monte Carlo returns
  mc_returns: bool = False  # compute them (the "mc" value target)
  stack: int = 1
  warmup_steps: int = 64
  replay_proportion: float = 0.75
  batch_size: int = 32
  steps_per_update: int = 1

  def __post_init__(self):
    if not self.capacity > 0:  # named as in the config
      raise ConfigError(f"replay_capacity must be positive, got "
                        f"{self.capacity}")
    _positive(self, "window", "stack", "batch_size", "steps_per_update")
    _unit(self, "discount", "replay_proportion")
    if self.capacity < self.window + self.warmup_steps:
      raise ConfigError(f"replay_capacity ({self.capacity}) must hold "
                        f"warmup_steps + one window ({self.window}) steps")

  @classmethod
  def from_config(cls, config) -> "ReplayHparams":
    return cls(capacity=config.replay_capacity,
               window=window_length(config.sequence_length,
                                    config.unroll_steps),
               discount=config.discount,
               mc_returns=config.value_target == "mc",
               stack=config.stack, warmup_steps=config.warmup_steps,
               replay_proportion=config.replay_proportion,
               batch_size=config.batch_size,
               steps_per_update=config.steps_per_update)
