"""Resident memory of the daemon with the model loaded, and whether it stays flat over an accelerated soak.

    .venv/bin/python -m bench.memory                       # 10,000 windows, file source as fast as possible
    .venv/bin/python -m bench.memory --windows 2000 --file some.flac
    .venv/bin/python -m bench.memory --windows 2000 --no-allocator-tuning   # glibc's malloc defaults

Starts ``roomtone run --file mic0=FILE --fast --loop --max-windows N`` (the bundled model, gRPC and
/metrics on free loopback ports; default file: the bundled demo recording) and samples, every
``--every`` seconds, the daemon's VmRSS (and its anonymous / file-backed parts) from /proc, its open
file descriptors, and ``roomtone_windows_total`` from /metrics. Prints the RSS at the first stored
window and at each tenth of the run, the peak, and the growth per 1,000 windows over the second half
(flat = close to 0). For scale it also prints what ``python -c "import torch"`` alone holds.

Issue 10's soak (file descriptors, crash safety) can reuse this: ``--json`` writes every sample.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench.daemon_process import Daemon
from bench.host import load_average, machine

REPO = Path(__file__).resolve().parents[1]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon and RssFile of a process in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def import_torch_rss_mib() -> float:
    """Resident memory of a bare Python that has imported torch (the floor of any torch process)."""
    code = "import torch, re; print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--file", default=str(REPO / "service" / "assets" / "demo.flac"))
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--every", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--no-allocator-tuning", action="store_true", help="run the daemon with glibc's malloc defaults")
    parser.add_argument("--json", help="write every sample here")
    args = parser.parse_args()

    baseline = import_torch_rss_mib()
    data = Path(tempfile.mkdtemp(prefix="roomtone-memory-"))
    launcher = None
    if args.no_allocator_tuning:  # the same daemon with glibc's malloc defaults, for comparison
        launcher = [sys.executable, "-c", "import sys, encoder.allocator as a; a.reuse_freed_memory = lambda *_: False; "
                    "from service.cli.main import main; sys.exit(main())"]
    started_at = datetime.now(timezone.utc)
    load_before = load_average()
    daemon = Daemon(["--file", f"mic0={args.file}", "--fast", "--loop", "--max-windows", str(args.windows),
                     "--model", args.model, "--compute-device", "cpu"], data, timeout=180, launcher=launcher)
    samples = []
    start = time.perf_counter()
    while daemon.proc.poll() is None:
        try:
            memory = memory_kib(daemon.proc.pid)
            fds = daemon.open_fds()
            stored = int(daemon.metric("roomtone_windows_total"))
        except (OSError, ValueError):
            break  # the daemon is exiting
        samples.append({"t_s": round(time.perf_counter() - start, 1), "windows": stored, "fds": fds,
                        **{k.lower() + "_mib": round(v / 1024, 1) for k, v in memory.items()}})
        time.sleep(args.every)
    code = daemon.proc.wait(120)
    elapsed = time.perf_counter() - start
    if args.json:
        Path(args.json).write_text(json.dumps(samples, indent=0))
    stored = [s for s in samples if s["windows"] > 0]
    if not stored:
        raise SystemExit("no window was stored")
    windows = np.array([s["windows"] for s in stored], dtype=float)
    rss = np.array([s["vmrss_mib"] for s in stored])
    second_half = windows >= windows[-1] / 2
    slope = np.polyfit(windows[second_half], rss[second_half], 1)[0] * 1000 if second_half.sum() >= 3 else float("nan")
    print(f"{started_at:%Y-%m-%d %H:%M UTC}; {machine()}; load average {load_before} before, {load_average()} after")
    print(f"malloc: {'glibc defaults' if args.no_allocator_tuning else 'tuned (encoder.allocator)'}")
    print(f"daemon: {windows[-1]:.0f} windows in {elapsed:.0f} s ({windows[-1] / elapsed:.1f} windows/s), exit code {code}")
    print(f"python -c 'import torch' alone: {baseline:.0f} MiB resident\n")
    print("| windows stored | VmRSS MiB | anonymous MiB | file-backed MiB | open fds |\n|---|---|---|---|---|")
    marks = sorted({0, *[int(i * (len(stored) - 1) / 10) for i in range(1, 11)]})
    for i in marks:
        s = stored[i]
        print(f"| {s['windows']} | {s['vmrss_mib']} | {s['rssanon_mib']} | {s['rssfile_mib']} | {s['fds']} |")
    print(f"\npeak VmRSS (VmHWM) {max(s['vmhwm_mib'] for s in stored)} MiB; "
          f"growth over the second half {slope:+.2f} MiB per 1,000 windows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
