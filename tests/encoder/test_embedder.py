"""Specification of the one embedding path (encoder/embedder.py): batching never changes an embedding,
the timing hook sees both stages, and one device resolver answers every caller."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoder.embedder import DeviceError, EmbedTimings, TorchEmbedder, length_groups, resolve_device
from encoder.features import LogMelConfig
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle

RATE = 16000


@pytest.fixture(scope="module")
def embedder() -> TorchEmbedder:
    torch.manual_seed(0)
    config = EncoderConfig(width=2, blocks=(1, 1), embedding_dim=16)
    return TorchEmbedder(ModelBundle(Encoder(config).eval(), LogMelConfig(), config, None, {}), batch_size=2)


def test_windows_of_mixed_lengths_embed_as_they_would_one_at_a_time(embedder: TorchEmbedder) -> None:
    rng = np.random.default_rng(0)
    windows = [(rng.normal(size=n) * 0.1).astype(np.float32) for n in (RATE * 2, RATE, RATE * 2, RATE * 2, RATE)]
    together = embedder.embed(windows)
    alone = np.concatenate([embedder.embed([w]) for w in windows])
    assert together.shape == (5, 16) and together.dtype == np.float32
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert length_groups(windows) == [[0, 2, 3], [1, 4]]


def test_the_timing_hook_adds_feature_and_encoder_seconds_to_what_it_held(embedder: TorchEmbedder) -> None:
    timings = EmbedTimings(features=1.0, embed=2.0)
    embedder.embed([np.zeros(RATE, np.float32)] * 3, timings)
    assert timings.features > 1.0 and timings.embed > 2.0


def test_no_windows_give_an_empty_matrix_of_the_embedding_width(embedder: TorchEmbedder) -> None:
    assert embedder.embed([]).shape == (0, 16)


def test_auto_is_the_cpu_without_cuda_and_asking_for_cuda_there_is_a_device_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device(name)
    with pytest.raises(DeviceError, match="unknown compute device 'tpu7'"):
        resolve_device("tpu7")


def test_auto_and_cuda_pick_the_local_rank_when_cuda_is_present(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda:0")
    assert resolve_device("cuda:3", local_rank=1) == torch.device("cuda:3")
