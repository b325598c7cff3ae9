"""Linear probe under the DCASE 2018 task 5 protocol, on frozen per-segment features.

For each dataset fold k: fit `fit_head` (StandardScaler + multinomial logistic regression) on every
channel row of the segments of the other folds, score the segments of fold k. One decision per
segment: the class posteriors of its channels are averaged before the arg-max (DCASE multi-channel
rule). Score = macro-F1 per fold, reported as mean +- std (population std over the folds).

Two variations keep the folds and the head but change what it sees:
- ``held_out``: the held-out segments are scored on other features of the same segments (P2: the
  held-out fold after the "through the air" degradation, the training folds clean);
- ``extra_train``: more rows of the same segments (augmented copies) join the training folds' rows.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from encoder.head import DEFAULT_C, fit_head
from encoder.segment_table import SegmentTable


@dataclass(frozen=True)
class ProbeResult:
    """Fold scores, per-class F1 and confusion matrix pooled over the held-out folds, and every decision."""

    class_names: tuple[str, ...]
    fold_f1: dict[int, float]
    per_class_f1: dict[str, float]
    confusion: np.ndarray
    predictions: np.ndarray

    @property
    def mean_f1(self) -> float:
        """Mean of the per-fold macro-F1."""
        return float(np.mean(list(self.fold_f1.values())))

    @property
    def std_f1(self) -> float:
        """Population standard deviation of the per-fold macro-F1."""
        return float(np.std(list(self.fold_f1.values())))

    @property
    def pooled_f1(self) -> float:
        """Macro-F1 over every held-out decision at once (the mean of `per_class_f1`): the figure of
        leave-package-out folds, some of which hold no clip of a class."""
        return float(np.mean(list(self.per_class_f1.values())))

    def summary(self) -> str:
        """``mean +- std`` in percent, e.g. ``68.4 +- 4.0``."""
        return f"{100 * self.mean_f1:.1f} +- {100 * self.std_f1:.1f}"


def package_folds(labels: Sequence[str], packages: Sequence[str], folds: Sequence[int], n_folds: int = 4) -> np.ndarray:
    """Leave-package-out folds (P1-lpo): every clip of one (class, source package) shares a fold, so a head
    fit on the other folds is tested on packages it never saw for that class. A class's packages are
    spread over min(n_folds, packages) folds, largest first onto the emptiest; a class from one package
    (or with unknown packages) keeps its dataset folds, since nothing can be held out for it."""
    labels, packages = np.asarray(labels), np.asarray(packages)
    out = np.asarray(folds).copy()
    for label in sorted(set(labels.tolist())):
        mine = labels == label
        counts = Counter(packages[mine].tolist())
        if len(counts) < 2 or "" in counts:
            continue
        load = [0] * min(n_folds, len(counts))
        for package, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            fold = int(np.argmin(load))
            load[fold] += count
            out[mine & (packages == package)] = fold + 1
    return out


def leave_package_out_probe(table: SegmentTable, packages: Sequence[str], C: float = DEFAULT_C) -> ProbeResult | None:
    """P1-lpo: `linear_probe` over `package_folds` of the table's segments (``packages`` per segment);
    None when the data names no source packages. Read its `ProbeResult.pooled_f1`."""
    if not any(packages):
        return None
    folds = package_folds(table.labels, packages, table.folds)
    return linear_probe(dataclasses.replace(table, folds=folds), C=C)


def segment_posteriors(head, table: SegmentTable, segments: np.ndarray) -> np.ndarray:
    """Posteriors [len(segments), classes] with every segment's channel posteriors averaged."""
    position = np.full(table.num_segments, -1)
    position[segments] = np.arange(len(segments))
    rows = position[table.segment] >= 0
    proba = head.predict_proba(table.features[rows])
    sums = np.zeros((len(segments), proba.shape[1]))
    np.add.at(sums, position[table.segment[rows]], proba)
    counts = np.bincount(position[table.segment[rows]], minlength=len(segments))[:, None]
    return sums / counts


def check_same_segments(table: SegmentTable, other: SegmentTable, name: str) -> None:
    """ValueError unless ``other`` holds the same segments (paths, offsets, labels, folds) as ``table``."""
    same = (other.paths == table.paths and np.array_equal(other.offsets_s, table.offsets_s)
            and np.array_equal(other.labels, table.labels) and np.array_equal(other.folds, table.folds))
    if not same:
        raise ValueError(f"linear_probe: {name} must hold the same segments as the table")


def linear_probe(
    table: SegmentTable,
    C: float = DEFAULT_C,
    held_out: SegmentTable | None = None,
    extra_train: Sequence[SegmentTable] = (),
) -> ProbeResult:
    """Leave-one-fold-out probe over the folds present in ``table``; macro-F1 per held-out fold.

    ``held_out`` (same segments) supplies the features each held-out fold is scored on; every table of
    ``extra_train`` (same segments) adds its training-fold rows to the head's training rows."""
    from sklearn.metrics import confusion_matrix, f1_score

    test_table = table if held_out is None else held_out
    check_same_segments(table, test_table, "held_out")
    for extra in extra_train:
        check_same_segments(table, extra, "every extra_train table")
    class_names = table.class_names
    folds = sorted(set(table.folds.tolist()))
    if len(folds) < 2:
        raise ValueError(f"linear_probe needs at least 2 folds, the data has {folds}")
    predictions = np.empty(table.num_segments, dtype=object)
    fold_f1: dict[int, float] = {}
    for fold in folds:
        features, labels = [], []
        for source in (table, *extra_train):
            rows = source.folds[source.segment] != fold
            features.append(source.features[rows])
            labels.append(source.labels[source.segment[rows]])
        test_segments = np.flatnonzero(table.folds == fold)
        head = fit_head(np.concatenate(features), np.concatenate(labels), C=C)
        posteriors = segment_posteriors(head, test_table, test_segments)
        decided = np.asarray(head.class_names)[posteriors.argmax(axis=1)]
        predictions[test_segments] = decided
        fold_f1[fold] = float(f1_score(table.labels[test_segments], decided, average="macro"))
    truth = table.labels.astype(str)
    predicted = predictions.astype(str)
    per_class = f1_score(truth, predicted, labels=list(class_names), average=None, zero_division=0)
    confusion = confusion_matrix(truth, predicted, labels=list(class_names))
    return ProbeResult(
        class_names=class_names,
        fold_f1=fold_f1,
        per_class_f1={c: float(f) for c, f in zip(class_names, per_class)},
        confusion=confusion,
        predictions=predicted,
    )
