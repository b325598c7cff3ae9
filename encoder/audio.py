"""Decoding audio files and bytes into float tensors, with errors that name the file and the reason.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, ...); resampling uses
``torchaudio.functional.resample``. Channels are kept: DCASE nodes have 4 microphones.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio.functional as AF


class AudioError(ValueError):
    """Audio that cannot be used; the message names the source and the reason."""


def _decode(source: str | Path | bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode a path or in-memory bytes into ``[samples, channels]`` float32 and its rate."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError(f"{name}: empty audio payload (0 bytes)")
        handle: object = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{name}: no such file")
        if path.is_dir():
            raise AudioError(f"{name}: is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioError(f"{name}: empty file (0 bytes)")
        handle = str(path)
    try:
        data, rate = soundfile.read(handle, dtype="float32", always_2d=True)
    except soundfile.LibsndfileError as exc:
        raise AudioError(f"{name}: cannot decode audio ({exc.error_string}); "
                         "supported formats are WAV, FLAC and OGG") from None
    except (RuntimeError, TypeError, ValueError) as exc:
        raise AudioError(f"{name}: cannot decode audio ({exc})") from None
    return data, int(rate)


def decode_audio(
    source: str | Path | bytes,
    sample_rate: int | None = 16000,
    *,
    mono: bool = False,
    name: str | None = None,
) -> tuple[torch.Tensor, int]:
    """Decode a file path or audio bytes into ``([channels, samples] float32, rate)``.

    Resamples to ``sample_rate`` unless it is None; ``mono=True`` averages the channels.
    Raises AudioError for missing/empty/corrupt/unsupported input, zero samples or NaN/Inf.
    """
    label = name if name is not None else (str(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "<bytes>")
    data, rate = _decode(source, label)
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{label}: contains no audio samples")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise AudioError(f"{label}: contains {bad} NaN/Inf samples")
    waveform = torch.from_numpy(np.ascontiguousarray(data.T))
    if mono:
        waveform = to_mono(waveform)
    if sample_rate is not None and rate != sample_rate:
        if sample_rate <= 0:
            raise AudioError(f"{label}: target sample rate must be positive, got {sample_rate}")
        waveform = AF.resample(waveform, rate, sample_rate)
        rate = sample_rate
    return waveform, rate


def load_audio(path: str | Path, sample_rate: int | None = 16000, *, mono: bool = False) -> tuple[torch.Tensor, int]:
    """Read an audio file into ``([channels, samples] float32, rate)``, resampled to ``sample_rate``."""
    return decode_audio(Path(path), sample_rate, mono=mono)


def to_mono(waveform: torch.Tensor) -> torch.Tensor:
    """Average ``[channels, samples]`` to ``[1, samples]``."""
    if waveform.dim() != 2:
        raise ValueError(f"to_mono expects [channels, samples], got shape {tuple(waveform.shape)}")
    return waveform.mean(dim=0, keepdim=True)


def audio_info(path: str | Path) -> soundfile._SoundFileInfo:
    """Header of an audio file (rate, channels, frames) without decoding it; AudioError if unreadable."""
    try:
        return soundfile.info(str(path))
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: cannot read audio header ({exc})") from None
