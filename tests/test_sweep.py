"""`scripts/sweep.py`: a killed sweep resumes its study; bad sweeps stop early."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

optuna = pytest.importorskip("optuna")

from muesli_jax import config as config_lib  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "scripts", "sweep.py")
# A tiny CartPole run, most of it compiling the update (the first update
# comes at (16 + 4 + unroll_steps + 1) x 4 <= 104 env steps).
TINY = dict(total_env_steps=600, num_envs=4, hidden_size=16, head_size=16,
            num_bins=21, batch_size=4, sequence_length=4, log_interval=5,
            replay_capacity=500, warmup_steps=16)
# Evaluation and checkpoints, where training has them, would only add time.
OPTIONAL = dict(eval_interval=0, checkpoint_interval=0, checkpoint_replay=False)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def sweep_command():
  base = config_lib.load_config_file("cartpole.py")
  overrides = {**TINY, **{k: v for k, v in OPTIONAL.items() if k in base}}
  return [sys.executable, SWEEP, "--sweep", "cartpole.py", "--trials", "2",
          "--jobs", "1", *(f"--config.{k}={v}" for k, v in overrides.items())]


def import_sweep():
  """scripts/sweep.py as a module (scripts/ is no package)."""
  spec = importlib.util.spec_from_file_location("sweep", SWEEP)
  sweep = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(sweep)
  return sweep


def load_study(tmp_path):
  storage = f"sqlite:///{tmp_path}/runs/sweeps/cartpole.db"
  return optuna.load_study(study_name="cartpole", storage=storage)


def states(study):
  return [t.state for t in study.get_trials(deepcopy=False)]


def wait_for_second_trial(proc, tmp_path, log, timeout=300):
  """Waits until trial 0 has finished and trial 1 runs."""
  deadline = time.time() + timeout
  # Trial folders appear only once the sweep has created its storage: opening
  # the SQLite file before that would race the sweep's schema creation (both
  # processes stamp the new database, and one fails).
  first_trial = tmp_path / "runs" / "sweeps" / "cartpole" / "trial_0"
  while time.time() < deadline:
    assert proc.poll() is None, log.read_text()
    try:
      found = states(load_study(tmp_path)) if first_trial.exists() else []
    except Exception:  # SQLite busy with the sweep's writes: try again
      found = []
    running = found.count(optuna.trial.TrialState.RUNNING)
    if sum(s in FINISHED for s in found) >= 1 and running:
      return
    time.sleep(0.5)
  pytest.fail(f"no finished trial within {timeout} s:\n{log.read_text()}")


def test_killed_sweep_resumes_its_study(tmp_path):
  command = sweep_command()
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  log = tmp_path / "first.log"
  with open(log, "w") as out:
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
      wait_for_second_trial(proc, tmp_path, log)
    finally:  # the sweep and its worker, at once
      try:
        os.killpg(proc.pid, signal.SIGKILL)
      except ProcessLookupError:  # all gone already: keep the real failure
        pass
      proc.wait()
  assert optuna.trial.TrialState.RUNNING in states(load_study(tmp_path))

  again = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0, again.stdout + again.stderr
  assert "left running by an interrupted sweep" in again.stdout

  study = load_study(tmp_path)
  trials = study.get_trials()
  finished = [t for t in trials if t.state in FINISHED]
  assert len(finished) == 2
  assert optuna.trial.TrialState.RUNNING not in states(study)
  # The killed trial failed, and the same parameters ran again.
  killed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
  assert len(killed) == 1 and killed[0].user_attrs["interrupted"]
  retry = [t for t in finished if t.user_attrs.get("retry_of") == killed[0].number]
  assert len(retry) == 1 and retry[0].params == killed[0].params
  for t in finished:
    assert (tmp_path / "runs" / "sweeps" / "cartpole" / f"trial_{t.number}" /
            "summary.json").is_file()

  best_file = tmp_path / "runs" / "sweeps" / "cartpole" / "best_config.py"
  config = config_lib.load_config_file(str(best_file))
  best = study.best_trial
  assert f"trial {best.number}" in best_file.read_text()
  for key, value in best.params.items():
    assert config[key] == value, key
  assert config.total_env_steps == TINY["total_env_steps"]
  assert config.env_id == "CartPole-v1"
  assert f"optuna-dashboard sqlite:///runs/sweeps/cartpole.db" in again.stdout


def test_summary_ranks_trials_and_keeps_the_base(tmp_path, capsys):
  """`--summary N`: the N best complete trials, then the base config's
  trial wherever it ranks, as one markdown table."""
  sweep = import_sweep()
  steps = iter([9000, 3000, 6000, 4000, 8000, 5000])  # seed 0, seed 1, ...

  class FakeTraining:

    def train(self, config, run_dir=None, progress=True, on_log=None):
      return dict(mean_return_last_100=1.0, env_steps=config.total_env_steps,
                  solved_at_steps=next(steps), interrupted=False)

  spec_file = tmp_path / "s.py"
  spec_file.write_text(
      "def get_sweep():\n  return dict(base_config='cartpole.py', "
      "overrides=dict(total_env_steps=10000), "
      "space=dict(learning_rate=('log_float', 1e-4, 1e-2)), "
      "objective='steps_to_solve', direction='minimize', pruner=None, "
      "seeds=2, start_from_base=True)\n")
  settings = sweep.load_sweep(str(spec_file))
  base, fixed = sweep.make_base(settings, [])
  storage = f"sqlite:///{tmp_path}/s.db"
  study = optuna.create_study(study_name="s", storage=storage, direction="minimize")
  sweep.start_study(study, settings, base, fixed, "study")
  for _ in range(3):  # values: 6000 (the base), 5000, 6500
    sweep.run_trial(optuna, FakeTraining(), study, study.ask(), settings, base,
                    str(tmp_path))
  table = sweep.summary_table(optuna, study, settings, 1).splitlines()
  assert table[0].startswith("| rank | trial | steps_to_solve | per seed | "
                             "learning_rate |")
  assert table[2].startswith("| 1 | 1 | 5000 | 6000, 4000 | ")
  assert table[3].startswith("| 2 | 0 (base) | 6000 | 9000, 3000 | ")
  assert len([line for line in table if line.startswith("| ")]) == 3
  assert "3 complete trials" in table[-1]
  # From the command line, against the stored study.
  code = sweep.main(["--sweep", str(spec_file), "--summary", "5", "--storage",
                     storage, "--study", "s"])
  assert code == 0
  printed = capsys.readouterr().out
  assert "| 3 | 2 | 6500 | 8000, 5000 |" in printed
  assert sweep.main(["--sweep", str(spec_file), "--summary", "5", "--storage",
                     storage, "--study", "other"]) == 2
  assert "no study 'other'" in capsys.readouterr().err


@pytest.mark.parametrize("space, words", [
    ('dict(lerning_rate=("log_float", 1e-4, 1e-3))', ["lerning_rate", "learning_rate"]),
    ('dict(learning_rate=("log_float", 0.0, 1e-3))', ["learning_rate", "low > 0"]),
    ('dict(batch_size=("float", 4, 8))', ["batch_size", "int"]),
    ('dict(discount=("float", 0.9, 1.5))', ["discount", "1.5"]),
    ('dict(seed=("uniform", 0, 3))', ["seed", "kind"]),
], ids=["unknown_key", "log_of_zero", "float_for_int", "invalid_value",
        "unknown_kind"])
def test_bad_space_is_a_one_line_error(tmp_path, space, words):
  assert_sweep_refused(tmp_path, f"space={space}", words)


def assert_sweep_refused(tmp_path, fields: str, words):
  """A sweep file with `fields` (besides base_config) stops the sweep before
  it creates anything, with one `error:` line holding every word."""
  sweep = tmp_path / "bad.py"
  sweep.write_text(f"def get_sweep():\n  return dict(base_config='cartpole.py', "
                   f"{fields})\n")
  proc = subprocess.run([sys.executable, SWEEP, "--sweep", str(sweep)],
                        cwd=tmp_path, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stdout + proc.stderr
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
  for word in words:
    assert word in lines[0]
  assert not (tmp_path / "runs").exists()  # nothing created


def test_workers_claim_exactly_the_missing_trials(tmp_path):
  sweep = import_sweep()
  study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db",
                              direction="maximize")
  lock = str(tmp_path / "lock")
  claim = lambda: sweep.claim_trial(optuna, study, 2, lock)
  first, second = claim(), claim()
  assert first is not None and second is not None
  assert claim() is None  # two running: none missing
  study.tell(first, 1.0)
  assert claim() is None
  second.set_user_attr("error", "boom")  # a failure does not count
  study.tell(second, state=optuna.trial.TrialState.FAIL)
  third = claim()
  assert third is not None
  study.tell(third, state=optuna.trial.TrialState.PRUNED)
  assert claim() is None


def test_trial_outcomes(tmp_path, capsys):
  """How a trial ends, with a stand-in for `training.train` (no JAX)."""
  sweep = import_sweep()
  TS = optuna.trial.TrialState

  from muesli_jax.errors import NonFiniteLossError as Diverged

  class FakeTraining:

    def __init__(self, outcome):
      self.outcome = outcome

    def train(self, config, run_dir=None, progress=True, on_log=None):
      assert not progress and run_dir.endswith("trial_0")
      if self.outcome == "nan":
        raise Diverged("loss became nan")
      if self.outcome == "bad":
        raise config_lib.ConfigError("replay_capacity too small")
      stopped = False
      for steps, mean in ((1000, 10.0), (1500, 11.0), (2000, 12.0)):
        if on_log(steps, mean):
          stopped = True
          break
      return dict(mean_return_last_100=12.0, env_steps=steps,
                  stopped_early=stopped, interrupted=False)

  spec_file = tmp_path / "s.py"
  spec_file.write_text("def get_sweep():\n  return dict(base_config='cartpole.py', "
                       "space=dict(learning_rate=('log_float', 1e-4, 1e-3)), "
                       "report_every=1000, pruner=dict(n_startup_trials=0))\n")
  settings = sweep.load_sweep(str(spec_file))
  base, _ = sweep.make_base(settings, [])

  def run(outcome, pruner=optuna.pruners.NopPruner()):
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    sweep.run_trial(optuna, FakeTraining(outcome), study, trial, settings,
                    base, str(tmp_path))
    return study.trials[0]

  done = run("ok")
  assert done.state == TS.COMPLETE and done.value == 12.0
  assert done.intermediate_values == {1000: 10.0, 2000: 12.0}  # 1500 -> 1000
  pruned = run("ok", optuna.pruners.ThresholdPruner(lower=100.0))
  assert pruned.state == TS.PRUNED and pruned.intermediate_values == {1000: 10.0}
  nan = run("nan")
  assert nan.state == TS.PRUNED and "non-finite" in nan.user_attrs["error"]
  bad = run("bad")
  assert bad.state == TS.FAIL and "replay_capacity" in bad.user_attrs["error"]
  lines = capsys.readouterr().out.splitlines()
  assert [line.split(":")[0] for line in lines] == ["trial 0"] * 4
  assert "pruned at 1000 env steps" in lines[1]


def test_steps_to_solve_over_several_seeds(tmp_path, capsys):
  """`objective="steps_to_solve"`, `seeds=2`: each trial trains seeds
  config.seed and +1 into their own folders, an unsolved run counts as the
  budget, and the trial's value is the mean (stand-in for `train`)."""
  sweep = import_sweep()
  calls = []

  class FakeTraining:

    def train(self, config, run_dir=None, progress=True, on_log=None):
      calls.append((config.seed, os.path.relpath(run_dir, tmp_path),
                    on_log is not None))
      if on_log is not None:
        on_log(1000, 50.0)
      solved = {7: 3000, 8: None}[config.seed]  # seed 8 never solves
      return dict(mean_return_last_100=1.0, env_steps=config.total_env_steps,
                  solved_at_steps=solved, interrupted=False)

  spec_file = tmp_path / "s.py"
  spec_file.write_text(
      "def get_sweep():\n  return dict(base_config='cartpole.py', "
      "overrides=dict(seed=7, total_env_steps=9000), "
      "space=dict(learning_rate=('log_float', 1e-4, 1e-3)), "
      "objective='steps_to_solve', direction='minimize', pruner=None, "
      "report_every=1000, seeds=2)\n")
  settings = sweep.load_sweep(str(spec_file))
  base, fixed = sweep.make_base(settings, [])
  study = optuna.create_study(direction="minimize")
  sweep.run_trial(optuna, FakeTraining(), study, study.ask(), settings, base,
                  str(tmp_path))
  trial = study.trials[0]
  assert trial.state == optuna.trial.TrialState.COMPLETE
  assert trial.value == (3000 + 9000) / 2
  assert trial.user_attrs["seed_values"] == [3000.0, 9000.0]
  # Both seeds ran, each in its folder; only the first reported.
  assert calls == [(7, os.path.join("trial_0", "seed_7"), True),
                   (8, os.path.join("trial_0", "seed_8"), False)]
  assert trial.intermediate_values == {1000: 50.0}
  assert "mean of seeds: 3000, 9000" in capsys.readouterr().out
  best = tmp_path / "best_config.py"
  sweep.write_best_config(optuna, study, settings, fixed, str(best), "mem")
  assert "steps_to_solve 6000 (minimize; the mean over 2 seeds)" in best.read_text()
  # The study records the seed count: a rerun with another is refused.
  assert sweep.settings(settings, fixed)["seeds"] == 2


def test_start_from_base_runs_the_base_config_first(tmp_path):
  """`start_from_base=True`: a new study's first trial is the base config's
  own values of the space keys; a rerun does not queue it again."""
  sweep = import_sweep()
  seen = []

  class FakeTraining:

    def train(self, config, run_dir=None, progress=True, on_log=None):
      seen.append((config.learning_rate, config.batch_size, config.lr_decay))
      return dict(mean_return_last_100=1.0, env_steps=config.total_env_steps,
                  solved_at_steps=100, interrupted=False)

  spec_file = tmp_path / "s.py"
  spec_file.write_text(
      "def get_sweep():\n  return dict(base_config='cartpole.py', "
      "overrides=dict(batch_size=8), "
      "space=dict(learning_rate=('log_float', 1e-4, 1e-2), "
      "lr_decay=('categorical', [False, True])), "
      "objective='steps_to_solve', direction='minimize', pruner=None, "
      "start_from_base=True)\n")
  settings = sweep.load_sweep(str(spec_file))
  base, fixed = sweep.make_base(settings, [])
  study = optuna.create_study(direction="minimize")
  sweep.start_study(study, settings, base, fixed, "study")
  sweep.start_study(study, settings, base, fixed, "study")  # a rerun
  for _ in range(2):
    sweep.run_trial(optuna, FakeTraining(), study, study.ask(), settings, base,
                    str(tmp_path))
  assert seen[0] == (base.learning_rate, 8, base.lr_decay)
  assert study.trials[0].user_attrs["base_config"]
  assert "base_config" not in study.trials[1].user_attrs
  assert len(study.trials) == 2


@pytest.mark.parametrize("space, words", [
    ("learning_rate=('log_float', 1e-2, 1e-1)", ["learning_rate=", "outside"]),
    ("lr_decay=('categorical', [False])", ["lr_decay=True", "outside"]),
    ("batch_size=('int', 1, 63, 2)", ["batch_size=32", "outside"]),
], ids=["float", "categorical", "int_step"])
def test_base_outside_the_space_is_refused(tmp_path, space, words):
  assert_sweep_refused(tmp_path, f"space=dict({space}), start_from_base=True",
                       words)


@pytest.mark.parametrize("extra, words", [
    ("objective='steps_to_solve', pruner=None", ["steps_to_solve", "minimize"]),
    ("objective='steps_to_solve', direction='minimize'",
     ["steps_to_solve", "pruner None"]),
    ("seeds=0", ["seeds", ">= 1"]),
    ("seeds=2, pruner=None, space=dict(seed=('int', 0, 3))", ["seed", "seeds"]),
], ids=["maximize", "pruner", "no_seeds", "seed_searched"])
def test_bad_objective_or_seeds_is_a_one_line_error(tmp_path, extra, words):
  space = "" if "space=" in extra else (
      "space=dict(learning_rate=('log_float', 1e-4, 1e-3)), ")
  assert_sweep_refused(tmp_path, space + extra, words)


def test_trials_left_running_are_failed_and_queued_again(tmp_path, capsys):
  """What a rerun does first: the killed sweep's trials fail, and their
  values (drawn, or enqueued and not yet drawn) run again."""
  sweep = import_sweep()
  TS = optuna.trial.TrialState
  storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/s.db")
  study = optuna.create_study(storage=storage, direction="maximize")
  drawn = study.ask()
  drawn_rate = drawn.suggest_float("learning_rate", 1e-4, 1e-3, log=True)
  study.enqueue_trial({"learning_rate": 5e-4})
  study.ask()  # killed before it drew its enqueued value
  done = study.ask()
  done.suggest_float("learning_rate", 1e-4, 1e-3, log=True)
  study.tell(done, 1.0)

  sweep.recover(optuna, storage, study)

  trials = study.get_trials()
  assert [t.state for t in trials] == [TS.FAIL, TS.FAIL, TS.COMPLETE,
                                       TS.WAITING, TS.WAITING]
  assert all(t.user_attrs["interrupted"] for t in trials[:2])
  assert "interrupted" not in trials[2].user_attrs
  assert [t.user_attrs["retry_of"] for t in trials[3:]] == [0, 1]
  retried = []
  for _ in range(2):
    trial = study.ask()
    retried.append(trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True))
  assert retried == [drawn_rate, 5e-4]
  printed = capsys.readouterr().out
  assert printed.count("left running by an interrupted sweep") == 2


@pytest.mark.parametrize("args, message", [
    (["stray"],
     "error: unexpected argument 'stray'; overrides are --config.KEY=VALUE"),
    (["--config.seed"], "error: --config.seed needs a value, e.g. "
     "--config.seed=..."),
], ids=["stray", "key_without_value"])
def test_bad_override_is_a_one_line_error(tmp_path, monkeypatch, capsys,
                                          args, message):
  sweep = import_sweep()
  monkeypatch.chdir(tmp_path)
  assert sweep.main(["--sweep", "cartpole.py", *args]) == 2
  assert capsys.readouterr().err == message + "\n"
  assert not (tmp_path / "runs").exists()


def test_overrides_in_both_forms_reach_the_workers(tmp_path):
  sweep = import_sweep()
  args, cli = sweep.parse_cli(["--config.seed", "3", "--sweep", "cartpole.py",
                               "--config.logdir=a=b", "--trials", "4"])
  assert (args.sweep, args.trials) == ("cartpole.py", 4)
  assert cli == [("seed", "3"), ("logdir", "a=b")]
