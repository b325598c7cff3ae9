"""Training speed: triplets per second of one optimiser step, and what the bundled model's run took.

    .venv/bin/python -m bench.training_speed                         # CPU, 1 and 2 threads
    .venv/bin/python -m bench.training_speed --device cuda           # on a GPU (float16 autocast, as training)

The step is the one in `encoder.train.train`: the encoder of the bundled model's training config
(models/roomtone.train.toml: width, batch size, tile length, features) on a batch of triplet tiles,
zero-filtered triplet loss, backward, Adam. Tiles are random log-Mel-shaped tensors: the step's cost
does not depend on the values, and assembling a batch from the in-memory feature cache is measured by
bench/feature_cache.py. Then it reads the training record stored in models/roomtone.pt (steps, wall
time, device, threads) and prints the whole run's effective rate, validation and batch assembly included.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from bench.host import load_average, machine
from encoder.allocator import reuse_freed_memory
from encoder.features import frame_count
from encoder.model import Encoder
from encoder.train import read_train_config, train_step

REPO = Path(__file__).resolve().parents[1]


def seconds_per_step(config, device: torch.device, steps: int) -> float:
    """Median wall time of one training step (forward, loss, backward, Adam) on ``device``."""
    torch.manual_seed(0)
    model = Encoder(config.encoder).to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    frames = frame_count(int(config.triplets.tile_s * config.features.sample_rate), config.features)
    if config.triplets.sampler == "pk":
        ids = torch.arange(config.triplets.clips_per_batch).repeat_interleave(config.triplets.tiles_per_clip)
    else:
        ids = torch.arange(2 * config.batch_size).view(-1, 2)[:, [0, 0, 1]].flatten()
    batch = torch.randn(len(ids), 1, config.features.n_mels, frames, device=device) * 20 - 50
    times = []
    for step in range(steps + 1):  # the first step warms up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        train_step(model, batch, ids, optimiser, scaler, config.loss, config.margin, amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if step:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "models" / "roomtone.train.toml"))
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"), help="whose training record to read")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    reuse_freed_memory()
    config = read_train_config(args.config)
    device = torch.device(args.device)
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {machine()}; device {device}; load average {load_average()}")
    print(f"config {args.config}: width {config.encoder.width}, batch {config.batch_size} triplets of "
          f"{config.triplets.tile_s:g} s tiles\n")
    tiles = config.triplets.clips_per_batch * config.triplets.tiles_per_clip if config.triplets.sampler == "pk" else 3 * config.batch_size
    print("| threads | s per step | tiles/s |\n|---|---|---|")
    for threads in (args.threads if device.type == "cpu" else [torch.get_num_threads()]):
        torch.set_num_threads(threads)
        step = seconds_per_step(config, device, args.steps)
        print(f"| {threads} | {step:.2f} | {tiles / step:.1f} |", flush=True)

    from encoder.model_file import load_model

    meta = load_model(args.model).metadata
    training = meta.get("training", {})
    if training.get("steps") and training.get("wall_time_s"):
        batch = training.get("config", {}).get("batch_size", config.batch_size)
        print(f"\n{args.model}: {training['steps']} steps of {batch} triplets in {training['wall_time_s'] / 60:.1f} min "
              f"on {training.get('device')} with {training.get('torch_threads')} threads "
              f"({training['steps'] * batch / training['wall_time_s']:.1f} triplets/s over the whole run, validation "
              f"and batch assembly included); provisional: {meta.get('provisional')}; created {meta.get('created_utc')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
