"""Compute log-Mel features (the one definition in encoder/features.py) for audio files and save
them to an .npz: one array per file (``[channels, n_mels, frames]``) plus the LogMelConfig used."""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `features` options."""
    parser.add_argument("inputs", nargs="+", help="audio files (WAV, FLAC, OGG)")
    parser.add_argument("--out", required=True, help="output .npz path")
    parser.add_argument("--mono", action="store_true", help="average channels before computing features")


def run(args: argparse.Namespace) -> int:
    """Write features of every input to ``--out``; exit 2 on unusable audio, naming the file."""
    import numpy as np
    from tqdm import tqdm

    from encoder.audio import AudioError, load_audio
    from encoder.features import LogMelConfig, log_mel

    config = LogMelConfig()
    arrays = {}
    for index, path in enumerate(tqdm(args.inputs, desc="log-Mel", unit="file", disable=None)):
        try:
            waveform, _ = load_audio(path, config.sample_rate, mono=args.mono)
        except AudioError as exc:
            print(f"roomtone features: {exc}", file=sys.stderr)
            return 2
        arrays[f"features_{index}"] = log_mel(waveform, config).numpy()
    np.savez_compressed(
        args.out, paths=np.array(args.inputs), config=np.array(json.dumps(config.to_dict())), **arrays
    )
    print(f"wrote {len(arrays)} feature arrays to {args.out}")
    return 0
