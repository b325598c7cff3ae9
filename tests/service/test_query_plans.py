"""The store's queries a user waits for read through indexes, never a whole table: at a year of windows
(12.6 M rows, bench/year_store.py) a scan of the windows table takes minutes. Each test runs the store's
own call with SQLite tracing on, then asks EXPLAIN QUERY PLAN about every statement it issued."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pytest

from service.config import StoreConfig
from service.store.event_store import EventQuery, EventStore
from service.records import StateChange, WindowResult
from service.store.session_store import SessionQuery
from service.analysis.sessions import ActivitySession, SessionEvent

DAY_MS = 86_400_000


@pytest.fixture()
def store(tmp_path):
    """Two microphones, 2,000 windows each over 20 days, a change every 50 windows, a session every 100."""
    rng = np.random.default_rng(0)
    with EventStore(tmp_path / "roomtone.db", StoreConfig(max_age_days=10.0)) as s:
        for mic in ("hall", "kitchen"):
            windows = [WindowResult(mic, i * 864_000, i * 864_000 + 10_000, "speech", {"speech": 1.0}, "ok", (), {},
                                    -30.0, embedding=rng.standard_normal(16).astype(np.float32)) for i in range(2000)]
            changes = [StateChange("activity_changed", mic, w.start_unix_ms, "quiet", "speech") for w in windows[::50]]
            s.add_results(windows, changes)
            s.add_session_events([SessionEvent("session_ended", ActivitySession(
                mic, "speech", w.start_unix_ms, w.end_unix_ms, 1, 0.9, w.end_unix_ms), w.end_unix_ms)
                for w in windows[::100]])
        yield s


def plans_of(store: EventStore, call) -> list[tuple[str, list[str]]]:
    """(SQL, its query plan lines) of every SELECT/DELETE statement ``call()`` ran on the store's connections."""
    statements: list[str] = []
    call()  # opens this thread's reader connection
    for connection in [store._connection, *store._readers]:  # noqa: SLF001 - the test looks at the store's SQL
        connection.set_trace_callback(statements.append)
    try:
        call()
    finally:
        for connection in [store._connection, *store._readers]:  # noqa: SLF001
            connection.set_trace_callback(None)
    explain = sqlite3.connect(store.path)
    try:
        return [(sql, [row[3] for row in explain.execute("EXPLAIN QUERY PLAN " + sql)]) for sql in statements
                if sql.lstrip().upper().startswith(("SELECT", "DELETE"))]
    finally:
        explain.close()


def full_scans(plans: list[tuple[str, list[str]]]) -> list[str]:
    """Plan lines that read a whole table of the store (a SCAN without an index)."""
    return [f"{line}  <-  {sql}" for sql, lines in plans for line in lines
            if line.startswith("SCAN ") and " USING " not in line and line.split()[1] in ("windows", "events", "sessions", "w", "e")]


@pytest.mark.parametrize("query", [
    EventQuery(), EventQuery(mic_ids=("hall",)), EventQuery(kinds=("window",), since_unix_ms=15 * DAY_MS),
    EventQuery(mic_ids=("kitchen",), since_unix_ms=13 * DAY_MS), EventQuery(kinds=("health_changed",)),
], ids=["all", "one_mic", "windows_since", "one_mic_since_7d", "health_changes"])
def test_list_events_pages_read_through_indexes(store, query):
    first = store.list_events(query, 100)
    plans = plans_of(store, lambda: store.list_events(query, 100, first.next_page_token))
    assert plans and not full_scans(plans)


def test_list_sessions_reads_through_an_index(store):
    plans = plans_of(store, lambda: store.list_sessions(SessionQuery(mic_ids=("hall",), since_unix_ms=15 * DAY_MS), 10))
    assert plans and not full_scans(plans)


def test_a_retention_pass_finds_what_to_delete_through_indexes(store):
    plans = plans_of(store, lambda: store.enforce_retention(now_unix_ms=20 * DAY_MS))
    assert any(sql.startswith("DELETE FROM windows") for sql, _ in plans)
    assert not full_scans(plans)


def test_find_similar_loads_new_rows_by_id_and_fetches_its_neighbours_by_id(store):
    query = store.get_window(1).embedding
    plans = plans_of(store, lambda: store.nearest(query, k=10))
    assert plans and not full_scans(plans)


def test_the_recent_embeddings_custom_sounds_calibrate_on_are_read_through_the_time_index(store):
    plans = plans_of(store, lambda: store.recent_embeddings(16, hours=24.0, now_unix_ms=20 * DAY_MS))
    assert plans and not full_scans(plans)
    assert all("windows_time" in " ".join(lines) for sql, lines in plans if "FROM windows" in sql)


@pytest.mark.parametrize("mics", [(), ("kitchen",)], ids=["all_mics", "one_mic"])
def test_the_timeline_summary_of_a_week_reads_through_an_index(store, mics):
    query = EventQuery(mic_ids=mics, since_unix_ms=13 * DAY_MS, until_unix_ms=20 * DAY_MS)
    plans = plans_of(store, lambda: store.label_buckets(query, 13 * DAY_MS, 7 * DAY_MS // 1000))
    assert plans and not full_scans(plans)


def test_the_daemons_start_reads_no_whole_table(small_model, homesounds, tmp_path, monkeypatch):
    """Every statement `Daemon.start` runs before it serves (on its own thread; the integrity check and the
    similarity warm-up read in the background) goes through an index: at a year of windows a table scan on
    this path is minutes before the first answer."""
    from service.daemon import Daemon
    from tests.service.daemon_support import file_daemon_config

    config = file_daemon_config(small_model, tmp_path / "data", "sink",
                                homesounds / "audio" / "water" / "water_A1_000.flac")
    with EventStore(config.store_path) as earlier:  # a store with history, and a session a crash left open
        earlier.add_results([WindowResult("sink", i * 10_000, i * 10_000 + 10_000, "speech", {"speech": 0.9}, "ok", (),
                                          {}, -50.0) for i in range(500)])
        earlier.add_session_events([SessionEvent("session_started", ActivitySession(
            "sink", "speech", 4_000_000, None, 1, 0.9, 4_010_000), 4_000_000)])
    statements: list[str] = []
    connect = sqlite3.connect

    def traced(*args, **kwargs):
        connection = connect(*args, **kwargs)
        start_thread = threading.get_ident()
        connection.set_trace_callback(lambda sql: statements.append(sql) if threading.get_ident() == start_thread else None)
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced)
    daemon = Daemon(config)
    try:
        daemon.start()
        started = list(statements)
    finally:
        daemon.stop()
    monkeypatch.undo()
    explain = sqlite3.connect(config.store_path)
    try:
        plans = [(sql, [row[3] for row in explain.execute("EXPLAIN QUERY PLAN " + sql)]) for sql in started
                 if sql.lstrip().upper().startswith(("SELECT", "DELETE", "UPDATE"))]
    finally:
        explain.close()
    assert any("FROM windows" in sql for sql, _ in plans)  # the noise floors' history was read...
    assert any("FROM sessions" in sql for sql, _ in plans)  # ...and the crashed run's session closed
    assert not full_scans(plans)
