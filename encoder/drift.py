"""Embedding drift of one microphone: how unlike its own history a microphone sounds, so a mic that is
moved, covered, swapped or whose capsule fails is noticed even when every signal check passes.

`DriftTracker` (one per microphone) keeps a sample of the L2-normalised embeddings of its healthy
windows (a reservoir of ``memory`` exemplars). A window's distance is its mean cosine distance to its
``k`` nearest exemplars; the usual distance and its spread are those of each exemplar to its k nearest
other exemplars. A window's distance in spreads above the usual one is its window score (capped at
twice the threshold); the drift score is the mean of the last ``persistence`` window scores, so one
unusual sound (a first vacuum-cleaner run) does not flag, but a microphone that keeps sounding unlike
itself for about a minute does. Scores are given once ``learn_s`` seconds of healthy audio were learned
(`ready`). A window is learned ``persistence_s`` later, and only if the microphone was not drifting by
then, so a lasting change is never taught to the baseline and stays flagged until `reset` (e.g. after
the mic was moved on purpose).

The periods are durations, not window counts: with a short hop (``pipeline.hop_s = 0.5``) windows overlap
and come 20 times as often, yet learning still takes five minutes and a change must last a minute. Of
overlapping windows only one per window length is learned (neighbours would be near-copies of each
other, and the usual distance between exemplars would shrink to nothing).

Why exemplars and not one centroid: a household microphone hears many kinds of sound, and the mean of
them all is close to none of them; measured in bench/fault_detection.py (docs/mic-health.md).
"""

from __future__ import annotations

import base64
import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from pydantic import model_validator

from encoder.config_schema import Section
from encoder.signal_checks import HealthConfig, WindowHealth, check_drift, state_of
from encoder.windows import WINDOW_SECONDS

_FORMAT = "roomtone.drift/3"
_FORMAT_2 = "roomtone.drift/2"  # counted windows of 10 s: min_history, persistence


class DriftConfig(Section):
    """How the baseline is learned and when a microphone counts as drifted (tuned in bench/fault_detection.py)."""

    learn_s: float = 300.0  # seconds of healthy audio learned (5 minutes) before scores are given
    memory: int = 512  # exemplars kept (a uniform sample of the last ``horizon`` learned windows)
    horizon: int = 8640  # learned windows (one day of 10 s windows) the exemplar sample reaches back
    neighbours: int = 3  # distance of a window = mean cosine distance to its k nearest exemplars
    persistence_s: float = 60.0  # the drift score averages the windows of this many seconds (1 minute)
    threshold: float = 1.25  # flag when that average is this many spreads above the usual distance (swept: docs)
    min_spread: float = 0.01  # floor on the spread (cosine distance) so a very steady mic is not hair-trigger
    seed: int = 0  # which windows the reservoir keeps (reproducible)

    @model_validator(mode="after")
    def _check(self) -> "DriftConfig":
        if not 2 <= self.memory <= self.horizon:
            raise ValueError(f"DriftConfig needs 2 <= memory <= horizon, got {self.memory}, {self.horizon}")
        if self.neighbours < 1:
            raise ValueError(f"DriftConfig needs neighbours >= 1, got {self.neighbours}")
        if not (math.isfinite(self.learn_s) and self.learn_s > 0 and math.isfinite(self.persistence_s)
                and self.persistence_s > 0):
            raise ValueError(f"DriftConfig needs finite learn_s > 0 and persistence_s > 0, got {self.learn_s}, "
                             f"{self.persistence_s}")
        return self


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
    """Running reference of one microphone's embeddings; `update` scores a window and learns it.

    ``hop_s`` is the time between consecutive windows and ``window_s`` their length (the pipeline's); the
    config's durations become window counts from them: ``persistence`` (windows averaged), ``stride`` (one
    window learned per window length) and ``min_history`` (learned windows before `ready`)."""

    def __init__(self, config: DriftConfig = DriftConfig(), hop_s: float = WINDOW_SECONDS, window_s: float = WINDOW_SECONDS) -> None:
        if not (hop_s > 0 and window_s > 0):
            raise ValueError(f"DriftTracker needs hop_s > 0 and window_s > 0, got {hop_s}, {window_s}")
        self.config = config
        self.hop_s, self.window_s = float(hop_s), float(window_s)
        self.stride = max(1, round(window_s / hop_s))
        self.persistence = max(1, math.ceil(config.persistence_s / hop_s - 1e-9))
        self.min_history = max(2, math.ceil(config.learn_s / (hop_s * self.stride) - 1e-9))
        self.reset()

    def reset(self) -> None:
        """Forget the baseline (after the microphone was moved or replaced on purpose)."""
        self.count = 0  # healthy windows learned
        self.exemplars: np.ndarray | None = None  # [kept, D] float32 (what the encoder gives)
        self.distance_count = 0
        self.distance_mean = 0.0
        self.distance_var = 0.0
        self.recent: deque[float] = deque(maxlen=self.persistence)
        self.pending: deque[np.ndarray] = deque()  # heard, not yet learned
        self.heard = 0  # windows scored (decides which of overlapping windows are learned)

    @property
    def ready(self) -> bool:
        """Whether ``learn_s`` seconds of healthy history were learned, so windows are scored."""
        return self.count >= self.min_history

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
        recent = list(self.recent)[1 - self.persistence :] if self.persistence > 1 else []
        value = float(np.mean(recent + [window]))
        return DriftScore(value, bool(value >= self.config.threshold), True, distance, window), window

    def update(self, embedding: np.ndarray, learn: bool = True) -> DriftScore:
        """Score one window and remember its score; learn it into the baseline (unless ``learn`` is False)
        once ``persistence`` later windows showed the microphone was not drifting while it was heard.

        Learning is delayed so that the first windows of a change are not taught to the baseline before
        the change is recognised."""
        vector = _unit(embedding)
        result, window = self._judge(vector)
        learn = learn and self.heard % self.stride == 0  # of overlapping windows, one per window length
        self.heard += 1
        if not result.ready:
            if learn:
                self._learn(vector)
            return result
        self.recent.append(window)
        if learn:
            self.pending.append(vector)
        if learn and len(self.pending) >= math.ceil(self.persistence / self.stride):
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
            "config": self.config.to_dict(),
            "hop_s": self.hop_s,
            "window_s": self.window_s,
            "heard": self.heard,
            "count": self.count,
            "exemplars": None if self.exemplars is None else _pack(self.exemplars),
            "distance_count": self.distance_count,
            "distance_mean": self.distance_mean,
            "distance_var": self.distance_var,
            "recent": list(self.recent),
            "pending": [_pack(v[None, :]) for v in self.pending],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], hop_s: float | None = None, window_s: float | None = None) -> "DriftTracker":
        """Rebuild from `to_dict` output (or a ``roomtone.drift/2`` file, whose periods were counts of 10 s
        windows); a wrong format or missing key is a ValueError naming it. With ``hop_s``/``window_s`` that
        differ from the saved ones the baseline is kept and the recent scores, counted in the old windows,
        start afresh."""
        if not isinstance(data, dict) or data.get("format") not in (_FORMAT, _FORMAT_2):
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(f"drift: not a saved DriftTracker (format {found!r}, expected {_FORMAT!r})")
        missing = sorted({"config", "count", "exemplars", "distance_count", "distance_mean", "distance_var", "recent", "pending"} - set(data))
        if missing:
            raise ValueError(f"drift: saved DriftTracker lacks key(s) {missing}")
        config = dict(data["config"]) if isinstance(data["config"], dict) else data["config"]
        saved_hop, saved_window = float(data.get("hop_s", 10.0)), float(data.get("window_s", 10.0))
        if data["format"] == _FORMAT_2 and isinstance(config, dict):
            config["learn_s"] = float(config.pop("min_history", 30)) * saved_hop
            config["persistence_s"] = float(config.pop("persistence", 6)) * saved_hop
        hop_s = saved_hop if hop_s is None else float(hop_s)
        window_s = saved_window if window_s is None else float(window_s)
        tracker = cls(DriftConfig.from_dict(config), hop_s, window_s)
        tracker.count = int(data["count"])
        tracker.exemplars = None if data["exemplars"] is None else _unpack(data["exemplars"], "exemplars")
        tracker.distance_count = int(data["distance_count"])
        tracker.distance_mean = float(data["distance_mean"])
        tracker.distance_var = float(data["distance_var"])
        if (hop_s, window_s) == (saved_hop, saved_window):
            tracker.heard = int(data.get("heard", 0))
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
