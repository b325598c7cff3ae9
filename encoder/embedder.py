"""The one embedding path: mono windows of samples at the model's rate -> log-Mel -> encoder -> L2-normalised
embeddings ``[n, D]``, with a timing hook. Live windows, uploads, offline tools and tests all call
`Embedder.embed`, so they can never disagree on features, batching or device.

`Embedder` is the call every backend answers; `TorchEmbedder` runs a loaded `ModelBundle`. A second backend
(ONNX Runtime) implements the same `embed` and may reuse `length_groups`. This module imports torch only
inside `TorchEmbedder` and `resolve_device`, so a torch-free backend can import the rest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from encoder.model_file import ModelBundle


class DeviceError(ValueError):
    """A compute device was asked for that this machine does not have (e.g. ``cuda`` without CUDA)."""


def resolve_device(name: str, local_rank: int = 0) -> "torch.device":
    """The torch device for a setting: ``auto`` is ``cuda:<local_rank>`` when CUDA is present, else ``cpu``;
    ``cuda`` is ``cuda:<local_rank>``; anything else as named. DeviceError when CUDA is asked for but absent."""
    import torch

    available = torch.cuda.is_available()
    if name == "auto":
        name = f"cuda:{local_rank}" if available else "cpu"
    elif name == "cuda" and available:
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise DeviceError(f"unknown compute device {name!r} (use auto, cpu, cuda or cuda:N): {exc}") from None
    if device.type == "cuda" and not available:
        raise DeviceError(f"compute device {name!r} requested but CUDA is not available on this machine; use cpu")
    return device


@dataclass
class EmbedTimings:
    """Seconds spent computing features and running the encoder, summed over the calls it is passed to."""

    features: float = 0.0
    embed: float = 0.0


def length_groups(windows: Sequence[np.ndarray]) -> list[list[int]]:
    """Indices of ``windows`` grouped by length, in order of first appearance (equal lengths batch together)."""
    groups: dict[int, list[int]] = {}
    for index, samples in enumerate(windows):
        groups.setdefault(int(np.shape(samples)[-1]), []).append(index)
    return list(groups.values())


class Embedder(Protocol):
    """Turns mono windows at ``sample_rate`` into embeddings ``[n, embedding_dim]`` float32.

    A backend may also offer ``embed_with_features(windows, timings=None) -> (embeddings, log_mels)`` for
    windows of one length (`TorchEmbedder` does): the daemon then shows the log-Mel the model saw on the
    web page instead of computing it a second time; without it the page has no live spectrogram. And
    ``embed_with_columns(windows, timings=None) -> (embeddings, columns)``: each window's column map
    ``[columns, column_dim]`` (`Encoder.column_map`), which the specific-sounds bench matches span by span; without it (``column_dim`` 0) custom sounds match the pooled
    embedding (the whole window is the span).
    """

    sample_rate: int
    embedding_dim: int

    def embed(self, windows: Sequence[np.ndarray], timings: EmbedTimings | None = None) -> np.ndarray:
        """Embeddings of 1-D float32 windows (any lengths); adds the time spent to ``timings``."""
        ...


class TorchEmbedder:
    """`Embedder` over a loaded `ModelBundle`: log-Mel (the bundle's own config) and the encoder, on the
    encoder's device; on the CPU the batch norms are folded first (encoder/batchnorm_folding.py)."""

    def __init__(self, bundle: "ModelBundle", batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.bundle = bundle
        self.batch_size = batch_size
        self.sample_rate = bundle.feature_config.sample_rate
        self.embedding_dim = bundle.embedding_dim
        self.column_dim = bundle.encoder.column_dim(bundle.feature_config.n_mels)
        self.device = next(bundle.encoder.parameters()).device

    def embed(self, windows: Sequence[np.ndarray], timings: EmbedTimings | None = None) -> np.ndarray:
        """Embeddings ``[n, D]`` float32 of mono windows; equal lengths run together, ``batch_size`` at a time."""
        return self._run(windows, timings, None)

    def embed_with_features(self, windows: Sequence[np.ndarray],
                            timings: EmbedTimings | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings ``[n, D]`` and the log-Mel ``[n, n_mels, frames]`` (dB, float32) they were computed
        from, for windows of one length (the web page's live spectrogram shows what the model saw)."""
        if len({int(np.shape(w)[-1]) for w in windows}) > 1:
            raise ValueError("embed_with_features needs windows of one length")
        features: dict[int, np.ndarray] = {}
        embeddings = self._run(windows, timings, features)
        return embeddings, np.stack([features[i] for i in range(len(windows))]) if len(windows) else np.zeros((0, 0, 0), np.float32)

    def embed_with_columns(self, windows: Sequence[np.ndarray],
                           timings: EmbedTimings | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Embeddings ``[n, D]`` and each window's column map ``[columns, column_dim]`` (`Encoder.column_map`: the
        time-local map custom sounds are matched against), any lengths."""
        columns: dict[int, np.ndarray] = {}
        embeddings = self._run(windows, timings, None, columns)
        return embeddings, [columns[i] for i in range(len(windows))]

    def _run(self, windows: Sequence[np.ndarray], timings: EmbedTimings | None,
             features_out: dict[int, np.ndarray] | None, columns_out: dict[int, np.ndarray] | None = None) -> np.ndarray:
        """The embedding loop; with ``features_out`` each window's log-Mel is kept under its index, with
        ``columns_out`` its column map."""
        import torch

        from encoder.features import log_mel
        from encoder.batchnorm_folding import inference_encoder

        timings = timings if timings is not None else EmbedTimings()
        out = np.zeros((len(windows), self.embedding_dim), dtype=np.float32)
        if not len(windows):
            return out
        encoder = inference_encoder(self.bundle.encoder)
        cuda = self.device.type == "cuda"
        with torch.inference_mode():
            for group in length_groups(windows):
                for start in range(0, len(group), self.batch_size):
                    indices = group[start:start + self.batch_size]
                    batch = torch.stack([torch.as_tensor(windows[i], dtype=torch.float32).reshape(-1)
                                         for i in indices]).to(self.device)
                    t0 = time.perf_counter()
                    features = log_mel(batch, self.bundle.feature_config).unsqueeze(1)
                    if cuda:  # kernels run asynchronously: wait so the time is charged to the right stage
                        torch.cuda.synchronize(self.device)
                    t1 = time.perf_counter()
                    if columns_out is None:
                        out[indices] = encoder(features).float().cpu().numpy()
                    else:
                        embedded, columns = encoder.embedding_and_columns(features)
                        out[indices] = embedded.float().cpu().numpy()
                        for i, row in zip(indices, columns.float().cpu().numpy()):
                            columns_out[i] = row
                    if features_out is not None:
                        for i, row in zip(indices, features[:, 0].float().cpu().numpy()):
                            features_out[i] = row
                    timings.features += t1 - t0
                    timings.embed += time.perf_counter() - t1
        return out
