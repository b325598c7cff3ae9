"""Concurrent long uploads: ``--uploads`` Classify calls at once, each ``--seconds`` of 16 kHz mono noise as
FLAC, against ``roomtone run --demo`` (bundled model); prints the daemon's resident memory before and its
peak (VmHWM) after, the time and every status. Issue 15: 8 uploads of 590 s took it from 0.55 to 5.7 GB
before uploads were bounded (decoded size from the header, grpc.max_concurrent_uploads at a time). Usage:

    .venv/bin/python -m bench.upload_load                   # 8 x 590 s
    .venv/bin/python -m bench.upload_load --uploads 4 --seconds 120

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import soundfile

from bench.daemon_process import Daemon
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS", "VmHWM")):
            fields[line.split(":")[0]] = int(line.split()[1])
    return fields


def upload_load(uploads: int, seconds: float) -> dict:
    """Run the uploads and return the figures."""
    buffer = io.BytesIO()
    noise = 0.05 * np.random.default_rng(0).standard_normal(int(seconds * 16000))
    soundfile.write(buffer, noise.astype(np.float32), 16000, format="FLAC", subtype="PCM_16")
    audio = buffer.getvalue()
    with tempfile.TemporaryDirectory(prefix="roomtone-uploads-") as data:
        daemon = Daemon(["--demo", "--web-port", "0"], Path(data),
                        env={"ROOMTONE_GRPC__MAX_UPLOAD_BYTES": str(max(len(audio) + 1024, 16 << 20))})
        try:
            before = memory_kib(daemon.proc.pid)
            stub = pb_grpc.RoomtoneStub(grpc.insecure_channel(
                daemon.grpc_address, options=[("grpc.max_send_message_length", 256 << 20)]))
            codes: list[tuple[str, int]] = []

            def one() -> None:
                try:
                    reply = stub.Classify(pb.ClassifyRequest(audio=audio), timeout=600)
                    codes.append(("OK", len(reply.windows)))
                except grpc.RpcError as error:
                    codes.append((error.code().name, 0))

            started = time.monotonic()
            threads = [threading.Thread(target=one) for _ in range(uploads)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - started
            after = memory_kib(daemon.proc.pid)
        finally:
            code = daemon.stop()
    return {"uploads": uploads, "upload_seconds": seconds, "upload_bytes": len(audio), "seconds": round(elapsed, 1),
            "codes": codes, "rss_before_mib": round(before["VmRSS"] / 1024, 1),
            "peak_rss_mib": round(after["VmHWM"] / 1024, 1), "exit_code": code}


def main() -> int:
    """Parse options, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=590.0)
    args = parser.parse_args()
    print(json.dumps(upload_load(args.uploads, args.seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
