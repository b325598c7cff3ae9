"""Microphone health checks over one window of samples: pure numpy, shared by `roomtone health`, the
fault-detection benchmark and the daemon.

`assess_window(samples [channels, n], sample_rate, config)` runs every check of `SIGNAL_CHECKS` (a table of
small functions, one per check: `Signal` and `HealthConfig` in, `CheckResult` out) on every channel and
returns a `WindowHealth`: per-check scores (worst channel), per-check flags, an overall state
(ok / degraded / faulty) and human-readable reasons. Embedding drift (encoder/drift.py) is one more
entry, `check_drift`, run last when a drift callback is passed: it needs the embedding and whether the
signal checks passed. Scores and their units (threshold in `HealthConfig`, direction of "worse"):

=============  ===========================================================  ======================
check          score                                                        flagged when
=============  ===========================================================  ======================
non_finite     fraction of NaN/Inf samples                                  > non_finite_max
clipping       fraction of samples with abs >= clip_level (full scale)      >= clip_fraction_max,
               (+ ``clipping_run``: longest run of such samples)            or run >= clip_run_min
dropout        ms of flat runs (identical samples, >= dropout_min_run_ms)   > 0
               entered or left with a jump >= dropout_edge_jump
dead_channel   RMS of the quietest channel, dBFS                            < dead_floor_dbfs, or
               (+ ``dead_channel_gap_db``: dB below the loudest sibling)    gap >= dead_sibling_gap_db
dc_offset      abs(mean), full-scale units                                  >= dc_offset_max
hum            power of 50/60 Hz lines and harmonics over the rest, dB      >= hum_max_db
stuck          periodicity residual at the best lag in [min, max] period    <= stuck_residual_max_db
               (dB; -120 for a constant non-zero signal)
drift          spreads above the microphone's usual embedding distance      flagged by DriftTracker
               (+ ``drift_ready``: 1 once the baseline has enough history)
=============  ===========================================================  ======================

``scores`` also holds ``rms_dbfs``, the level of the mono mix. Non-finite samples are set to zero
before the other checks run. Every check works on all channels at once (numpy over ``[channels, n]``,
no Python loop over channels or samples). The thresholds were tuned so that all
320 shared homesounds clips pass, and all 404 music clips except five that really carry what a check
looks for (a -0.07 DC offset; steady drones exactly on 100/200/400 Hz); docs/mic-health.md has the
measured detection and false-alarm rates.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Annotated, Any, Callable

import numpy as np
from pydantic import Field, field_validator, model_validator

from encoder.config_schema import Section
from encoder.vocabulary import HEALTH_DEGRADED, HEALTH_FAULTY, HEALTH_OK, HEALTH_STATES

STATES = HEALTH_STATES  # encoder/vocabulary.py
_LINE_OVER_FLOOR = 4.0  # a mains line must carry 4x (+6 dB) the power of its local background
_FLOOR_DB = -120.0  # what a level of exactly zero reads as, so scores stay finite (JSON, Prometheus)


class HealthConfig(Section):
    """Thresholds of every check; the defaults are the tuned ones (docs/mic-health.md). The daemon's
    ``[health]`` table; `roomtone health --config FILE.json`."""

    non_finite_max: float = Field(0.0, ge=0.0, le=1.0, description="fraction of NaN/Inf samples tolerated (fraction)")
    clip_level: float = Field(0.99, gt=0.0, le=1.0, description="absolute sample value counted as at full scale; "
                                                                "int16 full scale reads 0.99997 (full scale)")
    clip_fraction_max: float = Field(1e-4, ge=0.0, le=1.0, description="clipping when at least this fraction of "
                                                                       "samples is at full scale (16 in 10 s)... (fraction)")
    clip_run_min: int = Field(2, ge=1, le=1_000_000, description="...or this many consecutive ones (one can be a "
                                                                 "true peak) (samples)")
    dropout_min_run_ms: float = Field(4.0, gt=0.0, le=10_000.0, description="shortest flat run that can be a dropout (ms)")
    dropout_edge_jump: float = Field(1e-4, ge=0.0, le=2.0, description="jump into or out of a flat run that makes it a "
                                                                       "dropout; real silence enters by <= 2 LSB (full scale)")
    dead_floor_dbfs: float = Field(-70.0, ge=-120.0, le=0.0, description="a channel quieter than this for the whole "
                                                                          "window is dead (dBFS)")
    dead_sibling_gap_db: float = Field(30.0, ge=0.0, le=1000.0, description="...or one this far below the loudest "
                                                                             "channel of the same device (dB)")
    dc_offset_max: float = Field(0.05, ge=0.0, le=1.0, description="largest abs(mean) that is no DC offset (full scale)")
    hum_mains_hz: tuple[Annotated[float, Field(gt=0.0, le=1000.0)], ...] = Field(
        (50.0, 60.0), description="mains frequencies whose lines and harmonics count as hum (Hz)")
    hum_max_harmonic_hz: float = Field(600.0, gt=0.0, le=24_000.0, description="harmonics k x mains up to this "
                                                                               "frequency count as hum (Hz)")
    hum_max_db: float = Field(-12.0, ge=-120.0, le=120.0, description="hum when the steady line power over the power "
                                                                      "of everything else reaches this (dB)")
    stuck_min_period_ms: float = Field(1.0, gt=0.0, le=10_000.0, description="shortest repeated buffer looked for (ms)")
    stuck_max_period_ms: float = Field(300.0, gt=0.0, le=10_000.0, description="longest repeated buffer looked for; "
                                                                               "4800 samples at 16 kHz (ms)")
    stuck_chunk_s: float = Field(0.5, gt=0.0, le=60.0, description="chunk checked for repetition; every other one is, "
                                                                   "so a stall of 1 s anywhere is caught (s)")
    stuck_residual_max_db: float = Field(-80.0, ge=-200.0, le=0.0, description="stuck when a chunk repeats this "
                                                                                "exactly: a repeated buffer reads -120, "
                                                                                "a pure tone at 50 dB SNR about -47 (dB)")
    faulty_checks: tuple[str, ...] = Field(("non_finite", "dead_channel", "stuck"),
                                           description="checks that make a window faulty; the rest make it degraded")

    @field_validator("faulty_checks")
    @classmethod
    def _known_checks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(CHECKS) - {"drift"})
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; known: {list(CHECKS)} + ['drift']")
        return value

    @model_validator(mode="after")
    def _stuck_periods_fit_the_chunk(self) -> "HealthConfig":
        if not self.stuck_min_period_ms < self.stuck_max_period_ms < 1000 * self.stuck_chunk_s:
            raise ValueError(
                "health.stuck_max_period_ms: needs stuck_min_period_ms < stuck_max_period_ms < 1000 x stuck_chunk_s, "
                f"got {self.stuck_min_period_ms}, {self.stuck_max_period_ms}, {self.stuck_chunk_s}")
        return self


@dataclass(frozen=True)
class WindowHealth:
    """Health of one window: overall state, reasons for it, every score and every flag."""

    state: str  # one of STATES
    reasons: tuple[str, ...]  # one line per flagged check; empty when ok
    scores: dict[str, float] = field(default_factory=dict)  # check (and detail) name -> score
    flags: dict[str, bool] = field(default_factory=dict)  # check name -> flagged


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict on a window: its score (worst channel), whether it is flagged, the reason
    when it is, and any extra scores it reports (``clipping_run``, ``rms_dbfs``...)."""

    score: float
    flagged: bool
    reason: str = ""
    details: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Signal:
    """The window every signal check reads: ``samples [channels, n]`` float32 in full-scale units with
    NaN/Inf set to zero, and the per-channel fraction of samples that were NaN/Inf before that.
    Per-channel mean and power are computed once (float64), for the checks that share them."""

    samples: np.ndarray
    sample_rate: int
    non_finite: np.ndarray

    @property
    def channels(self) -> int:
        """Number of channels (microphones of one device)."""
        return self.samples.shape[0]

    @functools.cached_property
    def mean(self) -> np.ndarray:
        """Mean per channel (full-scale units)."""
        return self.samples.mean(axis=1, dtype=np.float64)

    @functools.cached_property
    def power(self) -> np.ndarray:
        """Mean square per channel (full-scale units)."""
        x = self.samples.astype(np.float64)
        return np.einsum("ij,ij->i", x, x) / self.samples.shape[1]


def signal_of(samples: np.ndarray, sample_rate: int) -> Signal:
    """The `Signal` of a window ``[channels, n]`` or 1-D mono, float or integer PCM (scaled to +-1.0)."""
    raw = np.asarray(samples)
    if np.issubdtype(raw.dtype, np.integer):
        x = (raw / float(np.iinfo(raw.dtype).max + 1)).astype(np.float32)
    else:
        x = raw.astype(np.float32, copy=False)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"assess_window expects [channels, samples] with samples > 0, got shape {x.shape}")
    with np.errstate(over="ignore", invalid="ignore"):  # any NaN/Inf spoils the sum; an overflow takes the long way
        all_finite = np.isfinite(x.sum())
    if all_finite:
        return Signal(x, sample_rate, np.zeros(x.shape[0]))
    finite = np.isfinite(x)
    if finite.all():
        return Signal(x, sample_rate, np.zeros(x.shape[0]))
    return Signal(np.where(finite, x, np.float32(0)), sample_rate, 1.0 - finite.mean(axis=1))


# ---- per-channel measurements: [channels, n] in, one value per channel out --------------------------


def clip_stats(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: fraction of samples with ``abs >= level`` and the longest run of them."""
    counts = np.zeros(samples.shape[0], dtype=np.int64)
    runs = np.zeros(samples.shape[0], dtype=np.int64)
    # Most windows never reach full scale: two fast reductions rule that out before any mask is built.
    for row in np.flatnonzero((samples.max(axis=1) >= level) | (samples.min(axis=1) <= -level)):
        at_full_scale = (samples[row] >= level) | (samples[row] <= -level)
        counts[row] = np.count_nonzero(at_full_scale)
        edges = np.flatnonzero(np.diff(at_full_scale.view(np.int8), prepend=0, append=0))
        runs[row] = int((edges[1::2] - edges[0::2]).max())
    return counts / samples.shape[1], runs


def dropout_ms(samples: np.ndarray, sample_rate: int, min_run_ms: float, edge_jump: float,
               clip_level: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: total and longest duration (ms) of dropouts.

    A dropout is a run of identical samples (zeros or a held value) at least ``min_run_ms`` long that is
    entered or left with a jump of at least ``edge_jump``: real silence fades in and out through the
    last bits, a lost buffer cuts live audio. A run spanning the whole channel is not a dropout, nor is
    a plateau at ``clip_level`` or above (that is clipping).
    """
    channels, n = samples.shape
    total, longest = np.zeros(channels), np.zeros(channels)
    # same[c, t]: sample t+1 repeats sample t; the last column stays False so runs never cross channels
    same = np.zeros((channels, n), dtype=bool)
    np.equal(samples[:, 1:], samples[:, :-1], out=same[:, :-1])
    flat = np.flatnonzero(same)  # few in live audio, so everything below works on short arrays
    if flat.size == 0:
        return total, longest
    breaks = np.flatnonzero(np.diff(flat) != 1)
    first = flat[np.concatenate(([0], breaks + 1))]
    last = flat[np.concatenate((breaks, [flat.size - 1]))]
    row, start = np.divmod(first, n)
    lengths = last - first + 2  # a run of k equal neighbour pairs is k + 1 identical samples
    end = start + lengths
    value = samples[row, start]
    long = (lengths >= max(2, int(math.ceil(min_run_ms * sample_rate / 1000)))) & (np.abs(value) < clip_level)
    jump_in = np.where(start > 0, np.abs(samples[row, np.maximum(start - 1, 0)] - value), 0.0)
    jump_out = np.where(end < n, np.abs(samples[row, np.minimum(end, n - 1)] - value), 0.0)
    dropout = long & (np.maximum(jump_in, jump_out) >= edge_jump)
    to_ms = 1000.0 / sample_rate
    np.add.at(total, row[dropout], lengths[dropout] * to_ms)
    np.maximum.at(longest, row[dropout], lengths[dropout] * to_ms)
    return total, longest


def level_dbfs(power: np.ndarray) -> np.ndarray:
    """Mean-square power (full-scale units) in dBFS (a full-scale sine reads -3 dBFS; zero reads -120)."""
    return np.maximum(10 * np.log10(np.maximum(power, 1e-30)), _FLOOR_DB)


def low_band(samples: np.ndarray, sample_rate: int, max_hz: float) -> tuple[np.ndarray, float]:
    """Mean-removed signal decimated by block averaging to a rate of at least ``2.5 * max_hz``, and that rate.

    Block averages null exactly the bands that would alias onto low frequencies, which is all the
    mains-line measurement needs, at a fraction of the cost of a full-rate FFT.
    """
    factor = max(1, int(sample_rate // (2.5 * max_hz)))
    usable = (samples.shape[1] // factor) * factor
    block_mean = np.full(factor, 1.0 / factor, dtype=samples.dtype)
    # einsum, not `@`: as fast here, and never starts BLAS threads that spin against each other on a busy host
    x = np.einsum("ij,j->i", samples[:, :usable].reshape(-1, factor), block_mean).reshape(samples.shape[0], -1)
    return x - x.mean(axis=1, keepdims=True), sample_rate / factor


def mains_line_power(power: np.ndarray, hz_per_bin: float, f0: float, max_harmonic_hz: float) -> np.ndarray:
    """Per row of a periodogram ``power [rows, bins]``: summed power of the lines at f0 and its harmonics
    that stand clear of their local background. A line is +-0.4 Hz around k*f0 (the grid wanders by
    less), its background the median of the bins 0.8-4 Hz to either side.
    """
    line_bins, side_bins = _mains_bins(hz_per_bin, f0, max_harmonic_hz, power.shape[1])
    if line_bins.size == 0:
        return np.zeros(power.shape[0])
    line = power[:, line_bins].sum(axis=2)  # [rows, harmonics]
    # median of exponential periodogram bins = ln 2 * mean
    background = _median_last_axis(power[:, side_bins]) / math.log(2) * line_bins.shape[1]
    # A line counts only when it stands clear of the floor: without this the positive part of every
    # harmonic's noise fluctuation adds up to about -25 dB on any broadband sound.
    return np.where(line >= _LINE_OVER_FLOOR * background, line - background, 0).sum(axis=1)


@functools.lru_cache(maxsize=32)
def _mains_bins(hz_per_bin: float, f0: float, max_harmonic_hz: float, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Bins ``[harmonics, offsets]`` of each line of `mains_line_power` and of its background, for a
    periodogram of ``bins`` bins (cached: every window of a microphone asks the same)."""
    half = max(1, int(round(0.4 / hz_per_bin)))
    near, far = max(half + 1, int(round(0.8 / hz_per_bin))), max(half + 4, int(round(4.0 / hz_per_bin)))
    line_offsets = np.arange(-half, half + 1)
    side_offsets = np.concatenate((np.arange(-far, -near + 1), np.arange(near, far + 1)))
    centres = np.round(np.arange(f0, max_harmonic_hz + 1e-9, f0) / hz_per_bin).astype(int)
    centres = centres[(centres - far >= 1) & (centres + far < bins)]
    line_bins, side_bins = centres[:, None] + line_offsets, centres[:, None] + side_offsets
    line_bins.flags.writeable = side_bins.flags.writeable = False
    return line_bins, side_bins


def _median_last_axis(values: np.ndarray) -> np.ndarray:
    """``np.median(values, axis=-1)``, the same numbers, without its generic checks (no NaN here)."""
    half = values.shape[-1] // 2
    if values.shape[-1] % 2:
        return np.partition(values, half, axis=-1)[..., half]
    part = np.partition(values, (half - 1, half), axis=-1)
    return (part[..., half - 1] + part[..., half]) / 2


@functools.lru_cache(maxsize=8)
def _hann(size: int) -> np.ndarray:
    """A Hann window of ``size`` samples without its two zero ends, float32 (cached, read-only)."""
    window = np.hanning(size + 2)[1:-1].astype(np.float32)
    window.flags.writeable = False
    return window


def hum_db(samples: np.ndarray, sample_rate: int, mains_hz: tuple[float, ...], max_harmonic_hz: float,
           total: np.ndarray, parts: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: power of mains lines (f0 and harmonics) present throughout the window, over the
    power of everything else, in dB; and the mains frequency that scored highest.

    The window is cut into ``parts`` equal parts and the line power of the weakest part counts: hum from
    the mains is steady, while notes of music and speech that happen to sit on a multiple of 50/60 Hz
    come and go. One Hann-windowed FFT per part serves every mains frequency. ``total`` is the variance
    of each channel (the power of everything).
    """
    channels, n = samples.shape
    best = np.full(channels, _FLOOR_DB)
    best_f0 = np.full(channels, mains_hz[0] if mains_hz else 0.0)
    if not mains_hz:
        return best, best_f0
    parts = max(1, min(parts, int(n // (2.5 * sample_rate)) or 1))
    length = n // parts
    pieces = samples[:, : parts * length].reshape(channels * parts, length)
    low, rate = low_band(pieces, sample_rate, max_harmonic_hz + 10)
    size = low.shape[1]
    nfft = 1 << int(math.ceil(math.log2(max(size, 16))))
    window = _hann(size)
    low *= window
    power = _power_spectrum(np.fft.rfft(low, n=nfft, axis=1))
    scale = 2.0 / (nfft * size * float(np.mean(window**2)))  # bin power sums -> signal power (Parseval)
    total = total + 1e-30
    for f0 in mains_hz:
        lines = mains_line_power(power, rate / nfft, f0, max_harmonic_hz) * scale
        steady = lines.reshape(channels, parts).min(axis=1)
        ratio = 10 * np.log10(np.maximum(steady, 1e-30) / np.maximum(total - steady, 1e-30))
        ratio = np.where(total > 1e-12, np.maximum(ratio, _FLOOR_DB), _FLOOR_DB)  # no sound, no hum
        better = ratio > best
        best = np.where(better, ratio, best)
        best_f0 = np.where(better, f0, best_f0)
    return best, best_f0


def _power_spectrum(spectrum: np.ndarray) -> np.ndarray:
    """``spectrum.real**2 + spectrum.imag**2`` (the same numbers), squaring ``spectrum``'s memory in place."""
    parts = spectrum.view(spectrum.real.dtype)
    np.square(parts, out=parts)
    return parts[..., 0::2] + parts[..., 1::2]


@functools.lru_cache(maxsize=32)
def _fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: as fast for pocketfft as a power of two, and often much shorter."""
    best = 1 << int(math.ceil(math.log2(n)))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35 << max(0, int(math.ceil(math.log2(n / p35))))
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


def periodic_residual_db(samples: np.ndarray, sample_rate: int, min_period_ms: float, max_period_ms: float,
                         chunk_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: how exactly the signal repeats itself at its best short period, in dB, and that
    period in samples.

    Every other ``chunk_s`` chunk (mean removed) is compared with itself shifted by every lag in
    [min, max] period: residual = energy of (x[t+P] - x[t]) over energy of x. The lowest residual over
    chunks and lags is the score. A repeated buffer or a constant non-zero chunk scores -120 dB; real
    sound stays above about -40 dB, and even a clean electronic tone (which some long lag nearly
    matches) stays above -60 dB. The period is 0 for a constant. A pure digital tone whose period is a
    whole number of samples is, digitally, a repeated buffer too. Digitally silent chunks are skipped
    (they are the dropout/dead checks' business); a channel with none left scores 0 dB.
    """
    channels, n = samples.shape
    chunk = min(n, int(round(chunk_s * sample_rate)))
    lo = max(1, int(round(min_period_ms * sample_rate / 1000)))
    hi = min(chunk - 1, int(round(max_period_ms * sample_rate / 1000)))
    out = np.zeros(channels)
    period = np.zeros(channels, dtype=np.int64)
    if chunk < 2 or hi < lo:
        return out, period
    # Every other chunk: a stall lasting two chunks is always seen, at half the FFT work.
    starts = np.arange(0, n - chunk + 1, 2 * chunk)
    count = starts.size
    # float64: an exact repeat must read as ~0, and float32 rounding alone would leave about -70 dB.
    usable = samples[:, : count * 2 * chunk] if n >= count * 2 * chunk else np.pad(
        samples, ((0, 0), (0, count * 2 * chunk - n)))
    x = usable.reshape(channels, count, 2 * chunk)[:, :, :chunk].reshape(channels * count, chunk).astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    x -= mean
    nfft = _fft_size(chunk + hi)  # no circular wrap for lags <= hi
    autocorr = np.fft.irfft(_power_spectrum(np.fft.rfft(x, n=nfft, axis=1)), n=nfft, axis=1)[:, lo : hi + 1]
    # In place from here on (x, then autocorr): the same arithmetic as the formulas in the comments.
    cumulative = np.cumsum(np.square(x, out=x), axis=1, out=x)
    energy = cumulative[:, -1:].copy()
    # both = energy of x[0 : chunk-P] + energy of x[P : chunk], for P = lo..hi
    both = energy - cumulative[:, lo - 1 : hi]
    both += cumulative[:, chunk - 1 - lo : chunk - 2 - hi if chunk - 2 - hi >= 0 else None : -1]
    # residual = max(both - 2 autocorr, 0) / max(both, 1e-30)
    residual = np.multiply(autocorr, -2.0, out=autocorr)
    residual += both
    np.maximum(residual, 0, out=residual)
    residual /= np.maximum(both, 1e-30, out=both)
    best = residual.min(axis=1)
    # Multiples of a repeated buffer match as well as the buffer itself: report the shortest.
    best_lag = np.argmax(residual <= np.maximum(best * 10, 1e-12)[:, None], axis=1)
    ac_power = energy[:, 0] / chunk
    constant = (ac_power <= 1e-12) & (np.abs(mean[:, 0]) > 1e-6)  # AC below -120 dBFS, DC present
    silent = (ac_power <= 1e-12) & ~constant
    db = np.where(constant, _FLOOR_DB, np.maximum(10 * np.log10(np.maximum(best, 1e-12)), _FLOOR_DB))
    db = np.where(silent, np.inf, db).reshape(channels, count)
    lag_samples = np.where(constant, 0, best_lag + lo).reshape(channels, count)
    worst_chunk = db.argmin(axis=1)
    out = db[np.arange(channels), worst_chunk]
    period = lag_samples[np.arange(channels), worst_chunk]
    out = np.where(np.isinf(out), 0.0, out)
    return out, period


# ---- the checks: one function per check, (Signal, HealthConfig) -> CheckResult -----------------------


def _channel_name(index: int, channels: int) -> str:
    """'' for mono, ' (channel 2)' for multi-channel windows (1-based, as people count)."""
    return f" (channel {index + 1})" if channels > 1 else ""


def check_non_finite(signal: Signal, config: HealthConfig) -> CheckResult:
    """NaN/Inf samples: the input is not audio (a driver or resampler fault)."""
    bad = signal.non_finite
    worst = int(bad.argmax())
    flagged = bool(bad[worst] > config.non_finite_max)
    reason = f"non_finite: {bad[worst]:.2%} of samples are NaN/Inf{_channel_name(worst, signal.channels)}"
    return CheckResult(float(bad[worst]), flagged, reason if flagged else "")


def check_clipping(signal: Signal, config: HealthConfig) -> CheckResult:
    """Samples at full scale: too many, or a run of them (one alone can be a true peak)."""
    fraction, run = clip_stats(signal.samples, config.clip_level)
    worst = int(np.lexsort((run, fraction))[-1])
    flagged = bool((fraction >= config.clip_fraction_max).any() or (run >= config.clip_run_min).any())
    reason = (f"clipping: {fraction[worst]:.3%} of samples at full scale, longest run {int(run.max())} "
              f"samples{_channel_name(worst, signal.channels)}")
    return CheckResult(float(fraction[worst]), flagged, reason if flagged else "",
                       {"clipping_run": float(run.max())})


def check_dropout(signal: Signal, config: HealthConfig) -> CheckResult:
    """Flat-lined stretches cut into live audio (lost buffers, a driver repeating its last sample)."""
    total, longest = dropout_ms(signal.samples, signal.sample_rate, config.dropout_min_run_ms,
                                config.dropout_edge_jump, config.clip_level)
    worst = int(total.argmax())
    flagged = bool(total[worst] > 0)
    reason = (f"dropout: {total[worst]:.0f} ms of flat-lined samples cut into live audio (longest "
              f"{longest[worst]:.0f} ms){_channel_name(worst, signal.channels)}")
    return CheckResult(float(total[worst]), flagged, reason if flagged else "",
                       {"dropout_longest_ms": float(longest.max())})


def check_dead_channel(signal: Signal, config: HealthConfig) -> CheckResult:
    """A channel below the absolute floor, or far below the loudest channel of the same device."""
    levels = level_dbfs(signal.power)
    quietest = int(levels.argmin())
    gap = float(levels.max() - levels[quietest]) if signal.channels > 1 else 0.0
    mix = levels if signal.channels == 1 else level_dbfs(Signal(signal.samples.mean(axis=0, keepdims=True),
                                                                signal.sample_rate, signal.non_finite[:1]).power)
    below_floor = bool(levels[quietest] < config.dead_floor_dbfs)
    flagged = below_floor or gap >= config.dead_sibling_gap_db
    if below_floor:
        reason = (f"dead_channel: level {levels[quietest]:.1f} dBFS is below the {config.dead_floor_dbfs:.0f} dBFS "
                  f"floor{_channel_name(quietest, signal.channels)}")
    elif flagged:
        reason = (f"dead_channel: channel {quietest + 1} is {gap:.1f} dB quieter than the loudest channel "
                  f"(limit {config.dead_sibling_gap_db:.0f} dB)")
    else:
        reason = ""
    return CheckResult(float(levels[quietest]), flagged, reason,
                       {"dead_channel_gap_db": gap, "rms_dbfs": float(mix[0])})


def check_dc_offset(signal: Signal, config: HealthConfig) -> CheckResult:
    """A mean far from zero (a biased converter or a failing coupling capacitor)."""
    means = signal.mean
    worst = int(np.abs(means).argmax())
    flagged = bool(abs(means[worst]) >= config.dc_offset_max)
    reason = (f"dc_offset: mean {means[worst]:+.3f} of full scale (limit {config.dc_offset_max:g})"
              f"{_channel_name(worst, signal.channels)}")
    return CheckResult(float(abs(means[worst])), flagged, reason if flagged else "")


def check_hum(signal: Signal, config: HealthConfig) -> CheckResult:
    """Steady 50/60 Hz mains lines and their harmonics (a ground loop, an unshielded cable)."""
    variance = np.maximum(signal.power - signal.mean**2, 0.0)
    hum, mains = hum_db(signal.samples, signal.sample_rate, config.hum_mains_hz, config.hum_max_harmonic_hz, variance)
    worst = int(hum.argmax())
    flagged = bool(hum[worst] >= config.hum_max_db)
    reason = (f"hum: {mains[worst]:g} Hz mains lines at {hum[worst]:+.1f} dB against the rest of the sound "
              f"(limit {config.hum_max_db:+.0f} dB){_channel_name(worst, signal.channels)}")
    return CheckResult(float(hum[worst]), flagged, reason if flagged else "")


def check_stuck(signal: Signal, config: HealthConfig) -> CheckResult:
    """A capture that repeats one buffer over and over, or holds a constant value."""
    residual, period = periodic_residual_db(signal.samples, signal.sample_rate, config.stuck_min_period_ms,
                                            config.stuck_max_period_ms, config.stuck_chunk_s)
    worst = int(residual.argmin())
    flagged = bool(residual[worst] <= config.stuck_residual_max_db)
    what = ("holds a constant value" if period[worst] == 0
            else f"repeats itself every {1000 * period[worst] / signal.sample_rate:.1f} ms "
                 f"(residual {residual[worst]:.0f} dB)")
    reason = f"stuck: signal {what}{_channel_name(worst, signal.channels)}"
    return CheckResult(float(residual[worst]), flagged, reason if flagged else "")


#: Every signal check, in the order reasons are listed. `CHECKS` names them.
SIGNAL_CHECKS: dict[str, Callable[[Signal, HealthConfig], CheckResult]] = {
    "non_finite": check_non_finite,
    "clipping": check_clipping,
    "dropout": check_dropout,
    "dead_channel": check_dead_channel,
    "dc_offset": check_dc_offset,
    "hum": check_hum,
    "stuck": check_stuck,
}
CHECKS = tuple(SIGNAL_CHECKS)


def check_drift(drift: Any) -> CheckResult:
    """The drift check from an `encoder.drift.DriftScore`: a microphone that keeps sounding unlike its history."""
    reason = (f"drift: has sounded unlike this microphone's history for a while ({drift.score:.1f} spreads "
              f"above its usual distance, latest window {drift.window_score:.1f})")
    return CheckResult(float(drift.score), bool(drift.flagged), reason if drift.flagged else "",
                       {"drift_ready": float(drift.ready)})


# ---- the window verdict -------------------------------------------------------------------------------


def health_of(results: dict[str, CheckResult], config: HealthConfig = HealthConfig()) -> WindowHealth:
    """The `WindowHealth` of a set of check results: every score and flag, reasons in order, the state."""
    scores: dict[str, float] = {}
    flags: dict[str, bool] = {}
    for name, result in results.items():
        scores[name] = result.score
        scores.update(result.details)
        flags[name] = result.flagged
    reasons = tuple(result.reason for result in results.values() if result.flagged)
    return WindowHealth(state_of(flags, config), reasons, scores, flags)


def assess_window(samples: np.ndarray, sample_rate: int, config: HealthConfig = HealthConfig(),
                  drift: Callable[[bool], Any] | None = None) -> WindowHealth:
    """Run every check of `SIGNAL_CHECKS` on one window ``[channels, n]`` (or 1-D mono) and give its health.

    Samples are floats in full-scale units (+-1.0); integer PCM (int16, int32) is scaled to that.
    ``drift``, when given, is the last check: called with whether the window passed every signal check
    (only such windows may teach the microphone's baseline), it returns a `DriftScore`
    (e.g. ``lambda learn: tracker.update(embedding, learn=learn)``).
    """
    signal = signal_of(samples, sample_rate)
    results = {name: check(signal, config) for name, check in SIGNAL_CHECKS.items()}
    if drift is not None:
        passed = not any(result.flagged for result in results.values())
        results["drift"] = check_drift(drift(passed))
    return health_of(results, config)


def state_of(flags: dict[str, bool], config: HealthConfig = HealthConfig()) -> str:
    """'faulty' if a check in ``config.faulty_checks`` is flagged, else 'degraded' if any is, else 'ok'."""
    if any(flags.get(name, False) for name in config.faulty_checks):
        return HEALTH_FAULTY
    return HEALTH_DEGRADED if any(flags.values()) else HEALTH_OK
