"""Specification of the one log-Mel definition (encoder/features.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from encoder.features import FRAMES_PER_10S, LogMelConfig, frame_count, log_mel, mel_band_edges_hz

CONFIG = LogMelConfig()


def sine(freq_hz: float, seconds: float = 1.0, amplitude: float = 0.5, rate: int = 16000) -> torch.Tensor:
    t = torch.arange(int(seconds * rate), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * freq_hz * t)).to(torch.float32)


def test_a_1khz_sine_lands_in_the_mel_bin_whose_peak_is_nearest_1khz():
    spectrum = log_mel(sine(1000.0), CONFIG).mean(dim=1)
    centres = mel_band_edges_hz(CONFIG)[1:-1]
    assert int(spectrum.argmax()) == int(np.argmin(np.abs(centres - 1000.0)))


def test_the_loudest_bin_moves_up_with_frequency():
    low = int(log_mel(sine(300.0), CONFIG).mean(dim=1).argmax())
    high = int(log_mel(sine(4000.0), CONFIG).mean(dim=1).argmax())
    assert low < high


def test_silence_gives_the_log_floor_everywhere():
    features = log_mel(torch.zeros(16000), CONFIG)
    assert torch.all(features == CONFIG.floor_db)


def test_ten_seconds_at_16khz_gives_the_documented_frame_count():
    features = log_mel(torch.zeros(160000), CONFIG)
    assert tuple(features.shape) == (128, FRAMES_PER_10S)
    assert frame_count(160000, CONFIG) == FRAMES_PER_10S == 1001


def test_cpu_results_are_deterministic():
    x = torch.randn(48000, generator=torch.Generator().manual_seed(0)) * 0.1
    assert torch.equal(log_mel(x, CONFIG), log_mel(x.clone(), CONFIG))


def test_float64_and_numpy_input_give_the_float32_result():
    x = np.random.default_rng(0).normal(0, 0.1, 16000)
    expected = log_mel(torch.from_numpy(x.astype(np.float32)), CONFIG)
    got = log_mel(x, CONFIG)
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, atol=1e-4)


def test_int16_pcm_is_scaled_to_full_scale_one():
    x = sine(1000.0)
    pcm = (x * 32767).round().to(torch.int16)
    reference = log_mel(x, CONFIG)
    audible = reference > -40.0  # below that, int16 quantisation noise legitimately differs
    assert torch.allclose(log_mel(pcm, CONFIG)[audible], reference[audible], atol=0.05)


def test_stereo_rows_are_independent_signals():
    left, right = sine(500.0), torch.zeros(16000)
    both = log_mel(torch.stack([left, right]), CONFIG)
    assert tuple(both.shape) == (2, 128, 101)
    assert torch.allclose(both[0], log_mel(left, CONFIG))
    assert torch.all(both[1] == CONFIG.floor_db)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(2, 2, 100), "shape"),
        (torch.zeros(0), "zero samples"),
        (torch.tensor([0.0, float("nan"), 0.0] * 200), "NaN"),
        (torch.zeros(1000, dtype=torch.bool), "dtype"),
        ([0.0, 0.1], "numpy array or torch tensor"),
    ],
)
def test_unusable_input_is_rejected_with_a_message_that_says_why(bad, message):
    with pytest.raises((ValueError, TypeError), match=message):
        log_mel(bad, CONFIG)


def test_config_round_trips_through_a_plain_dict():
    config = LogMelConfig(n_fft=1024, hop_ms=20.0)
    assert LogMelConfig.from_dict(config.to_dict()) == config


def test_config_from_dict_names_an_unknown_key():
    with pytest.raises(ValueError, match="n_mel_bins"):
        LogMelConfig.from_dict({**CONFIG.to_dict(), "n_mel_bins": 64})


@pytest.mark.parametrize("n_fft", [256, 512])
def test_config_rejects_an_fft_too_coarse_for_128_bins(n_fft):
    with pytest.raises(ValueError, match="n_fft"):
        LogMelConfig(n_fft=n_fft)


def test_every_mel_band_of_the_default_config_can_carry_energy():
    noise = torch.randn(32000, generator=torch.Generator().manual_seed(1)) * 0.1
    assert torch.all(log_mel(noise, CONFIG).mean(dim=1) > CONFIG.floor_db)
