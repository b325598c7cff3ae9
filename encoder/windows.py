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


def window_spans(
    num_samples: int,
    sample_rate: int,
    window_s: float = WINDOW_SECONDS,
    hop_s: float | None = None,
    min_s: float = 1.0,
) -> list[Span]:
    """Windows of ``window_s`` every ``hop_s`` (default: no overlap) over a recording.

    A trailing remainder of at least ``min_s`` becomes one shorter window (the model takes any length);
    a recording shorter than a window but at least ``min_s`` long is one window. Shorter -> no windows.
    """
    window = int(round(window_s * sample_rate))
    hop = int(round((hop_s if hop_s is not None else window_s) * sample_rate))
    minimum = max(1, int(round(min_s * sample_rate)))
    if window <= 0 or hop <= 0:
        raise ValueError(f"window_s and hop_s must be positive, got {window_s}, {hop_s}")
    spans: list[Span] = []
    start = 0
    while start + window <= num_samples:
        spans.append(Span(start, start + window))
        start += hop
    reaches_new_audio = not spans or num_samples > spans[-1].end
    if reaches_new_audio and num_samples - start >= minimum:
        spans.append(Span(start, num_samples))
    return spans
