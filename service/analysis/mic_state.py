"""The per-microphone state machine of analysis: what a microphone's previous window showed, and the
`StateChange`s (activity_changed, health_changed) its next window makes."""

from __future__ import annotations

from dataclasses import dataclass

from encoder.drift import DriftTracker
from service.analysis.level_floor import LevelHistory
from service.records import StateChange, WindowResult
from service.daemon_vocabulary import ACTIVITY_CHANGED, HEALTH_CHANGED, SOUND_DETECTED


@dataclass
class MicState:
    """Memory of one microphone: its drift baseline, its level history and the last label / health state seen."""

    drift: DriftTracker  # its embedding drift baseline
    levels: LevelHistory | None = None  # its usable windows' levels: the noise floor `quiet` is relative to
    label: str | None = None
    health: str | None = None
    seen: bool = False


def state_changes(mic: MicState, result: WindowResult) -> list[StateChange]:
    """The changes between the microphone's previous window and ``result``; ``mic`` then remembers it.
    A microphone's first window reports its label and health with ``previous=None``."""
    changes = []
    first = not mic.seen
    if result.label is not None and (first or result.label != mic.label):
        changes.append(StateChange(ACTIVITY_CHANGED, result.mic_id, result.start_unix_ms,
                                   None if first else mic.label, result.label))
    if first or result.health_state != mic.health:
        changes.append(StateChange(HEALTH_CHANGED, result.mic_id, result.start_unix_ms,
                                   None if first else mic.health, result.health_state,
                                   reasons=result.health_reasons))
    mic.seen, mic.label, mic.health = True, result.label, result.health_state
    return changes


def sound_events(result: WindowResult) -> list[StateChange]:
    """One sound_detected event per custom sound detected in ``result`` (every window it is heard in)."""
    return [StateChange(SOUND_DETECTED, result.mic_id, result.start_unix_ms, None, match.name, score=match.score,
                        sound_start_ms=round(match.start_s * 1000), sound_end_ms=round(match.end_s * 1000))
            for match in result.sounds]
