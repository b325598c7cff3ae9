"""Specification of the inference-prepared encoder (encoder/batchnorm_folding.py): same embeddings, kept fresh."""

from __future__ import annotations

import pytest
import torch

from encoder.batchnorm_folding import fold_batch_norms, inference_encoder
from encoder.model import Encoder, EncoderConfig


def trained_looking_encoder(width: int = 4, pooling: str = "mean") -> Encoder:
    """A small eval-mode encoder whose batch norms hold non-trivial statistics and affine weights."""
    torch.manual_seed(0)
    encoder = Encoder(EncoderConfig(width=width, blocks=(1, 2), pooling=pooling))
    for module in encoder.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return encoder.eval()


@pytest.mark.parametrize("pooling", ["mean", "mean+max"])
def test_folded_encoder_gives_the_eval_encoders_embeddings_for_any_batch_and_length(pooling):
    encoder = trained_looking_encoder(pooling=pooling)
    folded = fold_batch_norms(encoder)
    with torch.inference_mode():
        for shape in [(1, 1, 128, 1001), (3, 1, 128, 101), (2, 1, 128, 37)]:
            features = torch.randn(shape) * 20 - 50
            assert torch.allclose(folded(features), encoder(features), atol=1e-5)


def test_folding_leaves_the_original_encoder_untouched():
    encoder = trained_looking_encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    fold_batch_norms(encoder)
    assert all(torch.equal(before[k], v) for k, v in encoder.state_dict().items())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in encoder.stages.modules())


def test_the_cached_copy_follows_a_weight_update():
    encoder = trained_looking_encoder()
    features = torch.randn(1, 1, 128, 200)
    first = inference_encoder(encoder)
    assert inference_encoder(encoder) is first
    with torch.no_grad():
        encoder.projection.weight.mul_(-1.0)
    updated = inference_encoder(encoder)
    assert updated is not first
    with torch.inference_mode():
        assert torch.allclose(updated(features), encoder(features), atol=1e-5)


def test_an_encoder_in_training_mode_is_used_as_it_is():
    encoder = trained_looking_encoder().train()
    assert inference_encoder(encoder) is encoder
