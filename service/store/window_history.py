"""Recent windows of the event store as history: a home's own background for custom sounds (embeddings,
column maps and the hours they cover since a time) and the level history a microphone's noise floor is learnt
from; column maps are pruned here too. Plain functions over an open connection; `EventStore` calls them
under its lock."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Set
from dataclasses import replace

import numpy as np

from service.analysis.level_floor import above_near_silence, counts_for_floor
from service.records import WindowMap
from service.store.window_rows import decode_map
from service.daemon_vocabulary import HEALTH_FAULTY, SILENCE_DBFS


def recent_start(hours: float, now_unix_ms: int | None = None, since_unix_ms: int = 0) -> int:
    """The start of the last ``hours`` before ``now_unix_ms`` (default: now), not before ``since_unix_ms``."""
    now = int(time.time() * 1000) if now_unix_ms is None else int(now_unix_ms)
    return max(now - int(hours * 3_600_000), int(since_unix_ms))


def recent_embeddings(db: sqlite3.Connection, dim: int, start_unix_ms: int,
                      excluded: Set[int]) -> tuple[np.ndarray, float]:
    """Embeddings ``[n, dim]`` of the windows that started at or after ``start_unix_ms`` (but the excluded ids)
    and the hours of audio they cover (sum of window lengths, all microphones)."""
    rows = db.execute(
        # `+embedding_dim`: without statistics SQLite would pick the dimension index (equality) and read
        # every stored window of that dimension (a year: 12.6 M); the time index reads the last hours
        "SELECT id, end_unix_ms - start_unix_ms, embedding FROM windows WHERE +embedding_dim = ? "
        "AND embedding IS NOT NULL AND start_unix_ms >= ?", (int(dim), int(start_unix_ms))).fetchall()
    rows = [row for row in rows if row[0] not in excluded]
    if not rows:
        return np.zeros((0, dim), dtype=np.float32), 0.0
    vectors = np.frombuffer(b"".join(row[2] for row in rows), dtype="<f2").reshape(len(rows), dim)
    return vectors.astype(np.float32), sum(row[1] for row in rows) / 3_600_000


def recent_window_hours(db: sqlite3.Connection, dim: int, start_unix_ms: int, excluded: Set[int]) -> float:
    """Hours of audio `window_maps_after` covers from ``start_unix_ms`` (sum of window lengths, all microphones)."""
    rows = db.execute("SELECT id, end_unix_ms - start_unix_ms FROM windows WHERE embedding_dim = ? "
                      "AND embedding IS NOT NULL AND start_unix_ms >= ?", (int(dim), int(start_unix_ms))).fetchall()
    return sum(d for i, d in rows if i not in excluded) / 3_600_000


def window_maps_after(db: sqlite3.Connection, dim: int, start_unix_ms: int, after_id: int, chunk: int,
                      excluded: Set[int]) -> tuple[int, list[WindowMap]] | None:
    """The next ``chunk`` windows above ``after_id`` that started at or after ``start_unix_ms``, as (last id
    read, maps): each window's column map where still kept (of whatever size it was stored with), else its
    pooled embedding (one row), each with its pooled embedding; None at the end."""
    rows = db.execute(
        "SELECT w.id, w.end_unix_ms - w.start_unix_ms, w.embedding, m.columns, m.dim, m.map FROM windows w "
        "LEFT JOIN window_maps m ON m.window_id = w.id "
        "WHERE w.embedding_dim = ? AND w.embedding IS NOT NULL AND w.start_unix_ms >= ? AND w.id > ? "
        "ORDER BY w.id LIMIT ?", (int(dim), int(start_unix_ms), int(after_id), int(chunk))).fetchall()
    if not rows:
        return None
    maps = []
    for window_id, duration, embedding, columns, map_dim, blob in rows:
        if window_id in excluded:
            continue
        pooled = np.frombuffer(embedding, dtype="<f2").astype(np.float32)
        if blob is not None:
            maps.append(replace(decode_map(columns, map_dim, duration, blob), embedding=pooled))
        else:
            maps.append(WindowMap(pooled[None, :], None, duration / 1000, pooled))
    return rows[-1][0], maps


def window_map(db: sqlite3.Connection, window_id: int) -> WindowMap | None:
    """A stored window's column map, or None when it was not kept or is pruned."""
    row = db.execute("SELECT columns, dim, duration_ms, map FROM window_maps WHERE window_id = ?",
                     (int(window_id),)).fetchone()
    return decode_map(*row) if row else None


def prune_window_maps(db: sqlite3.Connection, before_unix_ms: int) -> int:
    """Drop the column maps of windows that started before ``before_unix_ms``; returns how many."""
    return int(db.execute("DELETE FROM window_maps WHERE start_unix_ms < ?", (int(before_unix_ms),)).rowcount)


def recent_levels(db: sqlite3.Connection, start_unix_ms: int) -> dict[str, list[float]]:
    """RMS levels (dBFS) of every microphone's windows that started at or after ``start_unix_ms``, oldest
    first, those `counts_for_floor` keeps (judged by their health reasons, which start with the check's name).

    The daemon reads a day of every microphone's windows at start (34,560 for four): the reasons come only
    for faulty windows, the rest is judged as arrays (one by one it took 0.26-0.33 s of the start at load 4.5)."""
    rows = db.execute(
        "SELECT mic_id, rms_dbfs, CASE WHEN health_state = ? THEN health_reasons_json END FROM windows "
        "WHERE start_unix_ms >= ? ORDER BY start_unix_ms, id", (HEALTH_FAULTY, int(start_unix_ms))).fetchall()
    if not rows:
        return {}
    mic_ids, levels, reasons = zip(*rows)
    levels = np.asarray(levels, dtype=np.float64)
    usable = above_near_silence(levels)
    for i in (i for i, r in enumerate(reasons) if r is not None):  # faulty: judged by what failed
        usable[i] = counts_for_floor(float(levels[i]), [r.split(":", 1)[0] for r in json.loads(reasons[i])])
    codes: dict[str, int] = {}  # mic id -> code, in order of appearance (np.unique's sort of the ids cost more)
    mic_of = np.fromiter((codes.setdefault(m, len(codes)) for m in mic_ids), dtype=np.int64, count=len(mic_ids))
    levels = np.maximum(levels, SILENCE_DBFS)
    per_mic = {mic_id: levels[usable & (mic_of == code)].tolist() for mic_id, code in codes.items()}
    return {mic_id: values for mic_id, values in per_mic.items() if values}
