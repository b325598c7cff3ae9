"""Specification of the dataset readers (encoder/datasets.py): shared meta.csv sets and the DCASE 2018
task 5 development layout, with errors that name the file and line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from encoder.datasets import DatasetError, Record, read_dataset, summarize


def test_homesounds_has_320_clips_in_4_balanced_folds_and_8_classes(full_homesounds):
    records = read_dataset(full_homesounds)
    assert len(records) == 320
    assert {r.fold for r in records} == {1, 2, 3, 4}
    assert len({r.label for r in records}) == 8
    assert all(r.path.is_file() for r in records)


def test_no_homesounds_group_spans_two_folds(full_homesounds):
    folds_of: dict[str, set[int]] = {}
    for record in read_dataset(full_homesounds):
        folds_of.setdefault(record.group, set()).add(record.fold)
    assert all(len(folds) == 1 for folds in folds_of.values())
    assert len(folds_of) > 100  # the fold-wide background bed must not merge clips into one group


def test_music_groups_are_tracks_and_never_cross_folds(shared_data):
    records = read_dataset(shared_data / "music" / "meta.csv")
    assert len(records) == 404
    tracks: dict[str, set[int]] = {}
    for record in records:
        tracks.setdefault(record.group, set()).add(record.fold)
    assert len(tracks) == 83
    assert all(len(folds) == 1 for folds in tracks.values())


def build_dcase_tree(root: Path, homesounds: Path) -> list[tuple[str, str, str, int]]:
    """Write a tiny DCASE 2018 task 5 layout from shared clips: 4-channel WAVs, 2 nodes x 2 sessions per fold."""
    (root / "audio").mkdir(parents=True)
    (root / "evaluation_setup").mkdir()
    sources = sorted((homesounds / "audio" / "speech").glob("*.flac"))[:4]
    labels = ["social_activity", "absence", "vacuum_cleaner", "working"]
    rows = []  # (file, label, session, fold)
    for fold in range(1, 5):
        clip, rate = soundfile.read(str(sources[fold - 1]), dtype="float32")
        for node in (1, 2):
            name = f"audio/DevNode{node}_ex{fold}_{fold * 10}.wav"
            channels = np.stack([clip * (0.5 + 0.1 * c) for c in range(4)], axis=1)
            soundfile.write(str(root / name), channels, rate)
            rows.append((name, labels[fold - 1], f"{labels[fold - 1]}_{fold}", fold))
    for fold in range(1, 5):
        train = [r for r in rows if r[3] != fold]
        test = [r for r in rows if r[3] == fold]
        (root / "evaluation_setup" / f"fold{fold}_train.txt").write_text(
            "".join(f"{f}\t{label}\t{session}\n" for f, label, session, _ in train))
        (root / "evaluation_setup" / f"fold{fold}_evaluate.txt").write_text(
            "".join(f"{f}\t{label}\n" for f, label, _, _ in test))
        (root / "evaluation_setup" / f"fold{fold}_test.txt").write_text("".join(f"{f}\n" for f, *_ in test))
    return rows


def test_the_dcase_layout_reads_back_with_folds_labels_and_sessions_as_groups(tmp_path, homesounds):
    rows = build_dcase_tree(tmp_path / "dcase", homesounds)
    records = read_dataset(tmp_path / "dcase")
    by_name = {r.path.name: r for r in records}
    assert len(records) == len(rows) == 8
    for name, label, session, fold in rows:
        record = by_name[Path(name).name]
        assert (record.label, record.group, record.fold) == (label, session, fold)
    summary = summarize(records)
    assert summary.channels == {4: 8}
    assert summary.problems == []


def test_a_dcase_file_listed_but_absent_names_the_list_and_line(tmp_path, homesounds):
    build_dcase_tree(tmp_path / "dcase", homesounds)
    (tmp_path / "dcase" / "audio" / "DevNode2_ex3_30.wav").unlink()
    with pytest.raises(DatasetError, match=r"fold3_evaluate\.txt:2: listed file audio/DevNode2_ex3_30\.wav does not exist"):
        read_dataset(tmp_path / "dcase")


def test_a_dcase_line_with_an_unknown_label_is_named(tmp_path, homesounds):
    build_dcase_tree(tmp_path / "dcase", homesounds)
    path = tmp_path / "dcase" / "evaluation_setup" / "fold1_evaluate.txt"
    path.write_text(path.read_text().replace("social_activity", "partying", 1))
    with pytest.raises(DatasetError, match=r"fold1_evaluate\.txt:1: unknown label 'partying'"):
        read_dataset(tmp_path / "dcase")


def copy_meta(tmp_path: Path, homesounds: Path, edit) -> Path:
    """A temp copy of homesounds' meta.csv (pointing at the real audio) with ``edit`` applied to its lines."""
    lines = (homesounds / "meta.csv").read_text().splitlines()
    shutil.copytree(homesounds / "audio" / "speech", tmp_path / "audio" / "speech")
    kept = [lines[0]] + [line for line in lines[1:] if line.startswith("audio/speech/")]
    (tmp_path / "meta.csv").write_text("\n".join(edit(kept)) + "\n")
    return tmp_path / "meta.csv"


def test_a_missing_column_is_named(tmp_path, homesounds):
    meta = copy_meta(tmp_path, homesounds, lambda ls: [ls[0].replace("fold", "split", 1)] + ls[1:])
    with pytest.raises(DatasetError, match=r"meta\.csv: missing column\(s\) \['fold'\]"):
        read_dataset(meta)


def test_an_unknown_fold_names_the_line(tmp_path, homesounds):
    def bad_fold(lines):
        fields = lines[3].split(",")
        fields[2] = "7"
        return lines[:3] + [",".join(fields)] + lines[4:]
    meta = copy_meta(tmp_path, homesounds, bad_fold)
    with pytest.raises(DatasetError, match=r"meta\.csv:4: unknown fold 7"):
        read_dataset(meta)


def test_a_listed_file_that_is_absent_names_the_line(tmp_path, homesounds):
    meta = copy_meta(tmp_path, homesounds, lambda ls: ls)
    (tmp_path / "audio" / "speech" / "speech_A1_001.flac").unlink()
    with pytest.raises(DatasetError, match=r"meta\.csv:3: listed file audio/speech/speech_A1_001\.flac does not exist"):
        read_dataset(meta)


def test_a_directory_without_metadata_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError, match="not a dataset"):
        read_dataset(tmp_path)


def test_summary_reports_an_unreadable_file_as_a_problem(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF....garbage")
    summary = summarize([Record(tmp_path / "bad.wav", "x", 1, "g")])
    assert summary.clips == 1 and len(summary.problems) == 1 and "bad.wav" in summary.problems[0]
