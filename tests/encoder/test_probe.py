"""Specification of the linear probe: DCASE 2018 task 5 protocol on the dataset's own folds."""

from __future__ import annotations

import numpy as np
import pytest

from encoder.baselines import mfcc_features
from encoder.datasets import read_dataset
from encoder.head import fit_head
from encoder.probe import leave_package_out_probe, linear_probe, package_folds, segment_posteriors
from encoder.segment_table import SegmentTable, segment_table


def _table(features: np.ndarray, labels: list[str], folds: list[int], segment: list[int] | None = None) -> SegmentTable:
    """A table with one row per segment unless ``segment`` maps rows to segments."""
    n = len(labels)
    return SegmentTable(
        features=np.asarray(features, dtype=np.float32),
        segment=np.asarray(segment if segment is not None else range(n)),
        paths=tuple(f"clip{i}.wav" for i in range(n)), offsets_s=np.zeros(n), labels=np.asarray(labels),
        folds=np.asarray(folds), groups=tuple(f"g{i}" for i in range(n)),
    )


def test_separable_classes_score_macro_f1_of_one_on_every_fold():
    rng = np.random.default_rng(0)
    labels = ["a", "b", "c"] * 16
    x = np.eye(3)[[("abc").index(l) for l in labels]] * 5 + rng.normal(scale=0.1, size=(48, 3))
    result = linear_probe(_table(x, labels, [1 + i % 4 for i in range(48)]))
    assert result.fold_f1 == {1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0}
    assert (result.mean_f1, result.std_f1, result.summary()) == (1.0, 0.0, "100.0 +- 0.0")
    assert result.confusion.trace() == 48


def test_each_fold_is_scored_by_a_head_that_never_saw_it():
    # In fold 4 the feature that separates the classes is flipped: a head trained on folds 1-3 must fail
    # there, which it would not if fold 4 leaked into training or folds were re-drawn at random.
    labels = ["a", "b"] * 20
    folds = [1 + (i // 2) % 4 for i in range(40)]
    sign = np.where(np.asarray(folds) == 4, -1.0, 1.0)
    x = (np.where(np.asarray(labels) == "a", 1.0, -1.0) * sign)[:, None] + np.linspace(0, 0.01, 40)[:, None]
    result = linear_probe(_table(x, labels, folds))
    assert result.fold_f1[4] == 0.0
    assert all(result.fold_f1[k] == 1.0 for k in (1, 2, 3))


def test_channel_posteriors_are_averaged_before_the_decision():
    # Training rows: a at -1, b at +1. Test segment: two channels barely on a's side, one far on b's.
    # A vote over channels would say a; averaging posteriors says b (the DCASE rule).
    x_train = np.array([[-1.0], [1.0]] * 20)
    head = fit_head(x_train, ["a", "b"] * 20)
    table = _table(np.array([[-0.05], [-0.05], [8.0]]), ["b"], [1], segment=[0, 0, 0])
    posteriors = segment_posteriors(head, table, np.array([0]))
    assert head.predict(np.array([[-0.05], [-0.05], [8.0]])) == ["a", "a", "b"]
    assert np.asarray(head.class_names)[posteriors.argmax(axis=1)].tolist() == ["b"]


def test_held_out_features_replace_only_the_scored_fold():
    # Clean features separate the classes on +x; the "air" copy of every segment is flipped. The head
    # learns from clean training folds only, so every held-out fold scored on air features fails.
    labels = ["a", "b"] * 20
    folds = [1 + (i // 2) % 4 for i in range(40)]
    x = np.where(np.asarray(labels) == "a", 1.0, -1.0)[:, None] + np.linspace(0, 0.01, 40)[:, None]
    clean, air = _table(x, labels, folds), _table(-x, labels, folds)
    assert linear_probe(clean).mean_f1 == 1.0
    assert linear_probe(clean, held_out=air).fold_f1 == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}


def test_extra_training_copies_join_the_head_but_never_from_the_held_out_fold():
    # The clean feature is useless (constant); the extra copy carries the class, flipped in fold 4.
    # Copies of the training folds teach the head; if fold 4's copy leaked in, fold 4 would not fail.
    labels = ["a", "b"] * 20
    folds = np.asarray([1 + (i // 2) % 4 for i in range(40)])
    sign = np.where(folds == 4, -1.0, 1.0)
    signal_x = (np.where(np.asarray(labels) == "a", 1.0, -1.0) * sign)[:, None]
    clean = _table(np.zeros((40, 1)), labels, folds.tolist())
    copy = _table(signal_x, labels, folds.tolist())
    result = linear_probe(clean, held_out=copy, extra_train=[copy])
    assert result.fold_f1[4] == 0.0 and all(result.fold_f1[k] == 1.0 for k in (1, 2, 3))


def test_held_out_table_of_other_segments_is_refused():
    table = _table(np.zeros((8, 1)), ["a", "b"] * 4, [1, 2, 3, 4] * 2)
    other = _table(np.zeros((8, 1)), ["b", "a"] * 4, [1, 2, 3, 4] * 2)
    with pytest.raises(ValueError, match="same segments"):
        linear_probe(table, held_out=other)


def test_probe_needs_more_than_one_fold():
    with pytest.raises(ValueError, match="at least 2 folds"):
        linear_probe(_table(np.zeros((4, 2)), ["a", "b", "a", "b"], [1, 1, 1, 1]))


def test_mfcc_probe_on_real_clips_beats_chance(full_homesounds):
    all_records = read_dataset(full_homesounds)
    records = [r for label in ("typing", "speech", "quiet_ambience") for k in (1, 2, 3, 4)
               for r in [r for r in all_records if r.label == label and r.fold == k][:2]]
    table = segment_table(records, mfcc_features([r.path for r in records], progress=False))
    assert table.features.shape == (24, 80)
    result = linear_probe(table)
    assert result.mean_f1 > 0.6  # chance is 1/3


def test_leave_package_out_folds_hold_out_each_package_of_a_class_whole():
    labels = ["dog"] * 6 + ["cat"] * 4
    packages = ["a", "a", "a", "b", "b", "c"] + ["d", "d", "d", "d"]
    folds = [1, 2, 3, 4, 1, 2] + [1, 2, 3, 4]
    lpo = package_folds(labels, packages, folds)
    dog = {p: set(lpo[i] for i in range(6) if packages[i] == p) for p in "abc"}
    assert all(len(f) == 1 for f in dog.values())  # one package, one fold
    assert len(set.union(*dog.values())) == 3  # every package of the class in a fold of its own
    assert lpo[6:].tolist() == [1, 2, 3, 4]  # a class from one package keeps its dataset folds


def test_leave_package_out_folds_on_the_shared_set_never_test_a_class_on_a_package_its_head_saw(full_homesounds):
    records = read_dataset(full_homesounds)
    labels, packages = [r.label for r in records], [r.package for r in records]
    lpo = package_folds(labels, packages, [r.fold for r in records])
    for label in set(labels):
        mine = [i for i, l in enumerate(labels) if l == label]
        if len({packages[i] for i in mine}) < 2:
            continue
        for fold in {lpo[i] for i in mine}:
            tested = {packages[i] for i in mine if lpo[i] == fold}
            trained = {packages[i] for i in mine if lpo[i] != fold}
            assert trained and not tested & trained, label


def test_leave_package_out_probe_scores_held_out_packages_and_is_absent_without_packages():
    rng = np.random.default_rng(1)
    labels = ["a"] * 12 + ["b"] * 12
    packages = ["p", "q", "r"] * 4 + ["s", "t", "u"] * 4
    x = np.eye(2)[[0] * 12 + [1] * 12] * 5 + rng.normal(scale=0.1, size=(24, 2))
    table = _table(x, labels, [1 + i % 4 for i in range(24)])
    result = leave_package_out_probe(table, packages)
    assert result.pooled_f1 == 1.0 and sorted(result.fold_f1) == [1, 2, 3]  # 3 packages per class -> 3 folds
    assert leave_package_out_probe(table, [""] * 24) is None
