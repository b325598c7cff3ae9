"""A window's log-Mel spectrogram shrunk to a small 8-bit image for the live view.

The log-Mel itself comes from the embedding path (encoder/features.py via the daemon's analyser); this
module only averages it down and quantises it, so the page shows exactly what the model saw.
"""

from __future__ import annotations

import base64

import numpy as np

#: Rows (Mel bands, lowest first) and columns (time) of one window's strip: 30 windows of 50 columns fill
#: a wide screen, and the 30 a page opens with stay near 130 kB of JSON per microphone.
STRIP_BINS = 64
STRIP_COLUMNS = 50
#: Top of the colour scale in dB: Mel band power sums FFT bins, so loud bands go above 0 dB (about +11 dB
#: on the demo recording); 255 is kept for this and louder.
TOP_DB = 20.0


def _mean_pool(values: np.ndarray, size: int, axis: int) -> np.ndarray:
    """``values`` averaged down to ``size`` equal slices along ``axis`` (size <= length)."""
    length = values.shape[axis]
    if length % size == 0:
        # Slices of one length (128 Mel bands into 64 rows): a reshape sums the same numbers in the same order
        # as reduceat, which takes 0.8 ms for 64 slices of two rows of 1,001 frames; this takes 0.05 ms.
        shape = values.shape[:axis] + (size, length // size) + values.shape[axis + 1:]
        return values.reshape(shape).sum(axis=axis + 1).astype(np.float64) / (length // size)
    edges = np.linspace(0, length, size + 1).round().astype(int)
    sums = np.add.reduceat(values, edges[:-1], axis=axis)
    counts = np.diff(edges).reshape([-1 if a == axis else 1 for a in range(values.ndim)])
    return sums / counts


def mel_strip(log_mel_db: np.ndarray, floor_db: float, bins: int = STRIP_BINS, columns: int = STRIP_COLUMNS) -> np.ndarray:
    """uint8 ``[bins, columns]`` image of a log-Mel ``[n_mels, frames]`` in dB: 0 at ``floor_db``, 255 at TOP_DB."""
    values = np.asarray(log_mel_db, dtype=np.float32)
    if values.ndim != 2 or values.shape[0] < 1 or values.shape[1] < 1:
        raise ValueError(f"mel_strip expects [n_mels, frames], got shape {values.shape}")
    if not floor_db < TOP_DB:
        raise ValueError(f"floor_db must be below {TOP_DB} dB, got {floor_db}")
    pooled = _mean_pool(values, min(bins, values.shape[0]), axis=0)
    pooled = _mean_pool(pooled, min(columns, values.shape[1]), axis=1)
    scaled = (pooled - floor_db) / (TOP_DB - floor_db) * 255.0
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def strip_to_json(strip: np.ndarray) -> dict:
    """The strip as the page reads it: ``{"bins", "columns", "data"}`` with row-major base64 bytes."""
    return {"bins": int(strip.shape[0]), "columns": int(strip.shape[1]),
            "data": base64.b64encode(np.ascontiguousarray(strip, dtype=np.uint8).tobytes()).decode("ascii")}
