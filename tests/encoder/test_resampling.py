"""Specification of resampling (encoder/resampling.py): any rate pair at a bounded cost, absurd rates refused."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from encoder.resampling import MAX_RATE, RateError, output_length, resample

REPO = Path(__file__).resolve().parents[2]


def tone(rate: int, seconds: float, hz: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.tile(0.5 * np.sin(2 * np.pi * hz * t), (channels, 1)).astype(np.float32)


@pytest.mark.parametrize("rate", [44_101, 11_127, 655_350, 3, 8000, 48_000])
def test_a_tone_keeps_its_pitch_and_the_length_is_the_rounded_up_ratio(rate):
    seconds = 2.0 if rate > 100 else 600.0
    hz = 440.0 if rate > 1000 else 1.0
    out = resample(tone(rate, seconds, hz, channels=2), rate, 16000)
    assert out.shape == (2, output_length(int(rate * seconds), rate, 16000)) and out.dtype == np.float32
    if rate > 1000:
        spectrum = np.abs(np.fft.rfft(out[0]))
        assert abs(spectrum.argmax() / seconds - hz) <= 1.0


def test_equal_rates_return_the_samples_unchanged():
    samples = tone(16000, 0.1)
    assert resample(samples, 16000, 16000) is samples


@pytest.mark.parametrize("rate", [0, -16000, MAX_RATE + 1, 10**9, float("nan"), float("inf"), 16000.5])
def test_an_absurd_rate_is_refused_before_any_work(rate):
    with pytest.raises(RateError, match="Hz"):
        resample(np.zeros((1, 10), np.float32), rate, 16000)


def test_odd_rates_cost_bounded_memory_and_time():
    """Issue 15: torchaudio needed 11.9 GB and 33 s for 1 s at 44,101 Hz; here 10 s of each odd rate must
    fit in a 1 GiB address-space limit (the interpreter with numpy and soxr takes ~0.3 GiB of it)."""
    script = textwrap.dedent("""
        import resource, sys, time
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        import numpy as np
        from encoder.resampling import resample
        started = time.perf_counter()
        for rate in (44_101, 11_127, 655_350, 16_001):
            out = resample(np.random.default_rng(0).standard_normal((1, rate * 10)).astype(np.float32), rate, 16000)
            assert out.shape == (1, 160_000), out.shape
        print(round(time.perf_counter() - started, 2))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout) < 20.0


def test_the_resampler_does_not_import_torch():
    """The torch-free serving path (ONNX Runtime) decodes and resamples with this module."""
    script = "import sys, encoder.resampling, encoder.audio; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.stdout.strip() == "False", result.stderr[-2000:]
