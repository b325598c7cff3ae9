"""Specification of what the daemon announces after a stored batch (service/announce/announcer.py): sessions are
stored and streamed, each microphone's latest state and its one-off events go to MQTT. The MQTT
publisher is replaced at the edge by a recorder of what would be queued; the store is real."""

from __future__ import annotations

from pathlib import Path

from service.announce.announcer import Announcer
from service.config import SessionConfig
from service.store.event_store import EventStore
from service.records import StateChange, WindowResult
from service.analysis.sessions import SessionEvent, SessionTracker


class QueuedMessages:
    """The publisher's calls, recorded: ``first`` (what `start` hands over for the first connect), then
    states and events, each also in ``log`` in the order they were queued (``offline`` at `stop`)."""

    def __init__(self, mic_ids: tuple[str, ...] = ("kitchen", "hall")) -> None:
        self.mic_ids = list(mic_ids)
        self.first: list[tuple[str, str, dict]] = []
        self.states: list[tuple[str, dict]] = []
        self.events: list[tuple[str, dict]] = []
        self.log: list[tuple[str, str, dict | None]] = []

    def start(self, first=()) -> None:
        self.first = list(first)

    def stop(self) -> None:
        self.log.append(("offline", "", None))

    def publish_state(self, mic_id: str, payload: dict) -> bool:
        self.states.append((mic_id, payload))
        self.log.append(("state", mic_id, payload))
        return True

    def publish_event(self, mic_id: str, payload: dict) -> bool:
        self.events.append((mic_id, payload))
        self.log.append(("event", mic_id, payload))
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
            StateChange("health_changed", "kitchen", 0, "degraded", "ok"),
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


def test_sessions_a_crash_left_open_end_on_mqtt_at_the_first_connect_with_a_fresh_state_per_mic(tmp_path: Path):
    with EventStore(tmp_path / "a.db") as store:  # a run that dies with a session open
        crashed = Announcer(store, lambda item: None, SessionTracker(SessionConfig(min_duration_s=20)), QueuedMessages())
        crashed.after_store([window("kitchen", i) for i in range(3)], [])
        assert store.list_sessions().sessions[0].is_open
    queued = QueuedMessages()
    with EventStore(tmp_path / "a.db") as store:
        Announcer(store, lambda item: None, SessionTracker(SessionConfig()), queued).start()
    ended = [payload for kind, mic, payload in queued.first if kind == "event"]
    # ended at the last stored window of its activity; this test stores no windows, so at its start
    assert [(e["event_type"], e["mic"], e["activity"], e["session_id"], e["end_unix_ms"]) for e in ended] == [
        ("session_ended", "kitchen", "water", 1, 0)]
    states = {mic: payload for kind, mic, payload in queued.first if kind == "state"}
    assert set(states) == {"kitchen", "hall"}
    assert all((s["activity"], s["session"], s["capture"], s["health"]) == ("none", None, "starting", None)
               for s in states.values())


def test_a_clean_stop_ends_the_session_then_publishes_a_state_without_it_before_offline(tmp_path: Path):
    queued = QueuedMessages()
    with EventStore(tmp_path / "a.db") as store:
        announcer = Announcer(store, lambda item: None, SessionTracker(SessionConfig(min_duration_s=20)), queued)
        announcer.start()
        announcer.after_store([window("kitchen", i) for i in range(3)], [])
        queued.log.clear()
        announcer.stop()
    assert [(kind, mic) for kind, mic, _ in queued.log] == [
        ("event", "kitchen"), ("state", "kitchen"), ("state", "hall"), ("offline", "")]
    assert queued.log[0][2]["event_type"] == "session_ended"
    kitchen, hall = queued.log[1][2], queued.log[2][2]
    assert (kitchen["activity"], kitchen["session"], kitchen["capture"], kitchen["rms_dbfs"]) == (
        "none", None, "stopped", -30.0)  # the last window's level and health, no session
    assert (hall["capture"], hall["rms_dbfs"]) == ("stopped", None)  # no window yet


def test_the_first_windows_null_to_ok_health_is_not_an_mqtt_event_but_a_fault_found_at_start_is(tmp_path: Path):
    queued = QueuedMessages()
    with EventStore(tmp_path / "a.db") as store:
        announcer = Announcer(store, lambda item: None, None, queued)
        announcer.after_store([window("kitchen", 0), window("hall", 0)], [
            StateChange("health_changed", "kitchen", 0, None, "ok"),
            StateChange("health_changed", "hall", 0, None, "faulty", ("dead_channel: silent",))])
    assert [(mic, e["previous"], e["current"]) for mic, e in queued.events] == [("hall", None, "faulty")]
