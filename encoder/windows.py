"""How long audio is cut into analysis windows (10 s by default), shared by embed, evaluate, health and
the daemon so that every part of roomtone agrees on what "one window" is."""

from __future__ import annotations

from dataclasses import dataclass

WINDOW_SECONDS = 10.0


@dataclass(frozen=True)
class Span:
    """One window of a recording, in samples: ``[start, end)``."""

    start: int
    end: int

    def offset_s(self, sample_rate: int) -> float:
        """Start of the window in seconds."""
        return self.start / sample_rate


@dataclass(frozen=True)
class WindowSpec:
    """How audio is cut into analysis windows: ``window_s`` long, a new one every ``hop_s`` (None: no overlap),
    a trailing remainder of at least ``min_s`` kept as one shorter window. Passed whole (the daemon's is
    `PipelineConfig.windows`); the one place the seconds become samples, for the offline tools
    (`window_spans`) and the daemon's stream (service/capture/windowing.py)."""

    window_s: float = WINDOW_SECONDS
    hop_s: float | None = None
    min_s: float = 1.0

    @property
    def step_s(self) -> float:
        """Seconds between window starts (``hop_s``, or the window length when windows do not overlap)."""
        return self.window_s if self.hop_s is None else self.hop_s

    def consecutive(self) -> "WindowSpec":
        """The same windows cut one after another (hop = window length): how uploads and examples are cut."""
        return WindowSpec(self.window_s, None, self.min_s)

    def in_samples(self, sample_rate: int) -> tuple[int, int, int]:
        """``(window, hop, minimum)`` in samples at ``sample_rate``; ValueError unless window and hop are positive."""
        window = int(round(self.window_s * sample_rate))
        hop = int(round(self.step_s * sample_rate))
        if window <= 0 or hop <= 0:
            raise ValueError(f"window_s and hop_s must be positive, got {self.window_s}, {self.hop_s}")
        return window, hop, max(1, int(round(self.min_s * sample_rate)))


def window_spans(num_samples: int, sample_rate: int, spec: WindowSpec = WindowSpec()) -> list[Span]:
    """Windows of ``spec.window_s`` every ``spec.hop_s`` (default: no overlap) over a recording.

    A trailing remainder of at least ``spec.min_s`` becomes one shorter window (the model takes any length);
    a recording shorter than a window but at least ``min_s`` long is one window. Shorter -> no windows.
    """
    window, hop, minimum = spec.in_samples(sample_rate)
    spans: list[Span] = []
    start = 0
    while start + window <= num_samples:
        spans.append(Span(start, start + window))
        start += hop
    reaches_new_audio = not spans or num_samples > spans[-1].end
    if reaches_new_audio and num_samples - start >= minimum:
        spans.append(Span(start, num_samples))
    return spans
