"""The one log-Mel definition of roomtone: training, evaluation and the daemon all call `log_mel`.

A 10 s window at 16 kHz with the default config gives ``1 + 160000 // 160 = 1001`` frames of
128 Mel bins (centre-padded STFT, hop 10 ms). `frame_count` computes this for any length.

`log_mel` = STFT power (torchaudio) -> Mel filterbank -> `power_to_db`. The ONNX serving graph
(encoder/onnx_export.py) is exported from these same pieces: `stft_window` and `mel_filterbank` are the
buffers of the very module `log_mel` runs, and `power_to_db` is the same function. torch is imported
inside the functions that need it, so `LogMelConfig` and `frame_count` load without torch (the
torch-free daemon reads them).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from pydantic import model_validator

from encoder.config_schema import Section

#: Frames produced for one 10 s window at the default config (documented contract, tested).
FRAMES_PER_10S = 1001


def _empty_mel_bands(config: LogMelConfig) -> list[int]:
    """Indices of Mel bands whose triangle holds no FFT bin strictly inside (always-zero filters)."""
    edges = mel_band_edges_hz(config)
    bins = np.arange(config.n_fft // 2 + 1) * config.sample_rate / config.n_fft
    return [
        i for i in range(config.n_mels)
        if not np.any((bins > edges[i]) & (bins < edges[i + 2]))
    ]


def mel_band_edges_hz(config: LogMelConfig) -> np.ndarray:
    """Edges of the triangular Mel filters in Hz (``n_mels + 2`` values, HTK scale), band i spans
    ``edges[i]..edges[i+2]`` with its peak at ``edges[i+1]``."""
    mel_lo = 2595.0 * np.log10(1.0 + config.fmin / 700.0)
    mel_hi = 2595.0 * np.log10(1.0 + config.fmax / 700.0)
    mels = np.linspace(mel_lo, mel_hi, config.n_mels + 2)
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


class LogMelConfig(Section):
    """Parameters of the log-Mel spectrogram; stored inside every model file (`to_dict`, `from_dict`)."""

    sample_rate: int = 16000
    n_mels: int = 128
    n_fft: int = 1024  # 512 leaves the lowest of 128 HTK Mel bands without an FFT bin
    win_ms: float = 32.0
    hop_ms: float = 10.0
    fmin: float = 0.0
    fmax: float = 8000.0
    floor_db: float = -100.0

    @model_validator(mode="after")
    def _check(self) -> "LogMelConfig":
        if self.sample_rate <= 0:
            raise ValueError(f"LogMelConfig.sample_rate must be positive, got {self.sample_rate}")
        if self.n_fft < 512:
            raise ValueError(f"LogMelConfig.n_fft must be >= 512, got {self.n_fft}")
        if self.win_length > self.n_fft:
            raise ValueError(
                f"LogMelConfig.win_ms={self.win_ms} gives {self.win_length} samples > n_fft={self.n_fft}"
            )
        if self.hop_length <= 0:
            raise ValueError(f"LogMelConfig.hop_ms must give at least one sample, got {self.hop_ms}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(
                f"LogMelConfig needs 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin} fmax={self.fmax}"
            )
        empty = _empty_mel_bands(self)
        if empty:
            raise ValueError(
                f"LogMelConfig: n_fft={self.n_fft} is too coarse for n_mels={self.n_mels}: Mel band(s) "
                f"{empty[:5]} contain no FFT bin and would always read the floor; raise n_fft"
            )
        return self

    @property
    def win_length(self) -> int:
        """Analysis window length in samples."""
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_length(self) -> int:
        """Hop between frames in samples."""
        return int(round(self.sample_rate * self.hop_ms / 1000))


def frame_count(num_samples: int, config: LogMelConfig) -> int:
    """Number of frames `log_mel` returns for `num_samples` samples (centre-padded STFT)."""
    return 1 + num_samples // config.hop_length


@functools.lru_cache(maxsize=16)
def _mel_transform(config: LogMelConfig, device: str) -> "torchaudio.transforms.MelSpectrogram":
    """Cached MelSpectrogram module per (config, device): the filterbank lives on the device."""
    import torchaudio

    return torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.n_fft,
        win_length=config.win_length,
        hop_length=config.hop_length,
        f_min=config.fmin,
        f_max=config.fmax,
        n_mels=config.n_mels,
        power=2.0,
        center=True,
        mel_scale="htk",
    ).to(device)


def stft_window(config: LogMelConfig) -> np.ndarray:
    """The analysis window ``log_mel``'s STFT applies (``win_length`` samples, centred in ``n_fft``), float32."""
    return _mel_transform(config, "cpu").spectrogram.window.numpy().astype(np.float32)


def mel_filterbank(config: LogMelConfig) -> "torch.Tensor":
    """The ``[n_fft // 2 + 1, n_mels]`` filterbank ``log_mel`` multiplies the STFT power by (torchaudio's
    ``melscale_fbanks``, HTK scale), on the CPU."""
    return _mel_transform(config, "cpu").mel_scale.fb


def power_to_db(power: "torch.Tensor", config: LogMelConfig) -> "torch.Tensor":
    """Mel power -> dB, floored at ``config.floor_db``: the last step of `log_mel`."""
    import torch

    floor = 10.0 ** (config.floor_db / 10.0)
    return 10.0 * torch.log10(torch.clamp(power, min=floor))


def _as_float_tensor(waveform: Any) -> "torch.Tensor":
    """Accept numpy or torch, float or int16 PCM; return a float32 tensor in [-1, 1] units."""
    import torch

    if isinstance(waveform, np.ndarray):
        waveform = torch.from_numpy(np.ascontiguousarray(waveform))
    if not isinstance(waveform, torch.Tensor):
        raise TypeError(f"log_mel expects a numpy array or torch tensor, got {type(waveform).__name__}")
    if waveform.dtype == torch.int16:
        return waveform.to(torch.float32) / 32768.0
    if waveform.dtype == torch.int32:
        return waveform.to(torch.float32) / 2147483648.0
    if waveform.dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return waveform.to(torch.float32)
    raise TypeError(
        f"log_mel expects float or int16/int32 PCM samples, got dtype {waveform.dtype}"
    )


def log_mel(waveform: Any, config: LogMelConfig = LogMelConfig()) -> "torch.Tensor":
    """Log-Mel power spectrogram in dB, floored at ``config.floor_db``; CPU and CUDA.

    ``waveform`` is 1-D ``[samples]`` -> ``[n_mels, frames]``, or 2-D ``[rows, samples]`` where every
    row is an independent mono signal (channels of a device, or a batch of windows) ->
    ``[rows, n_mels, frames]``. int16/int32 PCM is scaled to [-1, 1]; float64 is cast to float32.
    Non-finite samples are rejected: check microphone health before computing features.
    """
    import torch

    x = _as_float_tensor(waveform)
    if x.dim() not in (1, 2):
        raise ValueError(
            f"log_mel expects [samples] or [rows, samples], got shape {tuple(x.shape)}; "
            "mix or split channels first"
        )
    if x.shape[-1] == 0:
        raise ValueError("log_mel got a waveform with zero samples")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("log_mel got NaN or Inf samples; the input is not audio")
    return power_to_db(_mel_transform(config, str(x.device))(x), config)
