"""Odd sample rates (issue 15, BROKE 1): files at 44,101, 11,127 and 655,350 Hz go through `--file`
microphones and Classify inside an address-space limit, at a cost that does not depend on gcd(rate, 16000).
torchaudio's resampler needed 11.9 GB for 1 s at 44,101 Hz and got the daemon killed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile

from daemon_support import ROOMTONE
from reliability_support import DaemonProcess, isolated_args
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

RATES = (44_101, 11_127, 655_350)
#: Address-space limit of the daemon: its own need (torch maps ~2-3 GiB of address space at import) plus
#: room for the windows; one torchaudio resampling filter at 44,101 Hz alone needed 11.9 GB.
ADDRESS_SPACE = 8 << 30
#: Peak resident memory allowed (the daemon with the small model runs in ~0.5 GiB).
PEAK_RSS = 1536 << 20


def peak_rss_bytes(pid: int) -> int:
    """Highest resident set size the process has had (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def odd_rate_file(directory, rate: int, seconds: float = 4.5):
    """``seconds`` of a 440 Hz tone with noise, as FLAC at ``rate`` (FLAC allows up to 655,350 Hz)."""
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(rate).normal(0, 0.05, t.shape)
    path = directory / f"tone_{rate}.flac"
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 440 * t) + noise).astype(np.float32), rate)
    return path


def test_odd_rates_go_through_file_microphones_and_classify_within_a_memory_limit(small_model, tmp_path):
    files = {rate: odd_rate_file(tmp_path, rate) for rate in RATES}
    args = ["--model", str(small_model), "--window-s", "2", "--hop-s", "2", "--demo", "--fast"]
    for rate, path in files.items():
        args += ["--file", f"r{rate}={path}"]
    # prlimit, not preexec_fn: forking a test process that holds gRPC threads breaks gRPC in the child
    daemon = DaemonProcess([*args, *isolated_args(tmp_path / "data")], env=dict(os.environ),
                           command=("prlimit", f"--as={ADDRESS_SPACE}", str(ROOMTONE), "run"))
    try:
        running = daemon.wait_for("roomtone running", 90)
        channel = grpc.insecure_channel(running["grpc"], options=[("grpc.max_send_message_length", 64 << 20)])
        stub = pb_grpc.RoomtoneStub(channel)
        for rate, path in files.items():
            reply = stub.Classify(pb.ClassifyRequest(audio=path.read_bytes()), timeout=60)
            assert reply.windows and all(w.label for w in reply.windows), rate
            assert all(np.isfinite(list(w.probabilities.values())).all() for w in reply.windows), rate
        # 2 s windows of 4.5 s of audio: 0-2 and 2-4 s are stored (the 0.5 s tail is below the 1 s minimum)
        deadline = time.monotonic() + 60
        while True:
            stored = {rate: len(stub.ListEvents(pb.ListEventsRequest(
                filter=pb.EventFilter(mic_ids=[f"r{rate}"], kinds=[pb.EVENT_KIND_WINDOW]), limit=10), timeout=30).events)
                for rate in RATES}
            if all(n >= 2 for n in stored.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert stored == {rate: 2 for rate in RATES}
        assert peak_rss_bytes(daemon.pid) < PEAK_RSS
        channel.close()
        channel.close()
    finally:
        code = daemon.stop()
    assert code == 0, "".join(daemon.raw[-30:])
    assert not any("Traceback" in line for line in daemon.raw)
