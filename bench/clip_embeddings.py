"""Embeddings of the shared labelled sets for the decision and custom-sound benches (bench/absence.py,
bench/custom_sounds.py): one row per 10 s clip, plus each clip's RMS level, cached in an .npz keyed by
the model file's sha256 so a second run only reads the cache.

Also the "continuous stream" windows: the clips of a set concatenated in a seeded order and cut 5 s
off the clip grid, so every such window holds the end of one clip and the start of the next (the
daemon never sees clips aligned to its windows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from encoder.audio import load_audio
from encoder.datasets import Record, read_dataset
from encoder.recording_embeddings import embed_windows
from encoder.evaluation import file_sha256
from encoder.model_file import load_model

REPO = Path(__file__).resolve().parents[1]

DATA = REPO.parent / "shared" / "data"
CACHE = REPO / "bench" / ".cache"


@dataclass(frozen=True)
class ClipSet:
    """One labelled set embedded with one model: records, clip embeddings [n, D] and RMS dBFS [n]."""

    name: str
    records: list[Record]
    embeddings: np.ndarray
    rms_dbfs: np.ndarray

    @property
    def labels(self) -> np.ndarray:
        """Class label per clip."""
        return np.asarray([r.label for r in self.records])

    @property
    def folds(self) -> np.ndarray:
        """Held-out fold (1-4) per clip."""
        return np.asarray([r.fold for r in self.records])


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS of a mono signal (-120 for digital silence), as the daemon computes it."""
    from service.analysis.result_builder import rms_dbfs as daemon_rms

    return daemon_rms(np.asarray(samples, dtype=np.float32)[None, :])


def _waveforms(records: list[Record], rate: int) -> list[np.ndarray]:
    return [load_audio(r.path, rate, mono=True)[0][0].numpy() for r in records]


def load_set(name: str, model_path: Path, data: Path = DATA, progress: bool = True) -> ClipSet:
    """Embeddings and levels of every clip of ``data/name`` under ``model_path`` (cached)."""
    records = read_dataset(data / name)
    sha = file_sha256(model_path)
    cache = CACHE / f"{name}-{sha[:16]}.npz"
    if cache.is_file():
        stored = np.load(cache)
        if list(stored["paths"]) == [str(r.path) for r in records]:
            return ClipSet(name, records, stored["embeddings"], stored["rms_dbfs"])
    bundle = load_model(model_path)
    rate = bundle.feature_config.sample_rate
    waves = _waveforms(records, rate)
    embeddings = _embed(bundle, waves, progress, f"embed {name}")
    levels = np.asarray([rms_dbfs(w) for w in waves])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, paths=np.asarray([str(r.path) for r in records]), embeddings=embeddings, rms_dbfs=levels)
    return ClipSet(name, records, embeddings, levels)


def _embed(bundle, waves: list[np.ndarray], progress: bool, desc: str) -> np.ndarray:
    from tqdm import tqdm

    rows = []
    for start in tqdm(range(0, len(waves), 16), desc=desc, disable=not progress or None):
        part = waves[start:start + 16]
        length = max(w.shape[0] for w in part)
        batch = np.stack([np.pad(w, (0, length - w.shape[0])) for w in part])
        rows.append(embed_windows(bundle, torch.from_numpy(batch.astype(np.float32))))
    return np.concatenate(rows)


def stream_windows(name: str, model_path: Path, order_seed: int = 0, data: Path = DATA,
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(embeddings [n, D], first clip index [n], second clip index [n])`` of the off-grid stream windows:
    clips in a seeded order, window i = second half of clip order[i] + first half of clip order[i+1]."""
    records = read_dataset(data / name)
    sha = file_sha256(model_path)
    cache = CACHE / f"{name}-stream{order_seed}-{sha[:16]}.npz"
    order = np.random.default_rng(order_seed).permutation(len(records))
    if cache.is_file():
        stored = np.load(cache)
        if np.array_equal(stored["order"], order):
            return stored["embeddings"], order[:-1], order[1:]
    bundle = load_model(model_path)
    rate = bundle.feature_config.sample_rate
    waves = _waveforms(records, rate)
    half = 5 * rate
    joined = [np.concatenate([waves[a][half:], waves[b][:half]]) for a, b in zip(order[:-1], order[1:])]
    embeddings = _embed(bundle, joined, progress, f"embed {name} stream")
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, order=order, embeddings=embeddings)
    return embeddings, order[:-1], order[1:]
