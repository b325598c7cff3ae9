"""Helpers for the reliability tests: a `roomtone run` subprocess whose JSON log is read on a thread,
self-signed certificates made with the openssl CLI, /proc readings (RSS, open fds), /metrics parsing and slow clients."""

from __future__ import annotations

import struct
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOMTONE = Path(sys.executable).parent / "roomtone"


from daemon_support import DaemonProcess, isolated_args  # noqa: E402,F401  (shared with tests/service)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    """Number of open file descriptors of a process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def slow_connection(port: int, timeout: float = 10.0) -> socket.socket:
    """A client on loopback ``port`` that sends the start of a request and never finishes its headers (slowloris);
    one the server refused at once may already be closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(b"GET /api/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
    except OSError:
        pass
    return sock


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


# --- broken audio files, each named for what is wrong with it ------------------------------------------

def _wav_header(channels: int, rate: int, data_bytes: int, bits: int = 16) -> bytes:
    block = channels * bits // 8
    return (b"RIFF" + struct.pack("<I", (36 + data_bytes) & 0xFFFFFFFF) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, bits)
            + b"data" + struct.pack("<I", data_bytes))


def write_bad_audio(directory: Path, clip: Path) -> dict[str, Path]:
    """Broken and odd audio files made from a real 16 kHz clip: name -> path."""
    import numpy as np
    import soundfile

    directory.mkdir(parents=True, exist_ok=True)
    x, _rate = soundfile.read(str(clip), dtype="float32")
    files = {
        "corrupt": directory / "corrupt.wav", "truncated": directory / "truncated.flac", "empty": directory / "empty.wav",
        "no_samples": directory / "no_samples.wav", "zero_channels": directory / "zero_channels.wav",
        "huge_header": directory / "huge_header.wav", "rate_8k": directory / "rate_8k.wav",
        "rate_3hz": directory / "rate_3hz.wav", "nan": directory / "nan.wav", "garbage_1e6": directory / "garbage_1e6.wav",
    }
    files["corrupt"].write_bytes(b"RIFF" + np.random.default_rng(0).bytes(4000))
    flac = clip.read_bytes()
    files["truncated"].write_bytes(flac[: len(flac) * 4 // 10])
    files["empty"].write_bytes(b"")
    soundfile.write(str(files["no_samples"]), np.zeros((0, 1), np.float32), 16000)
    files["zero_channels"].write_bytes(_wav_header(0, 16000, 32000) + bytes(32000))
    # a header that claims ~4 GiB of samples in front of 1 s of real audio
    files["huge_header"].write_bytes(_wav_header(1, 16000, 0xFFFFFF00) + (x[:16000] * 20000).astype("<i2").tobytes())
    soundfile.write(str(files["rate_8k"]), x[::2], 8000)
    soundfile.write(str(files["rate_3hz"]), x[:30], 3)
    nan = x.copy()
    nan[40000:] = np.nan
    soundfile.write(str(files["nan"]), nan, 16000, subtype="FLOAT")
    garbage = (np.random.default_rng(1).standard_normal(len(x)) * 1e6).astype(np.float32)
    soundfile.write(str(files["garbage_1e6"]), garbage, 16000, subtype="FLOAT")
    return files


#: Files no tool can use: every command must refuse them with a message naming the file.
UNUSABLE = ("corrupt", "truncated", "empty", "no_samples", "zero_channels", "nan")
#: Odd but decodable files: every command must process them (resampled, clipped, or as far as the data goes).
DECODABLE = ("huge_header", "rate_8k", "rate_3hz", "garbage_1e6")
