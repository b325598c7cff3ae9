"""Few-shot custom-sound scoring and threshold calibration (encoder/few_shot.py)."""

import numpy as np
import pytest

from encoder.few_shot import (DEFAULT_THRESHOLD, EXAMPLE_MARGIN, calibrate_threshold, leave_one_out_scores,
                              nearest_example_scores)


def test_the_score_is_the_cosine_similarity_to_the_nearest_example():
    examples = np.array([[1.0, 0.0], [0.0, 1.0]])
    scores = nearest_example_scores(np.array([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0]]), examples)
    assert scores == pytest.approx([1.0, np.sqrt(0.5), 0.0], abs=1e-6)


def test_leave_one_out_never_compares_an_example_with_itself():
    examples = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    assert leave_one_out_scores(examples) == pytest.approx([0.6, 0.8, 0.8], abs=1e-6)


def test_background_calibration_allows_the_asked_alarms_per_hour():
    rng = np.random.default_rng(0)
    examples = np.array([[1.0] + [0.0] * 7])
    background = rng.normal(size=(720, 8))  # 2 h of 10 s windows
    calibration = calibrate_threshold(examples, background, background_hours=2.0, alarms_per_hour=1.0)
    above = nearest_example_scores(background, examples) >= calibration.threshold
    assert calibration.source == "background" and above.sum() == 2


def test_without_enough_background_the_examples_set_the_threshold_but_never_below_the_default():
    close = np.array([[1.0, 0.0], [0.99, np.sqrt(1 - 0.99 ** 2)]])
    calibration = calibrate_threshold(close, np.ones((10, 2)), background_hours=0.1)
    assert calibration.source == "examples"
    assert calibration.threshold == pytest.approx(0.99 - EXAMPLE_MARGIN)
    spread = np.array([[1.0, 0.0], [0.8, 0.6]])
    assert calibrate_threshold(spread).threshold == DEFAULT_THRESHOLD


def test_one_example_and_no_background_gets_the_default_threshold():
    assert calibrate_threshold(np.array([[1.0, 0.0]])).threshold == DEFAULT_THRESHOLD


# --- time-local matching -----------------------------------------------------------------------------

def _window_with_event(rng, event, start, columns=32, dim=16):
    """Column maps of a window: random background columns, the event's direction in columns start..start+3."""
    x = rng.normal(size=(columns, dim)).astype(np.float32)
    x[start:start + 4] = 4.0 * event + 0.05 * x[start:start + 4]  # the event dominates its columns
    return x


def test_a_short_sound_is_found_by_its_best_span_and_its_place_in_the_window_is_reported():
    from encoder.few_shot import best_span, nearest_example_scores

    rng = np.random.default_rng(1)
    event = np.eye(16, dtype=np.float32)[3]
    window = _window_with_event(rng, event, start=20)
    score, start = best_span(window, event[None], span=4)
    assert start == 20 and score > 0.8
    pooled = nearest_example_scores(window.mean(axis=0)[None], event[None])[0]
    assert pooled < score - 0.25  # the pooled window embedding shows the event much less


def test_best_spans_of_many_windows_agree_with_one_at_a_time():
    from encoder.few_shot import best_span, best_spans

    rng = np.random.default_rng(2)
    windows = rng.normal(size=(5, 32, 16)).astype(np.float32)
    examples = rng.normal(size=(3, 16)).astype(np.float32)
    scores, starts = best_spans(windows, examples, 6)
    for w, s, t in zip(windows, scores, starts):
        assert (pytest.approx(s, abs=1e-5), t) == best_span(w, examples, 6)


def test_a_sound_span_is_as_long_as_its_loud_columns_within_bounds():
    from encoder.few_shot import MAX_SPAN_COLUMNS, span_length

    assert span_length(np.array([-60, -20, -12, -15, -50.0]), longest=8) == 3
    assert span_length(np.array([-60, -20, -12, -15, -50.0])) == min(3, MAX_SPAN_COLUMNS)
    assert span_length(np.full(40, -20.0)) == MAX_SPAN_COLUMNS
    assert span_length(np.array([-80.0])) == 1


def test_the_loudest_span_of_an_example_is_its_embedding():
    from encoder.few_shot import column_levels, loudest_span

    samples = np.zeros(32 * 100, dtype=np.float32)
    samples[1000:1300] = 0.5  # columns 10..12 of 32 (100 samples each)
    levels = column_levels(samples, 32)
    columns = np.tile(np.eye(32, dtype=np.float32)[:, :16], 1)
    _, start = loudest_span(columns, levels, 3)
    assert start == 10 and levels[11] > levels[0] + 60


def reference_column_levels(samples: np.ndarray, columns: int) -> np.ndarray:
    """`column_levels` as first written (issue 25): a mean of squares per part."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    edges = np.linspace(0, len(x), columns + 1).astype(int)
    power = np.array([np.mean(np.square(x[a:b])) if b > a else 0.0 for a, b in zip(edges[:-1], edges[1:])])
    return 10.0 * np.log10(np.maximum(power, 1e-12))


@pytest.mark.parametrize("length", [0, 1, 5, 31, 3_200, 160_000, 160_001])
@pytest.mark.parametrize("columns", [1, 3, 31, 32, 64])
def test_column_levels_are_the_bits_of_the_plain_mean_of_squares(length, columns, homesounds):
    from encoder.audio import load_audio
    from encoder.few_shot import column_levels

    speech = load_audio(homesounds / "audio" / "speech" / "speech_A1_000.flac")[0].numpy()[0]
    samples = np.resize(speech, length)
    samples[: length // 7] = 0.0  # a silent stretch: the -120 dB floor
    np.testing.assert_array_equal(column_levels(samples, columns), reference_column_levels(samples, columns))
    pcm = (samples * 32767).astype(np.int16)  # integer PCM, as an uploaded example may be
    np.testing.assert_array_equal(column_levels(pcm, columns), reference_column_levels(pcm, columns))


def test_a_not_this_example_nearer_than_the_examples_lowers_the_score_and_no_other():
    from encoder.few_shot import span_scores

    examples = np.array([[1.0, 0.0, 0.0]])
    negatives = np.array([[0.8, 0.6, 0.0]])
    spans = np.array([[0.8, 0.6, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    plain, marked = span_scores(spans, examples), span_scores(spans, examples, negatives)
    assert marked[0] == pytest.approx(plain[0] - (1.0 - 0.8)) and marked[0] < plain[0]
    assert marked[1:] == pytest.approx(plain[1:])
