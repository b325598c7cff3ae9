"""Helpers for the daemon tests: a small real model file (random encoder weights, a head fitted on real
clips) so pipeline tests do not depend on the trained bundled model, and audio writers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch

from encoder.audio import load_audio
from encoder.features import LogMelConfig
from encoder.head import fit_head
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, load_model, save_model

HEAD_CLASSES = ("water", "typing", "speech")


def small_model_file(path: Path, homesounds: Path, with_head: bool = True) -> Path:
    """Write a tiny roomtone model file (width-4 encoder, 32-d embedding) to ``path``."""
    torch.manual_seed(0)
    config = EncoderConfig(width=4, blocks=(1, 1), embedding_dim=32)
    bundle = ModelBundle(Encoder(config).eval(), LogMelConfig(), config, None, {"purpose": "tests"})
    if with_head:
        from encoder.embedding import embed_windows

        clips, labels = [], []
        for label in HEAD_CLASSES:
            for i in range(3):
                clips.append(load_audio(homesounds / "audio" / label / f"{label}_A1_00{i}.flac", mono=True)[0][0])
                labels.append(label)
        embeddings = embed_windows(bundle, torch.stack(clips))
        bundle = ModelBundle(bundle.encoder, bundle.feature_config, config, fit_head(embeddings, labels).to_dict(),
                             bundle.metadata)
    save_model(bundle, path)
    load_model(path)  # the file must load back
    return path


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """Write float samples ``[channels, n]`` (or [n]) as 16-bit PCM WAV."""
    samples = np.atleast_2d(samples)
    soundfile.write(str(path), np.clip(samples.T, -1, 1), rate, subtype="PCM_16")
    return path


def clipped(samples: np.ndarray, gain: float = 20.0) -> np.ndarray:
    """A hard-clipped (overdriven) copy of ``samples``."""
    return np.clip(samples * gain, -1.0, 1.0)


def hummed(samples: np.ndarray, rate: int = 16000, level: float = 0.3) -> np.ndarray:
    """``samples`` with strong 50 Hz mains hum (and harmonics) added."""
    t = np.arange(samples.shape[-1]) / rate
    hum = sum(level / k * np.sin(2 * np.pi * 50 * k * t) for k in (1, 2, 3))
    return (samples + hum).astype(np.float32)
