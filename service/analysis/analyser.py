"""The analysis stage: a batch of windows (any microphones) -> inference (embedding + activity head) ->
window health (signal checks + drift) -> `WindowResult`s, and the `StateChange`s between a microphone's
consecutive windows. Uploaded audio (Classify, FindSimilar by audio) runs through the very same steps.

    windows ─► model_runner.py ─► window_health.py ─► result_builder.py ─► mic_state.py
               (embedder+head)    (checks + drift)    (WindowResult)      (StateChanges)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from encoder.audio import AudioError
from encoder.few_shot import column_levels
from encoder.embedder import Embedder, TorchEmbedder
from encoder.head import ActivityHead
from encoder.signal_checks import HealthConfig
from encoder.windows import WindowSpec
from service.analysis.drift_baselines import trackers_from_saved
from service.analysis.model_runner import ModelRunner, Timings
from service.analysis.activity import check_head_classes
from service.analysis.level_floor import LevelHistory, counts_for_floor, history_capacity, quiet_below_dbfs
from service.config import ActivityConfig
from service.analysis.mic_state import MicState, sound_events, state_changes
from service.analysis.sound_library import SoundLibrary
from service.records import StateChange, WindowMap, WindowResult
from service.analysis.uploads import upload_windows
from service.analysis.window_health import new_drift_tracker, unusable_window_health, window_health
from service.analysis.result_builder import build_window_result
from service.capture.windowing import Window

if TYPE_CHECKING:  # pragma: no cover
    from encoder.model_file import ModelBundle
    from service.analysis.serving_model import ServingModel

__all__ = ["Analysed", "Analyser", "Timings"]


@dataclass(frozen=True)
class Analysed:
    """One analysed window: the record to store plus what metrics need beyond it."""

    result: WindowResult
    failing: dict[str, bool]  # check name -> failing (health flags, drift included)
    realtime: bool
    log_mel: np.ndarray | None = field(default=None, compare=False)  # live windows: the model's log-Mel (dB)
    samples: np.ndarray | None = field(default=None, compare=False)  # the window's audio, when clips are kept
    quiet_below_dbfs: float | None = None  # the microphone's quiet threshold this window was judged with


class Analyser:
    """Turns batches of windows into WindowResults and StateChanges; thread-safe for concurrent use.

    ``bundle`` is a `ServingModel` (the daemon: either backend) or a `ModelBundle`; ``embedder`` defaults
    to the serving model's own, or to a `TorchEmbedder` over a bundle; ``windows`` is the pipeline's window
    spec (uploads are cut with its length, drift periods are durations of its hop);
    ``keep_samples`` / ``keep_maps``: live windows carry their audio (clips kept) / their map for custom
    sounds (log-Mel patch frames: sounds calibrate on stored maps)."""

    def __init__(self, bundle: "ServingModel | ModelBundle", health: HealthConfig = HealthConfig(), *,
                 windows: WindowSpec = WindowSpec(), embedder: Embedder | None = None,
                 activity: ActivityConfig = ActivityConfig(), sounds: SoundLibrary | None = None,
                 keep_samples: bool = False, keep_maps: bool = False) -> None:
        check_head_classes(bundle.class_names)
        self.bundle = bundle
        self.activity = activity
        self.sounds = sounds  # custom sounds scored on every window (None: off)
        self.sample_rate = bundle.feature_config.sample_rate
        self.windows = windows
        self.health_config = health
        embedder = embedder or getattr(bundle, "embedder", None) or TorchEmbedder(bundle)
        self.runner = ModelRunner(embedder, ActivityHead.from_dict(bundle.head) if bundle.head else None)
        self._mics: dict[str, MicState] = {}
        self._lock = threading.Lock()  # guards _mics (the pipeline thread and gRPC threads share this)
        self.keep_samples = keep_samples  # live windows carry their audio on (Analysed.samples) for clip retention
        self.keep_maps = keep_maps  # live windows carry their map to the store (custom sounds calibrate on them)

    def _analyse(self, windows: list[Window], mics: dict[str, MicState],
                 timings: Timings, live: bool = False) -> tuple[list[Analysed], list[StateChange]]:
        """The one path from windows to records: ``mics`` holds each microphone's state (changed here).
        ``live`` windows come every hop and also carry the log-Mel the model saw (and their audio with
        keep_samples); uploads are consecutive windows (hop = window length)."""
        spec = self.windows if live else self.windows.consecutive()
        for w in windows:
            if w.sample_rate != self.sample_rate:
                raise ValueError(f"window of mic {w.mic_id} is at {w.sample_rate} Hz, the model needs {self.sample_rate}")
        log_mels: list | None = [] if live else None
        columns: list | None = [] if self.sounds is not None else None  # custom sounds match log-Mel patches
        mono = [w.mono() for w in windows]
        embeddings, _, probabilities = self.runner.run(mono, timings, log_mels, columns)
        log_mels = log_mels if live else [None] * len(windows)
        # A window whose spectrogram overflowed fails alone: faulty, no embedding, no label, no drift update.
        usable = np.isfinite(embeddings).all(axis=1)
        t0 = time.perf_counter()
        maps: list = [None] * len(windows)
        matches: list = [()] * len(windows)
        if self.sounds is not None:
            durations = [w.samples.shape[-1] / self.sample_rate for w in windows]
            maps = [WindowMap(c, column_levels(m, len(c)), d) if c is not None and ok else None
                    for c, m, d, ok in zip(columns, mono, durations, usable)]
            matches = self.sounds.detect(np.where(usable[:, None], embeddings, 0.0),
                                         [m.columns if m is not None else None for m in maps], durations)
        timings.head += time.perf_counter() - t0  # custom sounds run beside the head, on the same pass's outputs
        analysed: list[Analysed] = []
        changes: list[StateChange] = []
        for w, embedding, proba, log_mel, ok, found, window_map in zip(windows, embeddings, probabilities, log_mels,
                                                                       usable, matches, maps):
            t0 = time.perf_counter()
            mic = mics.get(w.mic_id)
            if mic is None:
                mic = mics[w.mic_id] = MicState(drift=new_drift_tracker(spec))
            if mic.levels is None:
                mic.levels = LevelHistory(history_capacity(self.activity, spec.step_s))
            if ok:
                health = window_health(w.samples, self.sample_rate, embedding, mic.drift, self.health_config)
            else:
                health, embedding, proba, log_mel = unusable_window_health(w.samples), None, {}, None
            timings.health += time.perf_counter() - t0
            quiet_below = quiet_below_dbfs(mic.levels, self.activity, spec.step_s)
            result = build_window_result(w.mic_id, round(w.start_unix * 1000), round(w.end_unix * 1000), w.samples,
                                         embedding, proba, health, self.activity, found, quiet_below)
            if counts_for_floor(result.rms_dbfs, (k for k, v in health.flags.items() if v)):
                mic.levels.add(result.rms_dbfs)
            if live and window_map is not None and self.keep_maps:
                result = replace(result, map=window_map)
            changes.extend(state_changes(mic, result))
            changes.extend(sound_events(result))
            analysed.append(Analysed(result, {k: bool(v) for k, v in health.flags.items()}, w.realtime, log_mel,
                                     w.samples if live and self.keep_samples else None, quiet_below))
        return analysed, changes

    def dry_run(self) -> float:
        """Analyse one window (the spec's length) of quiet noise end to end (features, encoder, head,
        health), touching no microphone's state; returns the seconds it took. ValueError saying what failed
        when the model cannot produce a usable record for such a window."""
        window_s = self.windows.window_s
        samples = np.random.default_rng(0).normal(0.0, 0.01, (1, int(round(window_s * self.sample_rate))))
        started = time.perf_counter()
        try:
            (analysed,), _ = self._analyse([Window("dry-run", samples.astype(np.float32), self.sample_rate, 0.0,
                                                   window_s, False)], {}, Timings())
        except Exception as exc:  # noqa: BLE001 - whatever breaks, the daemon must not start with it
            raise ValueError(f"a dry run of one {window_s:g} s window failed ({type(exc).__name__}: {exc})") from None
        result = analysed.result
        if result.embedding is None or result.embedding.shape != (self.runner.embedder.embedding_dim,):
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
            return {mic_id: state.drift.to_dict() for mic_id, state in self._mics.items()}

    def restore_drift(self, saved: dict[str, dict]) -> None:
        """Load drift baselines saved by `drift_state`; unusable entries are skipped with a log line."""
        trackers = trackers_from_saved(saved, self.windows)
        with self._lock:
            for mic_id, tracker in trackers.items():
                self._mics[mic_id] = MicState(drift=tracker)

    def restore_levels(self, levels: dict[str, list[float]]) -> None:
        """Seed microphones' level histories (oldest first, usable windows only), e.g. from the store's recent
        windows when the daemon starts, so a learnt noise floor survives restarts."""
        with self._lock:
            for mic_id, values in levels.items():
                mic = self._mics.get(mic_id)
                if mic is None:
                    mic = self._mics[mic_id] = MicState(drift=new_drift_tracker(self.windows))
                mic.levels = LevelHistory(history_capacity(self.activity, self.windows.step_s))
                mic.levels.extend(values)

    def quiet_thresholds(self) -> dict[str, float]:
        """Each live microphone's current `quiet` threshold (dBFS): learnt, or the absolute one until then."""
        with self._lock:
            return {mic_id: quiet_below_dbfs(mic.levels, self.activity, self.windows.step_s) for mic_id, mic in self._mics.items()}

    # --- uploads (gRPC Classify / FindSimilar by audio) ---------------------------------------------

    def analyse_audio(self, data: bytes) -> list[WindowResult]:
        """Per-window results for uploaded audio bytes (mic_id "upload", times in ms from its start): cut
        with the pipeline's window length and judged like a new microphone's windows, drift included."""
        analysed, _ = self._analyse(upload_windows(data, self.sample_rate, self.windows), {}, Timings())
        return [a.result for a in analysed]

    def embed_audio_bytes(self, data: bytes) -> np.ndarray:
        """Embeddings ``[n, D]`` of every window of uploaded audio bytes (channels averaged)."""
        windows = upload_windows(data, self.sample_rate, self.windows)
        embeddings = self.runner.embedder.embed([w.mono() for w in windows])
        finite = embeddings[np.isfinite(embeddings).all(axis=1)]
        if len(finite) == 0:
            raise AudioError(f"uploaded audio: {unusable_window_health(windows[0].samples).reasons[0]}")
        return finite
