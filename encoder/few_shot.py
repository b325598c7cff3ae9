"""Custom sounds from a few examples: a window's score for a sound is the cosine similarity of its embedding
(or of its best span of a column map, below) to the sound's nearest example, and it is a detection at or
above the sound's threshold. The daemon's time-local detector is encoder/patch_matching.py (log-Mel
patches, since 2026-12-07); the spans below are what bench/specific_sounds.py compares it with, and sounds
taught from windows without a map still match the pooled embedding here.

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
from collections.abc import Sequence
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


def rate_threshold(background_scores: np.ndarray, hours: float, alarms_per_hour: float) -> float:
    """The lowest threshold that at most ``alarms_per_hour`` of ``hours`` of background windows' scores reach."""
    scores = np.sort(np.asarray(background_scores, dtype=np.float64))[::-1]
    allowed = int(math.floor(alarms_per_hour * hours))
    # at most `allowed` background windows reach the threshold: just above the next one
    threshold = float(scores[allowed]) + 1e-4 if allowed < len(scores) else float(scores[-1])
    return min(threshold, 1.0)


def background_calibration(background_scores: np.ndarray, hours: float, alarms_per_hour: float) -> Calibration:
    """The threshold that at most ``alarms_per_hour`` of a home's ``hours`` of background windows reach, from their scores."""
    return Calibration(rate_threshold(background_scores, hours, alarms_per_hour), "background",
                       f"background: {hours:.1f} h of windows, <= {alarms_per_hour:g} alarm/h")


def examples_calibration(examples: np.ndarray, leave_one_out: Sequence[float] | None = None) -> Calibration:
    """The threshold from a sound's examples alone: the lowest leave-one-out score (``leave_one_out``, each
    example's score against the others, when the examples are not plain vectors) less `EXAMPLE_MARGIN`, at
    least `DEFAULT_THRESHOLD`; `DEFAULT_THRESHOLD` for a single example."""
    if len(examples) >= 2:
        scores = leave_one_out_scores(examples) if leave_one_out is None else np.asarray(leave_one_out)
        threshold = max(float(scores.min()) - EXAMPLE_MARGIN, DEFAULT_THRESHOLD)
        return Calibration(threshold, "examples",
                           f"examples: lowest leave-one-out score - {EXAMPLE_MARGIN}, at least {DEFAULT_THRESHOLD}")
    return Calibration(DEFAULT_THRESHOLD, "default", "default: one example and no background")


def calibrate_threshold(examples: np.ndarray, background: np.ndarray | None = None, background_hours: float = 0.0,
                        alarms_per_hour: float = DEFAULT_ALARMS_PER_HOUR) -> Calibration:
    """The detection threshold for a sound (see the module docstring for the rule)."""
    if background is not None and len(background) and background_hours >= MIN_BACKGROUND_HOURS:
        return background_calibration(nearest_example_scores(background, examples), background_hours, alarms_per_hour)
    return examples_calibration(examples)


# --- time-local matching: spans of a column map (the daemon's detector until log-Mel patches) ----------
#
# A 10 s window's pooled embedding barely moves when a 1-6 s sound is mixed into it (docs/sounds.md). The
# encoder's map before pooling keeps time: `Encoder.column_map` gives one column per 32 frames (0.31 s at a
# 10 ms hop) of the last stage's channels x frequency bands, before the projection (which loses where in
# frequency a sound is: the projected columns found half as much, bench/specific_sounds.py). A sound is matched
# span by span: its examples are each example's loudest span of the sound's length (the mean of the span's
# columns), a window's score is its best-matching span's cosine to the nearest example, and the span says
# where in the window the sound is. (Less each window's median column, "centred", measured alike but would
# take out a sound that fills most of a tightly cut example file.)

#: Longest span matched, in columns (about 0.6 s at 0.31 s per column): longer sounds match on their loudest
#: part. Short spans find more (bench/specific_sounds.py, both bundled models: spans of 2 > 4 > 8 columns).
MAX_SPAN_COLUMNS = 2
#: Columns within this many dB of an example's loudest column count towards the sound's length.
SPAN_WITHIN_DB = 10.0


def column_levels(samples: np.ndarray, columns: int) -> np.ndarray:
    """RMS level in dB of each of ``columns`` equal parts of mono ``samples`` ``[columns]`` (-120 when silent)."""
    squares = np.array(samples, dtype=np.float64).reshape(-1)  # a copy, squared in place
    np.square(squares, out=squares)
    edges = np.linspace(0, len(squares), columns + 1).astype(int).tolist()
    # Every live window pays this: each part's sum of squares divided as np.mean divides (the same bits as
    # np.mean(np.square(part)), without a fresh array and np.mean's checks per part).
    total = np.add.reduce
    power = np.array([total(squares[a:b]) / (b - a) if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def span_length(levels: np.ndarray, within_db: float = SPAN_WITHIN_DB, longest: int = MAX_SPAN_COLUMNS) -> int:
    """A sound's span in columns: how many of an example's columns are within ``within_db`` of its loudest,
    at least 1 and at most ``longest``."""
    levels = np.asarray(levels, dtype=np.float64)
    return int(np.clip(np.sum(levels >= levels.max() - within_db), 1, longest))


def span_embeddings(columns: np.ndarray, span: int) -> np.ndarray:
    """Unit embeddings ``[max(columns - span + 1, 1), D]`` of every run of ``span`` consecutive columns
    (``columns [T, D]``; all of them when T < span)."""
    x = np.asarray(columns, dtype=np.float32)
    span = max(1, min(int(span), len(x)))
    sums = np.cumsum(np.concatenate([np.zeros((1, x.shape[1]), np.float32), x]), axis=0)
    return unit_rows((sums[span:] - sums[:-span]) / span)


def loudest_span(columns: np.ndarray, levels: np.ndarray, span: int) -> tuple[np.ndarray, int]:
    """The unit embedding ``[D]`` of the loudest run of ``span`` columns of an example, and its first column."""
    levels = np.asarray(levels, dtype=np.float64)
    span = max(1, min(int(span), len(levels)))
    power = np.convolve(10.0 ** (levels / 10.0), np.ones(span), mode="valid")
    start = int(np.argmax(power))
    return span_embeddings(np.asarray(columns)[start:start + span], span)[0], start


def span_scores(spans: np.ndarray, examples: np.ndarray, negatives: np.ndarray | None = None) -> np.ndarray:
    """Score per span ``[s]``: cosine similarity to the nearest example, less how much closer the nearest
    negative example ("not this") is, when it is closer."""
    positive = (unit_rows(spans) @ unit_rows(examples).T).max(axis=1)
    if negatives is None or not len(negatives):
        return positive
    negative = (unit_rows(spans) @ unit_rows(negatives).T).max(axis=1)
    return positive - np.maximum(0.0, negative - positive)


def best_span(columns: np.ndarray, examples: np.ndarray, span: int,
              negatives: np.ndarray | None = None) -> tuple[float, int]:
    """A window's score for a sound (its best span's, `span_scores`) and that span's first column."""
    scores, starts = best_spans(np.asarray(columns)[None], examples, span, negatives)
    return float(scores[0]), int(starts[0])


def best_spans(columns: np.ndarray, examples: np.ndarray, span: int,
               negatives: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """`best_span` of many windows of one length at once: ``columns [n, T, D]`` -> scores ``[n]``, first columns ``[n]``."""
    x = np.asarray(columns, dtype=np.float32)
    n, t, d = x.shape
    span = max(1, min(int(span), t))
    sums = np.cumsum(np.concatenate([np.zeros((n, 1, d), np.float32), x], axis=1), axis=1)
    means = (sums[:, span:] - sums[:, :-span]).reshape(-1, d)
    scores = span_scores(means, examples, negatives).reshape(n, t - span + 1)
    starts = scores.argmax(axis=1)
    return scores[np.arange(n), starts], starts
