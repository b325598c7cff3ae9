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
head fit on clean clips alone leans on them; the copies teach it the same classes without them.

--corrections STORE also fits the head on a home's activity corrections (`roomtone corrections add`, the web
page's window view): the stored embeddings of the windows a user said were really another class, read from
the daemon's store file (<data_dir>/roomtone.db; read-only, the daemon may keep running), each weighing
--correction-weight shared-set rows. Only corrections of windows embedded by this model's encoder are used
(the model file, or one it was made from by train-head); the others are counted and skipped, and so are
corrections to classes the data does not have. bench/corrections.py measures how many it takes
(docs/sounds.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encoder.head_corrections import DEFAULT_CORRECTION_WEIGHT


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
    parser.add_argument("--corrections", type=Path, default=None, metavar="STORE",
                        help="also fit on the activity corrections in this daemon store file (<data_dir>/roomtone.db)")
    parser.add_argument("--correction-weight", type=float, default=None, metavar="W",
                        help=f"weight of one correction against one shared-set row (default {DEFAULT_CORRECTION_WEIGHT:g}, "
                             "measured by bench/corrections.py, docs/sounds.md)")
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Fit the head on all clips and save the model copy."""
    import dataclasses

    import numpy as np

    from encoder.audio import AudioError
    from encoder.head_corrections import CorrectionsError, rows_with_corrections
    from encoder.datasets import DatasetError, read_dataset
    from encoder.recording_embeddings import embed_paths
    from encoder.evaluation import augmented_clips, embed_loaded, head_augment_config
    from encoder.feature_cache import cached_features, method_cache_key
    from encoder.file_digest import file_sha256
    from encoder.head import fit_head
    from encoder.model_file import ModelFileError, load_model, save_model, with_metadata
    from encoder.segment_table import segment_table

    out = args.out or args.model
    weight = DEFAULT_CORRECTION_WEIGHT if args.correction_weight is None else args.correction_weight
    if not (np.isfinite(weight) and weight > 0):
        print(f"roomtone train-head: --correction-weight must be a positive number, got {weight}", file=sys.stderr)
        return 2
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
            changed = augmented_clips(k, args.seed, root, bundle.feature_config.sample_rate, args.cache)
            compute = lambda: embed_loaded(bundle, paths, changed, progress, desc=f"embed copy {k + 1}")  # noqa: E731
            copies.append(segment_table(records, compute() if args.cache is None else cached_features(
                args.cache, method_cache_key("model", bundle, paths, variant=changed.variant()), compute)))
    except (DatasetError, ModelFileError, AudioError) as exc:
        print(f"roomtone train-head: {exc}", file=sys.stderr)
        return 2
    features = np.concatenate([table.features] + [c.features for c in copies])
    labels = np.concatenate([table.labels[table.segment]] + [c.labels[c.segment] for c in copies])
    lineage = sorted({file_sha256(args.model), *bundle.metadata.get("same_encoder_as", [])})
    weights, used = None, None
    if args.corrections is not None:
        try:
            corrected, used = usable_corrections(args.corrections, lineage, bundle.embedding_dim, set(labels.tolist()))
            features, labels, weights = rows_with_corrections(features, labels, corrected[0], corrected[1], weight)
        except (ValueError, CorrectionsError) as exc:
            print(f"roomtone train-head: --corrections: {exc}", file=sys.stderr)
            return 2
    head = fit_head(features, labels, C=args.C, sample_weight=weights)
    clean_labels = table.labels[table.segment]
    accuracy = float(np.mean(np.asarray(head.predict(table.features)) == clean_labels))
    updated = with_metadata(
        dataclasses.replace(bundle, head=head.to_dict()),
        head={"data": str(args.data), "segments": table.num_segments, "rows": int(len(labels)),
              "classes": list(head.class_names), "C": args.C, "train_accuracy": accuracy,
              "augmented_copies": args.augmented_copies,
              "augment": head_augment_config().to_dict() if args.augmented_copies else None,
              "augment_seed": args.seed if args.augmented_copies else None,
              "corrections": None if used is None else {"store": str(args.corrections), "used": used["used"],
                                                         "skipped": used["skipped"], "weight": weight}},
        same_encoder_as=lineage,  # train-head never changes the encoder: corrections made under these models fit
    )
    save_model(updated, out)
    if used is not None:
        print(f"corrections: {used['used']} used (weight {weight:g} each)"
              + "".join(f"; {n} skipped: {why}" for why, n in used["skipped"].items()))
    print(f"head with {len(head.class_names)} classes ({', '.join(head.class_names)}) fit on {len(labels)} rows "
          f"({args.augmented_copies} augmented cop{'y' if args.augmented_copies == 1 else 'ies'}); "
          f"training accuracy on the clean clips {accuracy:.3f}; written to {out}")
    return 0


def usable_corrections(store: Path, models: list[str], dim: int, classes: set[str]):
    """``((embeddings [n, dim], labels [n]), {"used": n, "skipped": {reason: count}})``: the corrections in the
    store file embedded by one of ``models`` (model-file sha256s sharing the encoder) with a class of the data."""
    import numpy as np

    from service.store.correction_store import corrections_in_file

    kept, skipped = [], {}
    for c in corrections_in_file(store):
        reason = ("embedded by an unknown model (a window older than the store's record of model runs)"
                  if c.model_sha256 is None else
                  f"embedded by another model ({c.model_sha256[:12]})" if c.model_sha256 not in models else
                  f"embedding size {c.embedding.size}, the model's is {dim}" if c.embedding.size != dim else
                  f"class {c.label!r} not in the data" if c.label not in classes else None)
        if reason is None:
            kept.append(c)
        else:
            skipped[reason] = skipped.get(reason, 0) + 1
    embeddings = np.stack([c.embedding for c in kept]) if kept else np.zeros((0, dim), np.float32)
    return (embeddings, [c.label for c in kept]), {"used": len(kept), "skipped": skipped}
