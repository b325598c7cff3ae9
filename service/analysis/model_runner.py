"""Running the model on a batch of mono windows: the embedding (through the one `encoder.embedder` path, whichever
backend runs it) and the activity head's label and class probabilities."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from encoder.embedder import EmbedTimings, Embedder
from encoder.head import ActivityHead


@dataclass
class Timings(EmbedTimings):
    """Seconds spent per analysis stage on one batch (for the stage latency histograms)."""

    head: float = 0.0
    health: float = 0.0


def column_maps_available(embedder: Embedder) -> bool:
    """Whether ``embedder`` hands out column maps (a version-1 ONNX graph does not)."""
    return hasattr(embedder, "embed_with_columns") and getattr(embedder, "has_columns", True)


def column_dim(embedder) -> int:
    """Values per column of the column maps ``embedder`` hands out; 0 when it hands out none."""
    return int(getattr(embedder, "column_dim", 0)) if column_maps_available(embedder) else 0


class ModelRunner:
    """An `Embedder` and an optional activity head; `run` gives embeddings, labels and probabilities."""

    def __init__(self, embedder: Embedder, head: ActivityHead | None) -> None:
        self.embedder = embedder
        self.head = head
        self.sample_rate = embedder.sample_rate

    def classify(self, embeddings: np.ndarray) -> tuple[list[str | None], list[dict[str, float]]]:
        """Activity label and class probabilities per embedding (None / {} without a head)."""
        if self.head is None or len(embeddings) == 0:
            return [None] * len(embeddings), [{} for _ in range(len(embeddings))]
        proba = self.head.predict_proba(embeddings)
        names = self.head.class_names
        labels = [names[int(i)] for i in proba.argmax(axis=1)]
        return labels, [{n: float(p) for n, p in zip(names, row)} for row in proba]

    def run(self, mono: Sequence[np.ndarray], timings: Timings, log_mels: list | None = None,
            columns: list | None = None) -> tuple[np.ndarray, list[str | None], list[dict[str, float]]]:
        """Embeddings ``[n, D]``, labels and probabilities of mono windows; stage times go to ``timings``.

        With ``log_mels`` (a list), it is filled with each window's log-Mel ``[n_mels, frames]`` as the
        embedder computed it, with ``columns`` with each window's column map ``[columns, column_dim]`` (None
        where the backend cannot hand them out, see `Embedder`)."""
        one_length = len({len(m) for m in mono}) <= 1
        features = log_mels is not None and one_length and hasattr(self.embedder, "embed_with_features")
        maps = columns is not None and column_maps_available(self.embedder)
        got_features = got_columns = None
        if features and maps and hasattr(self.embedder, "embed_with_features_and_columns"):
            embeddings, got_features, got_columns = self.embedder.embed_with_features_and_columns(mono, timings)
        elif features:
            embeddings, got_features = self.embedder.embed_with_features(mono, timings)
        elif maps:
            embeddings, got_columns = self.embedder.embed_with_columns(mono, timings)
        else:
            embeddings = self.embedder.embed(mono, timings)
        if log_mels is not None:
            log_mels[:] = list(got_features) if got_features is not None else [None] * len(mono)
        if columns is not None:
            columns[:] = list(got_columns) if got_columns is not None else [None] * len(mono)
        t0 = time.perf_counter()
        labels, probabilities = self.classify(embeddings)
        timings.head += time.perf_counter() - t0
        return embeddings, labels, probabilities
