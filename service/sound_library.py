"""Custom sounds: the library kept beside the store, and their detection on every live window.

On disk (``<store>.sounds/`` next to the SQLite file, never in the model file)::

    library.json          {"format": "roomtone-sounds", "version": 1, "sounds": [...]}
    model.json            {"model_sha256", "since_unix_ms"}: since when the loaded model runs (calibration
                          only uses stored windows from then on: older ones were embedded by another model)
    <name>/embeddings.npy float32 [examples, D], the examples embedded by the model in `model_sha256`
    <name>/example-K.flac the audio of example K (mono, the model's rate) when it came from a file

Each sound is tied to the sha256 of the model that embedded its examples. When the daemon starts with
another model, sounds whose examples all have kept audio are re-embedded with it (and recalibrated from
their examples); a sound with examples taken from stored windows (whose audio the store does not keep)
is kept but inactive, and `problem` says what to do. Detection and the threshold rule are in
encoder/few_shot.py.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import soundfile

from encoder.few_shot import Calibration, calibrate_threshold, nearest_example_scores, unit_rows
from service.records import SoundMatch

log = logging.getLogger("roomtone.sounds")

FORMAT = "roomtone-sounds"
VERSION = 1
#: Most sounds one daemon keeps: the sound name is a Prometheus label, so its cardinality stays bounded.
MAX_SOUNDS = 64
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

#: Embeds mono windows (float32 at the model's rate) into ``[n, D]``.
EmbedFn = Callable[[list[np.ndarray]], np.ndarray]


class SoundError(ValueError):
    """A sound request that cannot be done; ``reason`` is machine-readable (maps to a gRPC status)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # invalid_argument | already_exists | not_found | resource_exhausted | failed_precondition


@dataclass(frozen=True)
class Example:
    """Where one example window came from: a kept audio file, or a stored window (embedding only)."""

    kind: str  # "file" or "window"
    audio: str | None = None  # file examples: the kept FLAC, relative to the sound's folder
    source: str | None = None  # file examples: the name the example was given as (e.g. doorbell.wav)
    window_id: int | None = None  # window examples: the stored window's id


@dataclass(frozen=True)
class Sound:
    """One custom sound: its examples' embeddings and its threshold."""

    name: str
    model_sha256: str
    examples: tuple[Example, ...]
    embeddings: np.ndarray = field(compare=False)  # float32 [examples, D]
    calibrated_threshold: float
    calibration: str  # how the calibrated threshold was found
    threshold_override: float | None = None
    created_unix_ms: int = 0
    problem: str = ""  # why the sound is inactive with the loaded model; "" when active

    @property
    def threshold(self) -> float:
        """The threshold in use: the override if set, else the calibrated one."""
        return self.threshold_override if self.threshold_override is not None else self.calibrated_threshold

    @property
    def active(self) -> bool:
        """Whether the sound is detected with the loaded model."""
        return not self.problem

    def to_json(self) -> dict:
        """The library.json entry (embeddings are in their own file)."""
        return {"name": self.name, "model_sha256": self.model_sha256,
                "examples": [{k: v for k, v in vars(e).items() if v is not None} for e in self.examples],
                "calibrated_threshold": self.calibrated_threshold, "calibration": self.calibration,
                "threshold_override": self.threshold_override, "created_unix_ms": self.created_unix_ms}


def check_name(name: str) -> None:
    """SoundError(invalid_argument) unless ``name`` is 1-64 of a-z 0-9 _ - starting with a letter or digit."""
    if not NAME_PATTERN.match(name or ""):
        raise SoundError("invalid_argument", f"sound name {name!r}: use 1-64 characters of a-z, 0-9, '_' and '-', "
                                             "starting with a letter or digit")


def library_path(store_path: str | Path) -> Path:
    """The library folder beside a store file: ``roomtone.db`` -> ``roomtone.sounds/``."""
    store_path = Path(store_path)
    return store_path.with_name(store_path.stem + ".sounds")


class SoundLibrary:
    """The custom sounds of one daemon: add, list, remove, and score live windows; thread-safe."""

    def __init__(self, path: str | Path, model_sha256: str, embed: EmbedFn, sample_rate: int, embedding_dim: int,
                 max_sounds: int = MAX_SOUNDS, read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only  # offline readers (roomtone classify): re-embed in memory, never write
        self.model_sha256 = model_sha256
        self.embed = embed
        self.sample_rate = sample_rate
        self.embedding_dim = embedding_dim
        self.max_sounds = min(max_sounds, MAX_SOUNDS)
        self._lock = threading.Lock()  # serialises changes; detection reads the immutable `_sounds`
        self._sounds: dict[str, Sound] = {}
        self.model_since_unix_ms = self._model_since()
        self._load()

    # -- persistence -----------------------------------------------------------------------------
    def _model_since(self) -> int:
        """When this library first ran with the loaded model (``model.json``): stored windows older than that
        were embedded by another model and must not calibrate a threshold."""
        marker = self.path / "model.json"
        try:
            seen = json.loads(marker.read_text())
            if seen.get("model_sha256") == self.model_sha256:
                return int(seen["since_unix_ms"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        since = int(time.time() * 1000)  # unknown or another model before: only windows from now on
        if not self.read_only:
            self.path.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"model_sha256": self.model_sha256, "since_unix_ms": since}))
        return since

    def _load(self) -> None:
        manifest = self.path / "library.json"
        if not manifest.is_file():
            return
        try:
            data = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SoundError("failed_precondition", f"{manifest}: unreadable custom-sound library ({exc}); "
                                                    "move it away to start with no custom sounds") from None
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise SoundError("failed_precondition", f"{manifest}: not a version-{VERSION} {FORMAT} library "
                                                    f"(format {data.get('format')!r}, version {data.get('version')!r})")
        sounds = {}
        changed = False
        for entry in data.get("sounds", []):
            sound = Sound(
                name=entry["name"], model_sha256=entry["model_sha256"],
                examples=tuple(Example(**e) for e in entry["examples"]),
                embeddings=np.load(self.path / entry["name"] / "embeddings.npy"),
                calibrated_threshold=float(entry["calibrated_threshold"]), calibration=entry["calibration"],
                threshold_override=entry.get("threshold_override"), created_unix_ms=int(entry.get("created_unix_ms", 0)))
            if sound.model_sha256 != self.model_sha256:
                sound, reembedded = self._for_new_model(sound)
                changed |= reembedded
            sounds[sound.name] = sound
        self._sounds = sounds
        if changed and not self.read_only:
            self._save(sounds)

    def _for_new_model(self, sound: Sound) -> tuple[Sound, bool]:
        """Re-embed a sound from its kept audio for the loaded model, or mark it inactive saying why."""
        windows = [e for e in sound.examples if e.kind == "window"]
        if windows:
            ids = ", ".join(str(e.window_id) for e in windows[:5])
            problem = (f"embedded by model {sound.model_sha256[:12]}, the daemon runs {self.model_sha256[:12]}, and "
                       f"{len(windows)} example(s) come from stored windows ({ids}) whose audio is not kept: "
                       f"re-add it with audio files (roomtone sounds add {sound.name} FILE... --replace) "
                       f"or remove it (roomtone sounds remove {sound.name})")
            log.warning("custom sound inactive", extra={"sound": sound.name, "problem": problem})
            return replace(sound, problem=problem), False
        audio = [self._read_example(sound.name, e) for e in sound.examples]
        embeddings = unit_rows(self.embed(audio))
        calibration = calibrate_threshold(embeddings)
        log.info("custom sound re-embedded for the loaded model",
                 extra={"sound": sound.name, "old_model": sound.model_sha256[:12], "model": self.model_sha256[:12]})
        if not self.read_only:
            np.save(self.path / sound.name / "embeddings.npy", embeddings)
        return replace(sound, model_sha256=self.model_sha256, embeddings=embeddings,
                       calibrated_threshold=calibration.threshold,
                       calibration=calibration.detail + " (re-embedded after a model change)"), True

    def _read_example(self, name: str, example: Example) -> np.ndarray:
        samples, _ = soundfile.read(self.path / name / str(example.audio), dtype="float32", always_2d=True)
        return samples.mean(axis=1)

    def _save(self, sounds: dict[str, Sound]) -> None:
        """Write library.json atomically (the per-sound folders are written before it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, "version": VERSION,
                "sounds": [s.to_json() for s in sorted(sounds.values(), key=lambda s: s.name)]}
        handle, temporary = tempfile.mkstemp(prefix=".library.", suffix=".tmp", dir=self.path)
        try:
            with os.fdopen(handle, "w") as stream:
                json.dump(data, stream, indent=1)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path / "library.json")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    # -- changes ---------------------------------------------------------------------------------
    def add(self, name: str, audio_windows: Sequence[tuple[str, np.ndarray]] = (),
            window_examples: Sequence[tuple[int, np.ndarray]] = (), threshold: float | None = None,
            replace_existing: bool = False, background: np.ndarray | None = None, background_hours: float = 0.0,
            alarms_per_hour: float = 1.0) -> Sound:
        """Teach a sound from mono example windows (source name, samples at the model's rate) and stored
        windows (id, embedding); the threshold is calibrated (see encoder/few_shot.py) unless given."""
        check_name(name)
        if self.read_only:
            raise SoundError("failed_precondition", f"{self.path}: opened read-only")
        if not audio_windows and not window_examples:
            raise SoundError("invalid_argument", f"sound {name!r}: give at least one example (audio or window id)")
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise SoundError("invalid_argument", f"sound {name!r}: threshold must be between -1 and 1, got {threshold}")
        rows = []
        if audio_windows:
            rows.append(self.embed([samples for _, samples in audio_windows]))
        if window_examples:
            rows.append(np.stack([np.asarray(e, dtype=np.float32) for _, e in window_examples]))
        embeddings = unit_rows(np.concatenate(rows))
        calibration: Calibration = calibrate_threshold(embeddings, background, background_hours, alarms_per_hour)
        with self._lock:
            if name in self._sounds and not replace_existing:
                raise SoundError("already_exists", f"sound {name!r} exists; remove it first or pass --replace")
            if name not in self._sounds and len(self._sounds) >= self.max_sounds:
                raise SoundError("resource_exhausted", f"the library holds {len(self._sounds)} sounds, the most "
                                                       f"allowed ({self.max_sounds}); remove one first")
            folder = self.path / name
            staging = self.path / f".{name}.new"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            examples = []
            for k, (source, samples) in enumerate(audio_windows):
                soundfile.write(staging / f"example-{k}.flac", samples, self.sample_rate, subtype="PCM_16")
                examples.append(Example("file", audio=f"example-{k}.flac", source=source))
            examples += [Example("window", window_id=int(i)) for i, _ in window_examples]
            np.save(staging / "embeddings.npy", embeddings)
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
            sound = Sound(name, self.model_sha256, tuple(examples), embeddings, calibration.threshold,
                          calibration.detail, threshold, int(time.time() * 1000))
            sounds = {**self._sounds, name: sound}
            self._save(sounds)
            self._sounds = sounds
        log.info("custom sound added", extra={"sound": name, "examples": len(examples), "threshold": sound.threshold,
                                              "calibration": calibration.detail})
        return sound

    def remove(self, name: str) -> None:
        """Forget a sound and its kept audio; SoundError(not_found) for an unknown name."""
        with self._lock:
            if name not in self._sounds:
                raise SoundError("not_found", f"no custom sound named {name!r}")
            sounds = {k: v for k, v in self._sounds.items() if k != name}
            self._save(sounds)
            self._sounds = sounds
            shutil.rmtree(self.path / name, ignore_errors=True)
        log.info("custom sound removed", extra={"sound": name})

    # -- reading ---------------------------------------------------------------------------------
    def sounds(self) -> list[Sound]:
        """Every sound, sorted by name."""
        return sorted(self._sounds.values(), key=lambda s: s.name)

    def detect(self, embeddings: np.ndarray) -> list[tuple[SoundMatch, ...]]:
        """Per embedding, the active sounds whose score reaches their threshold (highest score first)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        found: list[list[SoundMatch]] = [[] for _ in range(len(embeddings))]
        for sound in self._sounds.values():  # a snapshot: changes replace the dict, never mutate it
            if not sound.active or sound.embeddings.shape[1] != embeddings.shape[1] or not len(embeddings):
                continue
            scores = nearest_example_scores(embeddings, sound.embeddings)
            for i in np.flatnonzero(scores >= sound.threshold):
                found[i].append(SoundMatch(sound.name, float(scores[i]), float(sound.threshold)))
        return [tuple(sorted(f, key=lambda m: -m.score)) for f in found]


@dataclass
class SoundService:
    """What AddSound/ListSounds/RemoveSound do: examples from uploaded audio and stored windows, the
    threshold calibrated against the store's recent windows (`SoundsConfig`)."""

    library: SoundLibrary
    store: object  # service.event_store.EventStore
    config: object  # service.config.SoundsConfig
    window_s: float = 10.0

    def add(self, name: str, audio: Sequence[tuple[str, bytes]] = (), window_ids: Sequence[int] = (),
            threshold: float | None = None, replace_existing: bool = False) -> Sound:
        """Teach ``name`` from audio files (source name, bytes; every window of each is an example) and stored
        window ids; AudioError for undecodable audio, SoundError otherwise."""
        from encoder.audio import AudioError, decode_audio
        from encoder.windows import window_spans

        check_name(name)
        rate = self.library.sample_rate
        audio_windows = []
        for source, data in audio:
            waveform, _ = decode_audio(data, rate, mono=True, name=source)
            samples = waveform[0].numpy()
            spans = window_spans(samples.shape[0], rate, self.window_s)
            if not spans:
                raise AudioError(f"{source}: {samples.shape[0] / rate:.2f} s is shorter than the 1 s minimum window")
            audio_windows += [(source, samples[s.start:s.end]) for s in spans]
        window_examples = []
        for window_id in window_ids:
            window = self.store.get_window(int(window_id), include_embedding=True)
            if window is None:
                raise SoundError("not_found", f"window {window_id}: not in the store (removed by retention?)")
            if window.embedding is None:
                raise SoundError("invalid_argument", f"window {window_id}: stored without an embedding")
            if len(window.embedding) != self.library.embedding_dim:
                raise SoundError("invalid_argument", f"window {window_id}: its embedding has {len(window.embedding)} "
                                                     f"dimensions, the loaded model {self.library.embedding_dim}")
            window_examples.append((int(window_id), window.embedding))
        background, hours = None, 0.0
        if self.config.calibration_hours > 0:
            background, hours = self.store.recent_embeddings(self.library.embedding_dim, self.config.calibration_hours,
                                                             exclude_ids=window_ids,
                                                             since_unix_ms=self.library.model_since_unix_ms)
        return self.library.add(name, audio_windows, window_examples, threshold, replace_existing,
                                background, hours, self.config.alarms_per_hour)
