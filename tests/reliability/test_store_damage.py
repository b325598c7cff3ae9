"""The store file under attack (issue 15): 8 KiB of random bytes in the middle of the database used to go
unnoticed (210 windows stored, store_errors 0, health SERVING, ListEvents INTERNAL). Now the integrity check,
which runs in the background from start (issue 28), reports it in the log (with what to do), in /metrics and in
gRPC health. A second daemon on the
same store exits 2 naming the store instead of interleaving windows with the first."""

from __future__ import annotations

import time

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reliability_support import DaemonProcess, isolated_args, metric_value, scrape
from service.cli.main import main
from service.store.event_store import EventStore
from service.records import WindowResult


def damaged_store(path):
    rng = np.random.default_rng(0)
    with EventStore(path) as store:
        for batch in range(6):
            store.add_results([WindowResult("kitchen", (batch * 500 + i) * 10_000, (batch * 500 + i + 1) * 10_000,
                                            "speech", {"speech": 1.0}, "ok", (), {}, -30.0,
                                            embedding=rng.standard_normal(32).astype(np.float32))
                               for i in range(500)])
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        handle.write(rng.bytes(8192))
    return path


def test_a_damaged_store_is_reported_in_the_log_metrics_and_grpc_health(small_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    damaged_store(data / "roomtone.db")
    daemon = DaemonProcess(["--model", str(small_model), "--demo", "--window-s", "2", "--hop-s", "2",
                            *isolated_args(data)])
    try:
        running = daemon.wait_for("roomtone running", 90)
        deadline = time.monotonic() + 60  # reported as found by the background check
        while (damage := next((e for e in list(daemon.lines) if e.get("message", "").startswith("store is damaged: ")),
                              None)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert damage is not None, "".join(daemon.raw[-20:])
        assert damage["level"] == "ERROR" and damage["problems"] and ".recover" in damage["message"]
        text = scrape(f"http://127.0.0.1:{running['metrics_port']}/metrics")
        assert metric_value(text, "roomtone_store_corrupt") == 1.0
        with grpc.insecure_channel(running["grpc"]) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        assert daemon.stop() == 0, "".join(daemon.raw[-20:])


def test_a_second_daemon_on_the_same_store_exits_2_naming_the_store(small_model, tmp_path, capsys):
    data = tmp_path / "data"
    first = DaemonProcess(["--model", str(small_model), "--demo", *isolated_args(data)])
    try:
        first.wait_for("roomtone running", 90)
        code = main(["run", "--model", str(small_model), "--demo", *isolated_args(data), "--log-level", "ERROR"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert f"cannot start: store {data / 'roomtone.db'} is in use by another roomtone (pid {first.pid}" in err
    finally:
        assert first.stop() == 0
