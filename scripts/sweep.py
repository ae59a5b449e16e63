"""Hyperparameter sweeps with Optuna.

`python scripts/sweep.py --sweep lunar.py [--trials 20] [--jobs 2] [--study NAME]
    [--storage sqlite:///runs/sweeps/NAME.db] [--pin] [--config.KEY=VALUE ...]`

The sweep file (`configs/sweeps/<name>.py`, or any path) defines
`get_sweep()` returning a dict (or ConfigDict):

  base_config   config file as train.py takes it, e.g. "lunar.py"
  overrides     {key: value} fixed for every trial (optional)
  space         {key: spec}, spec one of
                  ("float", low, high[, step])    uniform
                  ("log_float", low, high)        log-uniform, low > 0
                  ("int", low, high[, step])      inclusive bounds
                  ("log_int", low, high)
                  ("categorical", [a, b, ...])    None, bool, int, float, str
  objective     "train_return" (mean of the last 100 training returns at
                the end), "eval_return" (the final evaluation; needs
                eval_interval > 0) or "steps_to_solve" (env steps until the
                mean of the last 100 training returns first reached
                solve_return, total_env_steps for a run that never did;
                direction "minimize", pruner None); default "train_return"
  direction     "maximize" (default) or "minimize"
  pruner        {"n_startup_trials": 5, "n_warmup_steps": 0} for Optuna's
                MedianPruner (env steps), or None: no pruning
  report_every  env steps between intermediate values (default 10000)
  seeds         runs per trial (default 1): seeds config.seed, +1, ...;
                the trial's value is the mean of theirs, so that one lucky
                seed does not pick the config
  start_from_base  True: the study's first trial is the base config itself
                (its values of the space keys, which must lie in the
                space), so the study holds the config it tries to beat

`--summary N` prints the study's N best complete trials (and the base
config's trial, with `start_from_base`) as a markdown table, and runs
nothing.

`--trials N` is the total number of finished (complete or pruned) trials in
the study: the same command, rerun after an interruption (Ctrl-C or even
`kill -9`), continues the study and runs only what is missing. Trials left
running are marked failed and their parameters are tried again. Each trial
trains into `<logdir>/sweeps/<study>/trial_<number>`; the best trial's config
is written to `<logdir>/sweeps/<study>/best_config.py` for train.py.
"""

import argparse
import contextlib
import copy
import difflib
import fcntl
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from muesli_jax import config as config_lib  # noqa: E402
from muesli_jax.errors import NonFiniteLossError  # noqa: E402

SWEEP_DIR = os.path.join(config_lib.REPO_ROOT, "configs", "sweeps")
SWEEP_KEYS = ("base_config", "overrides", "space", "objective", "direction",
              "pruner", "report_every", "seeds", "start_from_base")
PRUNER_KEYS = ("n_startup_trials", "n_warmup_steps")
KINDS = ("float", "log_float", "int", "log_int", "categorical")
OBJECTIVES = ("train_return", "eval_return", "steps_to_solve")


class SweepError(ValueError):
  """A problem with the sweep or its options: one `error:` line, exit 2."""


class TrialError(RuntimeError):
  """A trial that cannot give a value (recorded as failed)."""


# ---------------------------------------------------------------- sweep files


def resolve_sweep_path(path: str) -> str:
  """`lunar.py`, `lunar`, `configs/sweeps/lunar.py` all name configs/sweeps/lunar.py."""
  candidates = [path, os.path.join(config_lib.REPO_ROOT, path),
                os.path.join(SWEEP_DIR, path), os.path.join(SWEEP_DIR, path + ".py")]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  available = (sorted(f for f in os.listdir(SWEEP_DIR) if f.endswith(".py") and
                      not f.startswith("_")) if os.path.isdir(SWEEP_DIR) else [])
  raise SweepError(f"sweep file {path!r} not found (available in configs/sweeps/: "
                   f"{', '.join(available) or 'none'})")


def load_sweep(path: str) -> dict:
  """Runs the sweep file's `get_sweep()`; returns it checked and normalised."""
  path = resolve_sweep_path(path)
  if config_lib.REPO_ROOT not in sys.path:  # sweep files may import configs
    sys.path.insert(0, config_lib.REPO_ROOT)
  spec = importlib.util.spec_from_file_location("_muesli_sweep", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    if not hasattr(module, "get_sweep"):
      raise SweepError(f"{path} defines no get_sweep()")
    sweep = module.get_sweep()
  except SweepError:
    raise
  except Exception as e:  # A broken sweep file: say where, not a traceback.
    raise SweepError(f"cannot load sweep file {path}: {type(e).__name__}: {e}") from None
  if hasattr(sweep, "to_dict"):  # a ConfigDict
    sweep = sweep.to_dict()
  if not isinstance(sweep, dict):
    raise SweepError(f"{path}: get_sweep() must return a dict or ConfigDict")
  unknown = sorted(set(sweep) - set(SWEEP_KEYS))
  if unknown:
    raise SweepError(f"{path}: unknown sweep keys {unknown} (known: "
                     f"{', '.join(SWEEP_KEYS)})")
  if not isinstance(sweep.get("base_config"), str):
    raise SweepError(f"{path}: base_config must name a config file, e.g. 'lunar.py'")
  sweep = dict(path=path, base_config=sweep["base_config"],
               overrides=dict(sweep.get("overrides") or {}),
               space=dict(sweep.get("space") or {}),
               objective=sweep.get("objective", "train_return"),
               direction=sweep.get("direction", "maximize"),
               pruner=sweep.get("pruner", {}),
               report_every=sweep.get("report_every", 10_000),
               seeds=sweep.get("seeds", 1),
               start_from_base=sweep.get("start_from_base", False))
  if not isinstance(sweep["start_from_base"], bool):
    raise SweepError(f"start_from_base must be True or False, got "
                     f"{sweep['start_from_base']!r}")
  if not sweep["space"]:
    raise SweepError(f"{path}: the space is empty")
  sweep["space"] = {key: normalize_spec(key, spec)
                    for key, spec in sweep["space"].items()}
  if sweep["objective"] not in OBJECTIVES:
    raise SweepError(f"objective must be one of {', '.join(OBJECTIVES)}, got "
                     f"{sweep['objective']!r}")
  if sweep["direction"] not in ("maximize", "minimize"):
    raise SweepError(f"direction must be maximize or minimize, got "
                     f"{sweep['direction']!r}")
  pruner = sweep["pruner"]
  if pruner is not None:
    if not isinstance(pruner, dict) or set(pruner) - set(PRUNER_KEYS):
      raise SweepError(f"pruner must be None or a dict of {', '.join(PRUNER_KEYS)}, "
                       f"got {pruner!r}")
    for key, value in pruner.items():
      if not _is_int(value) or value < 0:
        raise SweepError(f"pruner {key} must be an int >= 0, got {value!r}")
  if sweep["objective"] == "steps_to_solve":
    if sweep["direction"] != "minimize":
      raise SweepError("objective steps_to_solve needs direction minimize "
                       "(fewer env steps are better)")
    if sweep["pruner"] is not None:
      # The pruner compares the reported mean returns (higher is better)
      # against the study's direction (here lower is better).
      raise SweepError("objective steps_to_solve needs pruner None (the "
                       "pruner ranks mean returns, the study env steps)")
  if not _is_int(sweep["seeds"]) or sweep["seeds"] < 1:
    raise SweepError(f"seeds must be an int >= 1 (runs per trial), got "
                     f"{sweep['seeds']!r}")
  if not _is_int(sweep["report_every"]) or sweep["report_every"] <= 0:
    raise SweepError(f"report_every must be a positive int (env steps), got "
                     f"{sweep['report_every']!r}")
  return sweep


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def normalize_spec(key: str, spec) -> tuple:
  """A space entry as `(kind, low, high, step)` or `("categorical", choices)`."""
  where = f"space[{key!r}]"
  if not isinstance(spec, (tuple, list)) or not spec or spec[0] not in KINDS:
    raise SweepError(f"{where} must be (kind, ...) with kind one of "
                     f"{', '.join(KINDS)}, got {spec!r}")
  kind, args = spec[0], list(spec[1:])
  if kind == "categorical":
    if len(args) != 1 or not isinstance(args[0], (tuple, list)) or not args[0]:
      raise SweepError(f"{where}: ('categorical', [choice, ...]), got {spec!r}")
    choices = tuple(args[0])
    if not all(c is None or isinstance(c, (bool, int, float, str)) for c in choices):
      raise SweepError(f"{where}: choices must be None, bool, int, float or str "
                       f"(Optuna stores them), got {choices!r}")
    return (kind, choices)
  log = kind.startswith("log_")
  if len(args) not in ((2,) if log else (2, 3)):
    form = "low, high" if log else "low, high[, step]"
    raise SweepError(f"{where}: ({kind!r}, {form}), got {spec!r}")
  low, high = args[0], args[1]
  step = args[2] if len(args) == 3 else None
  check = _is_int if kind.endswith("int") else _is_number
  if not all(check(x) for x in [low, high] + ([step] if step is not None else [])):
    raise SweepError(f"{where}: bounds of a {kind} must be "
                     f"{'ints' if kind.endswith('int') else 'numbers'}, got {spec!r}")
  if not low < high:
    raise SweepError(f"{where}: low must be below high, got {spec!r}")
  if log and low <= 0:
    raise SweepError(f"{where}: a log scale needs low > 0, got {spec!r}")
  if step is not None and step <= 0:
    raise SweepError(f"{where}: step must be positive, got {spec!r}")
  if kind.endswith("float"):
    low, high = float(low), float(high)
  return (kind, low, high, step)


def coerce(key: str, value, current, what: str):
  """`value` in the type of the config field it replaces (int -> float only)."""
  if current is None:
    return value
  if isinstance(current, bool):
    ok = isinstance(value, bool)
  elif isinstance(current, int):
    ok = _is_int(value)
  elif isinstance(current, float):
    ok = _is_number(value)
    value = float(value) if ok else value
  elif isinstance(current, (tuple, list)):
    ok = isinstance(value, (tuple, list))
    value = type(current)(value) if ok else value
  else:
    ok = isinstance(value, type(current))
  if not ok:
    raise SweepError(f"{what}: {key} is of type {type(current).__name__}, got "
                     f"{value!r}")
  return value


def _unknown_key(key: str, config, what: str, base: str) -> SweepError:
  close = difflib.get_close_matches(key, list(config.keys()), n=3)
  hint = f" (similar: {', '.join(close)})" if close else ""
  return SweepError(f"{what} {key!r} is not a key of {base}{hint}")


def spec_values(spec: tuple) -> list:
  """The values checked before the sweep starts: bounds or every choice."""
  return list(spec[1]) if spec[0] == "categorical" else [spec[1], spec[2]]


def in_space(value, spec: tuple) -> bool:
  if spec[0] == "categorical":
    return any(value == c and type(value) is type(c) for c in spec[1])
  kind, low, high, step = spec
  if isinstance(value, bool) or not _is_number(value) or not low <= value <= high:
    return False
  if kind.endswith("int") and not float(value).is_integer():
    return False
  return step is None or abs((value - low) / step - round((value - low) / step)) < 1e-9


def make_base(sweep: dict, cli: list):
  """The base config with the fixed overrides; `(config, fixed)` where `fixed`
  holds every fixed value (sweep file then command line), typed."""
  config = config_lib.load_config_file(sweep["base_config"])
  fixed = {}
  for key, value in sweep["overrides"].items():
    if key not in config:
      raise _unknown_key(key, config, "overrides key", sweep["base_config"])
    with config.unlocked():
      config[key] = coerce(key, value, config[key], "overrides")
    fixed[key] = config[key]
  config_lib.apply_overrides(config, cli)
  for key, _ in cli:
    fixed[key] = config[key]
  config_lib.validate(config)
  for key, spec in sweep["space"].items():
    if key not in config:
      raise _unknown_key(key, config, "space key", sweep["base_config"])
    if key in fixed:
      raise SweepError(f"{key} is both searched (space) and fixed (overrides or "
                       f"--config.{key})")
    current = config[key]
    if spec[0] in ("float", "log_float") and not isinstance(current, float):
      raise SweepError(f"space[{key!r}]: {key} is of type {type(current).__name__} "
                       f"field; use int or categorical")
    if spec[0] in ("int", "log_int") and not (_is_int(current) or
                                              isinstance(current, float)):
      raise SweepError(f"space[{key!r}]: {key} is of type {type(current).__name__} "
                       f"field; use categorical")
    for value in spec_values(spec):  # e.g. a discount bound above 1
      trial = copy.deepcopy(config)
      trial[key] = coerce(key, value, current, f"space[{key!r}]")
      try:
        config_lib.validate(trial)
      except config_lib.ConfigError as e:
        raise SweepError(f"space[{key!r}]: {value!r} is not a valid value: {e}") from None
  if sweep["start_from_base"]:
    outside = [f"{key}={config[key]!r}" for key, spec in sweep["space"].items()
               if not in_space(config[key], spec)]
    if outside:
      raise SweepError(f"start_from_base: the base config's {', '.join(outside)} "
                       "lie outside the space")
  if sweep["seeds"] > 1 and "seed" in sweep["space"]:
    raise SweepError("seed is searched (space) and set per run (seeds > 1): "
                     "drop one")
  if sweep["objective"] == "eval_return" and not config.get("eval_interval", 0) > 0:
    raise SweepError("objective eval_return needs evaluation: set eval_interval > 0 "
                     "(overrides or --config.eval_interval)")
  return config, fixed


def trial_config(base, params: dict):
  config = copy.deepcopy(base)
  for key, value in params.items():
    config[key] = coerce(key, value, base[key], f"trial parameter {key}")
  config_lib.validate(config)
  return config


def settings(sweep: dict, fixed: dict) -> dict:
  """What must not change between the runs of one study (stored in it)."""
  record = dict(base_config=sweep["base_config"], fixed=fixed,
                space={k: list(v) for k, v in sweep["space"].items()},
                objective=sweep["objective"], direction=sweep["direction"])
  if sweep["seeds"] > 1:  # studies made before `seeds` existed stay valid
    record["seeds"] = sweep["seeds"]
  if sweep["start_from_base"]:
    record["start_from_base"] = True
  return json.loads(json.dumps(record))  # tuples become lists, as when stored


# ----------------------------------------------------------------- the study


def parse_cli(argv):
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
      allow_abbrev=False)  # `--s` must not swallow a config argument
  parser.add_argument("--sweep", required=True, help="sweep file")
  parser.add_argument("--trials", type=int, default=20,
                      help="total finished (complete or pruned) trials (default 20)")
  parser.add_argument("--jobs", type=int, default=1,
                      help="worker processes training at once (default 1)")
  parser.add_argument("--study", help="study name (default: the sweep file's stem)")
  parser.add_argument("--storage", help="Optuna storage URL (default: "
                      "sqlite:///<logdir>/sweeps/<study>.db)")
  parser.add_argument("--pin", action="store_true",
                      help="pin each worker to its share of the CPU cores")
  parser.add_argument("--summary", type=int, metavar="N",
                      help="print the N best trials as a markdown table; run nothing")
  parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
  args, rest = parser.parse_known_args(argv)
  cli = config_lib.parse_overrides(rest, "; overrides are --config.KEY=VALUE")
  if args.trials < 1:
    raise SweepError(f"--trials must be at least 1, got {args.trials}")
  if args.jobs < 1:
    raise SweepError(f"--jobs must be at least 1, got {args.jobs}")
  if args.summary is not None and args.summary < 1:
    raise SweepError(f"--summary must be at least 1, got {args.summary}")
  return args, cli


def import_optuna():
  try:
    import optuna
  except ImportError:
    raise SweepError("optuna is not installed: pip install -e '.[train,sweep]'") from None
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
  return optuna


def make_storage(optuna, url: str):
  if url.startswith("sqlite:///"):
    folder = os.path.dirname(url[len("sqlite:///"):])
    if folder:
      os.makedirs(folder, exist_ok=True)
    # Workers write at once: wait for SQLite's lock rather than fail.
    return optuna.storages.RDBStorage(
        url, engine_kwargs={"connect_args": {"timeout": 60}})
  return optuna.storages.RDBStorage(url)


def load_study(optuna, storage, name: str, sweep: dict, create: bool = False):
  # Samplers and pruners are not stored: every process makes its own.
  # constant_liar keeps parallel workers from proposing the same point.
  sampler = optuna.samplers.TPESampler(constant_liar=True)
  pruner = (optuna.pruners.MedianPruner(**sweep["pruner"])
            if sweep["pruner"] is not None else optuna.pruners.NopPruner())
  if create:
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler,
                               pruner=pruner, direction=sweep["direction"],
                               load_if_exists=True)
  return optuna.load_study(study_name=name, storage=storage, sampler=sampler,
                           pruner=pruner)


def counts(optuna, study) -> dict:
  TS = optuna.trial.TrialState
  trials = study.get_trials(deepcopy=False)
  return dict(
      finished=sum(t.state in (TS.COMPLETE, TS.PRUNED) for t in trials),
      running=sum(t.state == TS.RUNNING for t in trials),
      failed=[t for t in trials if t.state == TS.FAIL and "error" in t.user_attrs])


def claim_trial(optuna, study, trials: int, lock: str):
  """The next trial to run, or None when the study has enough.

  Counting and asking under one lock: J workers start exactly the trials
  still missing (finished + running < `trials`), no more. A sweep whose
  trials keep failing (e.g. invalid combinations) stops after `trials`
  failures.
  """
  with file_lock(lock):
    n = counts(optuna, study)
    if (n["finished"] + n["running"] >= trials or len(n["failed"]) >= trials):
      return None
    return study.ask()  # a queued (retried) trial first


@contextlib.contextmanager
def file_lock(path: str):
  with open(path, "a") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def format_params(params: dict) -> str:
  return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in params.items())


def write_best_config(optuna, study, sweep: dict, fixed: dict, path: str,
                      storage_url: str):
  """Writes the best complete trial as a config file for train.py; returns it."""
  if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
    return None
  best = study.best_trial
  base = sweep["base_config"]
  resolved = config_lib.resolve_config_path(base)
  if os.path.dirname(resolved) != config_lib.CONFIG_DIR:
    base = resolved  # a file outside configs/: only its full path always resolves
  lines = [
      f'"""Best trial of the Optuna study {study.study_name!r} ({storage_url}):',
      f"trial {best.number}, {sweep['objective']} {best.value:.6g} "
      f"({sweep['direction']}"
      + (f"; the mean over {sweep['seeds']} seeds" if sweep["seeds"] > 1
         else "") + ").",
      "",
      "Written by scripts/sweep.py; train it with",
      f"  python scripts/train.py --config {path}",
      '"""', "", "from muesli_jax.config import load_config_file", "", "",
      "def get_config():",
      f"  c = load_config_file({base!r})"]
  if fixed:
    lines.append("  # Fixed for every trial (sweep overrides, --config.KEY=VALUE).")
    lines += [f"  c.{key} = {value!r}" for key, value in fixed.items()]
  lines.append(f"  # Searched: trial {best.number}'s values.")
  lines += [f"  c.{key} = {value!r}" for key, value in best.params.items()]
  lines += ["  return c", ""]
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write("\n".join(lines))
  os.replace(tmp, path)  # readers never see half a file
  return best


# ------------------------------------------------------------------- workers


class Reporter:
  """`on_log` for training: reports mean100 to Optuna, says when to prune.

  Steps are rounded down to multiples of `every` env steps: the median
  pruner compares trials at equal steps, and raw env steps differ between
  trials whose warm-up or batch shape differ.
  """

  def __init__(self, trial, every: int):
    self.trial, self.every = trial, every
    self.last = 0
    self.pruned_at = None

  def __call__(self, env_steps: int, mean_return: float) -> bool:
    step = env_steps // self.every * self.every
    if step <= self.last:
      return False
    self.last = step
    self.trial.report(mean_return, step)
    if self.trial.should_prune():
      self.pruned_at = (env_steps, mean_return)
      return True
    return False


def objective_value(summary: dict, objective: str, config) -> float:
  if objective == "steps_to_solve":
    solved = summary.get("solved_at_steps")
    return float(config.total_env_steps if solved is None else solved)
  if objective == "train_return":
    value = summary.get("mean_return_last_100")
    if value is None:
      raise TrialError("no episode finished")
  else:
    value = summary.get("eval_return_mean")
    if value is None:
      raise TrialError("training reported no evaluation (eval_return_mean)")
  return float(value)


def run_trial(optuna, training, study, trial, sweep, base, study_dir) -> None:
  """Trains one trial and tells Optuna how it ended."""
  TS = optuna.trial.TrialState
  start = time.time()
  params = {}
  state, value, note = TS.FAIL, None, ""
  try:
    for key, spec in sweep["space"].items():
      kind = spec[0]
      if kind == "categorical":
        params[key] = trial.suggest_categorical(key, spec[1])
      elif kind in ("float", "log_float"):
        params[key] = trial.suggest_float(key, spec[1], spec[2], step=spec[3],
                                          log=kind == "log_float")
      else:
        params[key] = trial.suggest_int(key, spec[1], spec[2], step=spec[3] or 1,
                                        log=kind == "log_int")
    run_dir = os.path.join(study_dir, f"trial_{trial.number}")
    trial.set_user_attr("run_dir", run_dir)
    # Only the first seed reports: Optuna keeps one value per step.
    reporter = Reporter(trial, sweep["report_every"])
    config = trial_config(base, params)
    values, env_steps = [], []
    for i in range(sweep["seeds"]):
      seed_config = copy.deepcopy(config)
      seed_config.seed = config.seed + i
      summary = training.train(
          seed_config, progress=False, on_log=reporter if i == 0 else None,
          run_dir=(run_dir if sweep["seeds"] == 1 else
                   os.path.join(run_dir, f"seed_{seed_config.seed}")))
      if summary.get("interrupted"):
        raise KeyboardInterrupt
      env_steps.append(summary.get("env_steps"))
      if reporter.pruned_at is not None:
        break
      values.append(objective_value(summary, sweep["objective"], seed_config))
    trial.set_user_attr("env_steps", env_steps[0] if sweep["seeds"] == 1
                        else env_steps)
    if reporter.pruned_at is not None:
      state = TS.PRUNED
      note = (f"pruned at {reporter.pruned_at[0]} env steps (mean100 "
              f"{reporter.pruned_at[1]:.4g})")
    else:
      value = sum(values) / len(values)
      state, note = TS.COMPLETE, f"{sweep['objective']} {value:.4g}"
      if len(values) > 1:
        trial.set_user_attr("seed_values", values)
        note += f" (mean of seeds: {', '.join(f'{v:.4g}' for v in values)})"
  except KeyboardInterrupt:
    # Failed now, tried again (from scratch) by whichever run comes next.
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=TS.FAIL)
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    print(f"trial {trial.number} interrupted after {time.time() - start:.0f} s; "
          f"its parameters are queued again", flush=True)
    raise
  except NonFiniteLossError as e:
    # Pruned, not failed: it counts towards --trials (a diverging region
    # cannot keep a sweep going forever) and TPE learns the region is bad.
    trial.set_user_attr("error", f"non-finite loss: {e}")
    state, note = TS.PRUNED, f"pruned: non-finite loss ({e})"
  except (config_lib.ConfigError, SweepError, TrialError) as e:
    trial.set_user_attr("error", str(e))
    note = f"failed: {e}"
  except Exception as e:
    trial.set_user_attr("error", f"{type(e).__name__}: {e}")
    study.tell(trial, state=TS.FAIL)
    raise
  seconds = time.time() - start
  trial.set_user_attr("seconds", round(seconds, 1))
  if state == TS.COMPLETE:
    study.tell(trial, value)
  else:
    study.tell(trial, state=state)
  print(f"trial {trial.number}: {note} | {format_params(params)} | {seconds:.0f} s",
        flush=True)


def pin_worker(index: int, jobs: int) -> None:
  """Pins worker `index` to its share of the cores (before JAX starts: XLA
  sizes its thread pool from them)."""
  cpus = sorted(os.sched_getaffinity(0))
  if jobs <= len(cpus):
    share = cpus[index * len(cpus) // jobs:(index + 1) * len(cpus) // jobs]
    os.sched_setaffinity(0, share)


def exit_with_parent() -> None:
  """A worker whose sweep process died (e.g. `kill -9`) stops too; its trial
  stays RUNNING, and the next run of the sweep retries it."""
  parent = os.getppid()

  def watch():
    while True:
      time.sleep(1.0)
      if os.getppid() != parent:
        os._exit(1)

  threading.Thread(target=watch, daemon=True).start()


def worker(args, sweep, base) -> int:
  """Claims and runs trials until the study has enough; exit code."""
  if args.pin:
    pin_worker(args.worker, args.jobs)
  exit_with_parent()
  stopping = []

  def interrupt(signum, frame):
    # Ctrl-C reaches the worker from the terminal and from the sweep
    # process: act on the first, so the trial's clean-up is not cut short.
    if not stopping:
      stopping.append(signum)
      raise KeyboardInterrupt

  signal.signal(signal.SIGINT, interrupt)
  signal.signal(signal.SIGTERM, interrupt)
  optuna = import_optuna()
  from muesli_jax import training  # after pinning: JAX sizes its threads
  storage = make_storage(optuna, args.storage)
  study = load_study(optuna, storage, args.study, sweep)
  study_dir = os.path.join(base.logdir, "sweeps", args.study)
  lock = os.path.join(study_dir, ".trials.lock")
  best_path = os.path.join(study_dir, "best_config.py")
  try:
    while True:
      trial = claim_trial(optuna, study, args.trials, lock)
      if trial is None:
        return 0
      run_trial(optuna, training, study, trial, sweep, base, study_dir)
      with file_lock(lock):  # the last writer has seen every earlier trial
        write_best_config(optuna, study, sweep, args.fixed, best_path, args.storage)
  except KeyboardInterrupt:
    return 130


# ---------------------------------------------------------------- supervisor


def recover(optuna, storage, study) -> None:
  """Trials RUNNING now were left by a sweep that was killed (this process
  holds the study's lock): mark them failed and queue their parameters.

  Optuna's heartbeats (`RDBStorage(heartbeat_interval=...)` with
  `RetryFailedTrialCallback`) would find them only a grace period after the
  kill, and are recorded only for trials run by `study.optimize`.
  """
  TS = optuna.trial.TrialState
  study_id = storage.get_study_id_from_name(study.study_name)
  for t in study.get_trials(deepcopy=False, states=(TS.RUNNING,)):
    # Attributes can be set only while the trial runs: first the mark, then
    # the failure.
    storage.set_trial_user_attr(
        storage.get_trial_id_from_study_id_trial_number(study_id, t.number),
        "interrupted", True)
    study.tell(t.number, state=TS.FAIL)
    # An enqueued trial killed before it drew its values has them here.
    params = {**t.system_attrs.get("fixed_params", {}), **t.params}
    study.enqueue_trial(params, user_attrs={"retry_of": t.number})
    print(f"trial {t.number} was left running by an interrupted sweep: marked "
          f"failed, its parameters queued again", flush=True)


def start_study(study, sweep: dict, base, fixed: dict, name: str) -> None:
  """Records the sweep's settings in a new study (and queues the base config
  as its first trial where the sweep asks); refuses a study run with others."""
  wanted = settings(sweep, fixed)
  stored = study.user_attrs.get("sweep")
  if stored is None:
    study.set_user_attr("sweep", wanted)
    if sweep["start_from_base"]:
      study.enqueue_trial({key: base[key] for key in sweep["space"]},
                          user_attrs={"base_config": True})
  elif stored != wanted:
    differ = ", ".join(k for k in wanted if stored.get(k) != wanted[k])
    raise SweepError(f"{name} was run with other settings ({differ} differ): "
                     "rerun its command or pick another --study")


def summary_table(optuna, study, sweep: dict, n: int) -> str:
  """The `n` best complete trials (and the base config's) as markdown."""
  TS = optuna.trial.TrialState
  complete = study.get_trials(deepcopy=False, states=(TS.COMPLETE,))
  if not complete:
    raise SweepError(f"study {study.study_name!r} has no complete trial yet")
  sign = 1 if sweep["direction"] == "minimize" else -1
  ranked = sorted(complete, key=lambda t: (sign * t.value, t.number))
  shown = ranked[:n] + [t for t in ranked[n:] if t.user_attrs.get("base_config")]
  keys = list(sweep["space"])
  lines = [f"| rank | trial | {sweep['objective']} |"
           + (" per seed |" if sweep["seeds"] > 1 else "")
           + "".join(f" {k} |" for k in keys),
           "|" + "---:|" * (3 + (sweep["seeds"] > 1) + len(keys))]
  rank_of = {t.number: i + 1 for i, t in enumerate(ranked)}
  for t in shown:
    rank = rank_of[t.number]
    name = f"{t.number} (base)" if t.user_attrs.get("base_config") else str(t.number)
    seeds = (" " + ", ".join(f"{v:.6g}" for v in t.user_attrs.get("seed_values", []))
             + " |") if sweep["seeds"] > 1 else ""
    values = "".join(f" {v:.3g} |" if isinstance(v, float) else f" {v} |"
                     for v in (t.params[k] for k in keys))
    lines.append(f"| {rank} | {name} | {t.value:.6g} |{seeds}{values}")
  failed = len(study.get_trials(deepcopy=False, states=(TS.FAIL,)))
  lines.append("")
  lines.append(f"{len(complete)} complete trials ({sweep['direction']}), "
               f"{failed} failed or interrupted; study {study.study_name!r}.")
  return "\n".join(lines) + "\n"


def print_summary(args, sweep: dict, n: int) -> int:
  optuna = import_optuna()
  storage = make_storage(optuna, args.storage)
  if args.study not in optuna.study.get_all_study_names(storage):
    raise SweepError(f"no study {args.study!r} in {args.storage}")
  study = load_study(optuna, storage, args.study, sweep)
  print(summary_table(optuna, study, sweep, n), end="")
  return 0


def supervise(args, sweep, base, argv) -> int:
  optuna = import_optuna()
  study_dir = os.path.join(base.logdir, "sweeps", args.study)
  os.makedirs(study_dir, exist_ok=True)
  lock_file = open(os.path.join(study_dir, ".sweep.lock"), "a")
  try:
    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    raise SweepError(f"study {args.study!r} is being run by another sweep "
                     f"({study_dir} is locked)") from None
  storage = make_storage(optuna, args.storage)
  exists = args.study in optuna.study.get_all_study_names(storage)
  if not exists and any(d.startswith("trial_") for d in os.listdir(study_dir)):
    raise SweepError(f"{study_dir} holds trials of an earlier study named "
                     f"{args.study!r} that {args.storage} does not have: move it "
                     "or pick another --study")
  study = load_study(optuna, storage, args.study, sweep, create=True)
  start_study(study, sweep, base, args.fixed, f"study {args.study!r} in {args.storage}")
  recover(optuna, storage, study)
  n = counts(optuna, study)
  missing = args.trials - n["finished"]
  workers = min(args.jobs, max(missing, 0))
  print(f"study {args.study!r} ({args.storage}): {n['finished']} of "
        f"{args.trials} trials finished; {workers} worker"
        f"{'' if workers == 1 else 's'}", flush=True)
  signals = []
  procs = []

  def stop(signum, frame):
    signals.append(signum)
    if len(signals) == 1:
      print("stopping: running trials save and are queued again "
            "(Ctrl-C again kills them)", flush=True)
    send(signal.SIGINT if len(signals) == 1 else signal.SIGKILL)

  def send(sig):
    for p in procs:
      if p.poll() is None:
        with contextlib.suppress(ProcessLookupError):
          p.send_signal(sig)

  broken = None
  if workers:
    env = dict(os.environ)
    if args.jobs > 1:  # JAX would give each worker 75% of the GPU memory
      env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    command = [sys.executable, os.path.abspath(__file__), *argv,
               "--sweep", sweep["path"], "--study", args.study,
               "--storage", args.storage]
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for i in range(workers):
      procs.append(subprocess.Popen(command + ["--worker", str(i)], env=env))
    while any(p.poll() is None for p in procs):
      for i, p in enumerate(procs):
        if p.returncode not in (None, 0) and not signals and broken is None:
          broken = (i, p.returncode)
          print(f"error: worker {i} exited with code {p.returncode}; stopping "
                "the sweep (rerun the same command to continue)",
                file=sys.stderr, flush=True)
          send(signal.SIGINT)
      time.sleep(0.5)
    for i, p in enumerate(procs):  # one that ended in the last half second
      if p.returncode != 0 and not signals and broken is None:
        broken = (i, p.returncode)
        print(f"error: worker {i} exited with code {p.returncode}",
              file=sys.stderr, flush=True)
  best_path = os.path.join(study_dir, "best_config.py")
  best = write_best_config(optuna, study, sweep, args.fixed, best_path, args.storage)
  n = counts(optuna, study)
  print(f"{n['finished']} of {args.trials} trials finished "
        f"({len(n['failed'])} failed)")
  if best is None:
    print("no trial has completed yet")
  else:
    print(f"best: trial {best.number}, {sweep['objective']} {best.value:.6g} | "
          f"{format_params(best.params)}")
    print(f"best config: {best_path}\n  train it: python scripts/train.py "
          f"--config {best_path}")
  print(f"dashboard: optuna-dashboard {args.storage}  "
        "(pip install optuna-dashboard)", flush=True)
  if signals:
    print("interrupted: rerun the same command to continue", flush=True)
    return 130
  if broken is not None:
    return 1
  if n["finished"] < args.trials:
    last = n["failed"][-1] if n["failed"] else None
    why = (f" (trial {last.number}: {last.user_attrs['error']})" if last else "")
    print(f"error: stopped after {len(n['failed'])} failed trials{why}",
          file=sys.stderr)
    return 1
  return 0


def main(argv) -> int:
  try:
    args, cli = parse_cli(argv)
    sweep = load_sweep(args.sweep)
    base, args.fixed = make_base(sweep, cli)
    args.study = args.study or os.path.splitext(os.path.basename(sweep["path"]))[0]
    args.storage = args.storage or (
        "sqlite:///" + os.path.join(base.logdir, "sweeps", f"{args.study}.db"))
    if args.worker is not None:
      return worker(args, sweep, base)
    if args.summary is not None:
      return print_summary(args, sweep, args.summary)
    from muesli_jax import envs  # gymnasium, not JAX: the supervisor stays light
    try:
      envs.check_env_id(base.env_id)
    except envs.UnknownEnvError as e:
      raise SweepError(str(e)) from None
    # Workers get the same overrides; their own --sweep/--study/--storage
    # (given after these) win.
    return supervise(args, sweep, base, [f"--config.{k}={v}" for k, v in cli] +
                     ["--trials", str(args.trials), "--jobs", str(args.jobs)] +
                     (["--pin"] if args.pin else []))
  except (SweepError, config_lib.ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    return 130


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
