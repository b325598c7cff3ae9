"""A small real ServiceBackend for the gRPC tests: decodes uploads with encoder.audio, cuts them with
window_spans and embeds each window as its centred, L2-normalised mean log-Mel spectrum (from the one
log_mel definition). Labels come from the nearest prototype clip. No model file needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from encoder.audio import AudioError, decode_audio
from encoder.features import LogMelConfig, log_mel
from encoder.windows import window_spans
from service.backend import BackendUnavailable
from service.records import MicStatus, WindowResult

CONFIG = LogMelConfig()


def mean_log_mel_embeddings(data: bytes | Path) -> tuple[list[tuple[int, int]], np.ndarray, list[np.ndarray]]:
    """(window spans in samples, embeddings [n, n_mels], window samples) of an audio file or bytes."""
    waveform, rate = decode_audio(data, CONFIG.sample_rate, mono=True, name="upload")
    spans = window_spans(waveform.shape[1], rate)
    if not spans:
        raise AudioError(f"upload: {waveform.shape[1] / rate:.2f} s is shorter than one analysis window (1 s minimum)")
    vectors, chunks = [], []
    for span in spans:
        chunk = waveform[:, span.start:span.end]
        spectrum = log_mel(chunk, CONFIG).numpy()[0].mean(axis=1)
        spectrum = spectrum - spectrum.mean()
        vectors.append(spectrum / max(float(np.linalg.norm(spectrum)), 1e-9))
        chunks.append(chunk.numpy())
    return [(s.start, s.end) for s in spans], np.stack(vectors).astype(np.float32), chunks


class LogMelBackend:
    """ServiceBackend over mean log-Mel spectra; ``prototypes`` maps a label to a clip of that class."""

    def __init__(self, prototypes: dict[str, Path], mics: list[MicStatus]) -> None:
        self.labels = sorted(prototypes)
        self.prototypes = np.stack([mean_log_mel_embeddings(prototypes[label])[1].mean(axis=0) for label in self.labels])
        self.mics = mics
        self.ready = True
        self.failure: Exception | None = None  # raised by every call when set (to test error mapping)

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure
        if not self.ready:
            raise BackendUnavailable("model not loaded yet")

    def microphones(self) -> list[MicStatus]:
        self._check()
        return list(self.mics)

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        self._check()
        return mean_log_mel_embeddings(data)[1]

    def analyze_audio(self, data: bytes) -> list[WindowResult]:
        self._check()
        spans, embeddings, chunks = mean_log_mel_embeddings(data)
        results = []
        for (start, end), embedding, chunk in zip(spans, embeddings, chunks):
            logits = 20.0 * (self.prototypes @ embedding)
            probabilities = np.exp(logits - logits.max())
            probabilities /= probabilities.sum()
            rms = float(np.sqrt(np.mean(np.square(chunk, dtype=np.float64))))
            silent = rms == 0.0
            results.append(WindowResult(
                mic_id="upload", start_unix_ms=start * 1000 // CONFIG.sample_rate, end_unix_ms=end * 1000 // CONFIG.sample_rate,
                label=self.labels[int(np.argmax(probabilities))],
                probabilities={label: float(p) for label, p in zip(self.labels, probabilities)},
                health_state="faulty" if silent else "ok", health_reasons=("dead: digital silence",) if silent else (),
                health_scores={"rms": rms}, rms_dbfs=20 * np.log10(rms) if rms > 0 else float("-inf"), embedding=embedding,
            ))
        return results
