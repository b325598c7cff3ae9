"""The one place a `WindowResult` is built from what analysis decided about a window: live windows and
uploads alike, so a record never depends on which way its audio came in."""

from __future__ import annotations

import numpy as np

from encoder.vocabulary import HEALTH_FAULTY, SILENCE_DBFS
from service.analysis.activity import decide_activity
from service.config import ActivityConfig
from service.records import SoundMatch, WindowResult


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS of the mono mix of ``samples [channels, n]`` (full-scale sine = -3 dBFS); digital
    silence and anything quieter read `SILENCE_DBFS`, non-finite samples are left out."""
    x = np.asarray(samples, dtype=np.float64)
    mono = x[0] if x.ndim == 2 and x.shape[0] == 1 else x.mean(axis=0)  # the mean of one channel is that channel
    mean_square = np.mean(mono * mono) if mono.size else np.nan
    if np.isfinite(mean_square):  # every sample finite (the usual case): no mask, no copy
        return _dbfs(float(np.sqrt(mean_square)))
    finite = mono[np.isfinite(mono)]
    if finite.size == 0:
        return SILENCE_DBFS
    return _dbfs(float(np.sqrt(np.mean(finite * finite))))


def _dbfs(rms: float) -> float:
    """An RMS level in dBFS, `SILENCE_DBFS` at or below it."""
    return max(SILENCE_DBFS, 20.0 * np.log10(rms)) if rms > 0 else SILENCE_DBFS


def build_window_result(mic_id: str, start_unix_ms: int, end_unix_ms: int, samples: np.ndarray,
                        embedding: np.ndarray, probabilities: dict[str, float], health,
                        activity: ActivityConfig = ActivityConfig(), sounds: tuple[SoundMatch, ...] = (),
                        quiet_below_dbfs: float | None = None) -> WindowResult:
    """The record of one analysed window; ``health`` is an `encoder.signal_checks.WindowHealth`. The label is
    decided here (service/analysis/activity.py: none for a faulty mic, `quiet` below ``quiet_below_dbfs``, the
    microphone's learnt threshold, `unknown` or the head's class), and a faulty microphone's window carries no
    custom sounds either."""
    level = rms_dbfs(samples)
    faulty = health.state == HEALTH_FAULTY
    return WindowResult(
        mic_id=mic_id,
        start_unix_ms=int(start_unix_ms),
        end_unix_ms=int(end_unix_ms),
        label=decide_activity(probabilities, level, health.state, activity, quiet_below_dbfs),
        probabilities=dict(probabilities),
        health_state=health.state,
        health_reasons=tuple(health.reasons),
        health_scores={k: float(v) for k, v in health.scores.items()},
        rms_dbfs=level,
        embedding=embedding,
        sounds=() if faulty else tuple(sounds),
    )
