"""Issue 16's target table, torch and onnx backends side by side in the same run, as whole processes.

Parts (each a few minutes at most; ``--parts`` picks some):
- ``fast``: ``/usr/bin/time -v roomtone run --file X --fast --loop --max-windows N --backend B``: peak RSS,
  CPU seconds (user + sys) per window including start-up, wall time, and the time from the process start
  to the first window analysed (its first ``state changed`` log line).
- ``realtime``: ``roomtone run --file X --loop --backend B`` at real time with 1 and with 4 microphones
  (file sources, as a capture device delivers), stopped with SIGTERM after ``--realtime-s``; peak RSS
  from ``/usr/bin/time -v``.
- ``window``: the window path on one core (``taskset -c 0``, one thread; ``--core`` picks another or none),
  in a fresh process per backend: median CPU ms over ``--rounds`` calls of each stage on a 10 s window
  (features: log_mel or the numpy STFT; embed: the encoder or the graph; head; health: signal checks +
  drift, and each signal check alone) and of the whole `service.analysis.analyser.Analyser.analyse` of
  that window (the glue included).
- ``fft``: the STFT's FFT (1001 frames of 1024 points, one 10 s window) with numpy's pocketfft (what ships)
  and scipy.fft (the train extra; not in the serving install), each in float64 and float32: median CPU ms
  of ``--rounds`` calls, timed round-robin in this process, and the largest difference of the graph's
  log-Mel from the float64 definition (`encoder.onnx_export.exact_log_mel`) over the vendored clips when
  the power comes from that FFT (the tests allow 1e-3 dB).
Every figure is printed with the load average at the time: the development machine is shared.

    .venv/bin/python -m bench.serving_backends [--parts fast realtime window] [--windows 300] [--json out.json]
    .venv/bin/python -m bench.serving_backends --parts window --backends onnx --core -1 --rounds 60
    .venv/bin/python -m bench.serving_backends --parts fft --rounds 60
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.host import load_average

REPO = Path(__file__).resolve().parents[1]
ROOMTONE = Path(sys.executable).parent / "roomtone"
DEFAULT_CLIP = REPO / "tests" / "data" / "homesounds" / "audio" / "speech" / "speech_A1_000.flac"
BACKENDS = ("torch", "onnx")


def time_v(stderr: str) -> dict[str, float]:
    """Peak RSS (MiB), user and system CPU seconds and elapsed seconds from ``/usr/bin/time -v`` output."""
    def field(name: str) -> str:
        match = re.search(rf"^\s*{re.escape(name)}: (.+)$", stderr, re.MULTILINE)
        if not match:
            raise RuntimeError(f"no {name!r} in /usr/bin/time output: {stderr[-500:]}")
        return match.group(1).strip()

    elapsed = [float(p) for p in field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
    return {"peak_rss_mib": int(field("Maximum resident set size (kbytes)")) / 1024,
            "user_s": float(field("User time (seconds)")), "sys_s": float(field("System time (seconds)")),
            "elapsed_s": sum(v * 60 ** i for i, v in enumerate(reversed(elapsed)))}


def run_daemon(args: list[str], backend: str, stop_after_s: float | None = None) -> dict:
    """``/usr/bin/time -v roomtone run ARGS --backend B`` on free ports; its /usr/bin/time figures and the
    seconds from the start to the first analysed window."""
    with tempfile.TemporaryDirectory() as data:
        command = ["/usr/bin/time", "-v", str(ROOMTONE), "run", *args, "--backend", backend, "--data-dir", data,
                   "--grpc-address", "127.0.0.1:0", "--metrics-port", "0", "--web-port", "0"]
        started = time.monotonic()
        proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        first_window: list[float] = []

        def read() -> None:
            for line in proc.stderr:
                lines.append(line)
                if not first_window and '"state changed"' in line:
                    first_window.append(time.monotonic() - started)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        if stop_after_s is not None:
            time.sleep(stop_after_s)
            # SIGTERM to roomtone itself (the child of /usr/bin/time), which then reports its peak
            children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
            for pid in children:
                os.kill(int(pid), signal.SIGTERM)
        code = proc.wait(timeout=1800)
        reader.join(10)
    text = "".join(lines)
    if code != 0:
        raise RuntimeError(f"roomtone run --backend {backend} exited {code}: {text[-1500:]}")
    result = time_v(text)
    result["first_window_s"] = first_window[0] if first_window else None
    result["loadavg"] = load_average()
    return result


def measure_fast(clip: Path, windows: int, backends: list[str]) -> dict:
    """The --fast --loop --max-windows run of each backend."""
    out = {}
    for backend in backends:
        r = run_daemon(["--file", str(clip), "--fast", "--loop", "--max-windows", str(windows)], backend)
        r["cpu_ms_per_window"] = 1000 * (r["user_s"] + r["sys_s"]) / windows
        out[backend] = r
        print(f"fast {backend}: {r}", flush=True)
    return out


def measure_realtime(clip: Path, seconds: float) -> dict:
    """Real-time runs with 1 and 4 microphones of each backend."""
    out = {}
    for mics in (1, 4):
        files = [arg for i in range(mics) for arg in ("--file", f"mic{i}={clip}")]
        for backend in BACKENDS:
            r = run_daemon([*files, "--loop"], backend, stop_after_s=seconds)
            out[f"{backend}_{mics}mic"] = r
            print(f"realtime {mics} mic(s) {backend}: {r}", flush=True)
    return out


WINDOW_PATH = r'''
import json, statistics, sys, time
import numpy as np
from encoder.allocator import reuse_freed_memory
reuse_freed_memory()
backend, model, clip, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
from encoder.audio import decode_samples
from encoder.drift import DriftTracker
from service.analysis.analyser import Analyser
from service.analysis.serving_model import load_serving_model
from service.analysis.window_health import window_health
from service.capture.windowing import Window
from encoder.signal_checks import SIGNAL_CHECKS, signal_of
served = load_serving_model(model, backend, "cpu", threads=1)
analyser = Analyser(served)
samples, rate = decode_samples(clip, served.feature_config.sample_rate)
samples = samples[:, : 10 * rate]
mono = samples.mean(axis=0).astype(np.float32)
if backend == "torch":
    import torch
    torch.set_num_threads(1)
    from encoder.features import log_mel
    from encoder.batchnorm_folding import inference_encoder
    encoder = inference_encoder(served.embedder.bundle.encoder)
    features = lambda: log_mel(torch.from_numpy(mono[None]), served.feature_config).unsqueeze(1)
    def embed(f):
        with torch.inference_mode():
            return encoder(f)
else:
    from encoder.onnx_embedder import stft_power
    embedder = served.embedder
    features = lambda: stft_power(mono[None], served.feature_config, embedder.info.stft_window)
    embed = lambda f: embedder.session.run(["embedding"], {"power": f})
embedding = served.embedder.embed([mono])
head = analyser.runner
drift = DriftTracker()
stages = {
    "features": features,
    "embed": (lambda f=features(): embed(f)),
    "head": lambda: head.classify(embedding),
    "health": lambda: window_health(samples, rate, embedding[0], drift, analyser.health_config),
    **{"check_" + name: (lambda check=check: check(signal_of(samples, rate), analyser.health_config))
       for name, check in SIGNAL_CHECKS.items()},
    "whole_window": lambda: analyser.analyse([Window("bench", samples, rate, 0.0, 10.0, False)]),
}
out = {}
for name, call in stages.items():
    for _ in range(3):
        call()
    cpu = []
    for _ in range(rounds):
        c0 = time.process_time()
        call()
        cpu.append(1000 * (time.process_time() - c0))
    out[name + "_cpu_ms"] = round(statistics.median(cpu), 2)
print(json.dumps(out))
'''


def measure_window(model: str, clip: Path, rounds: int, backends: list[str], core: int) -> dict:
    """The window path of each backend in a fresh process, pinned to ``core`` (none when negative)."""
    out = {}
    pin = ["taskset", "-c", str(core)] if core >= 0 else []
    for backend in backends:
        result = subprocess.run([*pin, sys.executable, "-c", WINDOW_PATH, backend, model, str(clip),
                                 str(rounds)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(result.stderr[-1500:])
        out[backend] = {**json.loads(result.stdout.strip().splitlines()[-1]), "loadavg": load_average()}
        print(f"window path {backend}: {out[backend]}", flush=True)
    return out


def measure_fft(model: str, rounds: int) -> dict:
    """The STFT's FFT in numpy and scipy, float64 and float32: CPU ms per 10 s window and log-Mel error."""
    import csv
    import statistics

    import numpy as np
    import soundfile

    from encoder.allocator import reuse_freed_memory
    from encoder.features import frame_count
    from encoder.onnx_embedder import OnnxEmbedder
    from encoder.onnx_export import exact_log_mel
    from encoder.onnx_graph import graph_path_for

    reuse_freed_memory()  # as the daemon does: without it every window page-faults its arrays in anew
    embedder = OnnxEmbedder(graph_path_for(model), check_model=model)
    config, window = embedder.feature_config, embedder.info.stft_window
    clips_dir = DEFAULT_CLIP.parents[2]
    clips = np.stack([soundfile.read(clips_dir / row["path"], dtype="float32")[0]
                      for row in csv.DictReader(open(clips_dir / "meta.csv", newline=""))])
    ffts = {"numpy": np.fft.rfft}
    try:
        import scipy.fft
        ffts["scipy"] = scipy.fft.rfft
    except ImportError:
        print("fft: scipy is not installed; numpy only", flush=True)

    def power(x: np.ndarray, rfft, dtype) -> np.ndarray:
        # the framing of encoder.onnx_embedder.stft_power, with the FFT and its precision swapped
        n_fft, length = config.n_fft, window.shape[0]
        padded = np.pad(x, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
        left = (n_fft - length) // 2
        frames = np.lib.stride_tricks.sliding_window_view(padded, length, axis=1)[:, left::config.hop_length]
        spectrum = rfft(frames[:, :frame_count(x.shape[1], config)] * window.astype(dtype), n=n_fft, axis=2)
        return (spectrum.real ** 2 + spectrum.imag ** 2).astype(np.float32)

    variants = {f"{name}_{np.dtype(dtype).name}": (rfft, dtype) for name, rfft in ffts.items()
                for dtype in (np.float64, np.float32)}
    one = clips[:1]
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (rfft, dtype) in variants.items():
            c0 = time.process_time()
            power(one, rfft, dtype)
            cpu[name].append(1000 * (time.process_time() - c0))
    exact = exact_log_mel(clips, config)
    out = {}
    for name, (rfft, dtype) in variants.items():
        log_mel = embedder.session.run(["log_mel"], {"power": power(clips, rfft, dtype)})[0]
        out[name] = {"stft_cpu_ms": round(statistics.median(cpu[name]), 2),
                     "log_mel_max_abs_diff_db": float(f"{np.abs(log_mel - exact).max():.2e}")}
    out["loadavg"] = load_average()
    print(f"fft: {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts and print (and optionally write) the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["fast", "realtime", "window"],
                        choices=["fast", "realtime", "window", "fft"])
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--clip", default=str(DEFAULT_CLIP), help="a 10 s audio file")
    parser.add_argument("--windows", type=int, default=300, help="windows of the --fast run")
    parser.add_argument("--realtime-s", type=float, default=45.0, help="seconds each real-time run lasts")
    parser.add_argument("--rounds", type=int, default=30, help="windows timed on the window path")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS,
                        help="backends of the fast and window parts")
    parser.add_argument("--core", type=int, default=0,
                        help="CPU the window part is pinned to (-1: not pinned; a core held by a real-time task starves it)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    clip = Path(args.clip)
    result: dict = {"when": time.strftime("%Y-%m-%d %H:%M"), "clip": str(clip)}
    if "fast" in args.parts:
        result["fast"] = measure_fast(clip, args.windows, args.backends)
    if "realtime" in args.parts:
        result["realtime"] = measure_realtime(clip, args.realtime_s)
    if "window" in args.parts:
        result["window"] = measure_window(args.model, clip, args.rounds, args.backends, args.core)
    if "fft" in args.parts:
        result["fft"] = measure_fft(args.model, args.rounds)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
