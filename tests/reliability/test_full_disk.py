"""A full disk (issue 26, BROKE 3), on a real small file system (a tmpfs; the test needs root to mount one).

With ``[clips] keep = "all"`` on a small disk the clips filled it in seconds; then no window was stored (store
errors 8 -> 220) while gRPC health said SERVING, a restart exited 1 (`not a usable SQLite database (database or
disk is full)`) and the drift baselines file was left empty. Now clips keep ``clips.min_free_mb`` free for the
store, failing store writes turn health NOT_SERVING with a log line that says what to do, writing resumes by
itself, and the daemon starts on a full disk. The same rules are tested without root at the statvfs edge in
tests/service/test_clips.py and tests/service/test_state_files.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from reliability_support import DaemonProcess, isolated_args, metric_value, scrape

pytestmark = pytest.mark.slow  # a daemon filling a disk, then a restart

DISK_MB = 16
FLOOR_MB = 6


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A `DISK_MB` tmpfs, unmounted at the end."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def free_mb(path: Path) -> float:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize / 2**20


def fill(disk: Path) -> Path:
    """Take every free byte of the disk with one file."""
    path = disk / "fill"
    try:
        with open(path, "ab") as stream:
            while True:
                stream.write(b"\0" * 65536)
                stream.flush()
    except OSError:  # full (on a full tmpfs even opening the file can fail)
        pass
    return path


def serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=15)
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def wait_until(condition, timeout: float, what: str, state=lambda: "") -> None:
    """Poll ``condition`` until it holds; fail with ``what`` and the ``state()`` seen last after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout:g} s: {state()}"
        time.sleep(0.5)


def disk_state(disk: Path, metrics: str, grpc_address: str) -> str:
    """What a failed wait saw: free space, clips left, health and the store and clip counters."""
    text = scrape(metrics)
    return (f"{free_mb(disk):.1f} MiB free, {len(list((disk / 'var' / 'clips').rglob('*.flac')))} clips, "
            f"serving {serving(grpc_address)}, write_failing {metric_value(text, 'roomtone_store_write_failing')}, "
            f"store errors {metric_value(text, 'roomtone_store_errors_total')}, clips dropped "
            f"{metric_value(text, 'roomtone_clips_dropped_total', reason='low_disk')} (low_disk), windows "
            f"{metric_value(text, 'roomtone_windows_total')}")


def start(small_model: Path, disk: Path) -> tuple[DaemonProcess, dict]:
    env = {**os.environ, "ROOMTONE_CLIPS__KEEP": "all", "ROOMTONE_CLIPS__MIN_FREE_MB": str(FLOOR_MB)}
    from service.config import DEMO_CLIP  # looped as fast as the pipeline takes it (the demo mic is real time)

    daemon = DaemonProcess(["--model", str(small_model), "--file", f"demo={DEMO_CLIP}", "--fast", "--loop",
                            "--window-s", "2", "--hop-s", "2",
                            *isolated_args(disk / "var")], env=env)
    return daemon, daemon.wait_for("roomtone running", 120)


def test_clips_leave_the_floor_to_the_store_a_full_disk_is_not_serving_and_the_daemon_restarts_on_it(
        small_model, small_disk):
    daemon, running = start(small_model, small_disk)
    metrics = f"http://127.0.0.1:{running['metrics_port']}/metrics"
    state = lambda: disk_state(small_disk, metrics, running["grpc"])  # noqa: E731
    try:
        # clips fill the disk down to the floor, and no further: the store keeps writing
        wait_until(lambda: free_mb(small_disk) < FLOOR_MB + 2, 120, "the clips never reached the floor", state)
        lowest = free_mb(small_disk)
        time.sleep(5)
        lowest = min(lowest, free_mb(small_disk))
        text = scrape(metrics)
        assert metric_value(text, "roomtone_store_errors_total") == 0
        assert lowest > FLOOR_MB - 1, f"{lowest:.1f} MiB free: the clips took the store's floor"
        assert serving(running["grpc"])

        # the disk fills up (another program): the clips give their space to the store first, then the store
        # fails, health says so, the log says what to do
        clips = small_disk / "var" / "clips"
        filler = fill(small_disk)

        def failing_with_no_clips_left() -> bool:
            # the other program takes whatever the clips give back, at every look. (Taken only while clips were
            # left, the space of the last ones deleted stayed free, the store wrote into it and health stayed
            # SERVING; and clips were pruned only when one was written, never while the store failed, so a disk
            # another program filled kept its clips and the store failed for good: both seen under load.)
            fill(small_disk)
            if list(clips.rglob("*.flac")):
                return False
            return not serving(running["grpc"]) and metric_value(scrape(metrics), "roomtone_store_write_failing") == 1

        wait_until(failing_with_no_clips_left, 120, "gRPC health stayed SERVING on a full disk", state)
        failing = daemon.wait_for("the store keeps failing to write: windows are not stored, gRPC health is "
                                  "NOT_SERVING", 10)
        assert "full" in failing["advice"] and "clips" in failing["advice"]

        # room again: writing resumes by itself
        filler.unlink()
        wait_until(lambda: serving(running["grpc"]), 120, "health did not come back after the disk had room", state)
        assert metric_value(scrape(metrics), "roomtone_store_write_failing") == 0
        fill(small_disk)
    finally:
        code = daemon.stop()
    assert code == 0, "".join(daemon.raw[-30:])
    drift = small_disk / "var" / "roomtone.db.drift.json"
    assert not drift.exists() or isinstance(json.loads(drift.read_text()), dict)  # never left empty
    assert not any("Traceback" in line for line in daemon.raw)

    # a restart on the full disk starts, says what to do, and stops cleanly. Filled again once the daemon has
    # stopped: its last clips' pruning and the store's closing checkpoint (the -wal file goes) gave space back,
    # some runs more than the floor, which made the warning below depend on timing (CI, 2026-12-07)
    # Not one byte free is another matter: SQLite cannot then make the store's shared-memory file, and the start
    # stops with an error naming the store (docs/reliability.md); so 0.5 MiB is left, far below the 6 MiB floor.
    shutil.rmtree(small_disk / "var" / "clips", ignore_errors=True)  # nothing left to give back at the restart
    filler = fill(small_disk)
    os.truncate(filler, max(0, filler.stat().st_size - 2**19))
    assert free_mb(small_disk) < 1
    daemon, running = start(small_model, small_disk)
    try:
        warning = daemon.wait_for("little free space for the store: windows may not be stored", 10)
        assert "free space on it" in warning["advice"]
        wait_until(lambda: not serving(running["grpc"]), 120, "a restart on a full disk said SERVING")
    finally:
        code = daemon.stop(timeout=120)  # its queued windows fail to store one batch at a time first
    assert code == 0, "".join(daemon.raw[-30:])
    shutil.rmtree(small_disk / "var", ignore_errors=True)
