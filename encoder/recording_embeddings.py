"""Embeddings of recordings and files with a loaded model, for the offline tools (embed, evaluate,
neighbours). Every embedding goes through `encoder.embedder.TorchEmbedder` (the one embedding path the
daemon uses too), so features come only from ``log_mel(., bundle.feature_config)`` and always match training.
One window is what `encoder.windows.window_spans` says (10 s by default; a shorter tail >= 1 s counts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from encoder.audio import load_audio
from encoder.embedder import TorchEmbedder
from encoder.model_file import ModelBundle
from encoder.resampling import resample
from encoder.windows import WINDOW_SECONDS, WindowSpec, window_spans


def embed_windows(bundle: ModelBundle, windows: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Embeddings float32 ``[n, D]`` of ``[n, samples]`` mono windows at the bundle's sample rate."""
    windows = torch.as_tensor(windows)
    if windows.dim() != 2:
        raise ValueError(f"embed_windows expects [n, samples], got shape {tuple(windows.shape)}")
    return TorchEmbedder(bundle, batch_size).embed(windows)


def embed_audio(
    bundle: ModelBundle,
    waveform: torch.Tensor,
    sample_rate: int,
    window_s: float = WINDOW_SECONDS,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets_s [n], embeddings [n, channels, D])``: every channel of every window of a recording."""
    waveform = torch.as_tensor(waveform, dtype=torch.float32)
    if waveform.dim() == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.dim() != 2:
        raise ValueError(f"embed_audio expects [channels, samples], got shape {tuple(waveform.shape)}")
    rate = bundle.feature_config.sample_rate
    if sample_rate != rate:
        waveform = torch.from_numpy(resample(waveform.numpy(), sample_rate, rate))
    channels = waveform.shape[0]
    spans = window_spans(waveform.shape[1], rate, WindowSpec(window_s))
    offsets = np.array([span.offset_s(rate) for span in spans], dtype=np.float64)
    # every channel of every window is one embedder input; the embedder batches equal lengths together
    rows = [waveform[c, span.start:span.end] for span in spans for c in range(channels)]
    embeddings = TorchEmbedder(bundle, batch_size).embed(rows).reshape(len(spans), channels, bundle.embedding_dim)
    return offsets, embeddings


def embed_paths(
    bundle: ModelBundle,
    paths: Sequence[str | Path] | Iterable[str | Path],
    progress: bool = True,
    mono: bool = False,
    window_s: float = WINDOW_SECONDS,
    batch_size: int = 32,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`embed_audio` of every file (AudioError names a bad file); ``mono`` averages channels first."""
    from tqdm import tqdm

    paths = list(paths)
    results = []
    for path in tqdm(paths, desc="embed", unit="file", disable=not progress or None):
        waveform, rate = load_audio(path, bundle.feature_config.sample_rate, mono=mono)
        results.append(embed_audio(bundle, waveform, rate, window_s, batch_size))
    return results
