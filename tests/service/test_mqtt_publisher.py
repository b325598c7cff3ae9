"""Specification of the MQTT publisher against a real mosquitto broker: availability, discovery, states and
events arrive; a broker that is down, stops or is slow never blocks the caller, drops are counted and the
publisher reconnects; TLS and username/password work; stale microphones are removed from Home Assistant."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from mosquitto_broker import Broker, Recorder, free_port, make_test_ca, require_mosquitto
from service.announce import mqtt_messages as m
from service.config import ConfigError, MqttConfig, load_config
from service.announce.mqtt_publisher import MqttPublisher
from service.records import WindowResult
from service.analysis.sessions import ActivitySession, SessionEvent

INFO = m.DeviceInfo(version="0.1.0", activities=("cooking", "dishes"))


@pytest.fixture(autouse=True)
def _needs_mosquitto():
    require_mosquitto()


@pytest.fixture()
def broker(tmp_path: Path):
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


def publisher_for(broker: Broker, mics=("kitchen",), **keys) -> MqttPublisher:
    config = MqttConfig(**{**broker.mqtt_overrides(), "client_id": f"test-{time.monotonic_ns()}", **keys})
    return MqttPublisher(config, list(mics), INFO)


def state(mic: str = "kitchen", t: int = 0, rms: float = -42.5) -> dict:
    window = WindowResult(mic, t, t + 10_000, "cooking", {"cooking": 0.9, "dishes": 0.1}, "ok", (), {}, rms)
    return m.state_payload(window, {"clipping": False}, None)


def dropped(publisher: MqttPublisher, reason: str) -> float:
    return publisher.metrics.dropped.labels(reason=reason)._value.get()


def test_connecting_announces_online_and_publishes_retained_discovery_then_state_and_events(broker: Broker):
    recorder = Recorder(broker)
    publisher = publisher_for(broker)
    publisher.start()
    try:
        assert recorder.wait_for("roomtone/status", lambda p: p == b"online")
        config = recorder.wait_json("homeassistant/device/roomtone_kitchen/config")
        assert set(config) >= {"dev", "o", "cmps", "availability", "state_topic"}
        publisher.publish_state("kitchen", state(rms=-42.5))
        assert recorder.wait_json("roomtone/kitchen/state")["rms_dbfs"] == -42.5  # negative level as published
        publisher.publish_event("kitchen", m.sound_event_payload("kitchen", 0, "doorbell", 0.93))
        assert recorder.wait_json("roomtone/kitchen/event")["sound"] == "doorbell"
    finally:
        publisher.stop()
        recorder.close()
    late = Recorder(broker, client_id="late-subscriber")  # retained: what Home Assistant sees after a restart
    try:
        assert late.wait_for("roomtone/status") == b"offline"  # a clean stop says offline itself
        assert late.wait_json("roomtone/kitchen/state")["activity"] == "none"
        assert late.wait_json("homeassistant/device/roomtone_kitchen/config")["o"]["name"] == "roomtone"
        time.sleep(0.3)
        assert late.on("roomtone/kitchen/event") == []  # events are not retained
        assert {retain for topic, _, retain in late.messages} == {True}
    finally:
        late.close()


def test_the_first_connect_sends_the_start_state_before_online_and_the_start_events_after_it_once(broker: Broker):
    recorder = Recorder(broker)
    publisher = publisher_for(broker)
    ended = m.session_event_payload(SessionEvent("session_ended", ActivitySession(
        "kitchen", "cooking", 0, 20_000, 2, 0.9, 20_000, 7), 20_000))
    publisher.start(first=[("event", "kitchen", ended), ("state", "kitchen", m.starting_payload("kitchen", 30_000))])
    try:
        recorder.wait_json("roomtone/kitchen/event", lambda e: e["session_id"] == 7)
        order = [(topic, payload) for topic, payload, _ in recorder.messages if not topic.startswith("homeassistant/")]
        assert [topic for topic, _ in order] == ["roomtone/kitchen/state", "roomtone/status", "roomtone/kitchen/event"]
        assert json.loads(order[0][1])["capture"] == "starting" and order[1][1] == b"online"
        recorder.client.publish("homeassistant/status", "online", qos=1)  # Home Assistant restarts: a resync
        recorder.wait_for("roomtone/status", lambda p: p == b"online" and len(recorder.on("roomtone/status")) > 1)
        time.sleep(0.5)
        assert len(recorder.on("roomtone/kitchen/event")) == 1  # the start events went out once
    finally:
        publisher.stop()
        recorder.close()


def test_a_broker_that_is_down_at_start_is_connected_to_once_it_comes_up(tmp_path: Path):
    broker = Broker(tmp_path / "broker")
    publisher = publisher_for(broker)
    publisher.start()
    try:
        publisher.publish_state("kitchen", state(t=0))
        time.sleep(1.0)
        assert not publisher.is_connected and dropped(publisher, "disconnected") >= 1
        broker.start()
        recorder = Recorder(broker)
        # the state produced while the broker was down is republished once connected
        assert recorder.wait_json("roomtone/kitchen/state", lambda s: s["window_start_unix_ms"] == 0)["mic"] == "kitchen"
        assert publisher.metrics.connected._value.get() == 1
        recorder.close()
    finally:
        publisher.stop()
        broker.stop()


def test_a_broker_that_stops_mid_run_costs_counted_drops_and_the_publisher_reconnects(broker: Broker):
    publisher = publisher_for(broker)
    publisher.start()
    try:
        deadline = time.monotonic() + 10
        while not publisher.is_connected and time.monotonic() < deadline:
            time.sleep(0.05)
        broker.stop()
        time.sleep(0.5)
        started = time.perf_counter()
        for i in range(50):
            publisher.publish_state("kitchen", state(t=i * 10_000))
        assert time.perf_counter() - started < 0.5  # the caller never waits for the broker
        time.sleep(0.5)
        assert dropped(publisher, "disconnected") >= 1
        broker.start()
        recorder = Recorder(broker)
        latest = recorder.wait_json("roomtone/kitchen/state", lambda s: s["window_start_unix_ms"] == 490_000)
        assert latest["mic"] == "kitchen"
        assert recorder.wait_for("roomtone/status") == b"online"
        recorder.close()
    finally:
        publisher.stop()


def test_a_full_queue_drops_and_counts_instead_of_blocking(tmp_path: Path):
    # Not started: no worker drains the queue, as when it is stuck behind a slow broker. (A started one drained
    # 139 of 1,000 into its "disconnected" drops under load, which made an exact count here a race.)
    config = MqttConfig(host="127.0.0.1", port=free_port(), queue_size=2)
    publisher = MqttPublisher(config, ["kitchen"], INFO)
    started = time.perf_counter()
    accepted = [publisher.publish_state("kitchen", state(t=i)) for i in range(1000)]
    assert time.perf_counter() - started < 0.5
    assert accepted[:2] == [True, True] and accepted.count(True) == 2
    assert dropped(publisher, "queue_full") == 998


def test_connection_errors_are_logged_once_per_interval_not_once_per_attempt(tmp_path: Path, caplog):
    config = MqttConfig(host="127.0.0.1", port=free_port(), reconnect_min_s=0.1, reconnect_max_s=0.1,
                        error_log_interval_s=60)
    publisher = MqttPublisher(config, ["kitchen"], INFO)
    with caplog.at_level(logging.WARNING, logger="roomtone.mqtt"):
        publisher.start()
        time.sleep(2.0)  # ~10 attempts
        publisher.stop()
    lines = [r for r in caplog.records if r.getMessage().startswith("MQTT broker unavailable")]
    assert len(lines) == 1 and "cannot connect" in lines[0].error


def test_tls_with_a_test_ca_and_username_password(tmp_path: Path):
    broker = Broker(tmp_path / "secure", tls=True, auth=True).start()
    try:
        recorder = Recorder(broker)
        publisher = publisher_for(broker)
        publisher.start()
        try:
            assert recorder.wait_for("roomtone/status", lambda p: p == b"online")
            publisher.publish_state("kitchen", state())
            assert recorder.wait_json("roomtone/kitchen/state")["mic"] == "kitchen"
        finally:
            publisher.stop()
            recorder.close()
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-password\n")
        other_ca, _, _ = make_test_ca(tmp_path / "other-ca")
        refused = [publisher_for(broker, password_file=str(wrong)), publisher_for(broker, tls_ca=str(other_ca))]
        for publisher in refused:
            publisher.start()
        time.sleep(1.5)
        assert [p.is_connected for p in refused] == [False, False]  # wrong password; broker not signed by that CA
        for publisher in refused:
            publisher.stop()
    finally:
        broker.stop()


def test_home_assistant_coming_online_gets_discovery_again(broker: Broker):
    recorder = Recorder(broker, topics=("homeassistant/device/#",))
    publisher = publisher_for(broker)
    publisher.start()
    try:
        topic = "homeassistant/device/roomtone_kitchen/config"
        recorder.wait_for(topic)
        before = len(recorder.on(topic))
        announcer = Recorder(broker, topics=("unused",), client_id="home-assistant")
        announcer.client.publish("homeassistant/status", "online", qos=1)
        deadline = time.monotonic() + 10
        while len(recorder.on(topic)) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(recorder.on(topic)) > before
        announcer.close()
    finally:
        publisher.stop()
        recorder.close()


def test_a_microphone_removed_from_the_config_gets_empty_retained_discovery_and_state(broker: Broker):
    first = publisher_for(broker, mics=("kitchen", "hall"))
    first.start()
    recorder = Recorder(broker)
    recorder.wait_for("homeassistant/device/roomtone_hall/config", lambda p: p != b"")
    first.publish_state("hall", state(mic="hall"))
    recorder.wait_for("roomtone/hall/state")
    first.stop()
    second = publisher_for(broker, mics=("kitchen",))
    second.start()
    try:
        recorder.wait_for("homeassistant/device/roomtone_hall/config", lambda p: p == b"")
        recorder.wait_for("roomtone/hall/state", lambda p: p == b"")
        late = Recorder(broker, client_id="late")
        time.sleep(0.5)
        assert late.on("homeassistant/device/roomtone_hall/config") == []  # nothing retained any more
        assert json.loads(late.on("homeassistant/device/roomtone_kitchen/config")[0])["dev"]["ids"] == ["roomtone_kitchen"]
        late.close()
    finally:
        second.stop()
        recorder.close()


def test_config_errors_name_the_key_and_environment_variables_reach_the_section(tmp_path: Path):
    def load(mqtt: dict, environ: dict | None = None, mics: list | None = None):
        return load_config(None, {"mqtt": mqtt, **({"mics": mics} if mics else {})}, environ=environ or {})

    for keys, key in (({"host": "h", "base_topic": "roomtone/#"}, "mqtt.base_topic"), ({"host": "h", "port": 0}, "mqtt.port"),
                      ({"host": "h", "username": "u", "password_file": str(tmp_path / "missing")}, "mqtt.password_file"),
                      ({"host": "h", "tls_ca": str(tmp_path / "missing.pem")}, "mqtt.tls_ca"),
                      ({"host": "h", "password_file": str(tmp_path)}, "mqtt.password_file")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load(keys)
    with pytest.raises(ConfigError, match="'a/b'"):
        load({"host": "h"}, mics=[{"id": "a/b", "kind": "demo"}])
    config = load({}, environ={"ROOMTONE_MQTT__HOST": "broker.lan", "ROOMTONE_MQTT__PORT": "8883"})
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.enabled) == ("broker.lan", 8883, True)
    assert not MqttConfig().enabled and MqttConfig().discovery  # off without a host; discovery on once configured
