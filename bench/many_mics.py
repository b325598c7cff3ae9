"""How many real-time microphones one machine holds: N file microphones paced at real time, N stepping up.

For each N, starts ``roomtone run --config C`` with N ``[[mics]]`` of ``kind = "file"``, ``realtime = true``,
``loop = true`` (the same recording, so every microphone does the same work), follows gRPC ``StreamEvents``
and for every window records ``receive time - window end`` (window-to-event: analysed, stored durably,
published). After a warm-up (every microphone's first window, which staggering spreads over one hop) it
measures for ``--seconds``: windows seen and expected, windows dropped (``roomtone_windows_dropped_total``),
latency percentiles, the daemon's CPU (utime + stime from /proc) per wall second and per microphone, its
RSS and threads. N steps up until windows drop or p99 window-to-event passes ``--max-p99-s``. Usage:

    nice -n 19 .venv/bin/python -m bench.many_mics                       # 16 .. 256 microphones, ~12 min
    nice -n 19 .venv/bin/python -m bench.many_mics --mics 64 128 --seconds 40 --no-stagger
    nice -n 19 .venv/bin/python -m bench.many_mics --write-docs          # tables + plot into docs/performance.md

Prints one JSON line per N and a summary; ``--write-docs`` writes the table between the ``many-mics`` markers
of docs/performance.md and the plot to docs/img/many-mics.png. Figures taken on a loaded machine are upper
bounds (the load average is printed with each).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc
import numpy as np

from bench.daemon_process import Daemon
from bench.host import load_average
from bench.doc_sections import write_marked_section
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

REPO = Path(__file__).resolve().parents[1]

DEFAULT_CLIP = REPO / "service" / "assets" / "demo.flac"
DOC = REPO / "docs" / "performance.md"
PLOT = REPO / "docs" / "img" / "many-mics.png"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Step:
    """What one N gave."""

    mics: int
    seconds: float  # measured wall time
    windows_seen: int
    windows_expected: int  # N * seconds / hop
    dropped: int  # roomtone_windows_dropped_total over the whole run
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None
    max_s: float | None
    cpu_cores: float  # daemon CPU-seconds per wall second while measuring
    cpu_ms_per_mic_s: float  # ... per microphone (ms of CPU per second of audio)
    cpu_ms_per_window: float
    rss_mib: float
    peak_rss_mib: float
    rss_mib_per_mic: float  # (RSS - RSS of the 1-microphone baseline) / (N - 1); None for N = 1
    threads: int
    load_average: str
    holds: bool


def write_config(path: Path, mics: int, clip: Path, hop_s: float, stagger: bool) -> None:
    """A daemon config with ``mics`` real-time looping file microphones of ``clip``."""
    lines = ["[pipeline]", f"hop_s = {hop_s}", f"stagger = {'true' if stagger else 'false'}", "",
             "[web]", "port = 0", ""]  # the web page on, as a user has it
    for i in range(mics):
        lines += ["[[mics]]", f'id = "mic{i:03d}"', 'kind = "file"', f'path = "{clip}"', "realtime = true",
                  "loop = true", ""]
    path.write_text("\n".join(lines))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KiB) and Threads of a process."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(value.split()[0])
    return out


class WindowFollower:
    """A StreamEvents client on a thread: receive time minus window end of every window while ``recording``."""

    def __init__(self, address: str) -> None:
        self.latencies: list[float] = []
        self.recording = threading.Event()
        self._channel = grpc.insecure_channel(address)
        self._stream = pb_grpc.RoomtoneStub(self._channel).StreamEvents(
            pb.StreamEventsRequest(filter=pb.EventFilter(kinds=[pb.EVENT_KIND_WINDOW])))
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for event in self._stream:
                if event.HasField("window") and self.recording.is_set():
                    self.latencies.append(time.time() - event.window.end_unix_ms / 1000.0)
        except grpc.RpcError:
            pass  # cancelled by close()

    def close(self) -> None:
        """Cancel the stream and end the thread."""
        self._stream.cancel()
        self._thread.join(10)
        self._channel.close()


def run_step(mics: int, args, baseline_rss: float | None) -> Step:
    """Start the daemon with ``mics`` microphones, warm up, measure, stop."""
    data = Path(tempfile.mkdtemp(prefix=f"roomtone-mics{mics}-"))
    config = data / "mics.toml"
    write_config(config, mics, args.clip, args.hop_s, not args.no_stagger)
    daemon = Daemon(["--config", str(config), "--model", args.model], data, timeout=300)
    follower = WindowFollower(daemon.grpc_address)
    try:
        time.sleep(args.warmup_s)  # every microphone's first window (stagger spreads them over one hop)
        pid = daemon.proc.pid
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        follower.recording.set()
        time.sleep(args.seconds)
        follower.recording.clear()
        cpu1, t1 = cpu_seconds(pid), time.monotonic()
        status = proc_status(pid)
        load = load_average()
        dropped = int(daemon.metric("roomtone_windows_dropped_total"))
    finally:
        follower.close()
        daemon.stop(120)
    latencies = follower.latencies
    wall = t1 - t0
    seen = len(latencies)
    values = np.asarray(latencies)
    pct = (lambda q: round(float(np.percentile(values, q)), 3)) if seen else (lambda q: None)
    cores = (cpu1 - cpu0) / wall
    rss = status["VmRSS"] / 1024
    step = Step(
        mics=mics, seconds=round(wall, 1), windows_seen=seen, windows_expected=int(mics * wall / args.hop_s),
        dropped=dropped, p50_s=pct(50), p95_s=pct(95), p99_s=pct(99),
        max_s=round(float(values.max()), 3) if seen else None, cpu_cores=round(cores, 3),
        cpu_ms_per_mic_s=round(1000 * cores / mics, 2),
        cpu_ms_per_window=round(1000 * (cpu1 - cpu0) / seen, 1) if seen else float("nan"),
        rss_mib=round(rss, 1), peak_rss_mib=round(status["VmHWM"] / 1024, 1),
        rss_mib_per_mic=round((rss - baseline_rss) / (mics - 1), 2) if baseline_rss and mics > 1 else None,
        threads=status["Threads"], load_average=load, holds=False)
    step.holds = (dropped == 0 and seen >= 0.9 * step.windows_expected and step.p99_s is not None
                  and step.p99_s <= args.max_p99_s)
    return step


def markdown(steps: list[Step], args, command: str) -> str:
    """The docs table."""
    rows = ["| microphones | windows seen / expected | dropped | window-to-event p50 / p95 / p99 / max s | daemon CPU "
            "(cores) | CPU ms per mic-second | CPU ms per window | RSS MiB (peak) | RSS MiB per extra mic | threads | "
            "load average | holds |", "|" + "---|" * 12]
    for s in steps:
        rows.append(f"| {s.mics} | {s.windows_seen} / {s.windows_expected} | {s.dropped} | {s.p50_s} / {s.p95_s} / "
                    f"{s.p99_s} / {s.max_s} | {s.cpu_cores} | {s.cpu_ms_per_mic_s} | {s.cpu_ms_per_window} | "
                    f"{s.rss_mib} ({s.peak_rss_mib}) | {s.rss_mib_per_mic if s.rss_mib_per_mic is not None else '-'} | "
                    f"{s.threads} | {s.load_average} | {'yes' if s.holds else '**no**'} |")
    held = [s.mics for s in steps if s.holds]
    return (f"`{command}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, hop {args.hop_s:g} s, "
            f"{'staggered' if not args.no_stagger else 'unstaggered'} window ends, {args.seconds:g} s measured per N "
            f"after {args.warmup_s:g} s of warm-up). Largest N that holds (no drop, p99 <= {args.max_p99_s:g} s): "
            f"**{max(held) if held else 'none'}**.\n\n" + "\n".join(rows) + "\n\n![daemon CPU and RSS against the "
            "number of real-time microphones](img/many-mics.png)\n")


def plot(steps: list[Step], path: Path) -> None:
    """CPU (cores), RSS and p99 latency against N."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [s.mics for s in steps]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    axes[0].plot(n, [s.cpu_cores for s in steps], "o-")
    axes[0].set(xlabel="real-time microphones", ylabel="daemon CPU (cores)", title="CPU")
    axes[1].plot(n, [s.rss_mib for s in steps], "o-", color="tab:orange")
    axes[1].set(xlabel="real-time microphones", ylabel="RSS (MiB)", title="memory")
    axes[2].plot(n, [s.p99_s for s in steps], "o-", color="tab:red")
    axes[2].set(xlabel="real-time microphones", ylabel="p99 window-to-event (s)", title="latency")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    """Step N up, print each step, optionally write docs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mics", type=int, nargs="+", default=[1, 16, 64, 100, 160, 256],
                        help="microphone counts to try, in order; stops after the first that does not hold")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured wall time per N (s)")
    parser.add_argument("--warmup-s", type=float, default=15.0, help="wait after start before measuring (s)")
    parser.add_argument("--hop-s", type=float, default=10.0, help="pipeline hop (the default window is 10 s)")
    parser.add_argument("--max-p99-s", type=float, default=2.0, help="a step holds while p99 stays at most this")
    parser.add_argument("--no-stagger", action="store_true", help="pipeline.stagger = false: windows end together")
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP, help="the recording every microphone plays")
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--keep-going", action="store_true", help="try every N even after one fails")
    parser.add_argument("--write-docs", action="store_true", help="write the table and plot into docs/")
    args = parser.parse_args(argv)
    steps: list[Step] = []
    baseline = None
    for mics in args.mics:
        step = run_step(mics, args, baseline)
        if mics == 1:
            baseline = step.rss_mib
        steps.append(step)
        print(json.dumps(asdict(step)), flush=True)
        if not step.holds and not args.keep_going:
            break
    held = [s.mics for s in steps if s.holds]
    print(json.dumps({"largest_n_that_holds": max(held) if held else None}))
    if args.write_docs:
        command = "nice -n 19 .venv/bin/python -m bench.many_mics " + " ".join(argv if argv is not None else sys.argv[1:])
        write_marked_section(DOC, "many-mics", markdown(steps, args, command.strip()))
        plot(steps, PLOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
