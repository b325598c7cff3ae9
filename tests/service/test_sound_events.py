"""sound_detected events in the store (with their score, filtered by kind and by the sound's name), the
store's recent windows as a calibration background, and the wire form of quiet/unknown windows."""

from __future__ import annotations

import numpy as np

from service.store.event_store import EventQuery, EventStore
from service.api.grpc_server import change_to_pb, mic_to_pb, window_to_pb
from service.records import MicStatus, SoundMatch, StateChange, WindowResult
from service.rpc import roomtone_pb2 as pb


def window(start: int, label: str | None = "speech", health: str = "ok", rms: float = -30.0,
           embedding: np.ndarray | None = None) -> WindowResult:
    return WindowResult(mic_id="kitchen", start_unix_ms=start, end_unix_ms=start + 10_000, label=label,
                        probabilities={"speech": 0.6, "typing": 0.4}, health_state=health, health_reasons=(),
                        health_scores={}, rms_dbfs=rms, embedding=embedding)


def test_a_sound_detection_is_stored_with_its_score_and_found_by_kind_and_by_name(tmp_path):
    with EventStore(tmp_path / "roomtone.db") as store:
        store.add_results([window(0)], [StateChange("sound_detected", "kitchen", 0, None, "doorbell", score=0.93),
                                        StateChange("activity_changed", "kitchen", 0, None, "speech")])
        page = store.list_events(EventQuery(kinds=("sound_detected",)))
        [event] = page.items
        assert (event.current, event.window_id, round(event.score, 3)) == ("doorbell", 1, 0.93)
        by_name = store.list_events(EventQuery(labels=("doorbell",))).items
        assert [e.kind for e in by_name] == ["sound_detected"]
        assert EventQuery(labels=("doorbell",)).matches(event)
        assert change_to_pb(event).kind == pb.EVENT_KIND_SOUND_DETECTED
        assert round(change_to_pb(event).score, 3) == 0.93


def test_recent_embeddings_cover_the_asked_hours_and_leave_out_excluded_windows(tmp_path):
    now = 10 * 3_600_000
    with EventStore(tmp_path / "roomtone.db") as store:
        vectors = np.eye(4, dtype=np.float32)
        stored, _ = store.add_results([window(now - 3 * 3_600_000, embedding=vectors[0]),
                                       window(now - 1_800_000, embedding=vectors[1]),
                                       window(now - 600_000, embedding=vectors[2])])
        got, hours = store.recent_embeddings(4, hours=1.0, exclude_ids=[stored[2].window_id], now_unix_ms=now)
        assert np.allclose(got, vectors[1:2]) and abs(hours - 10 / 3600) < 1e-9
        assert store.recent_embeddings(8, hours=5.0, now_unix_ms=now)[0].shape == (0, 8)


def test_quiet_unknown_and_faulty_windows_say_why_on_the_wire():
    assert window_to_pb(window(0, "quiet", rms=-80)).label_kind == pb.LABEL_KIND_QUIET
    assert window_to_pb(window(0, "unknown")).label_kind == pb.LABEL_KIND_UNKNOWN
    assert window_to_pb(window(0, "speech")).label_kind == pb.LABEL_KIND_CLASS
    faulty = window_to_pb(window(0, None, health="faulty"))
    assert (faulty.label, faulty.label_kind) == ("", pb.LABEL_KIND_MIC_FAULTY)
    assert window_to_pb(window(0, None)).label_kind == pb.LABEL_KIND_NO_HEAD
    mic = MicStatus("kitchen", "demo", "running", 10_000, "ok", label="unknown")
    assert mic_to_pb(mic).label_kind == pb.LABEL_KIND_UNKNOWN
    assert mic_to_pb(MicStatus("kitchen", "demo", "starting")).label_kind == pb.LABEL_KIND_UNSPECIFIED


def test_classify_windows_carry_the_custom_sounds_they_match():
    result = WindowResult("upload", 0, 10_000, "speech", {}, "ok", (), {}, -20.0,
                          sounds=(SoundMatch("doorbell", 0.95, 0.9),))
    [match] = window_to_pb(result).sounds
    assert (match.name, round(match.score, 2), round(match.threshold, 2)) == ("doorbell", 0.95, 0.9)


def test_recent_embeddings_can_start_where_the_current_model_started(tmp_path):
    now = 10 * 3_600_000
    with EventStore(tmp_path / "roomtone.db") as store:
        vectors = np.eye(4, dtype=np.float32)
        store.add_results([window(now - 1_800_000, embedding=vectors[0]), window(now - 600_000, embedding=vectors[1])])
        got, _ = store.recent_embeddings(4, hours=1.0, now_unix_ms=now, since_unix_ms=now - 900_000)
        assert np.allclose(got, vectors[1:2])
