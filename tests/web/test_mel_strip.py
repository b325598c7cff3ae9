"""The live view's spectrogram: the log-Mel the embedding path computed, shrunk to a small 8-bit image."""

from __future__ import annotations

import base64

import numpy as np
import pytest
import torch

from encoder.embedder import TorchEmbedder
from encoder.features import LogMelConfig, log_mel
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle
from service.web.mel_strip import STRIP_BINS, STRIP_COLUMNS, TOP_DB, mel_strip, strip_to_json


def test_the_floor_is_0_and_top_db_is_255():
    assert mel_strip(np.full((128, 1001), -100.0), floor_db=-100.0).max() == 0
    assert mel_strip(np.full((128, 1001), TOP_DB + 5), floor_db=-100.0).min() == 255


def test_low_mel_bands_stay_in_the_first_rows_and_time_runs_along_columns():
    spectrum = np.full((128, 1000), -100.0)
    spectrum[:16, 500:] = 0.0  # loud low bands in the second half
    strip = mel_strip(spectrum, floor_db=-100.0)
    assert strip.shape == (STRIP_BINS, STRIP_COLUMNS)
    half = STRIP_COLUMNS // 2
    assert strip[:8, half:].min() > 200 and strip[:8, :half].max() == 0 and strip[8:].max() == 0


def test_the_json_form_carries_the_bytes_row_by_row():
    strip = np.arange(6, dtype=np.uint8).reshape(2, 3)
    data = strip_to_json(strip)
    assert (data["bins"], data["columns"]) == (2, 3)
    assert list(base64.b64decode(data["data"])) == [0, 1, 2, 3, 4, 5]


def test_a_strip_of_a_non_spectrogram_is_refused():
    with pytest.raises(ValueError):
        mel_strip(np.zeros(10), floor_db=-100.0)


def test_the_log_mel_handed_out_is_the_one_the_embeddings_were_computed_from():
    torch.manual_seed(0)
    config = EncoderConfig(width=4, blocks=(1, 1), embedding_dim=32)
    embedder = TorchEmbedder(ModelBundle(Encoder(config).eval(), LogMelConfig(), config, None, {}))
    rng = np.random.default_rng(0)
    windows = [(0.1 * rng.standard_normal(16000)).astype(np.float32) for _ in range(3)]
    embeddings, features = embedder.embed_with_features(windows)
    assert np.allclose(embeddings, embedder.embed(windows), atol=1e-6)
    assert np.allclose(features, log_mel(np.stack(windows), LogMelConfig()).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="one length"):
        embedder.embed_with_features([windows[0], windows[1][:8000]])


@pytest.mark.parametrize("shape", [(128, 1001), (128, 200), (64, 1001), (96, 1001), (100, 77)])
def test_pooling_gives_the_slice_means_whether_or_not_the_slices_are_of_one_length(shape):
    values = np.random.default_rng(1).normal(-50.0, 20.0, shape).astype(np.float32)
    bins, columns = min(STRIP_BINS, shape[0]), min(STRIP_COLUMNS, shape[1])
    rows = np.linspace(0, shape[0], bins + 1).round().astype(int)
    cols = np.linspace(0, shape[1], columns + 1).round().astype(int)
    means = np.array([[values[rows[i]:rows[i + 1], cols[j]:cols[j + 1]].mean(dtype=np.float64) for j in range(columns)]
                      for i in range(bins)])
    expected = np.clip(np.round((means + 100.0) / (TOP_DB + 100.0) * 255.0), 0, 255)
    assert np.abs(mel_strip(values, floor_db=-100.0).astype(int) - expected).max() <= 1  # float32 sums may round apart
