"""Specification of what roomtone publishes over MQTT (service/announce/mqtt_messages.py): topics, the state and
event payloads, and Home Assistant device discovery checked against the rules of Home Assistant's MQTT
integration (homeassistant/components/mqtt: discovery.py TOPIC_MATCHER, sensor.py and event.py schemas)."""

from __future__ import annotations

import json
import math
import re

import pytest

from service.announce import mqtt_messages as m
from service.records import WindowResult
from service.analysis.sessions import ActivitySession, SessionEvent

INFO = m.DeviceInfo(version="0.1.0", activities=("cooking", "dishes", "vacuum cleaner", "vacuum_cleaner"))
HA_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
# Home Assistant's device discovery topic pattern (discovery.py TOPIC_MATCHER after the prefix)
HA_TOPIC = re.compile(r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config")


def window(label: str | None = "cooking", rms: float = -31.25, health: str = "ok") -> WindowResult:
    return WindowResult("kitchen", 1_700_000_000_000, 1_700_000_010_000, label, {"cooking": 0.8, "dishes": 0.2},
                        health, ("hum: 50 Hz at -20 dB",) if health != "ok" else (), {"hum": -20.0}, rms)


def check_home_assistant_rules(component: dict) -> None:
    """The option rules Home Assistant's MQTT sensor/binary_sensor/event schemas enforce."""
    assert component["p"] in ("sensor", "binary_sensor", "event")
    assert HA_ID.match(component["unique_id"])
    if "options" in component:  # sensor.py validate_sensor_state_and_device_class_config
        assert component["options"], "an empty options list is not allowed"
        assert component.get("device_class") == "enum"
        assert "state_class" not in component and "unit_of_measurement" not in component
    if component["p"] == "event":
        assert component["event_types"] and all(isinstance(t, str) for t in component["event_types"])
    if component["p"] == "binary_sensor":
        assert component.get("device_class") in (None, "running", "sound", "problem")
    assert component.get("icon", "mdi:x").startswith("mdi:")


def test_discovery_is_one_device_per_microphone_with_origin_availability_and_components_home_assistant_accepts():
    payload = json.loads(json.dumps(m.discovery_payload("homeassistant", "roomtone", "kitchen", INFO)))
    topic = m.discovery_topic("homeassistant", "roomtone", "kitchen")
    match = HA_TOPIC.fullmatch(topic[len("homeassistant/"):])
    assert match and match["component"] == "device" and match["object_id"] == "roomtone_kitchen"
    assert payload["dev"]["ids"] == ["roomtone_kitchen"] and payload["dev"]["name"]
    assert payload["o"]["name"] == "roomtone" and payload["o"]["sw"] == "0.1.0"
    assert payload["availability"] == [{"topic": "roomtone/status", "payload_available": "online",
                                        "payload_not_available": "offline"}]
    assert payload["state_topic"] == "roomtone/kitchen/state"
    components = payload["cmps"]
    assert all(HA_ID.match(cid) for cid in components)
    for component in components.values():
        check_home_assistant_rules(component)
    unique_ids = [c["unique_id"] for c in components.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    # two labels with one display name ("Vacuum cleaner") are one option, and still two binary sensors
    assert components["activity"]["options"] == ["No activity", "Cooking", "Dishes", "Vacuum cleaner"]
    binary = {cid: c for cid, c in components.items() if c["p"] == "binary_sensor" and c["device_class"] == "sound"}
    assert set(binary) == {"activity_cooking", "activity_dishes", "activity_vacuum_cleaner", "activity_vacuum_cleaner_2"}
    assert components["level"]["unit_of_measurement"] == "dBFS" and components["level"]["state_class"] == "measurement"
    assert components["fault"]["device_class"] == "problem" and components["fault"]["entity_category"] == "diagnostic"
    assert components["events"]["state_topic"] == "roomtone/kitchen/event"
    assert set(components["events"]["event_types"]) == set(m.EVENT_TYPES)


def test_ids_home_assistant_refuses_are_rewritten_and_colliding_component_ids_stay_unique():
    assert m.discovery_id("Küche 1.mic") == "K_che_1_mic"
    assert m.discovery_id("vacuum-cleaner") == "vacuum-cleaner"
    assert m.device_id("home/roomtone", "living room") == "home_roomtone_living_room"
    ids = m.component_ids(("a b", "a_b", "a.b"))
    assert list(ids.values()) == ["activity_a_b", "activity_a_b_2", "activity_a_b_3"]


def test_the_state_carries_session_activity_window_label_level_and_health_flags():
    session = ActivitySession("kitchen", "cooking", 1_699_999_990_000, None, 2, 0.8, 1_700_000_010_000, 4)
    state = m.state_payload(window(health="degraded"), {"hum": True, "clipping": False}, session)
    assert state["activity"] == "cooking" and state["session"]["session_id"] == 4
    assert state["session"]["start"] == "2023-11-14T22:13:10.000Z"
    assert state["window_label"] == "cooking" and state["probabilities"] == {"cooking": 0.8, "dishes": 0.2}
    assert state["rms_dbfs"] == -31.25 and state["time"] == "2023-11-14T22:13:30.000Z"
    assert (state["health"], state["problem"], state["failing"]) == ("degraded", "ON", {"clipping": False, "hum": True})
    assert state["health_reasons"] == ["hum: 50 Hz at -20 dB"]


def test_without_a_session_the_activity_is_none_and_silence_is_a_finite_level():
    state = m.state_payload(window(label=None, rms=-math.inf), {}, None)
    assert state["activity"] == "none" and state["session"] is None and state["window_label"] is None
    assert state["rms_dbfs"] == m.SILENCE_DBFS
    json.dumps(state, allow_nan=False)  # strict JSON: Home Assistant cannot parse Infinity


def test_a_session_end_event_names_activity_times_and_duration():
    ended = SessionEvent("session_ended", ActivitySession("kitchen", "cooking", 0, 1_380_000, 120, 0.91, 1_380_000, 3),
                         1_380_000)
    payload = m.session_event_payload(ended)
    assert payload["event_type"] == "session_ended" and payload["activity"] == "cooking"
    assert (payload["start"], payload["end"], payload["duration_s"]) == ("1970-01-01T00:00:00.000Z",
                                                                         "1970-01-01T00:23:00.000Z", 1380.0)


@pytest.mark.parametrize("topic, config, expected", [
    ("homeassistant/device/roomtone_hall/config", {"o": {"name": "roomtone"}, "state_topic": "roomtone/hall/state"}, "hall"),
    ("homeassistant/device/roomtone_kitchen/config", {"o": {"name": "roomtone"}, "state_topic": "roomtone/kitchen/state"}, None),
    ("homeassistant/device/roomtone_hall/config", {"o": {"name": "zigbee2mqtt"}, "state_topic": "roomtone/hall/state"}, None),
    ("homeassistant/device/other_hall/config", {"o": {"name": "roomtone"}, "state_topic": "roomtone/hall/state"}, None),
    ("homeassistant/device/roomtone_hall/config", {"o": {"name": "roomtone"}, "state_topic": "elsewhere/hall/state"}, None),
])
def test_only_roomtones_own_config_for_an_unconfigured_microphone_counts_as_stale(topic, config, expected):
    assert m.stale_mic(topic, json.dumps(config).encode(), "homeassistant", "roomtone", {"kitchen"}) == expected
    assert m.stale_mic(topic, b"", "homeassistant", "roomtone", {"kitchen"}) is None  # already removed


BUNDLED = m.DeviceInfo(version="0.1.0", activities=("animals", "footsteps_doors", "tv_speech_music", "water"))


def test_home_assistant_shows_display_names_with_icons_never_raw_labels():
    components = m.discovery_payload("homeassistant", "roomtone", "kitchen", BUNDLED)["cmps"]
    assert components["activity"]["options"] == ["No activity", "Animals", "Footsteps and doors",
                                                 "TV, speech or music", "Water"]
    doors = components["activity_footsteps_doors"]
    assert (doors["name"], doors["device_class"], doors["icon"]) == ("Footsteps and doors", "sound", "mdi:door-open")
    assert components["events"]["icon"] == m.EVENTS_ICON
    assert all("icon" in c for cid, c in components.items() if cid.startswith("activity_"))
    state = m.state_payload(window(label="footsteps_doors"), {}, ActivitySession(
        "kitchen", "footsteps_doors", 0, None, 2, 0.9, 1_700_000_010_000, 1))
    assert (state["activity_name"], state["window_label_name"]) == ("Footsteps and doors", "Footsteps and doors")
    assert m.state_payload(window(), {}, None)["activity_name"] == "No activity"


def test_a_label_outside_the_table_reads_as_its_words_with_the_default_icon():
    from service.announce.display_names import DEFAULT_ICON, display_name, label_icon

    assert (display_name("kettle_boiling"), label_icon("kettle_boiling")) == ("Kettle boiling", DEFAULT_ICON)
    assert display_name("quiet") == "Quiet" and display_name("unknown") == "Unknown sound"


def render(template: str, state: dict):
    """A discovery template rendered as Home Assistant's MQTT integration does (value_json = the payload)."""
    import jinja2

    return jinja2.Environment().from_string(template).render(value_json=state, value=json.dumps(state))


def test_the_activity_sensors_state_and_attributes_change_with_the_activity_not_with_every_window():
    component = m.discovery_payload("homeassistant", "roomtone", "kitchen", INFO)["cmps"]["activity"]
    rendered = []
    for i, windows in enumerate((2, 3, 4)):  # three windows of one open session: probabilities and counts move
        session = ActivitySession("kitchen", "cooking", 1_699_999_990_000, None, windows, 0.8 - i / 10,
                                  1_700_000_010_000 + i * 10_000, 4)
        state = m.state_payload(window(), {"hum": i == 1}, session)
        state["probabilities"] = {"cooking": 0.9 - i / 10}
        rendered.append((render(component["value_template"], state),
                         json.loads(render(component["json_attributes_template"], state))))
    assert rendered[0] == rendered[1] == rendered[2]
    assert rendered[0] == ("Cooking", {"activity_id": "cooking", "session_id": 4, "started": "2023-11-14T22:13:10.000Z"})
    idle = m.state_payload(window(), {}, None)
    assert json.loads(render(component["json_attributes_template"], idle)) == {
        "activity_id": "none", "session_id": None, "started": None}


def test_the_last_window_is_a_separate_diagnostic_entity_with_the_probabilities():
    component = m.discovery_payload("homeassistant", "roomtone", "kitchen", INFO)["cmps"]["window"]
    assert component["entity_category"] == "diagnostic"
    state = m.state_payload(window(), {}, None)
    assert render(component["value_template"], state) == "Cooking"
    assert json.loads(render(component["json_attributes_template"], state)) == {
        "label": "cooking", "probabilities": {"cooking": 0.8, "dishes": 0.2}}


def test_the_device_suggests_the_configured_area_and_links_the_web_page_only_when_given():
    info = m.DeviceInfo(version="0.1.0", activities=("water",), areas={"kitchen": "Kitchen"},
                        configuration_url="http://127.0.0.1:9480/")
    kitchen = m.discovery_payload("homeassistant", "roomtone", "kitchen", info)["dev"]
    hall = m.discovery_payload("homeassistant", "roomtone", "hall", info)["dev"]
    assert (kitchen["sa"], kitchen["cu"]) == ("Kitchen", "http://127.0.0.1:9480/")
    assert "sa" not in hall and hall["cu"] == "http://127.0.0.1:9480/"
    assert not {"sa", "cu"} & set(m.discovery_payload("homeassistant", "roomtone", "hall", INFO)["dev"])


def test_the_start_and_stop_states_have_the_keys_of_a_window_state_and_no_session():
    keys = set(m.state_payload(window(), {}, None))
    starting = m.starting_payload("kitchen", 1_700_000_000_000)
    stopped = m.stopped_payload("kitchen", 1_700_000_000_000, window(health="degraded"), {"hum": True})
    assert set(starting) == set(stopped) == keys
    assert (starting["capture"], starting["health"], starting["problem"], starting["activity"]) == (
        "starting", None, None, "none")
    assert (stopped["capture"], stopped["health"], stopped["session"], stopped["rms_dbfs"]) == (
        "stopped", "degraded", None, -31.25)
