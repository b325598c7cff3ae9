"""Find the segments most similar to a query recording:
`roomtone neighbours --model M --index PATH QUERY_AUDIO [-k 10]`.

The index is an .npz of embeddings (`roomtone embed ... --out FILE.npz`, or the `embeddings.npz` that
`roomtone evaluate` writes). Each 10 s window of QUERY_AUDIO (channels averaged) is embedded with the
model and its k nearest index rows are printed closest first with their cosine distance (1 - cos; 0 is
identical), file, offset and label. The index must come from the same model. Exit 2 on bad input."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `neighbours` options."""
    parser.add_argument("--model", required=True, type=Path, help="model file the index was built with")
    parser.add_argument("--index", required=True, type=Path, help="embedding index .npz (paths, offsets_s, embeddings[, labels])")
    parser.add_argument("query", type=Path, help="query audio file (WAV, FLAC, OGG)")
    parser.add_argument("-k", type=int, default=10, help="neighbours per query window")


def run(args: argparse.Namespace) -> int:
    """Print the k nearest index segments for every window of the query."""
    from encoder.audio import AudioError, load_audio
    from encoder.recording_embeddings import embed_audio
    from encoder.model_file import ModelFileError, load_model
    from encoder.neighbours import IndexFileError, load_index, nearest

    if args.k < 1:
        print(f"roomtone neighbours: -k must be >= 1, got {args.k}", file=sys.stderr)
        return 2
    try:
        bundle = load_model(args.model)
        index = load_index(args.index)
        waveform, rate = load_audio(args.query, bundle.feature_config.sample_rate, mono=True)
        offsets, embeddings = embed_audio(bundle, waveform, rate)
    except (ModelFileError, IndexFileError, AudioError) as exc:
        print(f"roomtone neighbours: {exc}", file=sys.stderr)
        return 2
    if len(offsets) == 0:
        print(f"roomtone neighbours: {args.query}: shorter than one analysis window (1 s)", file=sys.stderr)
        return 2
    if embeddings.shape[-1] != index.embeddings.shape[1]:
        print(f"roomtone neighbours: {args.index} holds {index.embeddings.shape[1]}-d embeddings, "
              f"the model gives {embeddings.shape[-1]}-d: build the index with this model", file=sys.stderr)
        return 2
    for offset, window in zip(offsets, embeddings):
        print(f"# {args.query} @ {offset:.1f} s: {args.k} nearest of {len(index.paths)}")
        print("rank\tdistance\toffset_s\tlabel\tpath")
        for rank, n in enumerate(nearest(index, window.mean(axis=0), args.k), start=1):
            print(f"{rank}\t{n.distance:.4f}\t{n.offset_s:.1f}\t{n.label or '-'}\t{n.path}")
    return 0
