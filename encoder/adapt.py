"""`roomtone adapt`: continue a model's self-supervised training on a home's own unlabelled recordings, with
the same recipe (`encoder.train.train`, the model's stored training config), a time budget and a
checkpoint to resume from, constrained against forgetting what it knew, then keep its activity head valid.

The head stays valid by constraining the adaptation, not by refitting (a model file stores no labelled
data), and is kept as it is (``head="keep"``, the default). The constraints against forgetting
(bench/adapt.py measures them, docs/sounds.md): the batch-norm statistics stay frozen while training
(``norm_statistics="frozen"``; re-learnt from the home's batches, they cost round 2 eleven points on clean
audio), an unlabelled corpus can be mixed into the home's batches (``corpus``, ``corpus_fraction``), an
L2 pull toward the starting weights (``anchor_weight``) and a small learning rate. After training the
statistics can be moved part of the way toward the home's (``statistics_share``: AdaBN, blended; off by
default, since on the P1 encoder it cost clean points without a gain on the home). The alternative head,
``head="realign"``, fits a ridge least-squares affine map from the adapted embeddings to the original ones
on the home's windows and folds it into the head (`aligned_head`); measured, it undoes the adaptation on
the home and hurts clean audio, so it is not the default. Custom sounds need nothing here: the sound
library re-embeds them from their kept audio when the daemon loads a model with another sha256
(service/analysis/sound_library.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from encoder.head import ActivityHead
from encoder.vocabulary import NORM_FROZEN

#: Ridge strength of the alignment, relative to the mean squared norm of the adapted embeddings.
ALIGN_RIDGE = 1e-2
HEAD_MODES = ("keep", "realign")
#: Learning rate of adaptation: a hundredth of the bundled recipe's. Measured on the round-3 model (bench/adapt.py,
#: docs/sounds.md), 1e-4 cost 6 points of clean audio on unheard packages for no gain on the home, 1e-5 neither;
#: on the round-4 model both lost 5-9 points, 1e-5 the fewer.
ADAPT_LEARNING_RATE = 1e-5
#: Share of the training clips drawn from the corpus when one is given.
CORPUS_FRACTION = 0.5
#: Batch-norm statistics during adaptation (encoder.train NORM_STATISTICS).
NORM_STATISTICS = NORM_FROZEN
#: L2-SP strength (encoder.train.anchor_penalty).
ANCHOR_WEIGHT = 0.0
#: After training, batch-norm statistics move this share of the way to the home's (`blended_statistics`).
STATISTICS_SHARE = 0.0
#: Home windows the home's statistics are estimated from (and the kept head's alignment diagnostic).
STATISTICS_WINDOWS = 256


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation run."""

    model: Path  # the model to adapt (its training config is the recipe)
    audio: tuple[str, ...]  # folders / files / datasets of the home's unlabelled audio (encoder.datasets readers)
    out: Path  # the adapted model file
    minutes: float = 10.0  # training budget (as `roomtone train --max-minutes`)
    budget_clock: str = "wall"  # the budget's clock: "wall", or "cpu" (this process's CPU time: fair on a busy machine)
    learning_rate: float = ADAPT_LEARNING_RATE
    seed: int = 0
    resume: bool = False  # continue from ``<out>.ckpt``
    progress: bool = True
    head: str = "keep"  # "keep" the head as it is, or "realign" it to the adapted space (see the module docstring)
    corpus: tuple[str, ...] = ()  # unlabelled corpus folders mixed into the home's batches; () -> the home alone
    corpus_fraction: float = CORPUS_FRACTION  # share of the training clips drawn from the corpus
    norm_statistics: str = NORM_STATISTICS  # "frozen" batch-norm statistics, or "update" them from the batches
    anchor_weight: float = ANCHOR_WEIGHT  # L2 pull toward the model's own weights (0 -> none)
    statistics_share: float = STATISTICS_SHARE  # after training, how far batch-norm statistics move to the home's (0..1)

    def __post_init__(self) -> None:
        if self.head not in HEAD_MODES:
            raise ValueError(f"AdaptConfig.head must be one of {HEAD_MODES}, got {self.head!r}")
        if not 0 <= self.statistics_share <= 1:
            raise ValueError(f"AdaptConfig.statistics_share must be in [0, 1], got {self.statistics_share}")
        object.__setattr__(self, "corpus", tuple(str(c) for c in self.corpus))
        if self.corpus and not 0 < self.corpus_fraction < 1:
            raise ValueError(f"AdaptConfig.corpus_fraction must be in (0, 1), got {self.corpus_fraction}")
        for folder in self.corpus:
            if not Path(folder).exists():
                raise ValueError(f"{folder}: corpus folder not found (the unlabelled audio mixed into the home's batches)")


def adaptation_train_config(bundle, config: AdaptConfig):
    """The TrainConfig of an adaptation run: the model's own recipe, started from its weights, on the home's audio."""
    from encoder.train import TrainConfig

    stored = (bundle.metadata.get("training") or {}).get("config")
    recipe = TrainConfig.from_dict(stored, f"{config.model} training config") if stored else TrainConfig()
    return recipe.replaced(
        data=tuple(str(a) for a in config.audio), out=str(config.out), checkpoint="", steps=10**9,
        max_minutes=config.minutes, budget_clock=config.budget_clock, learning_rate=config.learning_rate, lr_schedule="constant",
        warmup_steps=0, seed=config.seed, init_model=str(config.model), encoder=bundle.encoder_config,
        features=bundle.feature_config, provisional=False, norm_statistics=config.norm_statistics,
        anchor_weight=config.anchor_weight, mix_data=config.corpus,
        mix_fraction=config.corpus_fraction if config.corpus else 0.0,
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
    from encoder.windows import WindowSpec, window_spans

    clips, _ = training_clips(tuple(str(a) for a in audio))
    windows = []
    for clip in clips:
        samples = load_audio(clip.path, sample_rate, mono=True)[0][0].numpy()
        windows += [samples[s.start:s.end] for s in window_spans(samples.shape[0], sample_rate, WindowSpec(hop_s=5.0))]
    if len(windows) > limit:
        keep = np.random.default_rng(seed).choice(len(windows), size=limit, replace=False)
        windows = [windows[i] for i in sorted(keep)]
    return windows


def home_statistics(bundle, windows: Sequence[np.ndarray], batch_size: int = 16) -> dict[str, "torch.Tensor"]:
    """The encoder's batch-norm running means and variances re-estimated over ``windows`` of the home's audio
    (each layer's cumulative average over every batch, as AdaBN does), by state-dict name."""
    import copy

    import torch

    from encoder.embedder import length_groups
    from encoder.features import log_mel

    encoder = copy.deepcopy(bundle.encoder).eval()
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average instead of an exponential one
        module.train()
    with torch.no_grad():
        for group in length_groups(windows):
            for start in range(0, len(group), batch_size):
                batch = torch.from_numpy(np.stack([windows[i] for i in group[start:start + batch_size]]).astype(np.float32))
                encoder(log_mel(batch, bundle.feature_config).unsqueeze(1))
    return {k: v for k, v in encoder.state_dict().items() if k.endswith(("running_mean", "running_var"))}


def statistics_sample(windows: Sequence[np.ndarray], seed: int) -> list[np.ndarray]:
    """The (up to `STATISTICS_WINDOWS`) home windows the home's statistics are estimated from."""
    return [windows[i] for i in np.random.default_rng(seed).permutation(len(windows))[:STATISTICS_WINDOWS]]


def blended_statistics(bundle, home: dict[str, "torch.Tensor"], share: float):
    """``bundle`` with every batch-norm statistic ``(1 - share) * its own + share * home``: the encoder partly
    adopts the home's levels and spectra (share 1 is AdaBN, which forgets clean audio; docs/sounds.md)."""
    import copy

    state = bundle.encoder.state_dict()
    encoder = copy.deepcopy(bundle.encoder)
    encoder.load_state_dict({k: (1.0 - share) * v + share * home[k] if k in home else v for k, v in state.items()})
    return dataclasses.replace(bundle, encoder=encoder.eval())


def adapt(config: AdaptConfig) -> AdaptResult:
    """Run the adaptation and write the adapted model (with the re-aligned head) to ``config.out``."""
    import torch

    from encoder.recording_embeddings import embed_windows
    from encoder.model_file import load_model, save_model, with_metadata
    from encoder.train import train

    original = load_model(config.model)
    result = train(adaptation_train_config(original, config), resume=config.resume, progress=config.progress)
    adapted = result.bundle
    if result.interrupted:
        return AdaptResult(Path(config.out), result.state.step, True, 0, float("nan"))
    rate = original.feature_config.sample_rate
    windows = home_windows(config.audio, rate, seed=config.seed)
    sample = statistics_sample(windows, config.seed)
    if config.statistics_share > 0:
        adapted = blended_statistics(adapted, home_statistics(adapted, sample), config.statistics_share)
    if config.head != "realign":  # the map's fit is only a diagnostic then: a sample is enough
        windows = sample
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
                            "minutes": config.minutes, "budget_clock": config.budget_clock, "steps": result.state.step,
                            "head": "re-aligned" if config.head == "realign" else "kept",
                            "norm_statistics": config.norm_statistics, "statistics_share": config.statistics_share,
                            "corpus": list(config.corpus), "corpus_fraction": config.corpus_fraction if config.corpus else 0.0,
                            "anchor_weight": config.anchor_weight, "learning_rate": config.learning_rate,
                            "align_windows": len(windows), "align_r2": round(r2, 4)}}
    if original.head:
        metadata["head"] = original.metadata.get("head")
    save_model(with_metadata(dataclasses.replace(adapted, head=head), **metadata), config.out)
    return AdaptResult(Path(config.out), result.state.step, False, len(windows), r2)
