"""Cutting a microphone's stream of chunks into analysis windows (10 s, hop configurable), resampled from
the source's native rate to the model's. Windows match `encoder.windows.window_spans` over the same audio."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from encoder.resampling import resample
from encoder.windows import WindowSpec
from service.capture.sources import Chunk

#: A chunk arriving this much later than the buffered audio predicts means samples were lost.
GAP_TOLERANCE_S = 1.0


@dataclass(frozen=True)
class Window:
    """One analysis window of one microphone at the model's sample rate."""

    mic_id: str
    samples: np.ndarray  # float32 [channels, n]
    sample_rate: int
    start_unix: float
    end_unix: float
    realtime: bool  # timestamps are wall-clock, so window-end -> event latency means something

    def mono(self) -> np.ndarray:
        """The mono mix float32 ``[n]`` the model hears (channels averaged, NaN/Inf as 0); for one finite
        float32 channel, that channel itself (a view: read it, never write it)."""
        if self.samples.shape[0] == 1 and self.samples.dtype == np.float32:
            with np.errstate(over="ignore", invalid="ignore"):  # any NaN/Inf spoils the sum; an overflow takes the long way
                all_finite = np.isfinite(self.samples.sum())
            if all_finite:
                return self.samples[0]  # the mean of one channel is that channel
        return np.nan_to_num(self.samples.mean(axis=0), nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


class Windower:
    """Accumulates one microphone's chunks and emits every complete window of ``spec`` (and a trailing one at
    the end)."""

    def __init__(self, mic_id: str, source_rate: int, target_rate: int, spec: WindowSpec = WindowSpec(), *,
                 realtime: bool = True, phase_s: float | None = None) -> None:
        self.mic_id = mic_id
        self.source_rate = source_rate
        self.target_rate = target_rate
        self.window, self.hop, self.minimum = spec.in_samples(source_rate)
        self.realtime = realtime
        # With a phase, window starts fall on (first sample + phase_s) + k * hop: the audio before that point,
        # and after a gap up to the next such point, is skipped, so each microphone's windows end at its own
        # phase of the hop (the pipeline staggers realtime microphones this way).
        self.phase_s = phase_s
        self.grid_unix: float | None = None
        self.gaps = 0  # discontinuities seen (lost samples); the buffer restarts at each
        self.gap_s = 0.0  # capture time lost in them (the process stopped, a device stalled), seconds
        self._parts: list[np.ndarray] = []
        self._buffered = 0
        self._start_unix: float | None = None  # time of the first buffered sample
        self._emitted_end = 0  # end of the last emitted window, in samples from the buffer start
        self._skip = 0  # samples still to discard before the next window starts (hop > window, grid)

    def _buffer(self) -> np.ndarray:
        if len(self._parts) != 1:
            self._parts = [np.concatenate(self._parts, axis=1)] if self._parts else [np.zeros((0, 0), np.float32)]
        return self._parts[0]

    def _cut(self, start: int, end: int) -> Window:
        buf = self._buffer()
        t0 = self._start_unix + start / self.source_rate
        samples = resample(buf[:, start:end], self.source_rate, self.target_rate).astype(np.float32, copy=False)
        return Window(self.mic_id, samples, self.target_rate, t0, t0 + (end - start) / self.source_rate,
                      self.realtime)

    def push(self, chunk: Chunk) -> list[Window]:
        """Add a chunk; returns the windows it completed (oldest first)."""
        if chunk.samples.shape[1] == 0:
            return []
        if self._start_unix is None:
            self._begin(chunk.start_unix)
        elif self.realtime:
            expected = self._start_unix + (self._buffered - self._skip) / self.source_rate
            if abs(chunk.start_unix - expected) > GAP_TOLERANCE_S:
                self.gaps += 1
                self.gap_s += max(0.0, chunk.start_unix - expected)
                self.reset()
                self._begin(chunk.start_unix)
        samples = chunk.samples
        if self._skip:  # hop longer than the window: audio between windows is not analysed
            skipped = min(self._skip, samples.shape[1])
            samples, self._skip = samples[:, skipped:], self._skip - skipped
        self._parts.append(samples)
        self._buffered += samples.shape[1]
        windows = []
        while self._buffered >= self.window:
            windows.append(self._cut(0, self.window))
            self._advance(self.hop)
        return windows

    def _begin(self, first_sample_unix: float) -> None:
        """Start buffering a stream whose next sample is at ``first_sample_unix`` (skipping to the grid)."""
        self._start_unix = first_sample_unix
        if self.phase_s is not None:
            if self.grid_unix is None:
                self.grid_unix = first_sample_unix + self.phase_s
            hop_s = self.hop / self.source_rate
            ahead_s = (self.grid_unix - first_sample_unix) % hop_s
            self._skip = int(round(ahead_s * self.source_rate)) % self.hop
            self._start_unix += self._skip / self.source_rate

    def _advance(self, samples: int) -> None:
        buf = self._buffer()
        dropped = min(samples, buf.shape[1])
        self._parts = [buf[:, dropped:]] if dropped < buf.shape[1] else []
        self._buffered -= dropped
        self._skip = samples - dropped
        self._start_unix += samples / self.source_rate
        self._emitted_end = max(0, self.window - samples)  # end of the last window, relative to the buffer

    def finish(self) -> list[Window]:
        """At the end of a finite stream: the trailing window (>= min_s of audio not yet covered), as
        `window_spans` would cut it."""
        covered = self._emitted_end
        windows = []
        if self._buffered >= self.minimum and self._buffered > covered:
            windows.append(self._cut(0, self._buffered))
        self.reset()
        return windows

    def reset(self) -> None:
        """Forget buffered audio (on a gap or when capture stops); returns nothing."""
        self._parts = []
        self._buffered = 0
        self._start_unix = None
        self._emitted_end = 0
        self._skip = 0

    @property
    def buffered_s(self) -> float:
        """Seconds of audio waiting for the next window."""
        return self._buffered / self.source_rate
