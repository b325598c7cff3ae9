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
from encoder.training_data import (ClipStore, TrainingClip, dataset_roots, labelled_source_packages, split_long_clips,
                                   training_clips, views)
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


# ---------------------------------------------- background swap, package balance, down-weighted packages

def corpus_for_options(root: Path) -> Path:
    """Six music/effects groups of two packages (one of them with a 'bed-pkg' bed) and two ambience beds."""
    rows = ["path,duration_s,source_package,source_files,licence,kind"]
    rows += [f"audio/music_a_{i}.ogg,4,game-a,game-a:t{i}.ogg,GPL,music" for i in range(3)]
    rows += [f"audio/effects_b_{i}.ogg,4,game-b;bed-pkg,game-b:e{i}.wav;bed-pkg:bed.ogg,GPL,effects" for i in range(3)]
    rows += [f"audio/ambience_c_{i}.ogg,4,game-c,game-c:amb{i}.ogg,GPL,ambience" for i in range(2)]
    for index, row in enumerate(rows[1:]):
        write(root / row.split(",")[0], 4.0, seed=index)
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def test_manifest_chunks_carry_their_source_packages_and_kind(tmp_path):
    clips, _ = training_clips([corpus_for_options(tmp_path / "unlabelled")])
    assert clips[3].packages == ("game-b", "bed-pkg") and clips[3].kind == "effects"
    assert [c.kind for c in clips].count("ambience") == 2
    assert split_long_clips(clips[:1], max_clip_s=1.5)[1].packages == ("game-a",)  # pieces keep them


def test_labelled_source_packages_are_read_from_the_meta_csv_column_and_a_missing_column_is_an_error(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "meta.csv").write_text("path,label,fold,source_package\nx.wav,dog,1,game-b;bed-pkg\ny.wav,cat,2,game-z\n")
    assert labelled_source_packages([tmp_path / "a"]) == {"game-b", "bed-pkg", "game-z"}
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "meta.csv").write_text("path,label,fold\nx.wav,dog,1\n")
    with pytest.raises(DatasetError, match="no source_package column"):
        labelled_source_packages([tmp_path / "b"])
    with pytest.raises(DatasetError, match="no meta.csv"):
        labelled_source_packages([tmp_path / "missing"])


def test_background_swap_views_put_a_different_bed_under_each_tile_of_a_group(tmp_path):
    clips = [TrainingClip(write(tmp_path / "tile.wav", 3.0), "g"),
             TrainingClip(write(tmp_path / "bed1.wav", 3.0, seed=1), "b1", kind="ambience"),
             TrainingClip(write(tmp_path / "bed2.wav", 3.0, seed=2), "b2", kind="ambience")]
    store = ClipStore(clips, LogMelConfig(), "waveform")
    tiles = [Tile(0, 0), Tile(0, 0)]
    augment = AugmentConfig(background_p=1.0, background_snr_db=(0.0, 0.0))
    mixed = views(store, tiles, 100, 2, augment, 0.0, np.random.default_rng(0), ids=[0, 0], beds=[1, 2])
    clean = store.log_mel_tiles(tiles, 100)
    assert (mixed[:, 0] - clean).mean() > 1.0  # a bed at 0 dB raises the level by about 3 dB
    assert not torch.equal(mixed[0], mixed[1])  # one moment, two beds
    with pytest.raises(ValueError, match="kind 'ambience'"):
        views(store, tiles, 100, 2, augment, 0.0, np.random.default_rng(0), ids=[0, 0], beds=[])


def options_config(data: Path, out: Path, **changes) -> TrainConfig:
    triplets = TripletConfig(tile_s=1.0, sampler="pk", clips_per_batch=3, tiles_per_clip=2, random_offsets=True)
    values = dict(data=(str(data),), out=str(out), steps=3, seed=1, device="cpu", validation_fraction=0.0,
                  loss="batch_all", encoder=EncoderConfig(width=2, blocks=(1, 1, 1, 1)), triplets=triplets)
    return TrainConfig(**{**values, **changes})


def test_training_with_every_new_recipe_option_records_them_and_what_they_computed(tmp_path):
    corpus = corpus_for_options(tmp_path / "unlabelled")
    (tmp_path / "labelled").mkdir()
    (tmp_path / "labelled" / "meta.csv").write_text("path,label,fold,source_package\nx.wav,dog,1,bed-pkg;elsewhere\n")
    triplets = TripletConfig(tile_s=1.0, sampler="pk", clips_per_batch=3, tiles_per_clip=2, random_offsets=True,
                             same_moment=True, balance="package", shared_package_weight=0.5,
                             shared_packages_from=(str(tmp_path / "labelled"),))
    config = options_config(corpus, tmp_path / "m.pt", triplets=triplets, loss="batch_hard", batch_all_warmup_steps=2,
                            augment=AugmentConfig(noise_p=1.0, background_p=0.5), encoder=EncoderConfig(
                                width=2, blocks=(1, 1, 1, 1), pooling="mean+max"))
    result = train(config, progress=False)
    assert result.state.step == 3 and all(np.isfinite(result.state.history["loss"]))
    metadata = result.bundle.metadata
    assert metadata["data"]["down_weighted_packages"] == ["bed-pkg", "elsewhere"]
    assert metadata["data"]["background_beds"] == 2
    recorded = TrainConfig.from_dict(metadata["training"]["config"])
    assert recorded == config  # every option is in the model file


def test_background_swap_without_a_bed_in_the_data_is_a_clear_error(tmp_path):
    corpus = corpus_with_manifest(tmp_path / "unlabelled")
    config = options_config(corpus, tmp_path / "m.pt", augment=AugmentConfig(background_p=0.5),
                            triplets=TripletConfig(tile_s=1.0, sampler="pk", clips_per_batch=2, tiles_per_clip=2))
    with pytest.raises(ValueError, match="kind 'ambience'.*found none"):
        train(config, progress=False)
