"""The JSON the page reads: plain dicts of the daemon's records (windows, state changes, microphones).

One function per record kind, used by the REST handlers and the live stream alike, so a window looks
the same whether the page fetched it or was pushed it.
"""

from __future__ import annotations

import math
from dataclasses import asdict

from service.records import MicStatus, StateChange, WindowResult


def _finite(value: float | None) -> float | None:
    """JSON has no NaN/Infinity: non-finite numbers become null."""
    return float(value) if value is not None and math.isfinite(value) else None


def window_json(window: WindowResult) -> dict:
    """A stored or live window without its embedding."""
    return {
        "window_id": window.window_id,
        "mic_id": window.mic_id,
        "start_unix_ms": window.start_unix_ms,
        "end_unix_ms": window.end_unix_ms,
        "label": window.label,
        "probabilities": {k: _finite(v) for k, v in window.probabilities.items()},
        "health_state": window.health_state,
        "health_reasons": list(window.health_reasons),
        "health_scores": {k: _finite(v) for k, v in window.health_scores.items()},
        "rms_dbfs": _finite(window.rms_dbfs),
        "sounds": [{"name": m.name, "score": _finite(m.score), "start_offset_ms": round(m.start_s * 1000),
                    "end_offset_ms": round(m.end_s * 1000)} for m in getattr(window, "sounds", ())],
    }


def change_json(change: StateChange) -> dict:
    """An activity or health change."""
    return {
        "event_id": change.event_id,
        "kind": change.kind,
        "mic_id": change.mic_id,
        "time_unix_ms": change.time_unix_ms,
        "previous": change.previous,
        "current": change.current,
        "window_id": change.window_id,
        "reasons": list(change.reasons),
        "score": _finite(change.score),  # sound_detected: the score; where in the window (ms from its start):
        "start_offset_ms": change.sound_start_ms,
        "end_offset_ms": change.sound_end_ms,
    }


def session_json(session) -> dict:
    """An activity session (service.analysis.sessions.ActivitySession); ``end_unix_ms`` is null while it is open."""
    return {
        "session_id": session.session_id,
        "mic_id": session.mic_id,
        "activity": session.activity,
        "start_unix_ms": session.start_unix_ms,
        "end_unix_ms": session.end_unix_ms,
        "windows": session.windows,
        "mean_probability": _finite(session.mean_probability),
    }


def run_json(run) -> dict:
    """A run of windows with the same activity on the timeline (service.web.timeline_summary.TimelineRun,
    whose fields are the JSON's keys)."""
    return asdict(run)


def mic_json(mic: MicStatus) -> dict:
    """A microphone's capture state and latest health."""
    return {
        "mic_id": mic.mic_id,
        "device": mic.device,
        "state": mic.state,
        "last_window_end_unix_ms": mic.last_window_end_unix_ms,
        "health_state": mic.health_state,
        "health_reasons": list(mic.health_reasons),
        "health_scores": {k: _finite(v) for k, v in mic.health_scores.items()},
        "label": mic.label,
    }


def correction_json(correction) -> dict:
    """An activity correction (service.correction_store.Correction) without its embedding."""
    return {
        "window_id": correction.window_id,
        "mic_id": correction.mic_id,
        "start_unix_ms": correction.start_unix_ms,
        "end_unix_ms": correction.end_unix_ms,
        "label": correction.label,
        "predicted": correction.predicted,
        "created_unix_ms": correction.created_unix_ms,
        "model_sha256": correction.model_sha256,
        "window_kept": correction.window_kept,
    }
