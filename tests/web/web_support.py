"""Helpers of the web page tests: stored windows with known embeddings, and a microphone list."""

from __future__ import annotations

import numpy as np

from service.records import MicStatus, WindowResult

T0 = 1_790_000_000_000  # a fixed start time (ms) for the stored windows


def stored_window(mic: str, i: int, label: str, direction: np.ndarray) -> WindowResult:
    """Window ``i`` of ``mic`` (10 s hop) whose embedding points along ``direction``."""
    embedding = (direction / np.linalg.norm(direction)).astype(np.float32)
    return WindowResult(mic_id=mic, start_unix_ms=T0 + i * 10_000, end_unix_ms=T0 + (i + 1) * 10_000, label=label,
                        probabilities={label: 0.9, "other": 0.1}, health_state="ok", health_reasons=(),
                        health_scores={"clipping": 0.0, "drift": 0.1 * i}, rms_dbfs=-30.0, embedding=embedding)


def mics() -> list[MicStatus]:
    """Two running microphones, kitchen and hall."""
    return [MicStatus("kitchen", "test:kitchen", "running", T0 + 60_000, "ok", (), {"clipping": 0.0}, "speech"),
            MicStatus("hall", "test:hall", "running", T0 + 20_000, "ok", (), {}, "speech")]
