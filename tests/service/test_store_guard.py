"""The store's guard (service/store/store_guard.py): one daemon per store, acknowledged windows that vanish with a
lost write-ahead log are noticed, and damage in the middle of the file is found by the integrity check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.store.event_store import EventStore
from service.records import WindowResult
from service.store.store_guard import StoreGuard, StoreInUse, quick_check

REPO = Path(__file__).resolve().parents[2]


def windows(n: int, start: int = 0) -> list[WindowResult]:
    rng = np.random.default_rng(start)
    return [WindowResult("kitchen", (start + i) * 10_000, (start + i + 1) * 10_000, "speech", {"speech": 1.0}, "ok",
                         (), {"clipping": 0.0}, -30.0, embedding=rng.standard_normal(256).astype(np.float32))
            for i in range(n)]


def filled_store(path: Path, n: int = 3000) -> Path:
    with EventStore(path) as store:
        for start in range(0, n, 500):
            store.add_results(windows(500, start))
    return path


def test_an_intact_store_passes_and_random_bytes_in_its_middle_fail_the_check(tmp_path):
    path = filled_store(tmp_path / "roomtone.db")
    assert quick_check(path).ok
    size = path.stat().st_size
    with open(path, "r+b") as handle:  # what the outside attack did: 8 KiB of noise in the middle
        handle.seek(size // 2)
        handle.write(np.random.default_rng(1).bytes(8192))
    check = quick_check(path)
    assert not check.ok and check.problems
    assert "sqlite3" in check.advice(path) and str(path) in check.advice(path)


def test_a_second_process_cannot_take_the_store_and_is_told_who_has_it(tmp_path):
    store_path = tmp_path / "roomtone.db"
    guard = StoreGuard(store_path)
    guard.acquire()
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r}); from service.store.store_guard import StoreGuard, StoreInUse\n"
              f"try:\n    StoreGuard({str(store_path)!r}).acquire()\nexcept StoreInUse as exc:\n    print(exc)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60).stdout
    assert f"store {store_path} is in use by another roomtone (pid {os.getpid()}" in out
    guard.release()
    StoreGuard(store_path).acquire()  # free again once released


def test_windows_lost_with_the_write_ahead_log_are_noticed_at_the_next_start(tmp_path):
    store_path = tmp_path / "roomtone.db"
    guard = StoreGuard(store_path)
    guard.acquire()
    store = EventStore(store_path, guard=guard)
    store.add_results(windows(5))
    store.close()  # checkpointed: ids 1..5 are in the main file
    # a crash after 3 more acknowledged windows, then the -wal file deleted by hand
    snapshot = store_path.read_bytes()
    store = EventStore(store_path, guard=guard)
    store.add_results(windows(3, 5))
    assert guard.high_water == 8
    store._connection.close()  # no checkpoint, as after a crash
    guard.release()
    store_path.write_bytes(snapshot)
    for leftover in (tmp_path / "roomtone.db-wal", tmp_path / "roomtone.db-shm"):
        leftover.unlink(missing_ok=True)

    again = StoreGuard(store_path)
    again.acquire()
    with EventStore(store_path, guard=again) as reopened:
        assert list(again.lost_windows(reopened.highest_assigned_window_id())) == [6, 7, 8]
    assert list(StoreGuard(tmp_path / "other.db").lost_windows(0)) == []
