"""Helpers for the reliability tests: a `roomtone run` subprocess whose JSON log is read on a thread,
self-signed certificates made with the openssl CLI, /proc readings (RSS, open fds) and /metrics parsing."""

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

REPO = Path(__file__).resolve().parents[2]
ROOMTONE = Path(sys.executable).parent / "roomtone"


class DaemonProcess:
    """`roomtone run ARGS` in a subprocess; its JSON log lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, preexec_fn=None) -> None:
        self.lines: list[dict] = []
        self.raw: list[str] = []
        self.proc = subprocess.Popen([str(ROOMTONE), "run", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.raw.append(line)
            try:
                self.lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass

    def find(self, message: str) -> dict | None:
        """The first log entry with this message so far, or None."""
        return next((e for e in list(self.lines) if e.get("message") == message), None)

    def wait_for(self, message: str, timeout: float) -> dict:
        """The first log entry with this message; AssertionError with the log tail when it does not come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.find(message)
            if entry is not None:
                return entry
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line {message!r} within {timeout} s; log:\n" + "".join(self.raw[-30:]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._reader.join(5)

    def kill(self) -> None:
        """SIGKILL (no clean-up of any kind), then reap."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._reader.join(5)


def isolated_args(data_dir: Path) -> list[str]:
    """Options that keep a test daemon off the default ports and data dir."""
    return ["--data-dir", str(data_dir), "--grpc-address", "127.0.0.1:0", "--metrics-port", "0"]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    """Number of open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(url: str, context=None) -> str:
    """The text of a /metrics page."""
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        return response.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of a metric's samples whose labels include ``labels`` (0 when absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def make_certificates(directory: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for localhost/127.0.0.1 and a client certificate, via openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    d = {name: directory / f"{name}.pem" for name in ("ca", "ca_key", "server", "server_key", "client", "client_key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ext = directory / "server.ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    client_ext = directory / "client.ext"
    client_ext.write_text("extendedKeyUsage=clientAuth\n")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
            "-subj", "/CN=roomtone test CA", "-keyout", str(d["ca_key"]), "-out", str(d["ca"]))
    for name, subject, extfile in (("server", "/CN=localhost", ext), ("client", "/CN=prometheus", client_ext)):
        csr = directory / f"{name}.csr"
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", subject,
                "-keyout", str(d[f"{name}_key"]), "-out", str(csr))
        openssl("x509", "-req", "-in", str(csr), "-CA", str(d["ca"]), "-CAkey", str(d["ca_key"]),
                "-CAcreateserial", "-days", "2", "-extfile", str(extfile), "-out", str(d[name]))
    return d
