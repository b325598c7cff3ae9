"""Adapt a model to a home without labels: continue its self-supervised training on the home's own
unlabelled recordings, with the model's own recipe (`roomtone train`, the training config stored in the
model file), for a bounded time, constrained against forgetting what it knew, then keep its activity head
valid.

--audio takes folders of recordings (any audio files), unlabelled corpora or datasets (labels are never
read), and may be repeated; the clips the daemon keeps with clip retention ([clips] keep, in
<data_dir>/clips by default) are such a folder. Training stops when --minutes of wall time are spent
(decoding included; progress bar on stderr), checkpoints every 100 steps to <out>.ckpt, and Ctrl-C or
SIGTERM saves a checkpoint and exits with 130; --resume continues from it within the same total budget.

Against forgetting: the batch-norm statistics stay the model's (--statistics frozen), --corpus mixes an
unlabelled corpus (e.g. ../shared/data/unlabelled) into the home's batches (--corpus-fraction of the
clips), --anchor pulls the weights toward the model's own, and --statistics-share moves the statistics part
of the way to the home's after training. The head is kept, not refitted (a model file holds no labelled
data; --head realign instead folds a least-squares map from the adapted to the original embeddings into it,
measured worse). Custom sounds are re-embedded from their kept audio when the daemon starts with the new
model. docs/sounds.md has what each setting was measured to do: with the bundled models measured (rounds 3
and 4) no setting helped a simulated home, and on the round-4 model even the defaults (the least harmful
measured) cost 5-8 points; do not adapt the bundled model.

Example: roomtone adapt --model models/roomtone.pt --audio var/clips --out models/home.pt --minutes 20 \
             --corpus ../shared/data/unlabelled
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from encoder.adapt import ADAPT_LEARNING_RATE, ANCHOR_WEIGHT, CORPUS_FRACTION, NORM_STATISTICS, STATISTICS_SHARE
from encoder.vocabulary import NORM_STATISTICS as NORM_STATISTICS_CHOICES



def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `adapt` options."""
    parser.add_argument("--model", required=True, help="the model file to adapt")
    parser.add_argument("--audio", action="append", required=True, metavar="PATH",
                        help="folder of the home's recordings, corpus or dataset (repeatable)")
    parser.add_argument("--out", required=True, help="the adapted model file to write")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget in wall-clock minutes")
    parser.add_argument("--lr", type=float, default=ADAPT_LEARNING_RATE, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seed for triplets and the alignment sample")
    parser.add_argument("--resume", action="store_true", help="continue from <out>.ckpt")
    parser.add_argument("--head", choices=("keep", "realign"), default="keep",
                        help="keep the activity head as it is, or re-align it to the adapted embeddings")
    parser.add_argument("--corpus", action="append", default=[], metavar="DIR",
                        help="unlabelled corpus folder mixed into the home's batches so the encoder keeps what it "
                             "knew (repeatable; e.g. ../shared/data/unlabelled; default: the home's audio alone)")
    parser.add_argument("--corpus-fraction", type=float, default=CORPUS_FRACTION, metavar="F",
                        help="share of the training clips drawn from --corpus")
    parser.add_argument("--statistics", choices=NORM_STATISTICS_CHOICES, default=NORM_STATISTICS,
                        help="batch-norm statistics while training: keep the model's (frozen) or re-learn them "
                             "from the batches (update; measured to forget clean audio)")
    parser.add_argument("--statistics-share", type=float, default=STATISTICS_SHARE, metavar="S",
                        help="after training, move the batch-norm statistics this share of the way to the home's "
                             "(0 = keep the model's, 1 = the home's alone)")
    parser.add_argument("--anchor", type=float, default=ANCHOR_WEIGHT, metavar="W",
                        help="L2 pull of the weights toward the model's own (0 = none)")


def run(args: argparse.Namespace) -> int:
    """Adapt and report."""
    from encoder.adapt import AdaptConfig, adapt
    from encoder.checkpoints import CheckpointError
    from encoder.datasets import DatasetError
    from encoder.model_file import ModelFileError

    if not args.minutes > 0:
        print(f"roomtone adapt: --minutes must be positive, got {args.minutes}", file=sys.stderr)
        return 2
    try:
        config = AdaptConfig(Path(args.model), tuple(args.audio), Path(args.out), minutes=args.minutes,
                             learning_rate=args.lr, seed=args.seed, resume=args.resume, head=args.head,
                             corpus=tuple(args.corpus), corpus_fraction=args.corpus_fraction,
                             norm_statistics=args.statistics, anchor_weight=args.anchor,
                             statistics_share=args.statistics_share)
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
