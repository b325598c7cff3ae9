"""Export a model file's serving graph to ONNX (`roomtone export`): Mel filterbank, dB and encoder.

The graph starts at the STFT power, not at the samples: ONNX Runtime's STFT op (46 ms per 10 s window)
and an STFT written as a DFT matrix product (15 ms, about 1 GFLOP) are both slower than the FFT numpy
runs outside the graph (docs/performance.md has the measurements). Everything after the FFT is exported
from the torch code `encoder.features.log_mel` runs: the filterbank is that module's own buffer and the
dB step is `power_to_db` itself, so serving cannot drift from training. The STFT window travels in the
graph's metadata, taken from the same module. After export the graph is checked against torch's
`log_mel` + encoder on a test signal (`verify_graph`).

The filterbank is 98 % zeros (each FFT bin feeds at most two Mel bands), so the graph multiplies by it
in `FILTERBANK_BLOCKS` blocks of consecutive bands, each over the bins those bands cover
(`filterbank_blocks`): 13 % of the dense product's work, the same sums (only zero terms are left out);
0.7 ms less per 10 s window in ONNX Runtime (docs/performance.md).
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from encoder.atomic_files import replacing
from encoder.features import _mel_transform, frame_count, log_mel, mel_filterbank, power_to_db, stft_window
from encoder.model_file import ModelBundle, load_model
from encoder.file_digest import file_sha256
from encoder.onnx_graph import GRAPH_VERSION, INPUT, OUTPUTS, GraphInfo, graph_path_for

#: Opset of the exported graph (ONNX Runtime >= 1.18 runs it).
OPSET = 18
#: Groups of consecutive Mel bands the filterbank product is split into (8: 13 % of the dense work at
#: the default config; 16 does less work but was slower in ONNX Runtime, each block being one more op).
FILTERBANK_BLOCKS = 8


def filterbank_blocks(filterbank: torch.Tensor, groups: int = FILTERBANK_BLOCKS) -> list[tuple[int, int, int, int]]:
    """``(bin_lo, bin_hi, band_lo, band_hi)`` per group of consecutive Mel bands of a ``[bins, bands]``
    filterbank: the bins holding every non-zero weight of those bands, so that concatenating
    ``power[..., bin_lo:bin_hi] @ filterbank[bin_lo:bin_hi, band_lo:band_hi]`` over the groups is
    ``power @ filterbank``. A group without a non-zero weight keeps one bin (its product is zero)."""
    bands = filterbank.shape[1]
    edges = np.linspace(0, bands, min(groups, bands) + 1).round().astype(int)
    blocks = []
    for band_lo, band_hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        rows = torch.nonzero((filterbank[:, band_lo:band_hi] != 0).any(dim=1)).flatten().tolist()
        bin_lo, bin_hi = (rows[0], rows[-1] + 1) if rows else (0, 1)
        blocks.append((bin_lo, bin_hi, band_lo, band_hi))
    return blocks


class ServingGraph(nn.Module):
    """STFT power ``[batch, frames, n_fft // 2 + 1]`` -> (embedding ``[batch, D]``, log-Mel dB
    ``[batch, n_mels, frames]``, column map ``[batch, columns, column_dim]``), with the model's own filterbank
    (in `filterbank_blocks`), dB floor and eval-mode encoder."""

    def __init__(self, bundle: ModelBundle) -> None:
        super().__init__()
        self.feature_config = bundle.feature_config
        filterbank = mel_filterbank(bundle.feature_config).detach().clone()
        self.blocks = filterbank_blocks(filterbank)
        for i, (bin_lo, bin_hi, band_lo, band_hi) in enumerate(self.blocks):
            self.register_buffer(f"filterbank_{i}", filterbank[bin_lo:bin_hi, band_lo:band_hi].clone())
        self.encoder = copy.deepcopy(bundle.encoder).cpu().eval()

    def mel_power(self, power: torch.Tensor) -> torch.Tensor:
        """``power @ filterbank`` (``[.., frames, n_mels]``), block by block: the product torchaudio's
        MelScale computes on power transposed to ``[.., frames, freqs]``, without its zero terms."""
        return torch.cat([torch.matmul(power[..., bin_lo:bin_hi], getattr(self, f"filterbank_{i}"))
                          for i, (bin_lo, bin_hi, _, _) in enumerate(self.blocks)], dim=-1)

    def forward(self, power: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embedding, log-Mel and column map of a batch of STFT power spectrograms."""
        mel = self.mel_power(power).transpose(-1, -2)
        features = power_to_db(mel, self.feature_config)
        embedding, columns = self.encoder.embedding_and_columns(features.unsqueeze(1))
        return embedding, features, columns


def graph_info(bundle: ModelBundle, model_sha256: str) -> GraphInfo:
    """The metadata a graph of ``bundle`` carries."""
    return GraphInfo(model_sha256=model_sha256, feature_config=bundle.feature_config,
                     stft_window=stft_window(bundle.feature_config), embedding_dim=bundle.embedding_dim,
                     head=bundle.head, metadata=dict(bundle.metadata), version=GRAPH_VERSION,
                     column_dim=bundle.encoder.column_dim(bundle.feature_config.n_mels))


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
    the lowest cosine between them, the largest difference of the column map relative to its
    largest value, and the largest difference of the graph's log-Mel from `exact_log_mel` (dB); ValueError
    beyond 1e-4, 0.9999, 1e-3 and 1e-3 dB. (Columns are single 0.3 s columns, not averaged over the window:
    float32 rounding shows more in them; the round-3 bundled model gives 4e-4.)"""
    from encoder.onnx_embedder import OnnxEmbedder

    config = bundle.feature_config
    rng = np.random.default_rng(0)
    n = int(seconds * config.sample_rate)
    t = np.arange(n) / config.sample_rate
    windows = np.stack([0.1 * rng.standard_normal(n), 0.3 * np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.5)]).astype(np.float32)
    embedder = OnnxEmbedder(graph_path, check_model=None)
    onnx_embedding, onnx_features = embedder.embed_with_features(list(windows))
    _, onnx_columns = embedder.embed_with_columns(list(windows))
    with torch.no_grad():
        features = log_mel(torch.from_numpy(windows), config)
        torch_embedding, torch_columns = bundle.encoder.cpu().eval().embedding_and_columns(features.unsqueeze(1))
        torch_embedding, torch_columns = torch_embedding.numpy(), torch_columns.numpy()
    result = {
        "embedding_max_abs_diff": float(np.abs(onnx_embedding - torch_embedding).max()),
        "columns_max_abs_diff": float(np.abs(np.stack(onnx_columns) - torch_columns).max()
                                      / max(float(np.abs(torch_columns).max()), 1e-9)),
        "min_cosine": float(np.min(np.sum(onnx_embedding * torch_embedding, axis=1))),
        "log_mel_max_abs_diff_db": float(np.abs(onnx_features - exact_log_mel(windows, config)).max()),
    }
    if (result["embedding_max_abs_diff"] > 1e-4 or result["min_cosine"] < 0.9999 or result["columns_max_abs_diff"] > 1e-3
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
    with replacing(out_path) as stream:
        stream.write(data)
        stream.flush()
        differences = verify_graph(bundle, Path(stream.name))  # checked before it replaces the old graph
    return out_path, differences

