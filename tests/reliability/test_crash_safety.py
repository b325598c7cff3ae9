"""Crash safety of the store: `kill -9` while the daemon writes as fast as it can loses nothing that was
acknowledged and leaves a database that passes `PRAGMA integrity_check`; a restart resumes. A full disk
(the file-size limit of the process, RLIMIT_FSIZE) is a counted, logged error, not a crash, and writing
resumes by itself once there is room again."""

from __future__ import annotations

import resource
import sqlite3
import threading
import time

import grpc
import pytest

from reliability_support import DaemonProcess, isolated_args, metric_value, scrape
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc


def _follow(address: str, seen: list[int], stop: threading.Event) -> None:
    """Collect the ids of windows the daemon has acknowledged (published only after they were committed)."""
    with grpc.insecure_channel(address) as channel:
        stream = pb_grpc.RoomtoneStub(channel).StreamEvents(pb.StreamEventsRequest())
        stop_cb = threading.Thread(target=lambda: (stop.wait(), stream.cancel()), daemon=True)
        stop_cb.start()
        try:
            for event in stream:
                if event.WhichOneof("item") == "window":
                    seen.append(event.window.window_id)
        except grpc.RpcError:
            pass  # the daemon was killed or we cancelled


def test_kill_9_at_full_speed_loses_no_acknowledged_window_and_a_restart_resumes(small_model, clip, tmp_path):
    data = tmp_path / "data"
    fast = ["--model", str(small_model), "--file", f"hall={clip}", "--fast", "--hop-s", "0.5", "--log-level", "WARNING"]
    daemon = DaemonProcess([*fast, "--loop", *isolated_args(data), "--log-level", "INFO"])
    acknowledged: list[int] = []
    stop = threading.Event()
    try:
        address = daemon.wait_for("roomtone running", 90)["grpc"]
        follower = threading.Thread(target=_follow, args=(address, acknowledged, stop), daemon=True)
        follower.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acknowledged) >= 200, "".join(daemon.raw[-20:])
    finally:
        daemon.kill()  # SIGKILL in the middle of writing
        stop.set()
    follower.join(10)
    db = data / "roomtone.db"
    with sqlite3.connect(db) as connection:  # opening recovers the WAL, as the daemon's next start does
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {row[0] for row in connection.execute("SELECT id FROM windows")}
    assert set(acknowledged) <= stored
    assert len(stored) >= len(acknowledged)

    restarted = DaemonProcess([*fast, *isolated_args(data)])  # the same store, the file once, then exit
    assert restarted.proc.wait(120) == 0, "".join(restarted.raw[-20:])
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        after = {row[0] for row in connection.execute("SELECT id FROM windows")}
    assert stored < after and min(after - stored) > max(stored)


def _disk_of(limit_bytes: int):
    """preexec_fn: no file of the process may grow beyond ``limit_bytes`` (a full disk, as SQLite sees it)."""
    def limit() -> None:
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, hard))
    return limit


def test_a_full_disk_is_counted_logged_survived_and_recovered_from(small_model, clip, tmp_path):
    data = tmp_path / "data"
    daemon = DaemonProcess(["--model", str(small_model), "--file", f"hall={clip}", "--fast", "--loop", "--hop-s", "0.5",
                            *isolated_args(data)], preexec_fn=_disk_of(1_000_000))
    try:
        running = daemon.wait_for("roomtone running", 90)
        metrics_url = f"http://127.0.0.1:{running['metrics_port']}/metrics"
        stub = pb_grpc.RoomtoneStub(grpc.insecure_channel(running["grpc"]))
        deadline = time.monotonic() + 90  # the store fills its 1 MB, then every write fails
        while metric_value(scrape(metrics_url), "roomtone_store_errors_total") < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        text = scrape(metrics_url)
        log_tail = "".join(daemon.raw[-10:])
        assert metric_value(text, "roomtone_store_errors_total") >= 3, log_tail
        assert metric_value(text, "roomtone_windows_total") > 0, log_tail  # it did store until the disk was full
        failed = [e for e in daemon.lines if e.get("message") == "store failed; windows not stored"]
        assert failed and ("full" in failed[0]["error"] or "I/O" in failed[0]["error"]), failed[:1]
        assert len(failed) <= 5 + metric_value(text, "roomtone_store_errors_total") / 10  # not a line per batch
        assert daemon.proc.poll() is None  # still running: no crash, so no crash loop
        assert stub.ListMicrophones(pb.ListMicrophonesRequest(), timeout=10).microphones[0].mic_id == "hall"
        stored_while_full = metric_value(text, "roomtone_windows_total")
        # room again: writing resumes by itself
        hard = resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(daemon.pid, resource.RLIMIT_FSIZE, (hard, hard))
        deadline = time.monotonic() + 60
        while metric_value(scrape(metrics_url), "roomtone_windows_total") < stored_while_full + 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert metric_value(scrape(metrics_url), "roomtone_windows_total") >= stored_while_full + 20, "".join(daemon.raw[-10:])
    finally:
        code = daemon.stop()
    assert code == 0
    with sqlite3.connect(data / "roomtone.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_store_that_cannot_be_created_stops_the_start_with_a_clear_error(small_model, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    daemon = DaemonProcess(["--model", str(small_model), "--demo", "--store", str(blocker / "roomtone.db"),
                            "--grpc-address", "127.0.0.1:0", "--metrics-port", "0"])
    code = daemon.proc.wait(60)
    daemon._reader.join(5)
    err = "".join(daemon.raw)
    assert code == 2 and "store.path" in err and str(blocker) in err and "Traceback" not in err, err
