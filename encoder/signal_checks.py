"""Microphone health checks over one window of samples: pure numpy, shared by `roomtone health`, the
fault-detection benchmark and the daemon.

`assess_window(samples [channels, n], sample_rate, config)` runs every check on every channel and
returns a `WindowHealth`: per-check scores (worst channel), per-check flags, an overall state
(ok / degraded / faulty) and human-readable reasons. Scores and their units (threshold in
`HealthConfig`, direction of "worse"):

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
=============  ===========================================================  ======================

``scores`` also holds ``rms_dbfs``, the level of the mono mix. Non-finite samples are set to zero
before the other checks run. The thresholds were tuned so that all
320 shared homesounds clips pass, and all 404 music clips except five that really carry what a check
looks for (a -0.07 DC offset; steady drones exactly on 100/200/400 Hz); docs/mic-health.md has the
measured detection and false-alarm rates.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from encoder.config_keys import reject_unknown_keys

CHECKS = ("non_finite", "clipping", "dropout", "dead_channel", "dc_offset", "hum", "stuck")
STATES = ("ok", "degraded", "faulty")
_LINE_OVER_FLOOR = 4.0  # a mains line must carry 4x (+6 dB) the power of its local background
_FLOOR_DB = -120.0  # what a level of exactly zero reads as, so scores stay finite (JSON, Prometheus)


@dataclass(frozen=True)
class HealthConfig:
    """Thresholds of every check; the defaults are the tuned ones (docs/mic-health.md)."""

    non_finite_max: float = 0.0  # fraction of NaN/Inf samples tolerated
    clip_level: float = 0.99  # abs value counted as "at full scale" (int16 full scale reads 0.99997)
    clip_fraction_max: float = 1e-4  # flag at >= 0.01% of samples at full scale (16 per 10 s)...
    clip_run_min: int = 2  # ...or at this many consecutive full-scale samples (one can be a true peak)
    dropout_min_run_ms: float = 4.0  # shortest flat run that can be a dropout
    dropout_edge_jump: float = 1e-4  # jump (full scale) into/out of the run; real silence enters by <= 2 LSB
    dead_floor_dbfs: float = -70.0  # a channel quieter than this for the whole window is dead
    dead_sibling_gap_db: float = 30.0  # ...or one this far below the loudest channel of the same device
    dc_offset_max: float = 0.05  # abs(mean) in full-scale units
    hum_mains_hz: tuple[float, ...] = (50.0, 60.0)
    hum_max_harmonic_hz: float = 600.0  # harmonics k*f0 up to this frequency count as hum
    hum_max_db: float = -12.0  # steady hum power over the power of everything else, dB
    stuck_min_period_ms: float = 1.0
    stuck_max_period_ms: float = 300.0  # repeated buffers of up to 4800 samples at 16 kHz
    stuck_chunk_s: float = 0.5  # every other chunk is checked, so a stall of 1 s anywhere is caught
    stuck_residual_max_db: float = -80.0  # a repeated buffer is exact (-120); a pure tone with 50 dB SNR ~ -47
    faulty_checks: tuple[str, ...] = ("non_finite", "dead_channel", "stuck")  # the rest -> degraded

    def __post_init__(self) -> None:
        unknown = sorted(set(self.faulty_checks) - set(CHECKS) - {"drift"})
        if unknown:
            raise ValueError(f"HealthConfig.faulty_checks: unknown check(s) {unknown}; known: {list(CHECKS)} + ['drift']")
        if not 0 < self.clip_level <= 1:
            raise ValueError(f"HealthConfig.clip_level must be in (0, 1], got {self.clip_level}")
        if not 0 < self.stuck_min_period_ms < self.stuck_max_period_ms < 1000 * self.stuck_chunk_s:
            raise ValueError(
                "HealthConfig needs 0 < stuck_min_period_ms < stuck_max_period_ms < 1000 * stuck_chunk_s, got "
                f"{self.stuck_min_period_ms}, {self.stuck_max_period_ms}, {self.stuck_chunk_s}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (tuples become lists) for JSON/TOML."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "HealthConfig":
        """Build from a dict (e.g. a TOML table); unknown keys are an error that names them."""
        reject_unknown_keys(cls, data, "HealthConfig")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class WindowHealth:
    """Health of one window: overall state, reasons for it, every score and every flag."""

    state: str  # one of STATES
    reasons: tuple[str, ...]  # one line per flagged check; empty when ok
    scores: dict[str, float] = field(default_factory=dict)  # check (and detail) name -> score
    flags: dict[str, bool] = field(default_factory=dict)  # check name -> flagged


# ---- per-channel measurements: [channels, n] in, one value per channel out --------------------------


def non_finite_fraction(samples: np.ndarray) -> np.ndarray:
    """Fraction of NaN/Inf samples per channel."""
    return (~np.isfinite(samples)).mean(axis=1)


def longest_true_run(mask: np.ndarray) -> np.ndarray:
    """Length of the longest run of consecutive True per row of a 2-D boolean array."""
    out = np.zeros(mask.shape[0], dtype=np.int64)
    for row, values in enumerate(mask):
        edges = np.flatnonzero(np.diff(np.concatenate(([0], values.view(np.int8), [0]))))
        if edges.size:
            out[row] = int((edges[1::2] - edges[0::2]).max())
    return out


def clip_stats(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: fraction of samples with ``abs >= level`` and the longest run of them."""
    at_full_scale = np.abs(samples) >= level
    return at_full_scale.mean(axis=1), longest_true_run(at_full_scale)


def flat_runs(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and lengths of runs of identical consecutive samples in a 1-D signal."""
    bounds = np.concatenate(([0], np.flatnonzero(x[1:] != x[:-1]) + 1, [x.size]))
    return bounds[:-1], np.diff(bounds)


def dropout_ms(x: np.ndarray, sample_rate: int, min_run_ms: float, edge_jump: float,
               clip_level: float = 1.0) -> tuple[float, float]:
    """Total and longest duration (ms) of dropouts in a 1-D signal.

    A dropout is a run of identical samples (zeros or a held value) at least ``min_run_ms`` long that is
    entered or left with a jump of at least ``edge_jump``: real silence fades in and out through the
    last bits, a lost buffer cuts live audio. A run spanning the whole signal is not a dropout, nor is
    a plateau at ``clip_level`` or above (that is clipping).
    """
    starts, lengths = flat_runs(x)
    long = (lengths >= max(2, int(math.ceil(min_run_ms * sample_rate / 1000)))) & (np.abs(x[starts]) < clip_level)
    starts, lengths = starts[long], lengths[long]
    if starts.size == 0:
        return 0.0, 0.0
    ends = starts + lengths
    value = x[starts]
    jump_in = np.where(starts > 0, np.abs(x[np.maximum(starts - 1, 0)] - value), 0.0)
    jump_out = np.where(ends < x.size, np.abs(x[np.minimum(ends, x.size - 1)] - value), 0.0)
    abrupt = np.maximum(jump_in, jump_out) >= edge_jump
    if not abrupt.any():
        return 0.0, 0.0
    to_ms = 1000.0 / sample_rate
    return float(lengths[abrupt].sum() * to_ms), float(lengths[abrupt].max() * to_ms)


def rms_dbfs(samples: np.ndarray) -> np.ndarray:
    """RMS level per channel in dBFS (a full-scale sine reads -3 dBFS; zero reads -120)."""
    power = np.mean(np.square(samples, dtype=np.float64), axis=1)
    return np.maximum(10 * np.log10(np.maximum(power, 1e-30)), _FLOOR_DB)


def low_band(samples: np.ndarray, sample_rate: int, max_hz: float) -> tuple[np.ndarray, int]:
    """Mean-removed signal decimated by block averaging to a rate of at least ``2.5 * max_hz``, and that rate.

    Block averages null exactly the bands that would alias onto low frequencies, which is all the
    mains-line measurement needs, at a fraction of the cost of a full-rate FFT.
    """
    factor = max(1, int(sample_rate // (2.5 * max_hz)))
    usable = (samples.shape[1] // factor) * factor
    x = samples[:, :usable].reshape(samples.shape[0], -1, factor).mean(axis=2)
    return x - x.mean(axis=1, keepdims=True), sample_rate // factor if sample_rate % factor == 0 else sample_rate / factor


def mains_line_power(samples: np.ndarray, sample_rate: int, f0: float, max_harmonic_hz: float) -> np.ndarray:
    """Per row: power (full-scale units) of the lines at f0 and its harmonics that stand clear of their
    local background: one Hann-windowed FFT per row, a line is +-0.4 Hz around k*f0 (the grid wanders by
    less), its background the median of the bins 0.8-4 Hz to either side.
    """
    low, rate = low_band(samples, sample_rate, max_harmonic_hz + 10)
    n = low.shape[1]
    nfft = 1 << int(math.ceil(math.log2(max(n, 16))))
    window = np.hanning(n + 2)[1:-1].astype(np.float32)
    spectrum = np.fft.rfft(low * window, n=nfft, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    hz_per_bin = rate / nfft
    scale = 2.0 / (nfft * n * float(np.mean(window**2)))  # bin power sums -> signal power (Parseval)
    half = max(1, int(round(0.4 / hz_per_bin)))
    near, far = max(half + 1, int(round(0.8 / hz_per_bin))), max(half + 4, int(round(4.0 / hz_per_bin)))
    line_offsets = np.arange(-half, half + 1)
    side_offsets = np.concatenate((np.arange(-far, -near + 1), np.arange(near, far + 1)))
    centres = np.round(np.arange(f0, max_harmonic_hz + 1e-9, f0) / hz_per_bin).astype(int)
    centres = centres[(centres - far >= 1) & (centres + far < power.shape[1])]
    if centres.size == 0:
        return np.zeros(samples.shape[0])
    line = power[:, centres[:, None] + line_offsets].sum(axis=2)  # [rows, harmonics]
    # median of exponential periodogram bins = ln 2 * mean
    background = np.median(power[:, centres[:, None] + side_offsets], axis=2) / math.log(2) * line_offsets.size
    # A line counts only when it stands clear of the floor: without this the positive part of every
    # harmonic's noise fluctuation adds up to about -25 dB on any broadband sound.
    return np.where(line >= _LINE_OVER_FLOOR * background, line - background, 0).sum(axis=1) * scale


def hum_db(samples: np.ndarray, sample_rate: int, mains_hz: tuple[float, ...], max_harmonic_hz: float,
           parts: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: power of mains lines (f0 and harmonics) present throughout the window, over the
    power of everything else, in dB; and the mains frequency that scored highest.

    The window is cut into ``parts`` equal parts and the line power of the weakest part counts: hum from
    the mains is steady, while notes of music and speech that happen to sit on a multiple of 50/60 Hz
    come and go.
    """
    channels, n = samples.shape
    best = np.full(channels, _FLOOR_DB)
    best_f0 = np.full(channels, mains_hz[0] if mains_hz else 0.0)
    parts = max(1, min(parts, int(n // (2.5 * sample_rate)) or 1))
    length = n // parts
    pieces = samples[:, : parts * length].reshape(channels * parts, length)
    total = np.var(samples, axis=1) + 1e-30
    for f0 in mains_hz:
        steady = mains_line_power(pieces, sample_rate, f0, max_harmonic_hz).reshape(channels, parts).min(axis=1)
        ratio = 10 * np.log10(np.maximum(steady, 1e-30) / np.maximum(total - steady, 1e-30))
        ratio = np.where(total > 1e-12, np.maximum(ratio, _FLOOR_DB), _FLOOR_DB)  # no sound, no hum
        better = ratio > best
        best = np.where(better, ratio, best)
        best_f0 = np.where(better, f0, best_f0)
    return best, best_f0


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
    x = samples[:, starts[:, None] + np.arange(chunk)].reshape(channels * count, chunk).astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    x = x - mean
    nfft = 1 << int(math.ceil(math.log2(chunk + hi)))  # no circular wrap for lags <= hi
    spectrum = np.fft.rfft(x, n=nfft, axis=1)
    autocorr = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n=nfft, axis=1)[:, lo : hi + 1]
    cumulative = np.concatenate(
        (np.zeros((x.shape[0], 1)), np.cumsum(x * x, axis=1)), axis=1
    )
    lags = np.arange(lo, hi + 1)
    head = cumulative[:, chunk - lags]  # energy of x[0 : chunk-P]
    tail = cumulative[:, -1:] - cumulative[:, lags]  # energy of x[P : chunk]
    both = head + tail
    residual = np.maximum(both - 2 * autocorr, 0) / np.maximum(both, 1e-30)
    best = residual.min(axis=1)
    # Multiples of a repeated buffer match as well as the buffer itself: report the shortest.
    best_lag = np.argmax(residual <= np.maximum(best * 10, 1e-12)[:, None], axis=1)
    ac_power = cumulative[:, -1] / chunk
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


# ---- the window verdict -------------------------------------------------------------------------------


def _channel_name(index: int, channels: int) -> str:
    """'' for mono, ' (channel 2)' for multi-channel windows (1-based, as people count)."""
    return f" (channel {index + 1})" if channels > 1 else ""


def assess_window(samples: np.ndarray, sample_rate: int, config: HealthConfig = HealthConfig()) -> WindowHealth:
    """Run every signal check on one window ``[channels, n]`` (or 1-D mono) and give its health.

    Samples are floats in full-scale units (+-1.0); integer PCM (int16, int32) is scaled to that."""
    raw = np.asarray(samples)
    if np.issubdtype(raw.dtype, np.integer):
        x = (raw / float(np.iinfo(raw.dtype).max + 1)).astype(np.float32)
    else:
        x = raw.astype(np.float32, copy=False)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"assess_window expects [channels, samples] with samples > 0, got shape {x.shape}")
    channels = x.shape[0]
    scores: dict[str, float] = {}
    flags: dict[str, bool] = {}
    reasons: list[str] = []

    bad = non_finite_fraction(x)
    worst = int(bad.argmax())
    scores["non_finite"] = float(bad[worst])
    flags["non_finite"] = bool(bad[worst] > config.non_finite_max)
    if flags["non_finite"]:
        reasons.append(f"non_finite: {bad[worst]:.2%} of samples are NaN/Inf{_channel_name(worst, channels)}")
    if bad.any():
        x = np.where(np.isfinite(x), x, np.float32(0))

    clip_fraction, clip_run = clip_stats(x, config.clip_level)
    worst = int(np.lexsort((clip_run, clip_fraction))[-1])
    scores["clipping"] = float(clip_fraction[worst])
    scores["clipping_run"] = float(clip_run.max())
    flags["clipping"] = bool((clip_fraction >= config.clip_fraction_max).any() or (clip_run >= config.clip_run_min).any())
    if flags["clipping"]:
        reasons.append(
            f"clipping: {clip_fraction[worst]:.3%} of samples at full scale, longest run {int(clip_run.max())} "
            f"samples{_channel_name(worst, channels)}"
        )

    drops = [dropout_ms(row, sample_rate, config.dropout_min_run_ms, config.dropout_edge_jump, config.clip_level)
             for row in x]
    worst = int(np.argmax([total for total, _ in drops]))
    scores["dropout"] = drops[worst][0]
    scores["dropout_longest_ms"] = max(longest for _, longest in drops)
    flags["dropout"] = scores["dropout"] > 0
    if flags["dropout"]:
        reasons.append(
            f"dropout: {drops[worst][0]:.0f} ms of flat-lined samples cut into live audio (longest "
            f"{drops[worst][1]:.0f} ms){_channel_name(worst, channels)}"
        )

    levels = rms_dbfs(x)
    quietest = int(levels.argmin())
    gap = float(levels.max() - levels[quietest]) if channels > 1 else 0.0
    scores["dead_channel"] = float(levels[quietest])
    scores["dead_channel_gap_db"] = gap
    scores["rms_dbfs"] = float(rms_dbfs(x.mean(axis=0, keepdims=True))[0])
    below_floor = levels[quietest] < config.dead_floor_dbfs
    flags["dead_channel"] = bool(below_floor or gap >= config.dead_sibling_gap_db)
    if below_floor:
        reasons.append(
            f"dead_channel: level {levels[quietest]:.1f} dBFS is below the {config.dead_floor_dbfs:.0f} dBFS "
            f"floor{_channel_name(quietest, channels)}"
        )
    elif flags["dead_channel"]:
        reasons.append(
            f"dead_channel: channel {quietest + 1} is {gap:.1f} dB quieter than the loudest channel "
            f"(limit {config.dead_sibling_gap_db:.0f} dB)"
        )

    means = x.mean(axis=1, dtype=np.float64)
    worst = int(np.abs(means).argmax())
    scores["dc_offset"] = float(abs(means[worst]))
    flags["dc_offset"] = bool(abs(means[worst]) >= config.dc_offset_max)
    if flags["dc_offset"]:
        reasons.append(
            f"dc_offset: mean {means[worst]:+.3f} of full scale (limit {config.dc_offset_max:g})"
            f"{_channel_name(worst, channels)}"
        )

    hum, mains = hum_db(x, sample_rate, config.hum_mains_hz, config.hum_max_harmonic_hz)
    worst = int(hum.argmax())
    scores["hum"] = float(hum[worst])
    flags["hum"] = bool(hum[worst] >= config.hum_max_db)
    if flags["hum"]:
        reasons.append(
            f"hum: {mains[worst]:g} Hz mains lines at {hum[worst]:+.1f} dB against the rest of the sound "
            f"(limit {config.hum_max_db:+.0f} dB){_channel_name(worst, channels)}"
        )

    residual, period = periodic_residual_db(
        x, sample_rate, config.stuck_min_period_ms, config.stuck_max_period_ms, config.stuck_chunk_s
    )
    worst = int(residual.argmin())
    scores["stuck"] = float(residual[worst])
    flags["stuck"] = bool(residual[worst] <= config.stuck_residual_max_db)
    if flags["stuck"]:
        what = ("holds a constant value" if period[worst] == 0
                else f"repeats itself every {1000 * period[worst] / sample_rate:.1f} ms "
                     f"(residual {residual[worst]:.0f} dB)")
        reasons.append(f"stuck: signal {what}{_channel_name(worst, channels)}")

    return WindowHealth(state_of(flags, config), tuple(reasons), scores, flags)


def state_of(flags: dict[str, bool], config: HealthConfig = HealthConfig()) -> str:
    """'faulty' if a check in ``config.faulty_checks`` is flagged, else 'degraded' if any is, else 'ok'."""
    if any(flags.get(name, False) for name in config.faulty_checks):
        return "faulty"
    return "degraded" if any(flags.values()) else "ok"
