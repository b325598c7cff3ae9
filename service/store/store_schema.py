"""The event store's file: its schema steps (``PRAGMA user_version``, an append-only list), opening it in WAL
mode with ``synchronous=FULL``, and the one way a write transaction is run. `EventStore` (event_store.py) is
the face the daemon uses; this module holds what makes a file an event store."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from service.store import correction_store, session_store

T = TypeVar("T")


class StoreError(RuntimeError):
    """The store file cannot be used (not a database, written by a newer roomtone, closed)."""


# Schema history. Index i upgrades user_version i -> i+1; never edit a released step, append one.
MIGRATIONS: list[str] = [
    # 1: windows and state-change events with mic+time indexes.
    """
    CREATE TABLE windows (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: ids are never reused after retention
        mic_id TEXT NOT NULL,
        start_unix_ms INTEGER NOT NULL,
        end_unix_ms INTEGER NOT NULL,
        label TEXT,
        probabilities_json TEXT NOT NULL,
        health_state TEXT NOT NULL,
        health_reasons_json TEXT NOT NULL,
        health_scores_json TEXT NOT NULL,
        rms_dbfs REAL NOT NULL,
        embedding BLOB  -- little-endian float16
    );
    CREATE INDEX windows_mic_time ON windows (mic_id, start_unix_ms);
    CREATE INDEX windows_time ON windows (start_unix_ms);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        mic_id TEXT NOT NULL,
        time_unix_ms INTEGER NOT NULL,
        previous TEXT,
        current TEXT NOT NULL,
        window_id INTEGER,
        reasons_json TEXT NOT NULL
    );
    CREATE INDEX events_mic_time ON events (mic_id, time_unix_ms);
    CREATE INDEX events_time ON events (time_unix_ms);
    """,
    # 2: embedding dimension per row, so the similarity cache can load one model's rows without
    # decoding blobs (rows from a model with another dimension are never compared).
    """
    ALTER TABLE windows ADD COLUMN embedding_dim INTEGER;
    UPDATE windows SET embedding_dim = length(embedding) / 2 WHERE embedding IS NOT NULL;
    CREATE INDEX windows_embedding_dim ON windows (embedding_dim, id) WHERE embedding IS NOT NULL;
    """,
    # 3: activity sessions (service/store/session_store.py).
    session_store.SESSIONS_MIGRATION,
    # 4: the score of sound_detected events (custom sounds, service/analysis/sound_library.py).
    """
    ALTER TABLE events ADD COLUMN score REAL;
    """,
    # 5: where in its window a custom sound was heard, and the windows' column maps (kept for
    # sounds.calibration_hours: custom sounds calibrate against them and "not this" marks use them).
    """
    ALTER TABLE events ADD COLUMN sound_start_ms INTEGER;
    ALTER TABLE events ADD COLUMN sound_end_ms INTEGER;
    CREATE TABLE window_maps (
        window_id INTEGER PRIMARY KEY,  -- windows.id
        start_unix_ms INTEGER NOT NULL,  -- the window's, for pruning by age
        columns INTEGER NOT NULL,
        dim INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        map BLOB NOT NULL  -- float16 scale per column, int8 [columns, dim], float16 level (dB) per column
    );
    CREATE INDEX window_maps_time ON window_maps (start_unix_ms);
    CREATE INDEX events_sound_window ON events (window_id) WHERE kind = 'sound_detected';
    """,
    # 6: activity corrections and which model ran when (service/store/correction_store.py).
    correction_store.CORRECTIONS_MIGRATION,
    # 7: an index of the open sessions, read at every start (service/store/session_store.py).
    session_store.OPEN_SESSIONS_MIGRATION,
]
SCHEMA_VERSION = len(MIGRATIONS)


def in_transaction(connection: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work(connection)`` in one IMMEDIATE transaction, committed on return and rolled back if it raises."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        result = work(connection)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:  # SQLite already rolled back after a full disk or I/O error
            connection.execute("ROLLBACK")
        raise
    return result


def migrate(connection: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the pending schema steps up to ``target`` (each in its own transaction); returns the version."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"schema version {version} is newer than this roomtone understands ({SCHEMA_VERSION}); "
                         "upgrade roomtone or point it at another store path")
    for step in range(version, target):
        in_transaction(connection, lambda db, step=step: _apply_step(db, step))
    return max(version, target)


def _apply_step(connection: sqlite3.Connection, step: int) -> None:
    """Schema step ``step`` (user_version step -> step + 1), inside the caller's transaction."""
    for statement in MIGRATIONS[step].split(";"):
        if statement.strip():
            connection.execute(statement)
    connection.execute(f"PRAGMA user_version = {step + 1}")


def open_connection(path: Path) -> sqlite3.Connection:
    """Connection in autocommit mode (we issue BEGIN/COMMIT) with WAL and FULL sync."""
    new = not path.exists() or path.stat().st_size == 0
    connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    try:
        # auto_vacuum only takes effect before the first table exists: set it for new files only (on an existing
        # file it is a write, which fails on a full disk, and the daemon must start there and say what to do).
        if new:
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        connection.close()
        raise StoreError(f"{path}: not a usable SQLite database ({exc})") from None
    if str(mode).lower() != "wal":
        connection.close()
        raise StoreError(f"{path}: cannot switch to WAL journal mode (got {mode!r}); is it on a network file system?")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = OFF")
    return connection

