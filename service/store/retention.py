"""Retention of the event store (``store.max_age_days``, ``store.max_size_mb``): how many bytes its pages
hold, where the next cut falls, deleting what lies before it and giving the pages back to the file system.
Plain functions over an open connection; `EventStore.enforce_retention` runs the passes under its lock.
Clips keep their own retention (clips.py)."""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass

from service.config import StoreConfig
from service.store import session_store


@dataclass(frozen=True)
class RetentionReport:
    """What one `enforce_retention` pass deleted."""

    windows_deleted: int
    events_deleted: int
    bytes_in_use: int  # pages in use after the pass


def bytes_in_use(db: sqlite3.Connection) -> int:
    """Database pages in use (excludes free pages and the WAL file), in bytes."""
    pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
    return int(pages * db.execute("PRAGMA page_size").fetchone()[0])


def age_cutoff(config: StoreConfig, now_unix_ms: int) -> int | None:
    """The time before which everything is older than ``max_age_days``; None when kept forever (inf)."""
    return now_unix_ms - int(config.max_age_days * 86_400_000) if math.isfinite(config.max_age_days) else None


def size_cutoff(db: sqlite3.Connection, config: StoreConfig, used_bytes: int) -> int | None:
    """The time up to which (inclusive) the oldest windows go so that ``used_bytes`` shrinks to ``max_bytes``
    (a proportional share, at least 1 % of them; the latest event once no window is left); None when empty."""
    total = db.execute("SELECT count(*) FROM windows").fetchone()[0]
    if total == 0:
        row = db.execute("SELECT max(time_unix_ms) FROM events").fetchone()
    else:
        share = max(1, math.ceil(total * (1.0 - config.max_bytes / used_bytes) * 1.1), total // 100)
        row = db.execute("SELECT start_unix_ms FROM windows ORDER BY start_unix_ms, id LIMIT 1 OFFSET ?",
                         (min(share, total) - 1,)).fetchone()
    return None if row is None else row[0]


def delete_before(db: sqlite3.Connection, cutoff_unix_ms: int, inclusive: bool) -> tuple[list[int], int]:
    """Delete windows starting, changes happening and maps and sessions of windows before (or at) the cutoff,
    in the caller's transaction; (the deleted window ids, how many changes)."""
    op = "<=" if inclusive else "<"
    ids = [row[0] for row in db.execute(f"DELETE FROM windows WHERE start_unix_ms {op} ? RETURNING id", (cutoff_unix_ms,))]
    events = db.execute(f"DELETE FROM events WHERE time_unix_ms {op} ?", (cutoff_unix_ms,)).rowcount
    db.execute(f"DELETE FROM window_maps WHERE start_unix_ms {op} ?", (cutoff_unix_ms,))
    session_store.delete_sessions_before(db, cutoff_unix_ms, inclusive)
    return ids, int(events)


def release_pages(db: sqlite3.Connection) -> None:
    """Give freed pages back to the file system and truncate the WAL (outside a transaction)."""
    db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per step
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
