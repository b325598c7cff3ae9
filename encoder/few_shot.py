"""Custom sounds from a few examples, in the embedding space: a window's score for a sound is the cosine
similarity of its embedding to the sound's nearest example, and it is a detection at or above the
sound's threshold.

Nearest example was chosen over a prototype (the examples' mean) and a small per-sound logistic model
(examples against background windows) by bench/custom_sounds.py: with 3 and 5 examples it detects more
at the same false-alarm rate, and it needs no background to fit (docs/sounds.md).

The threshold is calibrated for a false-alarm rate: from background windows (a home's own stored
windows) when at least `MIN_BACKGROUND_HOURS` of them exist, the score that at most
``alarms_per_hour`` of them per hour reach; otherwise from the examples alone (the lowest score of an
example against the others, less `EXAMPLE_MARGIN`), but never below `DEFAULT_THRESHOLD`: measured, the
examples alone put 3-example thresholds so low that the stream gave 160 false alarms per hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: False alarms per hour the calibration aims at.
DEFAULT_ALARMS_PER_HOUR = 1.0
#: Background needed before it, rather than the examples, sets the threshold (hours of windows).
MIN_BACKGROUND_HOURS = 1.0
#: Subtracted from the lowest leave-one-out example score (a new instance is rarely closer than the examples are to each other).
EXAMPLE_MARGIN = 0.05
#: Threshold of a sound taught with one example and no background (bench/custom_sounds.py).
DEFAULT_THRESHOLD = 0.9


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32 ``[n, D]``."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def nearest_example_scores(embeddings: np.ndarray, examples: np.ndarray) -> np.ndarray:
    """Score per embedding ``[m]``: cosine similarity to the nearest of ``examples [n, D]``."""
    if len(examples) == 0:
        raise ValueError("a sound needs at least one example")
    return (unit_rows(embeddings) @ unit_rows(examples).T).max(axis=1)


def leave_one_out_scores(examples: np.ndarray) -> np.ndarray:
    """Each example's score against the other examples ``[n]`` (needs n >= 2)."""
    x = unit_rows(examples)
    if len(x) < 2:
        raise ValueError("leave-one-out needs at least two examples")
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return sims.max(axis=1)


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and how it was found."""

    threshold: float
    source: str  # "background", "examples" or "default"
    detail: str  # human-readable, e.g. "background: 3.2 h of windows, <= 1 alarm/h"


def calibrate_threshold(examples: np.ndarray, background: np.ndarray | None = None, background_hours: float = 0.0,
                        alarms_per_hour: float = DEFAULT_ALARMS_PER_HOUR) -> Calibration:
    """The detection threshold for a sound (see the module docstring for the rule)."""
    if background is not None and len(background) and background_hours >= MIN_BACKGROUND_HOURS:
        scores = np.sort(nearest_example_scores(background, examples))[::-1]
        allowed = int(math.floor(alarms_per_hour * background_hours))
        # at most `allowed` background windows reach the threshold: just above the next one
        threshold = float(scores[allowed]) + 1e-4 if allowed < len(scores) else float(scores[-1])
        return Calibration(min(threshold, 1.0), "background",
                           f"background: {background_hours:.1f} h of windows, <= {alarms_per_hour:g} alarm/h")
    if len(examples) >= 2:
        threshold = max(float(leave_one_out_scores(examples).min()) - EXAMPLE_MARGIN, DEFAULT_THRESHOLD)
        return Calibration(threshold, "examples",
                           f"examples: lowest leave-one-out score - {EXAMPLE_MARGIN}, at least {DEFAULT_THRESHOLD}")
    return Calibration(DEFAULT_THRESHOLD, "default", "default: one example and no background")
