"""Free space on the disks the daemon writes to, and what to tell a person when it runs out.

`free_bytes` is the one place that asks the file system (statvfs), so tests can fake a nearly full disk at
this edge. Clips keep a floor of free space for the store (`ClipsConfig.min_free_mb`, service/store/clips.py);
store writes that keep failing turn gRPC health NOT_SERVING (service/pipeline.py, service/daemon.py).
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

#: SQLite's result code for a full disk (SQLITE_FULL).
SQLITE_FULL = 13


def free_bytes(path: str | Path) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path`` (or its nearest existing
    parent, for a folder not made yet)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error means the disk (or a quota) is full: ENOSPC/EDQUOT, or SQLite's SQLITE_FULL."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "disk is full" in str(exc)
    return False


def full_disk_advice(path: str | Path) -> str:
    """What a person can do when the disk holding ``path`` is full, in one sentence."""
    try:
        free = f"{free_bytes(path) / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return (f"the disk holding {path} is full or nearly ({free}): free space on it (delete old clips, other files), "
            "lower store.max_size_mb or clips.max_size_mb, or move data_dir to a larger disk; roomtone goes on "
            "running and stores windows again by itself once there is room")
