"""Self-supervised training of the encoder on unlabelled clips (Tile2Vec triplets, or in-batch triplets
over P clips x K tiles), with augmented views and an optional training-only projection head.

Reads top to bottom: config, data, model, optimiser, loop, checkpoint. Labels are never read. Data
discovery, the clip store and the views live in `encoder.training_data`; checkpoints in
`encoder.checkpoints`; augmentations in `encoder.augment`.
Runs on one CPU/GPU or under ``torchrun --nproc_per_node N`` (DistributedDataParallel, gloo on CPU,
NCCL on CUDA). Ctrl-C / SIGTERM stops after the current step and writes a resumable checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from pydantic import field_validator, model_validator
from torch.utils.data import DataLoader

from encoder.augment import AugmentConfig
from encoder.checkpoints import CheckpointError, TrainState, load_checkpoint, save_checkpoint
from encoder.config_schema import Section
from encoder.features import LogMelConfig
from encoder.loss import (MARGIN, TripletLoss, batch_all_triplet_loss, batch_hard_triplet_loss, triplet_losses,
                          zero_filtered_triplet_loss)
from encoder.model import Encoder, EncoderConfig, ProjectionHead, TrainingNetwork, parameter_count
from encoder.model_file import ModelBundle, load_model, save_model
from encoder.training_data import (ClipStore, StepBatches, SubsetStore, background_clips, data_hash,
                                   labelled_source_packages, mixed_in_clips, pk_plan, sampler_clips, split_long_clips,
                                   training_clips, triplet_plan)
from encoder.triplets import ClipBatchSampler, TripletConfig, TripletSampler, held_out_groups
from encoder.vocabulary import NORM_FROZEN, NORM_STATISTICS, NORM_UPDATE

__all__ = ["CheckpointError", "TrainConfig", "TrainResult", "read_train_config", "train", "train_step", "learning_rate_at"]


# ---------------------------------------------------------------------------------------------- config

LR_SCHEDULES = ("constant", "cosine")
LOSSES = ("zero_filtered", "batch_all", "batch_hard")  # zero_filtered needs the random sampler, batch_* the pk one


class TrainConfig(Section):
    """Everything one training run needs; `from_dict` reads a TOML/JSON file's tables."""

    data: tuple[str, ...] = ()
    out: str = "models/roomtone.pt"
    checkpoint: str = ""  # "" -> "<out>.ckpt"
    steps: int = 2000
    max_minutes: float = 0.0  # 0 -> no time budget; otherwise stop (and save) when it is spent
    budget_clock: str = "wall"  # "wall": max_minutes of wall time; "cpu": of this process's CPU time (fair on a busy machine)
    batch_size: int = 64
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (decays to 0 over steps or max_minutes, whichever ends first)
    warmup_steps: int = 0  # linear ramp from 0 to learning_rate over the first steps
    weight_decay: float = 0.0
    margin: float = MARGIN
    loss: str = "zero_filtered"
    batch_all_warmup_steps: int = 0  # loss = "batch_hard": batch_all for the first this many steps (a loss schedule)
    projection_dim: int = 0  # > 0: the loss sees an MLP head (embedding_dim -> embedding_dim -> this), dropped after training
    max_clip_s: float = 60.0  # longer files are cut into clips of at most this many seconds (one group per file)
    validation_fraction: float = 0.1
    validate_every: int = 100
    checkpoint_every: int = 100
    snapshot_every_minutes: float = 0.0  # > 0: also keep a model file every this many budget-clock minutes (checkpoint curves)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    cache_features: bool = True  # log-Mel once per clip in memory (see docs/encoder.md for the measurement)
    provisional: bool = False
    note: str = ""
    init_model: str = ""  # a model file whose encoder weights start the run (fine-tuning, `roomtone adapt`); "" -> random
    norm_statistics: str = NORM_UPDATE  # "update": batch norm learns from every batch; "frozen": it keeps the starting statistics (eval mode)
    anchor_weight: float = 0.0  # > 0: L2 pull of the encoder's weights toward init_model's (L2-SP), per parameter element
    mix_data: tuple[str, ...] = ()  # more data paths, of which a seeded sample of excerpts joins `data` (`roomtone adapt`)
    mix_fraction: float = 0.0  # share of the training clips drawn from mix_data (0 <= f < 1)
    encoder: EncoderConfig = EncoderConfig()
    features: LogMelConfig = LogMelConfig()
    triplets: TripletConfig = TripletConfig()
    augment: AugmentConfig = AugmentConfig()

    @field_validator("data", "mix_data", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        return tuple(str(p) for p in value) if isinstance(value, (list, tuple)) else value

    @model_validator(mode="after")
    def _check(self) -> "TrainConfig":
        if self.budget_clock not in ("wall", "cpu"):
            raise ValueError(f"TrainConfig.budget_clock must be 'wall' or 'cpu', got {self.budget_clock!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"TrainConfig.loss must be one of {LOSSES}, got {self.loss!r}")
        if (self.loss == "zero_filtered") != (self.triplets.sampler == "random"):
            raise ValueError(f"TrainConfig.loss {self.loss!r} does not fit triplets.sampler {self.triplets.sampler!r}: "
                             "zero_filtered takes random triplets, batch_all and batch_hard take pk batches")
        if self.batch_all_warmup_steps < 0:
            raise ValueError(f"TrainConfig.batch_all_warmup_steps must be >= 0, got {self.batch_all_warmup_steps}")
        if self.batch_all_warmup_steps and self.loss != "batch_hard":
            raise ValueError(f"TrainConfig.batch_all_warmup_steps is a warm-up for loss = 'batch_hard', not {self.loss!r}")
        if self.triplets.same_moment and not self.augment.has_capture_chain:
            raise ValueError("triplets.same_moment needs a capture chain in [augment] (reverb_p, noise_p, band_limit_p or "
                             "resample_p > 0): without one the two cuts of a moment are the same view")
        if self.projection_dim < 0:
            raise ValueError(f"TrainConfig.projection_dim must be >= 0, got {self.projection_dim}")
        if self.max_clip_s <= 0:
            raise ValueError(f"TrainConfig.max_clip_s must be positive, got {self.max_clip_s}")
        for name in ("steps", "batch_size", "validate_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got {self.learning_rate}")
        if self.num_workers < 0:
            raise ValueError(f"TrainConfig.num_workers must be >= 0, got {self.num_workers}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.snapshot_every_minutes < 0:
            raise ValueError(f"TrainConfig.snapshot_every_minutes must be >= 0, got {self.snapshot_every_minutes}")
        if self.norm_statistics not in NORM_STATISTICS:
            raise ValueError(f"TrainConfig.norm_statistics must be one of {NORM_STATISTICS}, got {self.norm_statistics!r}")
        if self.anchor_weight < 0 or (self.anchor_weight > 0 and not self.init_model):
            raise ValueError(f"TrainConfig.anchor_weight must be >= 0 and needs init_model, got {self.anchor_weight}")
        if not 0 <= self.mix_fraction < 1 or (self.mix_fraction > 0) != bool(self.mix_data):
            raise ValueError(f"TrainConfig.mix_fraction must be in [0, 1) and > 0 exactly when mix_data is set, "
                             f"got {self.mix_fraction} with mix_data {list(self.mix_data)}")
        return self

    @property
    def checkpoint_path(self) -> Path:
        """Where checkpoints go (``<out>.ckpt`` unless set)."""
        return Path(self.checkpoint) if self.checkpoint else Path(str(self.out) + ".ckpt")

    @property
    def snapshot_dir(self) -> Path:
        """Where snapshots go: ``<out without .pt>.snapshots/``, one model file per budget minute mark."""
        out = Path(self.out)
        return out.with_name(out.stem + ".snapshots")


def read_train_config(path: str | Path) -> TrainConfig:
    """Read a TrainConfig from a ``.toml`` or ``.json`` file (errors name the file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read training config ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: malformed training config ({exc})") from None
    return TrainConfig.from_dict(data, source=str(path))


# ----------------------------------------------------------------------------------- model & devices

@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (world 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, validates and writes checkpoints."""
        return self.rank == 0


def start_distributed(device: torch.device) -> Distributed:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str) -> torch.device:
    """`encoder.embedder.resolve_device` for this process's rank (``auto``/``cuda`` -> cuda:LOCAL_RANK), made current."""
    from encoder.embedder import resolve_device

    device = resolve_device(name, int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


# ------------------------------------------------------------------------------------------ signals

class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step (a second one
    interrupts at once); restores the previous handlers on exit."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def agreed(flag: bool, distributed: Distributed) -> bool:
    """True when ``flag`` is true on any rank (so every rank stops at the same step)."""
    if distributed.world == 1:
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def same_on_every_rank(value: float, distributed: Distributed) -> float:
    """Rank 0's ``value`` on every rank (a time-based learning rate must not differ between replicas)."""
    if distributed.world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(tensor, 0)
    return float(tensor.item())


# ------------------------------------------------------------------------------------------ validation

VALIDATION_ROUNDS = 3  # triplets per held-out clip, fixed for the whole run (less noise than one)


def validate(model: torch.nn.Module, batches: StepBatches, device: torch.device, margin: float) -> dict[str, float]:
    """Zero-filtered triplet loss, its active fraction and the plain mean loss over fixed, clean held-out
    triplets (``batches`` is a random-triplet plan over the held-out clips, without augmentation)."""
    modes = {module: module.training for module in model.modules()}  # frozen batch norm stays frozen
    model.eval()
    losses = []
    with torch.no_grad():
        for round_ in range(VALIDATION_ROUNDS):
            batches.epoch = round_
            for index in range(len(batches)):
                views, _ = batches[index]
                emb = model(views.to(device))
                emb = emb.view(-1, 3, emb.shape[-1])
                losses.append(triplet_losses(emb[:, 0], emb[:, 1], emb[:, 2], margin).cpu())
    for module, mode in modes.items():
        module.train(mode)
    every = torch.cat(losses)
    active = every > 0
    return {
        "loss": float(every[active].mean()) if active.any() else 0.0,
        "active_fraction": float(active.float().mean()),
        "mean_loss": float(every.mean()),
    }


# ------------------------------------------------------------------------------------------------ train

@dataclass(frozen=True)
class TrainResult:
    """The trained model (rank 0 also wrote it to ``config.out`` unless interrupted) and how it went."""

    bundle: ModelBundle
    state: TrainState
    interrupted: bool


# The files that decide what a trained model is; others' uncommitted work elsewhere does not make it dirty.
TRAINING_CODE = ("encoder/audio.py", "encoder/augment.py", "encoder/checkpoints.py", "encoder/datasets.py",
                 "encoder/features.py", "encoder/loss.py", "encoder/model.py", "encoder/model_file.py",
                 "encoder/train.py", "encoder/training_data.py", "encoder/triplets.py")


def batch_loss(embeddings: torch.Tensor, ids: torch.Tensor, loss: str, margin: float) -> TripletLoss:
    """The configured loss of one batch: ``zero_filtered`` on consecutive (anchor, neighbour, opposite)
    rows, or ``batch_all`` / ``batch_hard`` over every in-batch triplet that ``ids`` allows."""
    if loss == "zero_filtered":
        emb = embeddings.view(-1, 3, embeddings.shape[-1])
        return zero_filtered_triplet_loss(emb[:, 0], emb[:, 1], emb[:, 2], margin)
    if loss == "batch_all":
        return batch_all_triplet_loss(embeddings, ids, margin)
    return batch_hard_triplet_loss(embeddings, ids)


def loss_at(config: TrainConfig, step: int) -> str:
    """The loss of optimiser step ``step`` (0-based): batch_all during ``batch_all_warmup_steps``, then ``config.loss``."""
    return "batch_all" if step < config.batch_all_warmup_steps else config.loss


def train_step(model: torch.nn.Module, views: torch.Tensor, ids: torch.Tensor, optimiser: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, loss: str, margin: float, amp: bool,
               penalty: Callable[[], torch.Tensor] | None = None) -> TripletLoss:
    """One optimiser step on ``[N, 1, n_mels, frames]`` views with their ids (see `batch_loss`), plus
    ``penalty()`` when given (the reported loss is the triplet loss alone); mixed precision when ``amp``.
    Shared by training and bench/training_speed.py."""
    with torch.autocast(device_type=views.device.type, dtype=torch.float16, enabled=amp):
        emb = model(views)
    result = batch_loss(emb.float(), ids.to(emb.device), loss, margin)
    optimiser.zero_grad(set_to_none=True)
    total = result.loss + penalty() if penalty is not None else result.loss
    scaler.scale(total).backward()
    scaler.step(optimiser)
    scaler.update()
    return result


def hold_norm_statistics(model: torch.nn.Module) -> None:
    """Put every batch-norm layer of ``model`` in eval mode: it normalises with its stored statistics and never
    updates them, while its scale and shift still train (``norm_statistics = "frozen"``)."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()


def anchor_penalty(model: torch.nn.Module, start: dict[str, torch.Tensor], weight: float) -> Callable[[], torch.Tensor]:
    """``weight * sum((w - w0)^2)`` over ``model``'s parameters, ``w0`` their values in the state dict ``start``:
    L2-SP, a pull toward the starting weights that keeps fine-tuning near the model it started from."""
    pairs = [(p, start[name].detach().clone().to(p.device)) for name, p in model.named_parameters()]

    def penalty() -> torch.Tensor:
        return weight * sum(((p - p0) ** 2).sum() for p, p0 in pairs)

    return penalty


def learning_rate_at(config: TrainConfig, step: int, elapsed_s: float) -> float:
    """Learning rate for optimiser step ``step`` (0-based) after ``elapsed_s`` seconds of training:
    linear warm-up, then constant or a cosine decay over the run's progress (steps or the time budget on its clock)."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.learning_rate
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.max_minutes > 0:
        progress = max(progress, elapsed_s / (60 * config.max_minutes))
    return config.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def git_commit() -> str:
    """Commit of the code doing the training (``-dirty`` when it has uncommitted changes)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *TRAINING_CODE], cwd=root, capture_output=True, text=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


@dataclass(frozen=True)
class RunInfo:
    """What a run's model files record besides its state: code, device and the data it saw."""

    commit: str
    device: str
    world_size: int
    datasets: Any
    data_sha256: str
    clips: int
    train_clips: int
    validation_clips: int
    batches_per_epoch: int
    projection_head_parameters: int
    down_weighted_packages: list[str] = field(default_factory=list)  # the labelled sets' packages (shared_package_weight)
    background_beds: int = 0  # training clips that background swap mixes under tiles


def encoder_bundle(config: TrainConfig, model: torch.nn.Module, state: TrainState, info: RunInfo, interrupted: bool,
                   wall_s: float, scores: dict[str, float]) -> ModelBundle:
    """The model file's contents after ``state``: the encoder alone (CPU copy), with steps, budget minutes,
    data roots and loss history in its metadata. Used for the final model and for snapshots."""
    import copy

    tail = max(1, min(50, len(state.history["loss"])))
    metadata = {
        "provisional": config.provisional,
        "note": config.note,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": info.commit,
        "training": {
            "config": config.to_dict(), "steps": state.step,
            "epochs": round(state.epoch + state.batches_in_epoch / info.batches_per_epoch, 2),
            "wall_time_s": round(wall_s, 1), "budget_clock": config.budget_clock,
            "budget_elapsed_s": round(state.elapsed_s, 1), "device": info.device, "world_size": info.world_size,
            "torch_threads": torch.get_num_threads(), "parameters": parameter_count(model), "interrupted": interrupted,
            "projection_head_parameters": info.projection_head_parameters,
        },
        "data": {"datasets": info.datasets, "sha256": info.data_sha256, "clips": info.clips,
                 "train_clips": info.train_clips, "validation_clips": info.validation_clips, "labels_used": False,
                 "down_weighted_packages": info.down_weighted_packages, "background_beds": info.background_beds},
        "metrics": {
            "final_train_loss": float(np.mean(state.history["loss"][-tail:])) if state.history["loss"] else None,
            "final_train_active_fraction": float(np.mean(state.history["active_fraction"][-tail:])) if state.history["loss"] else None,
            "validation_loss": scores.get("loss"),
            "validation_active_fraction": scores.get("active_fraction"),
            "validation_mean_loss": scores.get("mean_loss"),
        },
        "history": state.history,
        "validation_history": state.validation,
    }
    encoder = copy.deepcopy(model).cpu().eval()
    return ModelBundle(encoder, config.features, config.encoder, None, metadata)


def snapshot_due(config: TrainConfig, budget_s: float, marks_written: int) -> bool:
    """True when ``budget_s`` has crossed the next ``snapshot_every_minutes`` mark."""
    return int(budget_s // (60 * config.snapshot_every_minutes)) > marks_written


def write_snapshot(config: TrainConfig, model: torch.nn.Module, state: TrainState, info: RunInfo, interrupted: bool,
                   wall_s: float) -> int:
    """Save the encoder as ``<snapshot_dir>/m<minutes>.pt`` (minutes of the budget clock) and return the
    number of marks now passed; the last validation score is the snapshot's metric."""
    marks = int(state.elapsed_s // (60 * config.snapshot_every_minutes))
    minutes = marks * config.snapshot_every_minutes
    scores = state.validation[-1] if state.validation else {}
    path = config.snapshot_dir / f"m{minutes:05.1f}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(encoder_bundle(config, model, state, info, interrupted, wall_s, scores), path)
    return marks


def initial_encoder_state(config: TrainConfig) -> dict[str, torch.Tensor]:
    """Encoder weights of ``config.init_model``, refused (naming the file) unless its architecture and log-Mel
    config are this run's: fine-tuning must not silently change what the encoder sees or how it is built."""
    start = load_model(config.init_model)
    if start.encoder_config != config.encoder:
        raise ValueError(f"{config.init_model}: init_model has encoder {start.encoder_config.to_dict()}, "
                         f"this run has {config.encoder.to_dict()}; set [encoder] to the model's")
    if start.feature_config != config.features:
        raise ValueError(f"{config.init_model}: init_model has log-Mel config {start.feature_config}, "
                         f"this run has {config.features}; set [features] to the model's")
    return start.encoder.state_dict()


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train the encoder as ``config`` says; resume from ``config.checkpoint_path`` when asked."""
    from tqdm import tqdm

    # Devices and processes.
    device = pick_device(config.device)
    distributed = start_distributed(device)
    amp = device.type == "cuda"
    torch.manual_seed(config.seed)
    clock = time.process_time if config.budget_clock == "cpu" else time.monotonic
    started, wall_started = clock(), time.monotonic()
    commit = git_commit()  # at the start: the code that trains, not whatever is checked out at the end
    show = progress and distributed.is_main

    # Data: unlabelled clips, held-out groups for validation, audio or log-Mel decoded once per clip.
    found, datasets_summary = training_clips(config.data)
    clips = split_long_clips(found, config.max_clip_s)
    if config.mix_data:
        others, _ = training_clips(config.mix_data)
        mixed = mixed_in_clips(clips, split_long_clips(others, config.max_clip_s), config.mix_fraction, config.seed)
        clips += mixed
        datasets_summary = [*datasets_summary, {"name": "mixed in", "paths": list(config.mix_data), "kind": "unlabelled",
                                                "clips": len(mixed), "fraction": config.mix_fraction}]
    groups = [c.group for c in clips]
    data_sha256 = data_hash([c.path for c in clips])
    train_idx, val_idx = held_out_groups(groups, config.validation_fraction, config.seed)
    store = ClipStore(clips, config.features, "waveform" if config.augment.needs_waveform else "log_mel",
                      config.cache_features, progress=show)
    tile = max(1, int(round(config.triplets.tile_s * 1000 / config.features.hop_ms)))
    train_store = SubsetStore(store, train_idx)
    shared_packages = labelled_source_packages(config.triplets.shared_packages_from)
    if config.triplets.sampler == "pk":
        pk = ClipBatchSampler(sampler_clips(train_store, range(len(train_idx))), tile, config.triplets, shared_packages)
        batches_per_epoch = max(1, len(train_idx) // config.triplets.clips_per_batch)
        plan, block = pk_plan(pk, batches_per_epoch, config.seed, distributed.rank, distributed.world), config.triplets.tiles_per_clip
    else:
        triplets = TripletSampler(sampler_clips(train_store, range(len(train_idx))), tile, config.triplets)
        batches_per_epoch = len(train_idx) // config.batch_size
        plan, block = triplet_plan(triplets, config.batch_size, config.seed, distributed.rank, distributed.world), 3
    if batches_per_epoch == 0:
        raise ValueError(f"{len(train_idx)} training clips give no full batch of {config.batch_size}: lower batch_size")
    beds = background_clips(train_store.clips, config.augment.background_kind) if config.augment.background_p > 0 else []
    if config.augment.background_p > 0 and not beds:
        raise ValueError(f"augment.background_p needs training clips of kind {config.augment.background_kind!r} "
                         f"(manifest.csv kind column) under {list(config.data)}; found none")
    train_set = StepBatches(train_store, plan, batches_per_epoch, tile, block, config.augment, config.triplets.gain_db,
                            config.seed, beds)
    val_set = None
    if len({groups[i] for i in val_idx}) >= 2:  # clean, fixed triplets among held-out clips only
        val_store = SubsetStore(store, val_idx)
        val_sampler = TripletSampler(sampler_clips(val_store, range(len(val_idx))), tile, config.triplets)
        val_set = StepBatches(val_store, triplet_plan(val_sampler, config.batch_size, config.seed + 1),
                              max(1, math.ceil(len(val_idx) / config.batch_size)), tile, 3, AugmentConfig(), 0.0, config.seed + 1)

    # Model (the projection head only exists for the loss) and optimiser.
    model = Encoder(config.encoder).to(device)
    head = ProjectionHead(config.encoder.embedding_dim, config.projection_dim).to(device) if config.projection_dim else None
    network = TrainingNetwork(model, head)
    optimiser = torch.optim.Adam(network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    state = TrainState()
    start = initial_encoder_state(config) if config.init_model and (not resume or config.anchor_weight > 0) else None
    if start is not None and not resume:  # a resumed run already holds these weights, trained further
        model.load_state_dict(start)
    penalty = anchor_penalty(model, start, config.anchor_weight) if config.anchor_weight > 0 else None
    if resume:
        saved = load_checkpoint(config.checkpoint_path, config.to_dict(), data_sha256,
                                defaults=TrainConfig().to_dict())
        model.load_state_dict(saved["model"])
        if head is not None:
            head.load_state_dict(saved["projection_head"])
        optimiser.load_state_dict(saved["optimiser"])  # the loop sets each step's rate from this run's config
        scaler.load_state_dict(saved["scaler"])
        state = TrainState(**saved["state"])
    trainee: torch.nn.Module = network
    if distributed.world > 1:
        trainee = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)

    # Loop.
    snapshot_info = RunInfo(commit, str(device), distributed.world, datasets_summary, data_sha256, len(clips), len(train_idx),
                            len(val_idx), batches_per_epoch, parameter_count(head) if head is not None else 0,
                            sorted(shared_packages), len(beds))
    snapshot_marks = int(state.elapsed_s // (60 * config.snapshot_every_minutes)) if config.snapshot_every_minutes > 0 else 0
    bar = tqdm(total=config.steps, initial=state.step, desc="train", unit="step", disable=not show or None)
    interrupted = out_of_time_agreed = False
    with StopRequest() as stop:
        trainee.train()
        if config.norm_statistics == NORM_FROZEN:
            hold_norm_statistics(model)
        while state.step < config.steps:
            train_set.epoch = state.epoch
            loader = DataLoader(train_set, batch_size=None, sampler=range(state.batches_in_epoch, batches_per_epoch),
                                num_workers=config.num_workers, pin_memory=amp)
            for views, ids in loader:
                views = views.to(device, non_blocking=True)
                rate = same_on_every_rank(learning_rate_at(config, state.step, state.elapsed_s + clock() - started), distributed)
                for group in optimiser.param_groups:
                    group["lr"] = rate
                result = train_step(trainee, views, ids, optimiser, scaler, loss_at(config, state.step), config.margin, amp,
                                    penalty)

                state.step += 1
                state.batches_in_epoch += 1
                state.history["step"].append(state.step)
                state.history["loss"].append(float(result.loss.detach()))
                state.history["active_fraction"].append(result.active_fraction)
                state.history.setdefault("lr", []).append(optimiser.param_groups[0]["lr"])
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss.item():.4f}", active=f"{result.active_fraction:.2f}", epoch=state.epoch)

                if val_set is not None and state.step % config.validate_every == 0:
                    scores = validate(model, val_set, device, config.margin)
                    state.validation.append({"step": state.step, **scores})
                    if show:
                        recent = np.mean(state.history["loss"][-config.validate_every:])
                        bar.write(f"step {state.step}: train loss {recent:.4f} (active "
                                  f"{np.mean(state.history['active_fraction'][-config.validate_every:]):.2f}), "
                                  f"validation loss {scores['loss']:.4f} (active {scores['active_fraction']:.2f}), "
                                  f"{(state.elapsed_s + clock() - started) / 60:.1f} min of the budget's clock "
                                  f"({config.budget_clock})", file=sys.stdout)
                if distributed.is_main and state.step % config.checkpoint_every == 0:
                    save_checkpoint(config.checkpoint_path, config.to_dict(), dataclasses.replace(state, elapsed_s=state.elapsed_s + clock() - started),
                                    network, optimiser, scaler, data_sha256)
                budget_s = state.elapsed_s + clock() - started
                if distributed.is_main and config.snapshot_every_minutes > 0 and snapshot_due(config, budget_s, snapshot_marks):
                    snapshot_marks = write_snapshot(config, model, dataclasses.replace(state, elapsed_s=budget_s), snapshot_info,
                                                    interrupted=False, wall_s=time.monotonic() - wall_started)
                out_of_time = config.max_minutes > 0 and budget_s / 60 >= config.max_minutes
                interrupted = agreed(stop.requested, distributed)
                out_of_time_agreed = agreed(out_of_time, distributed)
                if interrupted or out_of_time_agreed or state.step >= config.steps:
                    break
            if state.batches_in_epoch >= batches_per_epoch:
                state.epoch += 1
                state.batches_in_epoch = 0
            if interrupted or state.step >= config.steps or out_of_time_agreed:
                break
    bar.close()

    # Ranks leave with identical weights: parameters are all-reduced, BN statistics come from rank 0.
    if distributed.world > 1:
        for buffer in network.buffers():
            dist.broadcast(buffer, 0)
    state.elapsed_s += clock() - started
    if distributed.is_main:
        save_checkpoint(config.checkpoint_path, config.to_dict(), state, network, optimiser, scaler, data_sha256)

    # The model file: the encoder alone (the projection head is dropped here).
    final_scores = validate(model, val_set, device, config.margin) if val_set is not None else {}
    wall_s = state.elapsed_s if config.budget_clock == "wall" else time.monotonic() - wall_started
    bundle = encoder_bundle(config, model, state, snapshot_info, interrupted, wall_s, final_scores)
    if distributed.is_main and not interrupted:
        save_model(bundle, config.out)
    if distributed.world > 1:
        dist.barrier()
    return TrainResult(bundle, state, interrupted)
