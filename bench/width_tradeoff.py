"""Encoder width trade-off: linear-probe macro-F1 of model files vs their CPU ms per 10 s window.

    .venv/bin/python -m bench.width_tradeoff /tmp/probe_w16.pt /tmp/probe_w24.pt --random-widths 16

For each model file (and an untrained encoder per ``--random-widths``, the floor any training must
beat) it embeds ../shared/data/homesounds and ../shared/data/music (one 10 s window per clip), fits a
standardised logistic regression on three folds and scores the fourth (all four rotations), and
reports the mean macro-F1 per dataset next to the single-thread ms per window. Labels are used here,
for evaluation only; training never sees them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch


from encoder.datasets import read_dataset
from encoder.audio import load_audio
from encoder.features import LogMelConfig, log_mel
from encoder.model import Encoder, EncoderConfig
from encoder.model_file import ModelBundle, load_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def probe_macro_f1(embeddings: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> float:
    """Mean over the 4 held-out folds of the macro-F1 of a standardised logistic regression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = []
    for fold in sorted(set(folds.tolist())):
        train, test = folds != fold, folds == fold
        probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
        probe.fit(embeddings[train], labels[train])
        scores.append(f1_score(labels[test], probe.predict(embeddings[test]), average="macro"))
    return float(np.mean(scores))


def ms_per_window(bundle: ModelBundle, repeats: int = 7) -> float:
    """Median single-thread ms for log-Mel + encoder on one 10 s window."""
    from encoder.recording_embeddings import embed_windows

    torch.set_num_threads(1)
    window = torch.randn(1, bundle.feature_config.sample_rate * 10) * 0.1
    embed_windows(bundle, window)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        embed_windows(bundle, window)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", help="model files to compare")
    parser.add_argument("--random-widths", type=int, nargs="*", default=[], help="untrained encoders to include")
    parser.add_argument("--threads", type=int, default=2, help="threads while embedding the datasets")
    args = parser.parse_args()

    datasets = {name: read_dataset(SHARED / name) for name in ("homesounds", "music")}
    candidates: list[tuple[str, ModelBundle]] = [(Path(m).name, load_model(m)) for m in args.models]
    for width in args.random_widths:
        torch.manual_seed(0)
        config = EncoderConfig(width=width)
        candidates.append((f"untrained w={width}", ModelBundle(Encoder(config).eval(), LogMelConfig(), config)))

    # Every candidate uses the default LogMelConfig, so features are computed once and shared.
    torch.set_num_threads(args.threads)
    features = {}
    for dataset, records in datasets.items():
        clips = [load_audio(r.path, LogMelConfig().sample_rate, mono=True)[0][0] for r in records]
        features[dataset] = [log_mel(clip, LogMelConfig()) for clip in clips]
    print("| model | width | train steps | train wall min | homesounds macro-F1 | music macro-F1 | ms/window (1 thread) |")
    print("|---|---|---|---|---|---|---|", flush=True)
    for name, bundle in candidates:
        if bundle.feature_config != LogMelConfig():
            raise SystemExit(f"{name}: non-default LogMelConfig; this bench shares default features")
        torch.set_num_threads(args.threads)
        f1 = {}
        for dataset, records in datasets.items():
            with torch.inference_mode():
                embeddings = np.stack([bundle.encoder(f[None, None]).numpy()[0] for f in features[dataset]])
            labels = np.array([r.label for r in records])
            folds = np.array([r.fold for r in records])
            f1[dataset] = probe_macro_f1(embeddings, labels, folds)
        training = bundle.metadata.get("training", {})
        minutes = training.get("wall_time_s", 0) / 60
        print(f"| {name} | {bundle.encoder_config.width} | {training.get('steps', 0)} | {minutes:.1f} | "
              f"{f1['homesounds']:.3f} | {f1['music']:.3f} | {ms_per_window(bundle):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
