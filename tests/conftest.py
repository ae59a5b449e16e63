"""What the tests share: runs of the scripts in subprocesses, tiny configs,
random batches, a compilation cache, and the learning runs that train
beside the tests and that several tests read.

Test modules import the helpers (`from conftest import ...`); the fixtures
reach them through pytest.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# XLA's compilations go to a cache that the test process and the scripts it
# starts share: the update takes 5-15 s to compile on a 2-core CPU, and many
# runs compile the same one (a run and its resume, a killed run and its
# reference, the benchmark's loops). The key covers the program, the devices
# and XLA_FLAGS, so a process loads only what it would have compiled itself.
# A folder of the session unless JAX_COMPILATION_CACHE_DIR names one.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
      prefix="muesli_xla_cache_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
if "jax" in sys.modules:  # imported before this file: read its settings
  sys.modules["jax"].config.update(
      "jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
  sys.modules["jax"].config.update(
      "jax_persistent_cache_min_compile_time_secs",
      float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
# XLA's one-thread flags in every process of the suite, so that the test
# processes and the scripts they start share compiled programs (the cache
# key covers XLA_FLAGS). jax 0.10's CPU client ignores the flags themselves:
# its threads follow the CPU affinity, so each pytest-xdist worker still
# uses every core it may. Set before jax starts its backend.
ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
if ONE_THREAD not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      f for f in (os.environ.get("XLA_FLAGS"), ONE_THREAD) if f)
# Small networks and replays: most of a short run is compiling the update.
TINY_NETWORK = dict(hidden_size=16, head_size=16, num_blocks=1)
TINY_RUN = dict(TINY_NETWORK, num_envs=2, batch_size=4, sequence_length=4,
                warmup_steps=8, replay_capacity=200, log_interval=5)


def script_env(devices: int = 0, path: tuple = ()) -> dict:
  """The environment of a subprocess that runs this checkout on the CPU,
  with the suite's XLA_FLAGS.

  Args:
    devices: forced host CPU devices (the flag must be set before jax is
      imported, hence a subprocess); 0 leaves jax's default of one.
    path: folders put on PYTHONPATH after the repository root.
  """
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  flags = [ONE_THREAD]
  if devices:
    flags.insert(0, f"--xla_force_host_platform_device_count={devices}")
  env["XLA_FLAGS"] = " ".join(flags)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (ROOT, *path, os.environ.get("PYTHONPATH")) if p)
  return env


def script_command(script: str, *args) -> list:
  """The command line of `scripts/<script>` with `args`."""
  return [sys.executable, os.path.join(ROOT, "scripts", script),
          *map(str, args)]


def run_script(script: str, *args, cwd=ROOT, env=None, timeout: int = 600):
  """Runs `scripts/<script>` to its end; its output is captured as text."""
  return subprocess.run(script_command(script, *args), cwd=cwd,
                        env=script_env() if env is None else env,
                        capture_output=True, text=True, timeout=timeout)


def start_script(script: str, *args, cwd=ROOT, env=None, **popen_args):
  """Starts `scripts/<script>` without waiting: a `subprocess.Popen`."""
  return subprocess.Popen(script_command(script, *args), cwd=cwd,
                          env=script_env() if env is None else env,
                          **popen_args)


def run_python(code: str, *args, env=None, timeout: int = 600):
  """Runs `python -c code args` from the repository root."""
  return subprocess.run([sys.executable, "-c", code, *map(str, args)],
                        cwd=ROOT, env=script_env() if env is None else env,
                        capture_output=True, text=True, timeout=timeout)


def finish(proc: subprocess.Popen, timeout: int = 600) -> int:
  """Waits for a started script; kills it if it outlives `timeout`."""
  try:
    return proc.wait(timeout=timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()
    raise


def load_script(name: str):
  """`scripts/<name>.py` as a module, for the functions in it."""
  import importlib.util
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, "scripts", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tiny_config(name: str, validate: bool = True, **overrides):
  """The config file `name` (e.g. "minatar.py") with `overrides`."""
  from muesli_jax.config import load_config_file, validate as check
  config = load_config_file(name)
  with config.unlocked():
    for key, value in overrides.items():
      config[key] = value
  if validate:
    check(config)
  return config


def random_batch(batch_size: int, window: int, obs_dim: int,
                 num_actions: int = 0, action_dim: int = 0, seed: int = 0):
  """A `Batch` of `[batch_size, window]` random steps with a reset step after
  a truncation (sequence 0, step 3) and a termination (sequence 1, step 4;
  its reset step 5) in it.

  Discrete (`num_actions`): integer actions and logits. Continuous
  (`action_dim`): actions in R^D and behaviour Gaussians `[mean, std]`.
  """
  from muesli_jax import types
  rng = np.random.default_rng(seed)
  b, w = batch_size, window
  mask = np.ones((b, w), np.float32)
  discount = np.ones((b, w), np.float32)
  mask[0, 3] = 0.0; discount[0, 3] = 0.0  # reset step after a truncation
  discount[1, 4] = 0.0; mask[1, 5] = 0.0; discount[1, 5] = 0.0  # termination
  if action_dim:
    behaviour = np.concatenate([rng.uniform(-1, 1, (b, w, action_dim)),
                                rng.uniform(0.2, 1.0, (b, w, action_dim))], -1)
    observation = rng.normal(size=(b, w, obs_dim))
    action = rng.normal(size=(b, w, action_dim)).astype(np.float32)
  else:
    observation = rng.normal(size=(b, w, obs_dim))
    action = rng.integers(0, num_actions, (b, w)).astype(np.int32)
  reward = rng.normal(size=(b, w)).astype(np.float32)
  if not action_dim:
    behaviour = rng.normal(size=(b, w, num_actions))
  return types.Batch(
      observation=observation.astype(np.float32), action=action,
      reward=reward, discount=discount, mask=mask,
      behaviour_logits=behaviour.astype(np.float32),
      mc_return=rng.normal(size=(b, w)).astype(np.float32),
      mc_valid=np.ones((b, w), np.float32))


# The learning runs train in subprocesses. In a plain pytest session they
# train beside the tests, one after the other, so that
# the rest of the suite keeps the other core: they start as soon as the
# tests are collected, and the tests that read them run last. Under
# pytest-xdist (`--dist loadfile` keeps the readers of a run on one worker)
# the first reader starts its run. Each writes its run folder into `sys.argv[1]`.
LEARNING_RUNS = {
    # configs/cartpole.py as shipped (its 50k env-step budget and schedule),
    # the synchronous loop, stopped at the first log once it has learnt:
    # the mean of the last 100 episodes at least 200 and an evaluation at
    # least 450 (test_learning.py asserts both from the summary).
    "cartpole_run": """
import sys
from configs import cartpole
from muesli_jax import training
config = cartpole.get_config()
config.logdir = sys.argv[1]
best = []
evaluate = training.evaluate
def recorded_evaluate(run):
  figures = evaluate(run)
  best.append(figures["return_mean"])
  return figures
training.evaluate = recorded_evaluate
training.train(config, run_name="run", progress=False,
               on_log=lambda _, mean: mean >= 200 and max(best, default=0) >= 450)
""",
    # The async loop on the shipped config, stopped at 20k of its 50k env
    # steps: the learning-rate schedule stays the 50k run's.
    "async_cartpole_run": """
import sys
from configs import cartpole
from muesli_jax import training
config = cartpole.get_config()
config.update(async_acting=True, logdir=sys.argv[1])
training.train(config, run_name="run", progress=False,
               on_log=lambda env_steps, _: env_steps >= 20_000)
""",
    # configs/anakin_cartpole.py as shipped (its learning-rate schedule too),
    # stopped once the mean of the last 100 episodes reaches 400, or at 400k
    # env steps.
    "anakin_cartpole_run": """
import sys
from configs import anakin_cartpole
from muesli_jax import anakin
config = anakin_cartpole.get_config()
config.update(solve_return=400.0, logdir=sys.argv[1])
anakin.train_anakin(config, run_name="run", progress=False,
                    on_call=lambda env_steps, _: env_steps >= 400_000)
""",
}


class _LearningRuns:
  """Runs `LEARNING_RUNS` one after the other on a thread."""

  def __init__(self, names):
    self.names = list(names)
    self.folder = tempfile.mkdtemp(prefix="muesli_learning_runs_")
    self.done = {name: threading.Event() for name in self.names}
    self.codes = {}
    self._proc = None
    self._stopped = False
    self._thread = threading.Thread(target=self._run_all, daemon=True)
    self._thread.start()

  def log(self, name):
    return os.path.join(self.folder, f"{name}.log")

  def _run_all(self):
    for name in self.names:
      if not self._stopped:
        with open(self.log(name), "w") as log:
          self._proc = subprocess.Popen(
              [sys.executable, "-c", LEARNING_RUNS[name],
               os.path.join(self.folder, name)], cwd=ROOT,
              env=script_env(), stdout=log,
              stderr=subprocess.STDOUT, start_new_session=True)
        self.codes[name] = self._proc.wait()
      self.done[name].set()

  def stop(self):
    self._stopped = True
    proc = self._proc
    if proc is not None and proc.poll() is None:  # the suite stopped early
      os.killpg(proc.pid, signal.SIGKILL)
    self._thread.join()
    shutil.rmtree(self.folder, ignore_errors=True)


_LEARNING = pytest.StashKey[list]()
# The test files that take longest on a 2-core machine, the longest first
# (test_learning and test_anakin train the learning runs).
SLOWEST_FILES = ("test_learning.py", "test_continuous.py", "test_multihost.py",
                 "test_resume.py", "test_anakin.py", "test_learner.py",
                 "test_pixels.py", "test_multidevice.py", "test_benchmark.py",
                 "test_checkpoint_recovery.py", "test_interrupts.py",
                 "test_minatar_suite.py")


@pytest.hookimpl(trylast=True)  # after `-k` and `-m` have deselected
def pytest_collection_modifyitems(session, config, items):
  def first_run_read(item):
    names = getattr(item, "fixturenames", ())
    return min((i for i, name in enumerate(LEARNING_RUNS) if name in names),
               default=None)
  order = {id(item): first_run_read(item) for item in items}
  if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under pytest-xdist (`make test`) a worker trains a run when its first
    # reader asks for it: each worker collects every test but runs only
    # some, and the two workers already keep both cores busy. The slowest
    # files go first (`--no-loadscope-reorder` keeps this order), so that
    # the two workers end together.
    rank = {name: i for i, name in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
    return
  readers = [item for item in items if order[id(item)] is not None]
  if readers and not config.option.collectonly:
    items[:] = ([item for item in items if order[id(item)] is None] +
                sorted(readers, key=lambda item: order[id(item)]))
    names = {name for item in readers for name in item.fixturenames}
    config.stash[_LEARNING] = [_LearningRuns(
        name for name in LEARNING_RUNS if name in names)]


def pytest_sessionfinish(session):
  for runs in session.config.stash.get(_LEARNING, []):
    runs.stop()
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def _learning_run(request, name):
  """`(summary, run_dir)` of the learning run `name`, once it has ended."""
  started = request.config.stash.setdefault(_LEARNING, [])
  runs = next((runs for runs in started if name in runs.done), None)
  if runs is None:  # not seen at collection
    runs = _LearningRuns([name])
    started.append(runs)
  assert runs.done[name].wait(timeout=1800), f"{name} did not end"
  with open(runs.log(name)) as f:
    assert runs.codes.get(name) == 0, f.read()[-3000:]
  run_dir = os.path.join(runs.folder, name, "run")
  with open(os.path.join(run_dir, "summary.json")) as f:
    return json.load(f), run_dir


@pytest.fixture(scope="session")
def cartpole_run(request):
  return _learning_run(request, "cartpole_run")


@pytest.fixture(scope="session")
def async_cartpole_run(request):
  return _learning_run(request, "async_cartpole_run")


@pytest.fixture(scope="session")
def anakin_cartpole_run(request):
  return _learning_run(request, "anakin_cartpole_run")
