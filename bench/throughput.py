"""Windows per second through the embedding path and the daemon's whole analysis, at batch 1, 8 and 32.

    .venv/bin/python -m bench.throughput                          # CPU, 1 and 2 threads
    .venv/bin/python -m bench.throughput --device cuda --batches 1 8 32 256   # on a GPU, features there too

- embed: `embed_windows` (log-Mel with the model's config + the encoder as embedding code runs it) on a
  batch of 10 s mono windows, i.e. what `roomtone embed` and the evaluation do;
- analyse: `Analyser.analyse` on a batch of `Window`s from different microphones, i.e. what the daemon's
  analysis thread does per batch (embed + activity head + health checks + drift + records).

The windows are real homesounds clips (decoded once, outside the timing). The process reuses freed
memory as the daemon does (`encoder.allocator`). Prints a markdown table with the machine, date and
load average; speed targets live here, never in the tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from bench.window_path import head_of
from bench.host import load_average, machine
from encoder.allocator import reuse_freed_memory
from encoder.audio import load_audio
from encoder.datasets import read_dataset
from encoder.recording_embeddings import embed_windows
from encoder.model_file import ModelBundle, load_model

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared" / "data"


def clips(rate: int, count: int) -> np.ndarray:
    """``count`` real 10 s mono windows [count, 10 * rate] (homesounds, cycled)."""
    records = read_dataset(SHARED / "homesounds")
    out = []
    for record in records[: min(count, len(records))]:
        waveform, _ = load_audio(record.path, rate, mono=True)
        out.append(waveform[0, : 10 * rate].numpy())
    return np.stack([out[i % len(out)] for i in range(count)]).astype(np.float32)


def windows_per_second(fn, batch: int, seconds: float) -> tuple[float, float]:
    """(windows per wall second, windows per CPU second of this process) of ``fn()`` processing ``batch``
    windows, over at least ``seconds`` after a warm-up. On a machine shared with other jobs the wall
    rate includes waiting for a core; the CPU rate does not."""
    fn()
    times, cpu = [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        start, used = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - used)
    return batch / statistics.median(times), batch / statistics.median(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (CPU)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--seconds", type=float, default=8.0, help="time per measurement")
    args = parser.parse_args()

    from service.analysis.analyser import Analyser
    from service.capture.windowing import Window

    reuse_freed_memory()
    bundle = load_model(args.model, device=args.device)
    head, real_head = head_of(bundle)
    if not real_head:
        bundle = ModelBundle(bundle.encoder, bundle.feature_config, bundle.encoder_config, head.to_dict(), bundle.metadata)
    rate = bundle.feature_config.sample_rate
    data = clips(rate, max(args.batches))
    analyser = Analyser(bundle)
    print(f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; {machine()}; device {args.device}; "
          f"model {args.model} (width {bundle.encoder_config.width}); load average {load_average()} before")
    threads = args.threads if args.device == "cpu" else [torch.get_num_threads()]
    print("\n| threads | batch | embed windows/s | analyse windows/s | embed windows per CPU-s | analyse windows per CPU-s |"
          "\n|---|---|---|---|---|---|")
    for count in threads:
        torch.set_num_threads(count)
        for batch in args.batches:
            windows = torch.from_numpy(data[:batch])
            counter = [0]

            def analyse() -> None:
                counter[0] += 1
                analyser.analyse([Window(f"mic{i}", data[i][None], rate, counter[0] * 10.0, counter[0] * 10.0 + 10, False)
                                  for i in range(batch)])

            embed = windows_per_second(lambda: embed_windows(bundle, windows, batch_size=batch), batch, args.seconds)
            full = windows_per_second(analyse, batch, args.seconds)
            print(f"| {count} | {batch} | {embed[0]:.1f} | {full[0]:.1f} | {embed[1]:.1f} | {full[1]:.1f} |", flush=True)
    print(f"\nload average {load_average()} after")
    return 0


if __name__ == "__main__":
    sys.exit(main())
