"""A real Debian mosquitto broker for the MQTT tests: started on a free loopback port with a generated
config, optionally with TLS (a test CA and server certificate made with openssl) and username/password
(mosquitto_passwd); plus a paho subscriber that records what arrives."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
USERNAME, PASSWORD = "roomtone", "s3cret-pass"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(*command: str, cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")


def make_test_ca(directory: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost signed by it: (ca, cert, key)."""
    directory.mkdir(parents=True, exist_ok=True)
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=roomtone test CA",
         "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
         "-out", "server.csr", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _run("openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
         "-days", "2", "-extfile", "san.ext", "-out", "server.crt", cwd=directory)
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@dataclass
class Broker:
    """One mosquitto process; `start`/`stop` may be called repeatedly (same port, same config)."""

    directory: Path
    tls: bool = False
    auth: bool = False
    port: int = field(default_factory=free_port)
    ca: Path | None = None
    proc: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice"]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it switches to user mosquitto, who cannot read pytest's tmp dirs
        if self.auth:
            passwords = self.directory / "passwd"
            passwords.write_text("")
            passwords.chmod(0o600)
            _run("mosquitto_passwd", "-b", str(passwords), USERNAME, PASSWORD, cwd=self.directory)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            self.ca, cert, key = make_test_ca(self.directory / "tls")
            lines += [f"cafile {self.ca}", f"certfile {cert}", f"keyfile {key}"]
        self.config = self.directory / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> Broker:
        """Start mosquitto and wait until it accepts TCP connections."""
        self.log = open(self.directory / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: "
                                   + (self.directory / "mosquitto.log").read_text()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        if self.proc is not None:
            self.log.close()
        self.proc = None

    def mqtt_overrides(self) -> dict[str, object]:
        """The daemon's [mqtt] keys for this broker (password written to a file next to the config)."""
        keys: dict[str, object] = {"host": "127.0.0.1", "port": self.port, "reconnect_min_s": 0.2,
                                   "reconnect_max_s": 1.0}
        if self.auth:
            password_file = self.directory / "client-password"
            password_file.write_text(PASSWORD + "\n")
            keys.update(username=USERNAME, password_file=str(password_file))
        if self.tls:
            keys["tls_ca"] = str(self.ca)
        return keys


def mosquitto_missing() -> str | None:
    """Why the broker tests cannot run here, or None."""
    for tool in (MOSQUITTO, "mosquitto_passwd", "openssl"):
        if shutil.which(tool) is None and not Path(tool).is_file():
            return f"{tool} is not installed (Debian packages mosquitto, openssl)"
    return None


def require_mosquitto() -> None:
    """Skip without mosquitto, except under CI=true, where that fails (scripts/setup.sh installs it)."""
    reason = mosquitto_missing()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI needs mosquitto for the MQTT tests: {reason}")
        pytest.skip(reason)


class Recorder:
    """A paho client subscribed to topics, keeping every message (topic, payload bytes, retain flag)."""

    def __init__(self, broker: Broker, topics: tuple[str, ...] = ("#",), client_id: str = "test-recorder") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        if broker.auth:
            self.client.username_pw_set(USERNAME, PASSWORD)
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.ca))
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the recorder could not subscribe")

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload), bool(message.retain)))

    def on(self, topic: str) -> list[bytes]:
        """Payloads received on ``topic`` so far, in order."""
        with self._lock:
            return [payload for t, payload, _ in self.messages if t == topic]

    def wait_for(self, topic: str, predicate=lambda payload: True, timeout: float = 20.0) -> bytes:
        """The first payload on ``topic`` satisfying ``predicate``; AssertionError listing what came otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for payload in self.on(topic):
                if predicate(payload):
                    return payload
            time.sleep(0.05)
        with self._lock:
            seen = sorted({t for t, _, _ in self.messages})
        raise AssertionError(f"nothing matching on {topic} within {timeout} s; topics seen: {seen}; "
                             f"payloads there: {self.on(topic)[-3:]}")

    def wait_json(self, topic: str, predicate=lambda data: True, timeout: float = 20.0) -> dict:
        """The first JSON payload on ``topic`` for which ``predicate(data)`` holds."""
        def matches(payload: bytes) -> bool:
            try:
                return bool(payload) and predicate(json.loads(payload))
            except ValueError:
                return False
        return json.loads(self.wait_for(topic, matches, timeout))

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()
