"""The record of one run, shared by the host loop and Anakin.

The run folder (`default_run_dir`, `make_run_dir`, `write_config`), its
logs (`Logger`: TensorBoard, `episodes.csv`, the progress bar), the
finished episodes (`EpisodeRecord`: the last 100 returns, when the run
solved), the NaN check (`check_finite`) and `summary.json` (`summary`,
`write_summary`).
"""

import collections
import hashlib
import json
import os
import sys
import threading
import time
from typing import Any, Dict, Iterable, Optional, Sequence

import jax
import numpy as np
import tqdm
from tensorboardX import SummaryWriter

from muesli_jax.errors import ConfigError, NonFiniteLossError
from muesli_jax.video import frame_strip

# How long the end of a run waits for TensorBoard's writer to close.
WRITER_CLOSE_SECONDS = 60.0


def default_run_dir(config, stamp: Optional[str] = None) -> str:
  """`LOGDIR/<env>_seed<seed>_<stamp>`, the stamp being the time by default.

  '/' and ':' in the env id become '_' (TensorBoard reads NAME:PATH in
  `--logdir`, so `gymnax:CartPole-v1` must not name a folder as it is).
  """
  stamp = stamp or time.strftime('%Y%m%d-%H%M%S')
  env = config.env_id.replace('/', '_').replace(':', '_')
  name = f"{env}_seed{config.seed}_{stamp}"
  return os.path.join(config.logdir, name)


def make_run_dir(run_dir: str) -> None:
  """Creates `run_dir`; a folder that cannot be written is a `ConfigError`."""
  try:
    os.makedirs(run_dir, exist_ok=True)
    probe = os.path.join(run_dir, ".write_test")
    with open(probe, "w"):
      pass
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"cannot write the run folder {run_dir}: "
                      f"{e.strerror or e}") from None


def write_config(run_dir: str, config) -> None:
  with open(os.path.join(run_dir, "config.json"), "w") as f:
    f.write(config.to_json(indent=2))


class Logger:
  """TensorBoard, `episodes.csv` and the progress bar of one run.

  A resumed run drops what was logged after its checkpoint: CSV rows past
  it are removed and TensorBoard purges events from its step on.
  """

  def __init__(self, run_dir: str, total_env_steps: int, env_steps: int = 0,
               resumed: bool = False, progress: bool = True):
    path = os.path.join(run_dir, "episodes.csv")
    if resumed and os.path.exists(path):
      with open(path) as f:
        rows = f.readlines()
      # A kill may leave the last row half written: no newline at its end.
      kept = rows[:1] + [r for r in rows[1:] if r.endswith("\n") and
                         int(r.split(",", 1)[0]) <= env_steps]
      with open(path, "w") as f:
        f.writelines(kept)
      self._csv = open(path, "a")
    else:
      self._csv = open(path, "w")
      self._csv.write("env_steps,seconds,episode_return,length\n")
    self.writer = SummaryWriter(run_dir,
                                purge_step=env_steps if resumed else None)
    self._bar = tqdm.tqdm(total=total_env_steps, initial=env_steps,
                          unit="step", disable=not progress,
                          dynamic_ncols=True, mininterval=1.0)

  def episode(self, env_steps: int, seconds: float, ret: float, length: int):
    self.writer.add_scalar("episode/return", ret, env_steps)
    self.writer.add_scalar("episode/length", length, env_steps)
    self._csv.write(f"{env_steps},{seconds:.1f},{ret:.2f},{length}\n")

  def scalars(self, prefix: str, values: Dict[str, Any], env_steps: int):
    for key, value in values.items():
      self.writer.add_scalar(f"{prefix}/{key}", float(np.asarray(value)),
                             env_steps)

  def learner(self, metrics: Dict[str, Any], env_steps: int, sps: float,
              mean_return: Optional[float]) -> None:
    """The learner's metrics and the speed, flushed; the bar advanced."""
    self.scalars("learner", metrics, env_steps)
    self.writer.add_scalar("speed/env_steps_per_second", sps, env_steps)
    self.flush()
    self.advance(env_steps, sps=f"{sps:.0f}",
                 ret100="n/a" if mean_return is None else f"{mean_return:.1f}")

  def evaluation(self, figures: Dict[str, float], frames, episodes: int,
                 greedy: bool) -> None:
    """An evaluation's figures, a strip of its frames, and one line."""
    env_steps = figures["env_steps"]
    self.scalars("eval", {k: v for k, v in figures.items()
                          if k != "env_steps"}, env_steps)
    if frames:
      self.writer.add_image("eval/episode", frame_strip(frames), env_steps,
                            dataformats="HWC")
    self.message(f"evaluation at {env_steps} env steps: "
                 f"{figures['return_mean']:.1f} ± {figures['return_std']:.1f} "
                 f"over {episodes} {'greedy' if greedy else 'sampled'} "
                 "episodes")

  def advance(self, env_steps: int, **postfix):
    self._bar.update(min(env_steps, self._bar.total) - self._bar.n)
    if postfix:
      self._bar.set_postfix(refresh=False, **postfix)

  def message(self, text: str):
    if not self._bar.disable:
      self._bar.write(text)

  def flush(self):
    self._csv.flush()
    self.writer.flush()

  def close(self):
    self._bar.close()
    self._csv.close()
    # tensorboardX hands events to its writing thread through a
    # multiprocessing queue, and its close waits for that thread. Once (a
    # Ctrl-C under heavy load) the thread never got the stop and the process
    # hung there after its checkpoint and summary were written. Events up to
    # the last flush are on disk: wait a while, then go on without it.
    closer = threading.Thread(target=self.writer.close, daemon=True,
                              name="tensorboard-close")
    closer.start()
    closer.join(WRITER_CLOSE_SECONDS)
    if closer.is_alive():
      print(f"warning: TensorBoard's writer did not close within "
            f"{WRITER_CLOSE_SECONDS:g} s; events after its last flush may be "
            "missing", file=sys.stderr, flush=True)


class EpisodeRecord:
  """The finished episodes of a run: their count, the last 100 returns, and
  when their mean first reached `solve_return`."""

  def __init__(self, logger: Logger, solve_return: float,
               recent_returns: Iterable[float] = (), count: int = 0,
               solved_at_steps: Optional[int] = None,
               solved_at_seconds: Optional[float] = None):
    self.logger, self.solve_return = logger, solve_return
    self.recent = collections.deque(recent_returns, maxlen=100)
    self.count = count
    self.solved_at_steps = solved_at_steps
    self.solved_at_seconds = solved_at_seconds

  def add(self, env_steps: int, seconds: float, ret: float,
          length: int) -> None:
    self.recent.append(ret)
    self.count += 1
    self.logger.episode(env_steps, seconds, ret, length)
    if (self.solved_at_steps is None and len(self.recent) == 100 and
        np.mean(self.recent) >= self.solve_return):
      self.solved_at_steps, self.solved_at_seconds = env_steps, seconds

  def mean(self) -> Optional[float]:
    return float(np.mean(self.recent)) if self.recent else None


def check_finite(losses: Sequence[float], first_update: int,
                 where: str) -> None:
  """Raises `NonFiniteLossError` at the first loss that is not finite;
  `losses[i]` is update `first_update + i`'s."""
  losses = np.asarray(losses, np.float64).reshape(-1)
  finite = np.isfinite(losses)
  if not finite.all():
    i = int(np.argmin(finite))
    raise NonFiniteLossError(f"loss became {losses[i]} at update "
                             f"{first_update + i} ({where}); stopping")


def params_digest(state) -> str:
  """SHA-256 of the params and target params of one (unreplicated) state:
  equal digests mean bit-identical params (e.g. across processes)."""
  digest = hashlib.sha256()
  for x in jax.tree.leaves((state.params, state.target_params)):
    digest.update(np.ascontiguousarray(jax.device_get(x)).tobytes())
  return digest.hexdigest()


def summary(config, record: EpisodeRecord, *, updates: int, env_steps: int,
            seconds: float, interrupted: bool, stopped_early: bool,
            update_compilations: int, devices: int,
            replicas_identical: Optional[bool],
            evaluations: Sequence[Dict[str, float]] = (),
            **extra) -> Dict[str, Any]:
  """The keys every `summary.json` has; a loop adds its own as `extra`."""
  last_eval = evaluations[-1] if evaluations else None
  return dict(
      env_id=config.env_id, seed=config.seed,
      solved_at_steps=record.solved_at_steps,
      solved_at_seconds=record.solved_at_seconds,
      updates=updates, episodes=record.count,
      interrupted=interrupted, stopped_early=stopped_early,
      env_steps=env_steps, seconds=seconds,
      update_compilations=update_compilations, devices=devices,
      replicas_identical=replicas_identical,
      mean_return_last_100=record.mean(),
      returns_last_100=[float(r) for r in record.recent],
      eval_return_mean=last_eval and last_eval["return_mean"],
      eval_return_std=last_eval and last_eval["return_std"],
      evaluations=list(evaluations), **extra)


def write_summary(run_dir: str, summary_: Dict[str, Any]) -> None:
  with open(os.path.join(run_dir, "summary.json"), "w") as f:
    json.dump(summary_, f, indent=2)
