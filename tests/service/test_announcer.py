"""Specification of what the daemon announces after a stored batch (service/announcer.py): sessions are
stored and streamed, each microphone's latest state and its one-off events go to MQTT. The MQTT
publisher is replaced at the edge by a recorder of what would be queued; the store is real."""

from __future__ import annotations

from pathlib import Path

from service.announcer import Announcer
from service.config import SessionConfig
from service.event_store import EventStore
from service.records import StateChange, WindowResult
from service.sessions import SessionEvent, SessionTracker


class QueuedMessages:
    """The publisher's two calls, recorded."""

    def __init__(self) -> None:
        self.states: list[tuple[str, dict]] = []
        self.events: list[tuple[str, dict]] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def publish_state(self, mic_id: str, payload: dict) -> bool:
        self.states.append((mic_id, payload))
        return True

    def publish_event(self, mic_id: str, payload: dict) -> bool:
        self.events.append((mic_id, payload))
        return True


def window(mic: str, i: int, label: str = "water") -> tuple[WindowResult, dict[str, bool]]:
    return WindowResult(mic, i * 10_000, (i + 1) * 10_000, label, {label: 0.9}, "ok", (), {}, -30.0), {"hum": False}


def test_a_batch_publishes_each_mics_latest_state_its_health_and_sound_events_and_stores_sessions(tmp_path: Path):
    live: list = []
    queued = QueuedMessages()
    with EventStore(tmp_path / "a.db") as store:
        announcer = Announcer(store, live.append, SessionTracker(SessionConfig(min_duration_s=20)), queued)
        announcer.start()
        announcer.after_store([window("kitchen", 0), window("hall", 0, "speech"), window("kitchen", 1)], [
            StateChange("health_changed", "kitchen", 0, None, "ok"),
            StateChange("sound_detected", "hall", 0, None, "doorbell")])
        assert [(mic, s["window_start_unix_ms"], s["activity"]) for mic, s in queued.states] == [
            ("kitchen", 10_000, "water"), ("hall", 0, "none")]  # one state per mic: its latest window
        kinds = [(mic, e["event_type"]) for mic, e in queued.events]
        assert kinds == [("kitchen", "session_started"), ("kitchen", "health_changed"), ("hall", "sound_detected")]
        assert queued.events[-1][1]["sound"] == "doorbell"
        [started] = live
        assert isinstance(started, SessionEvent) and started.session.session_id == 1
        announcer.stop()  # the daemon stops listening: the open session ends and is stored
        assert [e["event_type"] for _, e in queued.events][-1] == "session_ended"
        [stored] = store.list_sessions().sessions
        assert (stored.activity, stored.end_unix_ms, stored.windows) == ("water", 20_000, 2)


def test_a_microphone_that_delivers_no_audio_is_shown_faulty_once_and_its_session_ends_after_the_gap(tmp_path: Path):
    from service.records import MicStatus

    queued = QueuedMessages()
    lost = MicStatus("kitchen", "USB mic", "reopening", 20_000, "faulty",
                     ("no_input: capture is reopening (device lost or stalled)",))
    with EventStore(tmp_path / "a.db") as store:
        announcer = Announcer(store, lambda item: None, SessionTracker(SessionConfig(min_duration_s=20, gap_tolerance_s=30)),
                              queued)
        announcer.after_store([window("kitchen", 0), window("kitchen", 1)], [])
        queued.states.clear()
        announcer.check_capture([lost, MicStatus("hall", "demo", "running")], now_unix_ms=30_000)
        announcer.check_capture([lost], now_unix_ms=40_000)  # still lost: announced once, session kept (10 s < gap)
        [(mic, state)] = queued.states
        assert (mic, state["health"], state["problem"], state["capture"], state["rms_dbfs"]) == (
            "kitchen", "faulty", "ON", "reopening", None)
        assert state["health_reasons"] == ["no_input: capture is reopening (device lost or stalled)"]
        assert state["activity"] == "water"  # the session is still open ...
        announcer.check_capture([lost], now_unix_ms=50_001)  # ... until no window came for longer than the gap
        assert queued.events[-1][1]["event_type"] == "session_ended" and queued.events[-1][1]["end_unix_ms"] == 20_000
        announcer.after_store([window("kitchen", 6)], [])  # audio again: the next loss is announced again
        announcer.check_capture([lost], now_unix_ms=80_000)
        assert len(queued.states) == 3
