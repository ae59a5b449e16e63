"""The hyperparameter records: built from every config, checked once, and
importable without jax."""

import dataclasses
import os
import subprocess
import sys

import pytest

from muesli_jax import config as config_lib
from muesli_jax.errors import ConfigError
from muesli_jax.hparams import (LearnerHparams, NetworkHparams,
                                ReplayHparams, total_updates)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(f for f in os.listdir(os.path.join(REPO, "configs"))
                 if f.endswith(".py") and not f.startswith("_"))


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_gives_the_records_of_its_values(name):
  config = config_lib.load_config_file(name)
  learner = LearnerHparams.from_config(config)
  network = NetworkHparams.from_config(config)
  replay = ReplayHparams.from_config(config)
  assert learner.kl_weight == config.kl_weight
  assert learner.value_target == config.value_target
  assert network.conv_channels == tuple(config.conv_channels)
  assert replay.capacity == config.replay_capacity
  assert replay.window == config.sequence_length + config.unroll_steps + 1
  assert replay.mc_returns == (config.value_target == "mc")
  assert learner.lr_decay_updates == total_updates(
      config.total_env_steps, config.num_envs, config.steps_per_update)


def test_the_learning_rate_decays_over_the_updates_of_the_run():
  config = config_lib.load_config_file("cartpole.py")
  config.total_env_steps, config.num_envs = 10_000, 8
  config.steps_per_update = 5
  assert LearnerHparams.from_config(config).lr_decay_updates == 250
  config.total_env_steps = 10  # Less than one update: still one.
  assert LearnerHparams.from_config(config).lr_decay_updates == 1
  # Its own horizon: a short run on a longer run's schedule.
  config.lr_decay_env_steps = 30_000
  assert LearnerHparams.from_config(config).lr_decay_updates == 750
  config.lr_decay_env_steps = -1
  with pytest.raises(ConfigError, match="lr_decay_env_steps must be >= 0"):
    config_lib.validate(config)


def test_records_are_frozen():
  with pytest.raises(dataclasses.FrozenInstanceError):
    LearnerHparams().discount = 0.5


@pytest.mark.parametrize("record, changes, names", [
    (LearnerHparams, dict(value_target="td"), "value_target"),
    (LearnerHparams, dict(policy_gradient="ppo"), "policy_gradient"),
    (LearnerHparams, dict(value_min=5.0, value_max=5.0), "value_min"),
    (LearnerHparams, dict(action_samples=0), "action_samples"),
    (LearnerHparams, dict(prior_mix_uniform=0.5), "prior_mix"),
    (LearnerHparams, dict(discount=1.5), "discount"),
    (LearnerHparams, dict(learning_rate=0.0), "learning_rate"),
    (NetworkHparams, dict(torso="transformer"), "torso"),
    (NetworkHparams, dict(dynamics_core="gru"), "dynamics_core"),
    (NetworkHparams, dict(conv_channels=(16, 0)), "conv_channels"),
    (NetworkHparams, dict(policy_min_std=0.6), "policy_min_std"),
    (NetworkHparams, dict(num_bins=0), "num_bins"),
    (ReplayHparams, dict(capacity=10), "replay_capacity"),
    (ReplayHparams, dict(replay_proportion=-0.1), "replay_proportion"),
    (ReplayHparams, dict(batch_size=0), "batch_size"),
])
def test_a_bad_value_is_one_line_naming_it(record, changes, names):
  record()  # The defaults are valid, so the change is what fails.
  with pytest.raises(ConfigError, match=names) as info:
    record(**changes)
  assert "\n" not in str(info.value)


def test_hparams_stand_below_jax():
  # The records are read by code that must not pay for importing jax.
  script = ("import sys; import muesli_jax.hparams; "
            "assert 'jax' not in sys.modules and 'ml_collections' not in "
            "sys.modules, sorted(sys.modules)")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO),
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
