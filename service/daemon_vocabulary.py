"""The daemon's shared words, written once and imported everywhere: health states (from encoder/),
capture states, event kinds, the silence level, default addresses, the client environment variables and
the machine-readable reasons that travel with gRPC errors."""

from __future__ import annotations

import re

from encoder.vocabulary import HEALTH_DEGRADED, HEALTH_FAULTY, HEALTH_OK, HEALTH_STATES, SILENCE_DBFS

# -- capture states of a microphone (MicStatus.state, `roomtone mics`) ------------------------------------
STARTING, RUNNING, REOPENING, STOPPED, FAILED = "starting", "running", "reopening", "stopped", "failed"
MIC_STATES = (STARTING, RUNNING, REOPENING, STOPPED, FAILED)
#: Capture states in which a microphone delivers no audio: it reads faulty whatever its last window said.
CAPTURE_LOST_STATES = (REOPENING, FAILED)

# -- event kinds (StateChange.kind; "window" is the third kind the store and the wire know) ---------------
WINDOW, ACTIVITY_CHANGED, HEALTH_CHANGED = "window", "activity_changed", "health_changed"
#: A custom sound was detected in a window (StateChange.current = the sound's name, .score its score).
SOUND_DETECTED = "sound_detected"
EVENT_KINDS = (ACTIVITY_CHANGED, HEALTH_CHANGED, SOUND_DETECTED)
#: Event kinds a `labels` filter applies to: the activity label, or the custom sound's name.
LABELLED_KINDS = (ACTIVITY_CHANGED, SOUND_DETECTED)
#: Activity session starts and ends (service/analysis/sessions.py): live items only; stored sessions come from ListSessions.
SESSION_STARTED, SESSION_ENDED = "session_started", "session_ended"
SESSION_EVENT_KINDS = (SESSION_STARTED, SESSION_ENDED)
QUERY_KINDS = (WINDOW,) + EVENT_KINDS + SESSION_EVENT_KINDS

# -- the activity decision (service/analysis/activity.py) ------------------------------------------------------------
#: Labels the decision adds to the head's classes; a head may not use them as class names.
QUIET, UNKNOWN = "quiet", "unknown"
RESERVED_LABELS = (QUIET, UNKNOWN)
#: Why a window has its label: a head class, quiet, unknown, none because the mic is faulty, none because
#: the model has no head (derived from label + health, so the store needs no column for it).
LABEL_CLASS, LABEL_MIC_FAULTY, LABEL_NO_HEAD = "class", "mic_faulty", "no_head"
LABEL_KINDS = (LABEL_CLASS, QUIET, UNKNOWN, LABEL_MIC_FAULTY, LABEL_NO_HEAD)

#: The one rule for names people give (microphone ids, custom sound names): they become clip folders, metric
#: labels, MQTT topic levels and Home Assistant ids, so only lower-case letters, digits, '_' and '-'.
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
ID_RULE = "1-64 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"

#: mic_id of the windows of an uploaded recording (Classify, FindSimilar by audio).
UPLOAD_MIC_ID = "upload"

# -- default addresses --------------------------------------------------------------------------------------
DEFAULT_GRPC_ADDRESS = "127.0.0.1:50051"
DEFAULT_METRICS_ADDRESS, DEFAULT_METRICS_PORT = "127.0.0.1", 9464

# -- the command-line clients' environment ------------------------------------------------------------------
#: Where the clients find the daemon, and (TLS, docs/reliability.md) the CA file that signed its certificate,
#: the bearer token file and optionally a client certificate and key (mTLS).
ADDRESS_ENV = "ROOMTONE_ADDRESS"
CA_ENV, TOKEN_FILE_ENV = "ROOMTONE_CA", "ROOMTONE_TOKEN_FILE"
CERT_ENV, KEY_ENV = "ROOMTONE_CLIENT_CERT", "ROOMTONE_CLIENT_KEY"
CLIENT_ENV = (ADDRESS_ENV, CA_ENV, TOKEN_FILE_ENV, CERT_ENV, KEY_ENV)

# -- limits of the API that its clients check too ----------------------------------------------------------
#: Most items one ListEvents page (and StreamEvents' replay) holds; `roomtone events --limit` has the same cap.
MAX_PAGE = 1000
#: Most neighbours one FindSimilar returns.
MAX_K = 1000

# -- machine-readable reasons sent with a gRPC error (trailing metadata REASON_KEY) -------------------------
REASON_KEY = "roomtone-reason"
#: The daemon runs but cannot analyse audio right now (model not ready).
REASON_BACKEND_UNAVAILABLE = "backend_unavailable"
#: The daemon is stopping, or its store is closed.
REASON_SHUTTING_DOWN = "shutting_down"
#: The store file is damaged (SQLite: "database disk image is malformed"); the daemon log says what to do.
REASON_STORE_DAMAGED = "store_damaged"

__all__ = [name for name in dir() if name.isupper()]


# -- Home Assistant ids (MQTT discovery; the config checks microphone ids with them) -------------------------
_ID_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
#: What one MQTT topic level may hold (no wildcards, no NUL); "/" is refused separately.
TOPIC_LEVEL = re.compile(r"^[^#+\x00]+$")


def discovery_id(text: str) -> str:
    """``text`` with every character Home Assistant refuses in discovery ids (outside [a-zA-Z0-9_-]) as "_"."""
    return _ID_CHARS.sub("_", text) or "_"


def device_id(base: str, mic_id: str) -> str:
    """Home Assistant device id of a microphone: ``<node>_<mic>`` with node = the base topic."""
    return f"{discovery_id(base)}_{discovery_id(mic_id)}"
