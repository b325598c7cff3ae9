"""Drift baselines kept across restarts: every microphone's `encoder.drift.DriftTracker`, saved as one JSON
file next to the store when the daemon stops and read back when it starts (written atomically: temp + fsync +
rename, service/state_files.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from encoder.windows import WindowSpec
from service.state_files import write_atomically

log = logging.getLogger("roomtone.drift")


def drift_path(store_path: Path) -> Path:
    """Where the drift baselines of the store at ``store_path`` are kept (``<store>.drift.json``)."""
    return store_path.with_name(store_path.name + ".drift.json")


def trackers_from_saved(saved: dict[str, dict], spec: WindowSpec) -> dict:
    """DriftTrackers (for the windows of ``spec``) from `DriftTracker.to_dict` entries by mic
    id; unusable entries are skipped with a log line."""
    from encoder.drift import DriftTracker

    trackers = {}
    for mic_id, data in saved.items():
        try:
            trackers[mic_id] = DriftTracker.from_dict(data, spec.step_s, spec.window_s)
        except (TypeError, ValueError, KeyError) as exc:
            log.warning("ignoring saved drift baseline", extra={"mic": mic_id, "error": str(exc)})
    return trackers


def load_drift_baselines(path: Path) -> dict[str, dict]:
    """The saved baselines in ``path`` ({} when there is no file or it cannot be read, with a log line)."""
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable drift baselines", extra={"file": str(path), "error": str(exc)})
        return {}
    if not isinstance(saved, dict):
        log.warning("ignoring unreadable drift baselines", extra={"file": str(path), "error": "not a JSON object"})
        return {}
    return saved


def save_drift_baselines(path: Path, saved: dict[str, dict]) -> None:
    """Write the baselines (mic id -> `DriftTracker.to_dict`) to ``path`` atomically (a full disk or a crash leaves
    the previous file, never an empty one); a failure is logged, not raised."""
    try:
        write_atomically(path, json.dumps(saved))
    except (OSError, TypeError, ValueError) as exc:
        log.warning("could not save drift baselines", extra={"file": str(path), "error": str(exc)})
