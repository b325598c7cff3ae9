"""What keeps a store file honest across processes and crashes, beside SQLite's own transactions:

- one daemon per store: an exclusive ``flock`` on ``<store>.lock``, whose content names the holder, so a
  second daemon on the same store stops with `StoreInUse` (exit 2) instead of interleaving windows;
- the highest window id ever acknowledged, kept in the same lock file after every committed batch: when the
  write-ahead log (``<store>-wal``) is deleted or damaged after a crash, SQLite silently loses the windows
  it held, and the next start sees the ids go backwards and warns (`lost_windows`);
- SQLite's ``PRAGMA quick_check`` on its own read-only connection, table by table (`table_checks`), run in the
  background from start and every ``store.check_interval_s``, so neither start-up nor the writer waits for it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

#: Problems quick_check reports at most (it stops counting there).
MAX_PROBLEMS = 10


class StoreInUse(RuntimeError):
    """Another process (another roomtone) holds the store's lock; the message names the store and the holder."""


@dataclass(frozen=True)
class StoreCheck:
    """One integrity check of the store file."""

    ok: bool
    problems: tuple[str, ...]  # quick_check's messages (at most MAX_PROBLEMS), or the error that stopped it
    seconds: float

    def advice(self, path: Path) -> str:
        """What the user should do about a failed check."""
        return (f"stop roomtone, copy {path} (and {path.name}-wal if present) aside, then recover what SQLite can "
                f"still read: `sqlite3 {path} .recover | sqlite3 {path}.recovered` and set store.path to the "
                f"recovered file (or move the damaged file away to start an empty store)")


def _read_only(path: str | Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True, timeout=30.0)


def quick_check(path: str | Path, max_problems: int = MAX_PROBLEMS, table: str | None = None) -> StoreCheck:
    """``PRAGMA quick_check`` of the store (or of one ``table`` and its indexes) on a separate read-only
    connection (WAL readers never block the writer); its cost grows with what it reads (docs/reliability.md)."""
    started = time.perf_counter()
    try:
        connection = _read_only(path)
        try:
            pragma = f"PRAGMA quick_check({int(max_problems)})" if table is None else f'PRAGMA quick_check("{table}")'
            rows = [str(row[0]) for row in connection.execute(pragma).fetchmany(max_problems)]
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        where = "" if table is None else f"table {table}: "
        return StoreCheck(False, (f"{where}{type(exc).__name__}: {exc}",), time.perf_counter() - started)
    ok = rows == ["ok"]
    problems = () if ok else tuple(rows if table is None else (f"table {table}: {row}" for row in rows))
    return StoreCheck(ok, problems, time.perf_counter() - started)


def store_tables(path: str | Path) -> list[str]:
    """The tables of the store, smallest first by highest rowid (a cheap size estimate), so a table-by-table
    check reports the quick ones early; DatabaseError when the file's schema cannot be read."""
    connection = _read_only(path)
    try:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        sizes = {}
        for name in names:
            try:
                sizes[name] = connection.execute(f'SELECT max(rowid) FROM "{name}"').fetchone()[0] or 0
            except sqlite3.DatabaseError:  # damaged: checked first
                sizes[name] = -1
    finally:
        connection.close()
    return sorted(names, key=lambda name: sizes[name])


def table_checks(path: str | Path, max_problems: int = MAX_PROBLEMS) -> Iterator[StoreCheck]:
    """`quick_check` of each table (and its indexes) in turn, as an incremental check yields its parts: the
    caller can report damage in one table before the largest (the windows) is read. A store whose schema
    cannot be read yields one failed check."""
    started = time.perf_counter()
    try:
        tables = store_tables(path)
    except sqlite3.DatabaseError as exc:
        yield StoreCheck(False, (f"{type(exc).__name__}: {exc}",), time.perf_counter() - started)
        return
    for table in tables:
        yield quick_check(path, max_problems, table)


class StoreGuard:
    """The lock file of one store: `acquire` it before opening the store, `record` each acknowledged window id,
    `release` after closing. The file stays behind with the high-water mark for the next start."""

    def __init__(self, store_path: str | Path) -> None:
        self.store_path = Path(store_path)
        self.path = self.store_path.with_name(self.store_path.name + ".lock")
        self.high_water = 0  # highest acknowledged window id, this run or any before
        self.previous_high_water = 0  # as the last run left it
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the exclusive lock; StoreInUse naming the store and the holder's pid when another process has it."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd).get("pid", "unknown")
            os.close(fd)
            raise StoreInUse(f"store {self.store_path} is in use by another roomtone (pid {holder}, lock file "
                             f"{self.path}); stop that one, or give this one its own store (--store, --data-dir "
                             f"or store.path)") from None
        self._fd = fd
        saved = self._read(fd).get("high_water_window_id", 0)
        self.previous_high_water = self.high_water = saved if isinstance(saved, int) and saved > 0 else 0
        self._write()

    def record(self, window_id: int) -> None:
        """Remember ``window_id`` as acknowledged (a small write, no fsync: it must survive a process crash,
        which the WAL does too; a power loss can take both)."""
        if window_id > self.high_water and self._fd is not None:
            self.high_water = int(window_id)
            self._write()

    def lost_windows(self, highest_assigned_id: int) -> range:
        """Window ids acknowledged before that the store no longer knows it ever assigned (empty when none)."""
        return range(highest_assigned_id + 1, self.previous_high_water + 1)

    def release(self) -> None:
        """Unlock (the content stays for the next start)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _write(self) -> None:
        data = json.dumps({"pid": os.getpid(), "high_water_window_id": self.high_water}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    @staticmethod
    def _read(fd: int) -> dict:
        try:
            data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
