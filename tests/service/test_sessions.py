"""Specification of activity sessions: windows merged with a minimum duration and a gap tolerance."""

from __future__ import annotations

import pytest

from service.records import WindowResult
from service.config import ConfigError, SessionConfig, load_config
from service.analysis.sessions import SessionTracker

HOP_MS = 10_000


def windows(labels: str, mic: str = "kitchen", start: int = 0, health: str = "ok") -> list[WindowResult]:
    """One 10 s window per character: c = cooking, d = dishes, q = quiet, - = no label."""
    names = {"c": "cooking", "d": "dishes", "q": "quiet", "-": None}
    out = []
    for i, char in enumerate(labels):
        label = names[char]
        out.append(WindowResult(mic_id=mic, start_unix_ms=start + i * HOP_MS, end_unix_ms=start + (i + 1) * HOP_MS,
                                label=label, probabilities={label: 0.8} if label else {}, health_state=health,
                                health_reasons=(), health_scores={}, rms_dbfs=-30.0))
    return out


def run(tracker: SessionTracker, labels: str, **kwargs) -> list[tuple[str, str, int, int | None]]:
    """(kind, activity, start s, end s or None) of every event of a window sequence."""
    events = []
    for window in windows(labels, **kwargs):
        for event in tracker.update(window):
            s = event.session
            events.append((event.kind, s.activity, s.start_unix_ms // 1000,
                           None if s.end_unix_ms is None else s.end_unix_ms // 1000))
    return events


def test_a_session_starts_once_the_activity_has_held_for_the_minimum_duration_and_dates_from_its_first_window():
    tracker = SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=30))
    assert run(tracker, "qc") == []
    assert run(tracker, "c", start=2 * HOP_MS) == [("session_started", "cooking", 10, None)]


def test_one_stray_window_never_starts_a_session():
    tracker = SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=30))
    assert run(tracker, "qqdqqqqq") == []


def test_interruptions_shorter_than_the_gap_tolerance_do_not_end_the_session():
    tracker = SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=30))
    events = run(tracker, "cccqdqcccdcc")
    assert events == [("session_started", "cooking", 0, None)]
    assert tracker.open_session("kitchen").windows == 8


def test_the_session_ends_at_its_last_window_once_the_gap_tolerance_has_passed():
    tracker = SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=30))
    events = run(tracker, "ccccqqqq")
    assert events == [("session_started", "cooking", 0, None), ("session_ended", "cooking", 0, 40)]


def test_a_new_activity_that_holds_for_the_minimum_duration_ends_the_old_session_before_starting_its_own():
    tracker = SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=60))
    events = run(tracker, "cccddd")
    assert events == [("session_started", "cooking", 0, None),
                      ("session_ended", "cooking", 0, 30), ("session_started", "dishes", 30, None)]


def test_alternating_windows_keep_the_open_session_instead_of_flapping():
    tracker = SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=30))
    events = run(tracker, "cccdcdcdcdcd")
    assert events == [("session_started", "cooking", 0, None)]


def test_ignored_labels_and_faulty_windows_never_make_a_session():
    tracker = SessionTracker(SessionConfig(min_duration_s=10, gap_tolerance_s=30))
    assert run(tracker, "qqqqqq") == []
    assert run(tracker, "cccccc", mic="hall", health="faulty") == []


def test_microphones_have_independent_sessions():
    tracker = SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=30))
    a = windows("ccc", mic="kitchen")
    b = windows("ddd", mic="hall")
    events = [e for pair in zip(a, b) for w in pair for e in tracker.update(w)]
    assert sorted((e.mic_id, e.session.activity) for e in events) == [("hall", "dishes"), ("kitchen", "cooking")]


def test_close_idle_ends_a_session_whose_microphone_stopped_delivering_windows():
    tracker = SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=30))
    run(tracker, "ccc")
    assert tracker.close_idle(now_unix_ms=50_000) == []
    [ended] = tracker.close_idle(now_unix_ms=60_001)
    assert (ended.kind, ended.session.end_unix_ms, ended.session.windows) == ("session_ended", 30_000, 3)
    assert tracker.open_session("kitchen") is None


def test_close_all_ends_open_sessions_at_their_last_window_and_carries_the_store_id():
    tracker = SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=30))
    run(tracker, "cc")
    tracker.set_session_id("kitchen", 7)
    [ended] = tracker.close_all()
    assert (ended.session.session_id, ended.session.end_unix_ms, ended.session.mean_probability) == (7, 20_000, 0.8)


@pytest.mark.parametrize("key, value", [("min_duration_s", -1.0), ("gap_tolerance_s", float("nan"))])
def test_negative_or_nan_durations_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=f"sessions.{key}"):
        load_config(None, {"sessions": {key: value}}, environ={})
