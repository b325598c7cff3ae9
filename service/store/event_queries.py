"""ListEvents in the event store: the filter (`EventQuery`, one list of conditions for SQL and live items
alike), its pages newest first with opaque keyset page tokens, and the per-bucket label counts of the
timeline. Plain functions over an open read connection; `EventStore` calls them inside a read transaction."""

from __future__ import annotations

import base64
import binascii
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

from service.analysis.sessions import SessionEvent
from service.records import StateChange, WindowResult
from service.store.window_rows import read_changes, read_windows
from service.daemon_vocabulary import (EVENT_KINDS, HEALTH_CHANGED, HEALTH_STATES, LABELLED_KINDS, QUERY_KINDS,
                                SESSION_EVENT_KINDS, WINDOW)


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
        also the attribute names of WindowResult / StateChange, so SQL (`query_parts`) and live items
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
    (`label_buckets`): how many, the first of them (lowest id) and the time they span."""

    mic_id: str
    bucket: int  # (start_unix_ms - origin) // bucket_ms
    label: str | None
    windows: int
    first_window_id: int
    start_unix_ms: int  # earliest start of these windows
    end_unix_ms: int  # latest end of these windows



def encode_page_token(key: tuple[int, int, int]) -> str:
    """Opaque token for the keyset (time, rank, id) of the last item of a page."""
    return base64.urlsafe_b64encode(("%d.%d.%d" % key).encode()).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[int, int, int]:
    """Inverse of `encode_page_token`; ValueError for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        t, rank, ident = (int(part) for part in raw.split("."))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"invalid page_token {token[:40]!r}: pass next_page_token from the previous page") from None
    if rank not in (0, 1):
        raise ValueError(f"invalid page_token {token[:40]!r}: pass next_page_token from the previous page")
    return t, rank, ident



def query_parts(query: EventQuery) -> list[tuple[int, str, str, list[str], list[Any]]]:
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


def list_events(db: sqlite3.Connection, query: EventQuery, limit: int, page_token: str) -> EventPage:
    """Windows and state changes matching ``query``, newest first (a window before its changes), one page of
    ``limit`` after ``page_token``; ValueError for a bad limit or page token."""
    if not 1 <= limit <= 10000:
        raise ValueError(f"limit must be between 1 and 10000, got {limit}")
    after = decode_page_token(page_token) if page_token else None
    parts, params = [], []
    for rank, table, time_column, where, args in query_parts(query):
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
    keys = db.execute(sql, params + [limit + 1]).fetchall()
    more = len(keys) > limit
    keys = keys[:limit]
    windows = {w.window_id: w for w in read_windows(db, [k[1] for k in keys if k[0] == 1], False)}
    changes = read_changes(db, [k[1] for k in keys if k[0] == 0])
    items = [windows[k[1]] if k[0] == 1 else changes[k[1]] for k in keys]
    token = encode_page_token((keys[-1][2], keys[-1][0], keys[-1][1])) if more else ""
    return EventPage(items, token)


def label_buckets(db: sqlite3.Connection, query: EventQuery, origin_unix_ms: int, bucket_ms: int) -> list[LabelBucket]:
    """The windows matching ``query`` (microphones, time) counted per microphone, time bucket of
    ``bucket_ms`` from ``origin_unix_ms`` (by window start) and label, in one indexed pass that reads no
    embedding: a summary of any span whose size grows with the buckets, not with the windows."""
    if bucket_ms < 1:
        raise ValueError(f"bucket_ms must be at least 1, got {bucket_ms}")
    parts = query_parts(replace(query, kinds=("window",)))
    if not parts:
        return []
    _, _, _, where, args = parts[0]
    # Every microphone: walk the rows in time order, which is the table's own order. Through
    # windows_mic_time SQLite reads each table page once per microphone (0.55 s instead of 0.28 s of CPU
    # for 200k windows, bench/year_store.py).
    source = "windows" if query.mic_ids else "windows INDEXED BY windows_time"
    sql = ("SELECT mic_id, (start_unix_ms - ?) / ? AS bucket, label, COUNT(*), MIN(id), MIN(start_unix_ms), "
           f"MAX(end_unix_ms) FROM {source} WHERE {' AND '.join(where) or '1'} GROUP BY mic_id, bucket, label")
    rows = db.execute(sql, [int(origin_unix_ms), int(bucket_ms), *args]).fetchall()
    return [LabelBucket(*row) for row in rows]
