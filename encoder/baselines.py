"""Baseline features the evaluation compares the embedding with, on identical segments and folds.

- MFCC-40 mean+std: a DCT-II (orthonormal) of the one log-Mel definition (`log_mel`), 40
  coefficients, mean and standard deviation over the frames of each window -> 80 values.
- The same CNN with random weights: the bundle's architecture re-initialised from a seed.
- aisfx (optional, PyPI, MIT, weights inside the package): its CNN on a 96-band log-Mel at 44.1 kHz
  computed by `log_mel` with an aisfx-shaped config and its own compression/normalisation; 512-d block
  embeddings averaged over each window. Used only when ``import aisfx`` works (install it with
  ``pip install --no-deps aisfx==0.1.2``: its declared pins clash with ours).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torchaudio.functional as AF

from encoder.audio import load_audio
from encoder.features import LogMelConfig, _mel_transform, log_mel
from encoder.windows import WINDOW_SECONDS, WindowSpec, window_spans

N_MFCC = 40

ClipFeatures = tuple[np.ndarray, np.ndarray]  # (offsets_s [windows], features [windows, channels, D])
#: How a method reads a clip: (path, sample rate) -> ([channels, samples], rate). `load_audio` by default;
#: evaluation passes the P2 degraded clips through the same argument.
AudioLoader = Callable[[Path, int], tuple[torch.Tensor, int]]


class BaselineUnavailable(RuntimeError):
    """A baseline that cannot run here (package missing or broken); the message says why."""


def mfcc_stats(waveform: torch.Tensor, config: LogMelConfig = LogMelConfig(), n_mfcc: int = N_MFCC) -> np.ndarray:
    """MFCC mean+std over frames for each row of ``[rows, samples]`` -> ``[rows, 2 * n_mfcc]``."""
    mel = log_mel(waveform, config)
    if mel.dim() == 2:
        mel = mel[None]
    dct = AF.create_dct(n_mfcc, config.n_mels, norm="ortho").to(mel.device)
    mfcc = torch.einsum("rmt,mk->rkt", mel, dct)
    return torch.cat([mfcc.mean(dim=2), mfcc.std(dim=2)], dim=1).cpu().numpy().astype(np.float32)


def windowed_features(
    paths: Sequence[str | Path],
    feature_fn: Callable[[torch.Tensor], np.ndarray],
    sample_rate: int,
    window_s: float = WINDOW_SECONDS,
    progress: bool = True,
    desc: str = "features",
    load: AudioLoader = load_audio,
) -> list[ClipFeatures]:
    """Apply ``feature_fn`` ([channels, samples] -> [channels, D]) to every window of every file."""
    from tqdm import tqdm

    out: list[ClipFeatures] = []
    for path in tqdm(paths, desc=desc, unit="file", disable=not progress):
        waveform, rate = load(Path(path), sample_rate)
        spans = window_spans(waveform.shape[1], rate, WindowSpec(window_s))
        feats = [feature_fn(waveform[:, s.start:s.end]) for s in spans]
        dim = feats[0].shape[-1] if feats else 0
        out.append((
            np.asarray([s.offset_s(rate) for s in spans], dtype=np.float64),
            np.stack(feats) if feats else np.zeros((0, waveform.shape[0], dim), np.float32),
        ))
    return out


def mfcc_features(paths: Sequence[str | Path], config: LogMelConfig = LogMelConfig(), progress: bool = True,
                  load: AudioLoader = load_audio) -> list[ClipFeatures]:
    """MFCC-40 mean+std per window and channel of every file."""
    return windowed_features(paths, lambda w: mfcc_stats(w, config), config.sample_rate, progress=progress,
                             desc="MFCC", load=load)


def random_weights_bundle(bundle, seed: int = 0):
    """A copy of ``bundle`` whose encoder has the same architecture with freshly initialised weights."""
    from encoder.model import Encoder

    torch.manual_seed(seed)
    encoder = Encoder(bundle.encoder_config).to(next(bundle.encoder.parameters()).device).eval()
    return dataclasses.replace(bundle, encoder=encoder, head=None)


# aisfx front-end: 44.1 kHz, 2048-sample frames, 1024 hop, 96 HTK Mel bands up to 22.05 kHz.
AISFX_MEL = LogMelConfig(
    sample_rate=44100, n_mels=96, n_fft=2048, win_ms=2048 / 44.1, hop_ms=1024 / 44.1, fmin=0.0, fmax=22050.0,
    floor_db=-200.0,
)
AISFX_BLOCK_FRAMES, AISFX_HOP_FRAMES, AISFX_SPEC_MAX = 100, 50, 9.457798957824707


def aisfx_embedder(device: str = "cpu") -> Callable[[torch.Tensor], np.ndarray]:
    """A function [channels, samples at 44.1 kHz] -> [channels, 512] running aisfx's pretrained CNN."""
    try:
        import aisfx.inference as inference
    except Exception as exc:  # noqa: BLE001 - any import failure means the baseline is unavailable
        raise BaselineUnavailable(f"aisfx is not importable ({type(exc).__name__}: {exc}); "
                                  "install it with `pip install --no-deps aisfx==0.1.2`") from None
    try:
        weights, datasets = torch.load(inference.get_path_modelWeights(), map_location=device, weights_only=False)
        model = inference.load_bestModel(weights, datasets, device)
    except Exception as exc:  # noqa: BLE001
        raise BaselineUnavailable(f"aisfx weights do not load ({type(exc).__name__}: {exc})") from None
    filters = _mel_transform(AISFX_MEL, device).mel_scale.fb  # [freqs, mels], peak-1 triangles
    band_area = filters.sum(dim=0).clamp(min=1e-12)

    def embed(waveform: torch.Tensor) -> np.ndarray:
        """[channels, samples] -> [channels, 512], block embeddings averaged."""
        # Essentia 'unit_sum' bands and log10(1 + 1e4 x), min-max scaled as in the ISMIR paper.
        power = 10.0 ** (log_mel(waveform.to(device), AISFX_MEL) / 10.0) / band_area[:, None]
        spec = torch.log10(1.0 + 1e4 * power) / AISFX_SPEC_MAX  # [channels, mels, frames]
        spec = spec.transpose(1, 2)  # aisfx takes (time, mel)
        frames = spec.shape[1]
        if frames < AISFX_BLOCK_FRAMES:
            spec = torch.nn.functional.pad(spec, (0, 0, 0, AISFX_BLOCK_FRAMES - frames))
        blocks = spec.unfold(1, AISFX_BLOCK_FRAMES, AISFX_HOP_FRAMES)  # [ch, blocks, mels, block]
        with torch.no_grad():
            flat = blocks.permute(0, 1, 3, 2).reshape(-1, AISFX_BLOCK_FRAMES, spec.shape[2])
            emb = model.get_embedding(flat.float()).reshape(spec.shape[0], blocks.shape[1], -1)
        return emb.mean(dim=1).cpu().numpy().astype(np.float32)

    return embed


def aisfx_features(paths: Sequence[str | Path], progress: bool = True, load: AudioLoader = load_audio) -> list[ClipFeatures]:
    """aisfx 512-d embeddings per window and channel of every file; BaselineUnavailable if it cannot run."""
    embed = aisfx_embedder()
    return windowed_features(paths, embed, AISFX_MEL.sample_rate, progress=progress, desc="aisfx", load=load)
