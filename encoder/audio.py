"""Decoding audio files and bytes into float arrays, with errors that name the file and the reason.

Decoding uses soundfile (libsndfile: WAV, FLAC, OGG/Vorbis, ...); resampling uses encoder/resampling.py
(soxr: bounded cost for any rate). Channels are kept: DCASE nodes have 4 microphones. `decode_samples`
is numpy only (no torch import: the torch-free serving path uses it); `decode_audio`/`load_audio` return
torch tensors for training and the offline tools. ``max_samples`` bounds what a decode may produce
(after mixing to mono and resampling), checked from the header before anything is decoded; decoding goes block
by block (`BLOCK_SAMPLES`), so memory follows that bound and never the file: a 3.4 MB FLAC that claims 600 s
x 8 channels x 655,350 Hz decodes to mono 16 kHz in 38 MiB plus one block, not 11.7 GiB.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile

from encoder.resampling import RateError, StreamResampler, check_rate, output_length

if TYPE_CHECKING:
    import torch


#: Samples decoded per block (before mixing and resampling): a decode's peak memory is its output plus this.
BLOCK_SAMPLES = 1 << 20
#: Most samples (after mixing and resampling) a file given to a command may decode to: 256 Mi float32 = 1 GiB,
#: 4.6 h of 16 kHz mono. Uploads to the daemon have their own, smaller bound (service MAX_UPLOAD_SAMPLES).
MAX_FILE_SAMPLES = 256 * 2**20


class AudioError(ValueError):
    """Audio that cannot be used; the message names the source and the reason."""


class AudioTooLarge(AudioError):
    """Audio whose decoded size is above the caller's bound (a decompression bomb, or just too long)."""


def _label(source: str | Path | bytes, name: str | None) -> str:
    """How errors name ``source``: ``name`` if given, else the path, else ``<bytes>``."""
    if name is not None:
        return name
    return "<bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


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


def decoded_size(frames: int, channels: int, rate: int, target_rate: int | None, mono: bool) -> int:
    """Samples a decode produces: ``frames`` at ``rate`` resampled to ``target_rate`` (None: kept), times the
    channels kept (1 when mixed to mono)."""
    resampled = output_length(frames, rate, target_rate) if target_rate and target_rate != rate else frames
    return resampled * (1 if mono else channels)


def check_decoded_size(frames: int, channels: int, rate: int, target_rate: int | None, max_samples: int,
                       name: str, mono: bool = False) -> int:
    """The decoded size (`decoded_size`, after mixing and resampling); AudioTooLarge when above ``max_samples``."""
    size = decoded_size(frames, channels, rate, target_rate, mono)
    if size > max_samples:
        kept = f"{1 if mono else channels} channel(s) at {target_rate or rate} Hz"
        raise AudioTooLarge(
            f"{name}: {frames / rate:.1f} s x {channels} channel(s) at {rate} Hz decodes to {size:,} samples "
            f"({kept}), above the limit of {max_samples:,} ({max_samples * 4 / 2**20:.0f} MiB as float32)")
    return size


class BlockDecoder:
    """An audio file (or bytes) decoded block by block, mixed (``mono``) and resampled to ``sample_rate`` as it
    comes: the one reading path of every decode (`decode_samples`) and of file microphones. Memory is one
    block (`BLOCK_SAMPLES` before mixing) whatever the file claims; NaN/Inf samples are passed on (callers
    decide). AudioError when the input cannot be opened or its rate is out of range."""

    def __init__(self, source: str | Path | bytes, sample_rate: int | None = None, *, mono: bool = False,
                 name: str | None = None, block_frames: int | None = None) -> None:
        self.name = _label(source, name)
        handle = _handle(source, self.name)
        try:
            if sample_rate is not None:
                check_rate(sample_rate, "target sample rate")
            self._sound = soundfile.SoundFile(handle)
        except RateError as exc:
            raise AudioError(f"{self.name}: {exc}") from None
        except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
            raise AudioError(f"{self.name}: cannot decode audio ({getattr(exc, 'error_string', exc)}); "
                             "supported formats are WAV, FLAC and OGG") from None
        try:
            self.source_rate = check_rate(self._sound.samplerate, "sample rate")
        except RateError as exc:
            self._sound.close()
            raise AudioError(f"{self.name}: {exc}") from None
        self.frames = int(self._sound.frames)  # as the header claims
        self.source_channels = int(self._sound.channels)
        self.channels = 1 if mono else self.source_channels
        self.sample_rate = self.source_rate if sample_rate is None else int(sample_rate)
        self.mono = mono
        self.block_frames = block_frames or max(1, BLOCK_SAMPLES // max(1, self.source_channels))
        self._resampler = StreamResampler(self.source_rate, self.sample_rate, self.channels)
        self._ended = False
        self._position = 0  # file frames handed out so far (where a failed block is read again from)
        self.non_finite = 0  # NaN/Inf samples read so far (in the file, before mixing)

    def decoded_size(self) -> int:
        """Samples the whole file decodes to, from its header (`decoded_size`)."""
        return decoded_size(self.frames, self.source_channels, self.source_rate, self.sample_rate, self.mono)

    def read(self) -> tuple[np.ndarray, int]:
        """The next ``[channels, n]`` float32 block at ``sample_rate`` and the file frames it consumed; at the end
        the filter's tail once (consumed 0), then empty blocks. A block that fails to decode part way (a damaged
        file) yields its decodable frames first; the error comes with the next read."""
        try:
            data = self._sound.read(self.block_frames, dtype="float32", always_2d=True)
        except (soundfile.LibsndfileError, RuntimeError):
            data = self._salvage(self._position)
        self._position += data.shape[0]
        if data.shape[0] == 0:
            if self._ended:
                return np.zeros((self.channels, 0), np.float32), 0
            self._ended = True
            return self._resampler.push(np.zeros((self.channels, 0), np.float32), last=True), 0
        self.non_finite += int(np.count_nonzero(~np.isfinite(data)))
        block = data.mean(axis=1, keepdims=True).T if self.mono else data.T
        return self._resampler.push(block), data.shape[0]

    def _salvage(self, start: int) -> np.ndarray:
        """The frames of a failed block that decode, read again from ``start`` in pieces of a tenth of a second
        up to the damage, so a large block loses no more of a damaged file than small ones; re-raises when
        not one piece decodes."""
        piece = max(1, self.source_rate // 10)
        self._sound.seek(start)
        parts: list[np.ndarray] = []
        for _ in range(0, self.block_frames, piece):
            try:
                part = self._sound.read(piece, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError):
                if not parts:
                    raise
                break
            if part.shape[0] == 0:
                break
            parts.append(part)
        return np.concatenate(parts) if parts else np.zeros((0, self.source_channels), np.float32)

    def rewind(self) -> None:
        """Start the file again; the resampler runs on, so a loop is one continuous stream."""
        self._sound.seek(0)
        self._position = 0
        self._ended = False

    def close(self) -> None:
        """Close the file."""
        self._sound.close()

    def __enter__(self) -> BlockDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def decode_samples(
    source: str | Path | bytes,
    sample_rate: int | None = 16000,
    *,
    mono: bool = False,
    name: str | None = None,
    max_samples: int | None = MAX_FILE_SAMPLES,
) -> tuple[np.ndarray, int]:
    """Decode a file path or audio bytes into ``([channels, samples] float32 numpy, rate)``.

    Resamples to ``sample_rate`` unless it is None; ``mono=True`` averages the channels. Decodes in blocks
    (mixed and resampled as they come), so peak memory is the output plus one block, whatever the file claims.
    Raises AudioError for missing/empty/corrupt/unsupported input, FIFOs and devices, zero samples, NaN/Inf, a
    rate outside encoder.resampling's range, and AudioTooLarge when the output (after mixing and resampling)
    would exceed ``max_samples``: checked from the header before decoding, and again while decoding.
    """
    limit = max_samples if max_samples is not None else np.iinfo(np.int64).max
    try:
        with BlockDecoder(source, sample_rate, mono=mono, name=name) as decoder:
            label = decoder.name
            if decoder.source_channels < 1:
                raise AudioError(f"{label}: contains no audio samples")
            check_decoded_size(decoder.frames, decoder.source_channels, decoder.source_rate, decoder.sample_rate,
                               limit, label, mono)
            parts, size = [], 0
            while True:
                block, consumed = decoder.read()
                if consumed == 0 and block.shape[1] == 0:
                    break
                parts.append(block)
                size += block.size
                if size > limit:  # the header understated the length
                    raise AudioTooLarge(f"{label}: decodes to more than {limit:,} samples (its header claimed "
                                        f"{decoder.frames:,} frames)")
            bad = decoder.non_finite
    except soundfile.LibsndfileError as exc:
        raise AudioError(f"{_label(source, name)}: cannot decode audio ({exc.error_string}); "
                         "supported formats are WAV, FLAC and OGG") from None
    except (RuntimeError, TypeError, ValueError) as exc:
        if isinstance(exc, AudioError):
            raise
        raise AudioError(f"{_label(source, name)}: cannot decode audio ({exc})") from None
    if bad:
        raise AudioError(f"{label}: contains {bad} NaN/Inf samples")
    samples = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1) if parts else np.zeros((1, 0), np.float32)
    del parts
    if samples.shape[1] == 0 or samples.shape[0] == 0:
        raise AudioError(f"{label}: contains no audio samples")
    return samples, decoder.sample_rate


def decode_audio(
    source: str | Path | bytes,
    sample_rate: int | None = 16000,
    *,
    mono: bool = False,
    name: str | None = None,
    max_samples: int | None = MAX_FILE_SAMPLES,
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


def audio_header(source: str | Path | bytes, name: str | None = None) -> tuple[int, int, int]:
    """``(frames, channels, rate)`` from the header of a file or audio bytes, nothing decoded; AudioError when
    it cannot be read or its rate is out of range."""
    label = _label(source, name)
    try:
        info = soundfile.info(_handle(source, label))
        return int(info.frames), int(info.channels), check_rate(info.samplerate, "sample rate")
    except RateError as exc:
        raise AudioError(f"{label}: {exc}") from None
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{label}: cannot decode audio ({exc}); supported formats are WAV, FLAC and OGG") from None


def audio_info(path: str | Path) -> soundfile._SoundFileInfo:
    """Header of an audio file (rate, channels, frames) without decoding it; AudioError if unreadable."""
    handle = _handle(path, str(path))
    try:
        return soundfile.info(handle)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioError(f"{path}: cannot read audio header ({exc})") from None
