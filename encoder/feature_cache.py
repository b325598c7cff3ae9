"""On-disk cache of per-clip features, so that `evaluate` and `train-head` embed a dataset once.

A cache entry is one npz named by a key that hashes everything the features depend on: the method,
the encoder weights (not the model file, which changes when a head is stored), the feature and
encoder configs, the seed, and every input file's path, size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from encoder.atomic_files import replacing

ClipFeatures = tuple[np.ndarray, np.ndarray]


def encoder_weights_sha256(bundle) -> str:
    """Hash of the encoder's state dict (names, shapes and bytes), independent of head and metadata."""
    digest = hashlib.sha256()
    for name, tensor in sorted(bundle.encoder.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def method_cache_key(method: str, bundle, paths: Sequence[str | Path], seed: int = 0, variant: dict | None = None) -> str:
    """Cache key of one method's features of ``paths``; ``variant`` says how the audio was changed
    before the method saw it (e.g. the P2 degradation's config and seed), None for the files as they are."""
    files = []
    for path in paths:
        stat = os.stat(path)
        files.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    depends = {"method": method, "files": files, "features": bundle.feature_config.to_dict()}
    if method == "model":
        depends["weights"] = encoder_weights_sha256(bundle)
    if method == "random":
        depends.update(encoder=bundle.encoder_config.to_dict(), seed=seed)
    if variant is not None:
        depends["variant"] = variant
    blob = json.dumps(depends, sort_keys=True).encode()
    return f"{method}-{hashlib.sha256(blob).hexdigest()[:24]}"


def cached_features(cache_dir: str | Path, key: str, compute: Callable[[], list[ClipFeatures]]) -> list[ClipFeatures]:
    """Load the entry ``key`` from ``cache_dir``, or compute, store and return it."""
    path = Path(cache_dir) / f"{key}.npz"
    if path.is_file():
        data = np.load(path)
        windows = data["windows"]
        bounds = np.concatenate([[0], np.cumsum(windows)])
        return [(data["offsets"][a:b], data["features"][a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    result = compute()
    with replacing(path) as stream:
        np.savez(
            stream,
            windows=np.array([len(o) for o, _ in result]),
            offsets=np.concatenate([o for o, _ in result]),
            features=np.concatenate([f for _, f in result]),
        )
    return result
