"""Specification of the microphone signal checks (encoder/signal_checks.py): hand-made signals whose
answer is known, and the real shared clips, which are clean and must pass."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile

from encoder.drift import DriftScore
from encoder.signal_checks import CHECKS, SIGNAL_CHECKS, CheckResult, HealthConfig, assess_window, signal_of

RATE = 16000
SECONDS = 10


def noise(level_dbfs: float = -40.0, seconds: float = SECONDS, seed: int = 0, channels: int = 1) -> np.ndarray:
    """Gaussian noise at an RMS level, 16-bit quantised like a real capture, [channels, n]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 10 ** (level_dbfs / 20), (channels, int(seconds * RATE)))
    return quantise(x)


def quantise(x: np.ndarray) -> np.ndarray:
    """Round to 16-bit steps, as every capture device delivers."""
    return (np.round(np.clip(x, -1, 32767 / 32768) * 32768) / 32768).astype(np.float32)


def tone(freq: float, amplitude: float, seconds: float = SECONDS) -> np.ndarray:
    """A sine [1, n]; the frequencies used here have no whole-sample period (that would be 'stuck')."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * freq * t))[None, :]


def flagged(health) -> set[str]:
    return {name for name, value in health.flags.items() if value}


# ---- clean signals ------------------------------------------------------------------------------------


def test_plain_room_noise_is_ok_with_every_check_scored():
    health = assess_window(noise(-45), RATE)
    assert health.state == "ok"
    assert health.reasons == ()
    assert flagged(health) == set()
    assert set(CHECKS) <= set(health.scores) and set(CHECKS) == set(health.flags)
    assert all(np.isfinite(v) for v in health.scores.values())


def test_a_noisy_tone_near_but_below_full_scale_is_not_clipping():
    health = assess_window(quantise(tone(441.3, 0.95) + noise(-50)), RATE)
    assert health.state == "ok", health.reasons


def test_a_lone_full_scale_sample_is_not_clipping():
    x = noise(-30)
    x[0, 5000] = 1.0
    assert not assess_window(x, RATE).flags["clipping"]


def test_quiet_audio_fading_into_digital_silence_is_not_a_dropout():
    # Like the quiet_ambience clips with silent stretches: the level fades through the last bits to 0.
    x = noise(-55, seed=1)[0].astype(np.float64)
    envelope = np.ones_like(x)
    envelope[40000:44000] = np.linspace(1, 0, 4000)
    envelope[44000:52000] = 0
    envelope[52000:56000] = np.linspace(0, 1, 4000)
    health = assess_window(quantise(x * envelope)[None, :], RATE)
    assert not health.flags["dropout"], health.reasons


# ---- faults -------------------------------------------------------------------------------------------


def test_a_clipped_sine_is_clipping_and_degraded():
    x = quantise(np.clip(tone(441.3, 2.0) + noise(-50), -1.0, 1.0))
    health = assess_window(x, RATE)
    assert flagged(health) == {"clipping"}
    assert health.state == "degraded"
    assert health.scores["clipping"] > 0.3  # a 6 dB overdriven sine spends ~1/3 of its time clipped
    assert health.scores["clipping_run"] >= 3
    assert health.reasons[0].startswith("clipping:")


def test_a_short_run_of_full_scale_samples_is_clipping():
    x = noise(-30)
    x[0, 8000:8004] = 1.0
    health = assess_window(x, RATE)
    assert health.flags["clipping"] and health.scores["clipping_run"] == 4


def test_a_long_clipped_plateau_is_clipping_not_a_dropout():
    x = noise(-30)
    x[0, 8000:8800] = 1.0  # 50 ms held at full scale
    health = assess_window(x, RATE)
    assert flagged(health) == {"clipping"}


@pytest.mark.parametrize("run_ms", [10, 50, 200])
def test_a_sine_with_an_inserted_zero_run_is_a_dropout_of_that_length(run_ms):
    x = quantise(tone(441.3, 0.3) + noise(-50))
    start = 70000
    x[0, start : start + run_ms * RATE // 1000] = 0.0
    health = assess_window(x, RATE)
    assert flagged(health) == {"dropout"}
    assert health.state == "degraded"
    assert health.scores["dropout"] == pytest.approx(run_ms, abs=0.2)


def test_a_held_sample_value_inside_live_audio_is_a_dropout():
    x = noise(-35)
    x[0, 30000:30800] = x[0, 29999]  # the driver repeats the last sample for 50 ms
    health = assess_window(x, RATE)
    assert health.flags["dropout"]
    assert health.scores["dropout_longest_ms"] == pytest.approx(50.0, abs=0.2)


def test_pure_50_hz_hum_over_noise_is_hum():
    x = quantise(noise(-40) + tone(50.0, 10 ** (-40 / 20) * np.sqrt(2)))  # hum as loud as the noise
    health = assess_window(x, RATE)
    assert flagged(health) == {"hum"}
    assert health.state == "degraded"
    assert health.scores["hum"] == pytest.approx(0.0, abs=1.5)  # hum power / rest of the power
    assert "50 Hz" in health.reasons[0]


def test_60_hz_buzz_with_harmonics_is_hum_at_60_hz():
    buzz = sum(tone(60.0 * k, 0.01 / k) for k in (1, 2, 3, 5))
    health = assess_window(quantise(noise(-40) + buzz), RATE)
    assert health.flags["hum"]
    assert "60 Hz" in health.reasons[0]


def test_hum_far_below_the_sound_is_not_flagged():
    x = quantise(noise(-30) + tone(50.0, 10 ** (-70 / 20)))  # 40 dB under the noise
    assert not assess_window(x, RATE).flags["hum"]


def test_a_tone_near_but_not_at_a_mains_frequency_is_not_hum():
    x = quantise(noise(-40) + tone(47.5, 0.02) + tone(123.4, 0.02))
    assert not assess_window(x, RATE).flags["hum"]


def test_dc_shifted_noise_is_a_dc_offset_and_nothing_else():
    health = assess_window(quantise(noise(-40) + 0.1), RATE)
    assert flagged(health) == {"dc_offset"}
    assert health.state == "degraded"
    assert health.scores["dc_offset"] == pytest.approx(0.1, abs=1e-3)


def test_an_all_zero_window_is_a_dead_channel_and_faulty():
    health = assess_window(np.zeros((1, SECONDS * RATE), np.float32), RATE)
    assert flagged(health) == {"dead_channel"}
    assert health.state == "faulty"
    assert health.scores["dead_channel"] == -120.0


def test_noise_below_the_floor_is_a_dead_channel():
    health = assess_window(noise(-85), RATE)
    assert flagged(health) == {"dead_channel"}


def test_a_constant_non_zero_signal_is_stuck_and_faulty():
    health = assess_window(np.full((1, SECONDS * RATE), 0.25, np.float32), RATE)
    assert {"stuck", "dc_offset"} == flagged(health)
    assert health.state == "faulty"
    assert any("holds a constant value" in reason for reason in health.reasons)


def test_a_repeated_short_buffer_is_stuck():
    buffer = noise(-30, seconds=0.064)  # a 1024-sample capture buffer delivered over and over
    health = assess_window(np.tile(buffer, (1, 157)), RATE)
    assert health.flags["stuck"] and health.state == "faulty"
    assert any("every 64.0 ms" in reason for reason in health.reasons)


def test_a_stall_in_the_middle_of_the_window_is_stuck():
    x = noise(-30)
    x[0, 60000:] = np.tile(x[0, 59000:59512], 200)[: x.shape[1] - 60000]
    assert assess_window(x, RATE).flags["stuck"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_faulty_and_the_other_scores_stay_finite(bad):
    x = noise(-40)
    x[0, 1000:1100] = bad
    health = assess_window(x, RATE)
    assert health.flags["non_finite"] and health.state == "faulty"
    assert health.scores["non_finite"] == pytest.approx(100 / x.size)
    assert all(np.isfinite(v) for v in health.scores.values())


def test_a_silent_channel_beside_live_siblings_is_dead_and_named():
    x = noise(-20, channels=4, seed=3)
    x[2] = noise(-60, seed=4)[0]  # above the absolute floor, but 40 dB under its siblings
    health = assess_window(x, RATE)
    assert flagged(health) == {"dead_channel"}
    assert health.scores["dead_channel_gap_db"] == pytest.approx(40, abs=0.5)
    assert "channel 3" in health.reasons[0]


def test_a_one_dimensional_window_is_taken_as_mono():
    assert assess_window(noise(-40)[0], RATE).state == "ok"


def test_integer_pcm_is_read_in_full_scale_units():
    pcm = np.round(noise(-40) * 32768).astype(np.int16)
    assert assess_window(pcm, RATE).scores["rms_dbfs"] == pytest.approx(-40, abs=0.2)
    pcm[0, 100:200] = 32767
    assert assess_window(pcm, RATE).flags["clipping"]


def test_an_empty_window_is_an_error():
    with pytest.raises(ValueError, match="samples"):
        assess_window(np.zeros((1, 0), np.float32), RATE)


# ---- the check table and drift ------------------------------------------------------------------------


def test_every_check_is_one_function_of_the_table_named_by_checks():
    signal = signal_of(noise(-40), RATE)
    assert tuple(SIGNAL_CHECKS) == CHECKS
    for name, check in SIGNAL_CHECKS.items():
        result = check(signal, HealthConfig())
        assert isinstance(result, CheckResult) and not result.flagged and result.reason == "", name


def test_a_multichannel_window_scores_each_check_on_its_worst_channel_as_if_checked_alone():
    x = noise(-35, channels=4, seed=5)
    x[1, 30000:30800] = x[1, 29999]  # dropout on channel 2
    x[2] = quantise(x[2] + 0.1)  # DC offset on channel 3
    x[3, 8000:8004] = 1.0  # clipping on channel 4
    together = assess_window(x, RATE)
    alone = [assess_window(row, RATE) for row in x]
    assert flagged(together) == {"dropout", "dc_offset", "clipping"}
    for name, channel in (("dropout", 1), ("dc_offset", 2), ("clipping", 3)):
        assert together.scores[name] == pytest.approx(alone[channel].scores[name])
        assert any(r.startswith(name) and f"(channel {channel + 1})" in r for r in together.reasons)
    assert together.scores["stuck"] == pytest.approx(min(h.scores["stuck"] for h in alone))
    assert together.scores["hum"] == pytest.approx(max(h.scores["hum"] for h in alone))


def test_drift_is_the_last_check_and_learns_only_from_windows_that_pass_the_signal_checks():
    asked = []

    def drift(learn: bool) -> DriftScore:
        asked.append(learn)
        return DriftScore(score=4.0, flagged=True, ready=True, distance=0.3, window_score=2.5)

    clean = assess_window(noise(-40), RATE, drift=drift)
    offset = assess_window(quantise(noise(-40) + 0.1), RATE, drift=drift)
    assert asked == [True, False]
    assert clean.state == "degraded" and flagged(clean) == {"drift"}
    assert clean.reasons[-1].startswith("drift:") and clean.scores["drift"] == 4.0
    assert clean.scores["drift_ready"] == 1.0
    assert flagged(offset) == {"dc_offset", "drift"} and offset.reasons[-1].startswith("drift:")


def test_without_a_drift_callback_there_is_no_drift_score():
    health = assess_window(noise(-40), RATE)
    assert "drift" not in health.scores and "drift" not in health.flags


# ---- config -------------------------------------------------------------------------------------------


def test_health_config_names_unknown_keys():
    with pytest.raises(ValueError, match="clip_levle"):
        HealthConfig.model_validate({"clip_levle": 0.9})


def test_health_config_round_trips_through_plain_json_data_and_is_frozen():
    config = HealthConfig(hum_max_db=-20.0, hum_mains_hz=(50.0,))
    assert HealthConfig.model_validate(config.model_dump(mode="json")) == config
    with pytest.raises(ValueError, match="frozen"):
        config.hum_max_db = 0.0  # type: ignore[misc]


def test_health_config_refuses_values_out_of_bounds_and_not_finite_by_name():
    for bad, key in (({"clip_level": 1.5}, "clip_level"), ({"hum_max_db": float("nan")}, "hum_max_db"),
                     ({"hum_mains_hz": [50.0, -60.0]}, "hum_mains_hz"), ({"clip_run_min": 0}, "clip_run_min"),
                     ({"stuck_max_period_ms": 600.0}, "stuck_max_period_ms")):
        with pytest.raises(ValueError, match=key):
            HealthConfig.model_validate(bad)


def test_health_config_rejects_an_unknown_faulty_check():
    with pytest.raises(ValueError, match="clippin"):
        HealthConfig(faulty_checks=("clippin",))


def test_thresholds_come_from_the_config():
    x = quantise(noise(-40) + 0.02)
    assert not assess_window(x, RATE).flags["dc_offset"]
    assert assess_window(x, RATE, HealthConfig(dc_offset_max=0.01)).flags["dc_offset"]


# ---- the real shared clips ----------------------------------------------------------------------------

# Clips that really carry what a check looks for (docs/mic-health.md): two tracker modules have a
# -0.07 DC offset, and one ambient track holds steady drones exactly on 100/200/400 Hz.
GENUINE = {
    "audio/tracker_module/pingus_goin_march_00.flac": {"dc_offset"},
    "audio/tracker_module/pingus_goin_march_01.flac": {"dc_offset"},
    "audio/ambient/naev_ambient4_00.flac": {"hum"},
    "audio/ambient/naev_ambient4_02.flac": {"hum"},
    "audio/ambient/naev_ambient4_04.flac": {"hum"},
}
# Each clip is one mono microphone: the sibling rule compares channels of one device, not clips.
CLIPS_AS_CHANNELS = HealthConfig(dead_sibling_gap_db=1000.0)


def flags_per_clip(root, batch: int = 40) -> dict[str, set[str]]:
    """Flagged checks of every clip of a shared set, checking ``batch`` clips at once as channels."""
    paths = [row["path"] for row in csv.DictReader(open(root / "meta.csv", newline=""))]
    result = {}
    for first in range(0, len(paths), batch):
        names = paths[first : first + batch]
        samples = np.stack([soundfile.read(root / name, dtype="float32")[0] for name in names])
        for name, row in zip(names, samples):
            result[name] = set()
        health = assess_window(samples, RATE, CLIPS_AS_CHANNELS)
        if health.state != "ok":  # rare: find the clips responsible one by one
            for name, row in zip(names, samples):
                result[name] = flagged(assess_window(row[None, :], RATE))
    return result


def test_every_clean_homesounds_clip_is_ok(full_homesounds):
    flags = flags_per_clip(full_homesounds)
    assert len(flags) == 320
    assert {name: f for name, f in flags.items() if f} == {}


@pytest.mark.slow
def test_every_music_clip_is_ok_except_those_that_really_carry_dc_or_steady_mains_lines(shared_data):
    flags = flags_per_clip(shared_data / "music")
    assert len(flags) == 404
    assert {name: f for name, f in flags.items() if f} == GENUINE
