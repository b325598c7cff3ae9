"""Log-Mel patches of a sound found in a window by band-weighted 2-D correlation (encoder/patch_matching.py)."""

import numpy as np
import pytest

from encoder.patch_matching import (MIN_WEIGHT, PreparedFrames, example_patch, patch_length, patch_scores,
                                    place_scores, pooled_frames)


def background(frames=500, bands=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(-60.0, 3.0, (frames, bands)).astype(np.float32)


def chirp_patch(length=20, bands=64):
    """A made-up sound: a tone that climbs through the bands, 30 dB over the background."""
    patch = np.full((length, bands), -60.0, np.float32)
    for t in range(length):
        patch[t, 10 + t] = -30.0
        patch[t, 11 + t] = -36.0
    return patch


def test_pooled_frames_average_the_db_values_of_2_frames_by_2_bands():
    log_mel = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)  # 4 Mel bands x 6 frames
    frames = pooled_frames(log_mel)
    assert frames.shape == (3, 2)
    assert frames[0, 0] == pytest.approx(np.mean([0, 1, 6, 7])) and frames[2, 1] == pytest.approx(np.mean([16, 17, 22, 23]))


def test_a_sound_is_found_where_it_is_even_louder_quieter_or_in_another_level():
    patch = chirp_patch()
    window = background()
    window[300:320] = np.maximum(window[300:320], patch + 6.0)  # the same recording, 6 dB louder
    scores, starts = patch_scores(window[None], patch[None], np.ones((1, 64), np.float32))
    assert starts[0] == 300 and scores[0] > 0.9
    elsewhere, _ = patch_scores(background(seed=1)[None], patch[None], np.ones((1, 64), np.float32))
    assert elsewhere[0] < 0.5


def test_the_correlation_is_pearson_s_over_the_weighted_run():
    rng = np.random.default_rng(2)
    window, patch = rng.normal(size=(1, 40, 8)), rng.normal(size=(1, 5, 8))
    weights = rng.uniform(0.1, 1.0, (1, 8))
    scores = place_scores(window, patch, weights)[0, 0]
    root = np.sqrt(weights[0])
    for place in (0, 17, 35):
        run = (window[0, place:place + 5] * root).ravel()
        assert scores[place] == pytest.approx(np.corrcoef(run, (patch[0] * root).ravel())[0, 1], abs=1e-5)


def test_bands_where_the_example_does_not_rise_above_its_background_weigh_little():
    hum = background(20, seed=3)
    hum[:, 12] = -30.0  # 30 dB over the background in band 12 only
    example = np.concatenate([background(50), hum, background(50, seed=4)])
    length = patch_length(example, frame_s=0.02)
    patch, weights, start = example_patch(example, length)
    assert 1 <= length <= 25 and 45 <= start <= 55 and patch.shape == (length, 64)
    assert weights[12] == 1.0 and np.all(np.delete(weights, 12) < 0.5) and weights.min() >= MIN_WEIGHT


def test_a_negative_patch_lowers_the_score_where_it_is_closer_than_the_examples():
    patch, lookalike = chirp_patch(), chirp_patch()
    lookalike[:, 40] = -40.0  # alike, with one more band
    window = background()
    window[100:120] = np.maximum(window[100:120], lookalike)
    weights = np.ones((1, 64), np.float32)
    before, _ = patch_scores(window[None], patch[None], weights)
    after, _ = patch_scores(window[None], patch[None], weights, negatives=lookalike[None])
    assert after[0] < before[0]


def test_prepared_frames_give_the_same_scores_for_every_sound():
    window = background()[None]
    prepared = PreparedFrames.of(window)
    for length in (1, 7, 25, 50):
        patch = chirp_patch(length)[None]
        weights = np.ones((1, 64), np.float32)
        assert np.allclose(place_scores(prepared, patch, weights), place_scores(window, patch, weights), atol=1e-5)
