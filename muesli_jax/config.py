"""Loading and checking configs: `--config FILE` plus `--config.key=value`.

Follows ml_collections' conventions without absl: a config file defines
`get_config() -> ConfigDict`; overrides are parsed to the type of the field
they replace. Every problem raises `ConfigError` with one clear line.
"""

import ast
import difflib
import importlib.util
import json
import os
import sys
from typing import List, Optional, Sequence, Tuple

import ml_collections

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(REPO_ROOT, "configs")


from muesli_jax.errors import ConfigError  # noqa: F401  (raised here)
from muesli_jax import hparams


def resolve_config_path(path: str) -> str:
  """`lunar.py`, `lunar` or `configs/lunar.py` all name `configs/lunar.py`."""
  candidates = [path, os.path.join(REPO_ROOT, path),
                os.path.join(CONFIG_DIR, path),
                os.path.join(CONFIG_DIR, path + ".py")]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return os.path.abspath(candidate)
  available = sorted(f for f in os.listdir(CONFIG_DIR)
                     if f.endswith(".py") and not f.startswith("_"))
  raise ConfigError(f"config file {path!r} not found (available in configs/: "
                    f"{', '.join(available)})")


def load_config_file(path: str) -> ml_collections.ConfigDict:
  path = resolve_config_path(path)
  if REPO_ROOT not in sys.path:  # configs may import each other
    sys.path.insert(0, REPO_ROOT)
  spec = importlib.util.spec_from_file_location("_muesli_config", path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      raise ConfigError(f"{path} defines no get_config()")
    config = module.get_config()
  except ConfigError:
    raise
  except Exception as e:  # A broken config file: say where, not a traceback.
    raise ConfigError(f"cannot load config file {path}: "
                      f"{type(e).__name__}: {e}") from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() must return a ConfigDict")
  config.lock()  # unknown keys in overrides become errors
  return config


def _parse_value(key: str, text: str, current):
  if isinstance(current, bool):
    lowered = text.lower()
    if lowered in ("true", "1", "yes"):
      return True
    if lowered in ("false", "0", "no"):
      return False
    raise ConfigError(f"--config.{key} expects true or false, got {text!r}")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    raise ConfigError(f"--config.{key}: cannot parse {text!r} as "
                      f"{type(current).__name__}") from None
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, int) and isinstance(value, float) and value.is_integer():
    value = int(value)
  if isinstance(value, bool) and not isinstance(current, bool):
    raise ConfigError(f"--config.{key} expects {type(current).__name__}, "
                      f"got {text!r}")
  if current is not None and not isinstance(value, type(current)):
    raise ConfigError(f"--config.{key} expects {type(current).__name__}, "
                      f"got {text!r}")
  return value


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[Tuple[str, str]]) -> None:
  for key, text in overrides:
    if key not in config:
      close = difflib.get_close_matches(key, list(config.keys()), n=3)
      hint = f" (similar: {', '.join(close)})" if close else ""
      raise ConfigError(f"unknown config key {key!r}{hint}")
    with config.unlocked():
      config[key] = _parse_value(key, text, config[key])


def parse_overrides(args: Sequence[str],
                    usage: str = "") -> List[Tuple[str, str]]:
  """`--config.KEY=VALUE` (or `--config.KEY VALUE`) arguments -> `[(KEY,
  VALUE text)]`, in order; `apply_overrides` parses the texts.

  Args:
    args: command-line arguments, every one an override or its value.
    usage: what follows "unexpected argument 'ARG'" in the error for an
      argument that is no override, e.g. "; overrides are --config.KEY=VALUE".

  Raises:
    ConfigError: an argument that is no override, or a key without a value.
  """
  overrides = []
  i = 0
  while i < len(args):
    arg = args[i]
    if not arg.startswith("--config."):
      raise ConfigError(f"unexpected argument {arg!r}{usage}")
    body = arg[len("--config."):]
    if "=" in body:
      key, text = body.split("=", 1)
      i += 1
    elif i + 1 < len(args):
      key, text = body, args[i + 1]
      i += 2
    else:
      raise ConfigError(f"{arg} needs a value, e.g. {arg}=...")
    overrides.append((key, text))
  return overrides


def parse_args(argv: Sequence[str],
               default: str = "lunar.py") -> ml_collections.ConfigDict:
  """Parses `--config FILE` and `--config.KEY=VALUE` (or `--config.KEY VALUE`)."""
  path: Optional[str] = None
  rest: List[str] = []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg in ("--config", "-c"):
      if i + 1 >= len(args):
        raise ConfigError("--config needs a file, e.g. --config lunar.py")
      path = args[i + 1]
      i += 2
    elif arg.startswith("--config="):
      path = arg.split("=", 1)[1]
      i += 1
    else:
      rest.append(arg)
      i += 1
  overrides = parse_overrides(
      rest, "; use --config FILE and --config.KEY=VALUE")
  config = load_config_file(path or default)
  apply_overrides(config, overrides)
  validate(config)
  return config


def load_run_config(run_dir: str) -> ml_collections.ConfigDict:
  """A run's saved `config.json` over the current defaults (older runs lack
  newer keys), locked like a config file's."""
  path = os.path.join(run_dir, "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"{run_dir} is not a run folder (no config.json)")
  try:
    with open(path) as f:
      saved = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"cannot read {path}: {e}") from None
  config = load_config_file("lunar.py")
  with config.unlocked():
    for key, value in saved.items():
      config[key] = tuple(value) if isinstance(value, list) else value
  return config


def parse_resume_args(argv: Sequence[str]):
  """`--resume RUN_DIR [--config.KEY=VALUE ...]` -> `(run_dir, config)`:
  the run's own config, with overrides (e.g. a longer `total_env_steps`)."""
  args = list(argv)
  i = args.index("--resume")
  if i + 1 >= len(args) or args[i + 1].startswith("--"):
    raise ConfigError("--resume needs a run folder, e.g. --resume runs/RUN")
  run_dir = args[i + 1]
  rest = args[:i] + args[i + 2:]
  if any(a in ("--config", "-c") or a.startswith("--config=") for a in rest):
    raise ConfigError("--resume takes the run's own config; change single "
                      "keys with --config.KEY=VALUE")
  config = load_run_config(run_dir)
  config.lock()
  overrides = parse_overrides(rest)
  apply_overrides(config, overrides)
  validate(config)
  return run_dir, config


def validate(config: ml_collections.ConfigDict) -> None:
  """Checks values that would otherwise fail deep inside JAX or gymnasium.

  The learner's, the networks' and the replay's own rules are checked by
  building their hyperparameters (`muesli_jax.hparams`); the rest here.
  """
  # The run's length and pace (which the learning rate's decay also needs).
  positive = ["num_envs", "total_env_steps", "steps_per_update", "frame_size"]
  for key in positive:
    if key in config and not config[key] > 0:
      raise ConfigError(f"{key} must be positive, got {config[key]}")
  for key in ("checkpoint_interval", "eval_interval"):
    if key in config and config[key] < 0:
      raise ConfigError(f"{key} must be >= 0 (0 turns it off), got "
                        f"{config[key]}")
  for key in ("keep_checkpoints", "eval_episodes"):
    if key in config and config[key] < 1:
      raise ConfigError(f"{key} must be at least 1, got {config[key]}")
  if "sticky_actions" in config and not 0.0 <= config.sticky_actions <= 1.0:
    raise ConfigError(f"sticky_actions must be in [0, 1], got "
                      f"{config.sticky_actions}")
  if "actor_device" in config and config.actor_device not in ("", "cpu"):
    raise ConfigError(f"actor_device must be \"\" (jax's default device) or "
                      f"cpu, got {config.actor_device!r}")
  if "num_processes" in config:
    if config.num_processes < 0:
      raise ConfigError(f"num_processes must be >= 0 (0: from the "
                        f"environment), got {config.num_processes}")
    if config.process_id < -1 or (config.num_processes and
                                  config.process_id >= config.num_processes):
      raise ConfigError(f"process_id must be in [0, num_processes) (-1: from "
                        f"the environment), got {config.process_id}")
  hparams.LearnerHparams.from_config(config)
  hparams.NetworkHparams.from_config(config)
  hparams.ReplayHparams.from_config(config)
