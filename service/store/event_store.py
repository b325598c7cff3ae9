"""SQLite store of window records and state-change events: durable writes, filtered pages, retention
and nearest-neighbour search over the stored embeddings (service/store/similarity_index.py: exact for small
stores, an approximate faiss IVF index for large ones).

Durability: WAL journal with ``synchronous=FULL``, so a transaction is on disk when `add_results`
returns; a crash (process or power) loses nothing that was acknowledged, only batches still in flight.
One connection guarded by a lock makes the store safe to share between the pipeline, the retention
thread and the gRPC servicers (writes are one small batch per window hop, so contention is low).
"""

from __future__ import annotations

import base64
import contextlib
import binascii
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from service.config import SimilarityIndexConfig, StoreConfig
from service.analysis.level_floor import counts_for_floor
from service.records import StateChange, WindowMap, WindowResult
from service.store import correction_store, session_store
from service.store.correction_store import Correction
from service.store.session_store import SessionPage, SessionQuery
from service.analysis.sessions import ActivitySession, SessionEvent
from service.vocabulary import (EVENT_KINDS, HEALTH_CHANGED, HEALTH_FAULTY, HEALTH_STATES,
                                LABELLED_KINDS, QUERY_KINDS, SESSION_EVENT_KINDS, SILENCE_DBFS, SOUND_DETECTED, WINDOW)
from service.store.similarity_index import IndexSummary, SimilarityIndex, rescored
from service.store.store_guard import StoreGuard

log = logging.getLogger("roomtone.store")


class StoreError(RuntimeError):
    """The store file cannot be used (not a database, written by a newer roomtone, closed)."""


@dataclass(frozen=True)
class RetentionReport:
    """What one `enforce_retention` pass deleted."""

    windows_deleted: int
    events_deleted: int
    bytes_in_use: int  # pages in use after the pass


@dataclass(frozen=True)
class EventQuery:
    """Filters for `list_events`; every set filter must match, values inside one are alternatives.

    A state change matches ``labels`` only if it is an activity change to one of them and
    ``health_states`` only if it is a health change to one of them.
    """

    mic_ids: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    health_states: tuple[str, ...] = ()  # values of HEALTH_STATES
    kinds: tuple[str, ...] = ()  # values of QUERY_KINDS; empty = all
    since_unix_ms: int | None = None  # inclusive (window start / change time)
    until_unix_ms: int | None = None  # exclusive

    def __post_init__(self) -> None:
        bad_states = sorted(set(self.health_states) - set(HEALTH_STATES))
        if bad_states:
            raise ValueError(f"health_states: unknown state(s) {bad_states}; known: {list(HEALTH_STATES)}")
        bad_kinds = sorted(set(self.kinds) - set(QUERY_KINDS))
        if bad_kinds:
            raise ValueError(f"kinds: unknown kind(s) {bad_kinds}; known: {list(QUERY_KINDS)}")
        if self.since_unix_ms is not None and self.until_unix_ms is not None and self.until_unix_ms <= self.since_unix_ms:
            raise ValueError(f"until_unix_ms ({self.until_unix_ms}) must be after since_unix_ms ({self.since_unix_ms})")

    def conditions(self) -> dict[str, list[tuple[str, str, Any]]]:
        """The filter written once: table ("windows", "events") -> [(column, operator, value)], operators
        ``in`` (a tuple), ``>=`` and ``<``; a table is absent when none of its rows can match. Columns are
        also the attribute names of WindowResult / StateChange, so SQL (`_query_parts`) and live items
        (`matches`) are judged by the same list."""
        kinds = set(self.kinds or QUERY_KINDS)

        def common(time_column: str) -> list[tuple[str, str, Any]]:
            out: list[tuple[str, str, Any]] = [("mic_id", "in", self.mic_ids)] if self.mic_ids else []
            if self.since_unix_ms is not None:
                out.append((time_column, ">=", int(self.since_unix_ms)))
            if self.until_unix_ms is not None:
                out.append((time_column, "<", int(self.until_unix_ms)))
            return out

        tables: dict[str, list[tuple[str, str, Any]]] = {}
        if WINDOW in kinds:
            tables["windows"] = common("start_unix_ms") + [
                (column, "in", values) for column, values in (("label", self.labels), ("health_state", self.health_states))
                if values]
        change_kinds = [k for k in EVENT_KINDS if k in kinds]
        if self.labels:  # a change matches labels only as an activity change to one of them, or a sound of that name
            change_kinds = [k for k in change_kinds if k in LABELLED_KINDS]
        if self.health_states:  # ... and health states only as a health change to one of them
            change_kinds = [k for k in change_kinds if k == HEALTH_CHANGED]
        if change_kinds:
            wanted = self.labels or self.health_states
            tables["events"] = common("time_unix_ms") + [("kind", "in", tuple(change_kinds))] + (
                [("current", "in", wanted)] if wanted else [])
        session_kinds = tuple(k for k in SESSION_EVENT_KINDS if k in kinds)
        if session_kinds and not self.health_states:  # live only: a session matches labels by its activity
            tables["sessions"] = common("time_unix_ms") + [("kind", "in", session_kinds)] + (
                [("activity", "in", self.labels)] if self.labels else [])
        return tables

    def matches(self, item: WindowResult | StateChange | SessionEvent) -> bool:
        """Whether a live item passes these filters (the `conditions` the SQL query applies)."""
        table = "windows" if isinstance(item, WindowResult) else "sessions" if isinstance(item, SessionEvent) else "events"
        conditions = self.conditions().get(table)
        if conditions is None:
            return False
        for column, op, value in conditions:
            actual = getattr(item, column)
            if not (actual in value if op == "in" else actual >= value if op == ">=" else actual < value):
                return False
        return True


@dataclass(frozen=True)
class EventPage:
    """One page of `list_events`: items newest first and the token of the next (older) page."""

    items: list[WindowResult | StateChange]
    next_page_token: str  # "" when there is no older item


@dataclass(frozen=True)
class LabelBucket:
    """The stored windows of one microphone with one label whose start falls in one time bucket
    (`EventStore.label_buckets`): how many, the first of them (lowest id) and the time they span."""

    mic_id: str
    bucket: int  # (start_unix_ms - origin) // bucket_ms
    label: str | None
    windows: int
    first_window_id: int
    start_unix_ms: int  # earliest start of these windows
    end_unix_ms: int  # latest end of these windows


@dataclass(frozen=True)
class NearestResult:
    """Stored windows nearest to a query embedding, nearest first, with cosine distances."""

    neighbors: list[tuple[WindowResult, float]]
    searched: int  # stored embeddings the search ran over (same dimension and mics, not excluded)


# Schema history. Index i upgrades user_version i -> i+1; never edit a released step, append one.
_MIGRATIONS: list[str] = [
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
]
SCHEMA_VERSION = len(_MIGRATIONS)

_WINDOW_COLUMNS = ("id, mic_id, start_unix_ms, end_unix_ms, label, probabilities_json, health_state, "
                   "health_reasons_json, health_scores_json, rms_dbfs")


def migrate(connection: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the pending schema steps up to ``target`` (each in its own transaction); returns the version."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"schema version {version} is newer than this roomtone understands ({SCHEMA_VERSION}); "
                         "upgrade roomtone or point it at another store path")
    for step in range(version, target):
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATIONS[step].split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA user_version = {step + 1}")
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:  # SQLite already rolled back after a full disk or I/O error
                connection.execute("ROLLBACK")
            raise
    return max(version, target)


def _open_connection(path: Path) -> sqlite3.Connection:
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


def _encode_embedding(embedding: np.ndarray | None) -> tuple[bytes | None, int | None]:
    """float16 little-endian blob and its dimension; rejects non-1-D or non-finite vectors."""
    if embedding is None:
        return None, None
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"embedding must be a non-empty 1-D vector, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError("embedding contains NaN/Inf")
    return vector.astype("<f2").tobytes(), int(vector.size)


def _encode_map(window_map: WindowMap) -> tuple[int, int, bytes]:
    """(columns, dim, blob) of a column map: int8 per column with a float16 scale, and float16 levels."""
    columns = np.asarray(window_map.columns, dtype=np.float32)
    scales = np.maximum(np.abs(columns).max(axis=1), 1e-12) / 127.0
    quantised = np.clip(np.round(columns / scales[:, None]), -127, 127).astype(np.int8)
    levels = window_map.levels if window_map.levels is not None else np.full(len(columns), np.nan)
    return (len(columns), columns.shape[1], scales.astype("<f2").tobytes() + quantised.tobytes()
            + np.asarray(levels, dtype="<f2").tobytes())


def _decode_map(columns: int, dim: int, duration_ms: int, blob: bytes) -> WindowMap:
    scales = np.frombuffer(blob, dtype="<f2", count=columns).astype(np.float32)
    quantised = np.frombuffer(blob, dtype=np.int8, count=columns * dim, offset=2 * columns).reshape(columns, dim)
    levels = np.frombuffer(blob, dtype="<f2", count=columns, offset=2 * columns + columns * dim).astype(np.float32)
    return WindowMap(quantised.astype(np.float32) * scales[:, None], None if np.isnan(levels).any() else levels,
                     duration_ms / 1000)


def _decode_embedding(blob: bytes | None) -> np.ndarray | None:
    """float32 vector from a stored float16 blob."""
    return None if blob is None else np.frombuffer(blob, dtype="<f2").astype(np.float32)


def _encode_page_token(key: tuple[int, int, int]) -> str:
    """Opaque token for the keyset (time, rank, id) of the last item of a page."""
    return base64.urlsafe_b64encode(("%d.%d.%d" % key).encode()).decode().rstrip("=")


def _decode_page_token(token: str) -> tuple[int, int, int]:
    """Inverse of `_encode_page_token`; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        t, rank, ident = (int(part) for part in raw.split("."))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"invalid page_token {token[:40]!r}: pass next_page_token from the previous page") from None
    if rank not in (0, 1):
        raise ValueError(f"invalid page_token {token[:40]!r}: pass next_page_token from the previous page")
    return t, rank, ident


class EventStore:
    """Windows and state changes in one SQLite file (WAL); safe to share between threads."""

    def __init__(self, path: str | Path, config: StoreConfig = StoreConfig(),
                 similarity: SimilarityIndexConfig = SimilarityIndexConfig(), guard: StoreGuard | None = None) -> None:
        self.path = Path(path)
        self.config = config
        self.guard = guard  # the daemon's lock file: told every acknowledged window id (service/store/store_guard.py)
        self.similarity = similarity
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._connection: sqlite3.Connection | None = _open_connection(self.path)
        try:
            migrate(self._connection)
        except sqlite3.DatabaseError as exc:
            self._connection.close()
            raise StoreError(f"{self.path}: cannot read or upgrade the schema ({exc})") from None
        except BaseException:
            self._connection.close()
            raise
        # Similarity cache, filled on the first `nearest` and topped up by later ones. Its own lock
        # (always taken before `_lock`, never inside it) keeps searches from blocking writers.
        self._cache_lock = threading.Lock()
        self._indexes: dict[int, SimilarityIndex] = {}
        self._loaded_up_to = 0  # highest window id already in the indexes
        # Queries read on a connection of their own thread (WAL: readers and the one writer never wait for
        # each other), so heavy ListEvents pages cannot hold up the pipeline's writes.
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        """Checkpoint the WAL into the main file and close; later calls raise StoreError."""
        with self._lock:
            if self._connection is None:
                return
            with self._readers_lock:
                readers, self._readers = self._readers, []
            for reader in readers:
                reader.close()
            try:
                self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.OperationalError as exc:  # a full disk: the WAL keeps every committed write
                log.warning("store closed without folding its write-ahead log into the file (kept beside it, "
                            "read at the next start)", extra={"store": str(self.path), "error": str(exc)})
            finally:
                self._connection.close()
                self._connection = None

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _db(self) -> sqlite3.Connection:
        if self._connection is None:
            raise StoreError(f"{self.path}: store is closed")
        return self._connection

    @contextlib.contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """This thread's read-only connection, inside one read transaction (a consistent snapshot even while
        the writer commits or retention deletes)."""
        self._db()  # StoreError once closed
        reader = getattr(self._local, "connection", None)
        if reader is None or reader not in self._readers:
            reader = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
            reader.execute("PRAGMA query_only = ON")
            with self._readers_lock:
                self._readers.append(reader)
            self._local.connection = reader
        if reader.in_transaction:  # nested in this thread: the outer snapshot holds
            yield reader
            return
        reader.execute("BEGIN")
        try:
            yield reader
        finally:
            if reader.in_transaction:
                reader.execute("COMMIT")

    def schema_version(self) -> int:
        """PRAGMA user_version of the open file."""
        with self._lock:
            return int(self._db().execute("PRAGMA user_version").fetchone()[0])

    # -- writing ---------------------------------------------------------------------------------
    def add_results(
        self, windows: Sequence[WindowResult], changes: Sequence[StateChange] = ()
    ) -> tuple[list[WindowResult], list[StateChange]]:
        """Store windows and state changes in ONE transaction, durable on return; returns copies with ids.

        A change whose ``window_id`` is None is linked to the window of this batch with the same mic
        and ``start_unix_ms == change.time_unix_ms`` (if any).
        """
        rows = [self._window_row(w) for w in windows]
        for change in changes:
            if change.kind not in EVENT_KINDS:
                raise ValueError(f"StateChange.kind must be one of {list(EVENT_KINDS)}, got {change.kind!r}")
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                stored_windows = []
                for window, row in zip(windows, rows):
                    cursor = db.execute(
                        "INSERT INTO windows (mic_id, start_unix_ms, end_unix_ms, label, probabilities_json, "
                        "health_state, health_reasons_json, health_scores_json, rms_dbfs, embedding, embedding_dim) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
                    stored_windows.append(replace(window, window_id=int(cursor.lastrowid)))
                    if window.map is not None and len(window.map.columns) > 1:
                        columns, dim, blob = _encode_map(window.map)
                        db.execute("INSERT INTO window_maps (window_id, start_unix_ms, columns, dim, duration_ms, map) "
                                   "VALUES (?, ?, ?, ?, ?, ?)", (int(cursor.lastrowid), int(window.start_unix_ms),
                                                                 columns, dim,
                                                                 int(window.end_unix_ms - window.start_unix_ms), blob))
                by_start = {(w.mic_id, w.start_unix_ms): w.window_id for w in stored_windows}
                stored_changes = []
                for change in changes:
                    window_id = change.window_id
                    if window_id is None:
                        window_id = by_start.get((change.mic_id, change.time_unix_ms))
                    cursor = db.execute(
                        "INSERT INTO events (kind, mic_id, time_unix_ms, previous, current, window_id, reasons_json, "
                        "score, sound_start_ms, sound_end_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (change.kind, change.mic_id, int(change.time_unix_ms), change.previous, change.current,
                         window_id, json.dumps(list(change.reasons)),
                         None if change.score is None else float(change.score), change.sound_start_ms,
                         change.sound_end_ms))
                    stored_changes.append(replace(change, window_id=window_id, event_id=int(cursor.lastrowid)))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite already rolled back after a full disk or I/O error
                    db.execute("ROLLBACK")
                raise
            if self.guard is not None and stored_windows:
                self.guard.record(stored_windows[-1].window_id)
        return stored_windows, stored_changes

    def highest_assigned_window_id(self) -> int:
        """The highest window id this store ever assigned (AUTOINCREMENT keeps it after retention deletes)."""
        with self._lock:
            row = self._db().execute("SELECT seq FROM sqlite_sequence WHERE name = 'windows'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _window_row(window: WindowResult) -> tuple:
        """Validated column values of one window."""
        if window.health_state not in HEALTH_STATES:
            raise ValueError(f"WindowResult.health_state must be one of {list(HEALTH_STATES)}, got {window.health_state!r}")
        if window.end_unix_ms < window.start_unix_ms:
            raise ValueError(f"WindowResult for {window.mic_id}: end_unix_ms {window.end_unix_ms} before start {window.start_unix_ms}")
        blob, dim = _encode_embedding(window.embedding)
        # SQLite turns NaN into NULL; a level of non-finite samples is stored as silence (the health
        # reasons say non_finite).
        # one silence level everywhere: nothing is stored below SILENCE_DBFS, NaN reads as silence
        rms = max(float(window.rms_dbfs), SILENCE_DBFS) if not math.isnan(window.rms_dbfs) else SILENCE_DBFS
        return (window.mic_id, int(window.start_unix_ms), int(window.end_unix_ms), window.label,
                json.dumps({k: float(v) for k, v in window.probabilities.items()}), window.health_state,
                json.dumps(list(window.health_reasons)), json.dumps({k: float(v) for k, v in window.health_scores.items()}),
                rms, blob, dim)

    # -- reading ---------------------------------------------------------------------------------
    @staticmethod
    def _window_from_row(row: tuple, embedding: bytes | None = None) -> WindowResult:
        return WindowResult(
            mic_id=row[1], start_unix_ms=row[2], end_unix_ms=row[3], label=row[4],
            probabilities=json.loads(row[5]), health_state=row[6], health_reasons=tuple(json.loads(row[7])),
            health_scores=json.loads(row[8]), rms_dbfs=max(row[9], SILENCE_DBFS), embedding=_decode_embedding(embedding),
            window_id=row[0],
        )

    @staticmethod
    def _change_from_row(row: tuple) -> StateChange:
        return StateChange(kind=row[1], mic_id=row[2], time_unix_ms=row[3], previous=row[4], current=row[5],
                           window_id=row[6], reasons=tuple(json.loads(row[7])), event_id=row[0], score=row[8],
                           sound_start_ms=row[9], sound_end_ms=row[10])

    def get_window(self, window_id: int, include_embedding: bool = True) -> WindowResult | None:
        """One stored window by id (with its embedding by default), or None."""
        found = self.get_windows([window_id], include_embedding)
        return found[0] if found else None

    def get_windows(self, window_ids: Sequence[int], include_embedding: bool = False) -> list[WindowResult]:
        """Stored windows by id, in the order asked; missing ids are skipped."""
        if not window_ids:
            return []
        with self._reading() as db:
            return self._get_windows(db, window_ids, include_embedding)

    def _get_windows(self, db: sqlite3.Connection, window_ids: Sequence[int], include_embedding: bool) -> list[WindowResult]:
        columns = _WINDOW_COLUMNS + (", embedding" if include_embedding else "")
        rows = []
        for begin in range(0, len(window_ids), 500):
            part = [int(i) for i in window_ids[begin:begin + 500]]
            rows += db.execute(f"SELECT {columns} FROM windows WHERE id IN ({','.join('?' * len(part))})", part).fetchall()
        by_id = {row[0]: self._window_from_row(row, row[10] if include_embedding else None) for row in rows}
        return [by_id[i] for i in window_ids if i in by_id]

    def list_events(self, query: EventQuery = EventQuery(), limit: int = 100, page_token: str = "") -> EventPage:
        """Windows and state changes matching ``query``, newest first (a window before its changes), paged.

        Raises ValueError for a bad limit or page token.
        """
        if not 1 <= limit <= 10000:
            raise ValueError(f"limit must be between 1 and 10000, got {limit}")
        after = _decode_page_token(page_token) if page_token else None
        parts, params = [], []
        for rank, table, time_column, where, args in self._query_parts(query):
            if after is not None:
                where.append(f"({time_column}, {rank}, id) < (?, ?, ?)")
                args += list(after)
            sql = (f"SELECT * FROM (SELECT {rank} AS rank, id, {time_column} AS t FROM {table} "
                   f"WHERE {' AND '.join(where) or '1'} ORDER BY {time_column} DESC, id DESC LIMIT ?)")
            parts.append(sql)
            params += args + [limit + 1]
        if not parts:
            return EventPage([], "")
        sql = " UNION ALL ".join(parts) + " ORDER BY t DESC, rank DESC, id DESC LIMIT ?"
        with self._reading() as db:
            keys = db.execute(sql, params + [limit + 1]).fetchall()
            more = len(keys) > limit
            keys = keys[:limit]
            windows = {w.window_id: w for w in self._get_windows(db, [k[1] for k in keys if k[0] == 1], False)}
            changes = self._get_changes(db, [k[1] for k in keys if k[0] == 0])
        items = [windows[k[1]] if k[0] == 1 else changes[k[1]] for k in keys]
        token = _encode_page_token((keys[-1][2], keys[-1][0], keys[-1][1])) if more else ""
        return EventPage(items, token)

    def list_windows(self, query: EventQuery = EventQuery(), limit: int = 100, page_token: str = "") -> EventPage:
        """Like `list_events` restricted to window records."""
        return self.list_events(replace(query, kinds=("window",)), limit, page_token)

    def label_buckets(self, query: EventQuery, origin_unix_ms: int, bucket_ms: int) -> list[LabelBucket]:
        """The windows matching ``query`` (microphones, time) counted per microphone, time bucket of
        ``bucket_ms`` from ``origin_unix_ms`` (by window start) and label, in one indexed pass that reads no
        embedding: a summary of any span whose size grows with the buckets, not with the windows."""
        if bucket_ms < 1:
            raise ValueError(f"bucket_ms must be at least 1, got {bucket_ms}")
        parts = self._query_parts(replace(query, kinds=("window",)))
        if not parts:
            return []
        _, _, _, where, args = parts[0]
        # Every microphone: walk the rows in time order, which is the table's own order. Through
        # windows_mic_time SQLite reads each table page once per microphone (0.55 s instead of 0.28 s of CPU
        # for 200k windows, bench/year_store.py).
        source = "windows" if query.mic_ids else "windows INDEXED BY windows_time"
        sql = ("SELECT mic_id, (start_unix_ms - ?) / ? AS bucket, label, COUNT(*), MIN(id), MIN(start_unix_ms), "
               f"MAX(end_unix_ms) FROM {source} WHERE {' AND '.join(where) or '1'} GROUP BY mic_id, bucket, label")
        with self._reading() as db:
            rows = db.execute(sql, [int(origin_unix_ms), int(bucket_ms), *args]).fetchall()
        return [LabelBucket(*row) for row in rows]

    def _get_changes(self, db: sqlite3.Connection, event_ids: list[int]) -> dict[int, StateChange]:
        if not event_ids:
            return {}
        rows = db.execute(
            "SELECT e.id, e.kind, e.mic_id, e.time_unix_ms, e.previous, e.current, w.id, e.reasons_json, e.score, "
            "e.sound_start_ms, e.sound_end_ms "
            "FROM events e LEFT JOIN windows w ON w.id = e.window_id "
            f"WHERE e.id IN ({','.join('?' * len(event_ids))})", event_ids).fetchall()
        return {row[0]: self._change_from_row(row) for row in rows}

    @staticmethod
    def _query_parts(query: EventQuery) -> list[tuple[int, str, str, list[str], list[Any]]]:
        """(rank, table, time column, WHERE clauses, args) for the windows and events halves of a query."""
        parts = []
        for rank, table, time_column in ((1, "windows", "start_unix_ms"), (0, "events", "time_unix_ms")):
            conditions = query.conditions().get(table)
            if conditions is None:
                continue
            where, args = [], []
            for column, op, value in conditions:
                if op == "in":
                    where.append(f"{column} IN ({','.join('?' * len(value))})")
                    args += list(value)
                else:
                    where.append(f"{column} {op} ?")
                    args.append(value)
            parts.append((rank, table, time_column, where, args))
        return parts

    def recent_embeddings(self, dim: int, hours: float, exclude_ids: Sequence[int] = (),
                          now_unix_ms: int | None = None, since_unix_ms: int = 0) -> tuple[np.ndarray, float]:
        """Embeddings ``[n, dim]`` of the windows that started in the last ``hours`` (and not before
        ``since_unix_ms``, e.g. when the current model was loaded) and the hours of audio they cover (sum of
        window lengths, all microphones): a home's own background, e.g. to calibrate a custom sound's threshold."""
        now = int(time.time() * 1000) if now_unix_ms is None else int(now_unix_ms)
        start = max(now - int(hours * 3_600_000), int(since_unix_ms))
        with self._lock:
            rows = self._db().execute(
                # `+embedding_dim`: without statistics SQLite would pick the dimension index (equality) and read
                # every stored window of that dimension (a year: 12.6 M); the time index reads the last hours
                "SELECT id, end_unix_ms - start_unix_ms, embedding FROM windows WHERE +embedding_dim = ? "
                "AND embedding IS NOT NULL AND start_unix_ms >= ?", (int(dim), start)).fetchall()
        excluded = {int(i) for i in exclude_ids}
        rows = [row for row in rows if row[0] not in excluded]
        if not rows:
            return np.zeros((0, dim), dtype=np.float32), 0.0
        vectors = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f2").reshape(len(rows), dim)
        return vectors.astype(np.float32), sum(row[1] for row in rows) / 3_600_000

    def get_event(self, event_id: int) -> StateChange | None:
        """One stored state change (or sound detection) by id, or None."""
        with self._reading() as db:
            return self._get_changes(db, [int(event_id)]).get(int(event_id))

    def sound_detections(self, window_id: int) -> list[StateChange]:
        """The sound_detected events of one stored window, in id order."""
        with self._reading() as db:
            # the literal kind lets SQLite use the partial index events_sound_window
            ids = [row[0] for row in db.execute(f"SELECT id FROM events WHERE window_id = ? AND kind = '{SOUND_DETECTED}' "
                                                "ORDER BY id", (int(window_id),))]
            changes = self._get_changes(db, ids)
        return [changes[i] for i in ids if i in changes]

    def window_map(self, window_id: int) -> WindowMap | None:
        """A stored window's column map, or None when it was not kept or is pruned."""
        with self._lock:
            row = self._db().execute("SELECT columns, dim, duration_ms, map FROM window_maps WHERE window_id = ?",
                                     (int(window_id),)).fetchone()
        return _decode_map(*row) if row else None

    def recent_window_hours(self, dim: int, hours: float, exclude_ids: Sequence[int] = (),
                            now_unix_ms: int | None = None, since_unix_ms: int = 0) -> float:
        """Hours of audio `recent_window_maps` covers (sum of window lengths, all microphones)."""
        start = self._recent_start(hours, now_unix_ms, since_unix_ms)
        with self._lock:
            rows = self._db().execute("SELECT id, end_unix_ms - start_unix_ms FROM windows WHERE embedding_dim = ? "
                                      "AND embedding IS NOT NULL AND start_unix_ms >= ?", (int(dim), start)).fetchall()
        excluded = {int(i) for i in exclude_ids}
        return sum(d for i, d in rows if i not in excluded) / 3_600_000

    def recent_window_maps(self, dim: int, hours: float, exclude_ids: Sequence[int] = (),
                           now_unix_ms: int | None = None, since_unix_ms: int = 0,
                           chunk: int = 512) -> Iterator[list[WindowMap]]:
        """`recent_embeddings` as maps, ``chunk`` windows at a time: each window's column map where still
        kept, else its pooled embedding (one row). Custom sounds calibrate against these."""
        start = self._recent_start(hours, now_unix_ms, since_unix_ms)
        excluded = {int(i) for i in exclude_ids}
        last = 0
        while True:
            with self._lock:
                rows = self._db().execute(
                    "SELECT w.id, w.end_unix_ms - w.start_unix_ms, w.embedding, m.columns, m.dim, m.map FROM windows w "
                    "LEFT JOIN window_maps m ON m.window_id = w.id AND m.dim = w.embedding_dim "
                    "WHERE w.embedding_dim = ? AND w.embedding IS NOT NULL AND w.start_unix_ms >= ? AND w.id > ? "
                    "ORDER BY w.id LIMIT ?", (int(dim), start, last, int(chunk))).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            maps = []
            for window_id, duration, embedding, columns, map_dim, blob in rows:
                if window_id in excluded:
                    continue
                if blob is not None:
                    maps.append(_decode_map(columns, map_dim, duration, blob))
                else:
                    maps.append(WindowMap(np.frombuffer(embedding, dtype="<f2").astype(np.float32)[None, :], None,
                                          duration / 1000))
            yield maps

    @staticmethod
    def _recent_start(hours: float, now_unix_ms: int | None, since_unix_ms: int) -> int:
        now = int(time.time() * 1000) if now_unix_ms is None else int(now_unix_ms)
        return max(now - int(hours * 3_600_000), int(since_unix_ms))

    def prune_window_maps(self, before_unix_ms: int) -> int:
        """Drop the column maps of windows that started before ``before_unix_ms``; returns how many."""
        with self._lock:
            db = self._db()
            deleted = db.execute("DELETE FROM window_maps WHERE start_unix_ms < ?", (int(before_unix_ms),)).rowcount
        return int(deleted)
    def recent_levels(self, hours: float, now_unix_ms: int | None = None) -> dict[str, list[float]]:
        """RMS levels (dBFS) of every microphone's windows that started in the last ``hours``, oldest first:
        the level history a microphone's noise floor is learnt from (those `counts_for_floor` keeps, judged by
        their health reasons, which start with the check's name)."""
        now = int(time.time() * 1000) if now_unix_ms is None else int(now_unix_ms)
        levels: dict[str, list[float]] = {}
        with self._reading() as db:
            for mic_id, level, state, reasons in db.execute(
                    "SELECT mic_id, rms_dbfs, health_state, health_reasons_json FROM windows WHERE start_unix_ms >= ? "
                    "ORDER BY start_unix_ms, id", (now - int(hours * 3_600_000),)):
                failing = [r.split(":", 1)[0] for r in json.loads(reasons)] if state == HEALTH_FAULTY else []
                if counts_for_floor(float(level), failing):
                    levels.setdefault(mic_id, []).append(max(float(level), SILENCE_DBFS))
        return levels

    def latest_windows(self) -> dict[str, WindowResult]:
        """The most recent stored window of every microphone (e.g. to resume state after a restart)."""
        with self._reading() as db:
            ids = [row[0] for row in db.execute(
                "SELECT (SELECT id FROM windows w2 WHERE w2.mic_id = m.mic_id ORDER BY start_unix_ms DESC, id DESC LIMIT 1) "
                "FROM (SELECT DISTINCT mic_id FROM windows) m")]
            return {w.mic_id: w for w in self._get_windows(db, ids, False)}

    def counts(self) -> tuple[int, int]:
        """(stored windows, stored state changes)."""
        with self._lock:
            db = self._db()
            return (db.execute("SELECT count(*) FROM windows").fetchone()[0],
                    db.execute("SELECT count(*) FROM events").fetchone()[0])

    # -- activity corrections (SQL in service/store/correction_store.py) -------------------------
    def add_correction(self, correction: Correction) -> Correction:
        """Store what a window really was (replacing an earlier correction of it), durable on return."""
        if correction.embedding is None:
            raise ValueError(f"a correction keeps its window's embedding; window {correction.window_id} has none")
        self._write(lambda db: correction_store.write_correction(db, correction))
        return correction

    def remove_correction(self, window_id: int) -> bool:
        """Forget the correction of a window; False when it had none."""
        return self._write(lambda db: correction_store.delete_correction(db, window_id))

    def list_corrections(self, window_ids: Sequence[int] = (), mic_ids: Sequence[str] = (), labels: Sequence[str] = (),
                         include_embedding: bool = False) -> list[Correction]:
        """Corrections newest first, filtered by window, microphone and corrected label (empty = all)."""
        with self._reading() as db:
            return correction_store.read_corrections(db, tuple(int(i) for i in window_ids), tuple(mic_ids), tuple(labels),
                                                     include_embedding)

    def record_model_run(self, model_sha256: str, started_unix_ms: int | None = None) -> None:
        """Note that from now (or ``started_unix_ms``) on the daemon embeds windows with this model."""
        started = int(time.time() * 1000) if started_unix_ms is None else int(started_unix_ms)
        self._write(lambda db: correction_store.record_model_run(db, model_sha256, started))

    def model_at(self, time_unix_ms: int) -> str | None:
        """The model the daemon ran at ``time_unix_ms``; None before the first recorded run."""
        with self._reading() as db:
            return correction_store.model_at(db, time_unix_ms)

    # -- activity sessions (SQL in service/store/session_store.py) -------------------------------
    def add_session_events(self, events: Sequence[SessionEvent]) -> list[SessionEvent]:
        """Store session starts and ends in one transaction, durable on return; returns them with ids."""
        return self._write(lambda db: [replace(e, session=replace(e.session, session_id=session_store.write_session_event(db, e)))
                                       for e in events])

    def close_open_sessions(self) -> list[ActivitySession]:
        """End the sessions a crashed daemon left open (at their last stored window); returns them."""
        return self._write(session_store.close_open_sessions)

    def list_sessions(self, query: SessionQuery = SessionQuery(), limit: int = 100, page_token: str = "") -> SessionPage:
        """Sessions newest start first, filtered and paged; ValueError for a bad limit or token."""
        with self._reading() as db:
            return session_store.list_sessions(db, query, limit, page_token)

    def _write(self, work):
        """``work(connection)`` in one IMMEDIATE transaction under the store lock; its result."""
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                result = work(db)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return result

    # -- similarity ------------------------------------------------------------------------------
    def _cache_new_rows(self, batch: int = 20_000) -> None:
        """Load rows above the high-water mark into the indexes (cache lock held), in batches that
        take the database lock only briefly so writers are not held up by a first large load."""
        while True:
            with self._reading() as db:
                rows = db.execute(
                    "SELECT id, mic_id, embedding, embedding_dim FROM windows WHERE id > ? AND embedding IS NOT NULL "
                    "ORDER BY id LIMIT ?", (self._loaded_up_to, batch)).fetchall()
            if not rows:
                return
            for dim in {row[3] for row in rows}:
                part = [row for row in rows if row[3] == dim]
                vectors = np.frombuffer(b"".join(row[2] for row in part), dtype="<f2").reshape(len(part), dim)
                self._indexes.setdefault(dim, SimilarityIndex(dim, self.similarity)).add(
                    np.asarray([row[0] for row in part], dtype=np.int64), np.asarray([row[1] for row in part], dtype=object), vectors)
            self._loaded_up_to = rows[-1][0]
            for index in self._indexes.values():
                index.switch_if_due()  # while loading, so a first load of 10^6 rows never holds them all as float32
            if len(rows) < batch:
                return

    def nearest(
        self, embedding: np.ndarray, k: int = 10, mic_id: str | Sequence[str] | None = None, exclude_ids: Sequence[int] = ()
    ) -> NearestResult:
        """The ``k`` stored windows nearest to ``embedding`` by cosine distance.

        Exact while the query's dimension has fewer than ``similarity.exact_below`` stored rows; above,
        approximate (faiss IVF-SQ8): a true neighbour can be missed, and the ``k * similarity.rerank``
        candidates are re-scored from their stored float16 vectors so distances stay exact (with
        ``rerank = 0`` they are 8-bit approximations). Only rows of the same embedding dimension are
        compared; ``mic_id`` restricts the search to one or several microphones, ``exclude_ids`` leaves
        windows out (e.g. the query window).
        """
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        norm = float(np.linalg.norm(query))
        if not math.isfinite(norm) or norm == 0.0:
            raise ValueError("query embedding must be finite and non-zero")
        mic_ids = [mic_id] if isinstance(mic_id, str) else (list(mic_id) if mic_id else None)
        with self._cache_lock:
            self._cache_new_rows()
            index = self._indexes.get(query.size)
            if index is None:
                return NearestResult([], 0)
            rescore = not index.is_exact and self.similarity.rerank > 0
            hits, searched = index.search(query / norm, k * self.similarity.rerank if rescore else k, mic_ids,
                                          set(int(i) for i in exclude_ids))
        # A window deleted by retention since the search is skipped (get_windows leaves missing ids out).
        windows = {w.window_id: w for w in self.get_windows([i for i, _ in hits], include_embedding=rescore)}
        if rescore:
            ids = [i for i, _ in hits if i in windows]
            vectors = np.stack([windows[i].embedding for i in ids]) if ids else np.zeros((0, query.size), np.float32)
            hits = rescored(query / norm, ids, vectors, k)
            windows = {i: replace(windows[i], embedding=None) for i, _ in hits}
        return NearestResult([(windows[i], d) for i, d in hits if i in windows], searched)

    def warm_similarity(self) -> dict[int, IndexSummary]:
        """Load every stored embedding into the similarity indexes now (training the IVF index when due), so
        the first `nearest` after a start does not pay for it; returns `similarity_indexes()`."""
        with self._cache_lock:
            self._cache_new_rows()
        return self.similarity_indexes()

    def similarity_indexes(self) -> dict[int, IndexSummary]:
        """Kind ("exact" or "ivf"), rows and bytes of the in-memory similarity index of each embedding
        dimension; empty before the first `nearest`."""
        with self._cache_lock:
            return {dim: index.summary() for dim, index in self._indexes.items()}

    # -- retention -------------------------------------------------------------------------------
    def bytes_in_use(self) -> int:
        """Database pages in use (excludes free pages and the WAL file), in bytes."""
        with self._lock:
            db = self._db()
            pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
            return int(pages * db.execute("PRAGMA page_size").fetchone()[0])

    def enforce_retention(self, now_unix_ms: int | None = None) -> RetentionReport:
        """Delete what is older than ``config.max_age_days``, then the oldest windows/events until the pages in
        use fit ``config.max_size_mb``; frees the pages and truncates the WAL. Safe to call from any thread."""
        now = int(time.time() * 1000) if now_unix_ms is None else int(now_unix_ms)
        windows_deleted = events_deleted = 0
        if math.isfinite(self.config.max_age_days):  # inf = keep forever; the size limit below still holds
            cutoff = now - int(self.config.max_age_days * 86_400_000)
            w, e = self._delete_before(cutoff, inclusive=False)
            windows_deleted, events_deleted = windows_deleted + w, events_deleted + e
        for _ in range(50):  # each pass removes a proportional share; a few passes always suffice
            used = self.bytes_in_use()
            if used <= self.config.max_bytes:
                break
            with self._lock:
                db = self._db()
                total = db.execute("SELECT count(*) FROM windows").fetchone()[0]
                if total == 0:
                    cutoff_row = db.execute("SELECT max(time_unix_ms) FROM events").fetchone()
                else:
                    share = max(1, math.ceil(total * (1.0 - self.config.max_bytes / used) * 1.1), total // 100)
                    cutoff_row = db.execute("SELECT start_unix_ms FROM windows ORDER BY start_unix_ms, id LIMIT 1 OFFSET ?",
                                            (min(share, total) - 1,)).fetchone()
            if cutoff_row is None or cutoff_row[0] is None:
                break
            w, e = self._delete_before(cutoff_row[0], inclusive=True)
            windows_deleted, events_deleted = windows_deleted + w, events_deleted + e
        return RetentionReport(windows_deleted, events_deleted, self.bytes_in_use())

    def _delete_before(self, cutoff_unix_ms: int, inclusive: bool) -> tuple[int, int]:
        """Delete windows starting and changes happening before (or at) the cutoff; release pages."""
        op = "<=" if inclusive else "<"
        with self._lock:
            db = self._db()
            db.execute("BEGIN IMMEDIATE")
            try:
                ids = [row[0] for row in db.execute(f"DELETE FROM windows WHERE start_unix_ms {op} ? RETURNING id", (cutoff_unix_ms,))]
                events = db.execute(f"DELETE FROM events WHERE time_unix_ms {op} ?", (cutoff_unix_ms,)).rowcount
                db.execute(f"DELETE FROM window_maps WHERE start_unix_ms {op} ?", (cutoff_unix_ms,))
                session_store.delete_sessions_before(db, cutoff_unix_ms, inclusive)
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite already rolled back after a full disk or I/O error
                    db.execute("ROLLBACK")
                raise
            if ids or events:
                db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per step
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if ids:
            with self._cache_lock:
                removed = np.asarray(ids, dtype=np.int64)
                for index in self._indexes.values():
                    index.remove(removed)
        return len(ids), int(events)
