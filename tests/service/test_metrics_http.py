"""The /metrics listener is bounded (issue 15, DEGRADED): 1,000 idle connections used to make 1,017 threads
with no timeout. Now at most max_connections are served at once, idle ones are closed after idle_timeout_s,
and a scrape works again as soon as a slot is free."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

from service.config import MetricsConfig
from service.metrics.daemon_metrics import Metrics


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def test_idle_connections_are_bounded_in_threads_and_time_and_scrapes_recover():
    metrics = Metrics()
    port = metrics.serve(MetricsConfig(port=0, max_connections=4, idle_timeout_s=2.0))
    try:
        before = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        most = 0
        deadline = time.monotonic() + 20
        while metrics._server.refused < 190 and time.monotonic() < deadline:
            most = max(most, threading.active_count() - before)
            time.sleep(0.01)
        assert metrics._server.refused >= 190
        assert most <= 4  # one thread per served connection, never one per idle connection
        for connection in idle[:4]:
            connection.settimeout(5)
            assert connection.recv(1) == b""  # closed by the server: refused, or idle past the timeout
        for connection in idle:
            connection.close()
        time.sleep(2.5)  # whatever was still queued has timed out or ended
        assert "roomtone_store_errors_total" in scrape(port)
        deadline = time.monotonic() + 10
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= before  # every connection thread ended
    finally:
        metrics.close()


def test_a_busy_metrics_port_is_an_error_naming_the_listener():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            Metrics().serve(MetricsConfig(port=port))
        except OSError as exc:
            assert f"/metrics (metrics.address, metrics.port): cannot listen on 127.0.0.1:{port}" in str(exc)
        else:
            raise AssertionError("a busy port was accepted")
