"""Real learning runs: Muesli solves CartPole-v1 within a fixed step budget
(one run, `cartpole_run` in conftest.py, that three tests read) and learns
in the async loop; how runs stop."""

import glob
import json
import os
import threading
import time

import pytest

import conftest
import muesli_jax
from configs import cartpole
from muesli_jax import interrupts, run_record, training
from muesli_jax.errors import NonFiniteLossError


def test_cartpole_learns(cartpole_run):
  summary, _ = cartpole_run
  # A random policy averages ~22. A CartPole policy that has learnt still
  # swings between ~200 and 500 from one evaluation to the next, so the
  # test asks for sustained learning (the last 100 training episodes) and
  # for near-perfect play at some evaluation, not at one given step. The
  # run stops at the first log where both hold: within the 50k budget.
  assert summary["stopped_early"] and summary["env_steps"] < 50_000, summary
  assert len(summary["returns_last_100"]) == 100
  assert summary["mean_return_last_100"] >= 200.0, summary["returns_last_100"]
  evaluations = summary["evaluations"]
  assert max(e["return_mean"] for e in evaluations) >= 450.0, evaluations


def test_a_run_compiles_once_and_evaluates_on_schedule(cartpole_run):
  summary, _ = cartpole_run
  assert summary["update_compilations"] == 1  # no re-tracing during a run
  # Evaluated on fresh episodes every 10k env steps during training.
  evaluations = summary["evaluations"]
  assert [e["env_steps"] for e in evaluations] == list(
      range(10_000, summary["env_steps"] + 1, 10_000))
  assert summary["eval_return_mean"] == evaluations[-1]["return_mean"]


def test_the_run_folder_holds_what_the_run_wrote(cartpole_run):
  summary, run_dir = cartpole_run
  with open(os.path.join(run_dir, "config.json")) as f:
    recorded = json.load(f)
  shipped = json.loads(cartpole.get_config().to_json())
  assert recorded == dict(shipped, logdir=recorded["logdir"]), recorded
  assert recorded["total_env_steps"] == 50_000
  # The newest keep_checkpoints (3) of those every 10k env steps and the
  # one where the run stopped.
  stopped_at = summary["env_steps"]
  saved = sorted({*range(10_000, stopped_at + 1, 10_000), stopped_at})[-3:]
  assert sorted(int(step) for step in os.listdir(
      os.path.join(run_dir, "checkpoints"))) == saved
  assert os.path.samefile(summary["checkpoint"],
                          os.path.join(run_dir, "checkpoints", str(stopped_at)))
  with open(os.path.join(run_dir, "episodes.csv")) as f:
    rows = f.read().splitlines()
  assert rows[0] == "env_steps,seconds,episode_return,length"
  assert len(rows) == summary["episodes"] + 1
  last = [float(row.split(",")[2]) for row in rows[-100:]]
  assert last == summary["returns_last_100"]
  (events,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
  assert os.path.getsize(events) > 0


def test_async_acting_learns(async_cartpole_run):
  """The async loop on the shipped config, stopped at 20k of its 50k env
  steps: seeds 0 and 1 had a mean of 146 and 161 over their last 100
  episodes there (random play: ~22)."""
  summary, run_dir = async_cartpole_run
  assert summary["stopped_early"] and 20_000 <= summary["env_steps"] < 21_000
  assert summary["mean_return_last_100"] >= 100.0, summary["returns_last_100"]
  assert summary["update_compilations"] == 1
  # Evaluations and checkpoints every 10k env steps in this loop too; a
  # stopped run saves where it stopped.
  due = list(range(10_000, summary["env_steps"] + 1, 10_000))
  assert [e["env_steps"] for e in summary["evaluations"]] == due
  saved = sorted(int(step) for step in
                 os.listdir(os.path.join(run_dir, "checkpoints")))
  assert saved == sorted({*due, summary["env_steps"]})


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
                async_acting=async_acting, **conftest.TINY_NETWORK)
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
  config.update(logdir=str(tmp_path), **conftest.TINY_NETWORK)
  called = time.time()
  summary = training.train(config, run_name="stop", progress=False)
  returned = time.time()
  assert summary["solved_at_steps"] is not None
  assert summary["env_steps"] == summary["solved_at_steps"]
  assert summary["env_steps"] < config.total_env_steps
  # Start-up is counted from the package's import to the training loop:
  # what came before train() was called, and none of the loop's seconds.
  since_import = called - muesli_jax.LOADED_AT
  assert since_import <= summary["startup_seconds"]
  assert (summary["startup_seconds"] + summary["seconds"] <=
          returned - muesli_jax.LOADED_AT)


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


def test_a_writer_that_never_closes_does_not_hang_the_run(tmp_path, monkeypatch,
                                                           capsys):
  """The end of a run waits a bounded time for TensorBoard's writer."""
  logger = run_record.Logger(str(tmp_path), 100, progress=False)
  release = threading.Event()
  close = logger.writer.close
  monkeypatch.setattr(logger.writer, "close", release.wait)
  monkeypatch.setattr(run_record, "WRITER_CLOSE_SECONDS", 0.2)
  started = time.time()
  logger.close()
  assert time.time() - started < 10
  assert "did not close within 0.2 s" in capsys.readouterr().err
  release.set()
  close()
