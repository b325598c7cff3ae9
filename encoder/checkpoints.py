"""Resumable training checkpoints: weights (encoder and training-only projection head), optimiser and
grad-scaler state, the loop's position and history; written atomically, checked on resume against the
run's configuration and data hash."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from encoder.atomic_files import replacing

CHECKPOINT_FORMAT = "roomtone-checkpoint"
CHECKPOINT_VERSION = 1

# Keys that must match between a checkpoint and the run resuming it (steps, lr, budget may change).
RESUME_MUST_MATCH = ("encoder", "features", "triplets", "augment", "loss", "projection_dim", "batch_size", "seed",
                     "validation_fraction", "margin", "init_model", "norm_statistics", "anchor_weight")


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or from a different run; names the file and the reason."""


@dataclass
class TrainState:
    """What the loop has done so far; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    elapsed_s: float = 0.0
    history: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "loss": [], "active_fraction": [], "lr": []})
    validation: list[dict[str, float]] = field(default_factory=list)


def save_checkpoint(path: Path, config: dict[str, Any], state: TrainState, network: torch.nn.Module,
                    optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler, data_sha256: str) -> None:
    """Write a resumable checkpoint atomically; ``network`` is a `TrainingNetwork` (encoder + optional head)."""
    head = network.head.state_dict() if network.head is not None else None
    with replacing(path) as stream:
        torch.save({
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config,
            "state": dataclasses.asdict(state), "model": network.encoder.state_dict(), "projection_head": head,
            "optimiser": optimiser.state_dict(), "scaler": scaler.state_dict(), "data_sha256": data_sha256,
        }, stream)


def same_setting(theirs: Any, now: Any, default: Any) -> bool:
    """Whether a checkpoint's setting equals the run's; an option added to a table after the checkpoint was
    written (absent from it) matches when the run leaves it at its default, so an upgrade can still resume."""
    if isinstance(theirs, dict) and isinstance(now, dict):
        default = default if isinstance(default, dict) else {}
        if set(theirs) - set(now):
            return False
        for key, value in now.items():
            if key in theirs:
                if not same_setting(theirs[key], value, default.get(key)):
                    return False
            elif key not in default or value != default[key]:
                return False
        return True
    return theirs == now


def load_checkpoint(path: Path, config: dict[str, Any], data_sha256: str,
                    defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a checkpoint and check that it belongs to the run configured by ``config`` (its dict) and
    trained on ``data_sha256``; CheckpointError otherwise. ``defaults`` (the default configuration's dict)
    lets a checkpoint written before an option existed resume when the run leaves that option at its default."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint to resume from")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or garbage files raise many types
        raise CheckpointError(f"{path}: corrupt checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a roomtone training checkpoint")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r}, expected {CHECKPOINT_VERSION}")
    theirs = data.get("config", {})
    defaults = defaults or {}
    # An option absent from the checkpoint (written before it existed) counts as its default.
    different = [k for k in RESUME_MUST_MATCH
                 if not same_setting(theirs.get(k, defaults.get(k)), config[k], defaults.get(k))]
    if different:
        detail = "; ".join(f"{k}: checkpoint {theirs.get(k)!r} vs now {config[k]!r}" for k in different)
        raise CheckpointError(f"{path}: checkpoint is from a different configuration ({detail})")
    if data.get("data_sha256") != data_sha256:
        raise CheckpointError(f"{path}: checkpoint was trained on different data (hash {str(data.get('data_sha256'))[:12]}... "
                              f"vs now {data_sha256[:12]}...)")
    return data
