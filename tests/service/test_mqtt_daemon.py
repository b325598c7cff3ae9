"""The daemon with MQTT against a real mosquitto: discovery, state and session events arrive for a running
daemon; kill -9 turns availability offline through the last will; a broker that is down at start or
stops mid-run never stops windows from being stored, drops are counted and the daemon (re)connects."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from daemon_support import DaemonProcess, isolated_args
from mosquitto_broker import Broker, Recorder, require_mosquitto
from service.config import load_config
from service.daemon import Daemon
from service.store.event_store import EventStore


@pytest.fixture(autouse=True)
def _needs_mosquitto():
    require_mosquitto()


def daemon_config(tmp_path: Path, model: Path, mic: dict, broker: Broker, **sections):
    return load_config(None, {
        "model": str(model), "data_dir": str(tmp_path / "data"), "mics": [mic],
        "grpc": {"address": "127.0.0.1:0"}, "metrics": {"port": 0},
        "mqtt": {**broker.mqtt_overrides(), "client_id": f"daemon-{time.monotonic_ns()}"}, **sections,
    }, environ={})


def dropped(daemon: Daemon, reason: str) -> float:
    return daemon.metrics.registry.get_sample_value("roomtone_mqtt_messages_dropped_total", {"reason": reason})


def test_a_running_daemon_publishes_discovery_state_and_one_session_start_and_end(small_model, homesounds, tmp_path):
    broker = Broker(tmp_path / "broker").start()
    recorder = Recorder(broker)
    clip = homesounds / "audio" / "speech" / "speech_A2_000.flac"  # the same 10 s every window: one activity
    config = daemon_config(tmp_path, small_model, {"id": "desk", "kind": "file", "path": str(clip), "realtime": False,
                                                   "loop": True}, broker, pipeline={"max_windows": 6},
                           sessions={"min_duration_s": 20, "gap_tolerance_s": 30})
    daemon = Daemon(config)
    try:
        daemon.start()
        assert daemon.wait() == "pipeline.max_windows=6 reached"
    finally:
        daemon.stop()
    try:
        discovery = recorder.wait_json("homeassistant/device/roomtone_desk/config")
        assert sorted(discovery["cmps"]["activity"]["options"]) == ["No activity", "Speech", "Typing", "Water"]
        state = recorder.wait_json("roomtone/desk/state", lambda s: s["session"] is not None)
        activity = state["activity"]
        assert activity in ("water", "typing", "speech") and state["window_label"] == activity
        events = [json.loads(p) for p in recorder.on("roomtone/desk/event")]
        session_events = [(e["event_type"], e["activity"]) for e in events if e["event_type"].startswith("session")]
        assert session_events == [("session_started", activity), ("session_ended", activity)]  # once on, once off
        ended = [e for e in events if e["event_type"] == "session_ended"][0]
        with EventStore(tmp_path / "data" / "roomtone.db") as store:
            labels = [w.label for w in store.list_windows(limit=1000).items]
        assert len(labels) >= 6 and ended["windows"] == labels.count(activity)  # windows in flight at the stop are kept
        assert ended["duration_s"] == round((ended["end_unix_ms"] - ended["start_unix_ms"]) / 1000, 1) >= 20
        assert recorder.wait_for("roomtone/status", lambda p: p == b"offline")
        assert daemon.metrics.registry.get_sample_value("roomtone_mqtt_messages_published_total") >= len(events)
    finally:
        recorder.close()
        broker.stop()
    with EventStore(tmp_path / "data" / "roomtone.db") as store:
        [session] = store.list_sessions().sessions
    assert (session.activity, session.windows, session.is_open) == (activity, labels.count(activity), False)


def test_kill_9_turns_availability_offline_through_the_last_will(small_model, tmp_path):
    broker = Broker(tmp_path / "broker").start()
    recorder = Recorder(broker, topics=("roomtone/status",))
    env = {**os.environ, "ROOMTONE_MQTT__HOST": "127.0.0.1", "ROOMTONE_MQTT__PORT": str(broker.port),
           "PULSE_SERVER": "unix:/nonexistent"}
    daemon = DaemonProcess([*isolated_args(tmp_path / "data"), "--model", str(small_model), "--demo"], env=env)
    try:
        daemon.wait_for("MQTT connected", 60)
        recorder.wait_for("roomtone/status", lambda p: p == b"online")
        daemon.kill()  # SIGKILL: no clean-up of any kind
        recorder.wait_for("roomtone/status", lambda p: p == b"offline", timeout=15)
        assert recorder.on("roomtone/status")[-1] == b"offline"
    finally:
        daemon.kill()
        recorder.close()
        broker.stop()


def test_a_broker_down_at_start_and_stopping_mid_run_never_stops_windows_from_being_stored(small_model, tmp_path):
    broker = Broker(tmp_path / "broker")  # not started yet
    config = daemon_config(tmp_path, small_model, {"id": "desk", "kind": "demo"}, broker,
                           pipeline={"window_s": 1.0, "hop_s": 1.0})
    daemon = Daemon(config)
    daemon.start()
    try:
        def stored() -> int:
            return daemon.pipeline.stats.windows_stored

        deadline = time.monotonic() + 30
        while stored() < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stored() >= 3 and dropped(daemon, "disconnected") >= 1  # windows go on without a broker
        broker.start()
        recorder = Recorder(broker)
        recorder.wait_for("roomtone/status", lambda p: p == b"online", timeout=20)
        recorder.wait_json("roomtone/desk/state", timeout=20)
        broker.stop()  # mid-run
        before_stored, before_dropped = stored(), dropped(daemon, "disconnected")
        time.sleep(3.0)
        assert stored() >= before_stored + 2 and dropped(daemon, "disconnected") > before_dropped
        broker.start()
        again = Recorder(broker, client_id="again")
        last = stored()
        again.wait_json("roomtone/desk/state", lambda s: s["window_end_unix_ms"] > 0, timeout=20)
        again.wait_for("roomtone/status", lambda p: p == b"online", timeout=20)
        deadline = time.monotonic() + 10
        while stored() <= last and time.monotonic() < deadline:
            time.sleep(0.1)
        assert daemon.metrics.registry.get_sample_value("roomtone_mqtt_connected") == 1
        recorder.close()
        again.close()
    finally:
        daemon.stop()
        broker.stop()


def test_the_mqtt_metrics_are_documented_in_the_readme_and_daemon_docs():
    from prometheus_client import CollectorRegistry

    from service.announce.mqtt_publisher import PublisherMetrics

    registry = CollectorRegistry()
    PublisherMetrics(registry)
    names = {metric.name + ("_total" if metric.type == "counter" else "") for metric in registry.collect()}
    assert names == {"roomtone_mqtt_messages_published_total", "roomtone_mqtt_messages_dropped_total",
                     "roomtone_mqtt_connected", "roomtone_mqtt_ack_stalls_total"}
    for doc in ("README.md", "docs/daemon.md", "docs/mqtt.md"):
        text = (Path(__file__).resolve().parents[2] / doc).read_text()
        assert all(f"`{name}`" in text for name in names), doc


def test_a_custom_sound_detected_by_the_daemon_arrives_as_an_mqtt_event(small_model, tmp_path):
    from service.config import DEMO_CLIP

    broker = Broker(tmp_path / "broker").start()
    recorder = Recorder(broker, topics=("roomtone/+/event",))
    config = daemon_config(tmp_path, small_model, {"id": "desk", "kind": "demo"}, broker,
                           pipeline={"window_s": 1.0, "hop_s": 1.0})
    daemon = Daemon(config)
    daemon.start()
    try:
        # taught from the very recording the microphone plays, with a threshold every window reaches
        daemon.sounds.add("door", audio=[("demo.flac", DEMO_CLIP.read_bytes())], threshold=-1.0)
        event = recorder.wait_json("roomtone/desk/event", lambda e: e["event_type"] == "sound_detected", timeout=30)
        assert event["sound"] == "door" and -1.0 <= event["score"] <= 1.0 and event["mic"] == "desk"
        assert 0 <= event["start_offset_ms"] < event["end_offset_ms"] <= 1000  # where in the 1 s window
    finally:
        daemon.stop()
        recorder.close()
        broker.stop()
