"""Activity corrections: a user says what a stored window really was (one of the head's classes), from the
CLI, gRPC or the web page. The rules live here once; the faces validate input and map `CorrectionError`
reasons to their status codes. Corrections change no live decision: `roomtone train-head --corrections`
refits the head on the shared set plus them (encoder/head_corrections.py), docs/sounds.md has the figures.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from service.store.correction_store import Correction
from service.store.event_store import EventStore
from service.daemon_vocabulary import RESERVED_LABELS

log = logging.getLogger("roomtone.corrections")

__all__ = ["Correction", "CorrectionError", "CorrectionService"]


class CorrectionError(Exception):
    """A correction that cannot be made; ``reason`` is machine-readable: ``invalid_argument``, ``not_found``,
    ``failed_precondition``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class CorrectionService:
    """Corrections of the store's windows against the loaded model's head classes."""

    store: EventStore
    class_names: tuple[str, ...]  # the head's classes; empty without a head

    def correct(self, window_id: int, label: str, now_unix_ms: int | None = None) -> Correction:
        """Record that stored window ``window_id`` really was ``label`` (replacing an earlier correction of it)."""
        if not self.class_names:
            raise CorrectionError("failed_precondition", "the model has no activity head, so there is nothing to correct "
                                                         "(add one with `roomtone train-head`)")
        if label not in self.class_names:
            hint = (f"; {label!r} is decided by level or confidence, not learnt by the head" if label in RESERVED_LABELS
                    else "")
            raise CorrectionError("invalid_argument", f"label {label!r} is not one of the head's classes "
                                                      f"{list(self.class_names)}{hint}")
        if window_id <= 0:
            raise CorrectionError("invalid_argument", f"window_id must be a stored window's id (> 0), got {window_id}")
        window = self.store.get_window(window_id, include_embedding=True)
        if window is None:
            raise CorrectionError("not_found", f"no stored window {window_id}")
        if window.embedding is None:
            raise CorrectionError("failed_precondition", f"window {window_id} has no embedding (its microphone was "
                                                         "faulty), so it cannot teach the head")
        correction = Correction(window_id, window.mic_id, window.start_unix_ms, window.end_unix_ms, label, window.label,
                                int(time.time() * 1000) if now_unix_ms is None else int(now_unix_ms),
                                self.store.model_at(window.start_unix_ms), window.embedding)
        self.store.add_correction(correction)
        log.info("window corrected", extra={"window_id": window_id, "mic": window.mic_id, "label": label,
                                            "predicted": window.label})
        return correction

    def remove(self, window_id: int) -> None:
        """Forget the correction of a window; CorrectionError(not_found) when it has none."""
        if not self.store.remove_correction(window_id):
            raise CorrectionError("not_found", f"window {window_id} has no correction")
        log.info("correction removed", extra={"window_id": window_id})

    def list(self, mic_ids: tuple[str, ...] = (), labels: tuple[str, ...] = ()) -> list[Correction]:
        """Corrections newest first, filtered by microphone and corrected label."""
        return self.store.list_corrections(mic_ids=mic_ids, labels=labels)
