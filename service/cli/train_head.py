"""Fit the activity head the daemon uses: `roomtone train-head --model M --data PATH [--out M2]`.

Embeds every 10 s segment (every channel) of every labelled clip in PATH with the model, fits
StandardScaler + multinomial logistic regression (C as given) on all of them, and stores the head (class
names, scaler mean/scale, coefficients, intercepts) inside a copy of the model file: --out, or the model
file itself when --out is omitted (written atomically). The model's metadata records the head's data,
its size and its training accuracy. Exit 2 on bad input.

--augmented-copies N also fits the head on N copies of every clip through the training side's capture
chain (`encoder.augment.capture_chain` with room, microphone band limit, noise and sound-server resampling
all on; each copy seeded by --seed, the copy number and the clip's path inside the dataset). The labelled
sets carry recording cues a room removes (docs/evaluation.md: the band above 7 kHz differs by class), and a
head fit on clean clips alone leans on them; the copies teach it the same classes without them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `train-head` options."""
    parser.add_argument("--model", required=True, type=Path, help="model file to start from")
    parser.add_argument("--data", required=True, type=Path, help="labelled dataset directory or meta.csv")
    parser.add_argument("--out", type=Path, default=None, help="where to write the model with its head (default: overwrite --model)")
    parser.add_argument("-C", type=float, default=1.0, help="inverse L2 regularisation strength of the logistic regression")
    parser.add_argument("--cache", type=Path, default=None,
                        help="feature cache folder shared with `roomtone evaluate --cache` (off by default)")
    parser.add_argument("--augmented-copies", type=int, default=0, metavar="N",
                        help="also fit on N copies of every clip through the training capture chain (room, microphone, "
                             "noise, sound server)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmented copies")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Fit the head on all clips and save the model copy."""
    import dataclasses

    import numpy as np

    from encoder.audio import AudioError
    from encoder.datasets import DatasetError, read_dataset
    from encoder.embedding import embed_paths
    from encoder.evaluation import augmented_clips, embed_loaded, head_augment_config
    from encoder.feature_cache import cached_features, method_cache_key
    from encoder.head import fit_head
    from encoder.model_file import ModelFileError, load_model, save_model, with_metadata
    from encoder.segment_table import segment_table

    out = args.out or args.model
    if args.augmented_copies < 0:
        print(f"roomtone train-head: --augmented-copies must be >= 0, got {args.augmented_copies}", file=sys.stderr)
        return 2
    try:
        records = read_dataset(args.data)
        bundle = load_model(args.model)
        paths = [r.path for r in records]
        progress = not args.no_progress
        compute = lambda: embed_paths(bundle, paths, progress=progress)  # noqa: E731
        per_clip = compute() if args.cache is None else cached_features(
            args.cache, method_cache_key("model", bundle, paths), compute)
        table = segment_table(records, per_clip)
        root = args.data if args.data.is_dir() else args.data.parent
        copies = []
        for k in range(args.augmented_copies):
            changed = augmented_clips(k, args.seed, root, bundle.feature_config.sample_rate)
            compute = lambda: embed_loaded(bundle, paths, changed, progress, desc=f"embed copy {k + 1}")  # noqa: E731
            copies.append(segment_table(records, compute() if args.cache is None else cached_features(
                args.cache, method_cache_key("model", bundle, paths, variant=changed.variant()), compute)))
    except (DatasetError, ModelFileError, AudioError) as exc:
        print(f"roomtone train-head: {exc}", file=sys.stderr)
        return 2
    features = np.concatenate([table.features] + [c.features for c in copies])
    labels = np.concatenate([table.labels[table.segment]] + [c.labels[c.segment] for c in copies])
    head = fit_head(features, labels, C=args.C)
    clean_labels = table.labels[table.segment]
    accuracy = float(np.mean(np.asarray(head.predict(table.features)) == clean_labels))
    updated = with_metadata(
        dataclasses.replace(bundle, head=head.to_dict()),
        head={"data": str(args.data), "segments": table.num_segments, "rows": int(len(labels)),
              "classes": list(head.class_names), "C": args.C, "train_accuracy": accuracy,
              "augmented_copies": args.augmented_copies,
              "augment": head_augment_config().to_dict() if args.augmented_copies else None,
              "augment_seed": args.seed if args.augmented_copies else None},
    )
    save_model(updated, out)
    print(f"head with {len(head.class_names)} classes ({', '.join(head.class_names)}) fit on {len(labels)} rows "
          f"({args.augmented_copies} augmented cop{'y' if args.augmented_copies == 1 else 'ies'}); "
          f"training accuracy on the clean clips {accuracy:.3f}; written to {out}")
    return 0
