"""The P2 "through the air" degradation: a seeded capture chain that a clip goes through before it is
probed, standing in for a loudspeaker in a living room heard by a cheap microphone through a sound server.

Stages, in the order sound meets them (each a pure function; `through_the_air` runs them all):
  1. room: a shoebox room impulse response, early part by the image-source method (Allen & Berkley
     1979) and a diffuse late tail, in two bands (walls absorb more above ``crossover_hz``);
  2. room noise: pink (1/f) noise at a drawn SNR against the reverberant signal;
  3. microphone: a 2nd-order Butterworth high-pass (small capsule), a presence peak (RBJ biquad) and a
     4th-order Butterworth low-pass (capsule and preamp roll-off), all `scipy.signal` IIR filters;
  4. sound server: resampled 16 kHz -> 44.1 or 48 kHz -> back with `scipy.signal.resample_poly`
     (polyphase FIR, Kaiser window of drawn beta), stored as 16-bit integers with TPDF dither;
  5. playback level: the result's RMS is the clean clip's RMS times a drawn gain.

It is independent of the training augmentation on purpose (different code and ranges; see
docs/evaluation.md), so that a model trained with augmentation is not tested on its own augmentation.
Every draw comes from ``(seed, clip name)``: the same clip degrades the same way on every run and machine.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from scipy import signal

SPEED_OF_SOUND_M_S = 343.0
#: Bumped whenever a change here changes the degraded audio (feature caches key on it).
DEGRADATION_VERSION = 1


@dataclass(frozen=True)
class AirConfig:
    """Ranges (low, high) each clip's degradation is drawn from, uniformly unless said otherwise."""

    room_size_m: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] = (
        (3.5, 7.0), (3.0, 5.5), (2.4, 3.0))
    rt60_s: tuple[float, float] = (0.3, 0.8)  # below the crossover
    high_rt60_ratio: tuple[float, float] = (0.45, 0.75)  # RT60 above the crossover / below it
    crossover_hz: float = 1500.0
    source_distance_m: tuple[float, float] = (1.0, 3.5)
    early_s: float = 0.08  # image sources up to here, diffuse tail after
    snr_db: tuple[float, float] = (12.0, 30.0)
    mic_highpass_hz: tuple[float, float] = (80.0, 250.0)
    presence_hz: tuple[float, float] = (2000.0, 5000.0)
    presence_db: tuple[float, float] = (0.0, 6.0)
    mic_lowpass_hz: tuple[float, float] = (5500.0, 7500.0)
    server_rates: tuple[int, ...] = (44100, 48000)
    resampler_kaiser_beta: tuple[float, float] = (5.0, 8.6)
    gain_db: tuple[float, float] = (-6.0, 6.0)

    def to_dict(self) -> dict:
        """Plain nested lists (for cache keys and results.json)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def _plain(value):
    """Tuples to lists, recursively."""
    return [_plain(v) for v in value] if isinstance(value, tuple) else value


@dataclass(frozen=True)
class AirDraw:
    """One clip's drawn degradation (what `through_the_air` applies)."""

    room_m: tuple[float, float, float]
    source_m: tuple[float, float, float]
    mic_m: tuple[float, float, float]
    rt60_s: float
    high_rt60_s: float
    snr_db: float
    mic_highpass_hz: float
    presence_hz: float
    presence_db: float
    mic_lowpass_hz: float
    server_rate: int
    resampler_kaiser_beta: float
    gain_db: float
    noise_seed: int

    def to_dict(self) -> dict:
        """Plain values (for logs and reports)."""
        return {k: _plain(v) for k, v in asdict(self).items()}


def clip_seed(seed: int, name: str) -> int:
    """A 63-bit seed from the run's seed and a clip's name (its path inside the dataset)."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def draw_air(config: AirConfig, seed: int) -> AirDraw:
    """The degradation of one clip, drawn from ``config``'s ranges with ``seed``."""
    rng = np.random.default_rng(seed)
    uniform = lambda pair: float(rng.uniform(*pair))  # noqa: E731
    room = tuple(uniform(r) for r in config.room_size_m)
    distance = uniform(config.source_distance_m)
    # Loudspeaker at seated/standing height somewhere in the room, the microphone on a shelf at the
    # drawn distance in a random horizontal direction; both kept 0.3 m from the walls.
    margin = 0.3
    for _ in range(100):
        source = np.array([rng.uniform(margin, room[0] - margin), rng.uniform(margin, room[1] - margin),
                           rng.uniform(0.8, 1.6)])
        angle = rng.uniform(0, 2 * np.pi)
        mic = source + np.array([distance * np.cos(angle), distance * np.sin(angle), rng.uniform(-0.4, 0.6)])
        if np.all(mic[:2] >= margin) and np.all(mic[:2] <= np.array(room[:2]) - margin):
            break
    else:  # a distance longer than the room allows: put the microphone in the opposite corner
        mic = np.array([room[0] - margin, room[1] - margin, 1.2])
    mic[2] = min(max(mic[2], margin), room[2] - margin)
    rt60 = uniform(config.rt60_s)
    return AirDraw(
        room_m=room, source_m=tuple(float(x) for x in source), mic_m=tuple(float(x) for x in mic),
        rt60_s=rt60, high_rt60_s=rt60 * uniform(config.high_rt60_ratio), snr_db=uniform(config.snr_db),
        mic_highpass_hz=uniform(config.mic_highpass_hz), presence_hz=uniform(config.presence_hz),
        presence_db=uniform(config.presence_db), mic_lowpass_hz=uniform(config.mic_lowpass_hz),
        server_rate=int(rng.choice(config.server_rates)),
        resampler_kaiser_beta=uniform(config.resampler_kaiser_beta), gain_db=uniform(config.gain_db),
        noise_seed=int(rng.integers(0, 2**63 - 1)),
    )


# --- 1. room ------------------------------------------------------------------------------------------

def sabine_reflection(room_m, rt60_s: float) -> float:
    """Wall pressure reflection coefficient that gives ``rt60_s`` in a shoebox by Sabine's formula."""
    lx, ly, lz = room_m
    volume, surface = lx * ly * lz, 2 * (lx * ly + lx * lz + ly * lz)
    absorption = min(0.161 * volume / (surface * rt60_s), 1.0)
    return math.sqrt(1.0 - absorption)


def image_source_rir(room_m, source_m, mic_m, reflection: float, rate: int, length_s: float) -> np.ndarray:
    """Impulse response of a shoebox room up to ``length_s`` by the image-source method: every image
    within reach adds ``reflection ** order / distance`` at its delay (linear split between two samples)."""
    room, src, mic = (np.asarray(v, dtype=np.float64) for v in (room_m, source_m, mic_m))
    reach = SPEED_OF_SOUND_M_S * length_s
    n = int(np.ceil(reach / (2 * room.min()))) + 1
    m = np.arange(-n, n + 1)
    per_axis = []
    for axis in range(3):
        # Image coordinate 2 m L + (1 - 2q) s (Allen & Berkley); walls crossed: |m - q| + |m|.
        offsets = np.concatenate([2 * m * room[axis] + src[axis], 2 * m * room[axis] - src[axis]]) - mic[axis]
        order = np.concatenate([np.abs(m) + np.abs(m), np.abs(m - 1) + np.abs(m)])
        per_axis.append((offsets, order))
    (dx, ox), (dy, oy), (dz, oz) = per_axis
    distance = np.sqrt(dx[:, None, None] ** 2 + dy[None, :, None] ** 2 + dz[None, None, :] ** 2)
    order = ox[:, None, None] + oy[None, :, None] + oz[None, None, :]
    keep = distance < reach
    distance, order = distance[keep], order[keep]
    gain = reflection ** order / np.maximum(distance, 0.05)
    delay = distance / SPEED_OF_SOUND_M_S * rate
    first = np.floor(delay).astype(np.int64)
    frac = delay - first
    rir = np.zeros(int(np.ceil(length_s * rate)) + 2)
    np.add.at(rir, first, gain * (1 - frac))
    np.add.at(rir, first + 1, gain * frac)
    return rir[:int(np.ceil(length_s * rate))]


def diffuse_tail(start: int, length: int, rt60_s: float, level: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise decaying 60 dB per ``rt60_s`` from ``level`` (RMS) at sample ``start``; zero before."""
    t = np.arange(length) - start
    envelope = level * 10.0 ** (-3.0 * t / (rt60_s * rate))
    tail = rng.standard_normal(length) * envelope
    tail[:start] = 0.0
    return tail


def band_rir(draw: AirDraw, rt60_s: float, rate: int, early_s: float, rng: np.random.Generator) -> np.ndarray:
    """One band's broadband RIR: image sources up to ``early_s``, then a diffuse tail at their level."""
    length = int(round(min(2.0, 1.2 * rt60_s + 0.05) * rate))
    early_end = min(int(round(early_s * rate)), length)
    early = image_source_rir(draw.room_m, draw.source_m, draw.mic_m, sabine_reflection(draw.room_m, rt60_s),
                             rate, early_end / rate)
    rir = np.zeros(length)
    rir[:early_end] = early[:early_end]
    # The tail starts at the energy the image sources had over their last 20 ms.
    last = early[max(0, early_end - int(0.02 * rate)):early_end]
    level = float(np.sqrt(np.mean(last ** 2))) if last.size else 0.0
    rir += diffuse_tail(early_end, length, rt60_s, level, rate, rng)
    return rir


def room_impulse_response(draw: AirDraw, rate: int, config: AirConfig = AirConfig()) -> np.ndarray:
    """The clip's two-band room impulse response: low band with ``rt60_s``, high band with
    ``high_rt60_s``, split by zero-phase Butterworth filters that sum to flat."""
    rng = np.random.default_rng(draw.noise_seed ^ 0x5EED)
    low = band_rir(draw, draw.rt60_s, rate, config.early_s, rng)
    high = band_rir(draw, draw.high_rt60_s, rate, config.early_s, rng)
    length = max(low.size, high.size)
    low, high = np.pad(low, (0, length - low.size)), np.pad(high, (0, length - high.size))
    lowpass = signal.butter(2, config.crossover_hz, "lowpass", fs=rate, output="sos")
    highpass = signal.butter(2, config.crossover_hz, "highpass", fs=rate, output="sos")
    # |B_lp|^2 + |B_hp|^2 = 1 for Butterworth, so the filtfilt (squared, zero-phase) bands add up to flat.
    return signal.sosfiltfilt(lowpass, low) + signal.sosfiltfilt(highpass, high)


def reverberate(samples: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``samples [channels, n]`` convolved with ``rir``, cut to n samples, delayed by the direct path."""
    out = signal.fftconvolve(samples, rir[None, :], mode="full", axes=1)
    return out[:, :samples.shape[1]]


# --- 2. noise -------------------------------------------------------------------------------------------

def pink_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise whose power falls 3 dB per octave (1/f), per row of ``shape [channels, n]``."""
    channels, n = shape
    spectrum = rng.standard_normal((channels, n // 2 + 1)) + 1j * rng.standard_normal((channels, n // 2 + 1))
    freqs = np.arange(n // 2 + 1, dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n=n, axis=1)
    noise -= noise.mean(axis=1, keepdims=True)
    return noise / np.maximum(np.sqrt(np.mean(noise ** 2, axis=1, keepdims=True)), 1e-12)


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``samples`` plus pink noise whose RMS is ``snr_db`` below the signal's (per channel)."""
    rms = np.sqrt(np.mean(samples ** 2, axis=1, keepdims=True))
    return samples + pink_noise(samples.shape, rng) * rms * 10.0 ** (-snr_db / 20.0)


# --- 3. microphone --------------------------------------------------------------------------------------

def peaking_sos(freq_hz: float, gain_db: float, q: float, rate: int) -> np.ndarray:
    """One peaking-EQ biquad (RBJ Audio EQ Cookbook) as a second-order section."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2 * np.pi * freq_hz / rate
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a])
    den = np.array([1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def microphone_sos(draw: AirDraw, rate: int) -> np.ndarray:
    """Second-order sections of the microphone: high-pass, presence peak, low-pass (causal IIR)."""
    nyquist_margin = 0.95 * rate / 2
    return np.vstack([
        signal.butter(2, draw.mic_highpass_hz, "highpass", fs=rate, output="sos"),
        peaking_sos(min(draw.presence_hz, nyquist_margin), draw.presence_db, 1.0, rate),
        signal.butter(4, min(draw.mic_lowpass_hz, nyquist_margin), "lowpass", fs=rate, output="sos"),
    ])


def microphone(samples: np.ndarray, draw: AirDraw, rate: int) -> np.ndarray:
    """``samples`` through the drawn microphone's response."""
    return signal.sosfilt(microphone_sos(draw, rate), samples, axis=1)


# --- 4. sound server ------------------------------------------------------------------------------------

def server_resample(samples: np.ndarray, rate: int, server_rate: int, kaiser_beta: float) -> np.ndarray:
    """``samples`` resampled to ``server_rate`` and back (polyphase FIR, Kaiser window), same length."""
    ratio = math.gcd(rate, server_rate)
    up, down = server_rate // ratio, rate // ratio
    window = ("kaiser", kaiser_beta)
    there = signal.resample_poly(samples, up, down, axis=1, window=window)
    back = signal.resample_poly(there, down, up, axis=1, window=window)
    n = samples.shape[1]
    return np.pad(back, ((0, 0), (0, max(0, n - back.shape[1]))))[:, :n]


def to_int16(samples: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``samples`` quantised to 16-bit steps with triangular (TPDF) dither, clipped to full scale."""
    lsb = 1.0 / 32768.0
    dither = (rng.random(samples.shape) - rng.random(samples.shape)) * lsb
    return np.clip(np.round((samples + dither) / lsb), -32768, 32767) * lsb


# --- the whole chain ------------------------------------------------------------------------------------

def rms(samples: np.ndarray) -> float:
    """RMS over every sample of ``samples``."""
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def through_the_air(samples: np.ndarray, rate: int, draw: AirDraw, config: AirConfig = AirConfig()) -> np.ndarray:
    """``samples [channels, n]`` (float, full scale 1) after room, noise, microphone, sound server and
    level; float32, same shape, RMS = the input's times ``draw.gain_db``."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"through_the_air expects [channels, samples], got shape {x.shape}")
    rng = np.random.default_rng(draw.noise_seed)
    clean_rms = rms(x)
    y = reverberate(x, room_impulse_response(draw, rate, config))
    y = add_noise(y, draw.snr_db, rng)
    y = microphone(y, draw, rate)
    y = server_resample(y, rate, draw.server_rate, draw.resampler_kaiser_beta)
    if clean_rms > 0:
        y *= clean_rms * 10.0 ** (draw.gain_db / 20.0) / max(rms(y), 1e-12)
    return to_int16(y, rng).astype(np.float32).reshape(np.shape(samples))


def degrade_clip(samples: np.ndarray, rate: int, seed: int, name: str, config: AirConfig = AirConfig()) -> np.ndarray:
    """`through_the_air` with the draw of clip ``name`` under the run's ``seed``."""
    return through_the_air(samples, rate, draw_air(config, clip_seed(seed, name)), config)
