"""Where the CPU of a ``roomtone run --file X --fast`` goes, thread by thread (issue 28 item 4).

Runs the daemon in this process (`service.cli.main.main`, the same as the ``roomtone`` command) with a
cProfile per thread on that thread's CPU clock (`time.thread_time`), so waiting for a core or for a queue
costs nothing; prints each thread's functions with the most own CPU time, each thread's CPU ms per window,
then the process's CPU per window (start-up included) and the load average. ``--no-profile`` gives the
threads' CPU without cProfile's overhead (the stage-by-stage figures to quote).

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m bench.fast_profile --windows 200
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m bench.fast_profile --windows 200 --top 25 --dump /tmp/prof
    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python -m bench.fast_profile --windows 300 --no-profile

Profiling slows Python work (each call is counted), so per-function figures are relative: they say which
stage to look at, `bench.serving_backends --parts fast` says what a change is worth. Threads that are still
still running when the daemon returns (a stage still draining, gRPC's pool) are read as they stand then.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.host import load_average

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CLIP = REPO / "tests" / "data" / "homesounds" / "audio" / "speech" / "speech_A1_000.flac"


class ThreadProfiles:
    """For every thread started while installed: its CPU seconds, and with ``profile`` a cProfile on its own
    CPU clock (and one for the caller's thread)."""

    def __init__(self, profile: bool = True) -> None:
        self.profile = profile
        self.started: list[tuple[str, cProfile.Profile]] = []
        self.threads: list[threading.Thread] = []
        self.cpu_s: dict[threading.Thread, float] = {}  # CPU seconds of each thread that has ended (idents are reused)
        self._lock = threading.Lock()
        self._original_run = threading.Thread.run

    def install(self) -> cProfile.Profile | None:
        """Watch every thread started from now on; returns the (enabled) profile of the calling thread."""
        profiles, original = self, self._original_run

        def watched_run(thread: threading.Thread) -> None:
            profile = cProfile.Profile(time.thread_time) if profiles.profile else None
            with profiles._lock:
                profiles.threads.append(thread)
                if profile is not None:
                    profiles.started.append((thread.name, profile))
            if profile is not None:
                profile.enable()
            try:
                original(thread)
            finally:
                if profile is not None:
                    profile.disable()
                profiles.cpu_s[thread] = time.thread_time()

        threading.Thread.run = watched_run
        if not self.profile:
            return None

        main = cProfile.Profile(time.thread_time)
        main.enable()
        return main

    def uninstall(self) -> None:
        """Stop watching new threads."""
        threading.Thread.run = self._original_run

    def thread_cpu_s(self) -> dict[str, float]:
        """CPU seconds per thread family: those that ended as they ended, the others from /proc now."""
        out: dict[str, float] = {}
        tick = os.sysconf("SC_CLK_TCK")
        for thread in self.threads:
            seconds = self.cpu_s.get(thread)
            if seconds is None:
                try:
                    fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1].split()
                    seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
                except (OSError, IndexError, ValueError):
                    continue
            family = thread_family(thread.name)
            out[family] = out.get(family, 0.0) + seconds
        return out


class Snapshot:
    """A profile as `pstats.Stats` reads it, without disabling it (its thread may still be running)."""

    def __init__(self, profile: cProfile.Profile) -> None:
        self._profile = profile

    def create_stats(self) -> None:
        """What `pstats.Stats` calls: the profile's figures so far."""
        self._profile.snapshot_stats()
        self.stats = self._profile.stats


def thread_family(name: str) -> str:
    """A thread's name without its counter (``ThreadPoolExecutor-0_3`` -> ``ThreadPoolExecutor``)."""
    return name.split("-")[0] if name.split("-")[-1].replace("_", "").isdigit() else name


def report(profiles: list[tuple[str, cProfile.Profile]], top: int, dump: Path | None) -> str:
    """Per thread (threads of one family summed): total CPU seconds and the ``top`` functions by own time."""
    families: dict[str, list[cProfile.Profile]] = {}
    for name, profile in profiles:
        families.setdefault(thread_family(name), []).append(profile)
    out = io.StringIO()
    totals = []
    for family, members in families.items():
        stats = pstats.Stats(Snapshot(members[0]), stream=out)
        for other in members[1:]:
            stats.add(Snapshot(other))
        totals.append((stats.total_tt, family, stats, len(members)))
    for total, family, stats, count in sorted(totals, key=lambda t: t[0], reverse=True):
        print(f"\n=== thread {family} (x{count}): {total:.2f} CPU-s", file=out)
        stats.sort_stats("tottime").print_stats(top)
        if dump is not None:
            dump.mkdir(parents=True, exist_ok=True)
            stats.dump_stats(dump / f"{family}.prof")
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    """Run the profiled daemon and print the per-thread profile."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", default=str(DEFAULT_CLIP), help="the audio file, looped")
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--backend", default="onnx", choices=["onnx", "torch"])
    parser.add_argument("--top", type=int, default=15, help="functions listed per thread")
    parser.add_argument("--dump", type=Path, default=None, help="folder for one .prof file per thread")
    parser.add_argument("--no-profile", action="store_true",
                        help="only each thread's CPU seconds (no cProfile, so no profiling overhead)")
    args = parser.parse_args(argv)

    from service.cli.main import main as roomtone

    profiles = ThreadProfiles(profile=not args.no_profile)
    loadavg_before = load_average()
    with tempfile.TemporaryDirectory() as data:
        main_profile = profiles.install()
        code = roomtone(["run", "--file", args.clip, "--fast", "--loop", "--max-windows", str(args.windows),
                         "--backend", args.backend, "--data-dir", data, "--grpc-address", "127.0.0.1:0",
                         "--metrics-port", "0", "--web-port", "0"])
        main_cpu_s = time.thread_time()
        if main_profile is not None:
            main_profile.disable()
        profiles.uninstall()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_s = usage.ru_utime + usage.ru_stime
    if main_profile is not None:
        print(report([("main", main_profile), *profiles.started], args.top, args.dump))
    threads = {"main (start-up, shutdown)": main_cpu_s, **profiles.thread_cpu_s()}
    print("CPU ms per window by thread:")
    for name, seconds in sorted(threads.items(), key=lambda t: t[1], reverse=True):
        print(f"  {name:32s} {1000 * seconds / args.windows:7.2f}")
    print(f"exit {code}; process CPU {cpu_s:.2f} s = {1000 * cpu_s / args.windows:.1f} ms per window "
          f"(start-up{'' if args.no_profile else ' and profiling'} included); "
          f"load average {loadavg_before} -> {load_average()}")
    return code


if __name__ == "__main__":
    sys.exit(main())
