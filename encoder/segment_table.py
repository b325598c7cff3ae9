"""Per-segment features of a labelled dataset: what the probe, the clusters, the map and the audit read.

A segment is one analysis window (`window_spans`, 10 s) of one clip; a multi-channel clip gives one
feature row per channel of each segment, tied together by ``segment``. Labels, folds and groups are
per segment and come from the dataset's records, never from a random split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from encoder.datasets import Record


@dataclass(frozen=True)
class SegmentTable:
    """Rows [rows, D] with their segment index; per-segment path, offset, label, fold and group."""

    features: np.ndarray
    segment: np.ndarray
    paths: tuple[str, ...]
    offsets_s: np.ndarray
    labels: np.ndarray
    folds: np.ndarray
    groups: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.paths)
        if self.features.ndim != 2 or self.features.shape[0] != self.segment.shape[0]:
            raise ValueError(f"SegmentTable: features {self.features.shape} and segment {self.segment.shape} disagree")
        for name in ("offsets_s", "labels", "folds"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"SegmentTable.{name} has {getattr(self, name).shape[0]} entries, expected {n}")
        if n and (self.segment.min() < 0 or self.segment.max() >= n):
            raise ValueError("SegmentTable.segment indexes past the segments")

    @property
    def num_segments(self) -> int:
        """Number of segments (decisions), not rows."""
        return len(self.paths)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Sorted distinct labels."""
        return tuple(sorted(set(self.labels.tolist())))

    def segment_means(self, normalise: bool = True) -> np.ndarray:
        """One vector per segment [segments, D]: the mean over its channel rows, optionally L2-normalised."""
        sums = np.zeros((self.num_segments, self.features.shape[1]), dtype=np.float64)
        np.add.at(sums, self.segment, self.features)
        counts = np.bincount(self.segment, minlength=self.num_segments)[:, None]
        means = sums / np.maximum(counts, 1)
        if normalise:
            means = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        return means.astype(np.float32)

    def select(self, keep: np.ndarray) -> "SegmentTable":
        """The table restricted to segments where the boolean mask ``keep`` [segments] is true."""
        keep = np.asarray(keep, dtype=bool)
        new_index = np.cumsum(keep) - 1
        rows = keep[self.segment]
        return SegmentTable(
            features=self.features[rows],
            segment=new_index[self.segment[rows]],
            paths=tuple(p for p, k in zip(self.paths, keep) if k),
            offsets_s=self.offsets_s[keep],
            labels=self.labels[keep],
            folds=self.folds[keep],
            groups=tuple(g for g, k in zip(self.groups, keep) if k),
        )


def segment_table(records: Sequence[Record], per_clip: Sequence[tuple[np.ndarray, np.ndarray]]) -> SegmentTable:
    """Build a table from records and, per record, (offsets_s [n], features [n, channels, D]) as `embed_paths` returns."""
    if len(records) != len(per_clip):
        raise ValueError(f"segment_table: {len(records)} records but {len(per_clip)} feature sets")
    rows, segment, paths, offsets, labels, folds, groups = [], [], [], [], [], [], []
    for record, (clip_offsets, clip_features) in zip(records, per_clip):
        clip_features = np.asarray(clip_features)
        if clip_features.ndim != 3:
            raise ValueError(f"{record.path}: expected features [windows, channels, D], got {clip_features.shape}")
        for offset, channels in zip(np.asarray(clip_offsets), clip_features):
            index = len(paths)
            rows.append(channels)
            segment.extend([index] * channels.shape[0])
            paths.append(str(record.path))
            offsets.append(float(offset))
            labels.append(record.label)
            folds.append(record.fold)
            groups.append(record.group)
    if not rows:
        raise ValueError("segment_table: no segments (every clip shorter than the minimum window?)")
    return SegmentTable(
        features=np.concatenate(rows).astype(np.float32),
        segment=np.asarray(segment, dtype=np.int64),
        paths=tuple(paths),
        offsets_s=np.asarray(offsets, dtype=np.float64),
        labels=np.asarray(labels),
        folds=np.asarray(folds, dtype=np.int64),
        groups=tuple(groups),
    )


def save_index(table: SegmentTable, path: str | Path, names: Sequence[str] | None = None) -> None:
    """Write the segment means as an embedding index npz (`paths`, `offsets_s`, `embeddings`, `labels`, `folds`);
    ``names`` replaces the stored paths (e.g. paths relative to the dataset argument)."""
    np.savez_compressed(
        path,
        paths=np.asarray(names if names is not None else table.paths),
        offsets_s=table.offsets_s,
        embeddings=table.segment_means(normalise=True),
        labels=table.labels,
        folds=table.folds,
    )
