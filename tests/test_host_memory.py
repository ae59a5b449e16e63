"""`placement.keep_host_memory`: large host blocks come from the heap, and
freed memory stays mapped for the next one."""

import subprocess
import sys

import pytest

from conftest import ROOT, script_env

# Allocates, frees and allocates again a 64 MB block, printing glibc's
# mallinfo2 (bytes in mmapped blocks; bytes of the heap) while it is held
# and after it is freed. Each fresh mapping is faulted in and zeroed again.
_PROBE = """
import ctypes, sys
import numpy as np
from muesli_jax import placement

class MallInfo2(ctypes.Structure):
  _fields_ = [(name, ctypes.c_size_t) for name in (
      "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
      "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
changed = None
for setting in sys.argv[1:]:  # "keep", then maybe "restore"
  changed = placement.keep_host_memory(setting == "keep")
block = np.ones(64 * 2**20 // 8)
held = libc.mallinfo2()
del block
freed = libc.mallinfo2()
print(changed, held.hblkhd, freed.arena)
"""
MB = 2**20


def _probe(*settings: str):
  out = subprocess.run([sys.executable, "-c", _PROBE, *settings], cwd=ROOT,
                       env=script_env(), capture_output=True, text=True,
                       check=True).stdout.split()
  return out[0], int(out[1]), int(out[2])


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="glibc's allocator")
def test_large_blocks_come_from_a_heap_that_is_kept():
  changed, mmapped, heap_after_free = _probe("keep")
  assert changed == "True"
  assert mmapped < 64 * MB  # the block is not a mapping of its own
  assert heap_after_free >= 64 * MB  # and its memory stays for reuse
  # glibc's defaults, and the same once restored: the block is a fresh
  # mapping, unmapped when freed.
  for settings in ((), ("keep", "restore")):
    changed, mmapped, heap_after_free = _probe(*settings)
    assert changed == ("True" if settings else "None")
    assert mmapped >= 64 * MB
    assert heap_after_free < 64 * MB
