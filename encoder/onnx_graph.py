"""The ONNX serving graph file: what `roomtone export` writes beside a model file, and how serving checks it.

``models/roomtone.pt`` -> ``models/roomtone.onnx`` (`graph_path_for`). The graph maps the STFT power of
windows ``[batch, frames, n_fft // 2 + 1]`` to their embedding ``[batch, D]``, their log-Mel
``[batch, n_mels, frames]`` (the web page's strips, tests) and their column map ``[batch, columns, column_dim]``
(`Encoder.column_map`: the last stage's channels x frequency bands per 0.3 s column, the time-local map custom
sounds match; version 3); batch and frames are dynamic. Its
``metadata_props`` carry everything serving needs without torch:

=========================  ===================================================================
key                        value
=========================  ===================================================================
roomtone.format            ``roomtone-onnx``
roomtone.version           `GRAPH_VERSION`; a graph of a version not in `READABLE_VERSIONS` is refused
roomtone.model_sha256      sha256 of the model file it was exported from; a mismatch is refused
roomtone.feature_config    `LogMelConfig.to_dict()` of the model, JSON
roomtone.stft_window       the STFT analysis window of `encoder.features.log_mel`, float32 base64
roomtone.embedding_dim     size of one embedding
roomtone.column_dim        values per column of the "columns" output (version 3)
roomtone.head              the model's activity head (``ActivityHead.to_dict()``) or null, JSON
roomtone.metadata          the model file's metadata, JSON
=========================  ===================================================================

A stale, mismatched or unreadable graph raises `GraphError` with a machine-readable ``reason`` and a
message that says how to re-export. This module imports neither torch nor onnxruntime.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from encoder.features import LogMelConfig
from encoder.file_digest import file_sha256

FORMAT = "roomtone-onnx"
#: Bumped whenever the graph's inputs, outputs or metadata change meaning; older graphs are refused.
GRAPH_VERSION = 3  # 2: the "columns" output (projected columns); 3: "columns" is the column map before the projection
#: Versions served: a version-1 or -2 graph runs, and custom sounds match its pooled embedding (re-export for spans).
READABLE_VERSIONS = (1, 2, 3)
INPUT = "power"
OUTPUTS = ("embedding", "log_mel", "columns")
PREFIX = "roomtone."


class GraphError(ValueError):
    """An ONNX graph that is missing, unreadable, of another version or exported from another model file.

    ``reason`` is one of ``missing``, ``unreadable``, ``version``, ``stale``; the message names the files
    and the command that re-exports the graph."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class GraphInfo:
    """The metadata of a graph file (see the module docstring), decoded."""

    model_sha256: str
    feature_config: LogMelConfig
    stft_window: np.ndarray  # float32 [win_length]
    embedding_dim: int
    head: dict | None = None
    metadata: dict = field(default_factory=dict)
    version: int = GRAPH_VERSION
    column_dim: int = 0  # values per column of the "columns" output; 0: no column map custom sounds can use

    @property
    def class_names(self) -> list[str]:
        """Activity classes of the head (empty without a head)."""
        return list(self.head.get("class_names", [])) if self.head else []

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` strings that store this info in a graph file."""
        window = np.ascontiguousarray(self.stft_window, dtype="<f4")
        return {
            PREFIX + "format": FORMAT,
            PREFIX + "version": str(self.version),
            PREFIX + "model_sha256": self.model_sha256,
            PREFIX + "feature_config": json.dumps(self.feature_config.to_dict()),
            PREFIX + "stft_window": base64.b64encode(window.tobytes()).decode("ascii"),
            PREFIX + "embedding_dim": str(self.embedding_dim),
            PREFIX + "column_dim": str(self.column_dim),
            PREFIX + "head": json.dumps(self.head),
            PREFIX + "metadata": json.dumps(self.metadata),
        }

    @classmethod
    def from_props(cls, props: dict[str, str], where: str) -> "GraphInfo":
        """Decode ``metadata_props``; GraphError naming ``where`` when a key is missing or malformed."""
        if props.get(PREFIX + "format") != FORMAT:
            raise GraphError("unreadable", f"{where}: not a roomtone ONNX graph (no {PREFIX}format={FORMAT!r})")
        try:
            version = int(props[PREFIX + "version"])
        except (KeyError, ValueError):
            raise GraphError("unreadable", f"{where}: graph has no readable {PREFIX}version") from None
        if version not in READABLE_VERSIONS:
            raise GraphError("version", f"{where}: graph version {version}; this roomtone reads versions "
                                        f"{', '.join(map(str, READABLE_VERSIONS))}")
        try:
            return cls(
                model_sha256=props[PREFIX + "model_sha256"],
                feature_config=LogMelConfig.from_dict(json.loads(props[PREFIX + "feature_config"])),
                stft_window=np.frombuffer(base64.b64decode(props[PREFIX + "stft_window"], validate=True), dtype="<f4").copy(),
                embedding_dim=int(props[PREFIX + "embedding_dim"]),
                head=json.loads(props[PREFIX + "head"]),
                metadata=json.loads(props.get(PREFIX + "metadata", "{}")),
                version=version,
                column_dim=int(props.get(PREFIX + "column_dim", 0)) if version >= 3 else 0,
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise GraphError("unreadable", f"{where}: graph metadata is malformed ({type(exc).__name__}: {exc})") from None


def graph_path_for(model_path: str | Path) -> Path:
    """Where the graph of a model file lives: the same name with the suffix ``.onnx``."""
    return Path(model_path).with_suffix(".onnx")


def export_command(model_path: str | Path) -> str:
    """The command that (re-)exports the graph of ``model_path``."""
    return f"roomtone export --model {model_path}"


def check_binding(info: GraphInfo, graph_path: Path, model_path: str | Path) -> None:
    """GraphError (reason ``stale``) unless the graph was exported from the model file as it is now."""
    actual = file_sha256(model_path)
    if info.model_sha256 != actual:
        raise GraphError(
            "stale",
            f"{graph_path} was exported from a model file with sha256 {info.model_sha256[:12]}..., but "
            f"{model_path} now has sha256 {actual[:12]}... (retrained or replaced); re-export it with "
            f"`{export_command(model_path)}` (needs the train extra: pip install 'roomtone[train]'), "
            "or set pipeline.backend = \"torch\"",
        )
