"""A real learning run: Muesli solves CartPole-v1 within a fixed step budget."""

import json

import numpy as np
import pytest

from configs import cartpole
from muesli_jax import interrupts, training
from muesli_jax.errors import NonFiniteLossError


@pytest.mark.parametrize("async_acting", [False, True])
def test_cartpole_learns(tmp_path, async_acting):
  config = cartpole.get_config()
  config.total_env_steps = 50_000
  config.async_acting = async_acting
  config.logdir = str(tmp_path)
  summary = training.train(config, run_name="cartpole", progress=False)
  # A random policy averages ~22. A CartPole policy that has learnt still
  # swings between ~200 and 500 from one evaluation to the next, so the
  # test asks for sustained learning (the last 100 training episodes) and
  # for near-perfect play at some evaluation, not at one given step.
  assert len(summary["returns_last_100"]) == 100
  assert summary["mean_return_last_100"] >= 200.0, summary["returns_last_100"]
  assert (tmp_path / "cartpole" / "checkpoints" / "50000").is_dir()
  assert summary["update_compilations"] == 1  # no re-tracing during a run
  # Evaluated on fresh episodes during training and at its end.
  evaluations = summary["evaluations"]
  assert [e["env_steps"] for e in evaluations] == [
      10_000, 20_000, 30_000, 40_000, 50_000]
  assert max(e["return_mean"] for e in evaluations) >= 450.0, evaluations
  assert summary["eval_return_mean"] == evaluations[-1]["return_mean"]


@pytest.mark.parametrize("async_acting", [False, True])
def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    tmp_path, monkeypatch, async_acting):
  import jax.numpy as jnp
  from muesli_jax import checkpoint, learner

  real_make_update = learner.make_update

  def poisoned_make_update(*args, **kwargs):
    update = real_make_update(*args, **kwargs)

    def nan_from_update_40(state, batch):
      new_state, metrics = update(state, batch)
      poison = jnp.where(state.step >= 39, jnp.nan, 1.0)
      return new_state, dict(metrics, loss=metrics["loss"] * poison)

    return nan_from_update_40

  monkeypatch.setattr(learner, "make_update", poisoned_make_update)
  config = cartpole.get_config()
  config.update(total_env_steps=2_000, checkpoint_interval=400,
                eval_interval=0, logdir=str(tmp_path),
                async_acting=async_acting)
  with pytest.raises(NonFiniteLossError, match="update 40 "):
    training.train(config, run_name="nan", progress=False)
  # The checkpoints written before it stay; the broken state is not saved.
  assert checkpoint.Checkpoints(tmp_path / "nan").steps() == [400, 800]
  # Acting on a thread reads a loss back one update later.
  assert json.loads((tmp_path / "nan" / "summary.json").read_text())[
      "updates"] == (41 if async_acting else 40)


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
  # A shell that starts the suite in the background hands it SIGINT
  # ignored; this test needs Python's usual Ctrl-C handler.
  inherited = signal_lib.signal(signal_lib.SIGINT,
                                signal_lib.default_int_handler)
  try:
    _check_interrupt_is_deferred(signal_lib)
  finally:
    signal_lib.signal(signal_lib.SIGINT, inherited)


def _check_interrupt_is_deferred(signal_lib):
  done = []
  with pytest.raises(KeyboardInterrupt):
    with interrupts.deferred():
      signal_lib.raise_signal(signal_lib.SIGINT)
      done.append("update finished")
  assert done == ["update finished"]
  assert signal_lib.getsignal(signal_lib.SIGINT) is signal_lib.default_int_handler
