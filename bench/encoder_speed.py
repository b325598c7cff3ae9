"""CPU time to embed one 10 s window (log-Mel + encoder), per encoder width and thread count.

    .venv/bin/python bench/encoder_speed.py --widths 16 24 32 48 --threads 1 2
    .venv/bin/python bench/encoder_speed.py --model models/roomtone.pt --threads 1 2

Prints a markdown table: width, parameters, file size (MB, float32 weights), median ms per window
(batch of 1, the daemon's case) and ms per window in a batch of 8. Random weights time the same as
trained ones; ``--model`` times the bundled file through `embed_windows` instead.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from encoder.features import LogMelConfig, log_mel  # noqa: E402
from encoder.model import Encoder, EncoderConfig, parameter_count  # noqa: E402


def median_ms(fn, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def time_encoder(encoder: torch.nn.Module, config: LogMelConfig, batch: int, repeats: int) -> float:
    """Median ms per window for log-Mel + forward pass on a ``batch`` of 10 s windows."""
    windows = torch.randn(batch, config.sample_rate * 10) * 0.1

    def step() -> None:
        with torch.inference_mode():
            encoder(log_mel(windows, config).unsqueeze(1))

    return median_ms(step, repeats) / batch


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
    print("| width | params | MB | threads | ms/window (batch 1) | ms/window (batch 8) |")
    print("|---|---|---|---|---|---|")
    for name, encoder, config in candidates:
        buffer = io.BytesIO()
        torch.save(encoder.state_dict(), buffer)
        megabytes = buffer.tell() / 1e6
        for threads in args.threads:
            torch.set_num_threads(threads)
            single = time_encoder(encoder, config, 1, args.repeats)
            batched = time_encoder(encoder, config, 8, max(3, args.repeats // 3))
            row = f"| {name} | {parameter_count(encoder):,} | {megabytes:.1f} | {threads} | {single:.1f} | {batched:.1f} |"
            print(row, flush=True)
            rows.append(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
