"""What the pipeline produces and the store, gRPC and metrics consume: one record per processed window
and one per state change. Plain frozen dataclasses so every stage can pass them across threads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from service.daemon_vocabulary import EVENT_KINDS, HEALTH_STATES, MIC_STATES  # noqa: F401 - the words these records use


@dataclass(frozen=True)
class WindowResult:
    """Everything roomtone decided about one window of one microphone."""

    mic_id: str
    start_unix_ms: int
    end_unix_ms: int
    label: str | None  # a head class, "quiet" or "unknown" (service/analysis/activity.py); None: faulty mic or no head
    probabilities: dict[str, float]  # class name -> posterior, sums to 1 (empty without a head)
    health_state: str  # one of HEALTH_STATES
    health_reasons: tuple[str, ...]  # human-readable reasons for a non-ok state, e.g. "clipping: 4.1% of samples at full scale"
    health_scores: dict[str, float]  # check name -> score (see encoder/signal_checks.py for units)
    rms_dbfs: float  # RMS level of the window in dBFS (mono mix)
    embedding: np.ndarray | None = field(default=None, compare=False)  # float32 [embedding_dim], L2-normalised
    window_id: int | None = None  # assigned by the store when written
    sounds: tuple[SoundMatch, ...] = field(default=(), compare=False)  # custom sounds detected in this window
    map: WindowMap | None = field(default=None, compare=False)  # the log-Mel patch frames (custom sounds), kept a while


@dataclass(frozen=True)
class SoundMatch:
    """A custom sound detected in a window (service/analysis/sound_library.py)."""

    name: str
    score: float  # cosine similarity of the best-matching span to the sound's nearest example, -1..1
    threshold: float  # the sound's threshold when it was detected
    start_s: float = 0.0  # where the best-matching span starts, seconds from the window's start
    end_s: float = 0.0  # where it ends, seconds from the window's start


@dataclass(frozen=True)
class WindowMap:
    """What custom sounds match in one window: its map ``[frames, bands]``, the log-Mel pooled to 20 ms frames
    of 64 bands (`encoder.patch_matching.pooled_frames`; stores of before 2026-12-07 hold the encoder's column
    map ``[32, 512]`` instead, which no sound scores; one row, the pooled embedding, when no map is at hand),
    each frame's RMS level in dB (None: unknown), the window's length in seconds, and its pooled embedding
    (sounds taught from windows without a map match it)."""

    columns: np.ndarray = field(compare=False)
    levels: np.ndarray | None = field(default=None, compare=False)
    duration_s: float = 10.0
    embedding: np.ndarray | None = field(default=None, compare=False)

    @property
    def has_map(self) -> bool:
        """Whether the window's map is at hand (more than the one row of its pooled embedding)."""
        return len(self.columns) > 1

    @property
    def pooled(self) -> np.ndarray:
        """The window's pooled embedding ``[D]`` (the one row when there is no map)."""
        if self.embedding is not None:
            return self.embedding
        if self.has_map:
            raise ValueError("a window's column map without its pooled embedding")
        return self.columns[0]



@dataclass(frozen=True)
class StateChange:
    """A microphone's activity label or health state changed between two consecutive windows, or a custom
    sound was detected in a window (kind sound_detected: ``current`` is the sound's name)."""

    kind: str  # one of EVENT_KINDS
    mic_id: str
    time_unix_ms: int  # start of the window that shows the new state
    previous: str | None  # previous label/state; None for the first window of a mic
    current: str
    window_id: int | None = None  # the window that shows the new state
    reasons: tuple[str, ...] = ()  # health reasons for health_changed
    event_id: int | None = None  # assigned by the store when written
    score: float | None = None  # sound_detected: cosine similarity to the sound's nearest example
    sound_start_ms: int | None = None  # sound_detected: where the sound starts, ms from the window's start
    sound_end_ms: int | None = None  # sound_detected: where it ends, ms from the window's start



@dataclass(frozen=True)
class MicStatus:
    """What the daemon knows about one microphone right now (for ListMicrophones/GetMicrophoneHealth)."""

    mic_id: str
    device: str  # sound-card name, file path, or "demo:<file>"
    state: str  # capture state, one of MIC_STATES
    last_window_end_unix_ms: int | None = None  # end of the last processed window; None before the first
    health_state: str | None = None  # one of HEALTH_STATES; None before the first window
    health_reasons: tuple[str, ...] = ()
    health_scores: dict[str, float] = field(default_factory=dict)
    label: str | None = None  # activity label of the last processed window
