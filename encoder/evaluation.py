"""`roomtone evaluate` as a procedure: embed a labelled dataset, probe it and its baselines on the
dataset's folds, sweep k-Means, draw the embedding map, and hand everything to `encoder.report`.

Protocols (docs/evaluation.md): the clean probe (P1 when the model was pre-trained on unlabelled audio
alone) and, with ``air``, P2: the same folds and heads, each held-out fold scored after the seeded
"through the air" degradation of `encoder.degradation` while the training folds stay clean.

Read top to bottom: config, data, features per method, probes, clusters, map, files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from encoder.atomic_files import replacing
from encoder.audio import load_audio
from encoder.datasets import Record, read_dataset, summarize
from encoder.degradation import DEGRADATION_VERSION, AirConfig, degrade_clip
from encoder.file_digest import file_sha256
from encoder.probe import ProbeResult, leave_package_out_probe, linear_probe
from encoder.segment_table import SegmentTable, save_index, segment_table

RENDERED_SUFFIX = "_rendered"
METHOD_NAMES = {
    "model": "roomtone embedding (this model)",
    "mfcc": "MFCC-40 mean+std",
    "random": "same CNN, random weights",
    "aisfx": "aisfx (pretrained sound-effects CNN, 512-d)",
}


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate and where to write it; ``baselines`` is any of 'mfcc', 'random', 'aisfx'."""

    model_path: Path
    data_path: Path
    out_dir: Path
    baselines: tuple[str, ...] = ("mfcc", "random", "aisfx")
    ks: tuple[int, ...] = tuple(range(2, 16))
    neighbours_k: int = 10
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    command: str = ""
    cache_dir: Path | None = None
    notes: str = ""
    air: bool = False
    air_config: AirConfig = AirConfig()
    probe_only: bool = False
    head_copies: int = 0  # augmented copies (training capture chain) every probe head is also fit on


@dataclass
class MethodResult:
    """Probe results of one method on all classes and (if the data has them) without `_rendered` styles."""

    key: str
    name: str
    probe: ProbeResult | None = None
    probe_without_rendered: ProbeResult | None = None
    air: ProbeResult | None = None
    lpo: ProbeResult | None = None  # P1-lpo: leave-package-out folds (None when the data names no packages)
    unavailable: str = ""


@dataclass
class EvaluationResult:
    """Everything the report shows."""

    config: EvaluationConfig
    model_sha256: str
    model_metadata: dict
    records: list[Record]
    table: SegmentTable
    methods: list[MethodResult] = field(default_factory=list)
    sweep: object = None
    figures: dict[str, str] = field(default_factory=dict)
    data_summary: object = None


def display_path(path: str | Path, data_path: Path) -> str:
    """A clip's path as the dataset argument plus the path inside the dataset (readable, portable)."""
    root = data_path if data_path.is_dir() else data_path.parent
    try:
        return os.path.join(str(root), os.path.relpath(Path(path), root.resolve()))
    except ValueError:
        return str(path)


def probe_both(table: SegmentTable, extra: list[SegmentTable] = ()) -> tuple[ProbeResult, ProbeResult | None]:
    """The probe on all classes, and without the `_rendered` styles when the data has any (``extra``:
    augmented copies of the segments whose training-fold rows join every head's training rows)."""
    rendered = np.char.endswith(table.labels.astype(str), RENDERED_SUFFIX)
    full = linear_probe(table, extra_train=extra)
    if not rendered.any() or rendered.all():
        return full, None
    return full, linear_probe(table.select(~rendered), extra_train=[e.select(~rendered) for e in extra])


class ChangedClips:
    """Clips as a method sees them after a seeded change: decoded at ``rate``, changed once by
    ``change(samples [channels, n], rate, name)`` (``name``: the clip's path inside the dataset), kept as
    16-bit samples and resampled for each method; ``variant`` is what the feature cache keys on. With
    ``cache_dir`` the changed samples are also kept on disk (``changed-clips/``), keyed by the variant, the
    clip's name, size and mtime: they do not depend on the model, so a new model's head or probe only
    embeds them (the training capture chain costs seconds per clip, embedding milliseconds)."""

    def __init__(self, change: Callable[[np.ndarray, int, str], np.ndarray], variant: dict, root: Path, rate: int,
                 cache_dir: Path | None = None) -> None:
        self.change, self._variant, self.root, self.rate = change, variant, root, rate
        self.cache_dir = cache_dir
        self._clips: dict[Path, np.ndarray] = {}

    def name(self, path: Path) -> str:
        """The clip's path inside the dataset (what its draws are seeded by), with / separators."""
        return Path(os.path.relpath(Path(path).resolve(), self.root.resolve())).as_posix()

    def __call__(self, path: Path, rate: int) -> tuple[torch.Tensor, int]:
        """The changed clip ``[channels, samples]`` at ``rate``."""
        import torchaudio.functional as AF

        path = Path(path)
        if path not in self._clips:
            self._clips[path] = self._changed_samples(path)
        waveform = torch.from_numpy(self._clips[path].astype(np.float32) / 32768)
        return (waveform, rate) if rate == self.rate else (AF.resample(waveform, self.rate, rate), rate)

    def variant(self) -> dict:
        """What the cache key records about the change."""
        return self._variant

    def _changed_samples(self, path: Path) -> np.ndarray:
        """The clip changed once, as 16-bit samples: from the disk cache when it holds them, else computed (and stored)."""
        stored = self._cache_file(path)
        if stored is not None and stored.is_file():
            try:
                return np.load(stored)
            except (OSError, ValueError):  # a damaged entry is recomputed and replaced
                pass
        waveform, _ = load_audio(path, self.rate)
        changed = np.clip(self.change(waveform.numpy(), self.rate, self.name(path)), -1.0, 32767 / 32768)
        samples = np.round(changed * 32768).astype(np.int16)
        if stored is not None:
            with replacing(stored) as handle:
                np.save(handle, samples)
        return samples

    def _cache_file(self, path: Path) -> Path | None:
        """Where the changed samples of ``path`` are kept (None without a cache folder)."""
        if self.cache_dir is None:
            return None
        import hashlib

        stat = path.stat()
        key = json.dumps([self._variant, self.name(path), stat.st_size, stat.st_mtime_ns, self.rate], sort_keys=True)
        return Path(self.cache_dir) / "changed-clips" / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".npy")


def air_clips(config: AirConfig, seed: int, root: Path, rate: int, cache_dir: Path | None = None) -> ChangedClips:
    """P2: the clips through `encoder.degradation.degrade_clip` (its chain ends at 16 bits already)."""
    return ChangedClips(lambda samples, r, name: degrade_clip(samples, r, seed, name, config),
                        {"air": config.to_dict(), "air_seed": seed, "degradation_version": DEGRADATION_VERSION},
                        root, rate, cache_dir)


def head_augment_config():
    """The training capture chain with every step on (room, microphone, noise, sound server), default ranges."""
    from encoder.augment import AugmentConfig

    return AugmentConfig(reverb_p=1.0, noise_p=1.0, band_limit_p=1.0, resample_p=1.0)


def augmented_clips(copy: int, seed: int, root: Path, rate: int, cache_dir: Path | None = None) -> ChangedClips:
    """Copy ``copy`` of the clips through the training side's `encoder.augment.capture_chain` (not the P2
    degradation), each clip with its own generator seeded by (seed, copy, its name)."""
    import zlib

    from encoder.augment import capture_chain

    config = head_augment_config()

    def change(samples: np.ndarray, r: int, name: str) -> np.ndarray:
        rng = np.random.default_rng([seed, copy, zlib.crc32(name.encode())])
        return capture_chain(torch.from_numpy(np.ascontiguousarray(samples)), r, config, rng).numpy()

    return ChangedClips(change, {"head_augment": config.to_dict(), "copy": copy, "seed": seed}, root, rate, cache_dir)


def method_features(key: str, bundle, paths: list[Path], config: EvaluationConfig,
                    changed: ChangedClips | None = None) -> list:
    """Per-clip (offsets, features [windows, channels, D]) of one method, of the clips as they are or as
    ``changed`` makes them; from the cache when it has them."""
    from encoder.feature_cache import cached_features, method_cache_key

    load = load_audio if changed is None else changed
    compute = lambda: compute_method_features(key, bundle, paths, config, load)  # noqa: E731
    if config.cache_dir is None:
        return compute()
    variant = None if changed is None else changed.variant()
    return cached_features(config.cache_dir, method_cache_key(key, bundle, paths, config.seed, variant), compute)


def embed_loaded(bundle, paths: list[Path], load, progress: bool, desc: str = "embed") -> list:
    """`embed_audio` of every clip as ``load`` reads it (at the model's rate)."""
    from tqdm import tqdm

    from encoder.recording_embeddings import embed_audio

    rate = bundle.feature_config.sample_rate
    return [embed_audio(bundle, *load(Path(p), rate)) for p in tqdm(paths, desc=desc, unit="file", disable=not progress)]


def compute_method_features(key: str, bundle, paths: list[Path], config: EvaluationConfig, load=load_audio) -> list:
    """Per-clip (offsets, features [windows, channels, D]) of one method, computed now from ``load``'s audio."""
    from encoder import baselines

    if key == "model":
        return embed_loaded(bundle, paths, load, config.progress)
    if key == "mfcc":
        return baselines.mfcc_features(paths, bundle.feature_config, progress=config.progress, load=load)
    if key == "random":
        return embed_loaded(baselines.random_weights_bundle(bundle, config.seed), paths, load, config.progress,
                            desc="embed (random weights)")
    if key == "aisfx":
        return baselines.aisfx_features(paths, progress=config.progress, load=load)
    raise ValueError(f"unknown baseline {key!r}; known: mfcc, random, aisfx")


def probe_method(key: str, name: str, bundle, records: list[Record], config: EvaluationConfig,
                 air: ChangedClips | None, copies: list[ChangedClips] = ()) -> tuple[MethodResult, SegmentTable]:
    """The clean probe of one method (and its air probe when ``air``), with its clean segment table; with
    ``copies`` every head is fit on the clean training folds plus those augmented copies of them."""
    paths = [r.path for r in records]
    table = segment_table(records, method_features(key, bundle, paths, config))
    extra = [segment_table(records, method_features(key, bundle, paths, config, c)) for c in copies]
    full, without = probe_both(table, extra)
    method = MethodResult(key, name, full, without)
    package_of = {str(r.path): r.package for r in records}
    method.lpo = leave_package_out_probe(table, [package_of.get(p, "") for p in table.paths])
    if air is not None:
        air_table = segment_table(records, method_features(key, bundle, paths, config, air))
        method.air = linear_probe(table, held_out=air_table, extra_train=extra)
    return method, table


def run_evaluation(config: EvaluationConfig, log: Callable[[str], None] = print) -> EvaluationResult:
    """Run every step and write figures, ``embeddings.npz``, ``results.json`` and ``report.md`` to ``out_dir``."""
    from encoder.baselines import BaselineUnavailable
    from encoder.clusters import kmeans_sweep, plot_sweep
    from encoder.embedding_map import map_html, plot_map_png, tsne_2d
    from encoder.model_file import load_model
    from encoder.report import plot_confusion, write_report

    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    records = read_dataset(config.data_path)
    bundle = load_model(config.model_path, config.device)
    paths = [r.path for r in records]
    log(f"{len(records)} clips in {config.data_path}; model {config.model_path}")

    root = config.data_path if config.data_path.is_dir() else config.data_path.parent
    rate = bundle.feature_config.sample_rate
    air = air_clips(config.air_config, config.seed, root, rate, config.cache_dir) if config.air else None
    copies = [augmented_clips(k, config.seed, root, rate, config.cache_dir) for k in range(config.head_copies)]
    model, table = probe_method("model", METHOD_NAMES["model"], bundle, records, config, air, copies)
    result = EvaluationResult(config, file_sha256(config.model_path), dict(bundle.metadata), records, table)
    result.data_summary = summarize(records)
    result.methods.append(model)
    log(f"probe {model.name}: {method_summary(model)}")
    for key in config.baselines:
        try:
            method, _ = probe_method(key, METHOD_NAMES.get(key, key), bundle, records, config, air, copies)
            log(f"probe {method.name}: {method_summary(method)}")
        except BaselineUnavailable as exc:
            method = MethodResult(key, METHOD_NAMES.get(key, key), unavailable=str(exc))
            log(f"baseline {key} unavailable: {exc}")
        result.methods.append(method)
    full = model.probe
    if config.probe_only:
        save_index(table, out / "embeddings.npz", [display_path(p, config.data_path) for p in table.paths])
        (out / "results.json").write_text(json.dumps(results_dict(result), indent=2), encoding="utf-8")
        write_report(result, out / "report.md")
        return result

    vectors = table.segment_means(normalise=True)
    labels = table.labels.astype(str)
    result.sweep = kmeans_sweep(vectors, labels, config.ks, seed=config.seed, progress=config.progress)
    elbow, silhouette = plot_sweep(result.sweep, out, num_classes=len(table.class_names))
    names = [display_path(p, config.data_path) for p in table.paths]
    points = tsne_2d(vectors, seed=config.seed)
    title = f"roomtone embedding of {config.data_path.name} (t-SNE)"
    plot_map_png(points, labels, out / "embedding_map.png", title)
    (out / "embedding_map.html").write_text(map_html(points, labels, names, title), encoding="utf-8")
    plot_confusion(full, out / "confusion_model.png", f"{METHOD_NAMES['model']}: pooled held-out folds")
    result.figures = {
        "confusion": "confusion_model.png", "elbow": elbow.name, "silhouette": silhouette.name,
        "map": "embedding_map.png", "map_html": "embedding_map.html",
    }
    save_index(table, out / "embeddings.npz", names)
    (out / "results.json").write_text(json.dumps(results_dict(result), indent=2), encoding="utf-8")
    write_report(result, out / "report.md")
    return result


def method_summary(method: MethodResult) -> str:
    """One log line of a method's probe figures: clean, and air when measured."""
    text = f"macro-F1 {method.probe.summary()}"
    if method.air is not None:
        text += f"; through the air (P2) {method.air.summary()} ({100 * (method.air.mean_f1 - method.probe.mean_f1):+.1f})"
    if method.lpo is not None:
        text += f"; leave-package-out (P1-lpo) {100 * method.lpo.pooled_f1:.1f}"
    return text


def results_dict(result: EvaluationResult) -> dict:
    """Machine-readable numbers of the run (results.json)."""
    def probe(p: ProbeResult | None):
        """One probe's numbers (None stays None)."""
        if p is None:
            return None
        return {"macro_f1_mean": p.mean_f1, "macro_f1_std": p.std_f1, "fold_macro_f1": p.fold_f1,
                "per_class_f1": p.per_class_f1, "class_names": list(p.class_names), "confusion": p.confusion.tolist()}

    sweep = result.sweep
    kmeans = None if sweep is None else {
        "ks": list(sweep.ks), "inertia": list(sweep.inertia), "silhouette": list(sweep.silhouette),
        "best_k": sweep.best_k, "purity": sweep.purity, "nmi": sweep.nmi,
        "num_classes": len(result.table.class_names)}
    config = result.config
    return {
        "command": result.config.command,
        "model": str(result.config.model_path),
        "model_sha256": result.model_sha256,
        "data": str(result.config.data_path),
        "segments": result.table.num_segments,
        "head_copies": config.head_copies,
        "head_augment": head_augment_config().to_dict() if config.head_copies else None,
        "air": {"config": config.air_config.to_dict(), "seed": config.seed,
                "degradation_version": DEGRADATION_VERSION} if config.air else None,
        "methods": {m.key: {"name": m.name, "probe": probe(m.probe),
                            "probe_without_rendered": probe(m.probe_without_rendered), "air": probe(m.air),
                            "lpo": probe(m.lpo), "lpo_pooled_macro_f1": m.lpo.pooled_f1 if m.lpo else None,
                            "unavailable": m.unavailable}
                    for m in result.methods},
        "kmeans": kmeans,
    }
