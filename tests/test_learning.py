"""A real learning run: Muesli solves CartPole-v1 within a fixed step budget."""

import numpy as np

from configs import cartpole
from muesli_jax import training


def test_cartpole_learns(tmp_path):
  config = cartpole.get_config()
  config.total_env_steps = 40_000
  config.logdir = str(tmp_path)
  summary = training.train(config, run_name="cartpole", progress=False)
  last_20 = summary["returns_last_100"][-20:]
  assert len(last_20) == 20
  assert np.mean(last_20) >= 400.0, summary["returns_last_100"]
  assert (tmp_path / "cartpole" / "checkpoint").is_dir()
