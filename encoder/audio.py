"""Decoding audio files and bytes into float arrays, with errors that name the file and the reason.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, ...); resampling uses encoder/resampling.py
(soxr: bounded cost for any rate). Channels are kept: DCASE nodes have 4 microphones. `decode_samples`
is numpy only (no torch import: the torch-free serving path uses it); `decode_audio`/`load_audio` return
torch tensors for training and the offline tools. ``max_samples`` bounds what a decode may produce
(frames x channels, before and after resampling), checked from the header before anything is decoded.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile

from encoder.resampling import RateError, check_rate, output_length, resample

if TYPE_CHECKING:
    import torch


class AudioError(ValueError):
    """Audio that cannot be used; the message names the source and the reason."""


class AudioTooLarge(AudioError):
    """Audio whose decoded size is above the caller's bound (a decompression bomb, or just too long)."""


def _handle(source: str | Path | bytes, name: str) -> object:
    """What soundfile opens: a BytesIO for bytes, the path (checked to be a non-empty regular file) otherwise."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError(f"{name}: empty audio payload (0 bytes)")
        return io.BytesIO(bytes(source))
    path = Path(source)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise AudioError(f"{name}: no such file") from None
    except OSError as exc:
        raise AudioError(f"{name}: cannot read ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise AudioError(f"{name}: is a directory, not an audio file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "a socket"
        raise AudioError(f"{name}: is {kind}, not a regular audio file (recordings must be files that can be "
                         f"read from the start and measured; capture live audio with a device microphone)")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: empty file (0 bytes)")
    return str(path)


def check_decoded_size(frames: int, channels: int, rate: int, target_rate: int | None, max_samples: int,
                       name: str) -> None:
    """AudioTooLarge unless ``frames x channels`` (and the same after resampling) fits ``max_samples``."""
    resampled = output_length(frames, rate, target_rate) if target_rate and target_rate != rate else frames
    largest = max(frames, resampled) * channels
    if largest > max_samples:
        raise AudioTooLarge(
            f"{name}: {frames / rate:.1f} s x {channels} channel(s) at {rate} Hz decodes to {largest:,} samples, "
            f"above the limit of {max_samples:,} ({max_samples * 4 / 2**20:.0f} MiB as float32)")


def decode_samples(
    source: str | Path | bytes,
    sample_rate: int | None = 16000,
    *,
    mono: bool = False,
    name: str | None = None,
    max_samples: int | None = None,
) -> tuple[np.ndarray, int]:
    """Decode a file path or audio bytes into ``([channels, samples] float32 numpy, rate)``.

    Resamples to ``sample_rate`` unless it is None; ``mono=True`` averages the channels. Raises AudioError
    for missing/empty/corrupt/unsupported input, FIFOs and devices, zero samples, NaN/Inf, a rate outside
    encoder.resampling's range, and (AudioTooLarge) more than ``max_samples`` decoded samples.
    """
    label = name if name is not None else (str(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "<bytes>")
    handle = _handle(source, label)
    if sample_rate is not None:
        try:
            check_rate(sample_rate, "target sample rate")
        except RateError as exc:
            raise AudioError(f"{label}: {exc}") from None
    try:
        with soundfile.SoundFile(handle) as sound:
            rate = check_rate(sound.samplerate, "sample rate")
            if max_samples is not None:
                check_decoded_size(sound.frames, sound.channels, rate, sample_rate, max_samples, label)
            data = sound.read(dtype="float32", always_2d=True)
    except RateError as exc:
        raise AudioError(f"{label}: {exc}") from None
    except soundfile.LibsndfileError as exc:
        raise AudioError(f"{label}: cannot decode audio ({exc.error_string}); "
                         "supported formats are WAV, FLAC and OGG") from None
    except (RuntimeError, TypeError, ValueError) as exc:
        if isinstance(exc, AudioError):
            raise
        raise AudioError(f"{label}: cannot decode audio ({exc})") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{label}: contains no audio samples")
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise AudioError(f"{label}: contains {bad} NaN/Inf samples")
    samples = np.ascontiguousarray(data.T)
    if mono:
        samples = samples.mean(axis=0, keepdims=True)
    if sample_rate is not None and rate != sample_rate:
        samples = resample(samples, rate, sample_rate)
        rate = int(sample_rate)
    return samples, rate


def decode_audio(
    source: str | Path | bytes,
    sample_rate: int | None = 16000,
    *,
    mono: bool = False,
    name: str | None = None,
    max_samples: int | None = None,
) -> tuple[torch.Tensor, int]:
    """`decode_samples` as a torch tensor ``([channels, samples] float32, rate)``."""
    import torch

    samples, rate = decode_samples(source, sample_rate, mono=mono, name=name, max_samples=max_samples)
    return torch.from_numpy(samples), rate


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
    handle = _handle(path, str(path))
    try:
        return soundfile.info(handle)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: cannot read audio header ({exc})") from None
