"""Bad input to `scripts/train.py` and `muesli_jax.config.parse_args`."""

import json
import os
import subprocess
import sys

import pytest

from muesli_jax import config as config_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(REPO_ROOT, "scripts", "train.py")


def run_train(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, TRAIN, *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("args, names", [
    (["--config.env_id=NoSuchEnv-v0"], "NoSuchEnv-v0"),
    (["--config.no_such_key=1"], "no_such_key"),
    (["--config.learning_rate=0"], "learning_rate"),
    (["--config.batch_size=-4"], "batch_size"),
    (["--config", "nope.py"], "nope.py"),
], ids=["unknown_env", "unknown_key", "zero_lr", "negative_batch",
        "missing_file"])
def test_cli_rejects_bad_input(args, names):
  result = run_train(*args)
  assert result.returncode != 0, result.stdout
  assert "Traceback" not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert lines, "nothing on stderr"
  last = lines[-1]
  assert last.startswith("error:"), result.stderr
  assert names in last, last


def test_cli_config_file_with_syntax_error(tmp_path):
  # A config file that does not even parse is a config problem like any other:
  # one `error:` line naming the file, not a traceback.
  bad = tmp_path / "broken_config.py"
  bad.write_text("def get_config(:\n")
  result = run_train("--config", str(bad))
  assert result.returncode != 0
  assert "UnboundLocalError" not in result.stderr, result.stderr
  assert "Traceback" not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert lines[-1].startswith("error:") and "broken_config.py" in lines[-1]


@pytest.fixture
def in_repo_root(monkeypatch):
  monkeypatch.chdir(REPO_ROOT)


@pytest.mark.parametrize("name", ["lunar.py", "configs/lunar.py", "lunar"])
def test_config_file_resolves(in_repo_root, name):
  config = config_lib.parse_args(["--config", name])
  assert config.env_id == "LunarLander-v3"


def test_config_file_resolves_outside_repo(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  config = config_lib.parse_args(["--config", "lunar.py"])
  assert config.env_id == "LunarLander-v3"


def test_config_equals_form_and_default(in_repo_root):
  assert config_lib.parse_args(["--config=cartpole.py"]).env_id == "CartPole-v1"
  assert config_lib.parse_args([]).env_id == "LunarLander-v3"


def test_float_override(in_repo_root):
  config = config_lib.parse_args(["--config", "lunar.py",
                                  "--config.learning_rate=1e-3"])
  assert isinstance(config.learning_rate, float)
  assert config.learning_rate == 1e-3
  # an int literal for a float field becomes a float
  config = config_lib.parse_args(["--config.learning_rate", "1"])
  assert isinstance(config.learning_rate, float)
  assert config.learning_rate == 1.0


def test_bool_override(in_repo_root):
  config = config_lib.parse_args(["--config", "lunar.py",
                                  "--config.lr_decay=false"])
  assert config.lr_decay is False
  config = config_lib.parse_args(["--config.lr_decay=True"])
  assert config.lr_decay is True
  with pytest.raises(config_lib.ConfigError):
    config_lib.parse_args(["--config.lr_decay=maybe"])


def test_int_override(in_repo_root):
  config = config_lib.parse_args(["--config.batch_size=64"])
  assert config.batch_size == 64 and isinstance(config.batch_size, int)
  with pytest.raises(config_lib.ConfigError, match="batch_size"):
    config_lib.parse_args(["--config.batch_size=2.5"])
  with pytest.raises(config_lib.ConfigError, match="batch_size"):
    config_lib.parse_args(["--config.batch_size=abc"])


@pytest.mark.parametrize("override", ["--config.batch_size=True",
                                      "--config.seed=False"])
def test_bool_literal_for_int_field_raises(in_repo_root, override):
  # bool is a subclass of int in Python, but `True` is not a batch size.
  with pytest.raises(config_lib.ConfigError):
    config_lib.parse_args([override])


def test_string_override(in_repo_root):
  config = config_lib.parse_args(["--config.value_target=nstep"])
  assert config.value_target == "nstep"
  with pytest.raises(config_lib.ConfigError, match="value_target"):
    config_lib.parse_args(["--config.value_target=td"])


@pytest.mark.parametrize("argv, match", [
    (["--config.no_such_key=1"], "no_such_key"),
    (["--config", "nope.py"], "nope.py"),
    (["--config"], "--config"),
    (["--config.batch_size"], "batch_size"),
    (["stray"], "stray"),
    (["--config.discount=1.5"], "discount"),
    (["--config.value_min=40.0"], "value_min"),
    (["--config.prior_mix_uniform=0.5"], "prior_mix"),
    (["--config.replay_capacity=10"], "replay_capacity"),
    (["--config.torso=transformer"], "torso"),
    (["--config.dynamics_core=gru"], "dynamics_core"),
    (["--config.conv_channels=(16,0)"], "conv_channels"),
    (["--config.conv_channels=[16]"], "conv_channels"),
    (["--config.frame_size=0"], "frame_size"),
    (["--config.sticky_actions=2.0"], "sticky_actions"),
    (["--config.num_processes=-1"], "num_processes"),
    (["--config.num_processes=2", "--config.process_id=2"], "process_id"),
    (["--config.actor_device=gpu"], "actor_device"),
    (["--config.policy_gradient=ppo"], "policy_gradient"),
])
def test_parse_args_errors(in_repo_root, argv, match):
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.parse_args(argv)


@pytest.mark.parametrize("name", ["minatar.py", "minigrid.py",
                                  "lunar_pixels.py", "atari.py"])
def test_pixel_configs_load_and_take_tuple_overrides(in_repo_root, name):
  config = config_lib.parse_args(["--config", name,
                                  "--config.conv_channels=(8, 8)"])
  assert config.conv_channels == (8, 8) and config.torso == "conv"


@pytest.mark.parametrize("name", sorted(
    f for f in os.listdir(os.path.join(config_lib.REPO_ROOT, "configs"))
    if f.endswith(".py") and not f.startswith("_")))
def test_every_config_file_loads_and_validates(in_repo_root, name):
  config = config_lib.parse_args(["--config", name])
  assert config.num_envs > 0 and config.batch_size > 0


def test_a_run_too_short_to_update_says_so(tmp_path):
  # CartPole: 8 envs, warm-up 64 + a window of 22 steps -> the first update
  # at 688 env steps.
  args = ["--config", "cartpole.py", "--config.eval_interval=0",
          "--config.checkpoint_interval=0", "--config.hidden_size=16",
          "--config.head_size=16", "--config.num_blocks=1"]
  for steps, updates in ((600, 0), (688, 1)):
    proc = run_train(*args, f"--config.total_env_steps={steps}",
                     f"--config.logdir={tmp_path / str(steps)}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = (f"warning: total_env_steps={steps} ends in the replay's "
              "warm-up") in proc.stdout
    assert warned == (updates == 0), proc.stdout[-2000:]
    (summary,) = (tmp_path / str(steps)).glob("*/summary.json")
    assert json.loads(summary.read_text())["updates"] == updates


@pytest.mark.parametrize("argv, message", [
    (["--config"], "--config needs a file, e.g. --config lunar.py"),
    (["--config.batch_size"],
     "--config.batch_size needs a value, e.g. --config.batch_size=..."),
    (["--config.seed=1", "stray"],
     "unexpected argument 'stray'; use --config FILE and --config.KEY=VALUE"),
], ids=["file_without_name", "key_without_value", "stray"])
def test_parse_args_error_lines(in_repo_root, argv, message):
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.parse_args(argv)
  assert str(error.value) == message


def test_parse_args_overrides_in_both_forms_around_the_file(in_repo_root):
  config = config_lib.parse_args(["--config.batch_size", "8", "-c",
                                  "cartpole.py", "--config.seed=3",
                                  "--config.logdir=a=b"])
  assert config.env_id == "CartPole-v1"
  assert (config.batch_size, config.seed, config.logdir) == (8, 3, "a=b")


@pytest.fixture
def run_dir(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(
      config_lib.load_config_file("cartpole.py").to_dict()))
  return str(tmp_path)


def test_parse_resume_args_takes_overrides(run_dir):
  got_dir, config = config_lib.parse_resume_args(
      ["--config.total_env_steps", "5000", "--resume", run_dir,
       "--config.batch_size=8"])
  assert got_dir == run_dir and config.env_id == "CartPole-v1"
  assert (config.total_env_steps, config.batch_size) == (5000, 8)


@pytest.mark.parametrize("args, message", [
    (["stray"], "unexpected argument 'stray'"),
    (["--config.batch_size"],
     "--config.batch_size needs a value, e.g. --config.batch_size=..."),
    (["--config", "lunar.py"],
     "--resume takes the run's own config; change single keys with "
     "--config.KEY=VALUE"),
    (["--config.no_such_key=1"], "unknown config key 'no_such_key'"),
], ids=["stray", "key_without_value", "config_file", "unknown_key"])
def test_parse_resume_args_error_lines(run_dir, args, message):
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.parse_resume_args(["--resume", run_dir, *args])
  assert str(error.value) == message


def test_parse_resume_args_needs_a_folder():
  with pytest.raises(config_lib.ConfigError) as error:
    config_lib.parse_resume_args(["--resume", "--config.seed=1"])
  assert str(error.value) == ("--resume needs a run folder, e.g. --resume "
                              "runs/RUN")


@pytest.mark.parametrize("args, message", [
    (["--run-name", "taken"], "already holds a run: continue it with "
     "--resume"),
    (["--run-name=a/b"], "--run-name takes one folder name"),
    (["--run-name"], "--run-name needs a folder name"),
    (["--run-name", "new", "--resume", "taken"],
     "--run-name names a new run"),
], ids=["holds_a_run", "nested", "no_name", "with_resume"])
def test_run_name_mistakes_are_one_error_line(tmp_path, capsys, args,
                                              message):
  """`train.py --run-name NAME` trains into LOGDIR/NAME, never into a run."""
  from conftest import load_script
  (tmp_path / "taken").mkdir()
  (tmp_path / "taken" / "config.json").write_text("{}")
  train = load_script("train")
  assert train.main([*args, "--config", "cartpole.py",
                     f"--config.logdir={tmp_path}"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and err.count("\n") == 1
  assert message in err
  assert sorted(os.listdir(tmp_path)) == ["taken"]


@pytest.mark.parametrize("name", sorted(
    f for f in os.listdir(os.path.join(config_lib.REPO_ROOT, "configs"))
    if f.endswith(".py") and not f.startswith("_") and f != "lunar.py"))
def test_only_lunar_takes_its_swept_values(in_repo_root, monkeypatch, name):
  """The other configs start from `lunar.shared_config()`: what lunar.py's
  sweep changes does not move results measured with the shared values."""
  from configs import lunar
  marker = 0.123456
  monkeypatch.setattr(lunar, "SWEPT", dict(lunar.SWEPT, learning_rate=marker))
  assert lunar.get_config().learning_rate == marker
  # The other files import configs.lunar, the module patched here.
  assert config_lib.parse_args(["--config", name]).learning_rate != marker
