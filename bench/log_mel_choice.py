"""Where the serving path computes its STFT: inside the ONNX graph, or with numpy's FFT in front of it.

Measures, per 10 s window on one thread (median CPU ms of this process over ``--rounds`` calls):
- torch: `encoder.features.log_mel` (torchaudio), and log_mel + the folded encoder (the torch backend);
- fft outside (what `roomtone export` ships): `encoder.onnx_embedder.stft_power` (numpy float64 FFT) and
  the exported graph (filterbank, dB, encoder) in ONNX Runtime;
- whole graph: the same graph with the STFT inside it, written as a strided convolution with a windowed
  DFT basis (the only STFT form that exports and runs fast enough to consider; ONNX Runtime's STFT op
  was measured at 46 ms in issue 16), exported here with the same dynamo exporter.
For each ONNX variant it also gives the largest log-Mel difference (dB) from `log_mel` over the clips,
and from the float64 reference `encoder.onnx_export.exact_log_mel`.

    .venv/bin/python -m bench.log_mel_choice [--clips 20] [--rounds 30] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import soundfile
import torch
from torch import nn
import torch.nn.functional as F

from encoder.allocator import reuse_freed_memory
from encoder.features import log_mel, mel_filterbank, power_to_db, stft_window
from encoder.batchnorm_folding import inference_encoder
from encoder.model_file import ModelBundle, load_model
from encoder.onnx_embedder import OnnxEmbedder, stft_power
from encoder.onnx_export import OPSET, exact_log_mel, export_graph

REPO = Path(__file__).resolve().parents[1]


class WholeGraph(nn.Module):
    """Samples ``[batch, n]`` -> (embedding, log-Mel): reflect padding, a strided convolution with the
    windowed DFT basis of the window's non-zero samples (real and imaginary rows), power, filterbank, dB,
    encoder: one ONNX graph from samples to embedding."""

    def __init__(self, bundle: ModelBundle) -> None:
        super().__init__()
        config = self.config = bundle.feature_config
        window = torch.from_numpy(stft_window(config)).double()
        length, bins = window.shape[0], config.n_fft // 2 + 1
        t = torch.arange(length, dtype=torch.float64)
        k = torch.arange(bins, dtype=torch.float64)[:, None]
        angle = 2 * math.pi * k * t / config.n_fft
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window  # [2 * bins, length]
        self.register_buffer("basis", basis.float()[:, None, :])
        self.register_buffer("filterbank", mel_filterbank(config).detach().clone())
        self.offset = (config.n_fft - length) // 2
        self.encoder = bundle.encoder

    def forward(self, samples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.config.n_fft // 2
        x = F.pad(samples[:, None, :], (pad, pad), mode="reflect")[:, :, self.offset:]
        spectrum = F.conv1d(x, self.basis, stride=self.config.hop_length)  # [batch, 2 * bins, frames]
        frames = samples.shape[1] // self.config.hop_length + 1
        real, imaginary = spectrum[:, : self.basis.shape[0] // 2, :frames], spectrum[:, self.basis.shape[0] // 2:, :frames]
        power = real * real + imaginary * imaginary
        mel = torch.matmul(power.transpose(-1, -2), self.filterbank).transpose(-1, -2)
        features = power_to_db(mel, self.config)
        return self.encoder(features.unsqueeze(1)), features


def whole_graph_session(bundle: ModelBundle, seconds: float = 10.0):
    """An ONNX Runtime session (one thread) of `WholeGraph` (dynamic batch and samples)."""
    import onnxruntime

    module = WholeGraph(bundle).eval()
    example = torch.rand(2, int(seconds * bundle.feature_config.sample_rate)) * 0.1
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET, input_names=["samples"],
                                    output_names=["embedding", "log_mel"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},), verbose=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return onnxruntime.InferenceSession(program.model_proto.SerializeToString(), options,
                                        providers=["CPUExecutionProvider"])


def cpu_ms(call, rounds: int) -> float:
    """Median CPU milliseconds of this process per call (after one warm-up call)."""
    call()
    times = []
    for _ in range(rounds):
        start = time.process_time()
        call()
        times.append(1000 * (time.process_time() - start))
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    """Time every variant and print a table (and JSON with --json)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "homesounds"),
                        help="homesounds root (falls back to tests/data/homesounds)")
    parser.add_argument("--clips", type=int, default=20, help="clips for the log-Mel differences")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    reuse_freed_memory()
    torch.set_num_threads(1)
    root = Path(args.data) if (Path(args.data) / "meta.csv").is_file() else REPO / "tests" / "data" / "homesounds"
    paths = sorted((root / "audio").rglob("*.flac"))[:: max(1, len(list((root / "audio").rglob("*.flac"))) // args.clips)][: args.clips]
    clips = np.stack([soundfile.read(p, dtype="float32")[0][:160000] for p in paths])
    bundle = load_model(args.model)
    config = bundle.feature_config
    folded = inference_encoder(bundle.encoder)
    with tempfile.TemporaryDirectory() as folder:
        graph, _ = export_graph(args.model, Path(folder) / "g.onnx")
        outside = OnnxEmbedder(graph, check_model=args.model, threads=1)
        whole = whole_graph_session(bundle)
        one = clips[:1]
        window = stft_window(config)
        power = stft_power(one, config, window)
        reference = log_mel(torch.from_numpy(clips), config).numpy()
        exact = exact_log_mel(clips, config)
        _, outside_features = outside.embed_with_features(list(clips))
        whole_features = whole.run(["log_mel"], {"samples": clips})[0]

        def torch_path() -> None:
            with torch.inference_mode():
                folded(log_mel(torch.from_numpy(one), config).unsqueeze(1))

        result = {
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "clips": len(clips),
            "torch_log_mel_ms": cpu_ms(lambda: log_mel(torch.from_numpy(one), config), args.rounds),
            "torch_log_mel_encoder_ms": cpu_ms(torch_path, args.rounds),
            "fft_outside_stft_ms": cpu_ms(lambda: stft_power(one, config, window), args.rounds),
            "fft_outside_graph_ms": cpu_ms(lambda: outside.session.run(["embedding"], {"power": power}), args.rounds),
            "fft_outside_total_ms": cpu_ms(lambda: outside.embed([one[0]]), args.rounds),
            "whole_graph_total_ms": cpu_ms(lambda: whole.run(["embedding"], {"samples": one}), args.rounds),
            "fft_outside_db_vs_log_mel": float(np.abs(outside_features - reference).max()),
            "fft_outside_db_vs_float64": float(np.abs(outside_features - exact).max()),
            "whole_graph_db_vs_log_mel": float(np.abs(whole_features - reference).max()),
            "whole_graph_db_vs_float64": float(np.abs(whole_features - exact).max()),
            "torch_log_mel_db_vs_float64": float(np.abs(reference - exact).max()),
        }
    for key, value in result.items():
        print(f"{key:32s} {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
