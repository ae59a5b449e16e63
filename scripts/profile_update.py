"""Where the time of one update goes: the whole update, its temporaries, and
XLA's per-op trace grouped by the part of the network each op comes from.

  python scripts/profile_update.py --config minatar.py [--config.KEY=VALUE ...]
      [--updates 10] [--top 25] [--no-trace]

Run it the way training runs (e.g. `taskset -c 0` for one core: XLA sizes
its threads to the CPU affinity, and jax 0.10 ignores XLA_FLAGS' one-thread
flags). The batch comes from a replay the actor filled with the initial
policy. Prints the update's median time over `--updates` calls (in blocks
of 5), XLA's count of its temporaries, and with the trace the ops' time per
update summed by their source (e.g. `transpose(jvp(representation))/...`
is the representation's gradient) and the slowest single ops.
"""

import argparse
import collections
import glob
import gzip
import json
import os
import re
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from muesli_jax import builder, envs as envs_lib, learner, placement  # noqa: E402
from muesli_jax.actor import Actor  # noqa: E402
from muesli_jax.config import ConfigError, parse_args  # noqa: E402
from muesli_jax.hparams import LearnerHparams  # noqa: E402
from muesli_jax.types import window_length  # noqa: E402

# Trace events that are the runtime's, not an op of the update.
_RUNTIME = ("Thunk", "$", "Pjit", "PjRt", "Execute")


def setup(config):
  """The jitted update, a state and one replay batch."""
  placement.keep_host_memory(config.keep_host_memory)
  envs = envs_lib.make_vector_env(config)
  spec = envs_lib.env_spec(envs, config.env_id)
  networks = builder.build_networks(config, spec)
  hparams = LearnerHparams.from_config(config)
  state = learner.init_state(networks, hparams, jax.random.PRNGKey(0))
  replay = builder.make_replay(config, spec, verbose=False)
  actor = Actor(envs, networks, replay, config.stack, config.seed)
  actor.step(state.params, config.warmup_steps +
             window_length(config.sequence_length, config.unroll_steps))
  batch = jax.device_put(replay.sample(config.batch_size, 0,
                                       config.replay_proportion))
  envs.close()
  return jax.jit(learner.make_update(networks, hparams)), state, batch


def time_update(update, state, batch, updates: int) -> float:
  """Median ms of one update over blocks of 5 calls (the state not donated,
  so every call sees the same inputs)."""
  jax.block_until_ready(update(state, batch))
  times = []
  for _ in range(max(1, updates // 5)):
    start = time.perf_counter()
    for _ in range(5):
      out = update(state, batch)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / 5 * 1e3)
  return statistics.median(times)


def op_sources(update, state, batch):
  """Op name -> (shape, source) from the compiled HLO's metadata."""
  sources = {}
  for line in update.lower(state, batch).compile().as_text().splitlines():
    m = re.match(r'\s*(?:ROOT )?%(\S+) = (\S+) .*?op_name="([^"]+)"', line)
    if m:
      sources[m.group(1)] = (m.group(2), m.group(3))
  return sources


def trace_ops(update, state, batch, updates: int):
  """ms per update of every op in XLA's trace of `updates` calls."""
  with tempfile.TemporaryDirectory(prefix="muesli_profile_") as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(updates):
        out = update(state, batch)
      jax.block_until_ready(out)
    path = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"),
                     recursive=True)[0]
    with gzip.open(path) as f:
      events = json.load(f)["traceEvents"]
  total = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and not any(r in event["name"]
                                          for r in _RUNTIME):
      total[event["name"]] += event["dur"] / 1e3 / updates
  return total


def source_group(source: str) -> str:
  """`jit(update)/transpose(jvp(representation))/conv2_d/...` ->
  `transpose(jvp(representation))/conv2_d/...` (3 levels)."""
  return "/".join(re.sub(r"\[.*?\]", "", source).split("/")[1:4]) or "?"


def main(argv) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
      allow_abbrev=False)
  parser.add_argument("--updates", type=int, default=10)
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--no-trace", action="store_true")
  options, config_args = parser.parse_known_args(argv)
  try:
    if options.updates < 1 or options.top < 1:
      raise ConfigError("--updates and --top must be at least 1")
    config = parse_args(config_args)
    envs_lib.check_env_id(config.env_id)
  except (ConfigError, envs_lib.UnknownEnvError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  update, state, batch = setup(config)
  compiled = update.lower(state, batch).compile()
  memory = compiled.memory_analysis()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  ms = time_update(update, state, batch, options.updates)
  print(f"{config.env_id}, batch {config.batch_size}x{config.sequence_length}"
        f", K={config.unroll_steps}: {ms:.1f} ms an update, "
        f"{cost.get('flops', 0) / 1e9:.3g} GFLOP, temporaries "
        f"{memory.temp_size_in_bytes / 2**20:.1f} MiB")
  if options.no_trace:
    return 0
  ops = trace_ops(update, state, batch, options.updates)
  sources = op_sources(update, state, batch)
  groups = collections.Counter()
  for name, op_ms in ops.items():
    groups[source_group(sources.get(name, ("", ""))[1])] += op_ms
  print(f"ops in the trace: {len(ops)}, {sum(ops.values()):.1f} ms per update")
  print("\nms per update, by source:")
  for group, op_ms in groups.most_common(options.top):
    print(f"  {op_ms:7.2f}  {group}")
  print("\nslowest ops:")
  for name, op_ms in ops.most_common(options.top):
    shape, source = sources.get(name, ("?", "?"))
    print(f"  {op_ms:7.2f}  {name}  {shape}  {source_group(source)}")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
