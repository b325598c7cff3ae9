"""Specification of `encoder.augment`: each augmentation on a signal whose answer is known, and every
function pure (same generator seed, same output)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from encoder.augment import (AugmentConfig, add_noise, background_draws, band_limit, capture_chain, mix_background,
                             mixup_log_mel, random_resize_crop, resample_through, reverberate, shift_gain, synthetic_rir)

RATE = 16000


def tone(hz: float, seconds: float = 1.0) -> torch.Tensor:
    t = torch.arange(int(RATE * seconds)) / RATE
    return 0.5 * torch.sin(2 * math.pi * hz * t)


def level_db(x: torch.Tensor) -> float:
    return 10 * math.log10(float(x.pow(2).mean()))


def test_band_limit_passes_a_tone_below_the_cutoff_and_removes_one_above_it():
    low, high = tone(500), tone(7000)
    assert level_db(band_limit(low, RATE, 3500.0)) == pytest.approx(level_db(low), abs=0.2)
    # Butterworth magnitude 1/sqrt(1 + (f/fc)^8): one octave above the cutoff is 10 log10(257) = 24.1 dB down.
    assert level_db(high) - level_db(band_limit(high, RATE, 3500.0)) == pytest.approx(10 * math.log10(257), abs=0.5)
    assert band_limit(low, RATE, 3500.0).shape == low.shape


def test_eq_tilt_changes_level_by_its_slope_per_octave_around_1_khz():
    tilted = band_limit(tone(2000), RATE, 8000.0, tilt_db_per_octave=3.0, order=8)
    untilted = band_limit(tone(2000), RATE, 8000.0, tilt_db_per_octave=0.0, order=8)
    assert level_db(tilted) - level_db(untilted) == pytest.approx(3.0, abs=0.2)


def test_noise_is_added_at_the_requested_snr_and_silence_stays_silent():
    x = tone(440)
    for snr in (10.0, 40.0):
        noisy = add_noise(x, snr, np.random.default_rng(0), colour=1.0)
        assert level_db(x) - level_db(noisy - x) == pytest.approx(snr, abs=1e-3)
    assert torch.equal(add_noise(torch.zeros(1000), 20.0, np.random.default_rng(0)), torch.zeros(1000))


def test_synthetic_rir_decays_60_db_over_its_rt60_and_an_impulse_returns_it():
    rir = synthetic_rir(0.5, RATE, np.random.default_rng(1), direct_to_reverb_db=0.0)
    assert len(rir) == RATE // 2 and rir[0] == 1.0
    assert float(np.sum(rir[1:] ** 2)) == pytest.approx(1.0, rel=1e-4)  # DRR 0 dB: tail energy = direct energy
    # Energy in the first vs the last 50 ms of the tail: the envelope falls 60 dB per RT60.
    first, last = np.sum(rir[1:801] ** 2), np.sum(rir[-800:] ** 2)
    assert 10 * np.log10(first / last) == pytest.approx(60 * (0.5 - 0.05) / 0.5, abs=3.0)
    impulse = torch.zeros(RATE)
    impulse[0] = 1.0
    assert torch.allclose(reverberate(impulse, torch.from_numpy(rir))[: len(rir)], torch.from_numpy(rir), atol=1e-5)


def test_resampling_through_another_rate_keeps_length_and_a_1_khz_tone():
    x = tone(1000)
    for via in (22050, 44100, 48000):
        for quality in (0, 1, 2):
            y = resample_through(x, RATE, via, quality)
            assert y.shape == x.shape
            middle = slice(1000, -1000)  # edges see the filters' zero padding
            assert torch.nn.functional.cosine_similarity(y[middle], x[middle], dim=0) > 0.999


def test_low_quality_resampler_rolls_off_the_top_of_the_band_that_high_quality_keeps():
    x = tone(7500)
    low, high = resample_through(x, RATE, 44100, 0), resample_through(x, RATE, 44100, 2)
    assert level_db(low[1000:-1000]) < level_db(x) - 10
    assert level_db(high[1000:-1000]) > level_db(low[1000:-1000]) + 6


def test_capture_chain_is_pure_in_its_seed_and_keeps_the_shape():
    x = torch.stack([tone(300), tone(3000)])
    config = AugmentConfig(reverb_p=1.0, noise_p=1.0, band_limit_p=1.0, resample_p=1.0)
    a = capture_chain(x, RATE, config, np.random.default_rng(5))
    b = capture_chain(x, RATE, config, np.random.default_rng(5))
    c = capture_chain(x, RATE, config, np.random.default_rng(6))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(capture_chain(x, RATE, AugmentConfig(), np.random.default_rng(5)), x)  # all off: unchanged


def test_gain_shifts_log_mel_in_db_and_leaves_the_floor_alone():
    mel = torch.tensor([[-100.0, -50.0, -20.0, -95.0]])
    assert shift_gain(mel, 10.0, -100.0).tolist() == [[-100.0, -40.0, -10.0, -85.0]]
    assert shift_gain(mel, -10.0, -100.0).tolist() == [[-100.0, -60.0, -30.0, -100.0]]  # clamped at the floor


def test_mixup_mixes_powers_and_lambda_zero_or_a_clip_with_itself_changes_nothing():
    x = torch.tensor([-20.0, -60.0])
    other = torch.tensor([-20.0, -100.0])
    assert torch.allclose(mixup_log_mel(x, other, 0.0, -100.0), x)
    assert torch.allclose(mixup_log_mel(x, x, 0.3, -100.0), x, atol=1e-4)
    # Equal powers stay; a quiet bin with lambda 0.5 of a -100 dB partner: 10log10(0.5e-6 + 0.5e-10).
    mixed = mixup_log_mel(x, other, 0.5, -100.0)
    assert mixed[0].item() == pytest.approx(-20.0, abs=1e-4)
    assert mixed[1].item() == pytest.approx(10 * math.log10(0.5e-6 + 0.5e-10), abs=1e-3)


def test_random_resize_crop_keeps_the_size_is_identity_at_scale_one_and_stretches_a_ramp():
    ramp = torch.arange(100.0).repeat(8, 1)  # [8 mels, 100 frames], value = frame index
    assert torch.equal(random_resize_crop(ramp, 1.0, np.random.default_rng(0)), ramp)
    out = random_resize_crop(ramp, 0.5, np.random.default_rng(3))
    assert out.shape == ramp.shape
    steps = out[0, 1:] - out[0, :-1]
    assert (steps > 0).all() and (steps <= 1.0 + 1e-5).all()  # a crop of the ramp stretched: slope <= 1
    assert torch.equal(out, random_resize_crop(ramp, 0.5, np.random.default_rng(3)))


def test_config_rejects_a_mixup_where_the_other_clip_dominates_and_reads_lists_from_toml():
    with pytest.raises(ValueError, match="mixup"):
        AugmentConfig(mixup=0.7)
    config = AugmentConfig.from_dict({"snr_db": [5, 20], "noise_p": 0.5})
    assert config.snr_db == (5.0, 20.0) and config.needs_waveform
    assert not AugmentConfig(mixup=0.4, crop_min_scale=0.6).needs_waveform
    with pytest.raises(ValueError, match="unknown"):
        AugmentConfig.from_dict({"noise": 1})


def test_the_room_tail_rings_into_the_tile_start_so_a_reverberant_tile_does_not_start_dry():
    noise = torch.from_numpy(np.random.default_rng(2).standard_normal(2 * RATE).astype(np.float32))[None] * 0.1
    config = AugmentConfig(reverb_p=1.0, rt60_s=(0.8, 0.8))
    out = capture_chain(noise, RATE, config, np.random.default_rng(0))[0]
    assert abs(level_db(out[:160]) - level_db(out[-1600:])) < 1.5
    # A linear convolution starts without the tail: with 3 dB more reverberant than direct energy, the
    # first 10 ms are about 4 dB quieter than the end.
    linear = reverberate(noise[0], torch.from_numpy(synthetic_rir(0.8, RATE, np.random.default_rng(9), -3.0)))
    assert level_db(linear[-1600:]) - level_db(linear[:160]) > 3.0


def test_a_bed_is_mixed_under_each_tile_at_its_snr_and_a_silent_tile_or_bed_adds_nothing():
    tiles = torch.stack([tone(440), tone(1000), torch.zeros(RATE)])
    beds = torch.stack([tone(3000) * 0.1, tone(200) * 3.0, tone(700)])
    mixed = mix_background(tiles, beds, torch.tensor([0.0, 20.0, 10.0]))
    assert level_db(tiles[0]) - level_db(mixed[0] - tiles[0]) == pytest.approx(0.0, abs=1e-3)
    assert level_db(tiles[1]) - level_db(mixed[1] - tiles[1]) == pytest.approx(20.0, abs=1e-3)
    assert torch.equal(mixed[2], tiles[2])
    assert torch.equal(mix_background(tiles[:1], torch.zeros(1, RATE), torch.tensor([5.0])), tiles[:1])


def test_tiles_of_one_group_get_different_beds_and_the_probability_leaves_some_without_one():
    ids = np.repeat(np.arange(50), 4)
    always = background_draws(ids, 6, 1.0, np.random.default_rng(0))
    assert (always >= 0).all() and always.max() == 5
    assert all(len(set(always[ids == g])) == 4 for g in range(50))  # no anchor and neighbour share a bed
    half = background_draws(ids, 6, 0.5, np.random.default_rng(1))
    assert 0.4 < (half >= 0).mean() < 0.6
    assert np.array_equal(background_draws(ids, 6, 0.5, np.random.default_rng(1)), half)


def test_background_swap_is_off_by_default_needs_the_waveform_and_checks_its_ranges():
    assert AugmentConfig().background_p == 0 and not AugmentConfig().needs_waveform
    on = AugmentConfig(background_p=0.5)
    assert on.needs_waveform and not on.has_capture_chain and on.background_snr_db == (0.0, 20.0)
    assert AugmentConfig.from_dict(on.to_dict()) == on
    with pytest.raises(ValueError, match="background_p"):
        AugmentConfig(background_p=1.5)
    with pytest.raises(ValueError, match="background_snr_db"):
        AugmentConfig(background_snr_db=(20.0, 0.0))
