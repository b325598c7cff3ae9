"""API load while the pipeline runs: many StreamEvents followers plus clients hammering ListEvents.

Starts ``roomtone run --demo`` (real time) with short windows (default 1 s, hop 0.5 s: two windows a
second, so the pipeline is busy all the time) on free loopback ports, then for ``--seconds``:
``--streams`` clients follow StreamEvents (each records, per window, the time from the window's end to
receiving it, and any stream gaps) and ``--listers`` clients call ListEvents(limit=100) in a loop (each
call's latency recorded). Afterwards it checks the daemon's counters: windows dropped anywhere in the
pipeline (must stay 0: API load may not cost windows), windows stored, live items dropped for slow
clients. Usage:

    .venv/bin/python -m bench.api_load                      # 60 s, 50 streams + 20 listers, bundled model
    .venv/bin/python -m bench.api_load --seconds 15 --model small.pt
    .venv/bin/python -m bench.api_load --prefill 141000 --limit 1000 --streams 5   # heavy reads on a big store

Prints one JSON object (latencies in ms).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from bench.daemon_process import REPO, Daemon, percentile_ms
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc


class Follower(threading.Thread):
    """One StreamEvents client: window ids seen, window end -> receive latencies, gaps."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(address)
        self.stream = pb_grpc.RoomtoneStub(self.channel).StreamEvents(pb.StreamEventsRequest())
        self.window_ids: list[int] = []
        self.latencies: list[float] = []
        self.gaps = 0
        self.error: str | None = None

    def run(self) -> None:
        try:
            for event in self.stream:
                now = time.time()
                which = event.WhichOneof("item")
                if which == "window":
                    self.window_ids.append(event.window.window_id)
                    self.latencies.append(now - event.window.end_unix_ms / 1000)
                elif which == "gap":
                    self.gaps += event.gap.dropped
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.error = f"{error.code().name}: {error.details()}"

    def stop(self) -> None:
        self.stream.cancel()
        self.join(10)
        self.channel.close()


class Lister(threading.Thread):
    """One client paging ListEvents(limit) back to back (from the newest again at the end) until told to stop."""

    def __init__(self, address: str, stop: threading.Event, limit: int = 100) -> None:
        super().__init__(daemon=True)
        self.limit = limit
        self.stub = pb_grpc.RoomtoneStub(grpc.insecure_channel(address))
        self.stop_event = stop
        self.latencies: list[float] = []
        self.errors: list[str] = []

    def run(self) -> None:
        token = ""
        while not self.stop_event.is_set():
            t0 = time.perf_counter()
            try:
                page = self.stub.ListEvents(pb.ListEventsRequest(limit=self.limit, page_token=token), timeout=30)
                self.latencies.append(time.perf_counter() - t0)
                token = page.next_page_token
            except grpc.RpcError as error:
                self.errors.append(error.code().name)


def prefill(path: Path, windows: int, dim: int = 256) -> None:
    """``windows`` stored windows (one mic, 10 s each, ending an hour ago) with a state change every 10th."""
    from service.store.event_store import EventStore
    from service.records import StateChange, WindowResult

    rng = np.random.default_rng(0)
    start = int(time.time() * 1000) - 3_600_000 - windows * 10_000
    with EventStore(path) as store:
        for first in range(0, windows, 1000):
            batch = range(first, min(windows, first + 1000))
            store.add_results(
                [WindowResult("old", start + i * 10_000, start + (i + 1) * 10_000, "speech", {"speech": 0.9, "water": 0.1},
                              "ok", (), {"clipping": 0.0}, -30.0, embedding=rng.standard_normal(dim).astype(np.float32))
                 for i in batch],
                [StateChange("activity_changed", "old", start + i * 10_000, "water", "speech") for i in batch if i % 10 == 0])


def api_load(seconds: float, streams: int, listers: int, model: str, window_s: float = 1.0, hop_s: float = 0.5,
             limit: int = 100, prefilled: int = 0) -> dict:
    """Run the load and return its figures."""
    with tempfile.TemporaryDirectory(prefix="roomtone-load-") as data:
        if prefilled:
            prefill(Path(data) / "roomtone.db", prefilled)
        daemon = Daemon(["--model", model, "--demo", "--window-s", str(window_s), "--hop-s", str(hop_s),
                         "--web-port", "0"], Path(data), env={"ROOMTONE_GRPC__MAX_STREAMS": str(streams + 8)})
        try:
            followers = [Follower(daemon.grpc_address) for _ in range(streams)]
            for follower in followers:
                follower.start()
            time.sleep(1.0)  # every stream subscribed before the measured interval
            stop = threading.Event()
            hammers = [Lister(daemon.grpc_address, stop, limit) for _ in range(listers)]
            before = daemon.metrics()
            t0 = time.monotonic()
            for hammer in hammers:
                hammer.start()
            time.sleep(seconds)
            stop.set()
            for hammer in hammers:
                hammer.join(30)
            elapsed = time.monotonic() - t0
            time.sleep(2 * hop_s + 1.0)  # let the last windows reach the followers
            after = daemon.metrics()
            for follower in followers:
                follower.stop()
            rss = daemon.rss_mib()
        finally:
            code = daemon.stop()
    stored = daemon.metric("roomtone_windows_total", after) - daemon.metric("roomtone_windows_total", before)
    first = max(min(f.window_ids) for f in followers if f.window_ids) if any(f.window_ids for f in followers) else 0
    common = set.intersection(*(set(i for i in f.window_ids if i >= first) for f in followers)) if followers else set()
    missing = sum(len(set(range(first, max(f.window_ids) + 1)) - set(f.window_ids)) for f in followers if f.window_ids)
    stream_latencies = [x for f in followers for x in f.latencies]
    list_latencies = [x for h in hammers for x in h.latencies]
    return {
        "seconds": round(elapsed, 1), "streams": streams, "listers": listers, "window_s": window_s, "hop_s": hop_s,
        "list_limit": limit, "prefilled_windows": prefilled,
        "windows_stored": int(stored),
        "windows_dropped": int(daemon.metric("roomtone_windows_dropped_total", after)),
        "stream_items_dropped": int(daemon.metric("roomtone_stream_items_dropped_total", after)),
        "stream_gaps": sum(f.gaps for f in followers), "stream_windows_missing": missing,
        "stream_errors": [f.error for f in followers if f.error],
        "windows_every_stream_saw": len(common),
        "stream_latency_ms": {"p50": percentile_ms(stream_latencies, 50), "p99": percentile_ms(stream_latencies, 99),
                              "max": percentile_ms(stream_latencies, 100), "n": len(stream_latencies)},
        "list_events": {"calls": len(list_latencies), "calls_per_s": round(len(list_latencies) / elapsed, 1),
                        "errors": sum(len(h.errors) for h in hammers),
                        "p50_ms": percentile_ms(list_latencies, 50), "p99_ms": percentile_ms(list_latencies, 99),
                        "max_ms": percentile_ms(list_latencies, 100)},
        "daemon_window_to_event_mean_ms": round(1000 * daemon.metric("roomtone_window_to_event_seconds_sum", after)
                                                / max(1.0, daemon.metric("roomtone_window_to_event_seconds_count", after)), 1),
        "daemon_rss_mib": round(rss, 1), "exit_code": code,
    }


def main() -> int:
    """Parse options, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--listers", type=int, default=20)
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--window-s", type=float, default=1.0)
    parser.add_argument("--hop-s", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=100, help="ListEvents page size of each lister (they page on)")
    parser.add_argument("--prefill", type=int, default=0, help="windows stored before the daemon starts")
    args = parser.parse_args()
    print(json.dumps(api_load(args.seconds, args.streams, args.listers, args.model, args.window_s, args.hop_s,
                              args.limit, args.prefill), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
