"""The roomtone model file: encoder weights plus everything needed to use them the way they were trained.

One ``torch.save`` dict (loadable with ``weights_only=True``: only tensors and plain values) holding the
encoder weights, the `LogMelConfig` features must be computed with, the `EncoderConfig`, the embedding
size, the optional activity head (``ActivityHead.to_dict()``) and its class names, and metadata
(training data summary and hash, git commit, date, final metrics). Serving and evaluation take their
features only from the stored config, so they can never disagree with training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encoder.atomic_files import replacing
from encoder.features import LogMelConfig

if TYPE_CHECKING:  # torch is imported where weights are read or written: ModelFileError needs no torch
    from torch import nn

    from encoder.model import EncoderConfig

FORMAT = "roomtone-model"
VERSION = 1

#: Bounds a model file's numbers must respect before anything is built from them: n_fft = 2^22 used to load
#: and then fail every window, n_fft = 2^20 with n_mels = 100000 took 45 s of CPU to check, and a huge width
#: would allocate its layers before the weights were found not to fit (issue 15).
FEATURE_BOUNDS: dict[str, tuple[float, float]] = {
    "sample_rate": (8000, 48000),  # Hz
    "n_mels": (1, 512),
    "n_fft": (512, 8192),  # samples
    "win_ms": (1.0, 1000.0),
    "hop_ms": (1.0, 1000.0),
    "fmin": (0.0, 24000.0),  # Hz
    "fmax": (1.0, 24000.0),  # Hz
    "floor_db": (-200.0, -1.0),
}
ENCODER_BOUNDS: dict[str, tuple[int, int]] = {"width": (1, 256), "embedding_dim": (1, 4096)}
MAX_STAGES, MAX_BLOCKS_PER_STAGE = 8, 16
#: Most classes a head may have (beyond this it is not an activity head anyone trained on household sounds).
MAX_HEAD_CLASSES = 1000


class ModelFileError(ValueError):
    """A model file that is missing, corrupt or incompatible; the message names the file and the reason."""


@dataclass(frozen=True)
class ModelBundle:
    """A loaded model: the encoder (eval mode) with its feature and architecture configs, head and metadata."""

    encoder: "nn.Module"
    feature_config: LogMelConfig
    encoder_config: "EncoderConfig"
    head: dict | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def embedding_dim(self) -> int:
        """Size of one embedding."""
        return self.encoder_config.embedding_dim

    @property
    def class_names(self) -> list[str]:
        """Activity classes of the head (empty without a head)."""
        return list(self.head.get("class_names", [])) if self.head else []


def _plain(value: Any) -> Any:
    """Tuples to lists and numpy scalars/arrays to Python values, recursively (weights_only-safe)."""
    import torch

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, torch.Tensor):
        return value.tolist()
    return value


def bundle_to_dict(bundle: ModelBundle) -> dict[str, Any]:
    """The dict written to disk for ``bundle`` (weights copied to CPU)."""
    state = {k: v.detach().cpu().clone() for k, v in bundle.encoder.state_dict().items()}
    return {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": state,
        "feature_config": bundle.feature_config.to_dict(),
        "encoder_config": bundle.encoder_config.to_dict(),
        "embedding_dim": bundle.embedding_dim,
        "head": _plain(bundle.head) if bundle.head is not None else None,
        "class_names": bundle.class_names,
        "metadata": _plain(bundle.metadata),
    }


def save_model(bundle: ModelBundle, path: str | Path) -> None:
    """Write ``bundle`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    import torch

    with replacing(path) as stream:
        torch.save(bundle_to_dict(bundle), stream)


def read_model_dict(path: str | Path) -> dict[str, Any]:
    """The raw stored dict, checked for format and version; ModelFileError otherwise."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/garbage files
        raise ModelFileError(f"{path}: not a readable roomtone model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a roomtone model file (no format={FORMAT!r} marker)")
    if data.get("version") != VERSION:
        raise ModelFileError(f"{path}: model file version {data.get('version')!r}; this roomtone reads version {VERSION}")
    missing = [k for k in ("state_dict", "feature_config", "encoder_config", "embedding_dim") if k not in data]
    if missing:
        raise ModelFileError(f"{path}: model file lacks {missing}")
    return data


def _check_bounds(section: str, data: Any, bounds: dict[str, tuple[float, float]], integers: set[str]) -> None:
    """ValueError naming ``section.key`` for a value that is not a finite number within its bounds."""
    import math

    if not isinstance(data, dict):
        raise ValueError(f"{section} must be a table, got {type(data).__name__}")
    for key, (low, high) in bounds.items():
        if key not in data:
            continue
        value = data[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (key in integers and int(value) != value) or not math.isfinite(value) \
                or not low <= value <= high:
            raise ValueError(f"{section}.{key} = {value!r} is outside {low:g}..{high:g}"
                             + (" (a whole number)" if key in integers else ""))


def check_configs(data: dict[str, Any]) -> None:
    """Bounds of the stored feature and encoder configs (cheap; before any of them is used); ValueError."""
    _check_bounds("feature_config", data["feature_config"], FEATURE_BOUNDS, {"sample_rate", "n_mels", "n_fft"})
    encoder = data["encoder_config"]
    _check_bounds("encoder_config", encoder, ENCODER_BOUNDS, set(ENCODER_BOUNDS))
    blocks = encoder.get("blocks", [1]) if isinstance(encoder, dict) else []
    if not isinstance(blocks, (list, tuple)) or not 1 <= len(blocks) <= MAX_STAGES or any(
            isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_BLOCKS_PER_STAGE for b in blocks):
        raise ValueError(f"encoder_config.blocks = {blocks!r}: 1..{MAX_STAGES} stages of 1..{MAX_BLOCKS_PER_STAGE} blocks")


def check_head(head: Any, embedding_dim: int) -> None:
    """The stored activity head builds, takes embeddings of ``embedding_dim`` and holds finite numbers with
    unique class names; ValueError saying which field is wrong."""
    import numpy as np

    from encoder.head import ActivityHead

    model = ActivityHead.from_dict(head)  # HeadError (a ValueError) names a missing key or a wrong shape
    if model.embedding_dim != embedding_dim:
        raise ValueError(f"head takes {model.embedding_dim}-d embeddings, the encoder gives {embedding_dim}-d")
    names = model.class_names
    if len(names) > MAX_HEAD_CLASSES:
        raise ValueError(f"head has {len(names)} classes, more than {MAX_HEAD_CLASSES}")
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise ValueError(f"head class names must be unique and non-empty, got {list(names)[:10]}")
    for field_name in ("mean", "coef", "intercept"):
        if not np.isfinite(getattr(model, field_name)).all():
            raise ValueError(f"head {field_name} holds NaN or Inf")


def load_model(path: str | Path, device: "str | torch.device" = "cpu") -> ModelBundle:
    """Load a model file into a `ModelBundle` with the encoder in eval mode on ``device``; ModelFileError
    names the file and the field for configs out of bounds (`FEATURE_BOUNDS`, `ENCODER_BOUNDS`) or a head
    that does not fit the encoder."""
    from encoder.model import Encoder, EncoderConfig

    data = read_model_dict(path)
    try:
        check_configs(data)
    except ValueError as exc:
        raise ModelFileError(f"{path}: incompatible configuration ({exc})") from None
    try:
        feature_config = LogMelConfig.from_dict(data["feature_config"])
        encoder_config = EncoderConfig.from_dict(data["encoder_config"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{path}: incompatible configuration ({exc})") from None
    if data["embedding_dim"] != encoder_config.embedding_dim:
        raise ModelFileError(
            f"{path}: embedding_dim {data['embedding_dim']} disagrees with encoder_config {encoder_config.embedding_dim}"
        )
    if data.get("head") is not None:
        try:
            check_head(data["head"], encoder_config.embedding_dim)
        except (TypeError, ValueError) as exc:
            raise ModelFileError(f"{path}: unusable activity head ({exc})") from None
    encoder = Encoder(encoder_config)
    try:
        encoder.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{path}: weights do not fit encoder width={encoder_config.width} ({first})") from None
    encoder.to(device).eval()
    return ModelBundle(encoder, feature_config, encoder_config, data.get("head"), dict(data.get("metadata") or {}))


def with_metadata(bundle: ModelBundle, **updates: Any) -> ModelBundle:
    """A copy of ``bundle`` with ``updates`` merged into its metadata."""
    return dataclasses.replace(bundle, metadata={**bundle.metadata, **updates})
