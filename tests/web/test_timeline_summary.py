"""The timeline's summary (service/web/timeline_summary.py): runs of one activity per microphone from the store's
label counts per time bucket, at most one run per bucket, exactly the window runs when buckets are short."""

from __future__ import annotations

import pytest

from service.records import WindowResult
from service.store.event_store import EventQuery, EventStore
from service.web.timeline_summary import TimelineRun, bucket_ms_for, timeline_runs

HOP_MS = 10_000


def window(mic: str, i: int, label: str | None) -> WindowResult:
    return WindowResult(mic, i * HOP_MS, (i + 1) * HOP_MS, label, {}, "ok", (), {}, -30.0)


@pytest.fixture()
def store(tmp_path):
    with EventStore(tmp_path / "roomtone.db") as s:
        yield s


def summary(store: EventStore, since: int, until: int, buckets: int, mics: tuple[str, ...] = ()) -> list[TimelineRun]:
    query = EventQuery(mic_ids=mics, since_unix_ms=since, until_unix_ms=until)
    return timeline_runs(store.label_buckets(query, since, bucket_ms_for(since, until, buckets)), max_gap_ms=15_000)


def test_with_buckets_shorter_than_the_hop_the_runs_are_the_runs_of_consecutive_windows(store):
    labels = ["water"] * 3 + ["speech"] * 2 + [None] + ["speech"] * 4
    store.add_results([window("kitchen", i, label) for i, label in enumerate(labels)]
                      + [window("hall", i, "music") for i in range(4)] + [window("hall", 9, "music")], [])
    runs = summary(store, 0, 10 * HOP_MS, buckets=100)
    assert [(r.mic_id, r.label, r.start_unix_ms, r.end_unix_ms, r.windows) for r in runs] == [
        ("hall", "music", 0, 40_000, 4), ("hall", "music", 90_000, 100_000, 1),  # a capture gap splits a run
        ("kitchen", "water", 0, 30_000, 3), ("kitchen", "speech", 30_000, 50_000, 2),
        ("kitchen", None, 50_000, 60_000, 1), ("kitchen", "speech", 60_000, 100_000, 4)]
    first_ids = {w.window_id: (w.mic_id, w.start_unix_ms) for w in store.list_windows(EventQuery(), 100).items}
    assert [first_ids[r.first_window_id] for r in runs] == [(r.mic_id, r.start_unix_ms) for r in runs]


def test_a_week_of_windows_comes_back_as_at_most_one_run_per_bucket_and_microphone(store):
    week = 7 * 24 * 360  # windows per microphone at a 10 s hop
    # a label that flips every window: the worst case for runs of windows
    for mic in ("hall", "kitchen"):
        store.add_results([window(mic, i, "speech" if i % 3 else "water") for i in range(week)], [])
    runs = summary(store, 0, week * HOP_MS, buckets=200)
    assert {r.mic_id for r in runs} == {"hall", "kitchen"}
    assert len(runs) <= 2 * 200
    assert sum(r.windows for r in runs) == 2 * week  # every window is counted once
    assert {r.label for r in runs} == {"speech"}  # each bucket shows its most frequent label
    assert len([r for r in runs if r.mic_id == "hall"]) == 1  # ...and one label all week is one run


def test_the_summary_keeps_to_the_asked_microphones_and_span(store):
    store.add_results([window("kitchen", i, "water") for i in range(10)] + [window("hall", i, "music") for i in range(10)], [])
    runs = summary(store, 3 * HOP_MS, 6 * HOP_MS, buckets=10, mics=("kitchen",))
    assert [(r.mic_id, r.start_unix_ms, r.end_unix_ms, r.windows) for r in runs] == [("kitchen", 30_000, 60_000, 3)]
    assert summary(store, 100 * HOP_MS, 200 * HOP_MS, buckets=10) == []
