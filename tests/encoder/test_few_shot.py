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
