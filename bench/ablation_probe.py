"""Never-heard probes of model files on homesounds and music, for the training ablation and the checkpoint
curves in docs/encoder.md: P1 (4-fold, clean), P2 (the held-out fold through the air) and P1-lpo
(leave-package-out folds, `encoder.probe.package_folds`: each class tested on source packages its head
was not fit on; one macro-F1 over all held-out clips, since a fold may lack a class).

    .venv/bin/python -m bench.ablation_probe /tmp/roomtone-ablation/P1-*.pt --random-width 16

Each clip is embedded whole (its full log-Mel in one pass, as bench/width_tradeoff.py). For each of the
4 folds a standardised logistic regression is fitted on the other three, clean, and scores the held-out
fold twice: clean, and after `encoder.degradation.degrade_clip` (the evaluation's P2 capture chain,
seed 0, a different implementation and parameters from the training augmentation). Labels are used
here only. Log-Mel features of the clean and degraded clips are cached under ``--cache`` (they do not
depend on the model). Prints one Markdown row per model with the load average at that moment.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from bench.host import load_average
from encoder.audio import load_audio
from encoder.datasets import read_dataset
from encoder.features import LogMelConfig, log_mel
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DATASETS = ("homesounds", "music")


def clip_features(dataset: str, cache: Path) -> dict[str, object]:
    """Labels, folds and per-clip log-Mel, clean and through the air (cached as one .pt per dataset)."""
    path = cache / f"{dataset}.pt"
    if path.is_file():
        return torch.load(path, weights_only=False)
    from encoder.degradation import degrade_clip

    root = SHARED / dataset
    records = read_dataset(root)
    config = LogMelConfig()
    clean, air = [], []
    for record in records:
        samples = load_audio(record.path, config.sample_rate, mono=True)[0]
        clean.append(log_mel(samples[0], config).half())
        degraded = degrade_clip(samples.numpy(), config.sample_rate, 0, str(record.path.relative_to(root.resolve())))
        air.append(log_mel(torch.from_numpy(np.asarray(degraded)).reshape(-1), config).half())
    data = {"labels": np.array([r.label for r in records]), "folds": np.array([r.fold for r in records]),
            "packages": np.array([r.package for r in records]), "clean": clean, "air": air}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def embed(encoder: torch.nn.Module, features: list[torch.Tensor]) -> np.ndarray:
    """One embedding per clip from its whole log-Mel."""
    with torch.inference_mode():
        return np.stack([encoder(f.float()[None, None]).numpy()[0] for f in features])


def _head():
    """The probe's head: standardised multinomial logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))


def probe(clean: np.ndarray, air: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """Mean macro-F1 over the 4 held-out folds: (clean fold, the same fold through the air); probe fitted on clean folds."""
    from sklearn.metrics import f1_score

    scores = []
    for fold in sorted(set(folds.tolist())):
        train, test = folds != fold, folds == fold
        model = _head().fit(clean[train], labels[train])
        scores.append((f1_score(labels[test], model.predict(clean[test]), average="macro"),
                       f1_score(labels[test], model.predict(air[test]), average="macro")))
    return tuple(float(v) for v in np.mean(scores, axis=0))


def probe_lpo(clean: np.ndarray, labels: np.ndarray, folds: np.ndarray, packages: np.ndarray) -> float:
    """P1-lpo: macro-F1 over every clip, each predicted by a head fit on the other leave-package-out folds."""
    from sklearn.metrics import f1_score

    from encoder.probe import package_folds

    lpo = package_folds(labels, packages, folds)
    predicted = np.empty(len(labels), dtype=labels.dtype)
    for fold in sorted(set(lpo.tolist())):
        train, test = lpo != fold, lpo == fold
        predicted[test] = _head().fit(clean[train], labels[train]).predict(clean[test])
    return float(f1_score(labels, predicted, average="macro"))


#: The figures of one model, in the order of the table's columns.
COLUMNS = ("homesounds_p1", "homesounds_lpo", "homesounds_p2", "music_p1", "music_lpo", "music_p2")


def never_heard_scores(encoder: torch.nn.Module, data: dict[str, dict[str, object]]) -> dict[str, float]:
    """P1, P1-lpo and P2 macro-F1 of ``encoder`` on both sets (``data`` from `clip_features`), keyed as `COLUMNS`."""
    scores = {}
    for dataset in DATASETS:
        d = data[dataset]
        clean = embed(encoder, d["clean"])
        p1, p2 = probe(clean, embed(encoder, d["air"]), d["labels"], d["folds"])
        scores.update({f"{dataset}_p1": p1, f"{dataset}_lpo": probe_lpo(clean, d["labels"], d["folds"], d["packages"]),
                       f"{dataset}_p2": p2})
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model files")
    parser.add_argument("--random-width", type=int, action="append", default=[], help="an untrained encoder of this width")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="/tmp/roomtone-ablation/probe-features-v2", help="log-Mel cache folder (does not depend on the model)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = {name: clip_features(name, Path(args.cache)) for name in DATASETS}
    candidates: list[tuple[str, ModelBundle]] = []
    for width in args.random_width:
        torch.manual_seed(0)
        config = EncoderConfig(width=width)
        candidates.append((f"untrained w={width}", ModelBundle(Encoder(config).eval(), LogMelConfig(), config)))
    candidates += [(Path(m).stem, load_model(m)) for m in args.models]
    print("| model | steps | CPU min | homesounds P1 | homesounds P1-lpo | homesounds P2 | music P1 | music P1-lpo "
          "| music P2 | load average |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for name, bundle in candidates:
        start = time.perf_counter()
        scores = never_heard_scores(bundle.encoder, data)
        training = bundle.metadata.get("training", {})
        spent = training.get("budget_elapsed_s", training.get("wall_time_s", 0)) / 60
        print(f"| {name} | {training.get('steps', 0)} | {spent:.1f} | " + " | ".join(f"{scores[c]:.3f}" for c in COLUMNS)
              + f" | {load_average()} |", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
