"""The activity decision of one window, after the head: nothing (faulty microphone), `quiet` (below a
level floor), `unknown` (the head is unsure) or the head's most probable class.

The head always answers with one of its classes, however little the window resembles them: digital
silence came out as `motor_machine` at 0.72. These rules are applied in this order, so a dead
microphone is never `quiet` and a quiet room is never a guess. Both defaults are measured by
bench/absence.py (docs/sounds.md has the tables).
"""

from __future__ import annotations

from service.config import ActivityConfig
from service.daemon_vocabulary import (HEALTH_FAULTY, LABEL_CLASS, LABEL_KINDS, LABEL_MIC_FAULTY, LABEL_NO_HEAD, QUIET,
                                RESERVED_LABELS, UNKNOWN)

__all__ = ["LABEL_KINDS", "QUIET", "RESERVED_LABELS", "UNKNOWN", "check_head_classes", "decide_activity", "label_kind"]


def check_head_classes(class_names: list[str] | tuple[str, ...]) -> None:
    """ValueError when a head class would collide with a decision label (`quiet`, `unknown`)."""
    clash = sorted(set(class_names) & set(RESERVED_LABELS))
    if clash:
        raise ValueError(f"the model's head has class(es) {clash}, which roomtone reserves for its own "
                         "decisions; retrain the head with other names (roomtone train-head)")


def decide_activity(probabilities: dict[str, float], rms_dbfs: float, health_state: str,
                    config: ActivityConfig = ActivityConfig(), quiet_below_dbfs: float | None = None) -> str | None:
    """The window's activity label: None (faulty microphone or no head), `quiet`, `unknown` or a class.
    ``quiet_below_dbfs`` is the microphone's learnt quiet threshold (service/analysis/level_floor.py); None = the
    absolute ``config.quiet_below_dbfs``."""
    if health_state == HEALTH_FAULTY:
        return None
    if rms_dbfs < (config.quiet_below_dbfs if quiet_below_dbfs is None else quiet_below_dbfs):
        return QUIET
    if not probabilities:
        return None
    best = max(probabilities, key=probabilities.__getitem__)
    return best if probabilities[best] >= config.unknown_below else UNKNOWN


def label_kind(label: str | None, health_state: str) -> str:
    """Why a window has ``label``: one of LABEL_KINDS."""
    if label is None or label == "":
        return LABEL_MIC_FAULTY if health_state == HEALTH_FAULTY else LABEL_NO_HEAD
    if label in RESERVED_LABELS:
        return label
    return LABEL_CLASS
