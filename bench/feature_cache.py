"""Is it faster to compute log-Mel once per clip and keep it in memory, or on every triplet access?

    .venv/bin/python bench/feature_cache.py --data ../shared/data/homesounds --batches 3

Prints the one-off cost of filling the cache, the time to assemble one batch of 64 triplets (3 tiles
each) from the cache and on the fly, and the cache's memory. The training step itself is identical.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder.train import ClipFeatures, TrainConfig, training_clips, triplet_tiles  # noqa: E402


def batch_seconds(dataset, batches: int, batch_size: int) -> float:
    """Mean seconds to assemble one batch of triplets."""
    start = time.perf_counter()
    for b in range(batches):
        torch.stack([dataset[(b * batch_size + i) % len(dataset)] for i in range(batch_size)])
    return (time.perf_counter() - start) / batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "homesounds"))
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = TrainConfig(data=(args.data,))
    clips, _ = training_clips(config.data)
    paths = [c.path for c in clips]
    groups = [c.group for c in clips]
    indices = list(range(len(clips)))

    start = time.perf_counter()
    cached = ClipFeatures(paths, config.features, cache=True)
    fill = time.perf_counter() - start
    megabytes = sum(t.numel() * t.element_size() for t in cached.cached) / 1e6
    from_cache = batch_seconds(triplet_tiles(cached, indices, groups, config, 0), args.batches, args.batch_size)
    on_the_fly = batch_seconds(
        triplet_tiles(ClipFeatures(paths, config.features, cache=False), indices, groups, config, 0),
        args.batches, args.batch_size,
    )
    print(f"clips: {len(clips)}, threads: {args.threads}")
    print(f"fill cache once: {fill:.1f} s ({fill / len(clips) * 1000:.1f} ms/clip), {megabytes:.0f} MB in memory")
    print(f"batch of {args.batch_size} triplets from cache: {from_cache * 1000:.1f} ms")
    print(f"batch of {args.batch_size} triplets on the fly: {on_the_fly * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
