"""The SQL of activity sessions in the event store (table ``sessions``, schema step 3 of
service/store/store_schema.py). Plain functions over an open connection; `EventStore` calls them under its lock
and in its transactions, so sessions share the store's durability (WAL, synchronous=FULL)."""

from __future__ import annotations

import base64
import binascii
import sqlite3
from dataclasses import dataclass, replace

from service.analysis.sessions import ActivitySession, SessionEvent

#: Schema step creating the table (appended to store_schema.MIGRATIONS; never edit it once released).
SESSIONS_MIGRATION = """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mic_id TEXT NOT NULL,
        activity TEXT NOT NULL,
        start_unix_ms INTEGER NOT NULL,
        end_unix_ms INTEGER,  -- NULL while the session is open
        windows INTEGER NOT NULL,
        mean_probability REAL NOT NULL
    );
    CREATE INDEX sessions_mic_start ON sessions (mic_id, start_unix_ms);
    CREATE INDEX sessions_start ON sessions (start_unix_ms);
"""

#: The sessions still open (a handful at most), so the start's `close_open_sessions` reads them without a scan
#: of every session ever stored (236,297 in a year of four microphones, bench/year_store.py).
OPEN_SESSIONS_MIGRATION = """
    CREATE INDEX sessions_open ON sessions (start_unix_ms) WHERE end_unix_ms IS NULL;
"""

_COLUMNS = "id, mic_id, activity, start_unix_ms, end_unix_ms, windows, mean_probability"


@dataclass(frozen=True)
class SessionQuery:
    """Filters for `list_sessions`; every set filter must match, values inside one are alternatives."""

    mic_ids: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    since_unix_ms: int | None = None  # sessions still going at or after this time (end >= since, or open)
    until_unix_ms: int | None = None  # sessions that started before this time (exclusive)
    open_only: bool = False  # only sessions that have not ended

    def __post_init__(self) -> None:
        if self.since_unix_ms is not None and self.until_unix_ms is not None and self.until_unix_ms <= self.since_unix_ms:
            raise ValueError(f"until_unix_ms ({self.until_unix_ms}) must be after since_unix_ms ({self.since_unix_ms})")


@dataclass(frozen=True)
class SessionPage:
    """One page of sessions, newest start first, and the token of the next (older) page ("" when none)."""

    sessions: list[ActivitySession]
    next_page_token: str


def _session_from_row(row: tuple) -> ActivitySession:
    end = row[4]
    return ActivitySession(mic_id=row[1], activity=row[2], start_unix_ms=row[3], end_unix_ms=end, windows=row[5],
                           mean_probability=row[6], last_seen_unix_ms=end or 0, session_id=row[0])


def write_session_event(db: sqlite3.Connection, event: SessionEvent) -> int:
    """Insert a started session, or close an ended one (inserting it if its start was never stored);
    returns the session id."""
    s = event.session
    if event.kind == "session_ended" and s.session_id is not None:
        db.execute("UPDATE sessions SET end_unix_ms = ?, windows = ?, mean_probability = ? WHERE id = ?",
                   (s.end_unix_ms, s.windows, s.mean_probability, s.session_id))
        return s.session_id
    cursor = db.execute(
        "INSERT INTO sessions (mic_id, activity, start_unix_ms, end_unix_ms, windows, mean_probability) "
        "VALUES (?, ?, ?, ?, ?, ?)", (s.mic_id, s.activity, int(s.start_unix_ms), s.end_unix_ms, s.windows,
                                      float(s.mean_probability)))
    return int(cursor.lastrowid)


def _progress(db: sqlite3.Connection, mic_id: str, activity: str, start_unix_ms: int) -> tuple[int, int | None, float | None]:
    """(windows, end of the last one, mean probability of the activity) of the stored windows of an open
    session so far: its rows hold the figures of its start until it ends."""
    count, last_end, mean = db.execute(
        "SELECT count(*), max(end_unix_ms), avg(json_extract(probabilities_json, ?)) FROM windows "
        "WHERE mic_id = ? AND label = ? AND start_unix_ms >= ?",
        (f'$."{activity}"', mic_id, activity, int(start_unix_ms))).fetchone()
    return int(count), (int(last_end) if last_end is not None else None), (round(float(mean), 4) if mean is not None else None)


def _with_progress(db: sqlite3.Connection, session: ActivitySession) -> ActivitySession:
    """An open session with its windows, last window end and mean probability so far."""
    if not session.is_open:
        return session
    count, last_end, mean = _progress(db, session.mic_id, session.activity, session.start_unix_ms)
    return replace(session, windows=max(count, session.windows), last_seen_unix_ms=last_end or session.last_seen_unix_ms,
                   mean_probability=mean if mean is not None else session.mean_probability)


def close_open_sessions(db: sqlite3.Connection) -> list[ActivitySession]:
    """End sessions left open by a daemon that did not stop cleanly, at the end of the last stored window of
    their activity (their start if none); returns them closed."""
    closed = []
    for row in db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE end_unix_ms IS NULL").fetchall():
        session = _with_progress(db, _session_from_row(row))
        end = session.last_seen_unix_ms or session.start_unix_ms
        db.execute("UPDATE sessions SET end_unix_ms = ?, windows = ?, mean_probability = ? WHERE id = ?",
                   (end, session.windows, session.mean_probability, session.session_id))
        closed.append(replace(session, end_unix_ms=end, last_seen_unix_ms=end))
    return closed


def _encode_token(start: int, ident: int) -> str:
    return base64.urlsafe_b64encode(f"s{start}.{ident}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError
        start, ident = (int(part) for part in raw[1:].split("."))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError(f"invalid page_token {token[:40]!r}: pass next_page_token from the previous page") from None
    return start, ident


def list_sessions(db: sqlite3.Connection, query: SessionQuery, limit: int, page_token: str = "") -> SessionPage:
    """Sessions matching ``query``, newest start first, ``limit`` per page; ValueError for a bad limit/token."""
    if not 1 <= limit <= 10000:
        raise ValueError(f"limit must be between 1 and 10000, got {limit}")
    where, args = [], []
    if query.mic_ids:
        where.append(f"mic_id IN ({','.join('?' * len(query.mic_ids))})")
        args += list(query.mic_ids)
    if query.activities:
        where.append(f"activity IN ({','.join('?' * len(query.activities))})")
        args += list(query.activities)
    if query.since_unix_ms is not None:
        where.append("(end_unix_ms IS NULL OR end_unix_ms >= ?)")
        args.append(int(query.since_unix_ms))
    if query.until_unix_ms is not None:
        where.append("start_unix_ms < ?")
        args.append(int(query.until_unix_ms))
    if query.open_only:
        where.append("end_unix_ms IS NULL")
    if page_token:
        where.append("(start_unix_ms, id) < (?, ?)")
        args += list(_decode_token(page_token))
    rows = db.execute(f"SELECT {_COLUMNS} FROM sessions WHERE {' AND '.join(where) or '1'} "
                      "ORDER BY start_unix_ms DESC, id DESC LIMIT ?", args + [limit + 1]).fetchall()
    sessions = [_with_progress(db, _session_from_row(row)) for row in rows[:limit]]
    token = _encode_token(rows[limit - 1][3], rows[limit - 1][0]) if len(rows) > limit else ""
    return SessionPage(sessions, token)


def delete_sessions_before(db: sqlite3.Connection, cutoff_unix_ms: int, inclusive: bool) -> int:
    """Delete ended sessions that ended before (or at) the cutoff (retention); returns how many."""
    op = "<=" if inclusive else "<"
    # a session ends after it starts: the start bound adds nothing but lets SQLite use sessions_start
    return db.execute(f"DELETE FROM sessions WHERE start_unix_ms {op} ? AND end_unix_ms IS NOT NULL "
                      f"AND end_unix_ms {op} ?", (cutoff_unix_ms, cutoff_unix_ms)).rowcount
