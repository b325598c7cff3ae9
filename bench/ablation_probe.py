"""Ablation probe: linear-probe macro-F1 of model files on homesounds and music, clean (P1) and with the
held-out fold through the air (P2), for the training ablation in docs/encoder.md.

    .venv/bin/python bench/ablation_probe.py /tmp/roomtone-ablation/P1-*.pt --random-width 16

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.window_path import load_average  # noqa: E402
from encoder.audio import load_audio  # noqa: E402
from encoder.datasets import read_dataset  # noqa: E402
from encoder.features import LogMelConfig, log_mel  # noqa: E402
from encoder.model import Encoder, EncoderConfig  # noqa: E402
from encoder.model_file import ModelBundle, load_model  # noqa: E402

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
            "clean": clean, "air": air}
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def embed(encoder: torch.nn.Module, features: list[torch.Tensor]) -> np.ndarray:
    """One embedding per clip from its whole log-Mel."""
    with torch.inference_mode():
        return np.stack([encoder(f.float()[None, None]).numpy()[0] for f in features])


def probe(clean: np.ndarray, air: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """Mean macro-F1 over the 4 held-out folds: (clean fold, the same fold through the air); probe fitted on clean folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for fold in sorted(set(folds.tolist())):
        train, test = folds != fold, folds == fold
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0)).fit(clean[train], labels[train])
        scores.append((f1_score(labels[test], model.predict(clean[test]), average="macro"),
                       f1_score(labels[test], model.predict(air[test]), average="macro")))
    return tuple(float(v) for v in np.mean(scores, axis=0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model files")
    parser.add_argument("--random-width", type=int, action="append", default=[], help="an untrained encoder of this width")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", default="/tmp/roomtone-ablation/probe-features")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = {name: clip_features(name, Path(args.cache)) for name in DATASETS}
    candidates: list[tuple[str, ModelBundle]] = []
    for width in args.random_width:
        torch.manual_seed(0)
        config = EncoderConfig(width=width)
        candidates.append((f"untrained w={width}", ModelBundle(Encoder(config).eval(), LogMelConfig(), config)))
    candidates += [(Path(m).stem, load_model(m)) for m in args.models]
    print("| model | steps | CPU min | homesounds clean | homesounds air | music clean | music air | load average |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for name, bundle in candidates:
        start = time.perf_counter()
        cells = []
        for dataset in DATASETS:
            d = data[dataset]
            cells += probe(embed(bundle.encoder, d["clean"]), embed(bundle.encoder, d["air"]), d["labels"], d["folds"])
        training = bundle.metadata.get("training", {})
        spent = training.get("budget_elapsed_s", training.get("wall_time_s", 0)) / 60
        print(f"| {name} | {training.get('steps', 0)} | {spent:.1f} | " + " | ".join(f"{c:.3f}" for c in cells)
              + f" | {load_average()} |", flush=True)
        print(f"  ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
