"""Evaluate a model on a labelled dataset and write a readable report:
`roomtone evaluate --model M --data PATH --out reports/NAME/`.

Steps (all on the dataset's own folds 1-4, never a random split):
  1. embed every 10 s segment of every clip (every channel) with the model;
  2. linear probe, DCASE 2018 task 5 protocol: per held-out fold, StandardScaler + multinomial logistic
     regression on the other folds, one decision per segment (channel posteriors averaged), macro-F1 per
     fold -> mean +- std, per-class F1 and a confusion matrix; for labels ending in `_rendered` (music)
     the probe is also reported without them;
  3. the same probe on baselines (--baselines): `mfcc` MFCC-40 mean+std, `random` the same CNN with random
     weights, `aisfx` a pretrained sound-effects CNN (only if `pip install --no-deps aisfx==0.1.2` was
     done; otherwise the report says it was not run);
  4. k-Means for k in --k-min..--k-max: elbow and silhouette plots, purity and NMI at the best k;
  5. a t-SNE embedding map as PNG and as a self-contained HTML (hover shows file and label).
--air adds protocol P2 ("through the air"): for every method, each held-out fold is also scored after a
seeded capture-chain degradation (room, noise, microphone, sound server; docs/evaluation.md) while the
heads are still fit on the clean training folds; the table gets clean and air columns.
--augmented-copies N fits every head on the clean training folds plus N copies of them through the
training side's capture chain (encoder.augment, never the P2 degradation), as `train-head` can. --probe-only skips
steps 4-5 (seconds instead of minutes, for comparing many encoders). P1 is the clean probe of an encoder
pre-trained on unlabelled audio alone. Writes into --out: report.md (first table: method x macro-F1), results.json, embeddings.npz (a
neighbour index for `roomtone neighbours`), confusion_model.png, kmeans_elbow.png,
kmeans_silhouette.png, embedding_map.png, embedding_map.html. Exit 2 on bad input."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `evaluate` options."""
    parser.add_argument("--model", required=True, type=Path, help="model file (e.g. models/roomtone.pt)")
    parser.add_argument("--data", required=True, type=Path, help="dataset directory or meta.csv (shared set or DCASE 2018 task 5 layout)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for report.md and figures (created)")
    parser.add_argument("--baselines", default="mfcc,random,aisfx",
                        help="comma-separated baselines from mfcc, random, aisfx; empty for none")
    parser.add_argument("--k-min", type=int, default=2, help="smallest k of the k-Means sweep")
    parser.add_argument("--k-max", type=int, default=15, help="largest k of the k-Means sweep")
    parser.add_argument("--seed", type=int, default=0, help="seed of k-Means, t-SNE and the random-weights CNN")
    parser.add_argument("--device", default="cpu", help="torch device for the encoder (cpu, cuda)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="folder to cache per-method features in (keyed by encoder weights, configs and input files); off by default")
    parser.add_argument("--notes", type=Path, default=None, help="markdown file appended to report.md as its Notes section")
    parser.add_argument("--air", action="store_true",
                        help="also run P2: score each held-out fold through the seeded 'through the air' degradation")
    parser.add_argument("--augmented-copies", type=int, default=0, metavar="N",
                        help="fit every probe head on the clean training folds plus N copies of them through the "
                             "training capture chain (encoder.augment: room, microphone, noise, sound server)")
    parser.add_argument("--probe-only", action="store_true",
                        help="only the probe tables: skip the k-Means sweep, the t-SNE map and the figures")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (options at their defaults left out)."""
    parts = ["roomtone", "evaluate", "--model", str(args.model), "--data", str(args.data), "--out", str(args.out)]
    defaults = {"baselines": "mfcc,random,aisfx", "k_min": 2, "k_max": 15, "seed": 0, "device": "cpu", "cache": None,
                "notes": None, "augmented_copies": 0}
    for name, default in defaults.items():
        value = getattr(args, name)
        if value != default:
            parts += ["--" + name.replace("_", "-"), str(value)]
    for flag in ("air", "probe_only", "no_progress"):
        if getattr(args, flag):
            parts.append("--" + flag.replace("_", "-"))
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation and print where the report is."""
    from encoder.audio import AudioError
    from encoder.datasets import DatasetError
    from encoder.evaluation import EvaluationConfig, run_evaluation
    from encoder.model_file import ModelFileError

    baselines = tuple(b.strip() for b in args.baselines.split(",") if b.strip())
    unknown = sorted(set(baselines) - {"mfcc", "random", "aisfx"})
    if unknown:
        print(f"roomtone evaluate: unknown baseline(s) {unknown}; choose from mfcc, random, aisfx", file=sys.stderr)
        return 2
    if args.augmented_copies < 0:
        print(f"roomtone evaluate: --augmented-copies must be >= 0, got {args.augmented_copies}", file=sys.stderr)
        return 2
    if args.k_min < 2 or args.k_max < args.k_min:
        print(f"roomtone evaluate: need 2 <= --k-min <= --k-max, got {args.k_min}..{args.k_max}", file=sys.stderr)
        return 2
    try:
        notes = args.notes.read_text(encoding="utf-8") if args.notes else ""
    except OSError as exc:
        print(f"roomtone evaluate: --notes {args.notes}: {exc.strerror}", file=sys.stderr)
        return 2
    config = EvaluationConfig(
        model_path=args.model, data_path=args.data, out_dir=args.out, baselines=baselines,
        ks=tuple(range(args.k_min, args.k_max + 1)), seed=args.seed, device=args.device,
        progress=not args.no_progress, cache_dir=args.cache, notes=notes, command=command_line(args),
        air=args.air, probe_only=args.probe_only, head_copies=args.augmented_copies,
    )
    try:
        run_evaluation(config, log=lambda line: print(line, file=sys.stderr))
    except (DatasetError, ModelFileError, AudioError) as exc:
        print(f"roomtone evaluate: {exc}", file=sys.stderr)
        return 2
    print(args.out / "report.md")
    return 0
