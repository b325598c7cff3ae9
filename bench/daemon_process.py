"""A `roomtone run` subprocess for the reliability benches (api_load.py, soak.py): started on free loopback
ports, its JSON log read on a thread, /metrics scraped, RSS and open file descriptors read from /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOMTONE = Path(sys.executable).parent / "roomtone"


class Daemon:
    """`roomtone run ARGS --data-dir DATA` on free loopback ports; `running` is its 'roomtone running' log line."""

    def __init__(self, args: list[str], data_dir: Path, env: dict[str, str] | None = None, timeout: float = 120,
                 launcher: list[str] | None = None) -> None:
        """Start it; ``launcher`` replaces the ``roomtone`` executable (e.g. a python -c that patches something)."""
        self.lines: list[dict] = []
        self.proc = subprocess.Popen(
            [*(launcher or [str(ROOMTONE)]), "run", *args, "--data-dir", str(data_dir), "--grpc-address", "127.0.0.1:0",
             "--metrics-port", "0"], cwd=REPO, env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.running = self.wait_for("roomtone running", timeout)
        self.grpc_address = self.running["grpc"]
        self.metrics_url = f"http://127.0.0.1:{self.running['metrics_port']}/metrics"

    def _read(self) -> None:
        for line in self.proc.stderr:
            try:
                self.lines.append(json.loads(line))
            except json.JSONDecodeError:
                self.lines.append({"message": line.rstrip()})

    def wait_for(self, message: str, timeout: float) -> dict:
        """The first log entry with this message; RuntimeError with the log tail when it does not come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in list(self.lines):
                if entry.get("message") == message:
                    return entry
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no {message!r} from the daemon; log: {self.lines[-10:]}")

    def metrics(self) -> str:
        """The /metrics text."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return response.read().decode()

    def metric(self, name: str, text: str | None = None, **labels: str) -> float:
        """Sum of a metric's samples whose labels include ``labels``."""
        total = 0.0
        for line in (text if text is not None else self.metrics()).splitlines():
            head, _, value = line.rpartition(" ")
            metric, _, label_text = head.partition("{")
            if metric == name and all(f'{k}="{v}"' in label_text for k, v in labels.items()):
                total += float(value)
        return total

    def rss_mib(self) -> float:
        """Resident memory of the daemon, MiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def open_fds(self) -> int:
        """Open file descriptors of the daemon."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM and the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code



def percentile_ms(values: list[float], q: float) -> float | None:
    """The q-th percentile of seconds, in ms (None without values)."""
    if not values:
        return None
    import numpy as np

    return round(float(np.percentile(np.asarray(values), q)) * 1000, 2)
