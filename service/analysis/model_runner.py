"""Running the model on a batch of mono windows: the embedding (through the one `encoder.embedder` path, whichever
backend runs it) and the activity head's label and class probabilities."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from encoder.embedder import EmbedTimings, Embedder, length_groups
from encoder.head import ActivityHead
from encoder.patch_matching import BAND_POOL, pooled_frames


@dataclass
class Timings(EmbedTimings):
    """Seconds spent per analysis stage on one batch (for the stage latency histograms)."""

    head: float = 0.0
    health: float = 0.0


def column_maps_available(embedder: Embedder) -> bool:
    """Whether ``embedder`` hands out the log-Mel its embeddings came from, which custom sounds are matched on
    (both backends do; `encoder.patch_matching`)."""
    return hasattr(embedder, "embed_with_features")


def column_dim(embedder) -> int:
    """Bands per frame of the maps custom sounds match (`sound_maps`); 0 when ``embedder`` gives none."""
    if not column_maps_available(embedder):
        return 0
    config = getattr(embedder, "feature_config", None) or embedder.bundle.feature_config
    return config.n_mels // BAND_POOL


def sound_maps(embedder: Embedder, windows: Sequence[np.ndarray], timings: EmbedTimings | None = None
               ) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Embeddings ``[n, D]``, each window's log-Mel ``[n_mels, frames]`` and its map for custom sounds: the
    log-Mel pooled to patch frames ``[frames, bands]`` (`encoder.patch_matching.pooled_frames`); any lengths."""
    embeddings = np.zeros((len(windows), embedder.embedding_dim), np.float32)
    features: list = [None] * len(windows)
    for group in length_groups(windows):
        pooled, mels = embedder.embed_with_features([windows[i] for i in group], timings)
        embeddings[group] = pooled
        for i, mel in zip(group, mels):
            features[i] = mel
    return embeddings, features, [pooled_frames(f) for f in features]


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
        embedder computed it, with ``columns`` with each window's map for custom sounds ``[frames, column_dim]``
        (`sound_maps`; None where the backend cannot hand them out)."""
        one_length = len({len(m) for m in mono}) <= 1
        features = log_mels is not None and one_length and hasattr(self.embedder, "embed_with_features")
        maps = columns is not None and column_maps_available(self.embedder)
        got_features = got_columns = None
        if maps:
            embeddings, got_features, got_columns = sound_maps(self.embedder, mono, timings)
        elif features:
            embeddings, got_features = self.embedder.embed_with_features(mono, timings)
        else:
            embeddings = self.embedder.embed(mono, timings)
        if log_mels is not None:
            log_mels[:] = list(got_features) if got_features is not None and one_length else [None] * len(mono)
        if columns is not None:
            columns[:] = list(got_columns) if got_columns is not None else [None] * len(mono)
        t0 = time.perf_counter()
        labels, probabilities = self.classify(embeddings)
        timings.head += time.perf_counter() - t0
        return embeddings, labels, probabilities
