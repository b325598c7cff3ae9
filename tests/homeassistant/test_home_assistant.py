"""roomtone against a real Home Assistant Core (the version scripts/home-assistant-requirements.txt pins,
installed by `bash scripts/setup-home-assistant.sh`, which `scripts/setup.sh --test` runs; skipped without it,
failed without it under CI=true), a real mosquitto and the real daemon on a recording of real clips (30 s
each of speech, water and typing, looped), all on free loopback ports. Everything is checked through Home
Assistant's own APIs (REST, templates over its registries, websocket state changes): the device and every
entity with the names, device classes and icons a user sees, states, an activity sensor that changes with
the activity and not with every window, no health event at start, availability after SIGKILL, recovery with
the `session_ended` of the session the crash left open and no stale activity, and a clean stop that shows
no activity before `unavailable`.

The tests run in file order on one Home Assistant and one daemon, which they kill and restart on purpose
(module fixtures): Home Assistant starts once per run.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.homeassistant.ha_support import (HomeAssistant, StateLog, daemon_toml, free_port, require_home_assistant,
                                            varied_recording)

pytestmark = pytest.mark.slow

#: The bundled model's head classes, as Home Assistant must show them (service/announce/display_names.py).
CLASS_NAMES = ("Animals", "Footsteps and doors", "Motors and machines", "Quiet ambience", "Speech",
               "TV, speech or music", "Typing", "Water")
DEVICE = "roomtone kitchen"
NO_ACTIVITY = "No activity"


class Stack:
    """mosquitto, Home Assistant (onboarded, its state changes followed) and the daemon, started once."""

    def __init__(self, tmp: Path) -> None:
        from tests.service.mosquitto_broker import Broker, require_mosquitto

        require_home_assistant()
        require_mosquitto()
        self.tmp = tmp
        self.broker = Broker(tmp / "broker")
        self.ha = HomeAssistant(tmp / "ha", self.broker.port)
        self.log = self.daemon = None
        try:  # a start that fails half-way stops what did start: no Home Assistant outlives the test run
            self.broker.start()
            self.ha.start()
            self.ha.onboard()
            self.log = StateLog(self.ha)
            self.web_port = free_port()
            self.config = daemon_toml(tmp, self.broker.port, self.web_port, varied_recording(tmp / "kitchen.flac"))
            self.start_daemon()
        except BaseException:
            self.close()
            raise

    def start_daemon(self):
        from tests.service.daemon_support import DaemonProcess

        # the web port on the command line: tests/conftest.py sets ROOMTONE_WEB__PORT=0, which beats the file
        self.daemon = DaemonProcess(["--config", str(self.config), "--web-port", str(self.web_port)])
        self.daemon.wait_for("roomtone running", timeout=120)
        return self.daemon

    def entities(self) -> dict[str, str]:
        """entity_id -> friendly name of every entity of the device."""
        device_id = self.ha.device_id(DEVICE)
        assert device_id, f"Home Assistant has no device {DEVICE!r}"
        states = self.ha.states()
        return {e: states[e]["attributes"].get("friendly_name", "") for e in self.ha.device(device_id)["entities"]}

    def entity(self, name: str) -> str:
        """The entity_id of the device's entity called ``name`` (Home Assistant prefixes the device name)."""
        matches = [e for e, friendly in self.entities().items() if friendly == f"{DEVICE} {name}"]
        assert len(matches) == 1, f"no single entity {name!r}: {self.entities()}"
        return matches[0]

    def close(self) -> None:
        """Stop whatever runs, the daemon first (also after a start that failed half-way)."""
        if self.daemon is not None:
            self.daemon.stop()
        if self.log is not None:
            self.log.close()
        self.ha.stop()
        self.broker.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("home-assistant"))
    try:
        yield stack
    finally:
        stack.close()


def entity_count() -> int:
    return 1 + len(CLASS_NAMES) + 5  # activity, one binary sensor per class, level, last window, fault, health, events


def test_the_device_and_every_entity_appear_with_display_names_device_classes_and_icons(stack):
    ha = stack.ha
    ha.wait_until(lambda states: sum(1 for s in states.values() if s["attributes"].get("friendly_name", "")
                                     .startswith(DEVICE)) == entity_count(), 90, "every roomtone entity")
    device_id = ha.device_id(DEVICE)
    device = ha.device(device_id)
    assert (device["manufacturer"], device["model"], device["area"]) == ("roomtone", "roomtone sound monitor", "Kitchen")
    assert device["configuration_url"] == f"http://127.0.0.1:{stack.web_port}/"
    registry = ha.registry_entries(device_id)
    states = ha.states()
    shown = {states[e]["attributes"]["friendly_name"].removeprefix(DEVICE + " "): (
        states[e]["attributes"].get("device_class"), registry[e]["entity_category"], states[e]["attributes"].get("icon"))
        for e in device["entities"]}
    assert set(shown) == {"Activity", *CLASS_NAMES, "Sound level", "Last window", "Microphone fault", "Health", "Events"}
    for name in CLASS_NAMES:
        assert shown[name][0] == "sound" and shown[name][2].startswith("mdi:"), (name, shown[name])
    assert shown["Activity"][0] == "enum" and shown["Events"][2] == "mdi:bell-ring-outline"
    assert shown["Microphone fault"][:2] == ("problem", "diagnostic") and shown["Last window"][1] == "diagnostic"
    activity = states[stack.entity("Activity")]
    assert activity["attributes"]["options"][0] == NO_ACTIVITY and set(CLASS_NAMES) <= set(activity["attributes"]["options"])
    assert not any("_" in option for option in activity["attributes"]["options"]), "a raw label reached the UI"


def test_every_entity_gets_a_state_from_the_running_daemon(stack):
    ha = stack.ha
    level, health, fault = stack.entity("Sound level"), stack.entity("Health"), stack.entity("Microphone fault")
    states = ha.wait_until(lambda s: s if s[level]["state"] not in ("unknown", "unavailable") else None, 60,
                           "a sound level")
    assert -120.0 <= float(states[level]["state"]) <= 0 and states[level]["attributes"]["unit_of_measurement"] == "dBFS"
    assert states[health]["state"] in ("ok", "degraded", "faulty")
    assert states[fault]["state"] == ("off" if states[health]["state"] == "ok" else "on")
    activity = states[stack.entity("Activity")]
    assert activity["state"] in activity["attributes"]["options"]
    window = states[stack.entity("Last window")]
    assert window["attributes"]["probabilities"] and "_" not in window["state"]
    for name in CLASS_NAMES:
        expected = "on" if activity["state"] == name else "off"
        assert states[stack.entity(name)]["state"] == expected, name


def test_the_activity_sensor_changes_with_the_session_not_with_every_window(stack):
    ha, log = stack.ha, stack.log
    activity, level = stack.entity("Activity"), stack.entity("Sound level")
    ha.wait_until(lambda s: s[activity]["state"] not in (NO_ACTIVITY, "unknown", "unavailable"), 60, "an activity")
    mark = log.mark()
    time.sleep(8.5)  # four windows (a 2 s hop)
    assert len(log.since(mark, level)) >= 3, "the windows did not reach Home Assistant"
    for old, new in log.changes_since(mark, activity):
        assert (old["state"], old["attributes"].get("session_id")) != (new["state"], new["attributes"].get("session_id")), \
            f"the activity sensor changed with the same activity and session: {old['attributes']} -> {new['attributes']}"
    assert len(log.since(mark, activity)) < len(log.since(mark, level))


def test_no_health_event_reaches_home_assistant_for_the_first_window(stack):
    events = stack.entity("Events")
    fired = [new["attributes"] for new in stack.log.since(0, events) if new and new["state"] not in ("unknown", "unavailable")]
    assert not [e for e in fired if e.get("event_type") == "health_changed" and e.get("previous") is None
                and e.get("current") == "ok"], fired


def test_sigkill_makes_every_entity_unavailable_and_a_restart_recovers_with_the_crashed_sessions_end(stack):
    ha, log = stack.ha, stack.log
    activity_id = stack.entity("Activity")
    events_id = stack.entity("Events")
    entities = list(stack.entities())
    open_activity = ha.wait_until(lambda s: s[activity_id] if s[activity_id]["state"] not in (
        NO_ACTIVITY, "unknown", "unavailable") else None, 60, "an open session")
    session_id = open_activity["attributes"]["session_id"]
    binary = stack.entity(open_activity["state"])
    assert ha.states()[binary]["state"] == "on"

    stack.daemon.kill()
    killed = time.monotonic()
    ha.wait_until(lambda s: all(s[e]["state"] == "unavailable" for e in entities), 10, "every entity unavailable")
    unavailable_after = time.monotonic() - killed
    assert unavailable_after < 10

    mark = log.mark()
    stack.start_daemon()
    ended = ha.wait_until(lambda s: s[events_id]["attributes"] if s[events_id]["attributes"].get("event_type") ==
                          "session_ended" and s[events_id]["attributes"].get("session_id") == session_id else None,
                          60, f"session_ended for session {session_id}")
    assert ended["activity"] == open_activity["attributes"]["activity_id"]
    # after the restart Home Assistant never showed the crashed session as current
    first_activity = next(new for new in log.since(mark, activity_id) if new["state"] != "unavailable")
    assert first_activity["state"] == NO_ACTIVITY
    first_binary = next(new for new in log.since(mark, binary) if new["state"] != "unavailable")
    assert first_binary["state"] == "off"
    ha.wait_until(lambda s: all(s[e]["state"] != "unavailable" for e in entities), 30, "every entity available again")
    ha.wait_until(lambda s: s[activity_id]["state"] not in (NO_ACTIVITY, "unknown"), 60, "a new session")


def test_a_clean_stop_ends_the_session_and_shows_no_activity_before_unavailable(stack):
    ha, log = stack.ha, stack.log
    activity_id, events_id = stack.entity("Activity"), stack.entity("Events")
    ha.wait_until(lambda s: s[activity_id]["state"] not in (NO_ACTIVITY, "unknown", "unavailable"), 60, "a session")
    mark = log.mark()
    assert stack.daemon.stop() == 0
    stack.daemon = None
    ha.wait_until(lambda s: s[activity_id]["state"] == "unavailable", 20, "unavailable after the stop")
    shown = [new["state"] for new in log.since(mark, activity_id)]
    assert shown[-2:] == [NO_ACTIVITY, "unavailable"], shown
    fired = [new["attributes"].get("event_type") for new in log.since(mark, events_id) if new["state"] != "unavailable"]
    assert "session_ended" in fired, fired
