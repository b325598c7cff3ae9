"""A window's health: the signal checks of encoder/signal_checks.py plus the microphone's embedding drift
(encoder/drift.py), one verdict per window for live windows and uploads alike."""

from __future__ import annotations

import numpy as np

from encoder.signal_checks import HealthConfig, WindowHealth, assess_window


def new_drift_tracker():
    """A fresh DriftTracker, or None when encoder.drift is not installed (health then has no drift check)."""
    try:
        from encoder.drift import DriftTracker
    except ImportError:
        return None
    return DriftTracker()


def window_health(samples: np.ndarray, sample_rate: int, embedding: np.ndarray, drift,
                  config: HealthConfig) -> WindowHealth:
    """Signal checks of ``samples [channels, n]`` and, when ``drift`` (a DriftTracker) is given, its drift
    score for ``embedding`` as the last check. Only windows that pass every signal check teach the
    baseline what this microphone sounds like."""
    learn_and_score = None if drift is None else (lambda learn: drift.update(embedding, learn=learn))
    return assess_window(samples, sample_rate, config, drift=learn_and_score)
