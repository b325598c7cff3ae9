"""Inference on a batch of mono windows: the embedding (through the one `encoder.embedder` path, whichever
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


class Inference:
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

    def run(self, mono: Sequence[np.ndarray], timings: Timings) -> tuple[np.ndarray, list[str | None], list[dict[str, float]]]:
        """Embeddings ``[n, D]``, labels and probabilities of mono windows; stage times go to ``timings``."""
        embeddings = self.embedder.embed(mono, timings)
        t0 = time.perf_counter()
        labels, probabilities = self.classify(embeddings)
        timings.head += time.perf_counter() - t0
        return embeddings, labels, probabilities
