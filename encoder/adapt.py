"""`roomtone adapt`: continue a model's self-supervised training on a home's own unlabelled recordings, with
the same recipe (`encoder.train.train`, the model's stored training config), a time budget and a
checkpoint to resume from, then keep its activity head valid.

The head stays valid by constraining the adaptation, not by refitting (a model file stores no labelled
data): a short run at a tenth of the learning rate keeps the head's input space where it was, and the head
is kept as it is (``head="keep"``, the default). What moves most in such a run are the batch-norm
statistics, which now describe the home's audio. The alternative, ``head="realign"``, fits a ridge
least-squares affine map from the adapted embeddings to the original ones on the home's windows and folds
it into the head (`aligned_head`); measured, it undoes the adaptation on the home (the map reproduces the
original embeddings of exactly that audio) and hurts clean audio, so it is not the default
(docs/sounds.md). Custom sounds need nothing here: the sound library re-embeds them from their kept audio
when the daemon loads a model with another sha256 (service/sound_library.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from encoder.head import ActivityHead

#: Ridge strength of the alignment, relative to the mean squared norm of the adapted embeddings.
ALIGN_RIDGE = 1e-2
HEAD_MODES = ("keep", "realign")
#: Learning rate of adaptation: a tenth of the bundled recipe's, so a few minutes nudge rather than retrain.
ADAPT_LEARNING_RATE = 1e-4


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation run."""

    model: Path  # the model to adapt (its training config is the recipe)
    audio: tuple[str, ...]  # folders / files / datasets of the home's unlabelled audio (encoder.datasets readers)
    out: Path  # the adapted model file
    minutes: float = 10.0  # training budget (wall clock, as `roomtone train --max-minutes`)
    learning_rate: float = ADAPT_LEARNING_RATE
    seed: int = 0
    resume: bool = False  # continue from ``<out>.ckpt``
    progress: bool = True
    head: str = "keep"  # "keep" the head as it is, or "realign" it to the adapted space (see the module docstring)

    def __post_init__(self) -> None:
        if self.head not in HEAD_MODES:
            raise ValueError(f"AdaptConfig.head must be one of {HEAD_MODES}, got {self.head!r}")


def adaptation_train_config(bundle, config: AdaptConfig):
    """The TrainConfig of an adaptation run: the model's own recipe, started from its weights, on the home's audio."""
    from encoder.train import TrainConfig

    stored = (bundle.metadata.get("training") or {}).get("config")
    recipe = TrainConfig.from_dict(stored, f"{config.model} training config") if stored else TrainConfig()
    return dataclasses.replace(
        recipe, data=tuple(str(a) for a in config.audio), out=str(config.out), checkpoint="", steps=10**9,
        max_minutes=config.minutes, budget_clock="wall", learning_rate=config.learning_rate, lr_schedule="constant",
        warmup_steps=0, seed=config.seed, init_model=str(config.model), encoder=bundle.encoder_config,
        features=bundle.feature_config, provisional=False,
        note=f"adapted from {Path(config.model).name} on {', '.join(str(a) for a in config.audio)}")


def alignment(new: np.ndarray, old: np.ndarray, ridge: float = ALIGN_RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """``(A [D_new, D_old], c [D_old])`` with ``old ~ new @ A + c`` (ridge least squares on paired windows)."""
    new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
    if new.shape[0] != old.shape[0] or new.shape[0] < 2:
        raise ValueError(f"alignment needs the same >= 2 windows under both models, got {new.shape[0]} and {old.shape[0]}")
    mu_new, mu_old = new.mean(axis=0), old.mean(axis=0)
    x, y = new - mu_new, old - mu_old
    strength = ridge * float(np.mean(np.sum(x * x, axis=1)))
    a = np.linalg.solve(x.T @ x + strength * np.eye(x.shape[1]), x.T @ y)
    return a, mu_old - mu_new @ a


def aligned_head(head: ActivityHead, a: np.ndarray, c: np.ndarray) -> ActivityHead:
    """The head on the adapted space: ``head(new @ a + c)`` written as one standardise-free linear layer."""
    weights = head.coef / head.scale  # [K, D_old] on raw old embeddings
    coef = weights @ a.T  # [K, D_new]
    intercept = head.intercept + (c - head.mean) @ weights.T
    dim = a.shape[0]
    return ActivityHead(head.class_names, np.zeros(dim), np.ones(dim), coef, intercept)


@dataclass(frozen=True)
class AdaptResult:
    """What an adaptation did: the model file written, steps run, and how well the alignment fits."""

    out: Path
    steps: int
    interrupted: bool
    align_windows: int
    align_r2: float  # share of the original embeddings' variance the map explains on the home's windows


def home_windows(audio: Sequence[str], sample_rate: int, limit: int = 4000, seed: int = 0) -> list[np.ndarray]:
    """Up to ``limit`` mono 10 s windows (hop 5 s) of the home's audio, drawn evenly, for the alignment."""
    from encoder.audio import load_audio
    from encoder.training_data import training_clips  # the same readers training uses (folders, files, datasets)
    from encoder.windows import window_spans

    clips, _ = training_clips(tuple(str(a) for a in audio))
    windows = []
    for clip in clips:
        samples = load_audio(clip.path, sample_rate, mono=True)[0][0].numpy()
        windows += [samples[s.start:s.end] for s in window_spans(samples.shape[0], sample_rate, 10.0, 5.0)]
    if len(windows) > limit:
        keep = np.random.default_rng(seed).choice(len(windows), size=limit, replace=False)
        windows = [windows[i] for i in sorted(keep)]
    return windows


def adapt(config: AdaptConfig) -> AdaptResult:
    """Run the adaptation and write the adapted model (with the re-aligned head) to ``config.out``."""
    import torch

    from encoder.embedding import embed_windows
    from encoder.model_file import load_model, save_model, with_metadata
    from encoder.train import train

    original = load_model(config.model)
    result = train(adaptation_train_config(original, config), resume=config.resume, progress=config.progress)
    adapted = result.bundle
    if result.interrupted:
        return AdaptResult(Path(config.out), result.state.step, True, 0, float("nan"))
    rate = original.feature_config.sample_rate
    windows = home_windows(config.audio, rate, seed=config.seed)
    by_length: dict[int, list[int]] = {}
    for i, w in enumerate(windows):
        by_length.setdefault(len(w), []).append(i)
    old = np.zeros((len(windows), original.embedding_dim), np.float32)
    new = np.zeros_like(old)
    for indices in by_length.values():
        batch = torch.from_numpy(np.stack([windows[i] for i in indices]).astype(np.float32))
        old[indices], new[indices] = embed_windows(original, batch), embed_windows(adapted, batch)
    a, c = alignment(new, old)
    residual = old - (new @ a + c)
    r2 = 1.0 - float(np.sum(residual ** 2) / max(np.sum((old - old.mean(axis=0)) ** 2), 1e-12))
    head = original.head
    if original.head and config.head == "realign":
        head = aligned_head(ActivityHead.from_dict(original.head), a, c).to_dict()
    metadata = {**original.metadata, **adapted.metadata,
                "adapted": {"from_model": str(config.model), "audio": [str(x) for x in config.audio],
                            "minutes": config.minutes, "steps": result.state.step,
                            "head": "re-aligned" if config.head == "realign" else "kept",
                            "align_windows": len(windows), "align_r2": round(r2, 4)}}
    if original.head:
        metadata["head"] = original.metadata.get("head")
    save_model(with_metadata(dataclasses.replace(adapted, head=head), **metadata), config.out)
    return AdaptResult(Path(config.out), result.state.step, False, len(windows), r2)
