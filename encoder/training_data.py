"""What training reads: clips found under the data paths (labels dropped), their audio or log-Mel kept
in memory, and the batch of augmented views for each step.

Data paths may be labelled datasets (``meta.csv``, DCASE layout: labels are dropped here), unlabelled
corpora (a folder with ``manifest.csv`` like ../shared/data/unlabelled, or any folder of audio files of
any length and format libsndfile reads), or a folder holding several of these (../shared/data).
Long files are cut into clips of at most ``max_clip_s`` that share the file's group.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from encoder.audio import audio_info, load_audio
from encoder.augment import (AugmentConfig, background_draws, capture_chain, mix_background, mixup_log_mel,
                             random_resize_crop, shift_gain)
from encoder.datasets import DatasetError, Record, is_unlabelled_folder, read_dataset, read_unlabelled
from encoder.features import LogMelConfig, frame_count, log_mel
from encoder.triplets import Clip, ClipBatchSampler, Tile, TripletSampler


@dataclass(frozen=True)
class TrainingClip:
    """One unlabelled clip: its file (or the part of it from ``start_s``, ``duration_s`` long; 0 = to
    the end), the group it must not be contrasted with, its recording domain, and (from a manifest)
    its source packages and kind."""

    path: Path
    group: str
    domain: str = ""
    start_s: float = 0.0
    duration_s: float = 0.0
    packages: tuple[str, ...] = ()
    kind: str = ""


def _is_labelled(path: Path) -> bool:
    """True for a labelled dataset (a meta.csv file, or a folder with meta.csv or evaluation_setup/)."""
    if path.is_file():
        return path.name.endswith(".csv")
    return (path / "meta.csv").is_file() or (path / "evaluation_setup").is_dir()


def dataset_roots(path: str | Path) -> list[Path]:
    """A dataset or unlabelled corpus, or a folder whose subfolders are such (e.g. ../shared/data)."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or directory")
    if _is_labelled(path) or (path / "manifest.csv").is_file():
        return [path]
    children = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    roots = [p for p in children if _is_labelled(p) or (p / "manifest.csv").is_file()]
    if roots:
        return roots
    if is_unlabelled_folder(path):
        return [path]
    raise DatasetError(f"{path}: no dataset (meta.csv, evaluation_setup/), unlabelled corpus (manifest.csv) or audio files found")


def recording_domain(record: Record) -> str:
    """Where a clip was recorded, as far as the dataset says: the DCASE node (``DevNode3_...`` -> ``node3``,
    one microphone array in one room), else the fold (homesounds lays one background recording under
    every clip of a fold; for music the fold is a random set of tracks)."""
    node = re.match(r"DevNode(\d+)_", record.path.name)
    return f"node{node.group(1)}" if node else f"fold{record.fold}"


def training_clips(data: Sequence[str | Path]) -> tuple[list[TrainingClip], list[dict[str, Any]]]:
    """Clips (path, dataset-qualified group and domain) of every dataset under ``data`` and a per-dataset
    summary. Labels are dropped here: nothing after this point can read them."""
    clips: list[TrainingClip] = []
    summary = []
    for entry in data:
        for root in dataset_roots(entry):
            name = root.name if root.is_dir() else root.parent.name
            if _is_labelled(root):
                records = read_dataset(root)
                found = [TrainingClip(r.path, f"{name}:{r.group}", f"{name}:{recording_domain(r)}") for r in records]
                kind = "labelled (labels unused)"
            else:
                found = [TrainingClip(r.path, f"{name}:{r.group}", f"{name}:{r.domain}",
                                      packages=tuple(p for p in r.package.split(";") if p), kind=r.kind)
                         for r in read_unlabelled(root)]
                kind = "unlabelled"
            clips += found
            summary.append({"name": name, "path": str(root), "kind": kind, "clips": len(found),
                            "groups": len({c.group for c in found})})
    if not clips:
        raise DatasetError(f"no clips found under {list(data)}")
    return clips, summary


def labelled_source_packages(datasets: Sequence[str | Path]) -> frozenset[str]:
    """Every package named in the ``source_package`` column (``;``-separated) of these labelled datasets'
    meta.csv: the packages whose production the labelled sets carry. Only that column is read."""
    packages: set[str] = set()
    for entry in datasets:
        path = Path(entry)
        meta = path if path.is_file() else path / "meta.csv"
        if not meta.is_file():
            raise DatasetError(f"{path}: no meta.csv (shared_packages_from takes labelled datasets)")
        with meta.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if "source_package" not in (reader.fieldnames or []):
                raise DatasetError(f"{meta}: no source_package column; found {reader.fieldnames}")
            for row in reader:
                packages.update(p for p in (row["source_package"] or "").split(";") if p)
    return frozenset(packages)


def split_long_clips(clips: Sequence[TrainingClip], max_clip_s: float) -> list[TrainingClip]:
    """Files longer than ``max_clip_s`` become consecutive clips of equal length (at most ``max_clip_s``)
    in the file's group; lengths come from the headers."""
    out = []
    for clip in clips:
        duration = audio_info(clip.path).duration
        pieces = max(1, math.ceil(duration / max_clip_s - 1e-9))
        if pieces == 1:
            out.append(clip)
            continue
        length = duration / pieces
        out += [dataclasses.replace(clip, start_s=i * length, duration_s=length) for i in range(pieces)]
    return out


def clip_duration(clip: TrainingClip) -> float:
    """Seconds of audio ``clip`` covers (its part of the file, else the whole file from the header)."""
    return clip.duration_s or audio_info(clip.path).duration - clip.start_s


def mixed_in_clips(own: Sequence[TrainingClip], others: Sequence[TrainingClip], fraction: float,
                   seed: int) -> list[TrainingClip]:
    """A seeded sample of excerpts of ``others`` that makes up ``fraction`` of ``own`` plus the sample, in clips and
    in time: each excerpt as long as ``own``'s median clip (at a random offset; shorter clips whole), drawn
    without replacement while ``others`` lasts. `roomtone adapt` mixes the corpus into a home's batches so."""
    if not own or not others or fraction <= 0:
        return []
    wanted = int(round(len(own) * fraction / (1.0 - fraction)))
    length = float(np.median([clip_duration(c) for c in own]))
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(len(others)) for _ in range(math.ceil(wanted / len(others)))])[:wanted]
    sample = []
    for index in order:
        clip = others[index]
        duration = clip_duration(clip)
        if duration <= length:
            sample.append(clip)
            continue
        offset = float(rng.uniform(0.0, duration - length))
        sample.append(dataclasses.replace(clip, start_s=clip.start_s + offset, duration_s=length))
    return sample


def data_hash(paths: Sequence[Path]) -> str:
    """SHA-256 over the sorted file names and contents: identifies exactly what was trained on."""
    digest = hashlib.sha256()
    for path in sorted(set(paths), key=lambda p: (p.parent.name, p.name, str(p))):
        digest.update(f"{path.parent.name}/{path.name}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ the store

STORE_KINDS = ("log_mel", "waveform")


class ClipStore:
    """Every clip's log-Mel (float16) or mono waveform (int16), decoded once and kept in memory, or
    decoded on every access (``cache=False``). Tiles are cut from it; a waveform store computes the
    log-Mel of each tile after augmenting its audio."""

    def __init__(self, clips: Sequence[TrainingClip], config: LogMelConfig, kind: str = "log_mel",
                 cache: bool = True, progress: bool = False) -> None:
        if kind not in STORE_KINDS:
            raise ValueError(f"ClipStore kind must be one of {STORE_KINDS}, got {kind!r}")
        self.clips = list(clips)
        self.config = config
        self.kind = kind
        self.cached: list[torch.Tensor] | None = None
        if cache:
            from tqdm import tqdm

            self.cached = [self._compute(c) for c in tqdm(self.clips, desc=f"decode ({kind})", unit="clip",
                                                          disable=not progress or None)]

    def __len__(self) -> int:
        return len(self.clips)

    def _waveform(self, clip: TrainingClip) -> torch.Tensor:
        """The clip's mono samples at the feature rate."""
        waveform = load_audio(clip.path, self.config.sample_rate, mono=True)[0][0]
        if clip.start_s or clip.duration_s:
            start = int(round(clip.start_s * self.config.sample_rate))
            stop = start + int(round(clip.duration_s * self.config.sample_rate)) if clip.duration_s else None
            waveform = waveform[start:stop]
        return waveform

    def _compute(self, clip: TrainingClip) -> torch.Tensor:
        waveform = self._waveform(clip)
        if self.kind == "waveform":
            return (waveform.clamp(-1, 1) * 32767).round().to(torch.int16)
        return log_mel(waveform, self.config).to(torch.float16)

    def _item(self, index: int) -> torch.Tensor:
        return self.cached[index] if self.cached is not None else self._compute(self.clips[index])

    def frames(self, index: int) -> int:
        """Log-Mel frame count of clip ``index``."""
        if self.cached is not None:
            item = self.cached[index]
            return int(item.shape[1]) if self.kind == "log_mel" else frame_count(item.shape[0], self.config)
        clip = self.clips[index]
        duration = clip.duration_s or (audio_info(clip.path).duration - clip.start_s)
        return frame_count(int(duration * self.config.sample_rate), self.config)

    def waveform_tiles(self, tiles: Sequence[Tile], tile_frames: int) -> torch.Tensor:
        """``[N, samples]`` float32 audio whose log-Mel has exactly ``tile_frames`` frames (waveform store)."""
        if self.kind != "waveform":
            raise ValueError("waveform_tiles needs a ClipStore of kind 'waveform'")
        hop = self.config.hop_length
        samples = (tile_frames - 1) * hop
        return torch.stack([self._item(t.clip)[t.start * hop:t.start * hop + samples] for t in tiles]).float() / 32767

    def log_mel_tiles(self, tiles: Sequence[Tile], tile_frames: int) -> torch.Tensor:
        """``[N, n_mels, tile_frames]`` float32 clean log-Mel tiles."""
        if self.kind == "waveform":
            return log_mel(self.waveform_tiles(tiles, tile_frames), self.config)
        return torch.stack([self._item(t.clip)[:, t.start:t.start + tile_frames] for t in tiles]).float()


# ------------------------------------------------------------------------------------------ the views

def background_clips(clips: Sequence[TrainingClip], kind: str) -> list[int]:
    """Indices of the clips of manifest kind ``kind``: the beds of background swap."""
    return [i for i, clip in enumerate(clips) if clip.kind == kind]


def views(store: ClipStore, tiles: Sequence[Tile], tile_frames: int, block: int, augment: AugmentConfig,
          gain_db: float, rng: np.random.Generator, ids: Sequence[int] = (), beds: Sequence[int] = ()) -> torch.Tensor:
    """``[N, 1, n_mels, tile_frames]`` views of ``tiles``, each with its own augmentation draws: a bed
    (a tile of one of the store's clips ``beds``, a different one per tile of one id) under its audio,
    the capture chain on its audio (waveform store), then gain, mixup with a tile ``block * s`` places
    further round the batch (another triplet / another group) and random resize crop on its log-Mel."""
    floor = store.config.floor_db
    if augment.needs_waveform:
        audio = store.waveform_tiles(tiles, tile_frames)
        if augment.background_p > 0:
            if not beds:
                raise ValueError(f"background_p needs clips of kind {augment.background_kind!r} in the training data")
            chosen = background_draws(np.asarray(ids if len(ids) else range(len(tiles))), len(beds), augment.background_p, rng)
            mixed = np.flatnonzero(chosen >= 0)
            if len(mixed):
                bed_tiles = [Tile(beds[int(b)], int(rng.integers(0, store.frames(beds[int(b)]) - tile_frames + 1)))
                             for b in chosen[mixed]]
                snr = torch.from_numpy(rng.uniform(*augment.background_snr_db, size=len(mixed))).float()
                audio[mixed] = mix_background(audio[mixed], store.waveform_tiles(bed_tiles, tile_frames), snr)
        if augment.has_capture_chain:
            audio = capture_chain(audio, store.config.sample_rate, augment, rng)
        mel = log_mel(audio, store.config)
    else:
        mel = store.log_mel_tiles(tiles, tile_frames)
    n = mel.shape[0]
    if gain_db:
        mel = shift_gain(mel, torch.from_numpy(rng.uniform(-gain_db, gain_db, size=(n, 1, 1))).float(), floor)
    if augment.mixup and n > block:
        shift = block * int(rng.integers(1, max(2, n // block)))
        partner = (torch.arange(n) + shift) % n
        lam = torch.from_numpy(rng.uniform(0, augment.mixup, size=(n, 1, 1))).float()
        mel = mixup_log_mel(mel, mel[partner], lam, floor)
    if augment.crop_min_scale < 1:
        mel = torch.stack([random_resize_crop(m, augment.crop_min_scale, rng) for m in mel])
    return mel.unsqueeze(1)


class StepBatches(Dataset):
    """Item ``b`` = batch ``b`` of the current ``epoch``: (views ``[N, 1, n_mels, T]``, ids ``[N]``).

    ``plan(epoch, b)`` gives the tiles and ids; augmentation draws come from ``(seed, epoch, b)``, so a
    batch is the same whichever worker builds it and whether or not the run was resumed."""

    def __init__(self, store: ClipStore, plan: Callable[[int, int], tuple[list[Tile], list[int]]], batches: int,
                 tile_frames: int, block: int, augment: AugmentConfig, gain_db: float, seed: int,
                 beds: Sequence[int] = ()) -> None:
        self.store, self.plan, self.batches = store, plan, batches
        self.tile_frames, self.block, self.augment, self.gain_db, self.seed = tile_frames, block, augment, gain_db, seed
        self.beds = list(beds)
        self.epoch = 0

    def __len__(self) -> int:
        return self.batches

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        tiles, ids = self.plan(self.epoch, index)
        rng = np.random.default_rng([self.seed, self.epoch, index, 2])
        batch = views(self.store, tiles, self.tile_frames, self.block, self.augment, self.gain_db, rng, ids, self.beds)
        return batch, torch.tensor(ids, dtype=torch.long)


def triplet_plan(sampler: TripletSampler, batch_size: int, seed: int, rank: int = 0, world: int = 1):
    """Batches of random triplets: epoch ``e`` visits every anchor clip once in a seeded order; each
    rank takes its share of every batch. Tiles are laid out (anchor, neighbour, opposite) per triplet."""

    def plan(epoch: int, index: int) -> tuple[list[Tile], list[int]]:
        order = np.random.default_rng([seed, epoch]).permutation(len(sampler))
        anchors = order[index * batch_size:(index + 1) * batch_size][rank::world]
        tiles: list[Tile] = []
        ids: list[int] = []
        for k, anchor in enumerate(anchors):
            triplet = sampler.triplet(int(anchor), seed, epoch)
            tiles += [triplet.anchor, triplet.neighbour, triplet.opposite]
            ids += [2 * k, 2 * k, 2 * k + 1]
        return tiles, ids

    return plan


def pk_plan(sampler: ClipBatchSampler, batches_per_epoch: int, seed: int, rank: int = 0, world: int = 1):
    """Batches of P clips x K tiles (`ClipBatchSampler`); each rank takes every ``world``-th group."""

    def plan(epoch: int, index: int) -> tuple[list[Tile], list[int]]:
        tiles, ids = sampler.batch(seed, epoch * batches_per_epoch + index)
        keep = [i for i, group in enumerate(ids) if group % world == rank]
        return [tiles[i] for i in keep], [ids[i] for i in keep]

    return plan


def sampler_clips(store: ClipStore, indices: Sequence[int]) -> list[Clip]:
    """What a sampler may know of the clips ``indices``: frames, group and domain."""
    return [Clip(store.frames(i), store.clips[i].group, store.clips[i].domain, store.clips[i].packages) for i in indices]


class SubsetStore(ClipStore):
    """A view of some clips of a ClipStore, re-indexed from 0."""

    def __init__(self, base: ClipStore, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)
        self.clips = [base.clips[i] for i in self.indices]
        self.config, self.kind = base.config, base.kind

    def _item(self, index: int) -> torch.Tensor:
        return self.base._item(self.indices[index])

    def frames(self, index: int) -> int:
        """Frame count of the index-th clip of this subset."""
        return self.base.frames(self.indices[index])
