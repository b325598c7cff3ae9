"""What roomtone decides about windows: log-Mel (the model file's config) -> embedding (batched across
microphones, on the model's device) -> activity head -> health checks + drift -> `WindowResult`, and the
`StateChange`s between a microphone's consecutive windows. Also the gRPC backend (Classify, FindSimilar
by audio, ListMicrophones) on the same code path, so uploaded audio is judged exactly like live audio.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from encoder.audio import AudioError, decode_audio
from encoder.features import log_mel
from encoder.head import ActivityHead
from encoder.inference import inference_encoder
from encoder.model_file import ModelBundle
from encoder.signal_checks import HealthConfig
from encoder.windows import window_spans
from service.records import MicStatus, StateChange, WindowResult
from service.windowing import Window

log = logging.getLogger("roomtone.analysis")

#: Level reported for digital silence (an all-zero window).
SILENCE_DBFS = -120.0


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS of the mono mix of ``samples [channels, n]`` (full-scale sine = -3 dBFS)."""
    mono = np.asarray(samples, dtype=np.float64).mean(axis=0)
    finite = mono[np.isfinite(mono)]
    if finite.size == 0:
        return SILENCE_DBFS
    rms = float(np.sqrt(np.mean(finite * finite)))
    return max(SILENCE_DBFS, 20.0 * np.log10(rms)) if rms > 0 else SILENCE_DBFS


def resolve_device(name: str) -> str:
    """The torch device for ``pipeline.device``: ``auto`` is cuda when present, else cpu."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"pipeline.device = {name!r} but CUDA is not available on this machine")
    return name


@dataclass
class Timings:
    """Seconds spent per stage on one batch (for the stage latency histograms)."""

    features: float = 0.0
    embed: float = 0.0
    head: float = 0.0
    health: float = 0.0


@dataclass(frozen=True)
class Analysed:
    """One analysed window: the record to store plus what metrics need beyond it."""

    result: WindowResult
    failing: dict[str, bool]  # check name -> failing (health flags, drift included)
    realtime: bool


@dataclass
class MicState:
    """Per-microphone memory of the analyser: drift baseline and the last label / health state."""

    drift: object | None  # encoder.drift.DriftTracker
    label: str | None = None
    health: str | None = None
    seen: bool = False


class Analyzer:
    """Turns batches of windows into WindowResults and StateChanges; thread-safe for concurrent use."""

    def __init__(self, bundle: ModelBundle, health: HealthConfig = HealthConfig()) -> None:
        self.bundle = bundle
        self.sample_rate = bundle.feature_config.sample_rate
        self.head = ActivityHead.from_dict(bundle.head) if bundle.head else None
        self.health_config = health
        self.device = next(bundle.encoder.parameters()).device
        self._mics: dict[str, MicState] = {}
        self._lock = threading.Lock()  # guards _mics (the pipeline thread and gRPC threads share this)

    # --- the embedding path, shared by live windows and uploads --------------------------------------

    def embed(self, mono: list[np.ndarray], timings: Timings | None = None) -> np.ndarray:
        """Embeddings ``[n, D]`` of mono windows at the model's rate; equal lengths are batched together."""
        timings = timings or Timings()
        out = np.zeros((len(mono), self.bundle.embedding_dim), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, samples in enumerate(mono):
            by_length.setdefault(samples.shape[-1], []).append(i)
        encoder = inference_encoder(self.bundle.encoder)  # batch norms folded on the CPU
        with torch.inference_mode():
            for indices in by_length.values():
                batch = torch.from_numpy(np.stack([mono[i] for i in indices])).to(self.device)
                t0 = time.perf_counter()
                features = log_mel(batch, self.bundle.feature_config).unsqueeze(1)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                t1 = time.perf_counter()
                out[indices] = encoder(features).float().cpu().numpy()
                t2 = time.perf_counter()
                timings.features += t1 - t0
                timings.embed += t2 - t1
        return out

    def classify(self, embeddings: np.ndarray) -> tuple[list[str | None], list[dict[str, float]]]:
        """Activity label and class probabilities per embedding (None / {} without a head)."""
        if self.head is None or len(embeddings) == 0:
            return [None] * len(embeddings), [{} for _ in range(len(embeddings))]
        proba = self.head.predict_proba(embeddings)
        names = self.head.class_names
        labels = [names[int(i)] for i in proba.argmax(axis=1)]
        return labels, [{n: float(p) for n, p in zip(names, row)} for row in proba]

    def _health(self, samples: np.ndarray, embedding: np.ndarray, drift) -> object:
        from encoder.signal_checks import assess_window

        # drift is the last check; only windows that pass every signal check teach the baseline
        learn_and_score = None if drift is None else (lambda learn: drift.update(embedding, learn=learn))
        return assess_window(samples, self.sample_rate, self.health_config, drift=learn_and_score)

    # --- live windows -------------------------------------------------------------------------------

    def _mic(self, mic_id: str) -> MicState:
        state = self._mics.get(mic_id)
        if state is None:
            state = self._mics[mic_id] = MicState(drift=new_drift_tracker())
        return state

    def analyse(self, windows: list[Window], timings: Timings | None = None) -> tuple[list[Analysed], list[StateChange]]:
        """Results for a batch of windows (any microphones, oldest first) and the state changes they show."""
        timings = timings or Timings()
        if not windows:
            return [], []
        for w in windows:
            if w.sample_rate != self.sample_rate:
                raise ValueError(f"window of mic {w.mic_id} is at {w.sample_rate} Hz, the model needs {self.sample_rate}")
        mono = [np.nan_to_num(w.samples.mean(axis=0), nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
                for w in windows]
        embeddings = self.embed(mono, timings)
        t0 = time.perf_counter()
        labels, probabilities = self.classify(embeddings)
        timings.head += time.perf_counter() - t0
        analysed: list[Analysed] = []
        changes: list[StateChange] = []
        with self._lock:
            for w, emb, label, proba in zip(windows, embeddings, labels, probabilities):
                t0 = time.perf_counter()
                mic = self._mic(w.mic_id)
                health = self._health(w.samples, emb, mic.drift)
                timings.health += time.perf_counter() - t0
                result = WindowResult(
                    mic_id=w.mic_id,
                    start_unix_ms=int(round(w.start_unix * 1000)),
                    end_unix_ms=int(round(w.end_unix * 1000)),
                    label=label,
                    probabilities=proba,
                    health_state=health.state,
                    health_reasons=tuple(health.reasons),
                    health_scores={k: float(v) for k, v in health.scores.items()},
                    rms_dbfs=rms_dbfs(w.samples),
                    embedding=emb,
                )
                changes.extend(self._changes(mic, result))
                analysed.append(Analysed(result, {k: bool(v) for k, v in health.flags.items()}, w.realtime))
        return analysed, changes

    @staticmethod
    def _changes(mic: MicState, result: WindowResult) -> list[StateChange]:
        """activity_changed / health_changed between the mic's previous window and this one."""
        changes = []
        first = not mic.seen
        if result.label is not None and (first or result.label != mic.label):
            changes.append(StateChange("activity_changed", result.mic_id, result.start_unix_ms,
                                       None if first else mic.label, result.label))
        if first or result.health_state != mic.health:
            changes.append(StateChange("health_changed", result.mic_id, result.start_unix_ms,
                                       None if first else mic.health, result.health_state,
                                       reasons=result.health_reasons))
        mic.seen, mic.label, mic.health = True, result.label, result.health_state
        return changes

    def drift_state(self) -> dict[str, dict]:
        """Every microphone's drift baseline (DriftTracker.to_dict), to persist across restarts."""
        with self._lock:
            return {mic_id: state.drift.to_dict() for mic_id, state in self._mics.items() if state.drift is not None}

    def restore_drift(self, saved: dict[str, dict]) -> None:
        """Load drift baselines saved by `drift_state`; unusable entries are skipped with a log line."""
        from encoder.drift import DriftTracker

        with self._lock:
            for mic_id, data in saved.items():
                try:
                    self._mics[mic_id] = MicState(drift=DriftTracker.from_dict(data))
                except (TypeError, ValueError, KeyError) as exc:
                    log.warning("ignoring saved drift baseline", extra={"mic": mic_id, "error": str(exc)})

    # --- uploads (gRPC Classify / FindSimilar by audio) ---------------------------------------------

    def _decode(self, data: bytes) -> tuple[np.ndarray, list]:
        waveform, _ = decode_audio(data, self.sample_rate, name="uploaded audio")
        samples = waveform.numpy()
        spans = window_spans(samples.shape[1], self.sample_rate)
        if not spans:
            raise AudioError(f"uploaded audio: {samples.shape[1] / self.sample_rate:.2f} s is shorter than "
                             "the 1 s minimum window")
        return samples, spans

    def analyze_audio(self, data: bytes) -> list[WindowResult]:
        """Per-window results for uploaded audio bytes (mic_id "upload", times relative to its start)."""
        samples, spans = self._decode(data)
        windows = [samples[:, s.start:s.end] for s in spans]
        embeddings = self.embed([w.mean(axis=0).astype(np.float32) for w in windows])
        labels, probabilities = self.classify(embeddings)
        from encoder.signal_checks import assess_window

        results = []
        for span, w, emb, label, proba in zip(spans, windows, embeddings, labels, probabilities):
            health = assess_window(w, self.sample_rate, self.health_config)
            results.append(WindowResult(
                mic_id="upload",
                start_unix_ms=int(round(span.start * 1000 / self.sample_rate)),
                end_unix_ms=int(round(span.end * 1000 / self.sample_rate)),
                label=label, probabilities=proba, health_state=health.state,
                health_reasons=tuple(health.reasons),
                health_scores={k: float(v) for k, v in health.scores.items()},
                rms_dbfs=rms_dbfs(w), embedding=emb,
            ))
        return results

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        """Embeddings ``[n, D]`` of every window of uploaded audio bytes (channels averaged)."""
        samples, spans = self._decode(data)
        return self.embed([samples[:, s.start:s.end].mean(axis=0).astype(np.float32) for s in spans])


def new_drift_tracker():
    """A fresh DriftTracker, or None when encoder.drift is not installed (health then has no drift check)."""
    try:
        from encoder.drift import DriftTracker
    except ImportError:
        return None
    return DriftTracker()


@dataclass
class DaemonBackend:
    """The gRPC ServiceBackend of a running daemon: uploads go to the analyser, mic status to ``status``."""

    analyzer: Analyzer
    status: Callable[[], list[MicStatus]] = field(default=lambda: [])

    def microphones(self) -> list[MicStatus]:
        """Every configured microphone with its capture state and last health."""
        return self.status()

    def analyze_audio(self, data: bytes) -> list[WindowResult]:
        """See `Analyzer.analyze_audio`."""
        return self.analyzer.analyze_audio(data)

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        """See `Analyzer.embed_audio_bytes`."""
        return self.analyzer.embed_audio_bytes(data)
