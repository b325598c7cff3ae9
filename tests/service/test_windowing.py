"""Streaming windows cut exactly what `window_spans` cuts from the whole recording, at the model's rate."""

from __future__ import annotations

import numpy as np
import pytest

from encoder.audio import load_audio
from encoder.resampling import resample
from encoder.windows import WindowSpec, window_spans
from service.capture.sources import Chunk
from service.capture.windowing import Window, Windower


def stream(samples: np.ndarray, rate: int, sizes: list[int], t0: float = 1000.0):
    """Chunks of ``samples [channels, n]`` with the given sizes (cycled), timestamped from ``t0``."""
    pos, i = 0, 0
    while pos < samples.shape[1]:
        n = sizes[i % len(sizes)]
        yield Chunk("m", samples[:, pos:pos + n], rate, t0 + pos / rate)
        pos, i = pos + n, i + 1


@pytest.fixture(scope="module")
def recording(homesounds) -> np.ndarray:
    """25 s of real audio: three shared clips back to back (16 kHz mono)."""
    names = ["water/water_A1_000.flac", "typing/typing_A1_000.flac", "speech/speech_A1_000.flac"]
    parts = [load_audio(homesounds / "audio" / n)[0].numpy() for n in names]
    return np.concatenate(parts, axis=1)[:, :25 * 16000]


@pytest.mark.parametrize("hop_s", [10.0, 4.0, 15.0])
def test_streamed_windows_are_the_window_spans_of_the_whole_recording(recording, hop_s):
    windower = Windower("m", 16000, 16000, WindowSpec(10.0, hop_s), realtime=False)
    windows = [w for c in stream(recording, 16000, [1600, 777, 5000]) for w in windower.push(c)]
    windows += windower.finish()
    spans = window_spans(recording.shape[1], 16000, WindowSpec(10.0, hop_s))
    assert len(windows) == len(spans)
    for window, span in zip(windows, spans):
        np.testing.assert_array_equal(window.samples, recording[:, span.start:span.end])
        assert window.start_unix == pytest.approx(1000.0 + span.start / 16000)
        assert window.end_unix == pytest.approx(1000.0 + span.end / 16000)


def test_a_window_is_emitted_as_soon_as_its_last_sample_arrives(recording):
    windower = Windower("m", 16000, 16000)
    assert windower.push(Chunk("m", recording[:, :159_999], 16000, 0.0)) == []
    (window,) = windower.push(Chunk("m", recording[:, 159_999:160_000], 16000, 159_999 / 16000))
    assert window.samples.shape == (1, 160_000)
    assert windower.buffered_s == 0.0


def test_native_rate_windows_are_resampled_to_the_model_rate(recording):
    audio_48k = resample(recording[:, :160_000], 16000, 48000)
    windower = Windower("m", 48000, 16000)
    windows = [w for c in stream(audio_48k, 48000, [4800]) for w in windower.push(c)]
    assert len(windows) == 1 and windows[0].samples.shape == (1, 160_000)
    assert windows[0].sample_rate == 16000
    assert windows[0].end_unix - windows[0].start_unix == pytest.approx(10.0)
    inner = slice(1000, -1000)  # away from the edges the round trip is close to the original
    error = windows[0].samples[0, inner] - recording[0, :160_000][inner]
    assert np.linalg.norm(error) < 0.05 * np.linalg.norm(recording[0, :160_000][inner])


def test_lost_samples_restart_the_window_instead_of_gluing_audio_across_the_gap(recording):
    windower = Windower("m", 16000, 16000, realtime=True)
    assert windower.push(Chunk("m", recording[:, :80_000], 16000, 100.0)) == []
    # the next block starts 3 s later than the 5 s buffered predict: samples were lost
    assert windower.push(Chunk("m", recording[:, 80_000:160_000], 16000, 108.0)) == []
    assert windower.gaps == 1
    (window,) = windower.push(Chunk("m", recording[:, 160_000:240_000], 16000, 113.0))
    assert window.start_unix == pytest.approx(108.0)


def test_finish_emits_a_tail_of_at_least_one_second_and_nothing_shorter(recording):
    windower = Windower("m", 16000, 16000)
    windower.push(Chunk("m", recording[:, :180_000], 16000, 0.0))
    (tail,) = windower.finish()
    assert tail.samples.shape[1] == 20_000 and tail.start_unix == pytest.approx(10.0)
    windower.push(Chunk("m", recording[:, :160_000 + 8000], 16000, 0.0))
    assert windower.finish() == []


def test_a_phase_delays_the_first_window_and_keeps_later_windows_on_its_grid_after_a_gap(recording):
    windower = Windower("m", 16000, 16000, WindowSpec(2.0, 2.0), realtime=True, phase_s=0.5)
    windows = windower.push(Chunk("m", recording[:, :48_000], 16000, 100.0))  # 3 s: 0.5 s skipped, one window
    assert [(w.start_unix, w.end_unix) for w in windows] == [(pytest.approx(100.5), pytest.approx(102.5))]
    np.testing.assert_array_equal(windows[0].samples, recording[:, 8_000:40_000])
    # 1.7 s lost: the stream restarts at 104.7, and the next window starts on the grid (100.5 + k * 2 s) at 106.5
    windows = windower.push(Chunk("m", recording[:, 75_200:139_200], 16000, 104.7))
    assert windower.gaps == 1
    assert [w.start_unix for w in windows] == [pytest.approx(106.5)]
    np.testing.assert_array_equal(windows[0].samples, recording[:, 75_200 + 28_800:75_200 + 60_800])


def test_a_hop_longer_than_the_window_is_not_taken_for_lost_samples(recording):
    windower = Windower("m", 16000, 16000, WindowSpec(2.0, 4.0), realtime=True)
    windows = [w for c in stream(recording[:, :160_000], 16000, [1600], t0=100.0) for w in windower.push(c)]
    assert windower.gaps == 0
    assert [w.start_unix for w in windows] == [pytest.approx(100.0 + 4 * k) for k in range(3)]


@pytest.mark.parametrize("case", ["one channel", "one channel with NaN/Inf", "one huge channel", "two channels",
                                  "float64"])
def test_the_mono_mix_is_the_channel_mean_with_non_finite_samples_as_zero(recording, case):
    one = recording[:, : 10 * 16000].astype(np.float32)
    broken = one.copy()
    broken[0, ::997], broken[0, 1], broken[0, 2] = np.nan, np.inf, -np.inf
    samples = {"one channel": one, "one channel with NaN/Inf": broken,
               "one huge channel": np.full((1, 1000), 3e38, np.float32),  # finite, yet its sum overflows
               "two channels": np.concatenate([one, 0.5 * one]), "float64": one.astype(np.float64)}[case]
    expected = np.nan_to_num(samples.mean(axis=0), nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    mono = Window("m", samples, 16000, 0.0, 10.0, False).mono()
    assert mono.dtype == np.float32
    np.testing.assert_array_equal(mono, expected)
