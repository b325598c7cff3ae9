"""Export a model file's serving graph to ONNX (`roomtone export`): Mel filterbank, dB and encoder.

The graph starts at the STFT power, not at the samples: ONNX Runtime's STFT op (46 ms per 10 s window)
and an STFT written as a DFT matrix product (15 ms, about 1 GFLOP) are both slower than the FFT numpy
runs outside the graph (docs/performance.md has the measurements). Everything after the FFT is exported
from the torch code `encoder.features.log_mel` runs: the filterbank is that module's own buffer and the
dB step is `power_to_db` itself, so serving cannot drift from training. The STFT window travels in the
graph's metadata, taken from the same module. After export the graph is checked against torch's
`log_mel` + encoder on a test signal (`verify_graph`).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from encoder.features import _mel_transform, frame_count, log_mel, mel_filterbank, power_to_db, stft_window
from encoder.model_file import ModelBundle, load_model
from encoder.file_digest import file_sha256
from encoder.onnx_graph import GRAPH_VERSION, INPUT, OUTPUTS, GraphInfo, graph_path_for

#: Opset of the exported graph (ONNX Runtime >= 1.18 runs it).
OPSET = 18


class ServingGraph(nn.Module):
    """STFT power ``[batch, frames, n_fft // 2 + 1]`` -> (embedding ``[batch, D]``, log-Mel dB
    ``[batch, n_mels, frames]``), with the model's own filterbank, dB floor and eval-mode encoder."""

    def __init__(self, bundle: ModelBundle) -> None:
        super().__init__()
        self.feature_config = bundle.feature_config
        self.register_buffer("filterbank", mel_filterbank(bundle.feature_config).detach().clone())
        self.encoder = copy.deepcopy(bundle.encoder).cpu().eval()

    def forward(self, power: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding and log-Mel of a batch of STFT power spectrograms."""
        # the product torchaudio's MelScale computes (on power transposed to [.., frames, freqs]), same filterbank
        mel = torch.matmul(power, self.filterbank).transpose(-1, -2)
        features = power_to_db(mel, self.feature_config)
        return self.encoder(features.unsqueeze(1)), features


def graph_info(bundle: ModelBundle, model_sha256: str) -> GraphInfo:
    """The metadata a graph of ``bundle`` carries."""
    return GraphInfo(model_sha256=model_sha256, feature_config=bundle.feature_config,
                     stft_window=stft_window(bundle.feature_config), embedding_dim=bundle.embedding_dim,
                     head=bundle.head, metadata=dict(bundle.metadata), version=GRAPH_VERSION)


def graph_bytes(bundle: ModelBundle, model_sha256: str) -> bytes:
    """The serialised ONNX graph of ``bundle`` (dynamo exporter, dynamic batch and frames)."""
    import onnx

    graph = ServingGraph(bundle).eval()
    config = bundle.feature_config
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" notes
    example = torch.rand(2, frame_count(10 * config.sample_rate, config), config.n_fft // 2 + 1)
    batch, frames = torch.export.Dim("batch"), torch.export.Dim("frames", min=2)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecation notes, not ours to fix
        program = torch.onnx.export(graph, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=[INPUT], output_names=list(OUTPUTS),
                                    dynamic_shapes=({0: batch, 1: frames},), verbose=False)
    proto = program.model_proto
    for key, value in graph_info(bundle, model_sha256).to_props().items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def exact_log_mel(windows: np.ndarray, config) -> np.ndarray:
    """`encoder.features.log_mel`'s own module and dB step evaluated in float64: the reference both
    float32 paths are measured against. (torch's float32 FFT alone is off by up to ~0.03 dB in quiet
    bands of real clips; the numpy float64 FFT of the serving path is within ~1e-5 dB of this.)"""
    module = copy.deepcopy(_mel_transform(config, "cpu")).double()
    with torch.no_grad():
        return power_to_db(module(torch.from_numpy(np.asarray(windows, dtype=np.float64))), config).numpy()


def verify_graph(bundle: ModelBundle, graph_path: Path, seconds: float = 10.0) -> dict[str, float]:
    """Run the graph file with ONNX Runtime on a test signal and compare it with torch.

    Returns the largest absolute difference of the embedding from torch's (`log_mel` + encoder, float32),
    the lowest cosine between them, and the largest difference of the graph's log-Mel from
    `exact_log_mel` (dB); ValueError beyond 1e-4, 0.9999 and 1e-3 dB."""
    from encoder.onnx_embedder import OnnxEmbedder

    config = bundle.feature_config
    rng = np.random.default_rng(0)
    n = int(seconds * config.sample_rate)
    t = np.arange(n) / config.sample_rate
    windows = np.stack([0.1 * rng.standard_normal(n), 0.3 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.5)]).astype(np.float32)
    embedder = OnnxEmbedder(graph_path, check_model=None)
    onnx_embedding, onnx_features = embedder.embed_with_features(list(windows))
    with torch.no_grad():
        features = log_mel(torch.from_numpy(windows), config)
        torch_embedding = bundle.encoder.cpu().eval()(features.unsqueeze(1)).numpy()
    result = {
        "embedding_max_abs_diff": float(np.abs(onnx_embedding - torch_embedding).max()),
        "min_cosine": float(np.min(np.sum(onnx_embedding * torch_embedding, axis=1))),
        "log_mel_max_abs_diff_db": float(np.abs(onnx_features - exact_log_mel(windows, config)).max()),
    }
    if (result["embedding_max_abs_diff"] > 1e-4 or result["min_cosine"] < 0.9999
            or result["log_mel_max_abs_diff_db"] > 1e-3):
        raise ValueError(f"{graph_path}: the exported graph disagrees with torch: {result}")
    return result


def export_graph(model_path: str | Path, out_path: str | Path | None = None) -> tuple[Path, dict[str, float]]:
    """Export the serving graph of ``model_path`` to ``out_path`` (default: `graph_path_for`), written
    atomically and verified against torch; returns the path and `verify_graph`'s differences."""
    model_path = Path(model_path)
    out_path = Path(out_path) if out_path is not None else graph_path_for(model_path)
    bundle = load_model(model_path)  # first: ModelFileError names a missing or unreadable file
    sha = file_sha256(model_path)
    data = graph_bytes(bundle, sha)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        differences = verify_graph(bundle, Path(temporary))
        os.replace(temporary, out_path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return out_path, differences

