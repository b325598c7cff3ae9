"""Specific sounds (this doorbell, this beep) from 3 examples: detection and false alarms per hour of the
custom-sound detectors, on 26 short real recordings that no model has heard (bench/sounds/README.md).

Protocol (all draws seeded):
- Home: the audio of both labelled sets (homesounds, music) played as one continuous stream, cut into
  10 s windows 5 s off the clip grid (as bench/clip_embeddings.py does): 722 windows, 2.0 h. Even windows
  are the store's history (calibration, negatives), odd ones the test hour; then the halves swap.
- Examples (3 per sound): the recording through ONE capture-chain draw (encoder/degradation.py: room,
  room noise, microphone, sound server), each with its own noise, mixed at +6..+12 dB (event RMS over the
  window's) into a history window, with 1 s of that background before and after: a short file, as a user
  would record it.
- Test instances (10 per sound, condition and half, each in its own test window at a random offset, mixed at
  -6..+12 dB over that window's level): **same room**: the examples' room and placement, another
  microphone, noise and level draw; **another room**: every part of the chain drawn anew.
- False alarms: every test-half window (no sound mixed in) at the threshold calibrated on the history
  half (<= 1 alarm/h, encoder.few_shot.rate_threshold), counted over both halves: 2.0 h.
- "Not this": the 3 history windows that score highest for the sound (what a user would have marked as
  false alarms) become negative examples; the threshold is recalibrated on the history and the test hour
  is scored again. Compared at equal detection: the threshold after the marks that keeps at least the
  detection of before.

Detectors compared (one table): the pooled window embedding (before this bench's work); spans of the
encoder's projected columns (fixed lengths and the examples' own length, "embedding spans": the daemon's
detector until 2026-12-07), and a per-sound logistic model on those spans (examples against the history's
spans); the same span matching on two other maps from the same pass: the last stage before the projection
with its frequency bands kept ("map", `Encoder.column_map`: the daemon's detector later on 2026-12-07), and
the log-Mel features themselves ("log-mel", no network), each raw and
centred (less the window's median column, which takes out a stationary background and a microphone's
frequency response); spans scored by their lead over the window's median span ("contrast"); 2-D spectral
templates of the log-Mel columns above each band's background ("log-mel templates": the example's loudest
run of columns, flattened, against every run of the window); and the encoder run again on the window's 2 s
tiles every 0.5 s, the length it was trained on ("tiles"); and log-Mel patches (encoder/patch_matching.py: each
example's loudest 0.5 s at 20 ms x 64 bands, found at every place of the window by band-weighted normalised 2-D
cross-correlation: what the daemon runs, `CHOSEN`), also without band weights and of up to 1 s. The table also gives the detection an oracle
threshold would reach (<= 1 false alarm/h on the test hour itself): what the scores allow, whatever the
calibration. Quick looks: --sounds N and --detectors.

    .venv/bin/python -m bench.specific_sounds                          # bundled model, prints the tables
    .venv/bin/python -m bench.specific_sounds --model models/roomtone-p1.pt
    .venv/bin/python -m bench.specific_sounds --write-docs             # also writes them into docs/sounds.md
    .venv/bin/python -m bench.specific_sounds --check-sources          # only: no clip's package feeds ../shared/data

Runs on any model file (--model). The stream is embedded once and cached in bench/.cache per model; every
detector took 1808 s at load average 4.2 on 2 shared cores (2026-12-07), the log-Mel patches about 40 % of it.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
from bench.doc_sections import write_marked_section
from bench.specific_sound_clips import CLIPS
from encoder.patch_matching import FRAME_POOL, MAX_PATCH_S, example_patch, patch_length, patch_scores, pooled_frames
from encoder.few_shot import (best_spans, column_levels, loudest_span, nearest_example_scores, rate_threshold, span_embeddings,
                              span_length, span_scores, unit_rows)

DATA = REPO.parent / "shared" / "data"
CACHE = REPO / "bench" / ".cache"
DOCS = REPO / "docs" / "sounds.md"
CLIP_DIR = REPO / "bench" / "sounds" / "specific"
EXAMPLES = 3
INSTANCES = 10  # per condition and half: 20 test windows per sound and condition
EXAMPLE_SNR_DB = (6.0, 12.0)
TEST_SNR_DB = (-6.0, 12.0)
CONTEXT_S = 1.0
WINDOW_S = 10.0
ALARMS_PER_HOUR = 1.0
MARKS = 3
TARGET_SAME, TARGET_OTHER = 0.80, 0.60


REPRESENTATIONS = ("embedding", "map", "log-mel", "tiles")
#: Tiles: the window's log-Mel cut into pieces of the encoder's training length (models/roomtone.train.toml,
#: tile_s), each embedded whole as in training, every TILE_HOP_S (every other tile: a hop of 1 s).
TILE_S, TILE_HOP_S = 2.0, 0.5
#: Templates: a band's background is this percentile of its level over the window (low: long sounds do not raise it).
BACKGROUND_PERCENTILE = 20.0


@dataclass
class Home:
    """The home stream: audio of every window (int16), its pooled embeddings and column maps."""

    audio: np.ndarray  # int16 [n, samples]
    embeddings: np.ndarray  # [n, D]
    columns: dict  # representation -> float32 [n, T, dim]
    rate: int


class Maps:
    """Per window, in one pass of the encoder: the pooled embedding and three column maps: ``embedding``
    (the projected columns), ``map`` (the last stage before the projection, `Encoder.column_map`, channels x frequency bands:
    keeps where in frequency) and ``log-mel`` (the features' mean dB per Mel band over each column's frames: no
    network); and ``tiles``: the unit embeddings of the window's `TILE_S` tiles every `TILE_HOP_S` (a second
    pass of the encoder over the tiles: what it was trained on)."""

    def __init__(self, bundle) -> None:
        from encoder.batchnorm_folding import inference_encoder

        self.bundle = bundle
        self.tiles = True  # the tiles' second pass costs 4 times the window's: off when no detector uses them
        self.encoder = inference_encoder(bundle.encoder)
        self.sample_rate = bundle.feature_config.sample_rate

    def embed_with_columns(self, windows: list[np.ndarray]) -> tuple[np.ndarray, list[dict]]:
        """Pooled embeddings ``[n, D]`` and per window a dict of column maps ``[T, dim]``."""
        import torch
        import torch.nn.functional as F

        from encoder.embedder import length_groups
        from encoder.features import log_mel

        pooled = np.zeros((len(windows), self.bundle.embedding_dim), np.float32)
        maps: list = [None] * len(windows)
        with torch.inference_mode():
            for group in length_groups(windows):
                batch = torch.stack([torch.as_tensor(windows[i], dtype=torch.float32) for i in group])
                features = log_mel(batch, self.bundle.feature_config)
                x = self.encoder._stage_map(features.unsqueeze(1))
                columns = self.encoder.projection(x.mean(dim=2).transpose(1, 2))
                pooled[group] = F.normalize(self.encoder.projection(x.mean(dim=(2, 3))), dim=1).numpy()
                t = x.shape[3]
                freq = self.encoder.column_map(x)
                edges = np.linspace(0, features.shape[2], t + 1).astype(int)
                mel = torch.stack([features[:, :, a:max(b, a + 1)].mean(dim=2) for a, b in zip(edges[:-1], edges[1:])], dim=1)
                tiles = tile_embeddings(self.encoder, features, self.bundle.feature_config.hop_ms) if self.tiles else None
                for k, i in enumerate(group):
                    maps[i] = {"embedding": columns[k].numpy(), "map": freq[k].numpy(), "log-mel": mel[k].numpy(),
                               "frames": pooled_frames(features[k].numpy())}
                    if tiles is not None:
                        maps[i]["tiles"] = tiles[k]
        return pooled, maps


def tile_starts(frames: int, tile: int, hop: int) -> list[int]:
    """First frames of the tiles of a log-Mel of ``frames`` frames (one tile of all of it when shorter)."""
    return [0] if frames <= tile else list(range(0, frames - tile + 1, hop))


def tile_levels(samples: np.ndarray, rate: int, tiles: int) -> np.ndarray:
    """RMS level in dB of each of the ``tiles`` tiles of mono ``samples`` (as `tile_starts` cuts them)."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    size, hop = int(TILE_S * rate), int(TILE_HOP_S * rate)
    power = [np.mean(np.square(x[k * hop:k * hop + size])) if k * hop < len(x) else 0.0 for k in range(tiles)]
    return 10.0 * np.log10(np.maximum(power, 1e-12))


def tile_embeddings(encoder, features, hop_ms: float) -> np.ndarray:
    """``features [n, mels, frames]`` -> unit embeddings ``[n, tiles, D]`` of their `TILE_S` tiles every `TILE_HOP_S`."""
    import torch

    tile, hop = int(round(TILE_S * 1000 / hop_ms)), int(round(TILE_HOP_S * 1000 / hop_ms))
    starts = tile_starts(features.shape[2], tile, hop)
    pieces = torch.stack([features[:, :, a:a + tile] for a in starts], dim=1)  # [n, tiles, mels, frames]
    n, t = pieces.shape[:2]
    return encoder(pieces.reshape(n * t, 1, *pieces.shape[2:])).reshape(n, t, -1).numpy()


def excess_map(columns: np.ndarray) -> np.ndarray:
    """Each log-Mel column's level above its band's background (`BACKGROUND_PERCENTILE` of the band over the
    window), floored at 0 dB: ``[..., T, bands]`` -> the same shape."""
    x = np.asarray(columns, dtype=np.float32)
    return np.maximum(x - np.percentile(x, BACKGROUND_PERCENTILE, axis=-2, keepdims=True), 0.0)


def unit_runs(maps: np.ndarray, length: int) -> np.ndarray:
    """Every run of ``length`` columns of ``maps [n, T, d]`` flattened to unit length ``[n, runs, length * d]``."""
    x = np.asarray(maps, dtype=np.float32)
    if x.shape[1] < length:
        x = np.concatenate([x, np.zeros((x.shape[0], length - x.shape[1], x.shape[2]), np.float32)], axis=1)
    runs = np.lib.stride_tricks.sliding_window_view(x, length, axis=1).transpose(0, 1, 3, 2)
    runs = runs.reshape(x.shape[0], x.shape[1] - length + 1, -1)
    norms = np.linalg.norm(runs, axis=2, keepdims=True)
    return runs / np.where(norms > 0, norms, 1.0)


def loudest_template(maps: np.ndarray, length: int) -> np.ndarray:
    """An example's template ``[length * d]`` (unit length): its run of ``length`` columns of ``maps [T, d]``
    (`excess_map`) with the most energy above the background."""
    runs = np.lib.stride_tricks.sliding_window_view(np.square(np.asarray(maps)).sum(axis=1), min(length, len(maps)))
    start = int(np.argmax(runs.sum(axis=1)))
    return unit_runs(np.asarray(maps)[None, start:start + length], length)[0, 0]


def best_templates(maps: np.ndarray, templates: np.ndarray, negatives=None) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[n]`` and best run's first column ``[n]``: each run's cosine to the nearest template (`span_scores`)."""
    templates = np.asarray(templates, dtype=np.float32)
    length = templates.shape[1] // maps.shape[2]
    runs = unit_runs(maps, length)
    n, r, _ = runs.shape
    scores = span_scores(runs.reshape(n * r, -1), templates, negatives).reshape(n, r)
    starts = scores.argmax(axis=1)
    return scores[np.arange(n), starts], starts


def contrast_spans(columns: np.ndarray, examples: np.ndarray, span: int, negatives=None) -> tuple[np.ndarray, np.ndarray]:
    """Like `encoder.few_shot.best_spans`, each span scored by its lead over the window's median span."""
    x = np.asarray(columns, dtype=np.float32)
    n, t, d = x.shape
    span = max(1, min(int(span), t))
    sums = np.cumsum(np.concatenate([np.zeros((n, 1, d), np.float32), x], axis=1), axis=1)
    scores = span_scores((sums[:, span:] - sums[:, :-span]).reshape(-1, d), examples, negatives).reshape(n, -1)
    scores = scores - np.median(scores, axis=1, keepdims=True)
    starts = scores.argmax(axis=1)
    return scores[np.arange(n), starts], starts


def check_sources(data: Path) -> list[str]:
    """Packages of bench/sounds/specific that are also sources of ../shared/data (must be none)."""
    used: set[str] = set()
    for path, column in ((data / "unlabelled" / "manifest.csv", "source_files"),
                         (data / "homesounds" / "meta.csv", "source_file"), (data / "music" / "meta.csv", "source_file")):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                for source in row[column].split(";"):
                    used.add(source.strip().split(":")[0])
                    used.add(source.strip().rsplit("/", 1)[-1])
                used.update(p.strip() for p in row.get("source_package", "").split(";"))
    return sorted({pkg for _, pkg, member, _ in CLIPS if pkg in used}
                  | {member for _, _, member, _ in CLIPS if member.rsplit("/", 1)[-1] in used})


def load_home(model: Path, data: Path, embedder) -> Home:
    """The home stream of both labelled sets, embedded by ``model`` (cached per model file)."""
    from encoder.audio import load_audio
    from encoder.datasets import read_dataset
    from encoder.evaluation import file_sha256

    rate = embedder.sample_rate
    windows = []
    for name in ("homesounds", "music"):
        records = read_dataset(data / name)
        order = np.random.default_rng(0).permutation(len(records))
        waves = [load_audio(r.path, rate, mono=True)[0][0].numpy() for r in records]
        half = int(WINDOW_S / 2 * rate)
        for a, b in zip(order[:-1], order[1:]):
            w = np.concatenate([waves[a][half:], waves[b][:half]])
            w = np.pad(w, (0, max(0, 2 * half - len(w))))[:2 * half]
            windows.append(np.clip(np.round(w * 32767), -32768, 32767).astype(np.int16))
    audio = np.stack(windows)
    cache = CACHE / f"specific-home3-{file_sha256(model)[:16]}.npz"
    frames = home_frames(audio, embedder.bundle.feature_config)
    if cache.is_file():
        stored = np.load(cache)
        if stored["embeddings"].shape[0] == len(audio):
            return Home(audio, stored["embeddings"],
                        {**{r: stored[r].astype(np.float32) for r in REPRESENTATIONS}, "frames": frames}, rate)
    embeddings, columns = embed(embedder, [w.astype(np.float32) / 32767 for w in audio], "embed the home stream")
    stacked = {r: np.stack([c[r] for c in columns]) for r in REPRESENTATIONS}
    CACHE.mkdir(parents=True, exist_ok=True)
    np.savez(cache, embeddings=embeddings, **{r: v.astype(np.float16) for r, v in stacked.items()})
    return Home(audio, embeddings, {**stacked, "frames": frames}, rate)


def home_frames(audio: np.ndarray, feature_config) -> np.ndarray:
    """The patch frames (encoder/patch_matching.py) of int16 windows ``[n, samples]``: ``[n, T, B]`` (not cached: seconds)."""
    import torch

    from encoder.features import log_mel

    out = []
    with torch.inference_mode():
        for start in range(0, len(audio), 64):
            batch = torch.as_tensor(audio[start:start + 64].astype(np.float32) / 32767)
            out.append(pooled_frames(log_mel(batch, feature_config).numpy()))
    return np.concatenate(out)


def embed(embedder, windows: list[np.ndarray], desc: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pooled embeddings and column maps of mono windows, 16 at a time, with a progress bar."""
    from tqdm import tqdm

    pooled, columns = [], []
    for start in tqdm(range(0, len(windows), 16), desc=desc, leave=False):
        e, c = embedder.embed_with_columns(windows[start:start + 16])
        pooled.append(e)
        columns += c
    return np.concatenate(pooled), columns


def through_chain(event: np.ndarray, rate: int, draw) -> np.ndarray:
    """The event through one capture chain (with 0.3 s for the room's tail)."""
    from encoder.degradation import through_the_air

    padded = np.pad(event, (0, int(0.3 * rate)))
    return through_the_air(padded[None, :], rate, draw)[0]


def mix(background: np.ndarray, event: np.ndarray, snr_db: float, start: int) -> np.ndarray:
    """``event`` added at ``start`` with its RMS ``snr_db`` over the background's; peak-limited to full scale."""
    bg = background.astype(np.float64)
    gain = (np.sqrt(np.mean(bg ** 2)) + 1e-5) / (np.sqrt(np.mean(event.astype(np.float64) ** 2)) + 1e-9)
    out = bg.copy()
    out[start:start + len(event)] += gain * 10 ** (snr_db / 20) * event
    return (out / max(1.0, float(np.abs(out).max()))).astype(np.float32)


@dataclass
class SoundCase:
    """One sound's examples (files) and test windows, with where the event is in each test window."""

    name: str
    example_files: list[np.ndarray]
    tests: dict[str, list[tuple[np.ndarray, int, int]]]  # condition -> (window, start sample, end sample)


@dataclass
class Chained:
    """One sound through its capture chains: the examples' draws and each test instance's."""

    examples: list[np.ndarray]
    tests: dict[str, list[np.ndarray]]


def chain_sound(name: str, event: np.ndarray, rate: int, seed: int, instances: int) -> Chained:
    """The examples through one draw (each with its own noise) and the test instances through their own draws:
    same room (the examples' room and placement, other microphone, noise and level) or another room."""
    from encoder.degradation import AirConfig, clip_seed, draw_air

    config = AirConfig()
    base = draw_air(config, clip_seed(seed, f"{name}/examples"))
    examples = [through_chain(event, rate, replace(base, noise_seed=int(clip_seed(seed, f"{name}/example/{k}"))))
                for k in range(EXAMPLES)]
    room_fields = ("room_m", "source_m", "mic_m", "rt60_s", "high_rt60_s")
    tests: dict[str, list[np.ndarray]] = {"same room": [], "another room": []}
    for condition in tests:
        for i in range(instances):
            draw = draw_air(config, clip_seed(seed, f"{name}/{condition}/{i}"))
            if condition == "same room":
                draw = replace(draw, **{f: getattr(base, f) for f in room_fields})
            tests[condition].append(through_chain(event, rate, draw))
    return Chained(examples, tests)


def build_case(index: int, name: str, chained: Chained, home: Home, history: np.ndarray, test: np.ndarray,
               seed: int) -> SoundCase:
    """The example files (over history windows) and test windows (over test windows) of one sound and half."""
    rate, n = home.rate, home.audio.shape[1]
    rng = np.random.default_rng([seed, index])
    context = int(CONTEXT_S * rate)
    examples = []
    for event in chained.examples:
        length = min(len(event) + 2 * context, n)
        window = home.audio[rng.choice(history)].astype(np.float32) / 32767
        offset = int(rng.integers(0, n - length + 1))
        examples.append(mix(window[offset:offset + length], np.pad(event, (context, 0))[:length],
                            rng.uniform(*EXAMPLE_SNR_DB), 0))
    tests: dict[str, list] = {}
    for condition, events in chained.tests.items():
        tests[condition] = []
        for event in events:
            event = event[:n]
            start = int(rng.integers(0, n - len(event) + 1))
            window = home.audio[rng.choice(test)].astype(np.float32) / 32767
            tests[condition].append((mix(window, event, rng.uniform(*TEST_SNR_DB), start), start, start + len(event)))
    return SoundCase(name, examples, tests)


#: detector -> (representation, centred on the window's median column, span length: columns or "adaptive")
DETECTORS = {
    "pooled": (None, False, 0),
    "embedding spans of 2": ("embedding", False, 2),
    "embedding spans of 4": ("embedding", False, 4),
    "embedding spans of 8": ("embedding", False, 8),
    "embedding spans": ("embedding", False, "adaptive"),
    "embedding spans, logistic": ("embedding", False, "adaptive"),
    "embedding spans, centred": ("embedding", True, "adaptive"),
    "map spans": ("map", False, "adaptive"),
    "map spans, centred": ("map", True, "adaptive"),
    "log-mel spans": ("log-mel", False, "adaptive"),
    "log-mel spans, centred": ("log-mel", True, "adaptive"),
    "embedding spans, contrast": ("embedding", False, "adaptive"),
    "map spans, contrast": ("map", False, "adaptive"),
    "log-mel spans, centred, contrast": ("log-mel", True, "adaptive"),
    "log-mel templates": ("log-mel", "excess", "adaptive"),
    "log-mel templates of 4": ("log-mel", "excess", 4),
    "log-mel patches": ("frames", "weighted", MAX_PATCH_S),
    "log-mel patches, unweighted": ("frames", "unweighted", MAX_PATCH_S),
    "log-mel patches of 1 s": ("frames", "weighted", 1.0),
    "tiles of 2 s, hop 0.5 s": ("tiles", False, 1),
    "tiles of 2 s, hop 1 s": ("tiles/2", False, 1),
}
CHOSEN = "log-mel patches"  # the daemon's detector (service/analysis/sound_library.py)


def detector_columns(detector: str, columns: dict | np.ndarray) -> np.ndarray:
    """The column maps ``[n, T, dim]`` a detector matches on (centred: less each window's median column)."""
    representation, centred, _ = DETECTORS[detector]
    x = columns["tiles"][..., ::2, :] if representation == "tiles/2" else columns[representation]
    if representation == "frames":
        return x
    if centred == "excess":
        return excess_map(x)
    return x - np.median(x, axis=-2, keepdims=True) if centred else x


def window_scores(detector: str, columns: dict, pooled: np.ndarray, sound: dict) -> tuple[np.ndarray, np.ndarray]:
    """Scores ``[n]`` and best-span first columns ``[n]`` of windows for one sound."""
    if detector == "pooled":
        return nearest_example_scores(pooled, sound["pooled"]), np.zeros(len(pooled), int)
    span, examples = sound["span"][detector], sound["spans"][detector]
    columns = detector_columns(detector, columns)
    if DETECTORS[detector][1] == "excess":
        return best_templates(columns, examples, sound.get("negatives"))
    if DETECTORS[detector][0] == "frames":
        return patch_scores(columns, examples, sound["weights"][detector], sound.get("negatives"))
    if detector in sound["logistic"]:
        n, t, d = columns.shape
        sums = np.cumsum(np.concatenate([np.zeros((n, 1, d), np.float32), columns], axis=1), axis=1)
        rows = sound["logistic"][detector].decision_function(unit_rows((sums[:, span:] - sums[:, :-span]).reshape(-1, d)))
        rows = rows.reshape(n, t - span + 1)
        return rows.max(axis=1), rows.argmax(axis=1)
    if detector.endswith("contrast"):
        return contrast_spans(columns, examples, span, sound.get("negatives"))
    return best_spans(columns, examples, span, sound.get("negatives"))


def prepare(case: SoundCase, embedder, detectors, history: dict) -> dict:
    """The sound's example embeddings for every detector (a logistic one is fit against the history's spans)."""
    pooled, columns = embedder.embed_with_columns(case.example_files)
    levels = [column_levels(f, len(c["embedding"])) for f, c in zip(case.example_files, columns)]
    adaptive = int(np.median([span_length(lv) for lv in levels]))
    rate = embedder.sample_rate
    sound: dict = {"pooled": pooled, "span": {}, "spans": {}, "logistic": {}}
    for detector in detectors:
        if detector == "pooled":
            continue
        rule = DETECTORS[detector][2]
        if DETECTORS[detector][0] == "frames":  # each example's loudest run of the sound's median length
            frame_s = FRAME_POOL * embedder.bundle.feature_config.hop_ms / 1000
            length = int(np.median([patch_length(c["frames"], frame_s, longest_s=rule) for c in columns]))
            patches = [example_patch(c["frames"], length) for c in columns]
            sound["span"][detector] = (length, frame_s)
            sound["spans"][detector] = np.stack([p for p, _, _ in patches])
            weighted = DETECTORS[detector][1] == "weighted"
            sound.setdefault("weights", {})[detector] = np.stack([w if weighted else np.ones_like(w) for _, w, _ in patches])
            continue
        span = adaptive if rule == "adaptive" else int(rule)
        sound["span"][detector] = span
        if DETECTORS[detector][1] == "excess":  # each example's template: its loudest run of the span's length
            sound["spans"][detector] = np.stack([
                loudest_template(detector_columns(detector, {k: v[None] for k, v in c.items()})[0], span)
                for c in columns])
            continue
        if DETECTORS[detector][0].startswith("tiles"):  # each example's loudest tile
            tiles = [detector_columns(detector, {"tiles": c["tiles"][None]})[0] for c in columns]
            stride = 2 if DETECTORS[detector][0] == "tiles/2" else 1
            sound["spans"][detector] = np.stack([
                loudest_span(t, tile_levels(f, rate, len(c["tiles"]))[::stride], 1)[0]
                for t, f, c in zip(tiles, case.example_files, columns)])
            continue
        sound["spans"][detector] = np.stack([loudest_span(detector_columns(detector, {k: v[None] for k, v in c.items()})[0],
                                                          lv, span)[0] for c, lv in zip(columns, levels)])
        if detector.endswith("logistic"):
            from sklearn.linear_model import LogisticRegression

            negatives = np.concatenate([span_embeddings(c, span) for c in detector_columns(detector, history)[::2]])
            x = np.concatenate([sound["spans"][detector], negatives])
            y = np.r_[np.ones(len(sound["spans"][detector])), np.zeros(len(negatives))]
            sound["logistic"][detector] = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit(x, y)
    return sound


def evaluate(home: Home, embedder, seed: int, detectors=tuple(DETECTORS), clips=None) -> tuple[dict, dict]:
    """Per detector, sound, condition and half: detection and false alarms; and the "not this" figures."""
    from tqdm import tqdm

    from encoder.audio import load_audio

    n = len(home.embeddings)
    halves = [np.flatnonzero(np.arange(n) % 2 == 0), np.flatnonzero(np.arange(n) % 2 == 1)]
    results: dict = {}
    marks: dict = {}
    col_s = WINDOW_S / home.columns["embedding"].shape[1]
    for index, (name, *_rest) in enumerate(tqdm(clips or CLIPS, desc="sounds")):
        event = load_audio(CLIP_DIR / f"{name}.flac", home.rate, mono=True)[0][0].numpy()
        chained = chain_sound(name, event, home.rate, seed, 2 * INSTANCES)
        for h, (history, test) in enumerate((halves, halves[::-1])):
            half = Chained(chained.examples, {c: e[h * INSTANCES:(h + 1) * INSTANCES] for c, e in chained.tests.items()})
            case = build_case(index, name, half, home, history, test, seed + 1000 * h)
            hist_cols = {r: v[history] for r, v in home.columns.items()}
            test_cols = {r: v[test] for r, v in home.columns.items()}
            sound = prepare(case, embedder, detectors, hist_cols)
            hours = len(test) * WINDOW_S / 3600
            tests = {}
            for c, t in case.tests.items():
                pooled, maps = embedder.embed_with_columns([w for w, _, _ in t])
                tests[c] = (pooled, {r: np.stack([m[r] for m in maps]) for r in maps[0]})
            for detector in detectors:
                hist, _ = window_scores(detector, hist_cols, home.embeddings[history], sound)
                threshold = rate_threshold(hist, len(history) * WINDOW_S / 3600, ALARMS_PER_HOUR)
                neg, _ = window_scores(detector, test_cols, home.embeddings[test], sound)
                row = {"alarms_per_hour": float(np.sum(neg >= threshold)) / hours}
                oracle = rate_threshold(neg, hours, ALARMS_PER_HOUR)  # what the scores allow on the test hour itself
                for condition, (pooled, columns) in tests.items():
                    pos, start = window_scores(detector, columns, pooled, sound)
                    row[condition] = float(np.mean(pos >= threshold))
                    row[f"{condition} oracle"] = float(np.mean(pos >= oracle))
                    spans = [where_heard(detector, s, sound, col_s) for s in start]
                    hit = [a < e / home.rate and b > s / home.rate
                           for (a, b), (_, s, e) in zip(spans, case.tests[condition])]
                    row[f"{condition} located"] = float(np.mean([ok for ok, p in zip(hit, pos >= threshold) if p])) \
                        if np.any(pos >= threshold) else float("nan")
                results[(detector, name, h)] = row
            # "not this": the history's 3 highest-scoring windows become negatives (chosen detector only)
            detector = CHOSEN
            hist, starts = window_scores(detector, hist_cols, home.embeddings[history], sound)
            span = sound["span"][detector]
            top = np.argsort(hist)[::-1][:MARKS]
            before = dict(sound)
            marked = detector_columns(detector, hist_cols)
            if DETECTORS[detector][0] == "frames":  # the marked windows' best-matching runs of frames
                length = span[0]
                negatives = np.stack([marked[i][s:s + length] for i, s in zip(top, starts[top])])
            else:
                negatives = np.stack([span_embeddings(marked[i][s:s + span], span)[0] for i, s in zip(top, starts[top])])
            after = dict(sound, negatives=negatives)
            row = {}
            for label, state in (("before", before), ("after", after)):
                h_scores, _ = window_scores(detector, hist_cols, home.embeddings[history], state)
                t_scores, _ = window_scores(detector, test_cols, home.embeddings[test], state)
                pos = {c: window_scores(detector, cols, pooled, state)[0] for c, (pooled, cols) in tests.items()}
                row[label] = (h_scores, t_scores, pos)
            marks[(name, h)] = row
    return results, marks


def where_heard(detector: str, start: int, sound: dict, col_s: float) -> tuple[float, float]:
    """Start and end (s) in the window of a detector's best span (or tile) beginning at ``start``."""
    representation = DETECTORS[detector][0]
    if representation == "frames":
        length, frame_s = sound["span"][detector]
        return start * frame_s, (start + length) * frame_s
    if representation in ("tiles", "tiles/2"):
        begin = start * TILE_HOP_S * (2 if representation == "tiles/2" else 1)
        return begin, begin + TILE_S
    return start * col_s, (start + sound["span"].get(detector, 32)) * col_s


def not_this_figures(marks: dict, loose_per_hour: float = 10.0) -> dict:
    """False alarms/h before and after the marks at equal detection (pooled over sounds and halves), at the
    calibrated point (<= 1/h) and at a looser one (``loose_per_hour`` on the history) where counts are larger."""
    out = {}
    for label, rate in (("calibrated", ALARMS_PER_HOUR), ("loose", loose_per_hour)):
        fa_before = fa_after = fa_after_cal = det_before = det_after_cal = 0.0
        count = 0
        for row in marks.values():
            h0, t0, p0 = row["before"]
            h1, t1, p1 = row["after"]
            hours_h, hours_t = len(h0) * WINDOW_S / 3600, len(t0) * WINDOW_S / 3600
            th0 = rate_threshold(h0, hours_h, rate)
            pos0 = np.concatenate(list(p0.values()))
            pos1 = np.concatenate(list(p1.values()))
            detection = np.mean(pos0 >= th0)
            # after: the highest threshold that keeps at least the detection of before
            candidates = np.sort(pos1)[::-1]
            needed = int(np.ceil(detection * len(pos1) - 1e-9))
            th1 = candidates[needed - 1] if needed > 0 else np.inf
            th1_cal = rate_threshold(h1, hours_h, rate)
            fa_before += np.sum(t0 >= th0) / hours_t
            fa_after += np.sum(t1 >= th1) / hours_t
            fa_after_cal += np.sum(t1 >= th1_cal) / hours_t
            det_before += detection
            det_after_cal += np.mean(pos1 >= th1_cal)
            count += 1
        out[label] = {"detection": det_before / count, "alarms_before": fa_before / count,
                      "alarms_after_equal_detection": fa_after / count,
                      "alarms_after_recalibrated": fa_after_cal / count, "detection_after_recalibrated": det_after_cal / count}
    return out


def tables(results: dict, marks: dict, detectors=tuple(DETECTORS), clips=None) -> str:
    """Markdown: detector comparison, per sound (chosen detector), and the "not this" table."""
    names = [c[0] for c in (clips or CLIPS)]
    mean = lambda d, k: float(np.nanmean([results[(d, s, h)][k] for s in names for h in (0, 1)]))  # noqa: E731
    lines = ["| detector | detection, same room | detection, another room | false alarms/h | best span overlaps the sound "
             "| oracle threshold: same room / another room |",
             "|---|---|---|---|---|---|"]
    for d in detectors:
        located = "—" if d == "pooled" else f"{100 * mean(d, 'same room located'):.0f} %"
        lines.append(f"| {d} | {100 * mean(d, 'same room'):.1f} % | {100 * mean(d, 'another room'):.1f} % | "
                     f"{mean(d, 'alarms_per_hour'):.2f} | {located} | {100 * mean(d, 'same room oracle'):.1f} % / "
                     f"{100 * mean(d, 'another room oracle'):.1f} % |")
    chosen = CHOSEN
    lines += ["", f"Per sound ({chosen}, the daemon's detector, 3 examples, both halves averaged):", "",
              "| sound | detection, same room | detection, another room | false alarms/h |", "|---|---|---|---|"]
    for s in names:
        r = [results[(chosen, s, h)] for h in (0, 1)]
        lines.append(f"| {s} | {100 * np.mean([x['same room'] for x in r]):.0f} % | "
                     f"{100 * np.mean([x['another room'] for x in r]):.0f} % | "
                     f"{np.mean([x['alarms_per_hour'] for x in r]):.1f} |")
    figures = not_this_figures(marks)
    lines += ["", f"\"Not this\" ({chosen}, the daemon's detector): {MARKS} marks per sound on the history's highest-scoring windows, "
              "mean over sounds and halves:", "",
              "| operating point | detection | false alarms/h before | after, at equal detection | after, recalibrated (detection) |",
              "|---|---|---|---|---|"]
    for label, f in figures.items():
        point = "calibrated, <= 1 alarm/h" if label == "calibrated" else "loose, <= 10 alarms/h on the history"
        lines.append(f"| {point} | {100 * f['detection']:.1f} % | {f['alarms_before']:.2f} | "
                     f"{f['alarms_after_equal_detection']:.2f} | {f['alarms_after_recalibrated']:.2f} "
                     f"({100 * f['detection_after_recalibrated']:.1f} %) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "roomtone.pt", help="model file (default: the bundled one)")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared data (homesounds, music, unlabelled)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/sounds.md")
    parser.add_argument("--check-sources", action="store_true", help="only check that no clip comes from a source of the shared data")
    parser.add_argument("--sounds", type=int, default=None, help="only the first N sounds (quick looks; the docs use all)")
    parser.add_argument("--detectors", nargs="+", choices=list(DETECTORS), default=list(DETECTORS),
                        help="detectors to compare")
    args = parser.parse_args(argv)
    overlap = check_sources(args.data)
    if overlap:
        print(f"these clips' sources are in {args.data}: {', '.join(overlap)}", file=sys.stderr)
        return 1
    print(f"sources: none of the {len(CLIPS)} clips' packages or files is a source of {args.data}")
    if args.check_sources:
        return 0
    import torch

    from encoder.model_file import load_model

    torch.set_num_threads(1)
    started = time.time()
    embedder = Maps(load_model(args.model))
    home = load_home(args.model, args.data, embedder)
    embedder.tiles = any(DETECTORS[d][0] in ("tiles", "tiles/2") for d in args.detectors)
    clips = CLIPS[:args.sounds] if args.sounds else CLIPS
    detectors = tuple(dict.fromkeys(args.detectors + [CHOSEN]))
    results, marks = evaluate(home, embedder, args.seed, detectors, clips)
    load = Path("/proc/loadavg").read_text().split()[:3]
    text = (f"Model {args.model.name}; home stream {len(home.embeddings)} windows "
            f"({len(home.embeddings) * WINDOW_S / 3600:.2f} h), {len(clips)} sounds x {INSTANCES} test windows per "
            f"condition and half, {EXAMPLES} examples; {time.time() - started:.0f} s at load average {' '.join(load)}.\n\n"
            f"{tables(results, marks, detectors, clips)}\n")
    print(text)
    if args.write_docs:
        write_marked_section(DOCS, f"specific-sounds-{args.model.stem}", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
