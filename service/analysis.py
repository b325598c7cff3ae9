"""The analysis stage: a batch of windows (any microphones) -> inference (embedding + activity head) ->
window health (signal checks + drift) -> `WindowResult`s, and the `StateChange`s between a microphone's
consecutive windows. Uploaded audio (Classify, FindSimilar by audio) runs through the very same steps.

    windows ─► inference.py ─► window_health.py ─► window_record.py ─► mic_state.py
               (embedder+head)  (checks + drift)     (WindowResult)      (StateChanges)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from encoder.audio import AudioError
from encoder.embedder import Embedder, TorchEmbedder
from encoder.head import ActivityHead
from encoder.signal_checks import HealthConfig
from encoder.windows import WINDOW_SECONDS
from service.drift_baselines import trackers_from_saved
from service.inference import Inference, Timings
from service.activity import check_head_classes
from service.config import ActivityConfig
from service.mic_state import MicState, sound_events, state_changes
from service.sound_library import SoundLibrary
from service.records import StateChange, WindowResult
from service.uploads import upload_windows
from service.web.mel_strip import mel_strip
from service.window_health import new_drift_tracker, unusable_window_health, window_health
from service.window_record import build_window_result
from service.windowing import Window

if TYPE_CHECKING:  # pragma: no cover
    from encoder.model_file import ModelBundle
    from service.serving_model import ServingModel

__all__ = ["Analysed", "Analyzer", "Timings"]


@dataclass(frozen=True)
class Analysed:
    """One analysed window: the record to store plus what metrics need beyond it."""

    result: WindowResult
    failing: dict[str, bool]  # check name -> failing (health flags, drift included)
    realtime: bool
    log_mel_strip: np.ndarray | None = field(default=None, compare=False)  # uint8 [bins, columns], web page
    samples: np.ndarray | None = field(default=None, compare=False)  # the window's audio, when clips are kept


class Analyzer:
    """Turns batches of windows into WindowResults and StateChanges; thread-safe for concurrent use.

    ``bundle`` is a `ServingModel` (the daemon: either backend) or a `ModelBundle`; ``embedder`` defaults
    to the serving model's own, or to a `TorchEmbedder` over a bundle; ``window_s`` and ``hop_s`` are the
    pipeline's window length (uploads are cut with it) and hop (drift periods are durations of it)."""

    def __init__(self, bundle: "ServingModel | ModelBundle", health: HealthConfig = HealthConfig(), *,
                 window_s: float = WINDOW_SECONDS, hop_s: float | None = None, embedder: Embedder | None = None,
                 activity: ActivityConfig = ActivityConfig(), sounds: SoundLibrary | None = None) -> None:
        check_head_classes(bundle.class_names)
        self.bundle = bundle
        self.activity = activity
        self.sounds = sounds  # custom sounds scored on every window (None: off)
        self.sample_rate = bundle.feature_config.sample_rate
        self.window_s = window_s
        self.hop_s = window_s if hop_s is None else hop_s
        self.health_config = health
        embedder = embedder or getattr(bundle, "embedder", None) or TorchEmbedder(bundle)
        self.inference = Inference(embedder,
                                   ActivityHead.from_dict(bundle.head) if bundle.head else None)
        self._mics: dict[str, MicState] = {}
        self._lock = threading.Lock()  # guards _mics (the pipeline thread and gRPC threads share this)
        self.keep_samples = False  # live windows carry their audio on (Analysed.samples) for clip retention

    def _analyse(self, windows: list[Window], mics: dict[str, MicState],
                 timings: Timings, live: bool = False) -> tuple[list[Analysed], list[StateChange]]:
        """The one path from windows to records: ``mics`` holds each microphone's state (changed here).
        ``live`` windows come every ``hop_s`` and also carry their log-Mel strip for the web page (and their
        audio with keep_samples); uploads are consecutive windows (hop = window length)."""
        hop_s = self.hop_s if live else self.window_s
        for w in windows:
            if w.sample_rate != self.sample_rate:
                raise ValueError(f"window of mic {w.mic_id} is at {w.sample_rate} Hz, the model needs {self.sample_rate}")
        log_mels: list | None = [] if live else None
        embeddings, _, probabilities = self.inference.run([w.mono() for w in windows], timings, log_mels)
        floor_db = self.bundle.feature_config.floor_db
        strips = [None if m is None else mel_strip(m, floor_db) for m in log_mels] if live else [None] * len(windows)
        # A window whose spectrogram overflowed fails alone: faulty, no embedding, no label, no drift update.
        usable = np.isfinite(embeddings).all(axis=1)
        t0 = time.perf_counter()
        matches = (self.sounds.detect(np.where(usable[:, None], embeddings, 0.0)) if self.sounds is not None
                   else [()] * len(windows))
        timings.head += time.perf_counter() - t0  # custom sounds run beside the head, on its embeddings
        analysed: list[Analysed] = []
        changes: list[StateChange] = []
        for w, embedding, proba, strip, ok, found in zip(windows, embeddings, probabilities, strips, usable, matches):
            t0 = time.perf_counter()
            mic = mics.get(w.mic_id)
            if mic is None:
                mic = mics[w.mic_id] = MicState(drift=new_drift_tracker(hop_s, self.window_s))
            if ok:
                health = window_health(w.samples, self.sample_rate, embedding, mic.drift, self.health_config)
            else:
                health, embedding, proba, strip = unusable_window_health(w.samples), None, {}, None
            timings.health += time.perf_counter() - t0
            result = build_window_result(w.mic_id, round(w.start_unix * 1000), round(w.end_unix * 1000), w.samples,
                                         embedding, proba, health, self.activity, found)
            changes.extend(state_changes(mic, result))
            changes.extend(sound_events(result))
            analysed.append(Analysed(result, {k: bool(v) for k, v in health.flags.items()}, w.realtime, strip,
                                     w.samples if live and self.keep_samples else None))
        return analysed, changes

    def dry_run(self, window_s: float) -> float:
        """Analyse one window of ``window_s`` seconds of quiet noise end to end (features, encoder, head,
        health), touching no microphone's state; returns the seconds it took. ValueError saying what failed
        when the model cannot produce a usable record for such a window."""
        samples = np.random.default_rng(0).normal(0.0, 0.01, (1, int(round(window_s * self.sample_rate))))
        started = time.perf_counter()
        try:
            (analysed,), _ = self._analyse([Window("dry-run", samples.astype(np.float32), self.sample_rate, 0.0,
                                                   window_s, False)], {}, Timings())
        except Exception as exc:  # noqa: BLE001 - whatever breaks, the daemon must not start with it
            raise ValueError(f"a dry run of one {window_s:g} s window failed ({type(exc).__name__}: {exc})") from None
        result = analysed.result
        if result.embedding is None or result.embedding.shape != (self.inference.embedder.embedding_dim,):
            raise ValueError(f"a dry run of one {window_s:g} s window gave no usable embedding "
                             f"({'; '.join(result.health_reasons) or 'wrong shape'})")
        return time.perf_counter() - started

    # --- live windows -------------------------------------------------------------------------------

    def analyse(self, windows: list[Window], timings: Timings | None = None) -> tuple[list[Analysed], list[StateChange]]:
        """Results for a batch of live windows (any microphones, oldest first) and the state changes they show."""
        if not windows:
            return [], []
        with self._lock:
            return self._analyse(windows, self._mics, timings if timings is not None else Timings(), live=True)

    def drift_state(self) -> dict[str, dict]:
        """Every microphone's drift baseline (DriftTracker.to_dict), to persist across restarts."""
        with self._lock:
            return {mic_id: state.drift.to_dict() for mic_id, state in self._mics.items() if state.drift is not None}

    def restore_drift(self, saved: dict[str, dict]) -> None:
        """Load drift baselines saved by `drift_state`; unusable entries are skipped with a log line."""
        trackers = trackers_from_saved(saved, self.hop_s, self.window_s)
        with self._lock:
            for mic_id, tracker in trackers.items():
                self._mics[mic_id] = MicState(drift=tracker)

    # --- uploads (gRPC Classify / FindSimilar by audio) ---------------------------------------------

    def analyze_audio(self, data: bytes) -> list[WindowResult]:
        """Per-window results for uploaded audio bytes (mic_id "upload", times in ms from its start): cut
        with the pipeline's window length and judged like a new microphone's windows, drift included."""
        analysed, _ = self._analyse(upload_windows(data, self.sample_rate, self.window_s), {}, Timings())
        return [a.result for a in analysed]

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        """Embeddings ``[n, D]`` of every window of uploaded audio bytes (channels averaged)."""
        windows = upload_windows(data, self.sample_rate, self.window_s)
        embeddings = self.inference.embedder.embed([w.mono() for w in windows])
        finite = embeddings[np.isfinite(embeddings).all(axis=1)]
        if len(finite) == 0:
            raise AudioError(f"uploaded audio: {unusable_window_health(windows[0].samples).reasons[0]}")
        return finite
