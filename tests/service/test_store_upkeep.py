"""Background upkeep of the store (service/store/store_upkeep.py): a retention pass that fails is counted and logged
at most once a minute, and the loop goes on (issue 15: `retention_interval_s = 1e10` killed the retention
thread and the daemon ran on with no retention; a failing pass logged a traceback each time). The integrity
check runs in the background from start, table by table, and reports damage as soon as a table shows it
(issue 28: a full quick_check of a year of windows would keep the daemon from serving for minutes)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import numpy as np

from service.store import store_guard
from service.store.event_store import EventStore
from service.records import StateChange, WindowResult
from service.store.store_upkeep import IntegrityWatch, RetentionLoop


class FailingStore:
    """A store at the edge whose retention always fails."""

    def __init__(self) -> None:
        self.calls = 0

    def enforce_retention(self):
        self.calls += 1
        raise OSError("disk I/O error")


def test_a_failing_retention_pass_is_counted_logged_once_a_minute_and_retried(caplog):
    store, errors = FailingStore(), []
    loop = RetentionLoop(store, 0.02, on_error=lambda: errors.append(1))
    with caplog.at_level(logging.ERROR, logger="roomtone.daemon"):
        loop.start()
        deadline = time.monotonic() + 10
        while store.calls < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loop._thread.is_alive()  # the loop outlives its failures
        loop.stop()
    assert store.calls >= 10 and len(errors) == store.calls == loop.failures
    lines = [r for r in caplog.records if r.getMessage().startswith("retention pass failed")]
    assert len(lines) == 1 and lines[0].exc_info  # the first with its traceback, the rest only counted


def store_with_damaged_events_table(path):
    """A store of 3,000 windows and 30 events whose events table's root page is overwritten with noise."""
    rng = np.random.default_rng(0)
    with EventStore(path) as store:
        for batch in range(6):
            windows = [WindowResult("hall", (batch * 500 + i) * 10_000, (batch * 500 + i + 1) * 10_000, "speech",
                                    {"speech": 1.0}, "ok", (), {}, -30.0, embedding=rng.standard_normal(64).astype(np.float32))
                       for i in range(500)]
            changes = [StateChange("activity_changed", "hall", w.start_unix_ms, "quiet", "speech") for w in windows[:5]]
            store.add_results(windows, changes)
    with sqlite3.connect(path) as db:
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'events'").fetchone()[0]
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    with open(path, "r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(rng.bytes(page_size))
    return path


def test_the_integrity_check_starts_in_the_background_and_reports_a_damaged_table_before_reading_the_largest(
        tmp_path, monkeypatch):
    path = store_with_damaged_events_table(tmp_path / "roomtone.db")
    checked: list[str] = []  # tables whose check has begun, in order

    def spied_check(store_path, max_problems, table):
        checked.append(table)
        return real_check(store_path, max_problems, table)

    real_check = store_guard.quick_check
    monkeypatch.setattr(store_guard, "quick_check", spied_check)
    release = threading.Event()
    seen: list[tuple[bool, list[str]]] = []  # (ok, tables begun when the report came)

    def listener(check):
        seen.append((check.ok, list(checked)))
        release.wait(10)  # hold the check until the test has looked: it must not have needed to finish first

    watch = IntegrityWatch(path, interval_s=3600)
    watch.listeners.append(listener)
    started = time.monotonic()
    watch.start()
    assert time.monotonic() - started < 0.5  # start-up does not wait for the check
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    ok, begun = seen[0]
    assert ok is False and begun[-1] == "events"  # the damage came out of the events table's own check ...
    assert "windows" not in begun  # ... before the windows table (the largest, checked last) was read
    release.set()
    watch.stop()
    assert not watch.last.ok and any("table events" in p for p in watch.last.problems)
