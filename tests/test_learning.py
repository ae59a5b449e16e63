"""A real learning run: Muesli solves CartPole-v1 within a fixed step budget."""

import numpy as np
import pytest

from configs import cartpole
from muesli_jax import training


def test_cartpole_learns(tmp_path):
  config = cartpole.get_config()
  config.total_env_steps = 50_000
  config.logdir = str(tmp_path)
  summary = training.train(config, run_name="cartpole", progress=False)
  last_20 = summary["returns_last_100"][-20:]
  assert len(last_20) == 20
  assert np.mean(last_20) >= 400.0, summary["returns_last_100"]
  assert (tmp_path / "cartpole" / "checkpoint").is_dir()
  assert summary["update_compilations"] == 1  # no re-tracing during a run


def test_non_finite_loss_stops_training_naming_the_step(tmp_path, monkeypatch):
  from muesli_jax import learner

  real_make_update = learner.make_update

  def poisoned_make_update(*args, **kwargs):
    update = real_make_update(*args, **kwargs)

    def nan_update(state, batch):
      state, metrics = update(state, batch)
      return state, dict(metrics, loss=metrics["loss"] * float("nan"))

    return nan_update

  monkeypatch.setattr(learner, "make_update", poisoned_make_update)
  config = cartpole.get_config()
  config.total_env_steps = 2_000
  config.logdir = str(tmp_path)
  try:
    training.train(config, run_name="nan", progress=False)
  except training.NonFiniteLossError as e:
    assert "update 1" in str(e)
  else:
    raise AssertionError("a NaN loss did not stop training")
  # What was trained so far is still saved.
  assert (tmp_path / "nan" / "checkpoint").is_dir()


def test_stop_when_solved_ends_the_run_early(tmp_path):
  config = cartpole.get_config()
  config.solve_return = 10.0  # any policy's first 100 episodes reach it
  config.stop_when_solved = True
  config.logdir = str(tmp_path)
  summary = training.train(config, run_name="stop", progress=False)
  assert summary["solved_at_steps"] is not None
  assert summary["env_steps"] == summary["solved_at_steps"]
  assert summary["env_steps"] < config.total_env_steps


def test_interrupt_inside_an_update_is_delivered_after_it():
  """A Ctrl-C that arrives while the (donating) update runs is held until
  its new state is assigned, then raised as usual."""
  import signal as signal_lib
  done = []
  with pytest.raises(KeyboardInterrupt):
    with training.interrupts_deferred():
      signal_lib.raise_signal(signal_lib.SIGINT)
      done.append("update finished")
  assert done == ["update finished"]
  assert signal_lib.getsignal(signal_lib.SIGINT) is signal_lib.default_int_handler
