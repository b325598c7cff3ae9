"""What roomtone publishes over MQTT, as pure functions: topic names, the per-microphone state payload,
one-off event payloads and the Home Assistant device discovery payload. docs/mqtt.md documents each one;
service/mqtt_publisher.py sends them.

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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from service.records import HEALTH_STATES, MicStatus, WindowResult
from service.sessions import ActivitySession, SessionEvent
from service.vocabulary import HEALTH_CHANGED, SESSION_ENDED, SESSION_STARTED, SOUND_DETECTED

ONLINE, OFFLINE = "online", "offline"
#: Value of the activity sensor while no session is open.
NO_ACTIVITY = "none"
#: Level published for digital silence (a finite number: Home Assistant's numeric sensors reject -inf).
SILENCE_DBFS = -120.0
#: One-off events on <base>/<mic>/event; the Home Assistant event entity declares exactly these.
EVENT_TYPES = (SESSION_STARTED, SESSION_ENDED, HEALTH_CHANGED, SOUND_DETECTED)
ORIGIN_NAME = "roomtone"
_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")


def discovery_id(text: str) -> str:
    """``text`` with every character Home Assistant refuses in discovery ids (outside [a-zA-Z0-9_-]) as "_"."""
    return _ID_CHARS.sub("_", text) or "_"


def availability_topic(base: str) -> str:
    """Where roomtone says online/offline."""
    return f"{base}/status"


def state_topic(base: str, mic_id: str) -> str:
    """The microphone's retained state topic."""
    return f"{base}/{mic_id}/state"


def event_topic(base: str, mic_id: str) -> str:
    """The microphone's one-off event topic."""
    return f"{base}/{mic_id}/event"


def device_id(base: str, mic_id: str) -> str:
    """Home Assistant device id of a microphone: ``<node>_<mic>`` with node = the base topic."""
    return f"{discovery_id(base)}_{discovery_id(mic_id)}"


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


def state_payload(window: WindowResult, failing: dict[str, bool], session: ActivitySession | None) -> dict[str, Any]:
    """The retained state of a microphone after ``window``: activity (the open session's, else "none"),
    the window's own label and probabilities, level, health with reasons and per-check failing flags."""
    return {
        "mic": window.mic_id,
        "time": iso_time(window.end_unix_ms),
        "window_start_unix_ms": int(window.start_unix_ms),
        "window_end_unix_ms": int(window.end_unix_ms),
        "activity": session.activity if session is not None else NO_ACTIVITY,
        "session": _session_fields(session) if session is not None else None,
        "window_label": window.label,
        "probabilities": {k: round(float(v), 4) for k, v in window.probabilities.items()},
        "rms_dbfs": _finite(window.rms_dbfs),
        "health": window.health_state,
        "problem": "OFF" if window.health_state == "ok" else "ON",
        "health_reasons": list(window.health_reasons),
        "failing": {k: bool(v) for k, v in sorted(failing.items())},
        "health_scores": {k: round(float(v), 4) for k, v in sorted(window.health_scores.items())},
        "capture": "running",
    }


def capture_lost_payload(status: MicStatus, now_unix_ms: int, session: ActivitySession | None) -> dict[str, Any]:
    """The retained state of a microphone that delivers no audio (capture ``reopening`` or ``failed``): the
    same keys as `state_payload`, health faulty with the no-input reason, no level and no window."""
    return {
        "mic": status.mic_id, "time": iso_time(now_unix_ms), "window_start_unix_ms": None, "window_end_unix_ms": None,
        "activity": session.activity if session is not None else NO_ACTIVITY,
        "session": _session_fields(session) if session is not None else None,
        "window_label": None, "probabilities": {}, "rms_dbfs": None,  # null: Home Assistant shows "unknown"
        "health": status.health_state or "faulty", "problem": "ON", "health_reasons": list(status.health_reasons),
        "failing": {}, "health_scores": {}, "capture": status.state,
    }


def session_event_payload(event: SessionEvent) -> dict[str, Any]:
    """The event message of a session start or end."""
    return {"event_type": event.kind, "mic": event.mic_id, "time": iso_time(event.time_unix_ms),
            **_session_fields(event.session)}


def health_event_payload(mic_id: str, time_unix_ms: int, previous: str | None, current: str,
                         reasons: tuple[str, ...]) -> dict[str, Any]:
    """The event message of a health state change."""
    return {"event_type": HEALTH_CHANGED, "mic": mic_id, "time": iso_time(time_unix_ms), "previous": previous,
            "current": current, "reasons": list(reasons)}


def sound_event_payload(mic_id: str, time_unix_ms: int, sound: str, score: float | None = None) -> dict[str, Any]:
    """The event message of a custom sound detection."""
    payload: dict[str, Any] = {"event_type": SOUND_DETECTED, "mic": mic_id, "time": iso_time(time_unix_ms),
                               "sound": sound}
    if score is not None:
        payload["score"] = round(float(score), 4)
    return payload


@dataclass(frozen=True)
class DeviceInfo:
    """What discovery says about the installation: version and the activities sessions can report."""

    version: str
    activities: tuple[str, ...]  # labels a session can have (head classes plus extra labels, minus ignored ones)
    model: str = "roomtone sound monitor"


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


def discovery_payload(prefix: str, base: str, mic_id: str, info: DeviceInfo) -> dict[str, Any]:
    """Home Assistant device-based discovery for one microphone: a device (``dev``), the origin (``o``),
    shared availability and state topic, and its components (``cmps``), each with a ``unique_id``."""
    node = device_id(base, mic_id)
    state = state_topic(base, mic_id)
    components: dict[str, dict[str, Any]] = {
        "activity": {
            "p": "sensor", "name": "Activity", "unique_id": f"{node}_activity", "device_class": "enum",
            "options": [NO_ACTIVITY, *info.activities], "icon": "mdi:home-sound-in",
            "value_template": "{{ value_json.activity }}",
            "json_attributes_topic": state,
            "json_attributes_template": "{{ {'window_label': value_json.window_label, "
                                        "'probabilities': value_json.probabilities, "
                                        "'session': value_json.session} | tojson }}",
        },
    }
    for activity, component in component_ids(info.activities).items():
        components[component] = {
            "p": "binary_sensor", "name": activity.replace("_", " ").capitalize(), "unique_id": f"{node}_{component}",
            "device_class": "running",
            "value_template": "{{ 'ON' if value_json.activity == %s else 'OFF' }}" % json.dumps(activity),
        }
    components["level"] = {
        "p": "sensor", "name": "Sound level", "unique_id": f"{node}_level", "unit_of_measurement": "dBFS",
        "state_class": "measurement", "suggested_display_precision": 1, "icon": "mdi:waveform",
        "value_template": "{{ value_json.rms_dbfs }}",
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
        "options": list(HEALTH_STATES), "entity_category": "diagnostic", "value_template": "{{ value_json.health }}",
    }
    components["events"] = {
        "p": "event", "name": "Events", "unique_id": f"{node}_events", "event_types": list(EVENT_TYPES),
        "state_topic": event_topic(base, mic_id),
    }
    return {
        "dev": {"ids": [node], "name": f"roomtone {mic_id}", "mf": "roomtone", "mdl": info.model, "sw": info.version},
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
