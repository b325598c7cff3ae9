"""A window's health: the signal checks of encoder/signal_checks.py plus the microphone's embedding drift
(encoder/drift.py), one verdict per window for live windows and uploads alike."""

from __future__ import annotations

import numpy as np

from encoder.drift import DriftTracker
from encoder.signal_checks import HealthConfig, WindowHealth, assess_window
from encoder.windows import WindowSpec

#: The check a window with non-finite features fails (so metrics and alerts treat it like NaN samples).
UNUSABLE_CHECK = "non_finite"


def new_drift_tracker(spec: WindowSpec) -> DriftTracker:
    """A fresh drift baseline for the windows of ``spec``."""
    return DriftTracker(hop_s=spec.step_s, window_s=spec.window_s)


def unusable_window_health(samples: np.ndarray) -> WindowHealth:
    """The verdict on a window whose features or embedding are not finite (samples so large the spectrogram
    overflows, e.g. 1e30 or random bytes read as floats): faulty, with the peak that caused it. Nothing else
    about it can be judged, and it never reaches the drift baseline."""
    with np.errstate(all="ignore"):
        finite = np.abs(samples[np.isfinite(samples)])
        peak = float(finite.max()) if finite.size else float("nan")
    return WindowHealth(
        state="faulty",
        reasons=(f"{UNUSABLE_CHECK}: features are not finite (peak {peak:.3g} x full scale): the input is not audio "
                 f"(a driver or format fault, e.g. integers or random bytes read as floats)",),
        scores={"peak": peak if np.isfinite(peak) else 0.0},
        flags={UNUSABLE_CHECK: True},
    )


def window_health(samples: np.ndarray, sample_rate: int, embedding: np.ndarray, drift: DriftTracker,
                  config: HealthConfig) -> WindowHealth:
    """Signal checks of ``samples [channels, n]`` and the microphone's drift score for ``embedding`` as the
    last check. Only windows that pass every signal check teach the baseline what this microphone sounds like."""
    return assess_window(samples, sample_rate, config, drift=lambda learn: drift.update(embedding, learn=learn))
