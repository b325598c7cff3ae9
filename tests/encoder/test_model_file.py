"""Specification of the model file: what it holds, that loading restores it, and clear errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from encoder.features import LogMelConfig
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, ModelFileError, load_model, save_model

REPO = Path(__file__).resolve().parents[2]
HEAD = {"class_names": ["quiet", "speech"], "mean": [0.0] * 4, "scale": [1.0] * 4,
        "coef": [[0.1] * 4, [-0.1] * 4], "intercept": [0.0, 0.0]}


def make_bundle(width: int = 2, head: dict | None = None) -> ModelBundle:
    torch.manual_seed(0)
    config = EncoderConfig(width=width, blocks=(1, 1), embedding_dim=4)
    encoder = Encoder(config).eval()
    with torch.no_grad():  # non-default BN statistics must survive the round trip too
        encoder.input_norm.running_mean.fill_(-55.0)
    features = LogMelConfig(n_mels=64, fmax=7000.0)
    metadata = {"git_commit": "abc", "metrics": {"validation_loss": 0.25}, "data": {"sha256": "f" * 64}}
    return ModelBundle(encoder, features, config, head, metadata)


def test_saved_bundle_loads_with_weights_configs_head_and_metadata(tmp_path):
    bundle = make_bundle(head=HEAD)
    save_model(bundle, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert loaded.feature_config == bundle.feature_config
    assert loaded.encoder_config == bundle.encoder_config
    assert loaded.embedding_dim == 4
    assert loaded.head == HEAD and loaded.class_names == ["quiet", "speech"]
    assert loaded.metadata == bundle.metadata
    assert not loaded.encoder.training
    x = torch.randn(2, 1, 64, 30) * 10 - 50
    with torch.no_grad():
        assert torch.equal(loaded.encoder(x), bundle.encoder(x))


def test_head_is_none_until_one_is_added_and_can_be_swapped_in(tmp_path):
    bundle = make_bundle()
    save_model(bundle, tmp_path / "m.pt")
    assert load_model(tmp_path / "m.pt").head is None
    assert load_model(tmp_path / "m.pt").class_names == []
    save_model(dataclasses.replace(load_model(tmp_path / "m.pt"), head=HEAD), tmp_path / "m2.pt")
    assert load_model(tmp_path / "m2.pt").head == HEAD


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    save_model(make_bundle(), tmp_path / "m.pt")
    save_model(make_bundle(width=3), tmp_path / "m.pt")  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    assert load_model(tmp_path / "m.pt").encoder_config.width == 3


def test_missing_file_is_a_model_file_error_naming_it(tmp_path):
    with pytest.raises(ModelFileError, match="nope.pt: model file not found"):
        load_model(tmp_path / "nope.pt")


@pytest.mark.parametrize("content", [b"", b"not a model at all", b"PK\x03\x04garbage"])
def test_garbage_file_is_a_model_file_error_naming_it(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match="bad.pt"):
        load_model(path)


def test_truncated_file_is_a_model_file_error(tmp_path):
    save_model(make_bundle(), tmp_path / "m.pt")
    data = (tmp_path / "m.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="cut.pt"):
        load_model(tmp_path / "cut.pt")


def test_plain_torch_file_without_format_marker_is_rejected(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a roomtone model file"):
        load_model(tmp_path / "other.pt")


def test_weights_that_do_not_fit_the_stored_architecture_are_rejected(tmp_path):
    bundle = make_bundle(width=2)
    wrong = dataclasses.replace(bundle, encoder_config=EncoderConfig(width=3, blocks=(1, 1), embedding_dim=4))
    save_model(wrong, tmp_path / "m.pt")
    with pytest.raises(ModelFileError, match="do not fit encoder width=3"):
        load_model(tmp_path / "m.pt")


def test_bundled_model_loads_with_its_training_record():
    bundle = load_model(REPO / "models" / "roomtone.pt")
    assert bundle.embedding_dim == 256
    assert bundle.feature_config == LogMelConfig()
    for key in ("git_commit", "created_utc", "data", "metrics", "training"):
        assert key in bundle.metadata
    assert bundle.metadata["data"]["labels_used"] is False
    assert (REPO / "models" / "roomtone.pt").stat().st_size <= 25 * 1024 * 1024


def saved_with(tmp_path, section: str, **changes) -> Path:
    """A valid model file whose stored ``section`` has ``changes`` (written past save_model's own checks)."""
    from encoder.model_file import bundle_to_dict

    data = bundle_to_dict(make_bundle(head=HEAD))
    data[section] = {**data[section], **changes} if isinstance(data[section], dict) else changes
    path = tmp_path / f"{section}.pt"
    torch.save(data, path)
    return path


@pytest.mark.parametrize("section, changes, named", [
    ("feature_config", {"n_fft": 2 ** 22}, "feature_config.n_fft"),
    ("feature_config", {"n_fft": 2 ** 20, "n_mels": 100_000}, "feature_config.n_mels"),
    ("feature_config", {"sample_rate": 655_350}, "feature_config.sample_rate"),
    ("feature_config", {"floor_db": float("nan")}, "feature_config.floor_db"),
    ("feature_config", {"hop_ms": 0.001}, "feature_config.hop_ms"),
    ("encoder_config", {"width": 100_000}, "encoder_config.width"),
    ("encoder_config", {"blocks": [1] * 50}, "encoder_config.blocks"),
    ("head", {"coef": [[0.1] * 3, [-0.1] * 3]}, "coef has shape"),
    ("head", {"mean": [0.0] * 5, "scale": [1.0] * 5, "coef": [[0.1] * 5] * 2}, "5-d embeddings"),
    ("head", {"coef": [[float("nan")] * 4, [0.0] * 4]}, "coef holds NaN"),
    ("head", {"class_names": ["quiet", "quiet"]}, "unique"),
])
def test_a_model_file_outside_sane_bounds_is_refused_at_load_naming_the_field(tmp_path, section, changes, named):
    """Issue 15, BROKE 6: these loaded and then failed every window (or took 45 s of CPU to check)."""
    import time

    path = saved_with(tmp_path, section, **changes)
    started = time.perf_counter()
    with pytest.raises(ModelFileError, match=named) as refused:
        load_model(path)
    assert str(path) in str(refused.value) and time.perf_counter() - started < 5.0
