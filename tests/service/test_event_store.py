"""Specification of the SQLite event store: durable batches, filtered pages, retention, schema
migrations and exact similarity search."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service.config import StoreConfig
from service.store.event_store import EventQuery, EventStore, StoreError
from service.store.store_schema import SCHEMA_VERSION, migrate
from encoder.vocabulary import SILENCE_DBFS
from service.records import StateChange, WindowResult

REPO = Path(__file__).resolve().parents[2]
DAY_MS = 86_400_000


def window(mic: str = "kitchen", start: int = 0, label: str | None = "speech", health: str = "ok",
           embedding: np.ndarray | None = None, seed: int = 0) -> WindowResult:
    """A window record with a random unit embedding unless one is given."""
    if embedding is None:
        vector = np.random.default_rng(seed).normal(size=256).astype(np.float32)
        embedding = vector / np.linalg.norm(vector)
    return WindowResult(
        mic_id=mic, start_unix_ms=start, end_unix_ms=start + 10_000, label=label,
        probabilities={label: 0.9, "other": 0.1} if label else {}, health_state=health,
        health_reasons=("clipping: 4.1% of samples at full scale",) if health != "ok" else (),
        health_scores={"clipping": 0.041 if health != "ok" else 0.0}, rms_dbfs=-31.5, embedding=embedding,
    )


@pytest.fixture()
def store(tmp_path: Path):
    with EventStore(tmp_path / "roomtone.db") as opened:
        yield opened


def test_add_results_assigns_ids_and_links_changes_to_the_window_of_the_same_batch(store: EventStore) -> None:
    windows, changes = store.add_results(
        [window("kitchen", 1000), window("hall", 1000)],
        [StateChange("activity_changed", "hall", 1000, None, "speech")],
    )
    assert [w.window_id for w in windows] == [1, 2]
    assert changes[0].event_id == 1 and changes[0].window_id == windows[1].window_id
    assert store.counts() == (2, 1)


def test_a_window_reads_back_with_every_field_and_a_float16_embedding(store: EventStore) -> None:
    original = window("kitchen", 5000, health="faulty", seed=3)
    (stored,), _ = store.add_results([original])
    read = store.get_window(stored.window_id)
    assert read == stored  # dataclass equality ignores the embedding
    assert read.embedding.dtype == np.float32 and read.embedding.shape == (256,)
    np.testing.assert_allclose(read.embedding, original.embedding, atol=1e-3)
    assert store.get_window(999) is None


def test_silence_quieter_and_non_finite_levels_are_stored_as_the_one_silence_level(store: EventStore) -> None:
    silent = WindowResult("kitchen", 0, 10_000, None, {}, "faulty", ("dead",), {}, float("-inf"))
    broken = WindowResult("kitchen", 10_000, 20_000, None, {}, "faulty", ("non_finite",), {}, float("nan"))
    quieter = WindowResult("kitchen", 20_000, 30_000, None, {}, "faulty", ("dead",), {}, -150.0)
    stored, _ = store.add_results([silent, broken, quieter])
    assert [store.get_window(w.window_id).rms_dbfs for w in stored] == [SILENCE_DBFS] * 3 == [-120.0] * 3


def test_a_batch_with_an_invalid_record_stores_nothing(store: EventStore) -> None:
    with pytest.raises(ValueError, match="health_state"):
        store.add_results([window(start=0), window(start=10_000, health="broken")])
    with pytest.raises(ValueError, match="kind"):
        store.add_results([window(start=0)], [StateChange("volume_changed", "kitchen", 0, None, "x")])
    assert store.counts() == (0, 0)


def test_acknowledged_batches_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    writer = f"""
import os, sys
sys.path.insert(0, {str(REPO)!r})
from service.store.event_store import EventStore
from service.records import WindowResult, StateChange
store = EventStore({str(path)!r})
for i in range(20):
    store.add_results([WindowResult("kitchen", i * 10000, i * 10000 + 10000, "speech", {{}}, "ok", (), {{}}, -30.0)],
                      [StateChange("health_changed", "kitchen", i * 10000, None, "ok")])
    print(i, flush=True)
os.kill(os.getpid(), 9)  # no close(), no checkpoint: like a crash
"""
    done = subprocess.run([sys.executable, "-c", writer], capture_output=True, text=True, timeout=60)
    assert done.returncode == -9, done.stderr
    assert done.stdout.split()[-1] == "19"  # every batch was acknowledged
    with EventStore(path) as reopened:
        assert reopened.counts() == (20, 20)
        assert reopened.list_windows(limit=1).items[0].start_unix_ms == 190_000


def test_pages_cover_every_item_once_newest_first_with_windows_before_their_changes(store: EventStore) -> None:
    windows = [window("kitchen" if i % 2 else "hall", (i // 2) * 10_000, seed=i) for i in range(30)]
    changes = [StateChange("health_changed", w.mic_id, w.start_unix_ms, "ok", "degraded") for w in windows[::3]]
    store.add_results(windows, changes)
    seen, token = [], ""
    while True:
        page = store.list_events(limit=7, page_token=token)
        assert len(page.items) <= 7
        seen += page.items
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 40
    keys = [(("w", i.window_id) if isinstance(i, WindowResult) else ("e", i.event_id)) for i in seen]
    assert len(set(keys)) == 40
    times = [i.start_unix_ms if isinstance(i, WindowResult) else i.time_unix_ms for i in seen]
    assert times == sorted(times, reverse=True)
    for change in (i for i in seen if isinstance(i, StateChange)):
        assert keys.index(("w", change.window_id)) < keys.index(("e", change.event_id))


def test_filters_combine_and_changes_match_labels_and_states_only_by_their_new_value(store: EventStore) -> None:
    store.add_results(
        [window("kitchen", 0, "speech"), window("kitchen", 10_000, "water", "faulty"), window("hall", 10_000, "water")],
        [StateChange("activity_changed", "kitchen", 10_000, "speech", "water"),
         StateChange("health_changed", "kitchen", 10_000, "ok", "faulty")],
    )

    def kinds(**filters) -> list[str]:
        return [i.label if isinstance(i, WindowResult) else i.kind for i in store.list_events(EventQuery(**filters)).items]

    assert kinds(labels=("water",)) == ["water", "water", "activity_changed"]
    assert kinds(health_states=("faulty",)) == ["water", "health_changed"]
    assert kinds(labels=("water",), health_states=("faulty",)) == ["water"]
    assert kinds(mic_ids=("hall",)) == ["water"]
    assert kinds(kinds=("health_changed",)) == ["health_changed"]
    assert kinds(since_unix_ms=0, until_unix_ms=10_000) == ["speech"]
    query = EventQuery(mic_ids=("kitchen",), labels=("water",))
    assert [query.matches(i) for i in store.list_events().items] == [
        isinstance(i, WindowResult) and i.mic_id == "kitchen" and i.label == "water"
        or isinstance(i, StateChange) and i.kind == "activity_changed"
        for i in store.list_events().items]


def test_bad_queries_are_rejected_with_the_field_named(store: EventStore) -> None:
    with pytest.raises(ValueError, match="health_states"):
        EventQuery(health_states=("sick",))
    with pytest.raises(ValueError, match="kinds"):
        EventQuery(kinds=("volume",))
    with pytest.raises(ValueError, match="until_unix_ms"):
        EventQuery(since_unix_ms=10, until_unix_ms=5)
    with pytest.raises(ValueError, match="page_token"):
        store.list_events(page_token="not-a-token")
    with pytest.raises(ValueError, match="limit"):
        store.list_events(limit=0)


def test_nearest_is_exact_cosine_search_over_the_stored_float16_embeddings(store: EventStore) -> None:
    stored, _ = store.add_results([window("kitchen" if i % 3 else "hall", i * 10_000, seed=i) for i in range(200)])
    query = np.random.default_rng(99).normal(size=256).astype(np.float32)
    matrix = np.stack([w.embedding.astype(np.float16).astype(np.float32) for w in stored])
    expected = 1 - (matrix @ query) / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    result = store.nearest(query, k=5)
    assert result.searched == 200
    assert [w.window_id for w, _ in result.neighbors] == [stored[i].window_id for i in np.argsort(expected)[:5]]
    np.testing.assert_allclose([d for _, d in result.neighbors], np.sort(expected)[:5], atol=1e-5)


def test_nearest_respects_mic_filter_exclusions_and_windows_added_later(store: EventStore) -> None:
    stored, _ = store.add_results([window("hall", 0, seed=1), window("kitchen", 0, seed=2)])
    assert store.nearest(stored[0].embedding, k=1).neighbors[0][0].window_id == stored[0].window_id
    assert store.nearest(stored[0].embedding, k=5, mic_id="kitchen").neighbors[0][0].mic_id == "kitchen"
    assert store.nearest(stored[0].embedding, k=5, exclude_ids=[stored[0].window_id]).searched == 1
    (later,), _ = store.add_results([window("hall", 10_000, embedding=-stored[1].embedding)])
    far = store.nearest(stored[1].embedding, k=3).neighbors[-1]
    assert far[0].window_id == later.window_id and far[1] == pytest.approx(2.0, abs=1e-3)
    assert store.nearest(np.ones(64), k=3).neighbors == []  # another model's dimension: nothing comparable


def test_retention_by_age_deletes_only_what_is_older_than_the_limit(tmp_path: Path) -> None:
    now = 100 * DAY_MS
    with EventStore(tmp_path / "age.db", StoreConfig(max_age_days=7)) as store:
        store.add_results([window(start=now - 10 * DAY_MS, seed=1), window(start=now - 1 * DAY_MS, seed=2)],
                          [StateChange("health_changed", "kitchen", now - 10 * DAY_MS, None, "ok")])
        store.nearest(np.ones(256), k=1)  # load the similarity cache before deleting
        report = store.enforce_retention(now_unix_ms=now)
        assert (report.windows_deleted, report.events_deleted) == (1, 1)
        assert [w.start_unix_ms for w in store.list_windows().items] == [now - DAY_MS]
        assert store.nearest(np.ones(256), k=5).searched == 1


def test_retention_by_size_keeps_the_newest_windows_within_the_byte_limit(tmp_path: Path) -> None:
    limit = 256 * 1024
    with EventStore(tmp_path / "size.db", StoreConfig(max_age_days=float("inf"), max_size_mb=limit / 2**20)) as store:
        for batch in range(10):
            store.add_results([window(start=(batch * 100 + i) * 10_000, seed=i) for i in range(100)])
        assert store.bytes_in_use() > limit
        report = store.enforce_retention()
        assert report.bytes_in_use <= limit and report.windows_deleted > 0
        remaining = store.counts()[0]
        newest = [w.start_unix_ms for w in store.list_windows(limit=remaining).items]
        assert newest == [(999 - i) * 10_000 for i in range(remaining)]
    assert (tmp_path / "size.db").stat().st_size <= limit + 64 * 1024  # freed pages go back to the file system


def test_a_version_1_database_is_migrated_with_its_rows_kept(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    connection = sqlite3.connect(path, isolation_level=None)
    assert migrate(connection, target=1) == 1
    vector = np.eye(256, dtype=np.float32)[0]
    connection.execute(
        "INSERT INTO windows (mic_id, start_unix_ms, end_unix_ms, label, probabilities_json, health_state, "
        "health_reasons_json, health_scores_json, rms_dbfs, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ("kitchen", 0, 10_000, "speech", json.dumps({"speech": 1.0}), "ok", "[]", "{}", -20.0, vector.astype("<f2").tobytes()))
    connection.close()
    with EventStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION == 7
        assert store.get_window(1).label == "speech"
        assert store.nearest(vector, k=1).neighbors[0][1] == pytest.approx(0.0, abs=1e-6)
        (added,), _ = store.add_results([window(start=10_000)])
        assert added.window_id == 2


def test_a_database_from_a_newer_roomtone_or_not_a_database_is_refused_by_name(tmp_path: Path) -> None:
    newer = tmp_path / "newer.db"
    connection = sqlite3.connect(newer)
    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(StoreError, match="newer"):
        EventStore(newer)
    garbage = tmp_path / "notes.txt"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="notes.txt"):
        EventStore(garbage)


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "closed.db")
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.counts()


def test_concurrent_writers_and_readers_lose_nothing(store: EventStore) -> None:
    errors: list[BaseException] = []

    def write(mic: str) -> None:
        try:
            for i in range(50):
                store.add_results([window(mic, i * 10_000, seed=i)], [StateChange("health_changed", mic, i * 10_000, None, "ok")])
                store.list_events(EventQuery(mic_ids=(mic,)), limit=5)
                store.nearest(np.ones(256), k=3)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(f"mic{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.counts() == (200, 200)
    assert store.nearest(np.ones(256), k=1).searched == 200
    assert set(store.latest_windows()) == {"mic0", "mic1", "mic2", "mic3"}


def test_an_infinite_age_keeps_every_window_while_the_size_limit_still_holds(tmp_path: Path) -> None:
    now = 100 * DAY_MS
    limit = 256 * 1024
    with EventStore(tmp_path / "forever.db", StoreConfig(max_age_days=float("inf"), max_size_mb=limit / 2**20)) as store:
        store.add_results([window(start=i, seed=i) for i in range(3)])
        assert store.enforce_retention(now_unix_ms=now).windows_deleted == 0  # 100 days old, kept
        for batch in range(10):
            store.add_results([window(start=(batch * 100 + i) * 10_000, seed=i) for i in range(100)])
        report = store.enforce_retention(now_unix_ms=now)
        assert report.windows_deleted > 0 and report.bytes_in_use <= limit


def test_a_long_read_never_holds_up_a_write(tmp_path: Path) -> None:
    """Issue 15: 20 clients paging ListEvents(limit=1000) slowed the pipeline's writes from 0.011 s to 0.98 s;
    queries now read on their own connection (WAL), so a reader in the middle of a page never blocks a commit."""
    import threading

    with EventStore(tmp_path / "busy.db") as store:
        store.add_results([window(start=i * 10_000, seed=i) for i in range(50)])
        reading, done = threading.Event(), threading.Event()

        def slow_reader() -> None:
            with store._reading() as db:  # a page being read: its snapshot stays open
                db.execute("SELECT count(*) FROM windows").fetchone()
                reading.set()
                done.wait(10)

        thread = threading.Thread(target=slow_reader)
        thread.start()
        assert reading.wait(10)
        started = time.perf_counter()
        store.add_results([window(start=10**9, seed=99)])
        took = time.perf_counter() - started
        page = store.list_events(limit=1000)  # and other readers go on meanwhile
        done.set()
        thread.join()
        assert took < 2.0 and len(page.items) >= 51
