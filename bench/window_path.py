"""Where the time of one 10 s window goes: load -> log-Mel -> embed -> head -> health, per stage.

    .venv/bin/python -m bench.window_path                          # 1 and 2 threads, stages + options
    .venv/bin/python -m bench.window_path --threads 1 --rounds 60 --json /tmp/window_path.json

Stages, each as the daemon runs it for one mono 10 s window (batch 1):

- load: `load_audio` of a 10 s 16 kHz FLAC of ../shared/data/homesounds (file read + decode);
- log-Mel: `log_mel` with the model file's `LogMelConfig`;
- embed: the encoder as embedding code runs it (`encoder.batchnorm_folding.inference_encoder`);
- head: `ActivityHead.predict_proba` (a model file without a head gets one fitted on random
  embeddings of the same size: the cost does not depend on the values);
- health: what `Analyser` does per window after the head: `assess_window`, the drift tracker
  (its `update` as the drift entry of `assess_window`) and the RMS level;
- full: load + `Analyser.analyse` on that window, i.e. all of the above end to end with the glue.

Options tried for the encoder (same window, batch 1): eager as loaded, eager channels-last, batch
norms folded + channels-last (what `inference_encoder` returns), `torch.compile` (with
``--compile``; slow to build), and ONNX Runtime when `onnxruntime` and `onnx` are importable (they
are not dependencies; put them on PYTHONPATH to compare).

Everything runs in one worker thread, as the daemon's analysis thread does (glibc serves a worker
thread from its own arena, which is where the malloc setting below matters most).

The process first calls `encoder.allocator.reuse_freed_memory()` as the daemon does;
``--no-allocator-tuning`` leaves glibc's defaults, to show what that setting is worth.

Every variant is timed round-robin (one call of each per round), so a busy machine slows all of them
alike; the load average before and after is printed with the tables. Speed targets live here, never
in the tests.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import statistics
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench.host import load_average, machine
from encoder.audio import load_audio
from encoder.features import log_mel
from encoder.head import ActivityHead, fit_head
from encoder.batchnorm_folding import inference_encoder
from encoder.model_file import ModelBundle, load_model

REPO = Path(__file__).resolve().parents[1]

SHARED = REPO.parent / "shared" / "data"
DEFAULT_CLIP = SHARED / "homesounds" / "audio" / "speech" / "speech_A1_000.flac"


def round_robin(candidates: dict[str, Callable[[], object]], rounds: int, warmup: int = 3) -> dict[str, list[tuple[float, float]]]:
    """(wall ms, CPU ms of the calling thread) of each call of each candidate, one call of each per round.

    With one thread all the work runs on the calling thread, so its CPU time is the cost on one core
    even when other processes share the machine (wall time then includes waiting for a core).
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start, cpu = time.perf_counter(), time.thread_time()
            fn()
            times[name].append(((time.perf_counter() - start) * 1000, (time.thread_time() - cpu) * 1000))
    return times


def summary(values: list[tuple[float, float]]) -> dict[str, float]:
    """Median and 90th percentile of wall ms, median CPU ms of the calling thread."""
    wall = [w for w, _ in values]
    return {"median_ms": round(statistics.median(wall), 2), "p90_ms": round(float(np.percentile(wall, 90)), 2),
            "cpu_median_ms": round(statistics.median(c for _, c in values), 2)}


def head_of(bundle: ModelBundle) -> tuple[ActivityHead, bool]:
    """The bundle's activity head, or a stand-in fitted on random embeddings (and False)."""
    if bundle.head:
        return ActivityHead.from_dict(bundle.head), True
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(80, bundle.embedding_dim)).astype(np.float32)
    labels = [f"class{i % 8}" for i in range(80)]
    return fit_head(embeddings, labels), False


def onnx_session(encoder: torch.nn.Module, features: torch.Tensor, threads: int):
    """An ONNX Runtime session of ``encoder`` (dynamic batch and frames), or None when not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    buffer = io.BytesIO()
    torch.onnx.export(encoder, (features,), buffer, input_names=["features"], output_names=["embedding"],
                      dynamic_axes={"features": {0: "batch", 3: "frames"}}, dynamo=False, opset_version=17)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])


def measure(bundle: ModelBundle, clip: Path, threads: int, rounds: int, compile_encoder: bool) -> dict:
    """Stage and option timings (ms) for one thread count."""
    from service.analysis.analyser import Analyser
    from service.analysis.result_builder import rms_dbfs
    from service.capture.windowing import Window
    from encoder.drift import DriftTracker
    from encoder.signal_checks import assess_window

    torch.set_num_threads(threads)
    config = bundle.feature_config
    rate = config.sample_rate
    waveform, _ = load_audio(clip, rate)
    samples = waveform.numpy()[:, : 10 * rate]
    mono = torch.from_numpy(samples.mean(axis=0))[None]
    head, real_head = head_of(bundle)
    analyser_bundle = bundle if real_head else ModelBundle(bundle.encoder, config, bundle.encoder_config, head.to_dict(), bundle.metadata)
    analyser = Analyser(analyser_bundle)
    drift = DriftTracker()
    eager = bundle.encoder
    fast = inference_encoder(eager)
    channels_last = copy.deepcopy(eager).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        features = log_mel(mono, config).unsqueeze(1)
        embedding = fast(features).numpy()
    window_start = [0.0]

    def full() -> None:
        loaded, _ = load_audio(clip, rate)
        window_start[0] += 10.0
        analyser.analyse([Window("bench", loaded.numpy()[:, : 10 * rate], rate, window_start[0], window_start[0] + 10.0, False)])

    def health() -> None:
        assess_window(samples, rate, analyser.health_config, drift=lambda learn: drift.update(embedding[0], learn=learn))
        rms_dbfs(samples)

    def run_encoder(module: torch.nn.Module) -> Callable[[], object]:
        def call() -> object:
            with torch.inference_mode():
                return module(features)
        return call

    stages = {
        "load": lambda: load_audio(clip, rate),
        "log-Mel": lambda: log_mel(mono, config),
        "embed": run_encoder(fast),
        "head": lambda: head.predict_proba(embedding),
        "health": health,
        "full": full,
    }
    options: dict[str, Callable[[], object]] = {
        "encoder: eager, as loaded (previous)": run_encoder(eager),
        "encoder: eager, channels-last": run_encoder(channels_last),
        "encoder: batch norms folded + channels-last (now)": run_encoder(fast),
    }
    notes = []
    if compile_encoder:
        started = time.perf_counter()
        compiled = torch.compile(fast)
        run_encoder(compiled)()
        notes.append(f"torch.compile took {time.perf_counter() - started:.0f} s to build")
        options["encoder: torch.compile of the folded encoder"] = run_encoder(compiled)
    with torch.no_grad():
        session = onnx_session(eager, features.clone(), threads)
    if session is None:
        notes.append("ONNX Runtime not importable: not compared")
    else:
        inputs = {"features": features.numpy()}
        options["encoder: ONNX Runtime (optional, not a dependency)"] = lambda: session.run(None, inputs)
    timed = round_robin({**{f"stage {k}": v for k, v in stages.items()}, **options}, rounds)
    return {
        "threads": threads,
        "stages": {k: summary(timed[f"stage {k}"]) for k in stages},
        "options": {k: summary(timed[k]) for k in options},
        "head": "model's own" if real_head else "stand-in (model file has no head)",
        "notes": notes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--clip", default=str(DEFAULT_CLIP), help="a 10 s audio file (default: a homesounds clip)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch threads (default: 1 2)")
    parser.add_argument("--rounds", type=int, default=40, help="timed calls of every stage and option")
    parser.add_argument("--compile", action="store_true", help="also try torch.compile (takes minutes to build)")
    parser.add_argument("--no-allocator-tuning", action="store_true", help="keep glibc's malloc defaults")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if not args.no_allocator_tuning:
        from encoder.allocator import reuse_freed_memory

        reuse_freed_memory()

    bundle = load_model(args.model)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load_before = load_average()
    results: list[dict] = []

    def work() -> None:
        results.extend(measure(bundle, Path(args.clip), t, args.rounds, args.compile) for t in args.threads)

    worker = threading.Thread(target=work, name="analysis")
    worker.start()
    worker.join()
    if len(results) != len(args.threads):
        raise SystemExit("measurement failed (see the traceback above)")
    record = {"date": started, "machine": machine(), "model": args.model,
              "width": bundle.encoder_config.width, "load_before": load_before, "load_after": load_average(),
              "rounds": args.rounds, "allocator_tuning": not args.no_allocator_tuning, "results": results}
    print(f"{started}; {record['machine']}; model {args.model} (width {record['width']}); "
          f"load average {load_before} before, {record['load_after']} after; {args.rounds} rounds; "
          f"malloc {'tuned' if record['allocator_tuning'] else 'glibc defaults'}")
    def header() -> str:
        names = []
        for r in results:
            names.append(f"{r['threads']} thread{'s' if r['threads'] > 1 else ''}: wall median / p90 ms")
            if r["threads"] == 1:
                names.append("1 thread: CPU ms (median)")
        return " | ".join(names)

    def cells(entry: dict, threads: int) -> str:
        text = f"{entry['median_ms']} / {entry['p90_ms']}"
        return text + (f" | {entry['cpu_median_ms']}" if threads == 1 else "")

    columns = len(header().split(" | "))
    for title, key in (("stage", "stages"), ("option (batch 1)", "options")):
        print(f"\n| {title} | {header()} |\n|---|" + "---|" * columns)
        for name in results[0][key]:
            print(f"| {name} | " + " | ".join(cells(r[key][name], r["threads"]) for r in results) + " |")
    for note in {n for r in results for n in r["notes"]} | {f"head: {results[0]['head']}"}:
        print(f"- {note}")
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
