"""Specification of stored activity sessions: durable starts and ends, paged listing, crash recovery and
retention (service/store/session_store.py through EventStore)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.config import StoreConfig
from service.store.event_store import EventStore
from service.records import WindowResult
from service.store.session_store import SessionQuery
from service.analysis.sessions import ActivitySession, SessionEvent

MIN_MS = 60_000


def started(mic: str, activity: str, start: int) -> SessionEvent:
    return SessionEvent("session_started", ActivitySession(mic, activity, start, None, 2, 0.7, start + 20_000), start)


def ended(event: SessionEvent, end: int, windows: int = 5) -> SessionEvent:
    s = event.session
    return SessionEvent("session_ended", ActivitySession(s.mic_id, s.activity, s.start_unix_ms, end, windows, 0.75, end,
                                                         s.session_id), end)


@pytest.fixture()
def store(tmp_path: Path):
    with EventStore(tmp_path / "roomtone.db") as opened:
        yield opened


def test_a_started_session_is_stored_open_and_its_end_closes_the_same_row(store: EventStore, tmp_path: Path):
    [start] = store.add_session_events([started("kitchen", "cooking", 0)])
    assert start.session.session_id == 1
    assert [s.is_open for s in store.list_sessions().sessions] == [True]
    store.add_session_events([ended(start, 25 * MIN_MS)])
    store.close()
    with EventStore(tmp_path / "roomtone.db") as reopened:  # durable: read back by a new connection
        [session] = reopened.list_sessions().sessions
    assert (session.session_id, session.end_unix_ms, session.windows, session.mean_probability) == (1, 25 * MIN_MS, 5, 0.75)


def test_sessions_are_listed_newest_first_filtered_and_paged(store: EventStore):
    for i in range(5):
        [s] = store.add_session_events([started("kitchen" if i % 2 == 0 else "hall", "cooking" if i < 3 else "dishes", i * 10 * MIN_MS)])
        store.add_session_events([ended(s, i * 10 * MIN_MS + 5 * MIN_MS)])
    first = store.list_sessions(limit=2)
    second = store.list_sessions(limit=2, page_token=first.next_page_token)
    third = store.list_sessions(limit=2, page_token=second.next_page_token)
    starts = [s.start_unix_ms // MIN_MS for page in (first, second, third) for s in page.sessions]
    assert starts == [40, 30, 20, 10, 0] and third.next_page_token == ""
    assert [s.start_unix_ms // MIN_MS for s in store.list_sessions(SessionQuery(mic_ids=("kitchen",))).sessions] == [40, 20, 0]
    assert [s.activity for s in store.list_sessions(SessionQuery(activities=("dishes",))).sessions] == ["dishes", "dishes"]
    # overlap with [16 min, 31 min): the sessions starting at 20 and 30 min, not the one that ended at 15 min
    overlapping = store.list_sessions(SessionQuery(since_unix_ms=16 * MIN_MS, until_unix_ms=31 * MIN_MS)).sessions
    assert [s.start_unix_ms // MIN_MS for s in overlapping] == [30, 20]


def test_a_bad_page_token_or_limit_is_a_value_error(store: EventStore):
    with pytest.raises(ValueError, match="page_token"):
        store.list_sessions(page_token="nonsense")
    with pytest.raises(ValueError, match="limit"):
        store.list_sessions(limit=0)


def test_sessions_left_open_by_a_crash_are_closed_at_their_last_stored_window(store: EventStore):
    store.add_results([WindowResult("kitchen", t, t + 10_000, label, {}, "ok", (), {}, -30.0)
                       for t, label in ((0, "cooking"), (10_000, "cooking"), (20_000, "cooking"), (30_000, "speech"))])
    store.add_session_events([started("kitchen", "cooking", 0), started("hall", "dishes", 5_000)])
    closed = {s.mic_id: s for s in store.close_open_sessions()}
    assert closed["kitchen"].end_unix_ms == 30_000 and closed["kitchen"].windows == 3
    assert closed["hall"].end_unix_ms == 5_000  # no stored window of it: it ends where it started
    assert store.list_sessions(SessionQuery(open_only=True)).sessions == []


def test_retention_deletes_ended_sessions_older_than_the_cutoff_but_never_an_open_one(tmp_path: Path):
    day = 86_400_000
    with EventStore(tmp_path / "r.db", StoreConfig(max_age_days=1)) as store:
        [old] = store.add_session_events([started("kitchen", "cooking", 0)])
        store.add_session_events([ended(old, 10 * MIN_MS), started("hall", "dishes", 0)])
        store.add_results([WindowResult("kitchen", 0, 10_000, "cooking", {}, "ok", (), {}, -30.0)])
        store.enforce_retention(now_unix_ms=3 * day)
        assert [(s.mic_id, s.is_open) for s in store.list_sessions().sessions] == [("hall", True)]


def test_an_open_session_is_listed_with_its_windows_and_mean_probability_so_far(store: EventStore):
    store.add_session_events([started("kitchen", "cooking", 0)])
    store.add_results([WindowResult("kitchen", t, t + 10_000, label, {"cooking": p}, "ok", (), {}, -30.0)
                       for t, label, p in ((0, "cooking", 0.9), (10_000, "cooking", 0.7), (20_000, "speech", 0.2),
                                           (30_000, "cooking", 0.8))])
    [session] = store.list_sessions().sessions
    assert session.is_open and session.windows == 3 and session.last_seen_unix_ms == 40_000
    assert session.mean_probability == pytest.approx(0.8)
