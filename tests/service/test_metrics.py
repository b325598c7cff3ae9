"""Metrics whose label sets come from outside (issue 15, DEGRADED): a head with 5,000 classes used to make
5,000 `activity` series per microphone; and a stopped capture (SIGSTOP/SIGCONT) was counted nowhere."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import generate_latest

from encoder.windows import WindowSpec

from service.metrics.daemon_metrics import MAX_ACTIVITY_SERIES, OTHER_ACTIVITY, Metrics
from service.records import WindowResult
from service.capture.sources import Chunk
from service.capture.windowing import Windower


def activity_series(metrics: Metrics) -> list[str]:
    return [line for line in generate_latest(metrics.registry).decode().splitlines()
            if line.startswith("roomtone_activity_probability{")]


def test_a_head_with_thousands_of_classes_exports_a_bounded_number_of_activity_series():
    classes = [f"class{i:04d}" for i in range(5000)]
    metrics = Metrics()
    metrics.set_model("0" * 64, 32, classes)
    probabilities = dict(zip(classes, np.full(5000, 1 / 5000)))
    result = WindowResult("kitchen", 0, 10_000, "class4999", probabilities, "ok", (), {}, -30.0)
    metrics.observe_analysis(result, {})
    series = activity_series(metrics)
    assert len(series) <= MAX_ACTIVITY_SERIES + 1 + 4  # the first classes, "_other", the reserved decisions
    other = next(s for s in series if f'activity="{OTHER_ACTIVITY}"' in s)
    assert float(other.rsplit(" ", 1)[1]) == pytest_approx((5000 - MAX_ACTIVITY_SERIES) / 5000)


def pytest_approx(value: float):
    import pytest

    return pytest.approx(value, rel=1e-6)


def test_a_small_head_exports_every_class_and_no_other_series():
    metrics = Metrics()
    metrics.set_model("0" * 64, 32, ["speech", "water"])
    metrics.observe_analysis(WindowResult("kitchen", 0, 10_000, "speech", {"speech": 0.9, "water": 0.1}, "ok", (),
                                          {}, -30.0), {})
    series = activity_series(metrics)
    assert any('activity="speech"' in s for s in series) and not any(OTHER_ACTIVITY in s for s in series)


def test_a_stopped_capture_is_counted_as_a_gap_with_the_time_lost():
    windower = Windower("m", 16000, 16000, WindowSpec(2.0), realtime=True)
    block = np.zeros((1, 1600), np.float32)
    t = time.time()
    windower.push(Chunk("m", block, 16000, t))
    windower.push(Chunk("m", block, 16000, t + 0.1))
    windower.push(Chunk("m", block, 16000, t + 30.2))  # SIGSTOP for 30 s, then SIGCONT
    assert windower.gaps == 1 and abs(windower.gap_s - 30.0) < 0.01
