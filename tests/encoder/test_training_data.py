"""Specification of `encoder.training_data` and the unlabelled readers: what training finds under its
data paths (labels never read), long files cut into clips of one group, and the views of a batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from encoder.augment import AugmentConfig
from encoder.datasets import DatasetError, read_unlabelled
from encoder.features import LogMelConfig, log_mel
from encoder.train import TrainConfig, train
from encoder.model import EncoderConfig
from encoder.training_data import ClipStore, TrainingClip, dataset_roots, split_long_clips, training_clips, views
from encoder.triplets import Tile, TripletConfig

RATE = 16000


def write(path: Path, seconds: float, rate: int = RATE, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32), rate)
    return path


def corpus_with_manifest(root: Path) -> Path:
    """Four chunks: two of one music track, one of another, one effects chunk; in the shared layout."""
    rows = ["path,duration_s,source_package,source_files,licence,kind",
            "audio/music_a_1.ogg,3,game-a,game-a:track1.ogg,GPL,music",
            "audio/music_a_2.ogg,3,game-a,game-a:track1.ogg,GPL,music",
            "audio/music_a_3.ogg,3,game-a,game-a:track2.ogg,GPL,music",
            "audio/effects_b_1.ogg,3,game-b,game-b:x.wav;game-b:y.wav,GPL,effects"]
    for index, row in enumerate(rows[1:]):
        write(root / row.split(",")[0], 3.0, seed=index)
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_manifest_groups_chunks_by_source_files_and_domains_by_package_and_kind(tmp_path):
    records = read_unlabelled(corpus_with_manifest(tmp_path / "unlabelled"))
    assert [r.group for r in records] == ["game-a:track1.ogg", "game-a:track1.ogg", "game-a:track2.ogg", "game-b:x.wav;game-b:y.wav"]
    assert [r.domain for r in records] == ["game-a:music"] * 3 + ["game-b:effects"]


def test_a_folder_of_audio_files_of_any_format_gives_one_group_per_file_and_its_folder_as_domain(tmp_path):
    write(tmp_path / "mine" / "kitchen" / "a.wav", 2.0)
    write(tmp_path / "mine" / "kitchen" / "b.flac", 2.0, rate=44100)
    write(tmp_path / "mine" / "c.ogg", 2.0, rate=48000)
    (tmp_path / "mine" / "notes.txt").write_text("not audio")
    records = read_unlabelled(tmp_path / "mine")
    assert [(r.path.name, r.group, r.domain) for r in records] == [
        ("c.ogg", "c.ogg", "."), ("a.wav", "kitchen/a.wav", "kitchen"), ("b.flac", "kitchen/b.flac", "kitchen")]


def test_a_folder_without_audio_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no dataset"):
        dataset_roots(tmp_path / "empty")


def test_a_folder_of_corpora_yields_labelled_and_unlabelled_ones_and_drops_labels(tmp_path):
    corpus_with_manifest(tmp_path / "data" / "unlabelled")
    write(tmp_path / "data" / "labelled" / "audio" / "x.wav", 3.0)
    write(tmp_path / "data" / "labelled" / "audio" / "y.wav", 3.0, seed=1)
    (tmp_path / "data" / "labelled" / "meta.csv").write_text("path,label,fold\naudio/x.wav,speech,1\naudio/y.wav,water,2\n")
    assert [p.name for p in dataset_roots(tmp_path / "data")] == ["labelled", "unlabelled"]
    clips, summary = training_clips([tmp_path / "data"])
    assert [s["clips"] for s in summary] == [2, 4]
    assert {c.group.split(":")[0] for c in clips} == {"labelled", "unlabelled"}
    assert clips[-1].domain == "unlabelled:game-b:effects"
    assert not any(hasattr(c, "label") for c in clips)


def test_long_files_become_equal_clips_of_one_group(tmp_path):
    path = write(tmp_path / "long.wav", 150.0)
    clips = split_long_clips([TrainingClip(path, "g", "d")], max_clip_s=60.0)
    assert [(c.start_s, c.duration_s, c.group) for c in clips] == [(0.0, 50.0, "g"), (50.0, 50.0, "g"), (100.0, 50.0, "g")]
    store = ClipStore(clips, LogMelConfig(), "waveform")
    assert [store.frames(i) for i in range(3)] == [5001, 5001, 5001]
    assert split_long_clips([TrainingClip(path, "g")], max_clip_s=200.0)[0].duration_s == 0.0  # short enough: whole file


def test_waveform_store_tiles_give_the_same_log_mel_frames_as_the_log_mel_store(tmp_path):
    clip = TrainingClip(write(tmp_path / "a.wav", 3.0), "g")
    tiles = [Tile(0, 40)]
    from_audio = ClipStore([clip], LogMelConfig(), "waveform").log_mel_tiles(tiles, 100)
    from_mel = ClipStore([clip], LogMelConfig(), "log_mel").log_mel_tiles(tiles, 100)
    assert from_audio.shape == from_mel.shape == (1, 128, 100)
    # Away from the tile edges (centre padding differs) the two agree to float16 storage precision.
    assert torch.allclose(from_audio[..., 5:-5], from_mel[..., 5:-5], atol=0.1)


def test_views_without_augmentation_are_the_clean_tiles_and_with_it_differ_per_tile(tmp_path):
    clips = [TrainingClip(write(tmp_path / f"{i}.wav", 3.0, seed=i), f"g{i}") for i in range(2)]
    store = ClipStore(clips, LogMelConfig(), "waveform")
    tiles = [Tile(0, 0), Tile(0, 0), Tile(1, 0), Tile(1, 0)]
    clean = views(store, tiles, 100, 2, AugmentConfig(), 0.0, np.random.default_rng(0))
    assert torch.equal(clean[:, 0], store.log_mel_tiles(tiles, 100))
    noisy = views(store, tiles, 100, 2, AugmentConfig(noise_p=1.0, snr_db=(10.0, 10.0)), 0.0, np.random.default_rng(0))
    assert not torch.equal(noisy[0], noisy[1])  # same tile, own draws: the two views differ by augmentation


def test_training_runs_on_a_folder_of_unlabelled_recordings(tmp_path):
    for i in range(6):
        write(tmp_path / "mine" / f"{i}.wav", 4.0 + i, seed=i)
    config = TrainConfig(data=(str(tmp_path / "mine"),), out=str(tmp_path / "m.pt"), steps=2, seed=1, device="cpu",
                         validation_fraction=0.0, loss="batch_hard", encoder=EncoderConfig(width=2, blocks=(1, 1, 1, 1)),
                         triplets=TripletConfig(tile_s=1.0, sampler="pk", clips_per_batch=3, tiles_per_clip=2, random_offsets=True))
    result = train(config, progress=False)
    assert result.state.step == 2
    assert result.bundle.metadata["data"]["datasets"][0]["kind"] == "unlabelled"
