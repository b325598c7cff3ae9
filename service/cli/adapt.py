"""Adapt a model to a home without labels: continue its self-supervised training on the home's own
unlabelled recordings, with the model's own recipe (`roomtone train`, the training config stored in the
model file), for a bounded time, then keep its activity head valid.

--audio takes folders of recordings (any audio files), unlabelled corpora or datasets (labels are never
read), and may be repeated; the clips the daemon keeps with clip retention ([clips] keep, in
<data_dir>/clips by default) are such a folder. Training stops when --minutes of wall time are spent
(progress bar on stderr), checkpoints every 100 steps to <out>.ckpt, and Ctrl-C or SIGTERM saves a
checkpoint and exits with 130; --resume continues from it within the same total budget.

The head is kept, not refitted (a model file holds no labelled data): the short, low-rate run keeps its
input space close to where it was (--head realign instead folds a least-squares map from the adapted to
the original embeddings into it; measured worse). Custom sounds are re-embedded from their kept audio when
the daemon starts with the new model. See docs/sounds.md for what adaptation was measured to do.

Example: roomtone adapt --model models/roomtone.pt --audio var/clips --out models/home.pt --minutes 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `adapt` options."""
    parser.add_argument("--model", required=True, help="the model file to adapt")
    parser.add_argument("--audio", action="append", required=True, metavar="PATH",
                        help="folder of the home's recordings, corpus or dataset (repeatable)")
    parser.add_argument("--out", required=True, help="the adapted model file to write")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget in wall-clock minutes")
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 1e-4)")
    parser.add_argument("--seed", type=int, default=0, help="seed for triplets and the alignment sample")
    parser.add_argument("--resume", action="store_true", help="continue from <out>.ckpt")
    parser.add_argument("--head", choices=("keep", "realign"), default="keep",
                        help="keep the activity head as it is, or re-align it to the adapted embeddings")


def run(args: argparse.Namespace) -> int:
    """Adapt and report."""
    from encoder.adapt import ADAPT_LEARNING_RATE, AdaptConfig, adapt
    from encoder.checkpoints import CheckpointError
    from encoder.datasets import DatasetError
    from encoder.model_file import ModelFileError

    if not args.minutes > 0:
        print(f"roomtone adapt: --minutes must be positive, got {args.minutes}", file=sys.stderr)
        return 2
    config = AdaptConfig(Path(args.model), tuple(args.audio), Path(args.out), args.minutes,
                         args.lr or ADAPT_LEARNING_RATE, args.seed, args.resume, head=args.head)
    try:
        result = adapt(config)
    except (ModelFileError, DatasetError, CheckpointError, ValueError) as exc:
        print(f"roomtone adapt: {exc}", file=sys.stderr)
        return 2
    if result.interrupted:
        print(f"roomtone adapt: interrupted after {result.steps} steps; checkpoint saved, continue with --resume",
              file=sys.stderr)
        return 130
    how = "re-aligned" if args.head == "realign" else "kept"
    print(f"wrote {result.out}: {result.steps} steps; head {how} (adapted -> original map R^2 "
          f"{result.align_r2:.3f} on {result.align_windows} windows)")
    return 0
