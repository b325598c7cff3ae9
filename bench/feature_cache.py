"""What assembling a training batch costs: from cached log-Mel, or from cached audio through the
capture chain (augmented before log-Mel), with mixup and random resize crop, or decoded on the fly.

    .venv/bin/python -m bench.feature_cache --data ../shared/data/homesounds --batches 3

Prints the one-off CPU cost of filling each store, its memory, and the CPU and wall seconds to build one
batch of 64 triplets (192 views) each way (CPU time is the figure to read on a busy, shared machine). The training step itself (bench/training_speed.py) is the same for all.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch


from bench.host import load_average
from encoder.augment import AugmentConfig
from encoder.train import TrainConfig
from encoder.training_data import ClipStore, StepBatches, sampler_clips, training_clips, triplet_plan
from encoder.triplets import TripletConfig, TripletSampler

CAPTURE = AugmentConfig(reverb_p=0.5, noise_p=0.5, band_limit_p=0.5, resample_p=0.5)
CASES = (
    ("log-Mel cache, no augmentation", "log_mel", True, AugmentConfig()),
    ("log-Mel cache + mixup 0.4 + crop 0.6", "log_mel", True, AugmentConfig(mixup=0.4, crop_min_scale=0.6)),
    ("audio cache, no augmentation (log-Mel per tile)", "waveform", True, AugmentConfig()),
    ("audio cache + capture chain, each step p=0.5", "waveform", True, CAPTURE),
    ("audio cache + capture chain, each step p=1", "waveform", True,
     AugmentConfig(reverb_p=1.0, noise_p=1.0, band_limit_p=1.0, resample_p=1.0)),
    ("on the fly (decode + log-Mel of each tile's clip)", "log_mel", False, AugmentConfig()),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "homesounds"))
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig(data=(args.data,), triplets=TripletConfig(tile_s=2.0, random_offsets=True))
    clips, _ = training_clips(config.data)
    tile = int(round(config.triplets.tile_s * 1000 / config.features.hop_ms))
    print(f"clips: {len(clips)}, threads: {args.threads}, batch {args.batch_size} triplets of {config.triplets.tile_s:g} s, "
          f"load average {load_average()}\n")
    print("| batch from | fill store once (CPU s) | store MB | CPU s per batch | wall s per batch |\n|---|---|---|---|---|")
    stores: dict[tuple[str, bool], tuple[ClipStore, float]] = {}
    for name, kind, cache, augment in CASES:
        if (kind, cache) not in stores:
            start = time.process_time()
            stores[kind, cache] = ClipStore(clips, config.features, kind, cache), time.process_time() - start
        store, fill = stores[kind, cache]
        sampler = TripletSampler(sampler_clips(store, range(len(clips))), tile, config.triplets)
        batches = StepBatches(store, triplet_plan(sampler, args.batch_size, 0), len(clips) // args.batch_size,
                              tile, 3, augment, 0.0, 0)
        start, cpu = time.perf_counter(), time.process_time()
        for b in range(args.batches):
            batches[b % len(batches)]
        seconds = (time.perf_counter() - start) / args.batches
        cpu_seconds = (time.process_time() - cpu) / args.batches
        megabytes = sum(t.numel() * t.element_size() for t in store.cached) / 1e6 if store.cached else 0.0
        print(f"| {name} | {fill:.1f} | {megabytes:.0f} | {cpu_seconds:.2f} | {seconds:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
