"""Window end -> event visible latency and memory of a running daemon, measured from outside.

Starts ``roomtone run --demo`` (the bundled model, the demo recording at real time) in a subprocess on
free loopback ports, follows gRPC ``StreamEvents`` as a client and, for each window event, records
``receive time - window end``: the time from the last sample of a window until a client sees its record
(stored in SQLite and published). It also reads the daemon's own ``roomtone_window_to_event_seconds``
histogram and its resident memory (VmRSS now, VmHWM peak) from /proc. Usage:

    .venv/bin/python -m bench.daemon_latency [--windows 12] [--hop-s 10] [--model M] [--compute-device auto]
    .venv/bin/python -m bench.daemon_latency --windows 200 --hop-s 1    # enough windows for a p99 (~3.5 min)

Prints one JSON object. Speed targets belong here, not in the tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from bench.daemon_process import Daemon
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def main() -> int:
    """Run the measurement and print the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=12, help="window events to measure")
    parser.add_argument("--hop-s", type=float, default=10.0, help="hop between windows (10 = no overlap)")
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--compute-device", default="auto")
    args = parser.parse_args()

    data = Path(tempfile.mkdtemp(prefix="roomtone-bench-"))
    daemon = Daemon(["--demo", "--model", args.model, "--hop-s", str(args.hop_s),
                     "--compute-device", args.compute_device], data)
    device = daemon.wait_for("model loaded", 10)
    latencies = []
    with grpc.insecure_channel(daemon.grpc_address) as channel:
        stream = pb_grpc.RoomtoneStub(channel).StreamEvents(
            pb.StreamEventsRequest(filter=pb.EventFilter(kinds=[pb.EVENT_KIND_WINDOW])))
        for event in stream:
            if event.HasField("window"):
                latencies.append(time.time() - event.window.end_unix_ms / 1000.0)
                if len(latencies) >= args.windows:
                    break
        stream.cancel()
    memory = proc_memory_kib(daemon.proc.pid)
    metrics = daemon.metrics()
    code = daemon.stop(60)
    total = daemon.metric("roomtone_window_to_event_seconds_sum", metrics)
    count = daemon.metric("roomtone_window_to_event_seconds_count", metrics)
    values = np.array(latencies)
    print(json.dumps({
        "windows": len(values), "hop_s": args.hop_s, "model": args.model, "device": device.get("device"),
        "client_latency_s": {"median": round(float(np.median(values)), 4), "p95": round(float(np.percentile(values, 95)), 4),
                             "p99": round(float(np.percentile(values, 99)), 4), "max": round(float(values.max()), 4)},
        "load_average": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "daemon_window_to_event_mean_s": round(total / count, 4) if count else None,
        "rss_mib": round(memory["VmRSS"] / 1024, 1), "peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
        "exit_code": code,
    }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
