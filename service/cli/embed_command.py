"""Embed audio files, or every clip of a dataset, with a roomtone model file into an .npz. Examples:
"roomtone embed clip.flac other.wav --out emb.npz"; "roomtone embed ../shared/data/homesounds --out
homesounds.npz" (the model defaults to models/roomtone.pt).

Each file is cut into 10 s windows (a shorter tail of at least 1 s is one more window), and each window
becomes one row. Arrays: `paths` (str, the file of each row), `offsets_s` (float, the window's start),
`embeddings` (float32 [rows, D]); multi-channel files are averaged to mono first unless --per-channel,
which gives one row per channel and adds `channels` (int). For a dataset (a directory with meta.csv or
the DCASE layout, or a meta.csv) it also stores `labels` and `folds` per row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `embed` options."""
    parser.add_argument("inputs", nargs="+", help="audio files, or one dataset directory / meta.csv")
    parser.add_argument("--model", default="models/roomtone.pt", help="model file")
    parser.add_argument("--out", required=True, help="output .npz")
    parser.add_argument("--per-channel", action="store_true", help="one row per channel instead of a mono mix")
    parser.add_argument("--batch-size", type=int, default=32, help="windows per forward pass")
    parser.add_argument("--device", default="cpu", help="cpu | cuda")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _dataset_records(inputs: list[str]):
    """The dataset's records when the single input is a dataset, else None."""
    from encoder.datasets import read_dataset

    if len(inputs) != 1:
        return None
    path = Path(inputs[0])
    if path.is_dir() or path.name.endswith(".csv"):
        return read_dataset(path)
    return None


def run(args: argparse.Namespace) -> int:
    """Write the embeddings; exit 2 naming the file on unusable audio, model or dataset."""
    import numpy as np

    from encoder.audio import AudioError
    from encoder.datasets import DatasetError
    from encoder.recording_embeddings import embed_paths
    from encoder.model_file import ModelFileError, load_model

    try:
        bundle = load_model(args.model, args.device)
        records = _dataset_records(args.inputs)
        paths = [str(r.path) for r in records] if records is not None else list(args.inputs)
        results = embed_paths(bundle, paths, progress=not args.quiet, mono=not args.per_channel,
                              batch_size=args.batch_size)
    except (AudioError, DatasetError, ModelFileError) as exc:
        print(f"roomtone embed: {exc}", file=sys.stderr)
        return 2
    rows_paths, offsets, embeddings, channels, labels, folds = [], [], [], [], [], []
    for index, (path, (file_offsets, file_embeddings)) in enumerate(zip(paths, results)):
        for offset, per_channel in zip(file_offsets, file_embeddings):
            for channel, vector in enumerate(per_channel):
                rows_paths.append(path)
                offsets.append(offset)
                embeddings.append(vector)
                channels.append(channel)
                if records is not None:
                    labels.append(records[index].label)
                    folds.append(records[index].fold)
    arrays = {
        "paths": np.array(rows_paths, dtype=str),
        "offsets_s": np.array(offsets, dtype=np.float64),
        "embeddings": np.array(embeddings, dtype=np.float32).reshape(-1, bundle.embedding_dim),
    }
    if args.per_channel:
        arrays["channels"] = np.array(channels, dtype=np.int64)
    if records is not None:
        arrays["labels"] = np.array(labels, dtype=str)
        arrays["folds"] = np.array(folds, dtype=np.int64)
    np.savez(args.out, **arrays)
    print(f"wrote {len(rows_paths)} embeddings of {len(paths)} file(s) to {args.out}")
    return 0
