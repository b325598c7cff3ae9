"""Soak: many windows through the daemon at accelerated speed, watching memory and file descriptors.

Runs ``roomtone run --file CLIP --fast --loop --hop-s 1 --max-windows N`` (a real 10 s recording read as
fast as the pipeline takes it, a window every 1 s of audio) and samples the daemon's RSS and open file
descriptors from /proc with roomtone_windows_total from /metrics every 0.5 s. RSS is compared between the
end of the warm-up (the first 10% of windows) and the end. Usage:

    .venv/bin/python -m bench.soak                       # 10,000 windows, bundled model
    .venv/bin/python -m bench.soak --windows 1000 --window-s 1 --hop-s 0.5 --model small.pt

Prints one JSON object: windows, seconds, windows_per_s, rss_mib (warm/end/max), fds (warm/end/max), exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.daemon_process import REPO, Daemon

DEFAULT_CLIP = REPO.parent / "shared" / "data" / "homesounds" / "audio" / "typing" / "typing_A1_000.flac"


def soak(windows: int, model: str, clip: str, window_s: float = 10.0, hop_s: float = 1.0, timeout_s: float = 3600) -> dict:
    """Run the soak and return its figures."""
    with tempfile.TemporaryDirectory(prefix="roomtone-soak-") as data:
        daemon = Daemon(["--model", model, "--file", f"soak={clip}", "--fast", "--loop", "--window-s", str(window_s),
                         "--hop-s", str(hop_s), "--max-windows", str(windows), "--no-grpc"], Path(data))
        t0 = time.monotonic()
        samples = []  # (windows stored, rss MiB, fds)
        try:
            while daemon.proc.poll() is None and time.monotonic() - t0 < timeout_s:
                try:
                    fds, rss = daemon.open_fds(), daemon.rss_mib()  # before the scrape opens a socket of its own
                    samples.append((daemon.metric("roomtone_windows_total"), rss, fds))
                except (OSError, ValueError):
                    pass  # the daemon is stopping by itself (max windows reached): let it finish, do not signal it
                time.sleep(0.5)
        finally:
            code = daemon.stop()
        seconds = time.monotonic() - t0
    warm = next((s for s in samples if s[0] >= 0.1 * windows), samples[0])
    end = samples[-1]
    return {
        "windows": windows, "windows_at_last_sample": int(end[0]), "seconds": round(seconds, 1),
        "windows_per_s": round(windows / seconds, 1),
        "rss_mib": {"warm": round(warm[1], 1), "end": round(end[1], 1), "max": round(max(s[1] for s in samples), 1)},
        "fds": {"warm": warm[2], "end": end[2], "max": max(s[2] for s in samples)},
        "samples": len(samples), "exit_code": code,
    }


def main() -> int:
    """Parse options, run, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=10_000)
    parser.add_argument("--model", default=str(REPO / "models" / "roomtone.pt"))
    parser.add_argument("--clip", default=str(DEFAULT_CLIP))
    parser.add_argument("--window-s", type=float, default=10.0, help="window length (shorter = faster soak)")
    parser.add_argument("--hop-s", type=float, default=1.0)
    args = parser.parse_args()
    print(json.dumps(soak(args.windows, args.model, args.clip, args.window_s, args.hop_s), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
