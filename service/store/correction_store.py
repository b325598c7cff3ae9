"""The SQL of activity corrections in the event store (tables ``corrections`` and ``model_runs``, a schema
step of service/store/store_schema.py). Plain functions over an open connection; `EventStore` calls them under its
lock and in its transactions, so corrections share the store's durability (WAL, synchronous=FULL).

A correction keeps a copy of its window's embedding and times, so it outlives the window when retention
deletes it: corrections are what `roomtone train-head --corrections` learns from, and they are few.
``model_runs`` records which model the daemon ran from when, so a correction knows which encoder made the
embedding it keeps (train-head refuses embeddings of another encoder).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Schema step creating the tables (appended to store_schema.MIGRATIONS; never edit it once released).
CORRECTIONS_MIGRATION = """
    CREATE TABLE corrections (
        window_id INTEGER PRIMARY KEY,  -- windows.id, kept when retention deletes the window
        mic_id TEXT NOT NULL,
        start_unix_ms INTEGER NOT NULL,
        end_unix_ms INTEGER NOT NULL,
        label TEXT NOT NULL,  -- what the window really was: one of the head's classes
        predicted TEXT,  -- the window's label when it was corrected (NULL: it had none)
        created_unix_ms INTEGER NOT NULL,
        model_sha256 TEXT,  -- the model file whose encoder embedded the window (NULL: not known)
        embedding BLOB NOT NULL,  -- the window's, little-endian float16
        embedding_dim INTEGER NOT NULL
    );
    CREATE INDEX corrections_created ON corrections (created_unix_ms);
    CREATE TABLE model_runs (
        started_unix_ms INTEGER NOT NULL,
        model_sha256 TEXT NOT NULL
    );
    CREATE INDEX model_runs_started ON model_runs (started_unix_ms);
"""

_COLUMNS = "window_id, mic_id, start_unix_ms, end_unix_ms, label, predicted, created_unix_ms, model_sha256"


@dataclass(frozen=True)
class Correction:
    """What a user says one stored window really was."""

    window_id: int
    mic_id: str
    start_unix_ms: int
    end_unix_ms: int
    label: str  # one of the head's classes
    predicted: str | None  # the window's label when it was corrected
    created_unix_ms: int
    model_sha256: str | None  # model file whose encoder embedded the window; None = not known
    embedding: np.ndarray | None = field(default=None, compare=False)  # float32 [dim], when asked for
    window_kept: bool = True  # False once retention deleted the window itself


def _from_row(row: tuple, embedding: bytes | None = None, kept: bool = True) -> Correction:
    vector = None if embedding is None else np.frombuffer(embedding, dtype="<f2").astype(np.float32)
    return Correction(int(row[0]), row[1], int(row[2]), int(row[3]), row[4], row[5], int(row[6]), row[7], vector, kept)


def write_correction(db: sqlite3.Connection, correction: Correction) -> None:
    """Insert ``correction`` (with its embedding), replacing an earlier one of the same window."""
    vector = np.asarray(correction.embedding, dtype=np.float32).reshape(-1)
    db.execute(f"INSERT OR REPLACE INTO corrections ({_COLUMNS}, embedding, embedding_dim) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
               (correction.window_id, correction.mic_id, correction.start_unix_ms, correction.end_unix_ms,
                correction.label, correction.predicted, correction.created_unix_ms, correction.model_sha256,
                vector.astype("<f2").tobytes(), int(vector.size)))


def delete_correction(db: sqlite3.Connection, window_id: int) -> bool:
    """Forget the correction of a window; False when it had none."""
    return db.execute("DELETE FROM corrections WHERE window_id = ?", (int(window_id),)).rowcount > 0


def read_corrections(db: sqlite3.Connection, window_ids: tuple[int, ...] = (), mic_ids: tuple[str, ...] = (),
                     labels: tuple[str, ...] = (), include_embedding: bool = False) -> list[Correction]:
    """Corrections newest first, filtered by window, microphone and corrected label (empty = all)."""
    where, args = [], []
    for column, values in (("c.window_id", window_ids), ("c.mic_id", mic_ids), ("c.label", labels)):
        if values:
            where.append(f"{column} IN ({','.join('?' * len(values))})")
            args += list(values)
    columns = ", ".join(f"c.{c.strip()}" for c in _COLUMNS.split(","))
    rows = db.execute(f"SELECT {columns}, {'c.embedding' if include_embedding else 'NULL'}, w.id IS NOT NULL "
                      f"FROM corrections c LEFT JOIN windows w ON w.id = c.window_id "
                      f"WHERE {' AND '.join(where) or '1'} ORDER BY c.created_unix_ms DESC, c.window_id DESC", args)
    return [_from_row(row, row[8], bool(row[9])) for row in rows]


def record_model_run(db: sqlite3.Connection, model_sha256: str, started_unix_ms: int) -> None:
    """Note that the daemon runs the model ``model_sha256`` from ``started_unix_ms`` on."""
    db.execute("INSERT INTO model_runs (started_unix_ms, model_sha256) VALUES (?, ?)", (int(started_unix_ms), model_sha256))


def model_at(db: sqlite3.Connection, time_unix_ms: int) -> str | None:
    """The model the daemon ran at ``time_unix_ms`` (the last run started by then); None before any run."""
    row = db.execute("SELECT model_sha256 FROM model_runs WHERE started_unix_ms <= ? "
                     "ORDER BY started_unix_ms DESC, rowid DESC LIMIT 1", (int(time_unix_ms),)).fetchone()
    return None if row is None else row[0]


def corrections_in_file(path: str | Path) -> list[Correction]:
    """Every correction (with embeddings) of the store file at ``path``, read-only and without upgrading it,
    so `roomtone train-head` can read a running daemon's store; ValueError naming the file when it has none."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such store file (the daemon's store is <data_dir>/roomtone.db)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise ValueError(f"{path}: cannot open the store ({exc})") from None
    try:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "windows" not in tables:
            raise ValueError(f"{path}: not a roomtone store (no windows table)")
        if "corrections" not in tables:
            return []  # written by a roomtone from before corrections: none made
        return read_corrections(db, include_embedding=True)
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"{path}: cannot read the store ({exc})") from None
    finally:
        db.close()
