"""Train the encoder self-supervised (Tile2Vec triplets, zero-filtered triplet loss; labels are never
read) and write a model file. Examples: "roomtone train --data ../shared/data --out models/roomtone.pt";
"roomtone train --config models/roomtone.train.toml" (the bundled model); add --resume to continue from
<out>.ckpt; "torchrun --nproc_per_node 2 -m service.cli.main train --config FILE" runs DDP (gloo on CPU).

--data takes a dataset (directory or meta.csv; DCASE 2018 task 5 layout too; labels are never read), an
unlabelled corpus (a folder with manifest.csv, or any folder of audio files) or a folder of these,
and may be repeated. --config reads a TOML or JSON file with the TrainConfig keys (steps, batch_size,
learning_rate, max_minutes, validate_every, checkpoint_every, num_workers, cache_features, ...) and the
tables [encoder] (width, blocks, embedding_dim), [features] (LogMelConfig) and [triplets] (tile_s,
random_offsets, neighbour = "clip" | "group", sampler = "random" | "pk", clips_per_batch, tiles_per_clip) and
[augment] (capture chain, mixup, crop; docs/encoder.md); loss = "zero_filtered" | "batch_all" | "batch_hard",
projection_dim; command-line options override the file.
Defaults: 2000 steps of batch 64, Adam lr 1e-3, 10% of groups held out for validation, checkpoints
every 100 steps to <out>.ckpt, device auto (CUDA with mixed precision when present).
Ctrl-C or SIGTERM saves a resumable checkpoint and exits with 130 (no model file is written).
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `train` options (None = take the config file's value or the TrainConfig default)."""
    parser.add_argument("--data", action="append", help="dataset or folder of datasets (repeatable)")
    parser.add_argument("--config", help="TOML/JSON training config")
    parser.add_argument("--out", help="model file to write (default models/roomtone.pt)")
    parser.add_argument("--checkpoint", help="checkpoint path (default <out>.ckpt)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint")
    parser.add_argument("--steps", type=int, help="total optimiser steps (default 2000)")
    parser.add_argument("--max-minutes", type=float, help="time budget in minutes on the config's budget_clock (\"wall\" by default, \"cpu\" = this process's CPU time, as the bundled config uses); stop and save when spent (default none)")
    parser.add_argument("--batch-size", type=int, help="triplets per step, over all ranks (default 64)")
    parser.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    parser.add_argument("--width", type=int, help="encoder width (default from EncoderConfig)")
    parser.add_argument("--validate-every", type=int, help="steps between validations (default 100)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 100)")
    parser.add_argument("--seed", type=int, help="seed for initialisation, split and triplets (default 0)")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (default auto)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default 0)")
    parser.add_argument("--no-cache", action="store_true", help="compute log-Mel on every access instead of once per clip")
    parser.add_argument("--provisional", action="store_true", help="mark the model file as provisional")
    parser.add_argument("--note", help="free text stored in the model file's metadata")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """The TrainConfig from --config (if any) with command-line overrides applied."""
    from encoder.train import TrainConfig, read_train_config

    config = read_train_config(args.config) if args.config else TrainConfig()
    overrides = {
        "data": tuple(args.data) if args.data else None, "out": args.out, "checkpoint": args.checkpoint,
        "steps": args.steps, "max_minutes": args.max_minutes, "batch_size": args.batch_size,
        "learning_rate": args.lr, "seed": args.seed, "device": args.device, "num_workers": args.workers,
        "note": args.note, "validate_every": args.validate_every, "checkpoint_every": args.checkpoint_every,
    }
    changes = {k: v for k, v in overrides.items() if v is not None}
    if args.no_cache:
        changes["cache_features"] = False
    if args.provisional:
        changes["provisional"] = True
    if args.width is not None:
        changes["encoder"] = config.encoder.replaced(width=args.width)
    return config.replaced(**changes)


def run(args: argparse.Namespace) -> int:
    """Train; exit 2 on bad config/data/checkpoint, 130 when interrupted (checkpoint saved)."""
    from encoder.audio import AudioError
    from encoder.datasets import DatasetError
    from encoder.train import CheckpointError, train

    try:
        config = config_from_args(args)
        if not config.data:
            print("roomtone train: no data: pass --data PATH or set data in --config", file=sys.stderr)
            return 2
        result = train(config, resume=args.resume, progress=not args.quiet)
    except (CheckpointError, DatasetError, AudioError, ValueError) as exc:
        print(f"roomtone train: {exc}", file=sys.stderr)
        return 2
    if result.interrupted:
        print(f"roomtone train: interrupted at step {result.state.step}; resume with --resume "
              f"(checkpoint {config.checkpoint_path})", file=sys.stderr)
        return 130
    metrics = result.bundle.metadata["metrics"]
    print(f"wrote {config.out}: {result.state.step} steps in {result.state.elapsed_s / 60:.1f} min, "
          f"train loss {metrics['final_train_loss']:.4f}, validation loss {metrics['validation_loss']}")
    return 0
