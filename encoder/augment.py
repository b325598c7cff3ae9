"""Augmentation of training views: pure, seeded functions (same inputs and generator state, same output).

Three families, applied to every tile of a batch with its own draws, so anchor and neighbour differ by
augmentation as well as by time, and an opposite cannot be told apart by how it was augmented:

- **background swap** (`mix_background`): a tile mixed over a bed (another ambience recording) at
  0-20 dB, each tile of a group over a different bed, as every home's background differs;
- the **capture chain** on the waveform, in the order sound meets it on its way to a file: a room
  (`reverberate` with a `synthetic_rir`, RT60 0.2-1.0 s), room noise (`add_noise`, 10-40 dB SNR),
  a microphone (`band_limit`: low-pass 3.5-8 kHz and an EQ tilt), a sound server (`resample_through`
  22.05/44.1/48 kHz with a varied resampler quality). `capture_chain` runs them on a batch;
- on the log-Mel: `mixup_log_mel` (BYOL-A: mix in another clip's power, lambda <= 0.4),
  `random_resize_crop` (BYOL-A), and `shift_gain` (a level change, in dB above the floor).

The evaluation's degradation ("P2, through the air") is a different module with other parameters and
other implementations; nothing here is used to score a model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from pydantic import model_validator

from encoder.config_schema import Section

#: Resampler qualities drawn by `capture_chain`: (sinc zero crossings, roll-off, window).
RESAMPLER_QUALITIES = ((6, 0.85, "sinc_interp_hann"), (16, 0.945, "sinc_interp_hann"), (32, 0.99, "sinc_interp_kaiser"))


class AugmentConfig(Section):
    """Which augmentations a training view gets and how strong; all off by default.

    A ``*_p`` is the probability that a tile gets that step of the capture chain."""

    reverb_p: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 1.0)
    noise_p: float = 0.0
    snr_db: tuple[float, float] = (10.0, 40.0)
    band_limit_p: float = 0.0
    lowpass_hz: tuple[float, float] = (3500.0, 8000.0)
    tilt_db_per_octave: float = 3.0  # the EQ tilt is drawn from [-t, +t] dB per octave around 1 kHz
    resample_p: float = 0.0
    resample_rates: tuple[int, ...] = (22050, 44100, 48000)
    mixup: float = 0.0  # largest share lambda of another clip mixed into a tile (BYOL-A: 0.4); 0 = off
    crop_min_scale: float = 1.0  # random resize crop: crop sides drawn from [scale, 1] of the tile; 1 = off
    background_p: float = 0.0  # probability that a tile is mixed over a bed (a tile of a training clip of background_kind)
    background_snr_db: tuple[float, float] = (0.0, 20.0)  # tile power over bed power, drawn per tile
    background_kind: str = "ambience"  # the manifest kind whose clips are the beds

    @model_validator(mode="after")
    def _check(self) -> "AugmentConfig":
        for name in ("reverb_p", "noise_p", "band_limit_p", "resample_p", "background_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"AugmentConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.background_kind:
            raise ValueError("AugmentConfig.background_kind must name a manifest kind (e.g. 'ambience')")
        for name in ("rt60_s", "snr_db", "lowpass_hz", "background_snr_db"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"AugmentConfig.{name} must be [low, high], got {getattr(self, name)}")
        if self.rt60_s[0] <= 0 or self.lowpass_hz[0] <= 0:
            raise ValueError("AugmentConfig.rt60_s and lowpass_hz must be positive")
        if not self.resample_rates or any(r <= 0 for r in self.resample_rates):
            raise ValueError(f"AugmentConfig.resample_rates must be positive rates, got {self.resample_rates}")
        if not 0 <= self.mixup <= 0.5:
            raise ValueError(f"AugmentConfig.mixup must be in [0, 0.5] (the other clip stays the minor part), got {self.mixup}")
        if not 0 < self.crop_min_scale <= 1:
            raise ValueError(f"AugmentConfig.crop_min_scale must be in (0, 1], got {self.crop_min_scale}")
        if self.tilt_db_per_octave < 0:
            raise ValueError(f"AugmentConfig.tilt_db_per_octave must be >= 0, got {self.tilt_db_per_octave}")
        return self

    @property
    def needs_waveform(self) -> bool:
        """True when a capture-chain step or background mixing is on: tiles must then be cut from audio,
        not from cached log-Mel."""
        return self.has_capture_chain or self.background_p > 0

    @property
    def has_capture_chain(self) -> bool:
        """True when any capture-chain step (room, noise, microphone, resampler) is on."""
        return any(p > 0 for p in (self.reverb_p, self.noise_p, self.band_limit_p, self.resample_p))


# ------------------------------------------------------------------------------------ waveform: capture

def synthetic_rir(rt60_s: float, sample_rate: int, rng: np.random.Generator, direct_to_reverb_db: float = 0.0) -> np.ndarray:
    """A room impulse response: a unit direct path, then Gaussian noise whose energy falls 60 dB in
    ``rt60_s`` (amplitude ``exp(-6.91 t / rt60)``), ``rt60_s`` long, scaled so that the tail holds
    ``direct_to_reverb_db`` less energy than the direct path."""
    length = max(2, int(round(rt60_s * sample_rate)))
    t = np.arange(1, length) / sample_rate
    tail = rng.standard_normal(length - 1) * np.exp(-3.0 * math.log(10) * t / rt60_s)
    tail *= math.sqrt(10 ** (-direct_to_reverb_db / 10) / max(float(np.sum(tail ** 2)), 1e-20))
    return np.concatenate([[1.0], tail]).astype(np.float32)


def reverberate(waveform: torch.Tensor, rir: torch.Tensor) -> torch.Tensor:
    """``[samples]`` or ``[rows, samples]`` convolved with ``rir`` (``[taps]`` or one per row), cut to the
    input length (causal: the tail that rings past the end is dropped)."""
    samples = waveform.shape[-1]
    n = 1 << math.ceil(math.log2(samples + rir.shape[-1] - 1))
    out = torch.fft.irfft(torch.fft.rfft(waveform, n=n) * torch.fft.rfft(rir.to(waveform.dtype), n=n), n=n)
    return out[..., :samples]


def add_noise(waveform: torch.Tensor, snr_db: float, rng: np.random.Generator, colour: float = 0.0) -> torch.Tensor:
    """``waveform [samples]`` plus noise whose power is ``snr_db`` below the signal's (mean square over
    the tile); ``colour`` is the spectral slope exponent (0 white, 1 pink, 2 brown). Silence stays silent."""
    samples = waveform.shape[-1]
    spectrum = torch.fft.rfft(torch.from_numpy(rng.standard_normal(samples).astype(np.float32)))
    if colour:
        f = torch.arange(spectrum.shape[0], dtype=torch.float32).clamp(min=1.0)
        spectrum = spectrum / f.pow(colour / 2)
    noise = torch.fft.irfft(spectrum, n=samples)
    signal_power = waveform.pow(2).mean()
    scale = torch.sqrt(signal_power / 10 ** (snr_db / 10) / noise.pow(2).mean().clamp(min=1e-20))
    return waveform + noise * scale


def band_limit_response(n_fft: int, sample_rate: int, cutoff_hz: float, tilt_db_per_octave: float, order: int = 4) -> torch.Tensor:
    """Magnitude response on the ``n_fft`` rFFT bins: Butterworth low-pass of ``order`` at ``cutoff_hz``
    times an EQ tilt of ``tilt_db_per_octave`` around 1 kHz (clamped below 50 Hz)."""
    f = torch.arange(n_fft // 2 + 1, dtype=torch.float32) * sample_rate / n_fft
    lowpass = 1.0 / torch.sqrt(1.0 + (f / cutoff_hz).pow(2 * order))
    tilt = 10 ** (tilt_db_per_octave * torch.log2(f.clamp(min=50.0) / 1000.0) / 20)
    return lowpass * tilt


def band_limit(waveform: torch.Tensor, sample_rate: int, cutoff_hz: float, tilt_db_per_octave: float = 0.0, order: int = 4) -> torch.Tensor:
    """A microphone/sound card's band: zero-phase low-pass at ``cutoff_hz`` and EQ tilt, same length."""
    samples = waveform.shape[-1]
    n = 1 << math.ceil(math.log2(samples + 1024))  # padding keeps the circular wrap off the signal
    response = band_limit_response(n, sample_rate, cutoff_hz, tilt_db_per_octave, order)
    return torch.fft.irfft(torch.fft.rfft(waveform, n=n) * response, n=n)[..., :samples]


def resample_through(waveform: torch.Tensor, sample_rate: int, via_rate: int, quality: int = 1) -> torch.Tensor:
    """Up/down to ``via_rate`` and back with `torchaudio.functional.resample` at one of
    `RESAMPLER_QUALITIES` (0 low, 1 medium, 2 high); same length as the input."""
    width, rolloff, method = RESAMPLER_QUALITIES[quality]
    there = AF.resample(waveform, sample_rate, via_rate, lowpass_filter_width=width, rolloff=rolloff, resampling_method=method)
    back = AF.resample(there, via_rate, sample_rate, lowpass_filter_width=width, rolloff=rolloff, resampling_method=method)
    samples = waveform.shape[-1]
    if back.shape[-1] < samples:
        back = F.pad(back, (0, samples - back.shape[-1]))
    return back[..., :samples]


def capture_chain(waveforms: torch.Tensor, sample_rate: int, config: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """Each row of ``[rows, samples]`` through its own draw of room, microphone, noise and resampler.

    Room and microphone are one batched FFT multiplication at the tile's own length rounded up to a
    power of two: the room's tail is convolved circularly, so it rings into the tile's start as the
    tail of what came before would, and no tile starts unnaturally dry."""
    rows, samples = waveforms.shape
    draws = []
    for _ in range(rows):  # every row's draws in a fixed order: the result depends only on the generator
        reverb = (rng.uniform(*config.rt60_s), rng.uniform(-3.0, 10.0)) if rng.random() < config.reverb_p else None
        band = ((rng.uniform(*config.lowpass_hz), rng.uniform(-config.tilt_db_per_octave, config.tilt_db_per_octave),
                 int(rng.integers(2, 9))) if rng.random() < config.band_limit_p else None)
        noise = (rng.uniform(*config.snr_db), rng.uniform(0.0, 2.0)) if rng.random() < config.noise_p else None
        resample = ((config.resample_rates[int(rng.integers(len(config.resample_rates)))], int(rng.integers(len(RESAMPLER_QUALITIES))))
                    if rng.random() < config.resample_p else None)
        draws.append((reverb, band, noise, resample))
    out = waveforms.clone()
    filtered = [i for i, d in enumerate(draws) if d[0] or d[1]]
    if filtered:
        n = 1 << math.ceil(math.log2(samples + 512))
        response = torch.ones(len(filtered), n // 2 + 1, dtype=torch.complex64)
        for row, i in enumerate(filtered):
            reverb, band, _, _ = draws[i]
            if reverb:
                rir = synthetic_rir(reverb[0], sample_rate, rng, direct_to_reverb_db=reverb[1])[:n]
                response[row] *= torch.fft.rfft(torch.from_numpy(rir), n=n)
            if band:
                response[row] *= band_limit_response(n, sample_rate, band[0], band[1], band[2])
        spectrum = torch.fft.rfft(out[filtered], n=n) * response
        out[filtered] = _circular(torch.fft.irfft(spectrum, n=n), samples)
    for i, (_, _, noise, _) in enumerate(draws):
        if noise:
            out[i] = add_noise(out[i], noise[0], rng, colour=noise[1])
    # Resampling is batched per (rate, quality): building the sinc kernels is most of its cost.
    chosen: dict[tuple[int, int], list[int]] = {}
    for i, (_, _, _, resample) in enumerate(draws):
        if resample:
            chosen.setdefault(resample, []).append(i)
    for (via, quality), index in sorted(chosen.items()):
        out[index] = resample_through(out[index], sample_rate, via, quality)
    return out


def mix_background(waveforms: torch.Tensor, beds: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """Each row of ``[rows, samples]`` plus its row of ``beds``, scaled so that the row's power (mean
    square) is ``snr_db`` above the bed's; a silent row or bed adds nothing."""
    signal_power = waveforms.pow(2).mean(dim=1, keepdim=True)
    bed_power = beds.pow(2).mean(dim=1, keepdim=True)
    scale = torch.sqrt(signal_power / 10 ** (snr_db.reshape(-1, 1) / 10) / bed_power.clamp(min=1e-20))
    return waveforms + beds * torch.where(bed_power > 0, scale, torch.zeros_like(scale))


def background_draws(ids: np.ndarray, bed_count: int, p: float, rng: np.random.Generator) -> np.ndarray:
    """Which bed (0..bed_count-1) each tile is mixed over, -1 for none (probability ``1 - p``); tiles that
    share an id get different beds while there are enough, so no anchor and neighbour share their bed."""
    chosen = np.full(len(ids), -1)
    for value in np.unique(ids):
        rows = np.flatnonzero(ids == value)
        beds = rng.choice(bed_count, size=len(rows), replace=len(rows) > bed_count)
        mixed = rng.random(len(rows)) < p
        chosen[rows[mixed]] = beds[mixed]
    return chosen


def _circular(signal: torch.Tensor, samples: int) -> torch.Tensor:
    """``[rows, n]`` folded onto ``[rows, samples]``: what rang past the tile's end comes back at its start."""
    n = signal.shape[-1]
    periods = math.ceil(n / samples)
    padded = F.pad(signal, (0, periods * samples - n))
    return padded.view(signal.shape[0], periods, samples).sum(dim=1)


# ------------------------------------------------------------------------------------------- log-Mel

def shift_gain(log_mel: torch.Tensor, gain_db: torch.Tensor | float, floor_db: float) -> torch.Tensor:
    """A level change in dB (broadcast over the leading dims); what sat on the floor stays there, and
    nothing goes below it (as for a scaled waveform)."""
    shift = torch.as_tensor(gain_db, dtype=log_mel.dtype)
    return torch.where(log_mel <= floor_db, log_mel, (log_mel + shift).clamp(min=floor_db))


def mixup_log_mel(log_mel: torch.Tensor, other: torch.Tensor, lam: torch.Tensor | float, floor_db: float) -> torch.Tensor:
    """``10 log10((1 - lam) 10^(x/10) + lam 10^(o/10))``: the log-Mel of the two sounds' powers mixed
    (BYOL-A's mixup in the linear domain), floored at ``floor_db``; ``lam`` broadcasts over leading dims."""
    lam = torch.as_tensor(lam, dtype=log_mel.dtype)
    power = (1 - lam) * torch.pow(10.0, log_mel / 10) + lam * torch.pow(10.0, other / 10)
    return (10 * torch.log10(power.clamp(min=1e-30))).clamp(min=floor_db)


def random_resize_crop(log_mel: torch.Tensor, min_scale: float, rng: np.random.Generator) -> torch.Tensor:
    """BYOL-A's random resize crop: a random ``[h, w]`` crop of a ``[n_mels, frames]`` map (each side a
    uniform share in ``[min_scale, 1]``, at a random place) stretched back to the full size (bilinear).
    A frequency stretch shifts pitch; a time stretch changes speed."""
    n_mels, frames = log_mel.shape[-2:]
    h = max(1, int(round(n_mels * rng.uniform(min_scale, 1.0))))
    w = max(1, int(round(frames * rng.uniform(min_scale, 1.0))))
    top = int(rng.integers(0, n_mels - h + 1))
    left = int(rng.integers(0, frames - w + 1))
    crop = log_mel[..., top:top + h, left:left + w]
    if (h, w) == (n_mels, frames):
        return crop.clone()
    lead = crop.shape[:-2]
    resized = F.interpolate(crop.reshape(1, -1, h, w), size=(n_mels, frames), mode="bilinear", align_corners=True)
    return resized.reshape(*lead, n_mels, frames)
