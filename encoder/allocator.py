"""glibc malloc settings for processes that handle window after window: reuse freed memory.

Every 10 s window allocates the same few-MB arrays (samples, spectra, activations) and frees them
again. With glibc's defaults, blocks above a dynamic threshold get their own mmap and a freed top of
the heap goes back to the kernel, so each window page-faults its working memory in anew: on the
2-core development VM about 2,700 page faults and 40% of a window's time (docs/performance.md).
Fixed, higher thresholds keep those blocks in the heap for the next window; resident memory then
stays at the working set's peak instead of saw-toothing, which the memory soak checks stays flat.
Call `reuse_freed_memory()` once at process start (the daemon and the benchmarks do).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
M_MMAP_THRESHOLD = -3


def reuse_freed_memory(mmap_threshold_mb: int = 32, trim_threshold_mb: int = 64) -> bool:
    """Serve blocks up to ``mmap_threshold_mb`` from the heap and keep up to ``trim_threshold_mb`` of
    freed heap; True when glibc accepted both, False (nothing changed) on another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold_mb << 20)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold_mb << 20))
