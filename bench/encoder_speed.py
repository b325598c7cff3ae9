"""CPU time to embed one 10 s window (log-Mel + encoder), per encoder width and thread count.

    .venv/bin/python -m bench.encoder_speed --widths 16 24 32 48 --threads 1 2
    .venv/bin/python -m bench.encoder_speed --model models/roomtone.pt --threads 1 2

Prints a markdown table: width, parameters, file size (MB, float32 weights), median ms per window
(batch of 1, the daemon's case) and ms per window in a batch of 8, all through `embed_windows` (the
daemon's path). Random weights time the same as trained ones; ``--model`` times a model file.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import torch


from encoder.recording_embeddings import embed_windows
from encoder.features import LogMelConfig
from encoder.model_file import ModelBundle
from encoder.model import Encoder, EncoderConfig, parameter_count


def median_ms(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """Median wall time and median process CPU time of ``fn()`` in milliseconds. CPU time is the
    steadier figure on a shared machine; with N threads it is the sum over the threads."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def time_encoder(encoder: torch.nn.Module, config: LogMelConfig, batch: int, repeats: int) -> tuple[float, float]:
    """Median ms per window of `embed_windows` (the daemon's path: log-Mel + encoder) on ``batch``
    10 s windows."""
    bundle = ModelBundle(encoder, config, encoder.config)
    windows = torch.randn(batch, config.sample_rate * 10) * 0.1
    wall, cpu = median_ms(lambda: embed_windows(bundle, windows, batch_size=batch), repeats)
    return wall / batch, cpu / batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 24, 32, 48])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", help="time this model file instead of random widths")
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()

    rows = []
    if args.model:
        from encoder.model_file import load_model

        bundle = load_model(args.model)
        candidates = [(f"{Path(args.model).name} (w={bundle.encoder_config.width})", bundle.encoder, bundle.feature_config)]
    else:
        candidates = []
        for width in args.widths:
            torch.manual_seed(0)
            candidates.append((str(width), Encoder(EncoderConfig(width=width)).eval(), LogMelConfig()))
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    print("| width | params | MB | threads | wall ms/window (batch 1) | CPU ms/window (batch 1) | wall ms/window (batch 8) |")
    print("|---|---|---|---|---|---|---|")
    for name, encoder, config in candidates:
        buffer = io.BytesIO()
        torch.save(encoder.state_dict(), buffer)
        megabytes = buffer.tell() / 1e6
        for threads in args.threads:
            torch.set_num_threads(threads)
            single, single_cpu = time_encoder(encoder, config, 1, args.repeats)
            batched, _ = time_encoder(encoder, config, 8, max(3, args.repeats // 3))
            row = (f"| {name} | {parameter_count(encoder):,} | {megabytes:.1f} | {threads} | {single:.1f} | "
                   f"{single_cpu:.1f} | {batched:.1f} |")
            print(row, flush=True)
            rows.append(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
