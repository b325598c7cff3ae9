"""Specification of the P2 "through the air" degradation, stage by stage, on signals with known answers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import signal

from encoder.degradation import (
    SPEED_OF_SOUND_M_S, AirConfig, add_noise, clip_seed, degrade_clip, draw_air, image_source_rir, microphone,
    pink_noise, room_impulse_response, server_resample, through_the_air, to_int16,
)

RATE = 16000


def sine(freq: float, seconds: float = 2.0, amplitude: float = 0.1) -> np.ndarray:
    """A [1, n] sine at ``freq`` Hz."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t))[None, :]


def level_db(x: np.ndarray, skip: int = 4000) -> float:
    """RMS in dB after a settling time (filters start from rest)."""
    return 20 * np.log10(np.sqrt(np.mean(x[..., skip:] ** 2)))


def a_draw(**changes):
    """The draw of one fixed clip, with fields replaced."""
    return dataclasses.replace(draw_air(AirConfig(), 7), **changes)


def test_anechoic_room_gives_one_impulse_of_gain_one_over_distance_at_the_travel_time():
    rir = image_source_rir((6, 5, 3), (1, 1, 1.5), (3, 1, 1.5), reflection=0.0, rate=RATE, length_s=0.05)
    delay = 2.0 / SPEED_OF_SOUND_M_S * RATE
    assert np.flatnonzero(rir).tolist() == [int(delay), int(delay) + 1]
    assert rir.sum() == pytest.approx(1 / 2.0)


def test_floor_reflection_arrives_at_its_image_distance_with_one_reflection_loss():
    # Source and microphone 1 m above the floor, 2 m apart, in a tall wide room: the floor image is first.
    beta = 0.8
    rir = image_source_rir((40, 40, 30), (19, 20, 1), (21, 20, 1), reflection=beta, rate=RATE, length_s=0.02)
    image = np.hypot(2.0, 2.0)
    at = int(image / SPEED_OF_SOUND_M_S * RATE)
    assert rir[at:at + 2].sum() == pytest.approx(beta / image)
    assert np.count_nonzero(rir) == 4  # direct path and floor image, each split over two samples


def schroeder_rt60(rir: np.ndarray) -> float:
    """RT60 of the late decay: the -15..-35 dB slope of the backward-integrated energy, x 3.

    (Later than ISO 3382's -5 dB start: at 1-3.5 m the direct sound and first reflections, which fall
    with distance as well as absorption, still dominate the first 10 dB.)"""
    energy = np.cumsum(rir[::-1] ** 2)[::-1]
    db = 10 * np.log10(energy / energy[0])
    start, end = np.argmax(db <= -15), np.argmax(db <= -35)
    return 3 * (end - start) / RATE


def test_room_response_decays_at_the_drawn_rt60_and_faster_above_the_crossover():
    draw = a_draw(rt60_s=0.6, high_rt60_s=0.3)
    rir = room_impulse_response(draw, RATE)
    low = signal.sosfiltfilt(signal.butter(4, 500, "lowpass", fs=RATE, output="sos"), rir)
    high = signal.sosfiltfilt(signal.butter(4, 4000, "highpass", fs=RATE, output="sos"), rir)
    assert schroeder_rt60(low) == pytest.approx(0.6, rel=0.2)
    assert schroeder_rt60(high) == pytest.approx(0.3, rel=0.2)


def test_pink_noise_has_equal_power_in_every_octave():
    noise = pink_noise((1, 20 * RATE), np.random.default_rng(0))
    power = np.abs(np.fft.rfft(noise[0])) ** 2
    freqs = np.fft.rfftfreq(noise.shape[1], 1 / RATE)
    octaves = [power[(freqs >= f) & (freqs < 2 * f)].sum() for f in (250, 500, 1000, 2000)]
    assert np.ptp(10 * np.log10(octaves)) < 0.5
    assert np.sqrt(np.mean(noise ** 2)) == pytest.approx(1.0)


def test_noise_is_added_at_the_requested_snr():
    clean = sine(440)
    noisy = add_noise(clean, 17.0, np.random.default_rng(1))
    snr = 20 * np.log10(np.sqrt(np.mean(clean ** 2)) / np.sqrt(np.mean((noisy - clean) ** 2)))
    assert snr == pytest.approx(17.0, abs=1e-6)


def test_microphone_passes_1_khz_and_rolls_off_mains_rumble_and_the_top_band():
    draw = a_draw(mic_highpass_hz=200.0, presence_db=0.0, mic_lowpass_hz=6000.0)
    assert level_db(microphone(sine(1000), draw, RATE)) == pytest.approx(level_db(sine(1000)), abs=0.2)
    assert level_db(microphone(sine(50), draw, RATE)) < level_db(sine(50)) - 20  # 2nd order, 2 octaves down
    # A 4th-order Butterworth low-pass at 6 kHz takes at least its analogue attenuation at 7.5 kHz.
    analogue = 10 * np.log10(1 + (7500 / 6000) ** 8)
    assert level_db(microphone(sine(7500), draw, RATE)) < level_db(sine(7500)) - analogue


def test_microphone_presence_peak_lifts_its_frequency_by_its_gain():
    draw = a_draw(mic_highpass_hz=80.0, presence_hz=3000.0, presence_db=5.0, mic_lowpass_hz=7500.0)
    flat = a_draw(mic_highpass_hz=80.0, presence_hz=3000.0, presence_db=0.0, mic_lowpass_hz=7500.0)
    lift = level_db(microphone(sine(3000), draw, RATE)) - level_db(microphone(sine(3000), flat, RATE))
    assert lift == pytest.approx(5.0, abs=0.05)


@pytest.mark.parametrize("server_rate", [44100, 48000])
def test_sound_server_round_trip_keeps_length_and_a_1_khz_tone(server_rate):
    tone = sine(1000)
    back = server_resample(tone, RATE, server_rate, kaiser_beta=5.0)
    assert back.shape == tone.shape
    assert level_db(back, skip=1000) == pytest.approx(level_db(tone, skip=1000), abs=0.05)
    assert np.max(np.abs(back[0, 1000:-1000] - tone[0, 1000:-1000])) < 1e-3


def test_sixteen_bit_output_lies_on_the_grid_within_one_and_a_half_steps():
    x = sine(440, amplitude=0.3)
    q = to_int16(x, np.random.default_rng(0))
    steps = q * 32768
    assert np.allclose(steps, np.round(steps))
    assert np.max(np.abs(q - x)) <= 1.5 / 32768


def test_the_same_clip_and_seed_degrade_identically_and_other_clips_differently():
    x = np.random.default_rng(0).standard_normal((1, 3 * RATE)).astype(np.float32) * 0.05
    a = degrade_clip(x, RATE, seed=0, name="typing/typing_A1_000.flac")
    assert np.array_equal(a, degrade_clip(x, RATE, seed=0, name="typing/typing_A1_000.flac"))
    assert not np.allclose(a, degrade_clip(x, RATE, seed=0, name="typing/typing_A1_001.flac"))
    assert not np.allclose(a, degrade_clip(x, RATE, seed=1, name="typing/typing_A1_000.flac"))
    assert a.dtype == np.float32 and a.shape == x.shape


def test_clip_seed_is_the_same_on_every_machine():
    # sha256 of "seed:name", not Python's per-process hash(): a fixed number everywhere.
    assert clip_seed(0, "typing/typing_A1_000.flac") == 9121221050285461831


def test_degraded_level_is_the_clean_level_times_the_drawn_gain():
    x = np.random.default_rng(2).standard_normal((1, 3 * RATE)) * 0.02
    draw = a_draw(gain_db=-4.0)
    y = through_the_air(x, RATE, draw)
    assert 20 * np.log10(np.sqrt(np.mean(y.astype(np.float64) ** 2)) / np.sqrt(np.mean(x ** 2))) == pytest.approx(
        -4.0, abs=0.05)


def band_share_db(x: np.ndarray, above_hz: float) -> float:
    """Share of energy above ``above_hz`` in dB."""
    power = np.abs(np.fft.rfft(x[0])) ** 2
    freqs = np.fft.rfftfreq(x.shape[1], 1 / RATE)
    return 10 * np.log10(power[freqs > above_hz].sum() / power.sum())


def test_the_chain_removes_the_band_above_7_khz_at_least_as_much_as_its_microphone_low_pass():
    white = np.random.default_rng(3).standard_normal((1, 5 * RATE)) * 0.05
    for name in ("a", "b", "c"):
        draw = draw_air(AirConfig(), clip_seed(0, name))
        drop = band_share_db(white, 7000) - band_share_db(through_the_air(white, RATE, draw), 7000)
        assert drop > 10 * np.log10(1 + (7000 / draw.mic_lowpass_hz) ** 8)


def test_every_draw_stays_inside_the_configured_ranges_and_the_room():
    config = AirConfig()
    for seed in range(200):
        d = draw_air(config, seed)
        assert config.rt60_s[0] <= d.rt60_s <= config.rt60_s[1]
        assert d.high_rt60_s < d.rt60_s
        assert config.snr_db[0] <= d.snr_db <= config.snr_db[1]
        assert config.mic_lowpass_hz[0] <= d.mic_lowpass_hz <= config.mic_lowpass_hz[1]
        assert d.server_rate in config.server_rates
        for position in (d.source_m, d.mic_m):
            assert all(0 < p < size for p, size in zip(position, d.room_m))
