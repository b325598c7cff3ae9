"""Per-window cost of custom-sound detection (service/analysis/sound_library.py) beside the window path: the
window's log-Mel pooled to patch frames (500 frames of 20 ms x 64 bands, encoder/patch_matching.py), their levels,
and every sound's best-matching patch, for 1, 8 and 64 sounds (the most a daemon keeps); and the ONNX graph with
and without its "columns" output (the encoder's column map, which the daemon matched before log-Mel patches and
no longer asks for).

    .venv/bin/python -m bench.sound_cost [--model models/roomtone.pt]

CPU time of this thread (one core), median of --repeats calls, so a busy machine inflates it less than a
wall-clock time would (docs/performance.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def cpu_ms(call, repeats: int) -> float:
    """Median thread CPU milliseconds of ``call()`` over ``repeats`` calls (after one warm-up call)."""
    call()
    times = []
    for _ in range(repeats):
        t0 = time.thread_time()
        call()
        times.append((time.thread_time() - t0) * 1000)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models" / "roomtone.pt")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    from functools import partial

    from encoder.few_shot import column_levels
    from encoder.onnx_embedder import OnnxEmbedder
    from encoder.onnx_graph import OUTPUTS, graph_path_for
    from encoder.patch_matching import pooled_frames
    from service.analysis.model_runner import column_dim, sound_maps
    from service.analysis.sound_library import SoundLibrary

    embedder = OnnxEmbedder(graph_path_for(args.model), check_model=args.model)
    if not embedder.has_columns:
        print(f"{embedder.graph_path}: a version-{embedder.info.version} graph (no column map); re-export it first: "
              f"roomtone export --model {args.model}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    window = (0.05 * rng.standard_normal(160_000)).astype(np.float32)
    pooled, (log_mel,), (columns,) = sound_maps(embedder, [window])
    rows = [f"Model {args.model.name}; {columns.shape[0]} frames x {columns.shape[1]} bands per 10 s window; median thread "
            f"CPU ms of {args.repeats} calls; load average {' '.join(Path('/proc/loadavg').read_text().split()[:3])}.", "",
            "| step | CPU ms per window |", "|---|---|"]
    power_call = lambda outputs: embedder._run([window], outputs, None)  # noqa: E731
    rows.append(f"| ONNX graph: embedding + log-Mel (what the daemon runs) | {cpu_ms(lambda: power_call(list(OUTPUTS[:2])), args.repeats):.2f} |")
    rows.append(f"| ONNX graph: embedding + log-Mel + columns (before log-Mel patches) | {cpu_ms(lambda: power_call(list(OUTPUTS)), args.repeats):.2f} |")
    rows.append(f"| patch frames (log-Mel pooled) | {cpu_ms(lambda: pooled_frames(log_mel), args.repeats):.3f} |")
    rows.append(f"| frame levels | {cpu_ms(lambda: column_levels(window, len(columns)), args.repeats):.3f} |")
    with tempfile.TemporaryDirectory() as folder:
        for count in (1, 8, 64):
            library = SoundLibrary(Path(folder) / f"lib{count}", "a" * 64, embedder.embed, 16000, embedder.embedding_dim,
                                   embed_columns=partial(sound_maps, embedder), column_dim=column_dim(embedder))
            for k in range(count):
                example = (0.2 * rng.standard_normal(16000 + 800 * k)).astype(np.float32)
                library.add(f"s{k}", [("x.wav", example)], threshold=0.99)
            ms = cpu_ms(lambda: library.detect(pooled, [columns], [10.0]), args.repeats)
            rows.append(f"| detect, {count} sound{'s' if count > 1 else ''} | {ms:.3f} |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
