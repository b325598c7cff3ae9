"""Self-supervised training of the encoder on unlabelled clips (Tile2Vec triplets, zero-filtered loss).

Reads top to bottom: config, data, model, optimiser, loop, checkpoint. Labels are never read.
Runs on one CPU/GPU or under ``torchrun --nproc_per_node N`` (DistributedDataParallel, gloo on CPU,
NCCL on CUDA). Ctrl-C / SIGTERM stops after the current step and writes a resumable checkpoint.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from encoder.audio import load_audio
from encoder.config_keys import reject_unknown_keys
from encoder.datasets import DatasetError, Record, read_dataset
from encoder.features import LogMelConfig, frame_count, log_mel
from encoder.loss import MARGIN, TripletLoss, triplet_losses, zero_filtered_triplet_loss
from encoder.model import Encoder, EncoderConfig, parameter_count
from encoder.model_file import ModelBundle, save_model
from encoder.triplets import Clip, TripletConfig, TripletSampler, held_out_groups

CHECKPOINT_FORMAT = "roomtone-checkpoint"
CHECKPOINT_VERSION = 1


# ---------------------------------------------------------------------------------------------- config

LR_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs; `from_dict` reads a TOML/JSON file's tables."""

    data: tuple[str, ...] = ()
    out: str = "models/roomtone.pt"
    checkpoint: str = ""  # "" -> "<out>.ckpt"
    steps: int = 2000
    max_minutes: float = 0.0  # 0 -> no wall-time budget; otherwise stop (and save) when it is spent
    batch_size: int = 64
    learning_rate: float = 1e-3
    lr_schedule: str = "constant"  # constant | cosine (decays to 0 over steps or max_minutes, whichever ends first)
    warmup_steps: int = 0  # linear ramp from 0 to learning_rate over the first steps
    weight_decay: float = 0.0
    margin: float = MARGIN
    validation_fraction: float = 0.1
    validate_every: int = 100
    checkpoint_every: int = 100
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    cache_features: bool = True  # log-Mel once per clip in memory (see docs/encoder.md for the measurement)
    provisional: bool = False
    note: str = ""
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    features: LogMelConfig = field(default_factory=LogMelConfig)
    triplets: TripletConfig = field(default_factory=TripletConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(str(p) for p in self.data))
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

    @property
    def checkpoint_path(self) -> Path:
        """Where checkpoints go (``<out>.ckpt`` unless set)."""
        return Path(self.checkpoint) if self.checkpoint else Path(str(self.out) + ".ckpt")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (the TOML/JSON layout)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["data"] = list(self.data)
        for name in ("encoder", "features", "triplets"):
            data[name] = data[name].to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> "TrainConfig":
        """Build from a nested dict; unknown or malformed keys raise ValueError naming ``source`` and the key."""
        reject_unknown_keys(cls, data, source)
        values = dict(data)
        nested = {"encoder": EncoderConfig, "features": LogMelConfig, "triplets": TripletConfig}
        try:
            for name, kind in nested.items():
                if name in values:
                    if not isinstance(values[name], dict):
                        raise ValueError(f"[{name}] must be a table, got {values[name]!r}")
                    values[name] = kind.from_dict(values[name])
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{source}: {exc}") from None


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


# ------------------------------------------------------------------------------------------------ data

@dataclass(frozen=True)
class TrainingClip:
    """One unlabelled clip: its file, the group it must not be contrasted with, and its recording domain."""

    path: Path
    group: str
    domain: str = ""


def dataset_roots(path: str | Path) -> list[Path]:
    """A dataset directory/meta.csv, or a folder whose subfolders are datasets (e.g. ../shared/data)."""
    path = Path(path)
    try:
        read_dataset(path)
        return [path]
    except DatasetError:
        children = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
        roots = [p for p in children if (p / "meta.csv").is_file() or (p / "evaluation_setup").is_dir()]
        if not roots:
            raise
        return roots


def recording_domain(record: Record) -> str:
    """Where a clip was recorded, as far as the dataset says: the DCASE node (``DevNode3_...`` -> ``node3``,
    one microphone array in one room), else the fold (homesounds lays one background recording under
    every clip of a fold; for music the fold is a random set of tracks)."""
    node = re.match(r"DevNode(\d+)_", record.path.name)
    return f"node{node.group(1)}" if node else f"fold{record.fold}"


def training_clips(data: Sequence[str | Path]) -> tuple[list[TrainingClip], list[dict[str, Any]]]:
    """Clips (path, dataset-qualified group) of every dataset under ``data`` and a per-dataset summary.
    Labels are dropped here: nothing after this point can read them."""
    clips: list[TrainingClip] = []
    summary = []
    for entry in data:
        for root in dataset_roots(entry):
            records = read_dataset(root)
            name = root.name if root.is_dir() else root.parent.name
            clips += [TrainingClip(r.path, f"{name}:{r.group}", f"{name}:{recording_domain(r)}") for r in records]
            summary.append({"name": name, "path": str(root), "clips": len(records),
                            "groups": len({r.group for r in records})})
    if not clips:
        raise DatasetError(f"no clips found under {list(data)}")
    return clips, summary


def data_hash(paths: Sequence[Path]) -> str:
    """SHA-256 over the sorted file names and contents: identifies exactly what was trained on."""
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: (p.parent.name, p.name, str(p))):
        digest.update(f"{path.parent.name}/{path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


class ClipFeatures:
    """Log-Mel of each clip (mono), computed once and kept in memory, or on every access."""

    def __init__(self, paths: Sequence[Path], config: LogMelConfig, cache: bool, progress: bool = False) -> None:
        self.paths = list(paths)
        self.config = config
        self.cached: list[torch.Tensor] | None = None
        if cache:
            from tqdm import tqdm

            self.cached = [self._compute(p) for p in tqdm(self.paths, desc="log-Mel", unit="clip", disable=not progress or None)]

    def _compute(self, path: Path) -> torch.Tensor:
        waveform, _ = load_audio(path, self.config.sample_rate, mono=True)
        return log_mel(waveform[0], self.config)

    def frames(self, index: int) -> int:
        """Frame count of clip ``index`` (from the header when not cached)."""
        if self.cached is not None:
            return int(self.cached[index].shape[1])
        import soundfile

        info = soundfile.info(str(self.paths[index]))
        samples = math.ceil(info.frames * self.config.sample_rate / info.samplerate)
        return frame_count(samples, self.config)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.cached[index] if self.cached is not None else self._compute(self.paths[index])


class TripletTiles(Dataset):
    """Item ``i`` = the triplet anchored on clip ``i`` in the current ``epoch``: ``[3, 1, n_mels, tile]``."""

    def __init__(self, features: ClipFeatures, sampler: TripletSampler, seed: int, floor_db: float) -> None:
        self.features = features
        self.sampler = sampler
        self.seed = seed
        self.floor_db = floor_db
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.sampler)

    def __getitem__(self, index: int) -> torch.Tensor:
        triplet = self.sampler.triplet(index, self.seed, self.epoch)
        length = self.sampler.tile_frames
        tiles = torch.stack([self.features[t.clip][:, t.start:t.start + length] for t in (triplet.anchor, triplet.neighbour, triplet.opposite)])
        gains = self.sampler.gains_db(index, self.seed, self.epoch)
        if gains.any():  # a gain is a shift in dB; what sat on the floor stays there (as for a scaled waveform)
            shift = torch.as_tensor(gains, dtype=tiles.dtype).view(3, 1, 1)
            tiles = torch.where(tiles <= self.floor_db, tiles, (tiles + shift).clamp(min=self.floor_db))
        return tiles.unsqueeze(1)


def triplet_tiles(features: ClipFeatures, indices: Sequence[int], groups: Sequence[str], config: TrainConfig, seed: int,
                  domains: Sequence[str] = ()) -> TripletTiles:
    """Dataset of triplets over the clips ``indices`` (opposites only among those clips)."""
    subset = _Subset(features, indices)
    clips = [Clip(subset.frames(i), groups[j], domains[j] if domains else "") for i, j in enumerate(indices)]
    tile = max(1, int(round(config.triplets.tile_s * 1000 / config.features.hop_ms)))
    return TripletTiles(subset, TripletSampler(clips, tile, config.triplets), seed, config.features.floor_db)


class _Subset(ClipFeatures):
    """A view of some clips of a ClipFeatures, re-indexed from 0."""

    def __init__(self, base: ClipFeatures, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)

    def frames(self, index: int) -> int:
        """Frame count of the index-th clip of this subset."""
        return self.base.frames(self.indices[index])

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.base[self.indices[index]]


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


# ------------------------------------------------------------------------------------------ checkpoints

class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt or from a different run; names the file and the reason."""


# Keys that must match between a checkpoint and the run resuming it (steps, lr, budget may change).
RESUME_MUST_MATCH = ("encoder", "features", "triplets", "batch_size", "seed", "validation_fraction", "margin")


@dataclass
class TrainState:
    """What the loop has done so far; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    elapsed_s: float = 0.0
    history: dict[str, list[float]] = field(default_factory=lambda: {"step": [], "loss": [], "active_fraction": [], "lr": []})
    validation: list[dict[str, float]] = field(default_factory=list)


def save_checkpoint(path: Path, config: TrainConfig, state: TrainState, model: torch.nn.Module,
                    optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler, data_sha256: str) -> None:
    """Write a resumable checkpoint atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save({
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "config": config.to_dict(),
        "state": dataclasses.asdict(state), "model": model.state_dict(), "optimiser": optimiser.state_dict(),
        "scaler": scaler.state_dict(), "data_sha256": data_sha256,
    }, temporary)
    os.replace(temporary, path)


def load_checkpoint(path: Path, config: TrainConfig, data_sha256: str) -> dict[str, Any]:
    """Read a checkpoint and check that it belongs to this run; CheckpointError otherwise."""
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
    ours = config.to_dict()
    theirs = data.get("config", {})
    different = [k for k in RESUME_MUST_MATCH if theirs.get(k) != ours[k]]
    if different:
        detail = "; ".join(f"{k}: checkpoint {theirs.get(k)!r} vs now {ours[k]!r}" for k in different)
        raise CheckpointError(f"{path}: checkpoint is from a different configuration ({detail})")
    if data.get("data_sha256") != data_sha256:
        raise CheckpointError(f"{path}: checkpoint was trained on different data (hash {str(data.get('data_sha256'))[:12]}... "
                              f"vs now {data_sha256[:12]}...)")
    return data


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


def validate(model: torch.nn.Module, dataset: TripletTiles, device: torch.device, batch_size: int, margin: float) -> dict[str, float]:
    """Zero-filtered triplet loss, its active fraction and the plain mean loss over fixed held-out triplets."""
    was_training = model.training
    model.eval()
    losses = []
    items = [(round_, i) for round_ in range(VALIDATION_ROUNDS) for i in range(len(dataset))]
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            tiles = []
            for round_, index in items[start:start + batch_size]:
                dataset.epoch = round_
                tiles.append(dataset[index])
            batch = torch.stack(tiles).to(device)
            emb = model(batch.flatten(0, 1)).view(batch.shape[0], 3, -1)
            losses.append(triplet_losses(emb[:, 0], emb[:, 1], emb[:, 2], margin).cpu())
    model.train(was_training)
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
TRAINING_CODE = ("encoder/audio.py", "encoder/datasets.py", "encoder/features.py", "encoder/loss.py",
                 "encoder/model.py", "encoder/model_file.py", "encoder/train.py", "encoder/triplets.py")


def train_step(model: torch.nn.Module, batch: torch.Tensor, optimiser: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, margin: float, amp: bool) -> TripletLoss:
    """One optimiser step on a ``[batch, 3, 1, n_mels, frames]`` batch of (anchor, neighbour, opposite)
    tiles with the zero-filtered triplet loss; mixed precision when ``amp``. Shared by training and bench."""
    with torch.autocast(device_type=batch.device.type, dtype=torch.float16, enabled=amp):
        emb = model(batch.flatten(0, 1)).view(batch.shape[0], 3, -1)
    result = zero_filtered_triplet_loss(emb[:, 0], emb[:, 1], emb[:, 2], margin)
    optimiser.zero_grad(set_to_none=True)
    scaler.scale(result.loss).backward()
    scaler.step(optimiser)
    scaler.update()
    return result


def learning_rate_at(config: TrainConfig, step: int, elapsed_s: float) -> float:
    """Learning rate for optimiser step ``step`` (0-based) after ``elapsed_s`` seconds of training:
    linear warm-up, then constant or a cosine decay over the run's progress (steps or wall-time budget)."""
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


def train(config: TrainConfig, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train the encoder as ``config`` says; resume from ``config.checkpoint_path`` when asked."""
    from tqdm import tqdm

    # Devices and processes.
    device = pick_device(config.device)
    distributed = start_distributed(device)
    amp = device.type == "cuda"
    torch.manual_seed(config.seed)
    started = time.monotonic()
    commit = git_commit()  # at the start: the code that trains, not whatever is checked out at the end
    show = progress and distributed.is_main

    # Data: unlabelled clips, held-out groups for validation, log-Mel computed once per clip.
    clips, datasets_summary = training_clips(config.data)
    paths = [c.path for c in clips]
    groups = [c.group for c in clips]
    domains = [c.domain for c in clips]
    data_sha256 = data_hash(paths)
    train_idx, val_idx = held_out_groups(groups, config.validation_fraction, config.seed)
    features = ClipFeatures(paths, config.features, config.cache_features, progress=show)
    train_set = triplet_tiles(features, train_idx, groups, config, config.seed, domains)
    val_set = triplet_tiles(features, val_idx, groups, config, config.seed + 1, domains) if len({groups[i] for i in val_idx}) >= 2 else None

    # Model and optimiser.
    model = Encoder(config.encoder).to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    state = TrainState()
    if resume:
        saved = load_checkpoint(config.checkpoint_path, config, data_sha256)
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])  # the loop sets each step's rate from this run's config
        scaler.load_state_dict(saved["scaler"])
        state = TrainState(**saved["state"])
    trainee: torch.nn.Module = model
    if distributed.world > 1:
        trainee = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    sampler = DistributedSampler(train_set, num_replicas=distributed.world, rank=distributed.rank,
                                 shuffle=True, seed=config.seed, drop_last=True)
    per_rank_batch = max(1, config.batch_size // distributed.world)
    batches_per_epoch = len(sampler) // per_rank_batch
    if batches_per_epoch == 0:
        raise ValueError(f"{len(train_idx)} training clips give no full batch of {config.batch_size}: lower batch_size")

    # Loop.
    bar = tqdm(total=config.steps, initial=state.step, desc="train", unit="step", disable=not show or None)
    interrupted = out_of_time_agreed = False
    with StopRequest() as stop:
        trainee.train()
        while state.step < config.steps:
            sampler.set_epoch(state.epoch)
            train_set.epoch = state.epoch
            order = list(sampler)[state.batches_in_epoch * per_rank_batch:]
            loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=order, drop_last=True,
                                num_workers=config.num_workers, pin_memory=amp)
            for batch in loader:
                batch = batch.to(device, non_blocking=True)
                rate = same_on_every_rank(learning_rate_at(config, state.step, state.elapsed_s + time.monotonic() - started), distributed)
                for group in optimiser.param_groups:
                    group["lr"] = rate
                result = train_step(trainee, batch, optimiser, scaler, config.margin, amp)

                state.step += 1
                state.batches_in_epoch += 1
                state.history["step"].append(state.step)
                state.history["loss"].append(float(result.loss.detach()))
                state.history["active_fraction"].append(result.active_fraction)
                state.history.setdefault("lr", []).append(optimiser.param_groups[0]["lr"])
                bar.update(1)
                bar.set_postfix(loss=f"{result.loss.item():.4f}", active=f"{result.active_fraction:.2f}", epoch=state.epoch)

                if val_set is not None and state.step % config.validate_every == 0:
                    scores = validate(model, val_set, device, config.batch_size, config.margin)
                    state.validation.append({"step": state.step, **scores})
                    if show:
                        recent = np.mean(state.history["loss"][-config.validate_every:])
                        bar.write(f"step {state.step}: train loss {recent:.4f} (active "
                                  f"{np.mean(state.history['active_fraction'][-config.validate_every:]):.2f}), "
                                  f"validation loss {scores['loss']:.4f} (active {scores['active_fraction']:.2f}), "
                                  f"{(time.monotonic() - started) / 60:.1f} min")
                if distributed.is_main and state.step % config.checkpoint_every == 0:
                    save_checkpoint(config.checkpoint_path, config, dataclasses.replace(state, elapsed_s=state.elapsed_s + time.monotonic() - started),
                                    model, optimiser, scaler, data_sha256)
                out_of_time = config.max_minutes > 0 and (state.elapsed_s + time.monotonic() - started) / 60 >= config.max_minutes
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
        for buffer in model.buffers():
            dist.broadcast(buffer, 0)
    state.elapsed_s += time.monotonic() - started
    if distributed.is_main:
        save_checkpoint(config.checkpoint_path, config, state, model, optimiser, scaler, data_sha256)

    # The model file.
    final_scores = validate(model, val_set, device, config.batch_size, config.margin) if val_set is not None else {}
    tail = max(1, min(50, len(state.history["loss"])))
    metadata = {
        "provisional": config.provisional,
        "note": config.note,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": commit,
        "training": {
            "config": config.to_dict(), "steps": state.step, "epochs": round(state.epoch + state.batches_in_epoch / batches_per_epoch, 2),
            "wall_time_s": round(state.elapsed_s, 1), "device": str(device), "world_size": distributed.world,
            "torch_threads": torch.get_num_threads(), "parameters": parameter_count(model), "interrupted": interrupted,
        },
        "data": {"datasets": datasets_summary, "sha256": data_sha256, "clips": len(clips),
                 "train_clips": len(train_idx), "validation_clips": len(val_idx), "labels_used": False},
        "metrics": {
            "final_train_loss": float(np.mean(state.history["loss"][-tail:])) if state.history["loss"] else None,
            "final_train_active_fraction": float(np.mean(state.history["active_fraction"][-tail:])) if state.history["loss"] else None,
            "validation_loss": final_scores.get("loss"),
            "validation_active_fraction": final_scores.get("active_fraction"),
            "validation_mean_loss": final_scores.get("mean_loss"),
        },
        "history": state.history,
        "validation_history": state.validation,
    }
    bundle = ModelBundle(model.cpu().eval(), config.features, config.encoder, None, metadata)
    if distributed.is_main and not interrupted:
        save_model(bundle, config.out)
    if distributed.world > 1:
        dist.barrier()
    return TrainResult(bundle, state, interrupted)
