"""Ctrl-C and SIGTERM at any moment of a run.

`scripts/train.py` turns both into `KeyboardInterrupt`. The loops catch it
and end through one path that writes the newest checkpoint and
`summary.json`. Two kinds of blocks need more than that:
- `deferred()`: a step whose parts must stay consistent (the donating
  update and the actor; orbax writing a checkpoint) holds the signal and
  delivers it when the block ends.
- `shielded()`: the closing save and summary; a signal (a second Ctrl-C)
  is noted and never delivered, so nothing breaks off the save.

Over several processes nothing is installed: jax's preemption notifier owns
SIGTERM there, Ctrl-C is turned into it (`distributed.
forward_interrupts_to_jax`) and neither raises, so there is nothing to hold
(a Python SIGTERM handler here would replace jax's for good).
"""

import contextlib
import signal
import threading
from typing import List

import jax

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _can_install() -> bool:
  # Only the main thread receives signals.
  return (threading.current_thread() is threading.main_thread() and
          jax.process_count() == 1)


@contextlib.contextmanager
def _holding(received: List[int]):
  if not _can_install():
    yield
    return
  previous = {s: signal.signal(s, lambda signum, _: received.append(signum))
              for s in SIGNALS}
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


@contextlib.contextmanager
def deferred():
  """Holds Ctrl-C and SIGTERM until the block ends, then delivers them.

  The update donates the state it is given: an interrupt after its dispatch
  but before its result is assigned would leave no state to checkpoint.
  """
  received: List[int] = []
  try:
    with _holding(received):
      yield
  finally:
    for s in dict.fromkeys(received):
      signal.raise_signal(s)


class Shield:
  """What `shielded` caught: `interrupted` once a signal came."""

  def __init__(self):
    self.received: List[int] = []

  @property
  def interrupted(self) -> bool:
    return bool(self.received)


@contextlib.contextmanager
def shielded():
  """Ignores Ctrl-C and SIGTERM for the block, noting them on the `Shield`
  it yields: a second Ctrl-C during the closing save must not cut it."""
  shield = Shield()
  with _holding(shield.received):
    yield shield
