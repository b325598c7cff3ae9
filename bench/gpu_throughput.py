"""Windows per second on a GPU at large batches: the torch CUDA path and ONNX Runtime's CUDA provider.

    nice -n 19 .venv/bin/python -m bench.gpu_throughput                       # batches 64 128 256 512
    nice -n 19 .venv/bin/python -m bench.gpu_throughput --batches 64 512 --seconds 5

- torch: `embed_windows` with the model on ``cuda`` (log-Mel on the GPU, then the encoder), 10 s windows;
- onnxruntime-gpu: the exported graph (filterbank, dB, encoder) in an ``InferenceSession`` with the
  ``CUDAExecutionProvider``; the graph alone (STFT power precomputed once) and with the daemon's numpy STFT
  in front of it (`encoder.onnx_embedder.stft_power`, on the CPU).

Without a GPU (or without onnxruntime-gpu) each part prints why it was skipped and the bench exits 0, so a
CPU machine can run it to check it. Prints one JSON object per measurement, with the device and load.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.host import load_average

REPO = Path(__file__).resolve().parents[1]


def rate(fn, batch: int, seconds: float) -> dict:
    """Windows/s of ``fn`` (one batch per call; it must block until the batch is done), median over calls."""
    fn()  # warm-up: kernels chosen, memory allocated
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"batch": batch, "windows_per_s": round(batch / statistics.median(times), 1), "calls": len(times)}


def windows(batch: int, samples: int) -> np.ndarray:
    """``batch`` windows of quiet noise with a tone, float32 ``[batch, samples]`` (the speed does not depend
    on the content)."""
    rng = np.random.default_rng(0)
    t = np.arange(samples) / 16000
    return (0.05 * rng.standard_normal((batch, samples)) + 0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def torch_cuda(model: str, batches: list[int], seconds: float) -> None:
    """The torch path on the GPU, or why it cannot run."""
    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"part": "torch_cuda", "skipped": "no CUDA GPU (torch.cuda.is_available() is False)",
                          "torch": torch.__version__}), flush=True)
        return
    from encoder.recording_embeddings import embed_windows
    from encoder.model_file import load_model

    bundle = load_model(model, device="cuda")
    samples = int(10 * bundle.feature_config.sample_rate)
    for batch in batches:
        data = torch.from_numpy(windows(batch, samples)).cuda()

        def run() -> None:
            embed_windows(bundle, data, batch_size=batch)
            torch.cuda.synchronize()

        print(json.dumps({"part": "torch_cuda", "device": torch.cuda.get_device_name(0), **rate(run, batch, seconds),
                          "load_average": load_average()}), flush=True)


def onnxruntime_gpu(model: str, batches: list[int], seconds: float) -> None:
    """The exported graph on ONNX Runtime's CUDA provider, or why it cannot run."""
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        print(json.dumps({"part": "onnxruntime_gpu", "skipped": "no CUDAExecutionProvider (install onnxruntime-gpu "
                          "on a machine with CUDA)", "providers": providers}), flush=True)
        return
    from encoder.onnx_embedder import stft_power
    from encoder.onnx_graph import INPUT, OUTPUTS, GraphInfo, graph_path_for

    session = onnxruntime.InferenceSession(str(graph_path_for(model)), providers=["CUDAExecutionProvider"])
    if session.get_providers()[0] != "CUDAExecutionProvider":
        print(json.dumps({"part": "onnxruntime_gpu", "skipped": f"session fell back to {session.get_providers()}"}))
        return
    info = GraphInfo.from_props(session.get_modelmeta().custom_metadata_map, str(graph_path_for(model)))
    samples = int(10 * info.feature_config.sample_rate)
    for batch in batches:
        audio = windows(batch, samples)
        power = stft_power(audio, info.feature_config, info.stft_window)
        graph = rate(lambda: session.run([OUTPUTS[0]], {INPUT: power}), batch, seconds)
        whole = rate(lambda: session.run([OUTPUTS[0]], {INPUT: stft_power(audio, info.feature_config,
                                                                          info.stft_window)}), batch, seconds)
        print(json.dumps({"part": "onnxruntime_gpu", "batch": batch, "graph_windows_per_s": graph["windows_per_s"],
                          "with_cpu_stft_windows_per_s": whole["windows_per_s"], "load_average": load_average()}),
              flush=True)


def main(argv: list[str] | None = None) -> int:
    """Both parts at every batch size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--seconds", type=float, default=5.0, help="time per measurement (s)")
    args = parser.parse_args(argv)
    torch_cuda(args.model, args.batches, args.seconds)
    onnxruntime_gpu(args.model, args.batches, args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
