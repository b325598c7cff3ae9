"""Fixtures of the web page tests: a real store with windows, and the page's server on a free port."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

from encoder.windows import WindowSpec  # noqa: E402
from service.store.event_store import EventStore  # noqa: E402
from service.records import StateChange  # noqa: E402
from service.config import WebConfig  # noqa: E402
from service.web.live import LiveFeed  # noqa: E402
from service.web.server import WebBackend, WebServer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from web_support import T0, mics, stored_window  # noqa: E402

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


@pytest.fixture
def serve(store):
    """A function starting the page's server for ``store`` (config and backend fields overridable)."""
    started = []

    def start(config: WebConfig = WebConfig(port=0), **backend_fields) -> WebServer:
        fields = dict(store=store, feed=LiveFeed(floor_db=-100.0), microphones=mics, windows=WindowSpec(),
                      class_names=("water", "speech"))
        fields.update(backend_fields)
        server = WebServer(config, WebBackend(**fields))
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
