"""Resampling between sample rates with a bounded cost that does not depend on the rates: every path that
changes a rate (file and upload decoding, the daemon's windows, offline tools) calls `resample` here.

It uses soxr (libsoxr, the SoX resampler), whose polyphase filters are designed for the ratio with a bounded
length whatever gcd(rate, target) is. torchaudio's sinc resampler, used before, builds a filter of
``target / gcd`` phases on every call: 1 s at 44,101 Hz took 33 s and 11.9 GB (issue 15). Measured with soxr
on 10 s of stereo: 44,101 -> 16,000 Hz 8.5 ms, 11,127 Hz 3 ms, 655,350 Hz 152 ms (65 x the samples), and the
filter set-up per call is below a millisecond for any pair, so no per-pair cache is needed to bound the cost
(a cache would only add state shared between threads). Pure numpy + soxr: no torch import, so the torch-free
serving path can use it.

Rates outside ``MIN_RATE .. MAX_RATE`` Hz are refused with RateError before any work. `StreamResampler` does the
same for a stream of blocks (block-wise decoding, file microphones), in memory of one block.
"""

from __future__ import annotations

import math

import numpy as np
import soxr

#: Lowest rate accepted (Hz): below it a file holds no audio anyone could mean.
MIN_RATE = 1
#: Highest rate accepted (Hz): FLAC's own limit is 655,350 Hz and 768 kHz is the fastest audio interface rate.
MAX_RATE = 768_000
#: soxr quality: "HQ" is 20-bit precision, passband to 91 % of Nyquist at its lowest setting, linear phase.
QUALITY = "HQ"


class RateError(ValueError):
    """A sample rate that cannot be resampled (not an integer in MIN_RATE..MAX_RATE Hz)."""


def check_rate(rate: float, what: str = "sample rate") -> int:
    """``rate`` as an int Hz if it can be resampled; RateError naming ``what`` otherwise."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or not math.isfinite(rate) \
            or int(rate) != rate or not MIN_RATE <= rate <= MAX_RATE:
        raise RateError(f"{what} {rate!r} Hz is not supported: it must be a whole number of Hz in "
                        f"{MIN_RATE}..{MAX_RATE}")
    return int(rate)


def output_length(samples: int, source_rate: int, target_rate: int) -> int:
    """Samples that ``samples`` at ``source_rate`` become at ``target_rate`` (rounded up, as window spans expect)."""
    return -(-samples * target_rate // source_rate)


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """``samples [channels, n]`` (or ``[n]``) float32 resampled to ``target_rate``; length `output_length`.

    Memory is O(input + output) and time O(input + output) for any pair of rates; RateError for rates
    outside MIN_RATE..MAX_RATE.
    """
    source_rate, target_rate = check_rate(source_rate, "source rate"), check_rate(target_rate, "target rate")
    samples = np.asarray(samples, dtype=np.float32)
    if source_rate == target_rate:
        return samples
    one_d = samples.ndim == 1
    frames = samples[:, None] if one_d else samples.T  # soxr wants [n, channels]
    length = output_length(frames.shape[0], source_rate, target_rate)
    if frames.shape[0] == 0:
        out = np.zeros((0, frames.shape[1]), dtype=np.float32)
    else:
        out = soxr.resample(np.ascontiguousarray(frames), source_rate, target_rate, quality=QUALITY)
    if out.shape[0] != length:  # soxr rounds the length to nearest; pad or trim the last sample
        out = out[:length] if out.shape[0] > length else np.pad(out, ((0, length - out.shape[0]), (0, 0)))
    out = out.astype(np.float32, copy=False)
    return out[:, 0] if one_d else np.ascontiguousarray(out.T)


class StreamResampler:
    """Resamples consecutive ``[channels, n]`` float32 blocks of one stream with soxr's streaming filter: the
    blocks together come out as `resample` of the whole would (same filter; length `output_length` once
    ``last`` is given), in memory of one block whatever the stream's length."""

    def __init__(self, source_rate: int, target_rate: int, channels: int) -> None:
        self.source_rate = check_rate(source_rate, "source rate")
        self.target_rate = check_rate(target_rate, "target rate")
        self.channels = int(channels)
        self._stream = (None if self.source_rate == self.target_rate else
                        soxr.ResampleStream(self.source_rate, self.target_rate, self.channels, dtype="float32",
                                            quality=QUALITY))
        self._taken = 0  # input frames pushed
        self._given = 0  # output frames returned

    def push(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        """The resampled output that ``block [channels, n]`` completes; ``last=True`` flushes the filter and pads
        or trims so the stream's total length is `output_length` of its input."""
        block = np.asarray(block, dtype=np.float32)
        self._taken += block.shape[1]
        if self._stream is None:
            self._given += block.shape[1]
            return block
        out = self._stream.resample_chunk(np.ascontiguousarray(block.T), last=last)
        out = np.ascontiguousarray(out.T, dtype=np.float32).reshape(self.channels, -1)
        if last:
            wanted = output_length(self._taken, self.source_rate, self.target_rate) - self._given
            out = out[:, :max(wanted, 0)] if out.shape[1] >= wanted else np.pad(out, ((0, 0), (0, wanted - out.shape[1])))
        self._given += out.shape[1]
        return out
