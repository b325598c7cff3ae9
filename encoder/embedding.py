"""Embeddings of audio with a loaded model: windows -> log-Mel (the bundle's own config) -> encoder.

Features come only from ``log_mel(., bundle.feature_config)``, so embedding always matches training.
One window is what `encoder.windows.window_spans` says (10 s by default; a shorter tail >= 1 s counts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from encoder.audio import load_audio
from encoder.features import log_mel
from encoder.inference import inference_encoder
from encoder.model_file import ModelBundle
from encoder.windows import WINDOW_SECONDS, window_spans


def _device(bundle: ModelBundle) -> torch.device:
    """Where the bundle's encoder weights live."""
    return next(bundle.encoder.parameters()).device


def embed_windows(bundle: ModelBundle, windows: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """Embeddings float32 ``[n, D]`` of ``[n, samples]`` mono windows at the bundle's sample rate."""
    windows = torch.as_tensor(windows)
    if windows.dim() != 2:
        raise ValueError(f"embed_windows expects [n, samples], got shape {tuple(windows.shape)}")
    if windows.shape[0] == 0:
        return np.zeros((0, bundle.embedding_dim), dtype=np.float32)
    device = _device(bundle)
    encoder = inference_encoder(bundle.encoder)  # batch norms folded on the CPU (encoder/inference.py)
    outputs = []
    with torch.inference_mode():
        for start in range(0, windows.shape[0], batch_size):
            batch = windows[start:start + batch_size].to(device)
            features = log_mel(batch, bundle.feature_config).unsqueeze(1)
            outputs.append(encoder(features).float().cpu())
    return torch.cat(outputs).numpy().astype(np.float32, copy=False)


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
        waveform = AF.resample(waveform, sample_rate, rate)
    channels = waveform.shape[0]
    spans = window_spans(waveform.shape[1], rate, window_s)
    offsets = np.array([span.offset_s(rate) for span in spans], dtype=np.float64)
    embeddings = np.zeros((len(spans), channels, bundle.embedding_dim), dtype=np.float32)
    # Windows of equal length are batched together (a short tail is its own batch).
    by_length: dict[int, list[int]] = {}
    for index, span in enumerate(spans):
        by_length.setdefault(span.end - span.start, []).append(index)
    for indices in by_length.values():
        rows = torch.stack([waveform[:, spans[i].start:spans[i].end] for i in indices])  # [w, ch, samples]
        flat = embed_windows(bundle, rows.reshape(-1, rows.shape[-1]), batch_size)
        embeddings[indices] = flat.reshape(len(indices), channels, -1)
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
