"""A real Prometheus server (Debian's `prometheus`) scrapes the daemon's /metrics and its HTTP API returns
the roomtone_windows_total series of the microphone; the exposition carries every documented metric."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from daemon_support import file_daemon_config
from mosquitto_broker import free_port
from service.daemon import Daemon

REPO = Path(__file__).resolve().parents[2]
DOCUMENTED = [
    "roomtone_windows_total", "roomtone_windows_dropped_total", "roomtone_capture_overruns_total",
    "roomtone_capture_errors_total", "roomtone_mic_health_state", "roomtone_mic_check_score",
    "roomtone_mic_check_failing", "roomtone_activity_probability", "roomtone_rms_dbfs",
    "roomtone_last_window_timestamp_seconds", "roomtone_stage_latency_seconds", "roomtone_window_to_event_seconds",
    "roomtone_store_errors_total", "roomtone_grpc_requests_total", "roomtone_model_info",
]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture()
def running_daemon(tmp_path, homesounds, small_model):
    model = small_model
    clip = homesounds / "audio" / "water" / "water_A3_000.flac"
    config = file_daemon_config(model, tmp_path / "data", "kitchen", clip)
    daemon = Daemon(config)
    daemon.start()
    assert daemon.pipeline.drained.wait(60)
    yield daemon
    daemon.stop()


def test_the_exposition_has_every_documented_metric_and_the_docs_list_them(running_daemon):
    with urllib.request.urlopen(f"http://127.0.0.1:{running_daemon.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for name in DOCUMENTED:
        if name != "roomtone_grpc_requests_total":  # appears with its first request
            assert f"# HELP {name}" in text, name
    assert 'roomtone_windows_total{mic="kitchen"} 1.0' in text
    assert 'roomtone_mic_health_state{mic="kitchen"}' in text
    assert 'roomtone_mic_check_failing{check="clipping",mic="kitchen"} 0.0' in text
    docs = (REPO / "docs" / "daemon.md").read_text()
    for name in DOCUMENTED:
        assert f"`{name}" in docs, f"docs/daemon.md does not list {name}"


@pytest.mark.prometheus
def test_a_real_prometheus_scrapes_the_windows_counter_of_the_microphone(running_daemon, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI needs Debian's prometheus (scripts/apt-packages-test.txt)")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: roomtone\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{running_daemon.metrics_port}']\n"
    )
    server = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        query = urllib.parse.urlencode({"query": 'roomtone_windows_total{mic="kitchen"}'})
        deadline, result = time.monotonic() + 60, []
        while time.monotonic() < deadline and not result:
            time.sleep(1)
            try:
                answer = get_json(f"http://127.0.0.1:{port}/api/v1/query?{query}")
            except OSError:
                assert server.poll() is None, server.stderr.read()
                continue
            assert answer["status"] == "success"
            result = answer["data"]["result"]
        assert result, "Prometheus never returned the roomtone_windows_total series"
        (series,) = result
        assert series["metric"]["mic"] == "kitchen" and series["metric"]["job"] == "roomtone"
        assert float(series["value"][1]) == 1.0
    finally:
        server.terminate()
        server.wait(30)
