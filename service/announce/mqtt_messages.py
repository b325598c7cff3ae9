"""What roomtone publishes over MQTT, as pure functions: topic names, the per-microphone state payload,
one-off event payloads and the Home Assistant device discovery payload. docs/mqtt.md documents each one;
service/announce/mqtt_publisher.py sends them.

Topics (``base`` = mqtt.base_topic, ``prefix`` = mqtt.discovery_prefix):

    <base>/status                  online / offline (retained; offline is the MQTT last will)
    <base>/<mic>/state             JSON state of the microphone's latest window (retained)
    <base>/<mic>/event             JSON one-off events: session_started, session_ended, health_changed,
                                   sound_detected (not retained)
    <prefix>/device/<node>_<mic>/config   Home Assistant device discovery (retained)

Each microphone has its own state topic (one shared topic lets one source reset another's sensors).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from service.announce.display_names import NO_ACTIVITY, display_name, label_icon
from service.records import HEALTH_STATES, MicStatus, WindowResult
from service.analysis.sessions import ActivitySession, SessionEvent
from service.daemon_vocabulary import HEALTH_CHANGED, SESSION_ENDED, SESSION_STARTED, SOUND_DETECTED, STARTING, STOPPED
from service.daemon_vocabulary import device_id, discovery_id  # noqa: F401 (topic names are built here)

ONLINE, OFFLINE = "online", "offline"
#: Level published for digital silence (a finite number: Home Assistant's numeric sensors reject -inf).
SILENCE_DBFS = -120.0
#: One-off events on <base>/<mic>/event; the Home Assistant event entity declares exactly these.
EVENT_TYPES = (SESSION_STARTED, SESSION_ENDED, HEALTH_CHANGED, SOUND_DETECTED)
EVENTS_ICON = "mdi:bell-ring-outline"
ORIGIN_NAME = "roomtone"


def availability_topic(base: str) -> str:
    """Where roomtone says online/offline."""
    return f"{base}/status"


def state_topic(base: str, mic_id: str) -> str:
    """The microphone's retained state topic."""
    return f"{base}/{mic_id}/state"


def event_topic(base: str, mic_id: str) -> str:
    """The microphone's one-off event topic."""
    return f"{base}/{mic_id}/event"


def discovery_topic(prefix: str, base: str, mic_id: str) -> str:
    """The microphone's device discovery topic."""
    return f"{prefix}/device/{device_id(base, mic_id)}/config"


def iso_time(unix_ms: int) -> str:
    """UTC ISO 8601 with milliseconds and a Z (what Home Assistant's timestamp sensors parse)."""
    return datetime.fromtimestamp(unix_ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _finite(value: float) -> float:
    return round(float(value), 2) if math.isfinite(value) else SILENCE_DBFS


def _session_fields(session: ActivitySession) -> dict[str, Any]:
    fields: dict[str, Any] = {"session_id": session.session_id, "activity": session.activity,
                              "start": iso_time(session.start_unix_ms), "start_unix_ms": session.start_unix_ms}
    if session.end_unix_ms is not None:
        fields.update(end=iso_time(session.end_unix_ms), end_unix_ms=session.end_unix_ms,
                      duration_s=round((session.end_unix_ms - session.start_unix_ms) / 1000, 1))
    fields.update(windows=session.windows, mean_probability=session.mean_probability)
    return fields


def _activity_fields(session: ActivitySession | None) -> dict[str, Any]:
    activity = session.activity if session is not None else NO_ACTIVITY
    return {"activity": activity, "activity_name": display_name(activity),
            "session": _session_fields(session) if session is not None else None}


def state_payload(window: WindowResult, failing: dict[str, bool], session: ActivitySession | None,
                  capture: str = "running") -> dict[str, Any]:
    """The retained state of a microphone after ``window``: activity (the open session's, else "none") with
    its display name, the window's own label and probabilities, level, health with reasons and per-check
    failing flags, and the capture state (``stopped`` in the last state before a clean stop)."""
    return {
        "mic": window.mic_id,
        "time": iso_time(window.end_unix_ms),
        "window_start_unix_ms": int(window.start_unix_ms),
        "window_end_unix_ms": int(window.end_unix_ms),
        **_activity_fields(session),
        "window_label": window.label,
        "window_label_name": display_name(window.label) if window.label is not None else None,
        "probabilities": {k: round(float(v), 4) for k, v in window.probabilities.items()},
        "rms_dbfs": _finite(window.rms_dbfs),
        "health": window.health_state,
        "problem": "OFF" if window.health_state == "ok" else "ON",
        "health_reasons": list(window.health_reasons),
        "failing": {k: bool(v) for k, v in sorted(failing.items())},
        "health_scores": {k: round(float(v), 4) for k, v in sorted(window.health_scores.items())},
        "capture": capture,
    }


def _windowless_payload(mic_id: str, now_unix_ms: int, session: ActivitySession | None, capture: str,
                        health: str | None, problem: str | None, reasons: list[str]) -> dict[str, Any]:
    """A state with the keys of `state_payload` but no window: no level, label or window times (null:
    Home Assistant shows "unknown" rather than a stale value)."""
    return {
        "mic": mic_id, "time": iso_time(now_unix_ms), "window_start_unix_ms": None, "window_end_unix_ms": None,
        **_activity_fields(session), "window_label": None, "window_label_name": None, "probabilities": {},
        "rms_dbfs": None, "health": health, "problem": problem, "health_reasons": reasons, "failing": {},
        "health_scores": {}, "capture": capture,
    }


def capture_lost_payload(status: MicStatus, now_unix_ms: int, session: ActivitySession | None) -> dict[str, Any]:
    """The retained state of a microphone that delivers no audio (capture ``reopening`` or ``failed``):
    health faulty with the no-input reason, no level and no window."""
    return _windowless_payload(status.mic_id, now_unix_ms, session, status.state, status.health_state or "faulty",
                               "ON", list(status.health_reasons))


def starting_payload(mic_id: str, now_unix_ms: int) -> dict[str, Any]:
    """The retained state published when the daemon starts, before the microphone's first window: no open
    session (a crash's sessions were closed at start), health and level not known yet."""
    return _windowless_payload(mic_id, now_unix_ms, None, STARTING, None, None, [])


def stopped_payload(mic_id: str, now_unix_ms: int, last: WindowResult | None,
                    failing: dict[str, bool]) -> dict[str, Any]:
    """The retained state published on a clean stop, after the open sessions ended and before ``offline``:
    the last window's level and health, no session, capture ``stopped``."""
    if last is None:
        return _windowless_payload(mic_id, now_unix_ms, None, STOPPED, None, None, [])
    return state_payload(last, failing, None, capture=STOPPED)


def session_event_payload(event: SessionEvent) -> dict[str, Any]:
    """The event message of a session start or end."""
    return {"event_type": event.kind, "mic": event.mic_id, "time": iso_time(event.time_unix_ms),
            **_session_fields(event.session)}


def health_event_payload(mic_id: str, time_unix_ms: int, previous: str | None, current: str,
                         reasons: tuple[str, ...]) -> dict[str, Any]:
    """The event message of a health state change."""
    return {"event_type": HEALTH_CHANGED, "mic": mic_id, "time": iso_time(time_unix_ms), "previous": previous,
            "current": current, "reasons": list(reasons)}


def sound_event_payload(mic_id: str, time_unix_ms: int, sound: str, score: float | None = None,
                        start_offset_ms: int | None = None, end_offset_ms: int | None = None) -> dict[str, Any]:
    """The event message of a custom sound detection (``time``: the window's start; the offsets say where in
    the window the sound was heard, ms from that start, and ``sound_time`` is the absolute start)."""
    payload: dict[str, Any] = {"event_type": SOUND_DETECTED, "mic": mic_id, "time": iso_time(time_unix_ms),
                               "sound": sound}
    if score is not None:
        payload["score"] = round(float(score), 4)
    if start_offset_ms is not None and end_offset_ms is not None:
        payload.update(start_offset_ms=int(start_offset_ms), end_offset_ms=int(end_offset_ms),
                       sound_time=iso_time(time_unix_ms + int(start_offset_ms)))
    return payload


@dataclass(frozen=True)
class DeviceInfo:
    """What discovery says about the installation: version, the activities sessions can report, each
    microphone's suggested Home Assistant area, and the web page's address (Home Assistant links to it)."""

    version: str
    activities: tuple[str, ...]  # labels a session can have (head classes plus extra labels, minus ignored ones)
    model: str = "roomtone sound monitor"
    areas: Mapping[str, str] = field(default_factory=dict)  # mic -> suggested_area ([[mics]] area)
    configuration_url: str | None = None  # the web page, when it is served


def component_ids(activities: tuple[str, ...]) -> dict[str, str]:
    """Activity -> its binary sensor's component id (``activity_<id>``), unique even when two names map to
    the same characters."""
    out: dict[str, str] = {}
    for activity in activities:
        candidate, n = f"activity_{discovery_id(activity)}", 2
        while candidate in out.values():
            candidate, n = f"activity_{discovery_id(activity)}_{n}", n + 1
        out[activity] = candidate
    return out


def activity_options(activities: tuple[str, ...]) -> list[str]:
    """The activity sensor's states: the display name of "none" and of every activity, each once."""
    return list(dict.fromkeys(display_name(a) for a in (NO_ACTIVITY, *activities)))


#: The activity sensor's attributes: only what changes with the activity (not with every window, which
#: would write a recorder row and fire state triggers every window).
_ACTIVITY_ATTRIBUTES = ("{{ {'activity_id': value_json.activity, "
                        "'session_id': (value_json.session or {}).get('session_id'), "
                        "'started': (value_json.session or {}).get('start')} | tojson }}")


def discovery_payload(prefix: str, base: str, mic_id: str, info: DeviceInfo) -> dict[str, Any]:
    """Home Assistant device-based discovery for one microphone: a device (``dev``), the origin (``o``),
    shared availability and state topic, and its components (``cmps``), each with a ``unique_id``."""
    node = device_id(base, mic_id)
    state = state_topic(base, mic_id)
    components: dict[str, dict[str, Any]] = {
        "activity": {
            "p": "sensor", "name": "Activity", "unique_id": f"{node}_activity", "device_class": "enum",
            "options": activity_options(info.activities), "icon": "mdi:home-sound-in",
            "value_template": "{{ value_json.activity_name }}",
            "json_attributes_topic": state, "json_attributes_template": _ACTIVITY_ATTRIBUTES,
        },
    }
    for activity, component in component_ids(info.activities).items():
        components[component] = {
            "p": "binary_sensor", "name": display_name(activity), "unique_id": f"{node}_{component}",
            "device_class": "sound", "icon": label_icon(activity),
            "value_template": "{{ 'ON' if value_json.activity == %s else 'OFF' }}" % json.dumps(activity),
        }
    components["level"] = {
        "p": "sensor", "name": "Sound level", "unique_id": f"{node}_level", "unit_of_measurement": "dBFS",
        "state_class": "measurement", "suggested_display_precision": 1, "icon": "mdi:waveform",
        "value_template": "{{ value_json.rms_dbfs }}",
    }
    components["window"] = {
        "p": "sensor", "name": "Last window", "unique_id": f"{node}_window", "entity_category": "diagnostic",
        "icon": "mdi:timeline-clock-outline", "value_template": "{{ value_json.window_label_name }}",
        "json_attributes_topic": state,
        "json_attributes_template": "{{ {'label': value_json.window_label, "
                                    "'probabilities': value_json.probabilities} | tojson }}",
    }
    components["fault"] = {
        "p": "binary_sensor", "name": "Microphone fault", "unique_id": f"{node}_fault", "device_class": "problem",
        "entity_category": "diagnostic", "value_template": "{{ value_json.problem }}",
        "json_attributes_topic": state,
        "json_attributes_template": "{{ {'health': value_json.health, 'reasons': value_json.health_reasons, "
                                    "'failing': value_json.failing} | tojson }}",
    }
    components["health"] = {
        "p": "sensor", "name": "Health", "unique_id": f"{node}_health", "device_class": "enum",
        "options": list(HEALTH_STATES), "entity_category": "diagnostic", "icon": "mdi:microphone-question",
        "value_template": "{{ value_json.health }}",
    }
    components["events"] = {
        "p": "event", "name": "Events", "unique_id": f"{node}_events", "event_types": list(EVENT_TYPES),
        "icon": EVENTS_ICON, "state_topic": event_topic(base, mic_id),
    }
    device: dict[str, Any] = {"ids": [node], "name": f"roomtone {mic_id}", "mf": "roomtone", "mdl": info.model,
                              "sw": info.version}
    if info.areas.get(mic_id):
        device["sa"] = info.areas[mic_id]
    if info.configuration_url:
        device["cu"] = info.configuration_url
    return {
        "dev": device,
        "o": {"name": ORIGIN_NAME, "sw": info.version},
        "availability": [{"topic": availability_topic(base), "payload_available": ONLINE,
                          "payload_not_available": OFFLINE}],
        "state_topic": state,
        "qos": 1,
        "cmps": components,
    }


def stale_mic(topic: str, payload: bytes, prefix: str, base: str, configured: set[str]) -> str | None:
    """The microphone id of a retained discovery config roomtone published for a microphone that is no
    longer configured (so it should be removed), else None."""
    node = discovery_id(base) + "_"
    match = re.fullmatch(re.escape(prefix) + r"/device/([a-zA-Z0-9_-]+)/config", topic)
    if not match or not match.group(1).startswith(node) or not payload:
        return None
    try:
        config = json.loads(payload)
        origin = config.get("o") or config.get("origin") or {}
        state = config.get("state_topic") or config.get("stat_t") or ""
    except (ValueError, AttributeError):
        return None
    if not isinstance(origin, dict) or origin.get("name") != ORIGIN_NAME or not isinstance(state, str):
        return None
    if not (state.startswith(base + "/") and state.endswith("/state")):
        return None
    mic = state[len(base) + 1:-len("/state")]
    return None if mic in configured or "/" in mic else mic
