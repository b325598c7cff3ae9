"""Embedding drift of one microphone: how unlike its own history a microphone sounds, so a mic that is
moved, covered, swapped or whose capsule fails is noticed even when every signal check passes.

`DriftTracker` (one per microphone) keeps a sample of the L2-normalised embeddings of its healthy
windows (a reservoir of ``memory`` exemplars). A window's distance is its mean cosine distance to its
``k`` nearest exemplars; the usual distance and its spread are those of each exemplar to its k nearest
other exemplars. A window's distance in spreads above the usual one is its window score (capped at
twice the threshold); the drift score is the mean of the last ``persistence`` window scores, so one
unusual sound (a first vacuum-cleaner run) does not flag, but a microphone that keeps sounding unlike
itself for about a minute does. Scores are given once ``min_history`` windows were learned (`ready`).
A window is learned ``persistence`` windows later, and only if the microphone was not drifting by then,
so a lasting change is never taught to the baseline and stays flagged until `reset` (e.g. after the
mic was moved on purpose).

Why exemplars and not one centroid: a household microphone hears many kinds of sound, and the mean of
them all is close to none of them; measured in bench/fault_detection.py (docs/mic-health.md).
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from encoder.config_keys import reject_unknown_keys
from encoder.signal_checks import HealthConfig, WindowHealth, check_drift, state_of

_FORMAT = "roomtone.drift/2"


@dataclass(frozen=True)
class DriftConfig:
    """How the baseline is learned and when a microphone counts as drifted (tuned in bench/fault_detection.py)."""

    min_history: int = 30  # healthy windows (5 minutes) before scores are given
    memory: int = 512  # exemplars kept (a uniform sample of the last ``horizon`` healthy windows)
    horizon: int = 8640  # windows (one day of 10 s windows) the exemplar sample reaches back
    neighbours: int = 3  # distance of a window = mean cosine distance to its k nearest exemplars
    persistence: int = 6  # the drift score averages this many consecutive windows (1 minute)
    threshold: float = 1.25  # flag when that average is this many spreads above the usual distance (swept: docs)
    min_spread: float = 0.01  # floor on the spread (cosine distance) so a very steady mic is not hair-trigger
    seed: int = 0  # which windows the reservoir keeps (reproducible)

    def __post_init__(self) -> None:
        if not 2 <= self.min_history <= self.memory <= self.horizon:
            raise ValueError(
                f"DriftConfig needs 2 <= min_history <= memory <= horizon, got {self.min_history}, "
                f"{self.memory}, {self.horizon}"
            )
        if self.neighbours < 1 or self.persistence < 1:
            raise ValueError(f"DriftConfig needs neighbours >= 1 and persistence >= 1, got {self.neighbours}, {self.persistence}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DriftConfig":
        """Build from a dict; unknown keys are an error that names them."""
        reject_unknown_keys(cls, data, "DriftConfig")
        return cls(**data)


@dataclass(frozen=True)
class DriftScore:
    """Drift of one window: score (mean of the last ``persistence`` window scores, in spreads; 0 while
    not ready), whether it is flagged, whether the baseline had enough history to judge, and this
    window's own distance and score."""

    score: float
    flagged: bool
    ready: bool
    distance: float = 0.0  # mean cosine distance to the nearest exemplars
    window_score: float = 0.0  # this window alone, in spreads


def _unit(embedding: np.ndarray) -> np.ndarray:
    """The embedding as a float64 unit vector (embeddings are L2-normalised already; this guards)."""
    vector = np.asarray(embedding, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(vector)):
        raise ValueError("drift: embedding contains NaN/Inf")
    norm = np.linalg.norm(vector)
    return vector / norm if norm > 0 else vector


def _pack(array: np.ndarray) -> dict[str, Any]:
    """A float32 matrix as JSON-ready base64 (exact, a quarter of the size of a list of floats)."""
    matrix = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(matrix.shape), "float32_base64": base64.b64encode(matrix.tobytes()).decode("ascii")}


def _unpack(data: Any, key: str) -> np.ndarray:
    """Inverse of `_pack`; a ValueError naming ``key`` when it is not one."""
    try:
        raw = base64.b64decode(data["float32_base64"], validate=True)
        return np.frombuffer(raw, dtype="<f4").reshape(data["shape"]).astype(np.float32)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"drift: saved DriftTracker has an unreadable {key!r} ({exc})") from None


class DriftTracker:
    """Running reference of one microphone's embeddings; `update` scores a window and learns it."""

    def __init__(self, config: DriftConfig = DriftConfig()) -> None:
        self.config = config
        self.reset()

    def reset(self) -> None:
        """Forget the baseline (after the microphone was moved or replaced on purpose)."""
        self.count = 0  # healthy windows learned
        self.exemplars: np.ndarray | None = None  # [kept, D] float32 (what the encoder gives)
        self.distance_count = 0
        self.distance_mean = 0.0
        self.distance_var = 0.0
        self.recent: deque[float] = deque(maxlen=self.config.persistence)
        self.pending: deque[np.ndarray] = deque()  # heard, not yet learned

    @property
    def ready(self) -> bool:
        """Whether enough healthy history was learned to score windows."""
        return self.count >= self.config.min_history

    def _distance(self, vector: np.ndarray) -> float:
        """Mean cosine distance of a unit vector to its nearest exemplars (1.0 with none)."""
        if self.exemplars is None:
            return 1.0
        if self.exemplars.shape[1] != vector.size:
            raise ValueError(f"drift: embedding has {vector.size} values, the baseline {self.exemplars.shape[1]}")
        distances = 1.0 - self.exemplars @ vector
        k = min(self.config.neighbours, distances.size)
        return float(np.partition(distances, k - 1)[:k].mean())

    def _window_score(self, distance: float) -> float:
        """Distance in spreads above the usual distance of a healthy window, capped at twice the
        threshold so that one very odd window cannot flag alone: half of the last ``persistence``
        windows must be far out."""
        spread = max(float(np.sqrt(self.distance_var)), self.config.min_spread)
        return min((distance - self.distance_mean) / spread, 2 * self.config.threshold)

    def score(self, embedding: np.ndarray) -> DriftScore:
        """Drift of one window against the baseline, without learning it or remembering its score."""
        return self._judge(_unit(embedding))[0]

    def _judge(self, vector: np.ndarray) -> tuple[DriftScore, float]:
        """The DriftScore of a unit vector and its raw window score."""
        distance = self._distance(vector)
        if not self.ready:
            return DriftScore(0.0, False, False, distance, 0.0), 0.0
        window = self._window_score(distance)
        recent = list(self.recent)[1 - self.config.persistence :] if self.config.persistence > 1 else []
        value = float(np.mean(recent + [window]))
        return DriftScore(value, bool(value >= self.config.threshold), True, distance, window), window

    def update(self, embedding: np.ndarray, learn: bool = True) -> DriftScore:
        """Score one window and remember its score; learn it into the baseline (unless ``learn`` is False)
        once ``persistence`` later windows showed the microphone was not drifting while it was heard.

        Learning is delayed so that the first windows of a change are not taught to the baseline before
        the change is recognised."""
        vector = _unit(embedding)
        result, window = self._judge(vector)
        if not result.ready:
            if learn:
                self._learn(vector)
            return result
        self.recent.append(window)
        if learn:
            self.pending.append(vector)
        if learn and len(self.pending) >= self.config.persistence:
            oldest = self.pending.popleft()
            if result.score < self.config.threshold / 2:
                self._learn(oldest)
        return result

    def _learn(self, vector: np.ndarray) -> None:
        """Fold one healthy window into the exemplars; refresh the usual-distance statistics."""
        if self.exemplars is None:
            self.exemplars = vector[None, :].astype(np.float32)
        elif self.exemplars.shape[0] < self.config.memory:
            self.exemplars = np.vstack([self.exemplars, vector.astype(np.float32)])
        else:  # reservoir sampling over (at most) the last ``horizon`` windows
            slot = int(np.random.default_rng([self.config.seed, self.count]).integers(0, min(self.count, self.config.horizon) + 1))
            if slot < self.config.memory:
                self.exemplars[slot] = vector
        self.count += 1
        kept = self.exemplars.shape[0]
        if kept <= 64 or self.count % max(1, kept // 16) == 0:  # ~O(memory^2 * D) every memory/16 windows
            self._refresh_statistics()

    def _refresh_statistics(self) -> None:
        """Usual distance and spread: each exemplar's distance to its k nearest other exemplars."""
        if self.exemplars is None or self.exemplars.shape[0] <= self.config.neighbours:
            return
        distances = 1.0 - self.exemplars @ self.exemplars.T
        np.fill_diagonal(distances, np.inf)
        k = self.config.neighbours
        nearest = np.partition(distances, k - 1, axis=1)[:, :k].mean(axis=1)
        self.distance_count = int(nearest.size)
        self.distance_mean = float(nearest.mean())
        self.distance_var = float(nearest.var())

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (config and baseline) to persist across restarts."""
        return {
            "format": _FORMAT,
            "config": asdict(self.config),
            "count": self.count,
            "exemplars": None if self.exemplars is None else _pack(self.exemplars),
            "distance_count": self.distance_count,
            "distance_mean": self.distance_mean,
            "distance_var": self.distance_var,
            "recent": list(self.recent),
            "pending": [_pack(v[None, :]) for v in self.pending],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DriftTracker":
        """Rebuild from `to_dict` output; a wrong format or missing key is a ValueError naming it."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"drift: not a saved DriftTracker (format {found!r}, expected {_FORMAT!r})")
        missing = sorted({"config", "count", "exemplars", "distance_count", "distance_mean", "distance_var", "recent", "pending"} - set(data))
        if missing:
            raise ValueError(f"drift: saved DriftTracker lacks key(s) {missing}")
        tracker = cls(DriftConfig.from_dict(data["config"]))
        tracker.count = int(data["count"])
        tracker.exemplars = None if data["exemplars"] is None else _unpack(data["exemplars"], "exemplars")
        tracker.distance_count = int(data["distance_count"])
        tracker.distance_mean = float(data["distance_mean"])
        tracker.distance_var = float(data["distance_var"])
        tracker.recent.extend(float(v) for v in data["recent"])
        tracker.pending.extend(_unpack(v, "pending")[0].astype(np.float64) for v in data["pending"])
        return tracker


def with_drift(health: WindowHealth, drift: DriftScore, config: HealthConfig = HealthConfig()) -> WindowHealth:
    """``health`` with the drift check (`encoder.signal_checks.check_drift`) added and the state recomputed;
    `assess_window(..., drift=...)` runs it as the last check of the window instead."""
    result = check_drift(drift)
    reasons = health.reasons + ((result.reason,) if result.flagged else ())
    flags = {**health.flags, "drift": result.flagged}
    return replace(health, state=state_of(flags, config), reasons=reasons,
                   scores={**health.scores, "drift": result.score, **result.details}, flags=flags)
