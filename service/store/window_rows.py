"""How windows, state changes and custom-sound maps become rows of the event store and rows become records again:
float16 embedding blobs, int8 maps (rows x dim: log-Mel patch frames, or an older store's encoder column map), the validated column values, the one batch insert and the reads
by id. Plain functions over an open connection; `EventStore` calls them under its lock and in its
transactions."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from service.records import StateChange, WindowMap, WindowResult
from service.daemon_vocabulary import EVENT_KINDS, HEALTH_STATES, SILENCE_DBFS

WINDOW_COLUMNS = ("id, mic_id, start_unix_ms, end_unix_ms, label, probabilities_json, health_state, "
                  "health_reasons_json, health_scores_json, rms_dbfs")


def encode_embedding(embedding: np.ndarray | None) -> tuple[bytes | None, int | None]:
    """float16 little-endian blob and its dimension; rejects non-1-D or non-finite vectors."""
    if embedding is None:
        return None, None
    vector = np.asarray(embedding, dtype=np.float32)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"embedding must be a non-empty 1-D vector, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError("embedding contains NaN/Inf")
    return vector.astype("<f2").tobytes(), int(vector.size)


def encode_map(window_map: WindowMap) -> tuple[int, int, bytes]:
    """(rows, dim, blob) of a window's map: int8 per row (frame or column) with a float16 scale, and float16 levels."""
    columns = np.asarray(window_map.columns, dtype=np.float32)
    scales = np.maximum(np.abs(columns).max(axis=1), 1e-12) / 127.0
    quantised = np.clip(np.round(columns / scales[:, None]), -127, 127).astype(np.int8)
    levels = window_map.levels if window_map.levels is not None else np.full(len(columns), np.nan)
    return (len(columns), columns.shape[1], scales.astype("<f2").tobytes() + quantised.tobytes()
            + np.asarray(levels, dtype="<f2").tobytes())


def decode_map(columns: int, dim: int, duration_ms: int, blob: bytes) -> WindowMap:
    """The column map `encode_map` stored (levels None when they were not kept)."""
    scales = np.frombuffer(blob, dtype="<f2", count=columns).astype(np.float32)
    quantised = np.frombuffer(blob, dtype=np.int8, count=columns * dim, offset=2 * columns).reshape(columns, dim)
    levels = np.frombuffer(blob, dtype="<f2", count=columns, offset=2 * columns + columns * dim).astype(np.float32)
    return WindowMap(quantised.astype(np.float32) * scales[:, None], None if np.isnan(levels).any() else levels,
                     duration_ms / 1000)


def decode_embedding(blob: bytes | None) -> np.ndarray | None:
    """float32 vector from a stored float16 blob."""
    return None if blob is None else np.frombuffer(blob, dtype="<f2").astype(np.float32)


def window_row(window: WindowResult) -> tuple:
    """Validated column values of one window; ValueError for an unknown health state, an end before the
    start or a bad embedding."""
    if window.health_state not in HEALTH_STATES:
        raise ValueError(f"WindowResult.health_state must be one of {list(HEALTH_STATES)}, got {window.health_state!r}")
    if window.end_unix_ms < window.start_unix_ms:
        raise ValueError(f"WindowResult for {window.mic_id}: end_unix_ms {window.end_unix_ms} before start {window.start_unix_ms}")
    blob, dim = encode_embedding(window.embedding)
    # SQLite turns NaN into NULL; a level of non-finite samples is stored as silence (the health
    # reasons say non_finite).
    # one silence level everywhere: nothing is stored below SILENCE_DBFS, NaN reads as silence
    rms = max(float(window.rms_dbfs), SILENCE_DBFS) if not math.isnan(window.rms_dbfs) else SILENCE_DBFS
    return (window.mic_id, int(window.start_unix_ms), int(window.end_unix_ms), window.label,
            json.dumps({k: float(v) for k, v in window.probabilities.items()}), window.health_state,
            json.dumps(list(window.health_reasons)), json.dumps({k: float(v) for k, v in window.health_scores.items()}),
            rms, blob, dim)


def check_changes(changes: Sequence[StateChange]) -> None:
    """ValueError for a state change of a kind the store does not know."""
    for change in changes:
        if change.kind not in EVENT_KINDS:
            raise ValueError(f"StateChange.kind must be one of {list(EVENT_KINDS)}, got {change.kind!r}")


def insert_results(db: sqlite3.Connection, windows: Sequence[WindowResult], rows: Sequence[tuple],
                   changes: Sequence[StateChange]) -> tuple[list[WindowResult], list[StateChange]]:
    """Insert windows (with their `window_row` values and column maps) and state changes in the caller's
    transaction; copies with ids. A change without ``window_id`` is linked to this batch's window of the same
    mic starting at its time."""
    stored_windows = []
    for window, row in zip(windows, rows):
        cursor = db.execute(
            "INSERT INTO windows (mic_id, start_unix_ms, end_unix_ms, label, probabilities_json, "
            "health_state, health_reasons_json, health_scores_json, rms_dbfs, embedding, embedding_dim) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
        stored_windows.append(replace(window, window_id=int(cursor.lastrowid)))
        if window.map is not None and len(window.map.columns) > 1:
            columns, dim, blob = encode_map(window.map)
            db.execute("INSERT INTO window_maps (window_id, start_unix_ms, columns, dim, duration_ms, map) "
                       "VALUES (?, ?, ?, ?, ?, ?)", (int(cursor.lastrowid), int(window.start_unix_ms), columns, dim,
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
    return stored_windows, stored_changes


def window_from_row(row: tuple, embedding: bytes | None = None) -> WindowResult:
    """The record of a `WINDOW_COLUMNS` row (and its embedding blob, if read)."""
    return WindowResult(
        mic_id=row[1], start_unix_ms=row[2], end_unix_ms=row[3], label=row[4],
        probabilities=json.loads(row[5]), health_state=row[6], health_reasons=tuple(json.loads(row[7])),
        health_scores=json.loads(row[8]), rms_dbfs=max(row[9], SILENCE_DBFS), embedding=decode_embedding(embedding),
        window_id=row[0],
    )


def read_windows(db: sqlite3.Connection, window_ids: Sequence[int], include_embedding: bool) -> list[WindowResult]:
    """Stored windows by id, in the order asked; missing ids are skipped."""
    columns = WINDOW_COLUMNS + (", embedding" if include_embedding else "")
    rows = []
    for begin in range(0, len(window_ids), 500):
        part = [int(i) for i in window_ids[begin:begin + 500]]
        rows += db.execute(f"SELECT {columns} FROM windows WHERE id IN ({','.join('?' * len(part))})", part).fetchall()
    by_id = {row[0]: window_from_row(row, row[10] if include_embedding else None) for row in rows}
    return [by_id[i] for i in window_ids if i in by_id]


def read_changes(db: sqlite3.Connection, event_ids: Sequence[int]) -> dict[int, StateChange]:
    """Stored state changes by id (``window_id`` None once retention deleted the window)."""
    if not event_ids:
        return {}
    rows = db.execute(
        "SELECT e.id, e.kind, e.mic_id, e.time_unix_ms, e.previous, e.current, w.id, e.reasons_json, e.score, "
        "e.sound_start_ms, e.sound_end_ms "
        "FROM events e LEFT JOIN windows w ON w.id = e.window_id "
        f"WHERE e.id IN ({','.join('?' * len(event_ids))})", list(event_ids)).fetchall()
    return {row[0]: StateChange(kind=row[1], mic_id=row[2], time_unix_ms=row[3], previous=row[4], current=row[5],
                                window_id=row[6], reasons=tuple(json.loads(row[7])), event_id=row[0], score=row[8],
                                sound_start_ms=row[9], sound_end_ms=row[10])
            for row in rows}


def embeddings_after(db: sqlite3.Connection, window_id: int, limit: int) -> list[tuple[int, str, bytes, int]]:
    """(id, mic id, float16 embedding blob, dimension) of up to ``limit`` windows above ``window_id``, by id."""
    return db.execute("SELECT id, mic_id, embedding, embedding_dim FROM windows WHERE id > ? AND embedding IS NOT NULL "
                      "ORDER BY id LIMIT ?", (int(window_id), int(limit))).fetchall()
