"""Matching a sound's log-Mel patch (time x Mel bands) against every place of a window: normalised 2-D
cross-correlation, for custom sounds that are the same recording each time (this doorbell, this beep).

A sound's patch is the loudest `MAX_PATCH_S` (or less: its frames within `PATCH_WITHIN_DB` of the loudest) of
an example, at 20 ms frames and 64 Mel bands (`FRAME_POOL`, `BAND_POOL`), with a weight per band: how far
the patch rises above the example's background in that band (`WEIGHT_DB` for full weight), so bands where
the sound is not count little. A window's score is the best Pearson correlation, band-weighted, of the patch
with any equal run of the window's frames (each side less its own mean: the level drops out; a
microphone's response mostly does, as a smooth tilt over the bands). Measured against the span matching
of encoder/few_shot.py by bench/specific_sounds.py (docs/sounds.md): short patches at fine resolution
find the most (20 ms x 64 bands > 40 ms x 32; 0.5 s > 1 s with margins; band-centred runs, which take out
the spectral shape, far less).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: 10 ms log-Mel frames averaged per patch frame (20 ms) and Mel bands per patch band (128 -> 64).
FRAME_POOL = 2
BAND_POOL = 2
#: Longest patch, in seconds of the sound: longer sounds match on their loudest part.
MAX_PATCH_S = 0.5
#: Frames within this many dB of an example's loudest frame count towards the sound's length.
PATCH_WITHIN_DB = 10.0
#: A band weighs fully when the patch rises this many dB above the example's background there, and at
#: least `MIN_WEIGHT`.
WEIGHT_DB = 10.0
MIN_WEIGHT = 0.05
#: A band's background: this percentile of its level over the example file.
BACKGROUND_PERCENTILE = 20.0


def pooled_frames(log_mel: np.ndarray, frame_pool: int = FRAME_POOL, band_pool: int = BAND_POOL) -> np.ndarray:
    """A log-Mel ``[..., mels, frames]`` (dB) -> patch frames ``[..., frames // frame_pool, mels // band_pool]``
    (means of the dB values), float32."""
    x = np.asarray(log_mel, dtype=np.float32)
    mels, frames = x.shape[-2] // band_pool * band_pool, max(x.shape[-1] // frame_pool, 1) * frame_pool
    if x.shape[-1] < frames:
        x = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, frames - x.shape[-1])], mode="edge")
    x = x[..., :mels, :frames]
    x = x.reshape(*x.shape[:-2], mels // band_pool, band_pool, frames // frame_pool, frame_pool).mean(axis=(-3, -1))
    return np.ascontiguousarray(np.swapaxes(x, -1, -2))


def frame_levels(frames: np.ndarray) -> np.ndarray:
    """Level per frame of patch frames ``[T, B]`` in dB (power summed over the bands)."""
    x = np.asarray(frames, dtype=np.float64)
    top = x.max(axis=1, keepdims=True)
    return top[:, 0] + 10.0 * np.log10(np.sum(10.0 ** ((x - top) / 10.0), axis=1))


def patch_length(frames: np.ndarray, frame_s: float, within_db: float = PATCH_WITHIN_DB,
                 longest_s: float = MAX_PATCH_S) -> int:
    """A sound's length in patch frames: an example's frames within ``within_db`` of its loudest, at least one,
    at most ``longest_s``."""
    levels = frame_levels(frames)
    return int(np.clip(np.sum(levels >= levels.max() - within_db), 1, max(1, round(longest_s / frame_s))))


def example_patch(frames: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray, int]:
    """An example's patch ``[length, B]`` (its loudest run of ``length`` frames; edge frames repeated where the
    file is shorter), its band weights ``[B]`` and the run's first frame."""
    x = np.asarray(frames, dtype=np.float32)
    length = max(1, int(length))
    if len(x) < length:
        x = np.pad(x, ((0, length - len(x)), (0, 0)), mode="edge")
    power = np.convolve(10.0 ** (frame_levels(x) / 10.0), np.ones(length), mode="valid")
    start = int(np.argmax(power))
    patch = x[start:start + length]
    rise = patch.mean(axis=0) - np.percentile(x, BACKGROUND_PERCENTILE, axis=0)
    return patch, np.clip(rise / WEIGHT_DB, MIN_WEIGHT, 1.0).astype(np.float32), start


def _templates(patches: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted, centred, unit templates ``[k, L, B]`` and the square roots of the weights ``[k, B]``."""
    root = np.sqrt(np.asarray(weights, dtype=np.float64))
    x = np.asarray(patches, dtype=np.float64) * root[:, None, :]
    x = x - x.mean(axis=(1, 2), keepdims=True)
    norms = np.sqrt(np.sum(np.square(x), axis=(1, 2), keepdims=True))
    return x / np.where(norms > 0, norms, 1.0) * root[:, None, :], root


@dataclass(frozen=True)
class PreparedFrames:
    """Windows' frames ``[n, T, B]`` made ready for `place_scores` once, for every sound scored on them: their
    spectra over time (each band's FFT of ``size`` points) and running sums of the values and their squares."""

    spectra: np.ndarray  # complex [n, B, size // 2 + 1]
    sums: np.ndarray  # [n, T + 1, B]
    squares: np.ndarray  # [n, T + 1, B]
    size: int

    @classmethod
    def of(cls, frames: np.ndarray, longest: int = 32) -> "PreparedFrames":
        """``frames [n, T, B]`` for patches of up to ``longest`` frames (shorter windows: edge frames repeated)."""
        x = np.asarray(frames, dtype=np.float32)
        if x.shape[1] < longest:
            x = np.pad(x, ((0, 0), (0, longest - x.shape[1]), (0, 0)), mode="edge")
        size = 1 << int(np.ceil(np.log2(x.shape[1] + longest - 1)))
        x64 = x.astype(np.float64)
        return cls(np.fft.rfft(np.ascontiguousarray(x.transpose(0, 2, 1)), size, axis=2),
                   np.cumsum(np.pad(x64, ((0, 0), (1, 0), (0, 0))), axis=1),
                   np.cumsum(np.pad(np.square(x64), ((0, 0), (1, 0), (0, 0))), axis=1), size)

    @property
    def frames(self) -> int:
        """Frames per window (T)."""
        return self.sums.shape[1] - 1


def place_scores(frames: np.ndarray | PreparedFrames, patches: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Band-weighted correlation of windows' frames ``[n, T, B]`` (or `PreparedFrames`) with patches ``[k, L, B]``
    (band weights ``[k, B]``) at every place: ``[n, k, places]`` (places ``max(T - L + 1, 1)``)."""
    templates, root = _templates(patches, weights)
    k, length, bands = templates.shape
    prepared = frames if isinstance(frames, PreparedFrames) else PreparedFrames.of(frames, max(length, 32))
    if prepared.frames < length or prepared.size < prepared.frames + length - 1:
        prepared = PreparedFrames.of(np.diff(prepared.sums, axis=1), length)
    t, size = prepared.frames, prepared.size
    # numerator: the correlation of the window with each weighted template (its own mean drops out)
    kernel = np.fft.rfft(np.ascontiguousarray(templates[:, ::-1].transpose(0, 2, 1)), size, axis=2)  # [k, B, F]
    spectra = np.einsum("nbf,kbf->nkf", prepared.spectra, kernel)
    products = np.fft.irfft(spectra, size, axis=2)[:, :, length - 1:t]
    sums, squares = prepared.sums, prepared.squares
    s1, s2 = sums[:, length:] - sums[:, :-length], squares[:, length:] - squares[:, :-length]  # [n, places, B]
    spread = s2 @ np.square(root).T - np.square(s1 @ root.T) / (length * bands)  # [n, places, k]
    return (products / np.sqrt(np.maximum(spread, 1e-9)).transpose(0, 2, 1)).astype(np.float32)


def patch_scores(frames: np.ndarray | PreparedFrames, patches: np.ndarray, weights: np.ndarray,
                 negatives: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Windows' scores for a sound ``[n]`` and their best places' first frames ``[n]`` (``frames [n, T, B]`` or
    `PreparedFrames`, shared by the sounds scored on the same windows): at each place the
    correlation with the nearest patch (`place_scores`), less how much closer the nearest negative patch
    ("not this", weighed like the examples on average) is, when it is closer; the best place wins."""
    scores = place_scores(frames, patches, weights).max(axis=1)
    if negatives is not None and len(negatives):
        shared = np.repeat(np.mean(weights, axis=0, keepdims=True), len(negatives), axis=0)
        negative = place_scores(frames, negatives, shared).max(axis=1)
        scores = scores - np.maximum(0.0, negative - scores)
    starts = scores.argmax(axis=1)
    return scores[np.arange(len(scores)), starts], starts
