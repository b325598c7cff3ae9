"""Specification of nearest-segment search over an embedding index and `roomtone neighbours`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from encoder.datasets import read_dataset
from encoder.recording_embeddings import embed_paths
from encoder.features import LogMelConfig
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, load_model, save_model
from encoder.neighbours import IndexFileError, load_index, nearest
from encoder.segment_table import save_index, segment_table
from service.cli.main import main


def _write_index(path: Path, embeddings: np.ndarray, labels: list[str] | None = None) -> Path:
    """A hand-made index file."""
    n = len(embeddings)
    extra = {"labels": np.asarray(labels)} if labels else {}
    np.savez(path, paths=np.asarray([f"clip{i}.flac" for i in range(n)]), offsets_s=np.arange(n) * 10.0,
             embeddings=np.asarray(embeddings, dtype=np.float32), **extra)
    return path


def test_neighbours_come_closest_first_with_cosine_distance(tmp_path):
    index = load_index(_write_index(tmp_path / "i.npz", [[1, 0], [0, 1], [-1, 0], [1, 1]], ["a", "b", "c", "d"]))
    found = nearest(index, np.array([2.0, 0.1]), k=3)
    assert [n.path for n in found] == ["clip0.flac", "clip3.flac", "clip1.flac"]
    assert found[0].label == "a" and found[0].offset_s == 0.0
    expected = 1 - np.array([2.0, 0.1]) @ np.array([1, 1]) / (np.hypot(2.0, 0.1) * np.sqrt(2))
    assert found[1].distance == pytest.approx(expected, abs=1e-6)


def test_index_without_labels_gives_empty_labels(tmp_path):
    index = load_index(_write_index(tmp_path / "i.npz", [[1, 0], [0, 1]]))
    assert [n.label for n in nearest(index, np.array([0, 1.0]), k=5)] == ["", ""]


def test_index_missing_an_array_is_rejected_naming_the_file_and_array(tmp_path):
    np.savez(tmp_path / "bad.npz", paths=np.array(["x"]), embeddings=np.zeros((1, 2)))
    with pytest.raises(IndexFileError, match=r"bad\.npz.*offsets_s"):
        load_index(tmp_path / "bad.npz")


def test_cli_finds_the_query_clip_itself_first(homesounds, tmp_path, capsys):
    torch.manual_seed(0)
    config = EncoderConfig(width=4, blocks=(1, 1), embedding_dim=16)
    save_model(ModelBundle(Encoder(config).eval(), LogMelConfig(), config), tmp_path / "m.pt")
    records = [r for r in read_dataset(homesounds) if r.fold == 1][::2][:6]  # six clips of several classes
    table = segment_table(records, embed_paths(load_model(tmp_path / "m.pt"), [r.path for r in records], progress=False))
    save_index(table, tmp_path / "index.npz")
    query = records[2].path
    assert main(["neighbours", "--model", str(tmp_path / "m.pt"), "--index", str(tmp_path / "index.npz"),
                 str(query), "-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rank1 = lines[2].split("\t")
    assert rank1[0] == "1" and rank1[-1] == str(query) and rank1[3] == records[2].label
    assert float(rank1[1]) < 1e-4
    assert len(lines) == 2 + 3


def test_cli_rejects_a_missing_index_with_exit_2(tmp_path, capsys):
    torch.manual_seed(0)
    config = EncoderConfig(width=4, blocks=(1,), embedding_dim=8)
    save_model(ModelBundle(Encoder(config).eval(), LogMelConfig(), config), tmp_path / "m.pt")
    assert main(["neighbours", "--model", str(tmp_path / "m.pt"), "--index", str(tmp_path / "none.npz"), "x.wav"]) == 2
    assert "none.npz" in capsys.readouterr().err
