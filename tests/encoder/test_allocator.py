"""Specification of the malloc settings (encoder/allocator.py)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# log-Mel of a 10 s window four times (as the daemon does window after window): page faults of the last.
LAST_WINDOW_FAULTS = """
import resource, sys, torch
sys.path.insert(0, {repo!r})
if {tuned}:
    from encoder.allocator import reuse_freed_memory
    assert reuse_freed_memory()
from encoder.features import log_mel
window = torch.randn(1, 160000) * 0.1
for _ in range(4):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    log_mel(window)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_the_last_window(tuned: bool) -> int:
    code = LAST_WINDOW_FAULTS.format(repo=str(REPO), tuned=tuned)
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_a_later_window_reuses_the_memory_of_the_one_before_instead_of_faulting_it_in():
    assert faults_of_the_last_window(tuned=True) < 100
    assert faults_of_the_last_window(tuned=False) > 500  # glibc's default, what the setting is for
