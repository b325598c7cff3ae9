"""Fixtures of the web page tests: a real store with windows, and the page's server on a free port."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

from service.event_store import EventStore  # noqa: E402
from service.records import MicStatus, StateChange, WindowResult  # noqa: E402
from service.config import WebConfig  # noqa: E402
from service.web.live import LiveFeed  # noqa: E402
from service.web.server import WebBackend, WebServer  # noqa: E402

T0 = 1_790_000_000_000  # a fixed start time (ms) for the stored windows


def stored_window(mic: str, i: int, label: str, direction: np.ndarray) -> WindowResult:
    """Window ``i`` of ``mic`` (10 s hop) whose embedding points along ``direction``."""
    embedding = (direction / np.linalg.norm(direction)).astype(np.float32)
    return WindowResult(mic_id=mic, start_unix_ms=T0 + i * 10_000, end_unix_ms=T0 + (i + 1) * 10_000, label=label,
                        probabilities={label: 0.9, "other": 0.1}, health_state="ok", health_reasons=(),
                        health_scores={"clipping": 0.0, "drift": 0.1 * i}, rms_dbfs=-30.0, embedding=embedding)


@pytest.fixture
def store(tmp_path):
    """A store with 6 windows of ``kitchen`` (water, then speech) and 2 of ``hall`` (speech), plus changes."""
    rng = np.random.default_rng(0)
    water, speech = rng.standard_normal(8), rng.standard_normal(8)
    windows = [stored_window("kitchen", i, "water", water + 0.05 * rng.standard_normal(8)) for i in range(3)]
    windows += [stored_window("kitchen", i, "speech", speech + 0.05 * rng.standard_normal(8)) for i in range(3, 6)]
    windows += [stored_window("hall", i, "speech", speech + 0.05 * rng.standard_normal(8)) for i in range(2)]
    changes = [StateChange("health_changed", "kitchen", T0, None, "ok"),
               StateChange("activity_changed", "kitchen", T0 + 30_000, "water", "speech")]
    with EventStore(tmp_path / "roomtone.db") as opened:
        opened.add_results(windows, changes)
        yield opened


def mics() -> list[MicStatus]:
    return [MicStatus("kitchen", "test:kitchen", "running", T0 + 60_000, "ok", (), {"clipping": 0.0}, "speech"),
            MicStatus("hall", "test:hall", "running", T0 + 20_000, "ok", (), {}, "speech")]


@pytest.fixture
def serve(store):
    """A function starting the page's server for ``store`` (config and backend fields overridable)."""
    started = []

    def start(config: WebConfig = WebConfig(port=0), **backend_fields) -> WebServer:
        fields = dict(store=store, feed=LiveFeed(), microphones=mics, window_s=10.0, hop_s=10.0,
                      class_names=("water", "speech"))
        fields.update(backend_fields)
        server = WebServer(config, WebBackend(**fields))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
