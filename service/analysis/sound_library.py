"""Custom sounds: the library kept beside the store, and their detection on every live window.

On disk (``<store>.sounds/`` next to the SQLite file, never in the model file)::

    library.json          {"format": "roomtone-sounds", "version": 2, "sounds": [...]}
    model.json            {"model_sha256", "since_unix_ms"}: since when the loaded model runs (calibration
                          only uses stored windows from then on: older ones were embedded by another model)
    <name>/embeddings.npy float32 [examples, L, B]: each example's log-Mel patch, its loudest `span_columns`
                          frames of 20 ms x B bands (encoder/patch_matching.py); or with `span_columns` 0
                          [examples, D], the pooled window embeddings by the model in `model_sha256`
    <name>/weights.npy    float32 [examples, B], each patch's band weights (patch sounds)
    <name>/negatives.npy  float32 [marks, L, B] (or [marks, D]), detections a user marked "not this" (optional)
    <name>/example-K.flac the audio of example K (mono, the model's rate) when it came from a file

Version 1 libraries (pooled embeddings, no marks) are read and upgraded: sounds from files are re-derived
as patches, sounds from stored windows keep matching the pooled embedding (``span_columns`` 0). Version 2
and 3 span sounds (spans of the encoder's projected columns or of its column map) are re-derived from their
kept audio as log-Mel patches; those taught from stored windows become inactive, saying to re-add them.

Each sound is tied to the sha256 of the model that embedded its examples. When the daemon starts with
another model, sounds whose examples all have kept audio are re-embedded with it (and recalibrated from
their examples); a sound with examples taken from stored windows (whose audio the store does not keep)
is kept but inactive, and `problem` says what to do. Detection (log-Mel patches, normalised 2-D
cross-correlation) is in encoder/patch_matching.py, the threshold rule in encoder/few_shot.py.
"""

from __future__ import annotations

import io
import json
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import soundfile

from encoder.few_shot import (DEFAULT_THRESHOLD, MIN_BACKGROUND_HOURS, background_calibration, best_span, best_spans,
                              column_levels, examples_calibration, unit_rows)
from encoder.features import LogMelConfig
from encoder.patch_matching import FRAME_POOL, PreparedFrames, example_patch, patch_length, patch_scores, place_scores
from encoder.windows import WindowSpec
from service.daemon_vocabulary import ID_PATTERN, ID_RULE
from service.records import SoundMatch, WindowMap
from service.state_files import fsync_file, write_atomically

log = logging.getLogger("roomtone.sounds")

FORMAT = "roomtone-sounds"
VERSION = 4  # 2: span examples (span_columns), "not this" marks and negatives, calibrated_unix_ms; 3: spans of the
# column map; 4: log-Mel patches (span_columns in 20 ms frames) with band weights
READABLE_VERSIONS = (1, 2, 3, 4)
#: Most sounds one daemon keeps: the sound name is a Prometheus label, so its cardinality stays bounded.
MAX_SOUNDS = 64
NAME_PATTERN = re.compile(ID_PATTERN)

#: Embeds mono windows (float32 at the model's rate) into ``[n, D]``.
EmbedFn = Callable[[list[np.ndarray]], np.ndarray]
#: Embeds mono windows into ``([n, D], log-Mels, per window its map [frames, column_dim])`` (model_runner.sound_maps).
ColumnsFn = Callable[[list[np.ndarray]], tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]]


@dataclass(frozen=True)
class Background:
    """A home's own recent windows (the store's), to calibrate thresholds against: ``chunks()`` reads their
    maps a chunk at a time (a day of column maps would not fit the daemon's memory at once), ``hours`` is
    how much audio they cover."""

    chunks: Callable[[], Iterable[list[WindowMap]]]
    hours: float

    @classmethod
    def of(cls, maps: Sequence[WindowMap], hours: float) -> "Background":
        """A background held in memory (tests, benches)."""
        return cls(lambda: [list(maps)] if maps else [], hours)

    def scores(self, sound: "Sound") -> tuple[np.ndarray, float]:
        """The sound's score on every background window it can be scored on (`window_scores`), and the hours
        those windows cover."""
        parts, seconds = [], 0.0
        for chunk in self.chunks():
            scores = window_scores(sound, chunk)
            scored = ~np.isnan(scores)
            parts.append(scores[scored])
            seconds += sum(m.duration_s for m, ok in zip(chunk, scored) if ok)
        return (np.concatenate(parts) if parts else np.zeros(0)), seconds / 3600


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
class NotThis:
    """A detection a user marked as wrong: its window became a negative example of the sound."""

    window_id: int
    marked_unix_ms: int


@dataclass(frozen=True)
class Sound:
    """One custom sound: its examples' embeddings and its threshold."""

    name: str
    model_sha256: str
    examples: tuple[Example, ...]
    embeddings: np.ndarray = field(compare=False)  # float32 [examples, L, B]: patches (or [examples, D] pooled, span_columns 0)
    calibrated_threshold: float
    calibration: str  # how the calibrated threshold was found
    threshold_override: float | None = None
    created_unix_ms: int = 0
    problem: str = ""  # why the sound is inactive with the loaded model; "" when active
    span_columns: int = 0  # patch length matched, in frames of the window's map; 0: the pooled window embedding
    negatives: np.ndarray | None = field(default=None, compare=False)  # float32 [marks, L, B]: "not this" patches
    not_this: tuple[NotThis, ...] = ()
    calibrated_unix_ms: int = 0  # when the threshold was last calibrated
    weights: np.ndarray | None = field(default=None, compare=False)  # float32 [examples, B]: the patches' band weights

    @property
    def patches(self) -> bool:
        """Whether the sound matches log-Mel patches (else its pooled embedding, or an old map it cannot score)."""
        return bool(self.span_columns) and self.embeddings.ndim == 3 and self.weights is not None

    def scores_on(self, window: WindowMap) -> bool:
        """Whether the sound can be scored on ``window``: a patch sound needs its map (of the patches' bands),
        a pooled one its embedding (of the examples' size)."""
        if self.span_columns:
            return self.patches and window.has_map and window.columns.shape[1] == self.embeddings.shape[2]
        return (window.embedding is not None or not window.has_map) and len(window.pooled) == self.embeddings.shape[1]

    def score(self, window: WindowMap, prepared: PreparedFrames | None = None) -> tuple[float, float, float]:
        """The window's score for this sound and where its best-matching patch lies (start, end in seconds from
        the window's start); NaN when it cannot be scored on the window (`scores_on`). ``prepared``: the window's
        map made ready once for every sound scored on it."""
        if not self.scores_on(window):
            return float("nan"), 0.0, window.duration_s
        if not self.span_columns:
            return best_span(window.pooled[None], self.embeddings, 1, self.negatives)[0], 0.0, window.duration_s
        prepared = PreparedFrames.of(window.columns[None]) if prepared is None else prepared
        scores, starts = patch_scores(prepared, self.embeddings, self.weights, self.negatives)
        start, frames = int(starts[0]), len(window.columns)
        per_frame = window.duration_s / frames
        return float(scores[0]), start * per_frame, min(start + self.span_columns, frames) * per_frame

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
                "threshold_override": self.threshold_override, "created_unix_ms": self.created_unix_ms,
                "span_columns": self.span_columns, "not_this": [vars(n) for n in self.not_this],
                "calibrated_unix_ms": self.calibrated_unix_ms}


def sound_span_ms(sound: Sound, windows: WindowSpec, features: LogMelConfig = LogMelConfig()) -> int:
    """The length a sound is matched on, in ms: its patch's frames of `FRAME_POOL` log-Mel hops (20 ms at a
    10 ms hop); 0 when it is matched on the whole window (``windows``: kept for the API's one call)."""
    return round(sound.span_columns * FRAME_POOL * features.hop_ms) if sound.patches else 0


def _npy_bytes(array: np.ndarray) -> bytes:
    """``array`` as the bytes of a .npy file (written with `write_atomically`)."""
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def check_name(name: str) -> None:
    """SoundError(invalid_argument) unless ``name`` is 1-64 of a-z 0-9 _ - starting with a letter or digit."""
    if not NAME_PATTERN.match(name or ""):
        raise SoundError("invalid_argument", f"sound name {name!r}: use {ID_RULE}")


def window_scores(sound: Sound, maps: Sequence[WindowMap]) -> np.ndarray:
    """`Sound.score` of many windows ``[n]`` (NaN where it cannot be scored), windows with equal frame counts
    scored together."""
    scores = np.full(len(maps), np.nan)
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(maps):
        if sound.scores_on(m):
            groups.setdefault(m.columns.shape if sound.span_columns else (1,), []).append(i)
    for indices in groups.values():
        if sound.span_columns:
            for start in range(0, len(indices), 32):  # 32 windows' spectra at a time (about 17 MB) bound the memory
                part = indices[start:start + 32]
                scores[part] = patch_scores(np.stack([maps[i].columns for i in part]), sound.embeddings, sound.weights,
                                            sound.negatives)[0]
        else:
            columns = np.stack([maps[i].pooled for i in indices])[:, None, :]
            scores[indices] = best_spans(columns, sound.embeddings, 1, sound.negatives)[0]
    return scores


def calibration_for(sound: Sound, background: Background | None, alarms_per_hour: float) -> tuple[float, str]:
    """A sound's threshold and how it was found: from the home's background windows when there are at least
    `MIN_BACKGROUND_HOURS` it can be scored on (at most ``alarms_per_hour`` of them reach it), else from its examples."""
    scores, hours = (background.scores(sound) if background is not None and background.hours >= MIN_BACKGROUND_HOURS
                     else (np.zeros(0), 0.0))
    if hours >= MIN_BACKGROUND_HOURS:
        calibration = background_calibration(scores, hours, alarms_per_hour)
    elif sound.patches:  # each patch against the others, as a window of its own
        others = [np.delete(np.arange(len(sound.embeddings)), k) for k in range(len(sound.embeddings))]
        calibration = examples_calibration(sound.embeddings, [
            float(place_scores(sound.embeddings[k:k + 1], sound.embeddings[o], sound.weights[o]).max())
            for k, o in enumerate(others)] if len(sound.embeddings) > 1 else None)
    else:
        calibration = examples_calibration(sound.embeddings)
    return calibration.threshold, calibration.detail


def example_patches(maps: Sequence[WindowMap]) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The examples' patches ``[n, L, B]``, their band weights ``[n, B]`` and the patch length L in frames: the
    examples' median length (frames within `PATCH_WITHIN_DB` of each one's loudest, at most `MAX_PATCH_S`),
    each example's loudest run of that length (`encoder.patch_matching.example_patch`); without every
    example's map, their pooled embeddings, None and length 0."""
    if not maps or any(not m.has_map for m in maps):
        return unit_rows(np.stack([m.pooled for m in maps])), None, 0
    length = int(np.median([patch_length(m.columns, m.duration_s / len(m.columns)) for m in maps]))
    patches = [example_patch(m.columns, length) for m in maps]
    return (np.stack([p for p, _, _ in patches]).astype(np.float32), np.stack([w for _, w, _ in patches]), length)


class SoundLibrary:
    """The custom sounds of one daemon: add, list, remove, mark detections "not this", recalibrate, and score
    live windows; thread-safe. ``embed_columns`` (`ColumnsFn`) gives example audio its column map of
    ``column_dim`` values per column; without it sounds match the pooled embedding ``embed`` gives."""

    def __init__(self, path: str | Path, model_sha256: str, embed: EmbedFn, sample_rate: int, embedding_dim: int,
                 max_sounds: int = MAX_SOUNDS, read_only: bool = False, embed_columns: ColumnsFn | None = None,
                 column_dim: int = 0) -> None:
        self.path = Path(path)
        self.read_only = read_only  # offline readers (roomtone classify): re-embed in memory, never write
        self.model_sha256 = model_sha256
        self.embed = embed
        self.embed_columns = embed_columns
        self.column_dim = column_dim
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
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                write_atomically(marker, json.dumps({"model_sha256": self.model_sha256, "since_unix_ms": since}))
            except OSError as exc:  # a full disk must not stop the daemon: it is written at the next start
                log.warning("could not record since when the model runs", extra={"file": str(marker),
                                                                                  "error": str(exc)})
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
        if data.get("format") != FORMAT or data.get("version") not in READABLE_VERSIONS:
            raise SoundError("failed_precondition", f"{manifest}: not a version-{VERSION} {FORMAT} library "
                                                    f"(format {data.get('format')!r}, version {data.get('version')!r})")
        sounds = {}
        changed = data.get("version") != VERSION
        for entry in data.get("sounds", []):
            folder = self.path / entry["name"]
            negatives = folder / "negatives.npy"
            weights = folder / "weights.npy"
            sound = Sound(
                name=entry["name"], model_sha256=entry["model_sha256"],
                examples=tuple(Example(**e) for e in entry["examples"]),
                embeddings=np.load(folder / "embeddings.npy"),
                calibrated_threshold=float(entry["calibrated_threshold"]), calibration=entry["calibration"],
                threshold_override=entry.get("threshold_override"), created_unix_ms=int(entry.get("created_unix_ms", 0)),
                span_columns=int(entry.get("span_columns", 0)),
                negatives=np.load(negatives) if negatives.is_file() else None,
                not_this=tuple(NotThis(**n) for n in entry.get("not_this", [])),
                calibrated_unix_ms=int(entry.get("calibrated_unix_ms", entry.get("created_unix_ms", 0))),
                weights=np.load(weights) if weights.is_file() else None)
            upgrade = (data.get("version") == 1 and self.embed_columns is not None
                       and all(e.kind == "file" for e in sound.examples))
            other_map = bool(sound.span_columns) and (not sound.patches or sound.embeddings.shape[2] != self.column_dim)
            if sound.model_sha256 != self.model_sha256 or upgrade or other_map:
                sound, reembedded = self._for_new_model(sound)
                changed |= reembedded
            sounds[sound.name] = sound
        self._sounds = sounds
        if changed and not self.read_only:
            self._save(sounds)

    def _for_new_model(self, sound: Sound) -> tuple[Sound, bool]:
        """Re-embed a sound from its kept audio for the loaded model, or mark it inactive saying why."""
        windows = [e for e in sound.examples if e.kind == "window"]
        other_map = bool(sound.span_columns) and (not sound.patches or sound.embeddings.shape[2] != self.column_dim)
        if windows and (sound.model_sha256 != self.model_sha256 or other_map):
            ids = ", ".join(str(e.window_id) for e in windows[:5])
            embedded = (f"embedded by model {sound.model_sha256[:12]}, the daemon runs {self.model_sha256[:12]}"
                        if sound.model_sha256 != self.model_sha256 else
                        f"its examples are spans of an older map ({sound.embeddings.shape[-1]} values per column), the "
                        f"daemon matches log-Mel patches of {self.column_dim or 'no'} bands")
            problem = (f"{embedded}, and "
                       f"{len(windows)} example(s) come from stored windows ({ids}) whose audio is not kept: "
                       f"re-add it with audio files (roomtone sounds add {sound.name} FILE... --replace) "
                       f"or remove it (roomtone sounds remove {sound.name})")
            log.warning("custom sound inactive", extra={"sound": sound.name, "problem": problem})
            return replace(sound, problem=problem), False
        audio = [self._read_example(sound.name, e) for e in sound.examples]
        embeddings, weights, span = example_patches(self.example_maps(audio))
        # "not this" spans came from the old model's windows or map: they are dropped with it
        fresh = replace(sound, model_sha256=self.model_sha256, embeddings=embeddings, span_columns=span,
                        negatives=None, not_this=(), weights=weights)
        threshold, detail = calibration_for(fresh, None, 1.0)
        log.info("custom sound re-embedded for the loaded model",
                 extra={"sound": sound.name, "old_model": sound.model_sha256[:12], "model": self.model_sha256[:12]})
        if not self.read_only:
            write_atomically(self.path / sound.name / "embeddings.npy", _npy_bytes(embeddings))
            if weights is not None:
                write_atomically(self.path / sound.name / "weights.npy", _npy_bytes(weights))
            (self.path / sound.name / "negatives.npy").unlink(missing_ok=True)
        why = "a model change" if sound.model_sha256 != self.model_sha256 else "the change to log-Mel patches"
        # a --threshold set for another map's scores means nothing for patches: the calibrated one takes over
        dropped = other_map and sound.threshold_override is not None
        if dropped:
            log.warning("custom sound threshold override dropped", extra={"sound": sound.name,
                                                                         "threshold": sound.threshold_override})
        return replace(fresh, calibrated_threshold=threshold, calibrated_unix_ms=int(time.time() * 1000),
                       threshold_override=None if dropped else sound.threshold_override,
                       calibration=detail + f" (re-embedded after {why}"
                       + (f"; threshold override {sound.threshold_override:g} dropped)" if dropped else ")")), True

    def _read_example(self, name: str, example: Example) -> np.ndarray:
        samples, _ = soundfile.read(self.path / name / str(example.audio), dtype="float32", always_2d=True)
        return samples.mean(axis=1)

    def example_maps(self, audio: Sequence[np.ndarray]) -> list[WindowMap]:
        """The maps of example audio windows: log-Mel patch frames, levels and pooled embedding (pooled only
        without `embed_columns`)."""
        durations = [len(a) / self.sample_rate for a in audio]
        if self.embed_columns is None:
            pooled = self.embed(list(audio))
            return [WindowMap(np.asarray(p, np.float32)[None, :], None, d, np.asarray(p, np.float32))
                    for p, d in zip(pooled, durations)]
        pooled, _, columns = self.embed_columns(list(audio))
        return [WindowMap(np.asarray(c, np.float32), column_levels(a, len(c)), d, np.asarray(p, np.float32))
                for a, c, d, p in zip(audio, columns, durations, pooled)]

    def _save(self, sounds: dict[str, Sound]) -> None:
        """Write library.json atomically (the per-sound folders are written before it)."""
        self.path.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, "version": VERSION,
                "sounds": [s.to_json() for s in sorted(sounds.values(), key=lambda s: s.name)]}
        write_atomically(self.path / "library.json", json.dumps(data, indent=1))

    # -- changes ---------------------------------------------------------------------------------
    def add(self, name: str, audio_windows: Sequence[tuple[str, np.ndarray]] = (),
            window_examples: Sequence[tuple[int, WindowMap | np.ndarray]] = (), threshold: float | None = None,
            replace_existing: bool = False, background: Background | None = None,
            alarms_per_hour: float = 1.0) -> Sound:
        """Teach a sound from mono example windows (source name, samples at the model's rate) and stored
        windows (id, `WindowMap` or embedding); the threshold is calibrated (`calibration_for`) unless given."""
        check_name(name)
        if self.read_only:
            raise SoundError("failed_precondition", f"{self.path}: opened read-only")
        if not audio_windows and not window_examples:
            raise SoundError("invalid_argument", f"sound {name!r}: give at least one example (audio or window id)")
        if threshold is not None and not -1.0 <= threshold <= 1.0:
            raise SoundError("invalid_argument", f"sound {name!r}: threshold must be between -1 and 1, got {threshold}")
        maps = self.example_maps([samples for _, samples in audio_windows]) if audio_windows else []
        # a stored window's map, or its bare embedding (matched on the whole window)
        maps += [m if isinstance(m, WindowMap) else WindowMap(np.asarray(m, np.float32).reshape(1, -1))
                 for _, m in window_examples]
        embeddings, weights, span = example_patches(maps)
        now = int(time.time() * 1000)
        sound = Sound(name, self.model_sha256, (), embeddings, DEFAULT_THRESHOLD, "", threshold, now,
                      span_columns=span, calibrated_unix_ms=now, weights=weights)
        calibrated, detail = calibration_for(sound, background, alarms_per_hour)
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
            write_atomically(staging / "embeddings.npy", _npy_bytes(embeddings))
            if weights is not None:
                write_atomically(staging / "weights.npy", _npy_bytes(weights))
            for example in staging.iterdir():
                fsync_file(example)
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
            sound = replace(sound, examples=tuple(examples), calibrated_threshold=calibrated, calibration=detail)
            self._commit({**self._sounds, name: sound})
        log.info("custom sound added", extra={"sound": name, "examples": len(examples), "threshold": sound.threshold,
                                              "span_columns": span, "calibration": detail})
        return sound

    def _commit(self, sounds: dict[str, Sound]) -> None:
        """Save and publish a new set of sounds (hold ``_lock``)."""
        self._save(sounds)
        self._sounds = sounds

    def get(self, name: str) -> Sound:
        """The sound called ``name``; SoundError(not_found) otherwise."""
        sound = self._sounds.get(name)
        if sound is None:
            raise SoundError("not_found", f"no custom sound named {name!r}")
        return sound

    def remove(self, name: str) -> None:
        """Forget a sound and its kept audio; SoundError(not_found) for an unknown name."""
        with self._lock:
            self.get(name)
            self._commit({k: v for k, v in self._sounds.items() if k != name})
            shutil.rmtree(self.path / name, ignore_errors=True)
        log.info("custom sound removed", extra={"sound": name})

    def mark_not_this(self, name: str, window_id: int, window: WindowMap, background: Background | None = None,
                      alarms_per_hour: float = 1.0) -> Sound:
        """A detection of ``name`` in stored window ``window_id`` was wrong: the window's best-matching patch
        becomes a negative example and the threshold is recalibrated (against ``background`` when given)."""
        with self._lock:
            sound = self.get(name)
            if any(n.window_id == window_id for n in sound.not_this):
                raise SoundError("already_exists", f"window {window_id} is already marked \"not this\" for {name!r}")
            if not sound.scores_on(window):
                what = "its map is no longer kept or" if sound.span_columns else "its embedding"
                raise SoundError("failed_precondition", f"window {window_id}: {what} does not fit sound {name!r} "
                                                        f"({sound.embeddings.shape[-1]} values per example frame)")
            _, start_s, _ = sound.score(window)
            if sound.span_columns:
                first = int(round(start_s / window.duration_s * len(window.columns)))
                run = window.columns[first:first + sound.span_columns]
                negative = np.pad(run, ((0, sound.span_columns - len(run)), (0, 0)), mode="edge")[None]
            else:
                negative = unit_rows(window.pooled)
            negatives = negative if sound.negatives is None else np.concatenate([sound.negatives, negative])
            marked = replace(sound, negatives=negatives.astype(np.float32),
                             not_this=sound.not_this + (NotThis(int(window_id), int(time.time() * 1000)),))
            marked = self._recalibrated(marked, background, alarms_per_hour, "not this")
            write_atomically(self.path / name / "negatives.npy", _npy_bytes(marked.negatives))
            self._commit({**self._sounds, name: marked})
        return marked

    def recalibrate(self, name: str, background: Background | None, alarms_per_hour: float = 1.0,
                    why: str = "recalibration") -> Sound:
        """Recalibrate the threshold of ``name`` against ``background`` (logged with the old and new values)."""
        with self._lock:
            sound = self._recalibrated(self.get(name), background, alarms_per_hour, why)
            self._commit({**self._sounds, name: sound})
        return sound

    def _recalibrated(self, sound: Sound, background: Background | None, alarms_per_hour: float, why: str) -> Sound:
        if not sound.active:
            return sound
        threshold, detail = calibration_for(sound, background, alarms_per_hour)
        log.info("custom sound recalibrated", extra={"sound": sound.name, "why": why, "old_threshold": sound.calibrated_threshold,
                                                     "threshold": threshold, "calibration": detail})
        return replace(sound, calibrated_threshold=threshold, calibration=detail,
                       calibrated_unix_ms=int(time.time() * 1000))

    # -- reading ---------------------------------------------------------------------------------
    def sounds(self) -> list[Sound]:
        """Every sound, sorted by name."""
        return sorted(self._sounds.values(), key=lambda s: s.name)

    def detect(self, embeddings: np.ndarray, columns: Sequence[np.ndarray | None] | None = None,
               durations_s: Sequence[float] | None = None) -> list[tuple[SoundMatch, ...]]:
        """Per window (its embedding, and its map when given), the active sounds whose score reaches their
        threshold, highest score first, each with where in the window its best-matching patch lies."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        columns = list(columns) if columns is not None else [None] * len(embeddings)
        durations = list(durations_s) if durations_s is not None else [10.0] * len(embeddings)
        maps = [WindowMap(np.asarray(c, np.float32) if c is not None else e[None, :], None, d, e)
                for e, c, d in zip(embeddings, columns, durations)]
        found: list[list[SoundMatch]] = [[] for _ in range(len(embeddings))]
        prepared: dict[int, PreparedFrames] = {}  # per window, its map ready for every patch sound
        for sound in self._sounds.values():  # a snapshot: changes replace the dict, never mutate it
            if not sound.active:
                continue
            for i, window in enumerate(maps):
                if sound.patches and i not in prepared and sound.scores_on(window):
                    prepared[i] = PreparedFrames.of(window.columns[None])
                score, start_s, end_s = sound.score(window, prepared.get(i))
                if score >= sound.threshold:
                    found[i].append(SoundMatch(sound.name, score, float(sound.threshold), start_s, end_s))
        return [tuple(sorted(f, key=lambda m: -m.score)) for f in found]


@dataclass
class SoundService:
    """What AddSound/ListSounds/RemoveSound/MarkNotThis do: examples from uploaded audio and stored windows,
    thresholds calibrated against the store's recent windows (`SoundsConfig`), and the periodic recalibration."""

    library: SoundLibrary
    store: object  # service.store.event_store.EventStore
    config: object  # service.config.SoundsConfig
    windows: WindowSpec = WindowSpec()  # the pipeline's (audio examples are cut into its windows)

    def background(self, exclude_ids: Sequence[int] = ()) -> Background | None:
        """The store's recent windows embedded by the loaded model (their column maps where kept), or None."""
        if self.config.calibration_hours <= 0:
            return None
        dim, hours = self.library.embedding_dim, self.config.calibration_hours
        since = self.library.model_since_unix_ms
        covered = self.store.recent_window_hours(dim, hours, exclude_ids=exclude_ids, since_unix_ms=since)
        return Background(lambda: self.store.recent_window_maps(dim, hours, exclude_ids=exclude_ids, since_unix_ms=since),
                          covered)

    def window_map(self, window_id: int) -> WindowMap:
        """A stored window's map (its column map when still kept, else its pooled embedding); SoundError otherwise."""
        window = self.store.get_window(int(window_id), include_embedding=True)
        if window is None:
            raise SoundError("not_found", f"window {window_id}: not in the store (removed by retention?)")
        if window.embedding is None:
            raise SoundError("invalid_argument", f"window {window_id}: stored without an embedding")
        if len(window.embedding) != self.library.embedding_dim:
            raise SoundError("invalid_argument", f"window {window_id}: its embedding has {len(window.embedding)} "
                                                 f"dimensions, the loaded model {self.library.embedding_dim}")
        embedding = np.asarray(window.embedding, np.float32)
        kept = self.store.window_map(int(window_id))
        if kept is not None and kept.columns.shape[-1] == self.library.column_dim:
            return replace(kept, embedding=embedding)
        return WindowMap(embedding[None, :], None, (window.end_unix_ms - window.start_unix_ms) / 1000, embedding)

    def add(self, name: str, audio: Sequence[tuple[str, bytes]] = (), window_ids: Sequence[int] = (),
            threshold: float | None = None, replace_existing: bool = False) -> Sound:
        """Teach ``name`` from audio files (source name, bytes; every window of each is an example) and stored
        window ids; AudioError for undecodable audio, SoundError otherwise."""
        from encoder.audio import AudioError, AudioTooLarge, audio_header, decode_samples, decoded_size
        from encoder.windows import window_spans
        from service.analysis.uploads import MAX_UPLOAD_SAMPLES

        check_name(name)
        rate = self.library.sample_rate
        # One bound for the whole request, from the headers before anything is decoded: 200 files that each
        # fit must not add up to gigabytes.
        total = sum(decoded_size(*audio_header(data, source), rate, mono=True) for source, data in audio)
        if total > MAX_UPLOAD_SAMPLES:
            raise AudioTooLarge(f"the {len(audio)} audio file(s) of this request decode to {total:,} samples at "
                                f"{rate} Hz mono, above the limit of {MAX_UPLOAD_SAMPLES:,} per request")
        audio_windows = []
        for source, data in audio:
            samples = decode_samples(data, rate, mono=True, name=source, max_samples=MAX_UPLOAD_SAMPLES)[0][0]
            spans = window_spans(samples.shape[0], rate, self.windows.consecutive())
            if not spans:
                raise AudioError(f"{source}: {samples.shape[0] / rate:.2f} s is shorter than the 1 s minimum window")
            audio_windows += [(source, samples[s.start:s.end]) for s in spans]
        window_examples = [(int(i), self.window_map(int(i))) for i in window_ids]
        return self.library.add(name, audio_windows, window_examples, threshold, replace_existing,
                                self.background(exclude_ids=window_ids), self.config.alarms_per_hour)

    def detection_window(self, name: str, event_id: int) -> int:
        """The window of sound_detected event ``event_id`` of sound ``name``; SoundError when it is not one."""
        from service.daemon_vocabulary import SOUND_DETECTED

        change = self.store.get_event(int(event_id))
        if change is None:
            raise SoundError("not_found", f"event {event_id}: not in the store (removed by retention?)")
        if change.kind != SOUND_DETECTED or change.current != name:
            raise SoundError("invalid_argument", f"event {event_id} is a {change.kind} event of {change.current!r}, "
                                                 f"not a detection of {name!r}")
        if not change.window_id:
            raise SoundError("not_found", f"event {event_id}: its window was removed by retention")
        return int(change.window_id)

    def not_this(self, name: str, window_id: int) -> Sound:
        """Mark the detection of ``name`` in stored window ``window_id`` as wrong (see `SoundLibrary.mark_not_this`)."""
        return self.library.mark_not_this(name, int(window_id), self.window_map(int(window_id)), self.background(),
                                          self.config.alarms_per_hour)

    def recalibrate_due(self, now_unix_ms: int | None = None) -> list[Sound]:
        """Recalibrate every active sound whose threshold is older than ``sounds.recalibrate_hours``, or was set
        from its examples alone (no history yet), against the store's recent windows (one read of the store for
        all of them); returns the recalibrated sounds. An examples-only threshold is replaced as soon as the
        store holds `MIN_BACKGROUND_HOURS`: with the round-4 model it lets ~50 false alarms/h through."""
        now = int(time.time() * 1000) if now_unix_ms is None else int(now_unix_ms)
        every_ms = self.config.recalibrate_hours * 3_600_000
        due = [s for s in self.library.sounds() if s.active and (now - s.calibrated_unix_ms >= every_ms
                                                                  or not s.calibration.startswith("background"))]
        if not due:
            return []
        background = self.background()
        if background is None or background.hours < MIN_BACKGROUND_HOURS:
            return []  # too little history yet: the examples' rule stays until there is
        return [self.library.recalibrate(s.name, background, self.config.alarms_per_hour, "scheduled") for s in due]
