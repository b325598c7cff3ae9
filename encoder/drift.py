"""Embedding drift of one microphone: how far a window's embedding lies from what this microphone
usually sounds like, so a mic that suddenly hears something unlike itself (moved, covered, swapped,
its element failing) is noticed even when every signal check passes.

`DriftTracker` (one per microphone) keeps a running centroid of the L2-normalised embeddings of its
healthy windows and the running mean and spread of their cosine distances to that centroid. A window's
drift score is its distance in spreads above the usual distance: ``(d - mean) / std``. Scores are
given once ``min_history`` windows were learned (`ready`); a flagged window is not learned, so a lasting
change stays flagged until the baseline is `reset` (e.g. after the mic was moved on purpose).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from encoder.signal_checks import HealthConfig, WindowHealth, state_of

_FORMAT = "roomtone.drift/1"


@dataclass(frozen=True)
class DriftConfig:
    """How the baseline is learned and when a window counts as drifted (tuned in bench/fault_detection.py)."""

    min_history: int = 30  # healthy windows (5 minutes) before scores are given
    memory: int = 2000  # after this many windows the baseline becomes an exponential average over ~memory
    threshold: float = 4.0  # flag at this many spreads above the usual distance
    min_spread: float = 0.01  # floor on the spread (cosine distance) so a very steady mic is not hair-trigger

    def __post_init__(self) -> None:
        if self.min_history < 2 or self.memory < self.min_history:
            raise ValueError(f"DriftConfig needs 2 <= min_history <= memory, got {self.min_history}, {self.memory}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DriftConfig":
        """Build from a dict; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"DriftConfig: unknown key(s) {unknown}; known keys are {sorted(known)}")
        return cls(**data)


@dataclass(frozen=True)
class DriftScore:
    """Drift of one window: score in spreads (0 while not ready), whether it is flagged, and whether the
    baseline had enough history to judge."""

    score: float
    flagged: bool
    ready: bool
    distance: float = 0.0  # cosine distance to the centroid


def _unit(embedding: np.ndarray) -> np.ndarray:
    """The embedding as a float64 unit vector (embeddings are L2-normalised already; this guards)."""
    vector = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(vector)):
        raise ValueError("drift: embedding contains NaN/Inf")
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


class DriftTracker:
    """Running reference of one microphone's embeddings; `update` scores a window and learns it."""

    def __init__(self, config: DriftConfig = DriftConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget the baseline (after the microphone was moved or replaced on purpose)."""
        self.count = 0
        self.centroid: np.ndarray | None = None
        self.distance_count = 0
        self.distance_mean = 0.0
        self.distance_var = 0.0

    @property
    def ready(self) -> bool:
        """Whether enough healthy history was learned to score windows."""
        return self.count >= self.config.min_history

    def score(self, embedding: np.ndarray) -> DriftScore:
        """Drift of one window against the baseline, without learning it."""
        vector = _unit(embedding)
        if self.centroid is None:
            return DriftScore(0.0, False, False, 0.0)
        if self.centroid.shape != vector.shape:
            raise ValueError(f"drift: embedding has {vector.size} values, the baseline {self.centroid.size}")
        distance = self._distance(vector)
        if not self.ready:
            return DriftScore(0.0, False, False, distance)
        spread = max(float(np.sqrt(self.distance_var)), self.config.min_spread)
        value = (distance - self.distance_mean) / spread
        return DriftScore(float(value), bool(value >= self.config.threshold), True, distance)

    def update(self, embedding: np.ndarray, learn: bool = True) -> DriftScore:
        """Score one window, then learn it into the baseline unless it is flagged (or ``learn`` is False)."""
        result = self.score(embedding)
        if learn and not result.flagged:
            self._learn(_unit(embedding), result.distance)
        return result

    def _distance(self, vector: np.ndarray) -> float:
        """Cosine distance of a unit vector to the (normalised) centroid."""
        norm = np.linalg.norm(self.centroid)
        return float(1.0 - vector @ self.centroid / norm) if norm > 0 else 1.0

    def _learn(self, vector: np.ndarray, distance: float) -> None:
        """Fold one healthy window into the centroid and the distance statistics."""
        weight = 1.0 / min(self.count + 1, self.config.memory)
        if self.centroid is None:
            self.centroid = vector.copy()
        else:
            self.centroid += weight * (vector - self.centroid)
            # Distances against a centroid of 1-2 windows say little; start the statistics after that.
            if self.count >= 2:
                self.distance_count += 1
                d_weight = 1.0 / min(self.distance_count, self.config.memory)
                delta = distance - self.distance_mean
                self.distance_mean += d_weight * delta
                self.distance_var = (1 - d_weight) * (self.distance_var + d_weight * delta * delta)
        self.count += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (config and baseline) to persist across restarts."""
        return {
            "format": _FORMAT,
            "config": asdict(self.config),
            "count": self.count,
            "centroid": None if self.centroid is None else [float(v) for v in self.centroid],
            "distance_count": self.distance_count,
            "distance_mean": self.distance_mean,
            "distance_var": self.distance_var,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DriftTracker":
        """Rebuild from `to_dict` output; a wrong format or missing key is a ValueError naming it."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"drift: not a saved DriftTracker (format {found!r}, expected {_FORMAT!r})")
        missing = sorted({"config", "count", "centroid", "distance_count", "distance_mean", "distance_var"} - set(data))
        if missing:
            raise ValueError(f"drift: saved DriftTracker lacks key(s) {missing}")
        tracker = cls(DriftConfig.from_dict(data["config"]))
        tracker.count = int(data["count"])
        tracker.centroid = None if data["centroid"] is None else np.asarray(data["centroid"], dtype=np.float64)
        tracker.distance_count = int(data["distance_count"])
        tracker.distance_mean = float(data["distance_mean"])
        tracker.distance_var = float(data["distance_var"])
        return tracker


def with_drift(health: WindowHealth, drift: DriftScore, config: HealthConfig = HealthConfig()) -> WindowHealth:
    """``health`` with the drift check added (score, flag, reason) and the state recomputed."""
    scores = {**health.scores, "drift": drift.score, "drift_ready": float(drift.ready)}
    flags = {**health.flags, "drift": drift.flagged}
    reasons = health.reasons
    if drift.flagged:
        reasons = reasons + (
            f"drift: sounds unlike this microphone's history ({drift.score:.1f} spreads from its usual "
            f"sound, cosine distance {drift.distance:.3f})",
        )
    return replace(health, state=state_of(flags, config), reasons=reasons, scores=scores, flags=flags)
