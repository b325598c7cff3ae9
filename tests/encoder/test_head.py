"""Specification of the activity head: sklearn fit, pure-numpy predict, stored as plain lists."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from encoder.features import LogMelConfig
from encoder.head import ActivityHead, HeadError, fit_head
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, load_model, save_model


def _blobs(classes: int, per_class: int = 30, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian blobs with string labels c0, c1, ..."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=2.0, size=(classes, dim))
    x = np.concatenate([c + rng.normal(size=(per_class, dim)) * rng.uniform(0.5, 3, size=dim) for c in centres])
    return x, np.repeat([f"c{i}" for i in range(classes)], per_class)


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_numpy_posteriors_equal_sklearn_scaler_plus_logistic_regression(classes):
    x, y = _blobs(classes)
    head = fit_head(x, y)
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(x, y)
    assert head.class_names == tuple(reference.classes_)
    np.testing.assert_allclose(head.predict_proba(x), reference.predict_proba(x), atol=1e-6)


def test_posteriors_are_a_distribution_over_the_class_names_in_order():
    x, y = _blobs(4)
    proba = fit_head(x, y).predict_proba(x[:7])
    assert proba.shape == (7, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert fit_head(x, y).predict(x[:1])[0] in {"c0", "c1", "c2", "c3"}


def test_head_round_trips_through_a_plain_dict_with_identical_posteriors():
    x, y = _blobs(3)
    head = fit_head(x, y)
    data = head.to_dict()
    assert all(isinstance(v, list) for v in data.values())
    np.testing.assert_array_equal(ActivityHead.from_dict(data).predict_proba(x), head.predict_proba(x))


def test_head_survives_the_model_file(tmp_path):
    torch.manual_seed(0)
    config = EncoderConfig(width=4, blocks=(1,), embedding_dim=6)
    x, y = _blobs(3)
    head = fit_head(x, y)
    save_model(ModelBundle(Encoder(config).eval(), LogMelConfig(), config, head.to_dict()), tmp_path / "m.pt")
    loaded = ActivityHead.from_dict(load_model(tmp_path / "m.pt").head)
    np.testing.assert_allclose(loaded.predict_proba(x), head.predict_proba(x))


def test_from_dict_names_the_missing_key():
    data = fit_head(*_blobs(2)).to_dict()
    del data["scale"]
    with pytest.raises(HeadError, match="scale"):
        ActivityHead.from_dict(data)


def test_embeddings_of_the_wrong_size_are_rejected_with_the_expected_size():
    head = fit_head(*_blobs(2, dim=6))
    with pytest.raises(HeadError, match=r"\[n, 6\]"):
        head.predict_proba(np.zeros((2, 5)))


def test_a_single_class_cannot_be_fit():
    with pytest.raises(HeadError, match="at least 2 classes"):
        fit_head(np.zeros((4, 3)), ["a"] * 4)
