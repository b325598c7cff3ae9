"""Specification of the malloc settings (encoder/allocator.py)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Bytes held in mmap'ed blocks (glibc's mallinfo2().hblkhd) while a 20 MB array, the size of a few
# windows' spectra, is alive: a block with its own mapping is returned to the kernel when freed and
# page-faulted in again next time.
MAPPED_BYTES_WITH_A_20MB_BLOCK = """
import ctypes, sys, numpy as np
sys.path.insert(0, {repo!r})
if {tuned}:
    from encoder.allocator import reuse_freed_memory
    assert reuse_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
block = np.ones(5 << 20, dtype=np.float32)
print(libc.mallinfo2().hblkhd)
"""


def mapped_bytes(tuned: bool) -> int:
    code = MAPPED_BYTES_WITH_A_20MB_BLOCK.format(repo=str(REPO), tuned=tuned)
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_a_window_sized_block_comes_from_the_reusable_heap_not_its_own_mapping():
    assert mapped_bytes(tuned=True) < 20 << 20
    assert mapped_bytes(tuned=False) >= 20 << 20  # glibc's default, what the setting is for
