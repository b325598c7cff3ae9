"""Signals (issue 15, BROKE 4): SIGTERM and SIGHUP stop the daemon gracefully even with a StreamEvents client
connected; a second signal exits at once with code 1 (two SIGTERMs 0-200 ms apart used to end in exit -6,
"terminate called without an active exception"; SIGHUP killed it with no drain and no drift baselines)."""

from __future__ import annotations

import signal
import sqlite3
import threading
import time

import grpc
import pytest

from reliability_support import DaemonProcess, isolated_args
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc


def running_daemon_with_a_stream(small_model, data_dir):
    """A demo daemon (1 s hops) with one StreamEvents client reading, once a window has been stored."""
    daemon = DaemonProcess(["--model", str(small_model), "--demo", "--window-s", "2", "--hop-s", "1",
                            *isolated_args(data_dir)])
    running = daemon.wait_for("roomtone running", 90)
    channel = grpc.insecure_channel(running["grpc"])
    stream = pb_grpc.RoomtoneStub(channel).StreamEvents(pb.StreamEventsRequest())
    seen = threading.Event()

    def read() -> None:
        try:
            for _ in stream:
                seen.set()
        except grpc.RpcError:
            pass

    threading.Thread(target=read, daemon=True).start()
    assert seen.wait(60), "no window reached the stream"
    return daemon, channel


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_drains_and_exits_0_with_a_stream_client_connected(small_model, tmp_path, stop):
    daemon, channel = running_daemon_with_a_stream(small_model, tmp_path / "data")
    started = time.monotonic()
    daemon.proc.send_signal(stop)
    code = daemon.proc.wait(30)
    channel.close()
    assert code == 0 and time.monotonic() - started < 15, "".join(daemon.raw[-20:])
    stopped = daemon.wait_for("roomtone stopped", 5)
    assert stopped["reason"] == stop.name and stopped["drained"] is True
    assert (tmp_path / "data" / "roomtone.db.drift.json").is_file()  # baselines saved


# Not 0.0: two signals sent back to back can reach the process as one (a standard signal still pending is not
# queued twice, and Python runs a handler once for deliveries made before it could run): then there is no
# second signal to obey (seen once in a full run). 50 ms lets the first one be handled.
@pytest.mark.parametrize("gap_s", [0.05, 0.2])
def test_a_second_signal_exits_at_once_with_code_1_and_the_store_intact(small_model, tmp_path, gap_s):
    daemon, channel = running_daemon_with_a_stream(small_model, tmp_path / "data")
    daemon.proc.send_signal(signal.SIGTERM)
    time.sleep(gap_s)
    second = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    code = daemon.proc.wait(30)
    channel.close()
    daemon._reader.join(5)
    assert code == 1 and time.monotonic() - second < 3.0, "".join(daemon.raw[-20:])
    assert not any("terminate called" in line for line in daemon.raw)
    with sqlite3.connect(tmp_path / "data" / "roomtone.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
