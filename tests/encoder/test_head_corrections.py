"""A home's activity corrections as head-training rows (encoder/head_corrections.py) and the weighted head fit."""

from __future__ import annotations

import numpy as np
import pytest

from encoder.head_corrections import CorrectionsError, rows_with_corrections
from encoder.head import HeadError, fit_head


def two_classes(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clean rows: class a around (+1, 0), class b around (-1, 0)."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal((1.0, 0.0), 0.3, (n, 2)), rng.normal((-1.0, 0.0), 0.3, (n, 2))])
    return x, np.array(["a"] * n + ["b"] * n)


def test_corrections_follow_the_shared_rows_with_their_weight() -> None:
    x, y = two_classes(5)
    features, labels, weights = rows_with_corrections(x, y, np.array([[0.5, 3.0]]), ["b"], weight=7.0)
    assert features.shape == (11, 2) and list(labels[-1:]) == ["b"]
    assert list(weights) == [1.0] * 10 + [7.0]


def test_a_correction_to_a_class_the_shared_set_lacks_is_refused_naming_it() -> None:
    x, y = two_classes(5)
    with pytest.raises(CorrectionsError, match="cat"):
        rows_with_corrections(x, y, np.zeros((1, 2)), ["cat"])
    with pytest.raises(CorrectionsError, match="weight"):
        rows_with_corrections(x, y, np.zeros((1, 2)), ["a"], weight=0.0)


def test_weighted_corrections_fix_a_systematic_error_that_unweighted_ones_do_not() -> None:
    # The home's microphone moves class b to (1, 1), on class a's side of the boundary the clean head draws.
    x, y = two_classes()
    home_b = np.random.default_rng(1).normal((1.0, 1.0), 0.2, (30, 2))
    assert np.mean(np.asarray(fit_head(x, y).predict(home_b)) == "b") < 0.5
    corrected, held_out = home_b[:3], home_b[3:]
    plain = fit_head(*rows_with_corrections(x, y, corrected, ["b"] * 3, weight=1.0)[:2])
    features, labels, weights = rows_with_corrections(x, y, corrected, ["b"] * 3, weight=20.0)
    weighted = fit_head(features, labels, sample_weight=weights)
    right = lambda head: np.mean(np.asarray(head.predict(held_out)) == "b")  # noqa: E731
    assert right(weighted) >= 0.8 and right(weighted) > right(plain)
    assert np.mean(np.asarray(weighted.predict(x)) == y) >= 0.95  # the clean classes stay right


def test_sample_weights_must_be_positive_and_one_per_row() -> None:
    x, y = two_classes(5)
    with pytest.raises(HeadError, match="sample_weight"):
        fit_head(x, y, sample_weight=np.ones(3))
    with pytest.raises(HeadError, match="sample_weight"):
        fit_head(x, y, sample_weight=np.r_[np.ones(9), -1.0])
