"""Unlabelled triplet sampling (Tile2Vec): anchor and neighbour are two different tiles of one clip,
the opposite is a tile of a clip from another ``group``.

Only clip lengths (in feature frames) and groups are read: the sampler never sees a label. Clips that
share a group (simultaneous recordings of one session by several microphones, segments of one music
track, clips built from the same source recordings) are never each other's opposites; with
``neighbour="group"`` another clip of the anchor's group may serve as the neighbour. Every triplet is a
pure function of ``(seed, epoch, anchor index)``, so DataLoader workers and DDP ranks agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from pydantic import field_validator, model_validator

from encoder.config_schema import Section

NEIGHBOUR_OPTIONS = ("clip", "group")
SAMPLERS = ("random", "pk")
BALANCES = ("group", "package")


class TripletConfig(Section):
    """How tiles are cut and where neighbours come from; the ``[triplets]`` table of a training config."""

    tile_s: float = 5.0
    random_offsets: bool = False
    neighbour: str = "clip"
    gain_db: float = 0.0  # each tile's level moved by a uniform draw in [-gain_db, +gain_db] dB
    same_domain_opposites: float = 0.0  # probability that the opposite shares the anchor's recording domain
    sampler: str = "random"  # "random": batch_size (anchor, neighbour, opposite) triplets; "pk": P clips x K tiles
    clips_per_batch: int = 48  # P of a "pk" batch (distinct groups)
    tiles_per_clip: int = 4  # K of a "pk" batch
    same_moment: bool = False  # "pk": a group's K tiles are K/2 moments, each cut twice (two microphones of one room)
    balance: str = "group"  # "pk": every group equally likely in a batch, or "package": every source package
    shared_package_weight: float = 1.0  # "pk": sampling weight of groups whose clips share a package with ...
    shared_packages_from: tuple[str, ...] = ()  # ... these labelled datasets (their meta.csv source_package)

    @field_validator("shared_packages_from", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return tuple(str(p) for p in value) if isinstance(value, (list, tuple)) else value

    @model_validator(mode="after")
    def _check(self) -> "TripletConfig":
        if self.balance not in BALANCES:
            raise ValueError(f"TripletConfig.balance must be one of {BALANCES}, got {self.balance!r}")
        if not 0 < self.shared_package_weight <= 1:
            raise ValueError(f"TripletConfig.shared_package_weight must be in (0, 1], got {self.shared_package_weight}")
        if (self.shared_package_weight < 1) != bool(self.shared_packages_from):
            raise ValueError("TripletConfig.shared_package_weight < 1 and shared_packages_from (the labelled datasets "
                             "whose source packages are down-weighted) go together; got weight "
                             f"{self.shared_package_weight} and {list(self.shared_packages_from)}")
        if self.same_moment and self.tiles_per_clip % 2:
            raise ValueError(f"TripletConfig.same_moment cuts each moment twice: tiles_per_clip must be even, got {self.tiles_per_clip}")
        if self.sampler != "pk" and (self.same_moment or self.balance != "group" or self.shared_packages_from):
            raise ValueError("TripletConfig.same_moment, balance and shared_package_weight need sampler = \"pk\"")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"TripletConfig.sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.clips_per_batch < 2 or self.tiles_per_clip < 2:
            raise ValueError(f"TripletConfig needs clips_per_batch >= 2 and tiles_per_clip >= 2, got "
                             f"{self.clips_per_batch} and {self.tiles_per_clip}")
        if self.tile_s <= 0:
            raise ValueError(f"TripletConfig.tile_s must be positive, got {self.tile_s}")
        if self.gain_db < 0:
            raise ValueError(f"TripletConfig.gain_db must be >= 0, got {self.gain_db}")
        if not 0 <= self.same_domain_opposites <= 1:
            raise ValueError(f"TripletConfig.same_domain_opposites must be in [0, 1], got {self.same_domain_opposites}")
        if self.neighbour not in NEIGHBOUR_OPTIONS:
            raise ValueError(f"TripletConfig.neighbour must be one of {NEIGHBOUR_OPTIONS}, got {self.neighbour!r}")
        return self


@dataclass(frozen=True)
class Clip:
    """What the sampler may know about a clip: its length in feature frames, its group, its recording
    domain (the microphone/room/background it was recorded in) and its source packages (first = the
    package it mainly comes from; empty when unknown)."""

    frames: int
    group: str
    domain: str = ""
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Tile:
    """``frames`` feature frames of clip ``clip`` starting at frame ``start``."""

    clip: int
    start: int


@dataclass(frozen=True)
class Triplet:
    """Anchor and neighbour (should embed close) and opposite (should embed far)."""

    anchor: Tile
    neighbour: Tile
    opposite: Tile


def tile_starts(frames: int, tile_frames: int) -> list[int]:
    """Starts of the non-overlapping tiles that fit in a clip (0, T, 2T, ...)."""
    return list(range(0, frames - tile_frames + 1, tile_frames))


def check_clips(clips: Sequence[Clip], tile_frames: int) -> None:
    """Raise ValueError when a clip cannot give two different tiles or all clips share one group."""
    if tile_frames < 1:
        raise ValueError(f"tile length must be at least one frame, got {tile_frames}")
    short = [i for i, clip in enumerate(clips) if clip.frames <= tile_frames]
    if short:
        raise ValueError(
            f"{len(short)} clip(s) (first: index {short[0]}, {clips[short[0]].frames} frames) are not longer "
            f"than one tile ({tile_frames} frames): shorten tile_s or drop them"
        )
    if len({clip.group for clip in clips}) < 2:
        raise ValueError("triplets need clips from at least two groups (opposites come from another group)")


def _two_tile_starts(frames: int, tile_frames: int, random_offsets: bool, rng: np.random.Generator) -> tuple[int, int]:
    """Two different tile starts within one clip, in random order."""
    fixed = tile_starts(frames, tile_frames)
    if not random_offsets and len(fixed) >= 2:
        first, second = rng.choice(len(fixed), size=2, replace=False)
        return fixed[int(first)], fixed[int(second)]
    last = frames - tile_frames
    if last < tile_frames:  # shorter than two tiles: any other start (the tiles overlap)
        first = int(rng.integers(0, last + 1))
        second = int(rng.integers(0, last))
        return first, second + (second >= first)
    # Two non-overlapping tiles: draw the earlier start among those leaving room for a later tile,
    # the later start after it, then randomise which one is the anchor.
    earlier = int(rng.integers(0, last - tile_frames + 1))
    later = int(rng.integers(earlier + tile_frames, last + 1))
    return (earlier, later) if rng.random() < 0.5 else (later, earlier)


def _one_tile_start(frames: int, tile_frames: int, random_offsets: bool, rng: np.random.Generator) -> int:
    """One tile start within a clip."""
    if random_offsets:
        return int(rng.integers(0, frames - tile_frames + 1))
    fixed = tile_starts(frames, tile_frames)
    return fixed[int(rng.integers(0, len(fixed)))]


class TripletSampler:
    """Draws the triplet of an anchor clip for a given seed and epoch (pure: same inputs, same triplet)."""

    def __init__(self, clips: Sequence[Clip], tile_frames: int, config: TripletConfig = TripletConfig()) -> None:
        check_clips(clips, tile_frames)
        self.clips = list(clips)
        self.tile_frames = tile_frames
        self.config = config
        self._groups: dict[str, list[int]] = {}
        self._domains: dict[str, list[int]] = {}
        for index, clip in enumerate(self.clips):
            self._groups.setdefault(clip.group, []).append(index)
            if clip.domain:
                self._domains.setdefault(clip.domain, []).append(index)

    def __len__(self) -> int:
        return len(self.clips)

    def _opposite_clip(self, group: str, domain: str, rng: np.random.Generator) -> int:
        """A random clip of another group (rejection sampling, exact fallback when one group dominates);
        with probability ``same_domain_opposites`` one from the anchor's domain when it has another group."""
        if self.config.same_domain_opposites > 0 and domain and rng.random() < self.config.same_domain_opposites:
            others = [i for i in self._domains[domain] if self.clips[i].group != group]
            if others:
                return others[int(rng.integers(0, len(others)))]
        for _ in range(32):
            candidate = int(rng.integers(0, len(self.clips)))
            if self.clips[candidate].group != group:
                return candidate
        others = [i for i, clip in enumerate(self.clips) if clip.group != group]
        return others[int(rng.integers(0, len(others)))]

    def triplet(self, anchor_clip: int, seed: int, epoch: int = 0) -> Triplet:
        """The triplet anchored on clip ``anchor_clip`` in epoch ``epoch`` under ``seed``."""
        rng = np.random.default_rng([seed, epoch, anchor_clip])
        clip = self.clips[anchor_clip]
        anchor_start, neighbour_start = _two_tile_starts(
            clip.frames, self.tile_frames, self.config.random_offsets, rng
        )
        neighbour_clip = anchor_clip
        if self.config.neighbour == "group":
            mates = [i for i in self._groups[clip.group] if i != anchor_clip]
            if mates:
                neighbour_clip = mates[int(rng.integers(0, len(mates)))]
                mate = self.clips[neighbour_clip]
                neighbour_start = _one_tile_start(mate.frames, self.tile_frames, self.config.random_offsets, rng)
        opposite_clip = self._opposite_clip(clip.group, clip.domain, rng)
        other = self.clips[opposite_clip]
        opposite_start = _one_tile_start(other.frames, self.tile_frames, self.config.random_offsets, rng)
        return Triplet(
            Tile(anchor_clip, anchor_start), Tile(neighbour_clip, neighbour_start), Tile(opposite_clip, opposite_start)
        )

    def gains_db(self, anchor_clip: int, seed: int, epoch: int = 0) -> np.ndarray:
        """Level offsets in dB of the (anchor, neighbour, opposite) tiles of that triplet; zeros when
        ``gain_db`` is 0. Independent per tile, so loudness alone cannot tell a neighbour from an opposite."""
        if self.config.gain_db == 0:
            return np.zeros(3)
        rng = np.random.default_rng([seed, epoch, anchor_clip, 1])
        return rng.uniform(-self.config.gain_db, self.config.gain_db, size=3)

    def epoch(self, seed: int, epoch: int = 0) -> list[Triplet]:
        """One triplet per clip (every clip is an anchor once per epoch)."""
        return [self.triplet(i, seed, epoch) for i in range(len(self.clips))]


DOMAIN_BLOCK = 4  # groups a "pk" batch takes from one recording domain at a time


def group_weights(clips: Sequence[Clip], group_names: Sequence[str], config: TripletConfig,
                  shared_packages: frozenset[str] = frozenset()) -> np.ndarray:
    """Probability of drawing each of ``group_names`` first into a batch: equal per group, or with
    ``balance = "package"`` equal per source package (a group's package is its first clip's first
    package; a group without one is a package of its own), times ``shared_package_weight`` for groups
    whose clips have any package in ``shared_packages``."""
    first = {}
    shared = {}
    for clip in clips:
        first.setdefault(clip.group, clip.packages[0] if clip.packages else "")
        shared[clip.group] = shared.get(clip.group, False) or bool(shared_packages.intersection(clip.packages))
    weights = np.ones(len(group_names))
    if config.balance == "package":
        keys = [first[name] or f"group:{name}" for name in group_names]
        sizes: dict[str, int] = {}
        for key in keys:
            sizes[key] = sizes.get(key, 0) + 1
        weights = np.array([1.0 / sizes[key] for key in keys])
    weights *= np.array([config.shared_package_weight if shared[name] else 1.0 for name in group_names])
    return weights / weights.sum()


class ClipBatchSampler:
    """P clips x K tiles per batch (Hermans et al. 2017): P distinct groups, K tiles of each; tiles of one
    group share an id (they are each other's neighbours), every other tile is an opposite. With
    ``same_domain_opposites = p`` each block of up to 4 groups comes, with probability p, from one
    recording domain, so every tile has opposites from its own room/background. Groups are drawn by
    `group_weights` (``shared_packages``: the labelled sets' source packages); with ``same_moment`` a
    group's K tiles are K/2 moments cut twice each. Pure in ``(seed, step)``."""

    def __init__(self, clips: Sequence[Clip], tile_frames: int, config: TripletConfig,
                 shared_packages: frozenset[str] = frozenset()) -> None:
        check_clips(clips, tile_frames)
        self.clips = list(clips)
        self.tile_frames = tile_frames
        self.config = config
        self._groups: dict[str, list[int]] = {}
        for index, clip in enumerate(self.clips):
            self._groups.setdefault(clip.group, []).append(index)
        self._group_names = sorted(self._groups)
        weights = group_weights(self.clips, self._group_names, config, shared_packages)
        # Equal weights keep the plain uniform draw (and so every batch of runs made before weights existed).
        self._weights = None if np.allclose(weights, weights[0]) else weights
        self._domain_groups: dict[str, list[str]] = {}
        for name in self._group_names:
            domain = self.clips[self._groups[name][0]].domain
            if domain:
                self._domain_groups.setdefault(domain, []).append(name)
        if len(self._group_names) < config.clips_per_batch:
            raise ValueError(f"a batch of {config.clips_per_batch} clips needs as many groups; the data has "
                             f"{len(self._group_names)}: lower clips_per_batch")

    def batch_groups(self, rng: np.random.Generator) -> list[str]:
        """The P distinct groups of one batch."""
        wanted = self.config.clips_per_batch
        chosen: list[str] = []
        taken: set[str] = set()
        while len(chosen) < wanted:
            if self._weights is None:
                name = self._group_names[int(rng.integers(len(self._group_names)))]
            else:
                name = self._group_names[int(rng.choice(len(self._group_names), p=self._weights))]
            if name in taken:
                continue
            block = [name]
            domain = self.clips[self._groups[name][0]].domain
            if domain and rng.random() < self.config.same_domain_opposites:
                mates = [g for g in self._domain_groups[domain] if g not in taken and g != name]
                count = min(len(mates), DOMAIN_BLOCK - 1, wanted - len(chosen) - 1)
                block += [mates[int(i)] for i in rng.choice(len(mates), size=count, replace=False)] if count > 0 else []
            chosen += block
            taken.update(block)
        return chosen

    def batch(self, seed: int, step: int) -> tuple[list[Tile], list[int]]:
        """Tiles of batch ``step`` (group after group, K each) and their ids (the group's place, 0..P-1)."""
        rng = np.random.default_rng([seed, step, 11])
        tiles: list[Tile] = []
        ids: list[int] = []
        k = self.config.tiles_per_clip
        moments = k // 2 if self.config.same_moment else k
        for place, name in enumerate(self.batch_groups(rng)):
            members = self._groups[name]
            if self.config.neighbour == "group":
                sources = [members[int(i)] for i in rng.integers(0, len(members), size=moments)]
            else:
                sources = [members[int(rng.integers(len(members)))]] * moments
            for clip in sources:
                tile = Tile(clip, _one_tile_start(self.clips[clip].frames, self.tile_frames, self.config.random_offsets, rng))
                copies = 2 if self.config.same_moment else 1
                tiles += [tile] * copies
                ids += [place] * copies
        return tiles, ids


def held_out_groups(groups: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split clip indices into (train, validation) by whole groups, about ``fraction`` of clips held out."""
    if not 0 <= fraction < 1:
        raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
    unique = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(unique))
    target = int(round(fraction * len(groups)))
    held: set[str] = set()
    count = 0
    by_group: dict[str, int] = {}
    for group in groups:
        by_group[group] = by_group.get(group, 0) + 1
    for position in order:
        if count >= target:
            break
        group = unique[int(position)]
        held.add(group)
        count += by_group[group]
    train = [i for i, g in enumerate(groups) if g not in held]
    validation = [i for i, g in enumerate(groups) if g in held]
    return train, validation
