"""The rule for what `ListMicrophones` and `roomtone mics` say about a microphone right now: its capture
state and its last stored window, except that a microphone delivering no audio reads faulty."""

from __future__ import annotations

from collections.abc import Mapping

from service.records import MicStatus, WindowResult
from service.daemon_vocabulary import CAPTURE_LOST_STATES, HEALTH_FAULTY


def no_input_reason(state: str) -> str:
    """The health reason of a microphone whose capture is lost (``reopening`` or ``failed``)."""
    return f"no_input: capture is {state} (device lost or stalled)"


def mic_status(sources: Mapping, latest: Mapping[str, WindowResult]) -> list[MicStatus]:
    """MicStatus of every source (mic id -> `service.capture.sources.Source`) given each one's last stored window."""
    out = []
    for mic_id, source in sources.items():
        last = latest.get(mic_id)
        state = source.state
        lost = state in CAPTURE_LOST_STATES  # no audio arrives: the mic is faulty whatever its last window said
        out.append(MicStatus(
            mic_id=mic_id, device=source.description, state=state,
            last_window_end_unix_ms=last.end_unix_ms if last else None,
            health_state=HEALTH_FAULTY if lost else (last.health_state if last else None),
            health_reasons=(no_input_reason(state),) if lost else (tuple(last.health_reasons) if last else ()),
            health_scores=dict(last.health_scores) if last else {},
            label=last.label if last else None,
        ))
    return out
