"""`roomtone evaluate` as a procedure: embed a labelled dataset, probe it and its baselines on the
dataset's folds, sweep k-Means, draw the embedding map, and hand everything to `encoder.report`.

Read top to bottom: config, data, features per method, probes, clusters, map, files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from encoder.datasets import Record, read_dataset, summarize
from encoder.file_digest import file_sha256
from encoder.probe import ProbeResult, linear_probe
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


@dataclass
class MethodResult:
    """Probe results of one method on all classes and (if the data has them) without `_rendered` styles."""

    key: str
    name: str
    probe: ProbeResult | None = None
    probe_without_rendered: ProbeResult | None = None
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


def probe_both(table: SegmentTable) -> tuple[ProbeResult, ProbeResult | None]:
    """The probe on all classes, and without the `_rendered` styles when the data has any."""
    rendered = np.char.endswith(table.labels.astype(str), RENDERED_SUFFIX)
    full = linear_probe(table)
    if not rendered.any() or rendered.all():
        return full, None
    return full, linear_probe(table.select(~rendered))


def method_features(key: str, bundle, paths: list[Path], config: EvaluationConfig) -> list:
    """Per-clip (offsets, features [windows, channels, D]) of one method, from the cache when it has them."""
    from encoder.feature_cache import cached_features, method_cache_key

    compute = lambda: compute_method_features(key, bundle, paths, config)  # noqa: E731
    if config.cache_dir is None:
        return compute()
    return cached_features(config.cache_dir, method_cache_key(key, bundle, paths, config.seed), compute)


def compute_method_features(key: str, bundle, paths: list[Path], config: EvaluationConfig) -> list:
    """Per-clip (offsets, features [windows, channels, D]) of one method, computed now."""
    from encoder import baselines
    from encoder.embedding import embed_paths

    if key == "model":
        return embed_paths(bundle, paths, progress=config.progress)
    if key == "mfcc":
        return baselines.mfcc_features(paths, bundle.feature_config, progress=config.progress)
    if key == "random":
        return embed_paths(baselines.random_weights_bundle(bundle, config.seed), paths, progress=config.progress)
    if key == "aisfx":
        return baselines.aisfx_features(paths, progress=config.progress)
    raise ValueError(f"unknown baseline {key!r}; known: mfcc, random, aisfx")


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

    table = segment_table(records, method_features("model", bundle, paths, config))
    result = EvaluationResult(config, file_sha256(config.model_path), dict(bundle.metadata), records, table)
    result.data_summary = summarize(records)
    full, without = probe_both(table)
    result.methods.append(MethodResult("model", METHOD_NAMES["model"], full, without))
    log(f"probe {METHOD_NAMES['model']}: macro-F1 {full.summary()}")
    for key in config.baselines:
        method = MethodResult(key, METHOD_NAMES.get(key, key))
        try:
            baseline_table = segment_table(records, method_features(key, bundle, paths, config))
            method.probe, method.probe_without_rendered = probe_both(baseline_table)
            log(f"probe {method.name}: macro-F1 {method.probe.summary()}")
        except BaselineUnavailable as exc:
            method.unavailable = str(exc)
            log(f"baseline {key} unavailable: {exc}")
        result.methods.append(method)

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


def results_dict(result: EvaluationResult) -> dict:
    """Machine-readable numbers of the run (results.json)."""
    def probe(p: ProbeResult | None):
        """One probe's numbers (None stays None)."""
        if p is None:
            return None
        return {"macro_f1_mean": p.mean_f1, "macro_f1_std": p.std_f1, "fold_macro_f1": p.fold_f1,
                "per_class_f1": p.per_class_f1, "class_names": list(p.class_names), "confusion": p.confusion.tolist()}

    sweep = result.sweep
    return {
        "command": result.config.command,
        "model": str(result.config.model_path),
        "model_sha256": result.model_sha256,
        "data": str(result.config.data_path),
        "segments": result.table.num_segments,
        "methods": {m.key: {"name": m.name, "probe": probe(m.probe),
                            "probe_without_rendered": probe(m.probe_without_rendered), "unavailable": m.unavailable}
                    for m in result.methods},
        "kmeans": {"ks": list(sweep.ks), "inertia": list(sweep.inertia), "silhouette": list(sweep.silhouette),
                   "best_k": sweep.best_k, "purity": sweep.purity, "nmi": sweep.nmi,
                   "num_classes": len(result.table.class_names)},
    }
