"""Specification of the encoder network: shapes, normalisation, any frame count, config round trip."""

from __future__ import annotations

import pytest
import torch

from encoder.model import Encoder, EncoderConfig, ProjectionHead, TrainingNetwork, parameter_count


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    torch.manual_seed(0)
    return Encoder(EncoderConfig(width=4)).eval()


@pytest.mark.parametrize("frames", [1, 101, 500, 1001])
def test_embeddings_are_256_dim_unit_vectors_for_any_frame_count(tiny, frames):
    with torch.no_grad():
        out = tiny(torch.randn(3, 1, 128, frames) * 20 - 60)
    assert out.shape == (3, 256)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("n_mels", [64, 128, 100])
def test_the_column_map_is_the_last_stage_per_column_and_pools_and_projects_to_the_embedding(tiny, n_mels):
    features = torch.randn(2, 1, n_mels, 1001) * 20 - 60
    with torch.no_grad():
        embedding, columns = tiny.embedding_and_columns(features)
        channels = tiny.projection.in_features
        assert columns.shape == (2, 32, tiny.column_dim(n_mels)) and tiny.column_dim(n_mels) % channels == 0
        # channels x bands per column: its mean over columns and bands, projected, is the pooled embedding
        pooled = columns.reshape(2, 32, channels, -1).mean(dim=(1, 3))
        assert torch.allclose(torch.nn.functional.normalize(tiny.projection(pooled), dim=1), embedding, atol=1e-5)
        assert torch.allclose(embedding, tiny(features), atol=1e-6)


def test_layout_is_resnet18_stages_with_widths_doubling(tiny):
    assert [len(stage) for stage in tiny.stages] == [2, 2, 2, 2]
    widths = [stage[0].conv1.out_channels for stage in tiny.stages]
    assert widths == [4, 8, 16, 32]
    assert tiny.projection.out_features == 256


def test_wider_config_has_more_parameters():
    assert parameter_count(Encoder(EncoderConfig(width=8))) > parameter_count(Encoder(EncoderConfig(width=4)))


def test_embedding_dim_and_blocks_are_configurable():
    model = Encoder(EncoderConfig(width=2, blocks=(1, 1), embedding_dim=16)).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 128, 50)).shape == (1, 16)
    assert len(model.stages) == 2


def test_config_round_trips_through_a_plain_dict():
    config = EncoderConfig(width=12, blocks=(2, 1, 2), embedding_dim=64)
    assert EncoderConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["blocks"] == [2, 1, 2]


def test_config_from_dict_names_unknown_keys():
    with pytest.raises(ValueError, match="depth"):
        EncoderConfig.from_dict({"width": 8, "depth": 18})


def test_config_rejects_non_positive_width():
    with pytest.raises(ValueError, match="width"):
        EncoderConfig(width=0)


def test_wrong_input_shape_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match=r"\[batch, 1, n_mels, frames\]"):
        tiny(torch.zeros(2, 128, 100))


def test_mean_max_pooling_keeps_the_public_embedding_256_unit_vectors_and_the_parameter_count():
    mean = Encoder(EncoderConfig(width=4))
    both = Encoder(EncoderConfig(width=4, pooling="mean+max"))
    out = both.eval()(torch.randn(2, 1, 128, 300))
    assert out.shape == (2, 256) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    assert parameter_count(mean) == parameter_count(both)


def test_mean_max_pooling_adds_the_loudest_frame_to_the_mean_over_time():
    def pooled(pooling: str) -> torch.Tensor:
        encoder = Encoder(EncoderConfig(width=1, pooling=pooling))
        encoder.input_norm, encoder.stem, encoder.stages, encoder.projection = (torch.nn.Identity(),) * 4
        return encoder.representation(features)

    features = torch.zeros(1, 1, 2, 4)
    features[0, 0, :, 1] = 10.0  # one loud frame of four
    assert pooled("mean").item() == pytest.approx(2.5)
    assert pooled("mean+max").item() == pytest.approx(2.5 + 10.0)


def test_model_files_written_before_the_pooling_option_load_as_mean_pooling():
    config = EncoderConfig.from_dict({"width": 16, "blocks": [2, 2, 2, 2], "embedding_dim": 256})
    assert config.pooling == "mean"
    with pytest.raises(ValueError, match="pooling"):
        EncoderConfig(pooling="attention")


def test_projection_head_is_training_only_and_outputs_unit_vectors_of_its_own_size():
    encoder = Encoder(EncoderConfig(width=4))
    network = TrainingNetwork(encoder, ProjectionHead(256, 64)).eval()
    z = network(torch.randn(3, 1, 128, 200))
    assert z.shape == (3, 64) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    assert set(encoder.state_dict()) == {k.removeprefix("encoder.") for k in network.state_dict() if k.startswith("encoder.")}
    assert torch.equal(TrainingNetwork(encoder).eval()(torch.ones(1, 1, 128, 200)), encoder.eval()(torch.ones(1, 1, 128, 200)))
