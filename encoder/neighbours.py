"""Nearest segments in an embedding index: audio sorted by similarity, as the thesis does.

An index is an npz as `roomtone embed` (or `roomtone evaluate`, ``embeddings.npz``) writes it:
``paths`` [rows] str, ``offsets_s`` [rows], ``embeddings`` float32 [rows, D], optional ``labels``.
Distance is the cosine distance ``1 - cos`` (0 = same direction, 2 = opposite); the encoder's
embeddings are unit vectors, so this orders neighbours exactly as Euclidean distance does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class IndexFileError(ValueError):
    """An index file that cannot be used; the message names the file and the reason."""


@dataclass(frozen=True)
class EmbeddingIndex:
    """Unit-normalised embeddings [rows, D] with each row's file, offset and (possibly empty) label."""

    paths: np.ndarray
    offsets_s: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Neighbour:
    """One similar segment: file, start offset in seconds, label ('' if unknown), cosine distance."""

    path: str
    offset_s: float
    label: str
    distance: float


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def load_index(path: str | Path) -> EmbeddingIndex:
    """Read an index npz; IndexFileError names the file and the missing or inconsistent arrays."""
    path = Path(path)
    if not path.is_file():
        raise IndexFileError(f"{path}: index file not found")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"{path}: not a readable .npz index ({exc})") from None
    missing = [k for k in ("paths", "offsets_s", "embeddings") if k not in data.files]
    if missing:
        raise IndexFileError(f"{path}: index lacks array(s) {missing}; found {sorted(data.files)}")
    embeddings = np.asarray(data["embeddings"], dtype=np.float32)
    rows = embeddings.shape[0]
    if embeddings.ndim != 2 or rows == 0:
        raise IndexFileError(f"{path}: embeddings must be a non-empty [rows, D] array, got {embeddings.shape}")
    labels = data["labels"].astype(str) if "labels" in data.files else np.full(rows, "", dtype=object).astype(str)
    paths, offsets = data["paths"].astype(str), np.asarray(data["offsets_s"], dtype=np.float64)
    if len(paths) != rows or len(offsets) != rows or len(labels) != rows:
        raise IndexFileError(f"{path}: paths/offsets_s/labels do not have one entry per embedding row ({rows})")
    return EmbeddingIndex(paths, offsets, unit_rows(embeddings), labels)


def nearest(index: EmbeddingIndex, query: np.ndarray, k: int = 10) -> list[Neighbour]:
    """The ``k`` rows of ``index`` closest to the ``query`` embedding [D], closest first."""
    query = unit_rows(np.asarray(query).reshape(-1))
    if query.shape[0] != index.embeddings.shape[1]:
        raise ValueError(f"query embedding has {query.shape[0]} dimensions, the index has {index.embeddings.shape[1]}")
    distance = 1.0 - index.embeddings @ query
    order = np.argsort(distance, kind="stable")[: max(0, k)]
    return [Neighbour(str(index.paths[i]), float(index.offsets_s[i]), str(index.labels[i]), float(distance[i]))
            for i in order]
