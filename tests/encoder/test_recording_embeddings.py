"""Specification of embedding audio with a model bundle: windows, channels, rates and files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from encoder.features import LogMelConfig, log_mel
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, save_model
from encoder.recording_embeddings import embed_audio, embed_paths, embed_windows
from service.cli.main import main

TEST_DATA = Path(__file__).resolve().parents[1] / "data"  # the vendored clips (tests/data/homesounds)
RATE = 16000


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    torch.manual_seed(0)
    config = EncoderConfig(width=2, blocks=(1, 1))
    return ModelBundle(Encoder(config).eval(), LogMelConfig(), config, None, {})


def test_embed_windows_gives_float32_unit_rows_equal_to_encoder_on_log_mel(bundle):
    windows = torch.randn(3, RATE * 2) * 0.1
    out = embed_windows(bundle, windows, batch_size=2)
    assert out.shape == (3, 256) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        direct = bundle.encoder(log_mel(windows, bundle.feature_config).unsqueeze(1)).numpy()
    assert np.allclose(out, direct, atol=1e-5)


def test_batch_size_does_not_change_embeddings(bundle):
    windows = torch.randn(5, RATE) * 0.1
    assert np.allclose(embed_windows(bundle, windows, batch_size=1), embed_windows(bundle, windows, batch_size=5), atol=1e-5)


def test_embed_audio_gives_one_row_per_window_and_every_channel(bundle):
    left = torch.randn(RATE * 25) * 0.1
    stereo = torch.stack([left, left * 0.5])
    offsets, embeddings = embed_audio(bundle, stereo, RATE)
    assert offsets.tolist() == [0.0, 10.0, 20.0]  # the 5 s tail is its own window
    assert embeddings.shape == (3, 2, 256) and embeddings.dtype == np.float32
    tail = embed_windows(bundle, stereo[:, 20 * RATE:])
    assert np.allclose(embeddings[2], tail, atol=1e-5)


def test_audio_at_another_rate_is_resampled_to_the_model_rate(bundle):
    offsets, embeddings = embed_audio(bundle, torch.randn(1, 8000 * 12) * 0.1, 8000)
    assert offsets.tolist() == [0.0, 10.0]
    assert embeddings.shape == (2, 1, 256)


def test_audio_shorter_than_a_second_gives_no_windows(bundle):
    offsets, embeddings = embed_audio(bundle, torch.zeros(1, RATE // 2), RATE)
    assert offsets.shape == (0,) and embeddings.shape == (0, 1, 256)


def test_embed_paths_reads_real_files(bundle):
    files = sorted((TEST_DATA / "homesounds" / "audio" / "speech").glob("*.flac"))[:2]
    results = embed_paths(bundle, files, progress=False)
    assert [r[1].shape for r in results] == [(1, 1, 256), (1, 1, 256)]


def write_dataset(root: Path) -> list[Path]:
    """A two-clip shared-layout dataset made of real audio cut to 11 s (two windows each)."""
    sources = sorted((TEST_DATA / "homesounds" / "audio" / "typing").glob("*.flac"))[:2]
    (root / "audio").mkdir(parents=True)
    lines = ["path,label,fold"]
    paths = []
    for index, source in enumerate(sources):
        data, rate = soundfile.read(source, dtype="float32")
        path = root / "audio" / f"clip{index}.flac"
        soundfile.write(path, np.concatenate([data, data[:rate]]), rate)
        lines.append(f"audio/clip{index}.flac,typing,{index + 1}")
        paths.append(path)
    (root / "meta.csv").write_text("\n".join(lines) + "\n")
    return paths


def test_embed_command_writes_paths_offsets_embeddings_and_dataset_labels(bundle, tmp_path):
    save_model(bundle, tmp_path / "m.pt")
    write_dataset(tmp_path / "set")
    assert main(["embed", "--model", str(tmp_path / "m.pt"), str(tmp_path / "set"), "--out", str(tmp_path / "e.npz"), "--quiet"]) == 0
    data = np.load(tmp_path / "e.npz")
    assert data["embeddings"].shape == (4, 256) and data["embeddings"].dtype == np.float32
    assert data["offsets_s"].tolist() == [0.0, 10.0, 0.0, 10.0]
    assert [Path(p).name for p in data["paths"]] == ["clip0.flac", "clip0.flac", "clip1.flac", "clip1.flac"]
    assert data["labels"].tolist() == ["typing"] * 4 and data["folds"].tolist() == [1, 1, 2, 2]


def test_embed_command_gives_one_row_per_channel_when_asked(bundle, tmp_path):
    save_model(bundle, tmp_path / "m.pt")
    stereo = np.random.default_rng(0).normal(0, 0.1, (RATE * 3, 2)).astype(np.float32)
    soundfile.write(tmp_path / "s.wav", stereo, RATE)
    assert main(["embed", "--model", str(tmp_path / "m.pt"), str(tmp_path / "s.wav"), "--out", str(tmp_path / "mono.npz"), "--quiet"]) == 0
    assert main(["embed", "--model", str(tmp_path / "m.pt"), str(tmp_path / "s.wav"), "--per-channel", "--out", str(tmp_path / "pc.npz"), "--quiet"]) == 0
    assert np.load(tmp_path / "mono.npz")["embeddings"].shape == (1, 256)
    per_channel = np.load(tmp_path / "pc.npz")
    assert per_channel["embeddings"].shape == (2, 256) and per_channel["channels"].tolist() == [0, 1]


def test_embed_command_names_an_unreadable_file(bundle, tmp_path, capsys):
    save_model(bundle, tmp_path / "m.pt")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not audio")
    assert main(["embed", "--model", str(tmp_path / "m.pt"), str(tmp_path / "broken.wav"), "--out", str(tmp_path / "e.npz"), "--quiet"]) == 2
    assert "broken.wav" in capsys.readouterr().err
