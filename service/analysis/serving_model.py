"""The model the daemon serves and the backend that runs it (``pipeline.backend``).

- ``onnx``: `encoder.onnx_embedder.OnnxEmbedder` over the graph `roomtone export` wrote beside the model
  file (``models/roomtone.onnx`` for ``models/roomtone.pt``), on the CPU. The feature config, head and
  metadata come from the graph file, which is bound to the model file's sha256; torch is never imported.
- ``torch``: `encoder.embedder.TorchEmbedder` over the loaded model file, on ``pipeline.device``.
- ``auto``: torch when the device is CUDA (``cuda``/``cuda:N``, or ``auto`` on a machine with an NVIDIA
  GPU and torch installed), onnx otherwise. Seeing whether an NVIDIA GPU is present reads /proc, not
  torch, so ``auto`` on a CPU-only machine imports no torch either.

Live windows, uploads (Classify, FindSimilar by audio) and `roomtone classify` all embed through the
`ServingModel.embedder` this returns.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encoder.embedder import Embedder
from encoder.features import LogMelConfig

#: The backends ``pipeline.backend`` names (besides ``auto``).
BACKENDS = ("onnx", "torch")
TRAIN_EXTRA = "pip install 'roomtone[train]'"


class BackendError(RuntimeError):
    """A backend that cannot run here; ``reason`` is machine-readable (``torch_missing``, ``onnx_on_cuda``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ServingModel:
    """What serving needs of a model: its embedder and, read from the model or graph file, the feature
    config, embedding size, activity head and metadata."""

    backend: str  # "onnx" | "torch"
    device: str  # "cpu", "cuda:0", ...
    embedder: Embedder
    feature_config: LogMelConfig
    embedding_dim: int
    head: dict | None = None
    metadata: dict = field(default_factory=dict)
    graph_path: Path | None = None  # the ONNX graph file (onnx backend)

    @property
    def class_names(self) -> list[str]:
        """Activity classes of the head (empty without a head)."""
        return list(self.head.get("class_names", [])) if self.head else []


def nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver reports a GPU (/proc/driver/nvidia/gpus), without importing torch."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def torch_installed() -> bool:
    """Whether torch can be imported (the train extra), without importing it."""
    return importlib.util.find_spec("torch") is not None


def backend_for(backend: str, device: str) -> str:
    """The backend ``pipeline.backend`` = ``backend`` resolves to with ``pipeline.device`` = ``device``."""
    if backend in BACKENDS:
        return backend
    if backend != "auto":
        raise ValueError(f"pipeline.backend must be auto, onnx or torch, got {backend!r}")
    if device.startswith("cuda") or (device == "auto" and nvidia_gpu_present() and torch_installed()):
        return "torch"
    return "onnx"


def load_serving_model(model_path: str | Path, backend: str = "auto", device: str = "auto",
                       threads: int = 1) -> ServingModel:
    """The `ServingModel` of a model file on the backend ``backend``/``device`` resolve to (``threads``:
    ONNX Runtime's intra-op threads, see `OnnxEmbedder`).

    onnx: GraphError (encoder/onnx_graph.py) when the graph is missing, stale or unreadable; torch:
    ModelFileError for an unusable model file, BackendError when torch is not installed."""
    chosen = backend_for(backend, device)
    if chosen == "onnx":
        if device.startswith("cuda"):
            raise BackendError("onnx_on_cuda", f"pipeline.backend = \"onnx\" runs on the CPU, but pipeline.device = "
                                               f"{device!r}; use backend \"torch\" for CUDA, or device \"cpu\"")
        from encoder.onnx_embedder import OnnxEmbedder
        from encoder.onnx_graph import graph_path_for

        embedder = OnnxEmbedder(graph_path_for(model_path), check_model=model_path, threads=threads)
        info = embedder.info
        return ServingModel("onnx", "cpu", embedder, info.feature_config, info.embedding_dim, info.head,
                            dict(info.metadata), embedder.graph_path)
    if not torch_installed():
        raise BackendError("torch_missing", f"pipeline.backend = \"torch\" needs torch, which is not installed "
                                            f"(the train extra: {TRAIN_EXTRA}); or use backend \"onnx\"")
    from encoder.embedder import TorchEmbedder, resolve_device
    from encoder.model_file import load_model

    resolved = resolve_device(device)
    bundle = load_model(model_path, device=resolved)
    return ServingModel("torch", str(resolved), TorchEmbedder(bundle), bundle.feature_config, bundle.embedding_dim,
                        bundle.head, dict(bundle.metadata))


def describe(model: ServingModel) -> dict[str, Any]:
    """Log fields for the model loaded: backend, device, embedding size, classes, graph file."""
    fields: dict[str, Any] = {"backend": model.backend, "device": model.device, "embedding_dim": model.embedding_dim,
                              "classes": model.class_names, "has_head": model.head is not None}
    if model.graph_path is not None:
        fields["graph"] = str(model.graph_path)
    return fields
