"""A small real ServiceBackend for the gRPC tests: uploads are decoded by encoder.audio, cut by
window_spans, embedded by encoder.embedding with a tiny random-weight encoder (encoder.model, a real
ModelBundle) and judged by the real signal checks. Labels come from the nearest prototype clip, so
the expected label of a prototype's own audio is known exactly. No model file or training needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from encoder.audio import AudioError, decode_audio
from encoder.embedding import embed_windows
from encoder.features import LogMelConfig
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle
from encoder.signal_checks import assess_window
from encoder.windows import window_spans
from service.backend import BackendUnavailable
from service.records import MicStatus, WindowResult

EMBEDDING_DIM = 64


def tiny_bundle(seed: int = 0) -> ModelBundle:
    """A real ModelBundle around a small random-weight encoder (deterministic for a seed)."""
    torch.manual_seed(seed)
    config = EncoderConfig(width=4, blocks=(1, 1), embedding_dim=EMBEDDING_DIM)
    return ModelBundle(encoder=Encoder(config).eval(), feature_config=LogMelConfig(), encoder_config=config)


class TinyModelBackend:
    """ServiceBackend over a tiny encoder; ``prototypes`` maps a label to a clip of that class."""

    def __init__(self, prototypes: dict[str, Path], mics: list[MicStatus]) -> None:
        self.bundle = tiny_bundle()
        self.rate = self.bundle.feature_config.sample_rate
        self.labels = sorted(prototypes)
        self.prototypes = np.stack([self._windows(prototypes[label].read_bytes())[1].mean(axis=0) for label in self.labels])
        self.mics = mics
        self.ready = True
        self.failure: Exception | None = None  # raised by every call when set (to test error mapping)

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure
        if not self.ready:
            raise BackendUnavailable("model not loaded yet")

    def _windows(self, data: bytes) -> tuple[list[np.ndarray], np.ndarray, list[tuple[int, int]]]:
        """(window samples [channels, n], embeddings [n, D], spans) of uploaded audio."""
        waveform, _ = decode_audio(data, self.rate, name="upload")
        spans = window_spans(waveform.shape[1], self.rate)
        if not spans:
            raise AudioError(f"upload: {waveform.shape[1] / self.rate:.2f} s is shorter than one analysis window (1 s minimum)")
        chunks = [waveform[:, s.start:s.end] for s in spans]
        embeddings = np.concatenate([embed_windows(self.bundle, chunk.mean(dim=0, keepdim=True)) for chunk in chunks])
        return [c.numpy() for c in chunks], embeddings, [(s.start, s.end) for s in spans]

    def microphones(self) -> list[MicStatus]:
        self._check()
        return list(self.mics)

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        self._check()
        return self._windows(data)[1]

    def analyze_audio(self, data: bytes) -> list[WindowResult]:
        self._check()
        chunks, embeddings, spans = self._windows(data)
        results = []
        for (start, end), embedding, chunk in zip(spans, embeddings, chunks):
            logits = 50.0 * (self.prototypes @ embedding)
            probabilities = np.exp(logits - logits.max())
            probabilities /= probabilities.sum()
            health = assess_window(chunk, self.rate)
            mono = chunk.mean(axis=0)
            rms = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
            results.append(WindowResult(
                mic_id="upload", start_unix_ms=start * 1000 // self.rate, end_unix_ms=end * 1000 // self.rate,
                label=self.labels[int(np.argmax(probabilities))],
                probabilities={label: float(p) for label, p in zip(self.labels, probabilities)},
                health_state=health.state, health_reasons=tuple(health.reasons), health_scores=dict(health.scores),
                rms_dbfs=20 * np.log10(rms) if rms > 0 else float("-inf"), embedding=embedding,
            ))
        return results
