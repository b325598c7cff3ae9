"""The signal checks' fast paths (issue 28) give exactly the numbers of the plain formulas they replaced.

Each reference below is the measurement as it was written before it was made cheaper (full-scale mask of
every sample, `np.median`, a fresh Hann window, out-of-place arithmetic); the production functions must
return the same bits on real audio and on the edge cases the checks exist for: silence, clipping, a held
sample, a repeated buffer, a constant, DC, hum, a dead sibling channel, integer PCM, a short window and
NaN/Inf. The verdicts then cannot differ either, which the last test checks end to end.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from encoder.audio import load_audio
from encoder.signal_checks import (HealthConfig, _fft_size, assess_window, clip_stats, hum_db, low_band,
                                   mains_line_power, periodic_residual_db, signal_of)

RATE = 16000
CONFIG = HealthConfig()


def reference_clip_stats(samples: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    at_full_scale = (samples >= level) | (samples <= -level)
    counts = np.count_nonzero(at_full_scale, axis=1)
    runs = np.minimum(counts, 1)
    for row in np.flatnonzero(counts > 1):
        edges = np.flatnonzero(np.diff(at_full_scale[row].view(np.int8), prepend=0, append=0))
        runs[row] = int((edges[1::2] - edges[0::2]).max())
    return counts / samples.shape[1], runs


def reference_mains_line_power(power: np.ndarray, hz_per_bin: float, f0: float, max_harmonic_hz: float) -> np.ndarray:
    half = max(1, int(round(0.4 / hz_per_bin)))
    near, far = max(half + 1, int(round(0.8 / hz_per_bin))), max(half + 4, int(round(4.0 / hz_per_bin)))
    line_offsets = np.arange(-half, half + 1)
    side_offsets = np.concatenate((np.arange(-far, -near + 1), np.arange(near, far + 1)))
    centres = np.round(np.arange(f0, max_harmonic_hz + 1e-9, f0) / hz_per_bin).astype(int)
    centres = centres[(centres - far >= 1) & (centres + far < power.shape[1])]
    if centres.size == 0:
        return np.zeros(power.shape[0])
    line = power[:, centres[:, None] + line_offsets].sum(axis=2)
    background = np.median(power[:, centres[:, None] + side_offsets], axis=2) / math.log(2) * line_offsets.size
    return np.where(line >= 4.0 * background, line - background, 0).sum(axis=1)


def reference_hum_db(samples: np.ndarray, sample_rate: int, mains_hz: tuple[float, ...], max_harmonic_hz: float,
                     total: np.ndarray, parts: int = 4) -> tuple[np.ndarray, np.ndarray]:
    channels, n = samples.shape
    best = np.full(channels, -120.0)
    best_f0 = np.full(channels, mains_hz[0] if mains_hz else 0.0)
    parts = max(1, min(parts, int(n // (2.5 * sample_rate)) or 1))
    length = n // parts
    pieces = samples[:, : parts * length].reshape(channels * parts, length)
    low, rate = low_band(pieces, sample_rate, max_harmonic_hz + 10)
    size = low.shape[1]
    nfft = 1 << int(math.ceil(math.log2(max(size, 16))))
    window = np.hanning(size + 2)[1:-1].astype(np.float32)
    spectrum = np.fft.rfft(low * window, n=nfft, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    scale = 2.0 / (nfft * size * float(np.mean(window**2)))
    total = total + 1e-30
    for f0 in mains_hz:
        lines = reference_mains_line_power(power, rate / nfft, f0, max_harmonic_hz) * scale
        steady = lines.reshape(channels, parts).min(axis=1)
        ratio = 10 * np.log10(np.maximum(steady, 1e-30) / np.maximum(total - steady, 1e-30))
        ratio = np.where(total > 1e-12, np.maximum(ratio, -120.0), -120.0)
        better = ratio > best
        best = np.where(better, ratio, best)
        best_f0 = np.where(better, f0, best_f0)
    return best, best_f0


def reference_periodic_residual_db(samples: np.ndarray, sample_rate: int, min_period_ms: float,
                                   max_period_ms: float, chunk_s: float) -> tuple[np.ndarray, np.ndarray]:
    channels, n = samples.shape
    chunk = min(n, int(round(chunk_s * sample_rate)))
    lo = max(1, int(round(min_period_ms * sample_rate / 1000)))
    hi = min(chunk - 1, int(round(max_period_ms * sample_rate / 1000)))
    if chunk < 2 or hi < lo:
        return np.zeros(channels), np.zeros(channels, dtype=np.int64)
    count = np.arange(0, n - chunk + 1, 2 * chunk).size
    usable = samples[:, : count * 2 * chunk] if n >= count * 2 * chunk else np.pad(
        samples, ((0, 0), (0, count * 2 * chunk - n)))
    x = usable.reshape(channels, count, 2 * chunk)[:, :, :chunk].reshape(channels * count, chunk).astype(np.float64)
    mean = x.mean(axis=1, keepdims=True)
    x -= mean
    nfft = _fft_size(chunk + hi)
    spectrum = np.fft.rfft(x, n=nfft, axis=1)
    autocorr = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, n=nfft, axis=1)[:, lo : hi + 1]
    cumulative = np.cumsum(x * x, axis=1)
    energy = cumulative[:, -1:]
    both = cumulative[:, chunk - 1 - lo : chunk - 2 - hi if chunk - 2 - hi >= 0 else None : -1] + (
        energy - cumulative[:, lo - 1 : hi])
    residual = np.maximum(both - 2 * autocorr, 0) / np.maximum(both, 1e-30)
    best = residual.min(axis=1)
    best_lag = np.argmax(residual <= np.maximum(best * 10, 1e-12)[:, None], axis=1)
    ac_power = energy[:, 0] / chunk
    constant = (ac_power <= 1e-12) & (np.abs(mean[:, 0]) > 1e-6)
    silent = (ac_power <= 1e-12) & ~constant
    db = np.where(constant, -120.0, np.maximum(10 * np.log10(np.maximum(best, 1e-12)), -120.0))
    db = np.where(silent, np.inf, db).reshape(channels, count)
    lag_samples = np.where(constant, 0, best_lag + lo).reshape(channels, count)
    worst_chunk = db.argmin(axis=1)
    out = db[np.arange(channels), worst_chunk]
    period = lag_samples[np.arange(channels), worst_chunk]
    return np.where(np.isinf(out), 0.0, out), period


def edge_cases(speech: np.ndarray) -> dict[str, np.ndarray]:
    """Windows ``[channels, n]`` of every kind the checks tell apart (10 s unless named short)."""
    rng = np.random.default_rng(7)
    t = np.arange(10 * RATE) / RATE
    noise = np.round(rng.normal(0, 0.01, 10 * RATE) * 32768) / 32768
    held = speech.copy()
    held[:, 40_000:41_600] = held[:, 40_000]
    loud = speech / np.abs(speech).max()
    clipped = np.clip(3 * loud, -1.0, 1.0)
    stall = speech.copy()
    stall[:, 80_000:100_000] = np.tile(speech[:, 80_000:80_320], 63)[:, :20_000]
    nan = noise.copy()
    nan[rng.integers(0, nan.size, 200)] = np.nan
    nan[:5] = np.inf
    return {
        "speech": speech,
        "silence": np.zeros((1, 10 * RATE)),
        "noise": noise[None],
        "clipped speech": clipped,
        "one full-scale sample": np.where(np.arange(10 * RATE) == 5000, 1.0, noise)[None],
        "held sample": held,
        "stalled buffer": stall,
        "repeated buffer": np.tile(rng.normal(0, 0.1, 800), 200)[None],
        "constant": np.full((1, 10 * RATE), 0.25),
        "dc offset": (noise + 0.1)[None],
        "50 Hz hum": (noise + 0.05 * np.sin(2 * np.pi * 50 * t))[None],
        "60 Hz buzz": (noise + sum(0.02 / k * np.sin(2 * np.pi * 60 * k * t) for k in range(1, 8)))[None],
        "stereo, dead sibling": np.stack([speech[0], 1e-4 * speech[0]]),
        "stereo, clipping on one": np.stack([speech[0], clipped[0]]),
        "short": noise[None, : int(0.3 * RATE)],
        "non-finite": nan[None],
    }


@pytest.fixture(scope="module")
def windows(homesounds) -> dict[str, np.ndarray]:
    speech = load_audio(homesounds / "audio" / "speech" / "speech_A1_000.flac")[0].numpy()[:, : 10 * RATE]
    return {name: x.astype(np.float32) for name, x in edge_cases(speech.astype(np.float64)).items()}


def test_every_edge_case_is_a_real_case_for_some_check(windows):
    flagged = {name: {k for k, v in assess_window(x, RATE).flags.items() if v} for name, x in windows.items()}
    assert flagged["speech"] == flagged["noise"] == flagged["short"] == set()
    assert "clipping" in flagged["clipped speech"] and "clipping" in flagged["stereo, clipping on one"]
    assert "dropout" in flagged["held sample"] and "stuck" in flagged["stalled buffer"]
    assert "stuck" in flagged["repeated buffer"] and "stuck" in flagged["constant"]
    assert "dc_offset" in flagged["dc offset"] and "hum" in flagged["50 Hz hum"] and "hum" in flagged["60 Hz buzz"]
    assert "dead_channel" in flagged["silence"] and "dead_channel" in flagged["stereo, dead sibling"]
    assert "non_finite" in flagged["non-finite"]


def test_clip_stats_are_those_of_the_full_scale_mask_of_every_sample(windows):
    for name, x in windows.items():
        samples = signal_of(x, RATE).samples
        for got, want in zip(clip_stats(samples, CONFIG.clip_level), reference_clip_stats(samples, CONFIG.clip_level)):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_hum_scores_are_those_of_the_plain_periodogram_and_median(windows):
    for name, x in windows.items():
        signal = signal_of(x, RATE)
        variance = np.maximum(signal.power - signal.mean**2, 0.0)
        args = (signal.samples, RATE, CONFIG.hum_mains_hz, CONFIG.hum_max_harmonic_hz, variance)
        for got, want in zip(hum_db(*args), reference_hum_db(*args)):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_mains_line_power_is_that_of_np_median_for_odd_and_even_backgrounds():
    rng = np.random.default_rng(3)
    power = rng.exponential(1.0, (6, 2049)).astype(np.float32)
    for hz_per_bin in (0.390625, 0.25, 0.3, 1.0):  # background windows of even and odd widths
        for f0 in (50.0, 60.0):
            np.testing.assert_array_equal(mains_line_power(power, hz_per_bin, f0, 600.0),
                                          reference_mains_line_power(power, hz_per_bin, f0, 600.0))


def test_stuck_scores_and_periods_are_those_of_the_out_of_place_autocorrelation(windows):
    for name, x in windows.items():
        samples = signal_of(x, RATE).samples
        args = (samples, RATE, CONFIG.stuck_min_period_ms, CONFIG.stuck_max_period_ms, CONFIG.stuck_chunk_s)
        for got, want in zip(periodic_residual_db(*args), reference_periodic_residual_db(*args)):
            np.testing.assert_array_equal(got, want, err_msg=name)


def test_the_finite_shortcut_reads_non_finite_samples_and_overflowing_sums_as_before(windows):
    huge = np.full((1, 1000), 3e38, dtype=np.float32)  # finite, but its sum overflows
    assert signal_of(huge, RATE).non_finite.tolist() == [0.0]
    bad = signal_of(windows["non-finite"], RATE)
    assert bad.non_finite[0] == pytest.approx(np.mean(~np.isfinite(windows["non-finite"])))
    assert np.isfinite(bad.samples).all()
