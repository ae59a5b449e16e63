"""Measures the speed of the env, the actor and the learner; optionally a solve.

`python scripts/benchmark.py --config lunar.py --out bench.json [--config.KEY=VALUE ...]
    [--reps 5] [--seconds 3] [--no-loops] [--solve THRESHOLD] [--solve-seeds N]
    [--solve-budget STEPS] [--baseline KEY=VALUE[,KEY=VALUE...]]
    [--layouts 2c,1c,2c2d1t]`

Figures (each measured `--reps` times for `--seconds`; median, min, max):
  raw env steps/s     the config's vector env with random actions
  actor env steps/s   the real `Actor` filling a `SequenceReplay`
  actor / raw         per repetition (raw and actor runs alternate)
  learner updates/s   the jitted update on batches from `replay.sample`
                      (sampling included), and on one fixed batch
  update compilations traces of the update in the learner figures (must be 1)
  policy step ms      one actor policy step (dispatch to actions on the host)
                      on an idle device, and dispatched while an update runs:
                      whether acting could overlap learning on this device
  learner GFLOP/s     XLA's flop count of one update x fixed-batch updates/s,
                      against a large float32 matmul on the same devices (the
                      machine's practical peak): how near its limit it runs
  checkpoint s, MiB   one periodic checkpoint as training writes it, with a
                      full replay (filled by repeating the actor's steps, so
                      frames compress like real ones), and its restore
  sync / async loop   end-to-end `training.train` with `async_acting` off and
                      on (alternating, min(reps, 3) each, `--seconds` from
                      the first log): env steps/s, and the learner
                      utilisation, loop updates/s over fixed-batch updates/s
                      (`--no-loops` skips them)
  minutes per 1M env steps  the sync loop's env steps/s, as the time one
                      million env steps of training take
With `--baseline KEY=VALUE,...`, the speed and loop figures are measured
first for the config with those overrides (e.g. a former default), then for
the config itself, and printed side by side with their ratio: a change's
before and after from one run on one machine.
With `--layouts L1,L2,...`, the speed and loop figures are measured for
each way of running one process on the host's CPU cores, each in a process
of its own (XLA fixes its threads and devices when it starts), layouts
alternating rep by rep, and printed side by side with their ratio to the
first. A layout `<C>c[<D>d][1t]` is C cores (the process's CPU affinity:
XLA sizes its thread pool to it), D CPU devices (default 1; the update
`pmap`ped over them, the batch split between them) and, with `1t`, XLA's
one-thread flags (`--xla_cpu_multi_thread_eigen=false
intra_op_parallelism_threads=1`). jax 0.10's CPU client ignores those
flags (a `1t` layout's matmul figure matches its plain twin's): only the
cores limit XLA's threads. E.g. `2c` (two cores, XLA's default), `1c` (one
core), `2c2d` (two devices sharing the two cores' threads).
With `--solve THRESHOLD`, `--solve-seeds` end-to-end `training.train` runs
(seeds config.seed, config.seed+1, ...) of at most `--solve-budget` env
steps, each recording when the mean return of the last 100 episodes first
reaches THRESHOLD and stopping there; the median counts unsolved runs as
the slowest. Their logdirs are temporary folders, removed afterwards,
unless `--config.logdir` is given.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jaxlib  # noqa: E402
import numpy as np  # noqa: E402

from muesli_jax import builder, checkpoint, envs as envs_lib, learner  # noqa: E402
from muesli_jax import placement, training  # noqa: E402
from muesli_jax.errors import NonFiniteLossError  # noqa: E402
from muesli_jax.actor import Actor, make_policy_step  # noqa: E402
from muesli_jax.config import ConfigError, parse_args  # noqa: E402
from muesli_jax.hparams import LearnerHparams  # noqa: E402
from muesli_jax.replay import SequenceReplay  # noqa: E402
from muesli_jax.types import window_length  # noqa: E402


def parse_options(argv):
  """Benchmark options; everything else is left for `parse_args`."""
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
      allow_abbrev=False)  # `--s` must not swallow a config argument
  parser.add_argument("--out", default="bench.json", help="JSON results file")
  parser.add_argument("--reps", type=int, default=5,
                      help="repetitions of each figure (default 5)")
  parser.add_argument("--seconds", type=float, default=3.0,
                      help="wall-clock seconds per repetition (default 3)")
  parser.add_argument("--no-loops", action="store_true",
                      help="skip the end-to-end sync and async loop figures")
  parser.add_argument("--solve", type=float, default=None, metavar="THRESHOLD",
                      help="also train end to end until this mean return")
  parser.add_argument("--solve-seeds", type=int, default=1,
                      help="--solve runs, seeds config.seed, config.seed+1, "
                           "... (default 1)")
  parser.add_argument("--solve-budget", type=int, default=None,
                      help="env steps for the --solve run (default: the "
                           "config's total_env_steps, which the lr decay spans)")
  parser.add_argument("--baseline", default=None, metavar="KEY=VALUE,...",
                      help="also measure the config with these overrides "
                           "and print both side by side")
  parser.add_argument("--layouts", default=None, metavar="2c,1c,2c2d1t,...",
                      help="measure each CPU layout (cores, devices, one "
                           "thread per op) in a process of its own")
  options, config_args = parser.parse_known_args(argv)
  if options.reps < 1:
    raise ConfigError(f"--reps must be at least 1, got {options.reps}")
  if not options.seconds > 0:
    raise ConfigError(f"--seconds must be positive, got {options.seconds}")
  if options.solve_seeds < 1:
    raise ConfigError(f"--solve-seeds must be at least 1, got "
                      f"{options.solve_seeds}")
  if options.solve_budget is not None and options.solve_budget < 1:
    raise ConfigError(f"--solve-budget must be positive, got "
                      f"{options.solve_budget}")
  if options.layouts is not None:
    options.layouts = parse_layouts(options.layouts)
    if options.baseline is not None or options.solve is not None:
      raise ConfigError("--layouts compares speed figures only: it does not "
                        "combine with --baseline or --solve")
  return options, config_args


_LAYOUT = re.compile(r"^(\d+)c(?:(\d+)d)?(1t)?$")


def parse_layouts(text: str):
  """`"2c,1c,2c2d1t"` -> `[(2, 1, False), (1, 1, False), (2, 2, True)]`:
  (cores, CPU devices, one thread per op)."""
  layouts = []
  for item in text.split(","):
    match = _LAYOUT.match(item.strip())
    if not match or int(match[1]) < 1 or int(match[2] or 1) < 1:
      raise ConfigError(f"--layouts takes items such as 2c, 1c or 2c2d1t "
                        f"(cores, devices, one thread per op), got {item!r}")
    layouts.append((int(match[1]), int(match[2] or 1), bool(match[3])))
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
      else os.cpu_count()
  for c, _, _ in layouts:
    if c > cores:
      raise ConfigError(f"--layouts asks for {c} cores; this process may "
                        f"use {cores}")
  if len(set(layouts)) != len(layouts):
    raise ConfigError(f"--layouts names a layout twice: {text!r}")
  return layouts


def layout_name(layout) -> str:
  cores, devices, one_thread = layout
  return (f"{cores}c" + (f"{devices}d" if devices > 1 else "") +
          ("1t" if one_thread else ""))


def baseline_args(baseline: str):
  """`"a=1,b=x"` -> `["--config.a=1", "--config.b=x"]`."""
  pairs = [p.strip() for p in baseline.split(",")]
  if not all("=" in p and p.split("=", 1)[0] for p in pairs):
    raise ConfigError(f"--baseline takes KEY=VALUE pairs separated by commas,"
                      f" got {baseline!r}")
  return [f"--config.{p}" for p in pairs]


# Measurements. Each `measure_*` runs one repetition and returns a rate.


def timed_loop(step, seconds: float, finish=lambda: None):
  """Calls `step()` (which returns a count) until `seconds` have passed.

  Returns `count / elapsed`; `finish()` runs before the clock stops (to wait
  for asynchronous device work).
  """
  count = 0
  start = time.perf_counter()
  while time.perf_counter() - start < seconds:
    count += step()
  finish()
  return count / (time.perf_counter() - start)


def measure_raw_env(envs, seconds: float) -> float:
  """Env steps/s of the vector env alone, with random actions."""
  def step():
    envs.step(envs.action_space.sample())
    return envs.num_envs
  return timed_loop(step, seconds)


def measure_actor(actor: Actor, params, seconds: float) -> float:
  """Env steps/s of the actor: policy, env step and replay writes."""
  def step():
    before = actor.env_steps
    actor.step(params, 1)
    actor.pop_episodes()  # As training does; keeps the list short.
    return actor.env_steps - before
  return timed_loop(step, seconds)


class LearnerBench:
  """The jitted update as training runs it, with a trace counter."""

  def __init__(self, config, networks, replay: SequenceReplay, state):
    # The update exactly as training runs it: jit on one device, pmap over
    # every local device, with its trace counter.
    self._update = placement.DeviceUpdate(
        networks, LearnerHparams.from_config(config), config.batch_size)
    self._config = config
    self._networks = networks
    self._replay = replay
    self.state = self._update.place(state)

  @property
  def traces(self) -> int:
    return self._update.traces

  @property
  def num_devices(self) -> int:
    return len(self._update.devices)

  def flops_per_update(self, batch) -> float:
    """XLA's flop count of one update (a separate, uncounted compilation)."""
    update = jax.jit(learner.make_update(
        self._networks, LearnerHparams.from_config(self._config)))
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                          self._update.first(self.state))
    cost = update.lower(shapes, batch).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # Older jax: one dict per module.
      cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", 0.0))

  def host_state(self):
    """One replica of the state, as a checkpoint saves it."""
    return self._update.first(self.state)

  def sample(self):
    c = self._config
    return self._replay.sample(c.batch_size, c.steps_per_update,
                               c.replay_proportion)

  def dispatch(self, batch):
    """Starts one update without waiting for it; returns its metrics."""
    self.state, metrics = self._update(self.state, batch)
    return metrics

  def update(self, batch) -> int:
    metrics = self.dispatch(batch)
    # training.py reads the loss back after every update (its NaN check),
    # which waits for the update; do the same so the rate matches training.
    float(self._update.first(metrics["loss"]))
    return 1

  def finish(self):
    jax.block_until_ready(self.state)

  def measure(self, seconds: float, fixed_batch=None) -> float:
    """Updates/s; batches come from `replay.sample` unless one is fixed."""
    if fixed_batch is None:
      step = lambda: self.update(self.sample())
    else:
      step = lambda: self.update(fixed_batch)
    return timed_loop(step, seconds, self.finish)


def _directory_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def measure_checkpoint(config, replay: SequenceReplay, state, reps: int):
  """Seconds to save and restore one checkpoint with a full replay, and its
  size on disk."""
  filled = replay.size
  _, arrays = replay.state_dict()
  for array in arrays.values():
    if array.ndim >= 2:  # [capacity, num_envs, ...]: repeat the filled rows
      array[filled:] = np.resize(array[:filled],
                                 (array.shape[0] - filled,) + array.shape[1:])
  replay.total_steps = replay.capacity
  counters, arrays = replay.state_dict()
  save_seconds, restore_seconds = [], []
  with tempfile.TemporaryDirectory() as directory:
    checkpoints = checkpoint.Checkpoints(directory, keep=1)
    for rep in range(reps):
      start = time.perf_counter()
      path = checkpoints.save(rep + 1, state, dict(replay=counters), {},
                              arrays if config.checkpoint_replay else None)
      save_seconds.append(time.perf_counter() - start)
      start = time.perf_counter()
      checkpoints.restore(state)
      restore_seconds.append(time.perf_counter() - start)
    size = _directory_bytes(path)
    checkpoints.close()
  raw = replay.nbytes()
  return {
      "checkpoint save s": summarize(
          save_seconds, "s", "full replay" if config.checkpoint_replay
          else "no replay (checkpoint_replay=false)"),
      "checkpoint restore s": summarize(restore_seconds, "s", ""),
      "checkpoint MiB on disk": summarize(
          [size / 2**20], "MiB", f"replay {raw / 2**20:.0f} MiB in memory"),
  }


def measure_matmul(seconds: float, size: int = 2048) -> float:
  """GFLOP/s of one large float32 matmul: the devices' practical peak."""
  x = jax.random.normal(jax.random.PRNGKey(0), (size, size))
  matmul = jax.jit(lambda a: a @ a)
  matmul(x).block_until_ready()

  def step():
    matmul(x).block_until_ready()
    return 1
  return timed_loop(step, seconds) * 2 * size**3 / 1e9


def measure_policy_latency(policy_step, params, observation, bench,
                           fixed_batch, reps: int):
  """Milliseconds from dispatch to host actions of one policy step: with the
  device idle, and dispatched just after an update (which runs ~30 ms)."""
  rng = jax.random.PRNGKey(0)

  def one_step(i):
    start = time.perf_counter()
    actions, _ = policy_step(params, observation, rng, np.int32(i))
    np.asarray(actions)
    return (time.perf_counter() - start) * 1e3

  one_step(0)  # compile
  idle, busy = [], []
  for rep in range(reps):
    bench.finish()
    idle.append(one_step(rep))
    bench.dispatch(fixed_batch)  # not waited on
    busy.append(one_step(rep))
  bench.finish()
  return idle, busy


def summarize(values, unit: str, note: str = ""):
  """Median, min and max of `values` (None for all three when empty)."""
  if not values:
    return dict(median=None, min=None, max=None, unit=unit, reps=0,
                values=[], note=note + " (not reached)")
  return dict(median=statistics.median(values), min=min(values),
              max=max(values), unit=unit, reps=len(values),
              values=list(values), note=note)


def run_speed_figures(config, reps: int, seconds: float):
  """Figures 1-5. Raw and actor repetitions alternate, so do the two learner
  variants: a slowdown from other load hits both halves of each ratio."""
  placement.keep_host_memory(config.keep_host_memory)  # as training does
  seed = config.seed
  raw_envs = envs_lib.make_vector_env(config)
  actor_envs = envs_lib.make_vector_env(config)
  spec = envs_lib.env_spec(actor_envs, config.env_id)
  networks = builder.build_networks(config, spec)
  state = learner.init_state(networks, LearnerHparams.from_config(config),
                             jax.random.PRNGKey(seed))
  window = window_length(config.sequence_length, config.unroll_steps)
  replay = builder.make_replay(config, spec)
  actor = Actor(actor_envs, networks, replay, config.stack, seed)
  # Acting params before any update; a copy, as the update donates `state`.
  params = jax.tree.map(jnp.copy, state.target_params)

  # Warm-up: compiles the policy step; fills the replay as far as training
  # fills it before its first update.
  raw_envs.reset(seed=seed)
  raw_envs.step(raw_envs.action_space.sample())
  start = time.perf_counter()
  actor.step(params, config.warmup_steps + window)
  prefill_seconds = time.perf_counter() - start

  raw, acting, ratio = [], [], []
  for rep in range(reps):
    raw.append(measure_raw_env(raw_envs, seconds))
    acting.append(measure_actor(actor, params, seconds))
    ratio.append(acting[-1] / raw[-1])
    print(f"  env rep {rep + 1}/{reps}: raw {raw[-1]:.0f}, actor "
          f"{acting[-1]:.0f} env steps/s", flush=True)
  raw_envs.close()

  # The learner: warm-up (compilation) once, then sampled and fixed batches.
  bench = LearnerBench(config, networks, replay, state)
  fixed_batch = bench.sample()
  start = time.perf_counter()
  bench.update(fixed_batch)
  bench.finish()
  compile_seconds = time.perf_counter() - start
  print(f"  learner warm-up (compilation): {compile_seconds:.1f} s", flush=True)
  sampled, fixed, matmul = [], [], []
  for rep in range(reps):
    sampled.append(bench.measure(seconds))
    fixed.append(bench.measure(seconds, fixed_batch))
    matmul.append(measure_matmul(seconds))
    print(f"  learner rep {rep + 1}/{reps}: {sampled[-1]:.3g} updates/s "
          f"sampled, {fixed[-1]:.3g} fixed batch; matmul "
          f"{matmul[-1]:.0f} GFLOP/s", flush=True)
  policy_idle, policy_busy = measure_policy_latency(
      make_policy_step(networks), params, actor.observation(), bench,
      fixed_batch, max(reps, 5))
  actor_envs.close()
  gflop = bench.flops_per_update(fixed_batch) / 1e9

  per_update = config.batch_size * config.sequence_length
  figures = {
      "raw env steps/s": summarize(raw, "env steps/s", "random actions"),
      "actor env steps/s": summarize(acting, "env steps/s",
                                     "policy + env + replay"),
      "actor / raw": summarize(ratio, "ratio", "per rep; target >= 0.5"),
      "learner updates/s (sampled)": summarize(
          sampled, "updates/s", "replay.sample + update"),
      "learner samples/s (sampled)": summarize(
          [r * per_update for r in sampled], "samples/s",
          f"x {config.batch_size}x{config.sequence_length} positions"),
      "learner updates/s (fixed batch)": summarize(
          fixed, "updates/s", "update only"),
      "learner samples/s (fixed batch)": summarize(
          [r * per_update for r in fixed], "samples/s",
          f"x {config.batch_size}x{config.sequence_length} positions"),
  }
  if gflop > 0:
    figures["learner GFLOP/s (fixed batch)"] = summarize(
        [r * gflop for r in fixed], "GFLOP/s",
        f"{gflop:.2f} GFLOP per update (XLA cost analysis)")
    figures["matmul GFLOP/s (peak reference)"] = summarize(
        matmul, "GFLOP/s", "2048x2048 float32 matmul")
    figures["learner / matmul peak"] = summarize(
        [r * gflop / m for r, m in zip(fixed, matmul)], "ratio", "per rep")
  figures["policy step ms (idle device)"] = summarize(
      policy_idle, "ms", "dispatch to actions on the host")
  figures["policy step ms (update in flight)"] = summarize(
      policy_busy, "ms", "dispatched right after an update")
  figures.update(measure_checkpoint(config, replay,
                                    bench.host_state(),
                                    min(reps, 3)))
  compilations = bench.traces
  figures["update compilations"] = summarize(
      [compilations], "count",
      f"on {bench.num_devices} device(s); must be 1" +
      ("" if compilations == 1 else "  <-- RETRACED"))
  extras = dict(prefill_vector_steps=config.warmup_steps + window,
                prefill_seconds=prefill_seconds,
                update_warmup_seconds=compile_seconds,
                gflop_per_update=gflop,
                replay_megabytes=replay.nbytes() / 2**20)
  return figures, compilations, extras


def measure_loop(config, async_acting: bool, seconds: float) -> dict:
  """End-to-end `training.train` in the synchronous or the async-acting
  loop: env steps/s and updates/s from its first log after the warm-up
  (compilation excluded) until `seconds` later."""
  config = config.copy_and_resolve_references()
  config.update(async_acting=async_acting, eval_interval=0,
                checkpoint_interval=0, stop_when_solved=False)
  marks = []

  def on_log(env_steps, _):
    marks.append((time.perf_counter(), env_steps))
    return marks[-1][0] - marks[0][0] >= seconds

  with tempfile.TemporaryDirectory(prefix="muesli_bench_") as tmp:
    config.logdir = tmp
    summary = training.train(config, progress=False, on_log=on_log)
  if len(marks) < 2:
    return None
  (t0, steps0), (t1, steps1) = marks[0], marks[-1]
  per_update = config.num_envs * config.steps_per_update
  return dict(env_steps_per_second=(steps1 - steps0) / (t1 - t0),
              updates_per_second=(steps1 - steps0) / per_update / (t1 - t0),
              compilations=summary["update_compilations"])


def run_loop_figures(config, reps: int, seconds: float, learner_rate: float):
  """The synchronous and the async-acting loop end to end, alternating, and
  the learner's share of the time in each: loop updates/s over the fixed-
  batch updates/s measured above (1 = the device never waits)."""
  rates = {False: [], True: []}
  compilations = []
  for rep in range(reps):
    for async_acting in (False, True):
      result = measure_loop(config, async_acting, seconds)
      if result is None:
        raise ConfigError("the loop figures need at least two logs: raise "
                          "total_env_steps or lower log_interval")
      rates[async_acting].append(result)
      compilations.append(result["compilations"])
      print(f"  loop rep {rep + 1}/{reps}, "
            f"{'async' if async_acting else 'sync '}: "
            f"{result['env_steps_per_second']:.0f} env steps/s, "
            f"{result['updates_per_second']:.3g} updates/s", flush=True)
  figures = {}
  for async_acting, name in ((False, "sync loop"), (True, "async loop")):
    runs = rates[async_acting]
    figures[f"{name} env steps/s"] = summarize(
        [r["env_steps_per_second"] for r in runs], "env steps/s",
        "end to end, compilation excluded")
    figures[f"{name} learner utilisation"] = summarize(
        [r["updates_per_second"] / learner_rate for r in runs], "ratio",
        "loop updates/s / fixed-batch updates/s")
  figures["minutes per 1M env steps (sync loop)"] = summarize(
      [1e6 / r["env_steps_per_second"] / 60 for r in rates[False]], "min",
      "end to end, compilation excluded")
  figures["async / sync loop"] = summarize(
      [a["env_steps_per_second"] / s["env_steps_per_second"]
       for s, a in zip(rates[False], rates[True])], "ratio",
      "per rep, env steps/s")
  return figures, compilations


def solve_median(values):
  """Median with unsolved runs (None) counted as slower than any solved one;
  None when the median run did not solve."""
  ranked = sorted(values, key=lambda v: (v is None, v or 0))
  n = len(ranked)
  middle = ranked[(n - 1) // 2:n // 2 + 1]
  if any(v is None for v in middle):
    return None
  return sum(middle) / len(middle)


def run_solve(config, threshold: float, budget: int, seeds: int, config_args):
  """Figure 6: end-to-end training runs of seeds `config.seed + i`."""
  config = config.copy_and_resolve_references()
  # The learning-rate decay spans total_env_steps, so the budget is the
  # config's own unless asked otherwise; a run stops once solved.
  if budget is not None:
    config.total_env_steps = budget
  config.solve_return = threshold
  config.stop_when_solved = True
  own_logdir = any(a.startswith("--config.logdir") for a in config_args)
  summaries = []
  for i in range(seeds):
    run_config = config.copy_and_resolve_references()
    run_config.seed = config.seed + i
    print(f"solve run {i + 1}/{seeds}: seed {run_config.seed}", flush=True)
    with tempfile.TemporaryDirectory(prefix="muesli_bench_") as tmp:
      if not own_logdir:
        run_config.logdir = tmp
      summary = training.train(run_config, progress=True)  # long: show it
    if not own_logdir:
      summary.pop("checkpoint")  # It was in the removed temporary folder.
    summaries.append(summary)
    print(f"  seed {run_config.seed}: " + (
        f"solved at {summary['solved_at_steps']} env steps, "
        f"{summary['solved_at_seconds']:.0f} s" if summary["solved_at_steps"]
        else f"not solved in {summary['env_steps']} env steps"), flush=True)

  def over_runs(key, unit, note, unsolved_as_slowest=False):
    values = [s[key] for s in summaries]
    solved = [v for v in values if v is not None]
    f = summarize(solved, unit, note)
    if unsolved_as_slowest:
      f["median"] = solve_median(values)
      f["max"] = f["max"] if len(solved) == len(values) else None
      f["values"] = values
    return f

  n_solved = sum(s["solved_at_steps"] is not None for s in summaries)
  runs = f"{seeds} run{'s' if seeds > 1 else ''}"
  updates = [s["updates"] for s in summaries]
  figures = {
      "solved runs": summarize(
          [n_solved], "runs", f"of {runs}; mean of last 100 >= {threshold:g}"),
      "solved at env steps": over_runs(
          "solved_at_steps", "env steps",
          f"{runs}; unsolved count as slowest",
          unsolved_as_slowest=True),
      "solved at seconds": over_runs(
          "solved_at_seconds", "s", f"{runs}; compilation included",
          unsolved_as_slowest=True),
      "final mean return (last 100)": over_runs(
          "mean_return_last_100", "return", f"{runs}, at the stop"),
      "total training seconds": over_runs(
          "seconds", "s", f"{runs}, compilation included"),
      "solve run updates/s": summarize(
          [s["updates"] / s["seconds"] for s in summaries if s["seconds"]],
          "updates/s", f"{runs}, acting and logging included"),
      "solve run update compilations": summarize(
          [s["update_compilations"] for s in summaries], "count",
          f"{runs}, {min(updates)}-{max(updates)} updates; must be 1"),
  }
  return figures, summaries


# Reporting.


def machine_info():
  processor = platform.processor()
  if not processor or processor in ("x86_64", "aarch64"):
    try:
      with open("/proc/cpuinfo") as f:
        names = [l.split(":", 1)[1].strip() for l in f
                 if l.startswith("model name")]
      processor = names[0] if names else processor
    except OSError:
      pass
  return dict(processor=processor, machine=platform.machine(),
              cpu_count=os.cpu_count(), platform=platform.platform(),
              python=platform.python_version(), jax=jax.__version__,
              jaxlib=jaxlib.__version__,
              devices=[str(d) for d in jax.devices()])


def format_number(x):
  if x is None:
    return "n/a"
  if abs(x) >= 100 or float(x).is_integer():
    return f"{x:,.0f}"
  return f"{x:.3g}" if abs(x) < 10 else f"{x:.1f}"


def print_table(figures):
  rows = [("figure", "median", "min", "max", "unit", "note")]
  for name, f in figures.items():
    rows.append((name, format_number(f["median"]), format_number(f["min"]),
                 format_number(f["max"]), f["unit"], f["note"]))
  widths = [max(len(r[i]) for r in rows) for i in range(5)]
  for i, row in enumerate(rows):
    cells = [row[0].ljust(widths[0])]
    cells += [row[j].rjust(widths[j]) for j in (1, 2, 3)]
    cells += [row[4].ljust(widths[4]), row[5]]
    print("  ".join(cells).rstrip())
    if i == 0:
      print("  ".join("-" * w for w in widths) + "  " + "-" * 4)


def measure_config(config, options, problems):
  """The speed figures and, unless `--no-loops`, the loop figures of one
  config; retraced updates are added to `problems`."""
  figures, compilations, extras = run_speed_figures(
      config, options.reps, options.seconds)
  if compilations != 1:
    problems.append(f"the update was traced {compilations} times, not once")
  if not options.no_loops:
    print("loops: the synchronous and the async-acting training loop, "
          "alternating", flush=True)
    loop_figures, loop_compilations = run_loop_figures(
        config, min(options.reps, 3), options.seconds,
        figures["learner updates/s (fixed batch)"]["median"])
    figures.update(loop_figures)
    if any(c != 1 for c in loop_compilations):
      problems.append(f"the update was traced {loop_compilations} times in "
                      "the loop runs, not once each")
  return figures, extras


# Layouts: one process per way of running on the host's cores.

_LAYOUT_FLAGS = ("--xla_force_host_platform_device_count",
                 "--xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads")


def layout_env(layout) -> dict:
  """The environment of a layout's process: the CPU backend, its devices
  and threads; other XLA flags of this process are passed on."""
  _, devices, one_thread = layout
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith(_LAYOUT_FLAGS)]
  if devices > 1:
    flags.append(f"--xla_force_host_platform_device_count={devices}")
  if one_thread:
    flags += ["--xla_cpu_multi_thread_eigen=false",
              "intra_op_parallelism_threads=1"]
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags))


def run_layouts(options, config_args, results) -> dict:
  """Every layout's speed (and loop) figures, `--reps` processes each, the
  layouts alternating so that a slowdown of the machine hits them all."""
  cores = sorted(os.sched_getaffinity(0)) if hasattr(
      os, "sched_getaffinity") else None
  runs = {layout: [] for layout in options.layouts}
  with tempfile.TemporaryDirectory(prefix="muesli_bench_") as tmp:
    for rep in range(options.reps):
      for i, layout in enumerate(options.layouts):
        name = layout_name(layout)
        out = os.path.join(tmp, f"{i}_{rep}.json")
        command = [sys.executable, os.path.abspath(__file__), *config_args,
                   "--reps", "1", "--seconds", str(options.seconds),
                   "--out", out] + (["--no-loops"] if options.no_loops else [])
        affinity = set(cores[:layout[0]]) if cores else None
        print(f"layout {name}, rep {rep + 1}/{options.reps}", flush=True)
        proc = subprocess.run(
            command, env=layout_env(layout),
            preexec_fn=(lambda a=affinity: os.sched_setaffinity(0, a))
            if affinity else None)
        if proc.returncode != 0:
          raise LayoutError(f"layout {name} (rep {rep + 1}) exited with "
                            f"status {proc.returncode}; its output is above")
        with open(out) as f:
          runs[layout].append(json.load(f))
  layouts = {}
  for layout, reps in runs.items():
    figures = {}
    for figure, first in reps[0]["figures"].items():
      values = [v for r in reps for v in r["figures"][figure]["values"]]
      figures[figure] = summarize(values, first["unit"], first["note"])
    layouts[layout_name(layout)] = dict(
        cores=layout[0], devices=layout[1], one_thread_per_op=layout[2],
        xla_flags=layout_env(layout)["XLA_FLAGS"],
        devices_seen=reps[0]["machine"]["devices"], figures=figures)
  results["layouts"] = layouts
  return layouts


class LayoutError(Exception):
  """A layout's process failed."""


def print_side_by_side(columns: dict):
  """Medians of several measurements (name -> figures) side by side, each
  after the first with its ratio to the first; a figure missing from one
  of them reads n/a there."""
  names = list(columns)
  header = ["figure", names[0]]
  for name in names[1:]:
    header += [name, f"{name} / {names[0]}"]
  rows = [header + ["unit"]]
  figure_names = list(dict.fromkeys(f for c in columns.values() for f in c))
  for figure in figure_names:
    first = columns[names[0]].get(figure)
    base = first and first["median"]
    row = [figure, format_number(base)]
    for name in names[1:]:
      other = columns[name].get(figure)
      median = other and other["median"]
      row += [format_number(median),
              f"{median / base:.2f}" if median and base else "n/a"]
    unit = (first or next(c[figure] for c in columns.values()
                          if figure in c))["unit"]
    rows.append(row + [unit])
  widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
  for i, row in enumerate(rows):
    cells = [row[0].ljust(widths[0])]
    cells += [c.rjust(w) for c, w in zip(row[1:-1], widths[1:])] + [row[-1]]
    print("  ".join(cells).rstrip())
    if i == 0:
      print("  ".join("-" * w for w in widths))


def main(argv) -> int:
  try:
    options, config_args = parse_options(argv)
    config = parse_args(config_args)
    envs_lib.check_env_id(config.env_id)
    for _, devices, _ in options.layouts or ():
      placement.check_batch_split(config.batch_size, devices)
  except (ConfigError, envs_lib.UnknownEnvError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2

  machine = machine_info()
  print(f"machine: {machine['processor']} ({machine['cpu_count']} CPUs), "
        f"devices: {', '.join(machine['devices'])}, jax {machine['jax']}")
  print(f"config: {config.env_id}, {config.num_envs} envs, batch "
        f"{config.batch_size}x{config.sequence_length}, "
        f"{options.reps} reps x {options.seconds:g} s per figure", flush=True)

  results = dict(command=[sys.executable] + sys.argv, machine=machine,
                 options=vars(options), config=config.to_dict(),
                 started=time.strftime("%Y-%m-%d %H:%M:%S"))
  problems = []
  baseline_figures = None
  if options.layouts is not None:
    try:
      layouts = run_layouts(options, config_args, results)
    except LayoutError as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    print()
    print_side_by_side({name: layout["figures"]
                        for name, layout in layouts.items()})
    with open(options.out, "w") as f:
      json.dump(results, f, indent=2)
    print(f"\nwrote {options.out}")
    for name, layout in layouts.items():
      traced = layout["figures"]["update compilations"]["values"]
      if any(t != 1 for t in traced):
        print(f"error: layout {name}: the update was traced {traced} times, "
              "not once", file=sys.stderr)
        return 1
    return 0
  try:
    if options.baseline is not None:
      baseline_config = parse_args(config_args +
                                   baseline_args(options.baseline))
      print(f"baseline: the config with {options.baseline}", flush=True)
      baseline_figures, results["baseline_warmup"] = measure_config(
          baseline_config, options, problems)
      results["baseline_config"] = baseline_config.to_dict()
      results["baseline_figures"] = baseline_figures
      print("config: as given", flush=True)
    figures, results["warmup"] = measure_config(config, options, problems)
  except (ConfigError, envs_lib.UnknownEnvError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if options.solve is not None:
    print(f"solve: {options.solve_seeds} run(s), each up to "
          f"{options.solve_budget or config.total_env_steps} env steps until "
          f"the mean return of the last 100 episodes reaches {options.solve:g}",
          flush=True)
    try:
      solve_figures, results["solve_summaries"] = run_solve(
          config, options.solve, options.solve_budget, options.solve_seeds,
          config_args)
    except NonFiniteLossError as e:
      print(f"error: {e}", file=sys.stderr)
      return 1
    figures.update(solve_figures)
    for solve in results["solve_summaries"]:
      expected = 1 if solve["updates"] else 0  # A tiny budget may not update.
      if solve["update_compilations"] != expected:
        problems.append(f"the update was traced {solve['update_compilations']}"
                        f" times in the solve run of seed {solve['seed']}, "
                        "not once")
  results["figures"] = figures

  print()
  if baseline_figures is None:
    print_table(figures)
  else:
    print_side_by_side(dict(baseline=baseline_figures, config=figures))
  with open(options.out, "w") as f:
    json.dump(results, f, indent=2)
  print(f"\nwrote {options.out}")
  for problem in problems:
    print(f"error: {problem}", file=sys.stderr)
  return 1 if problems else 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
