"""The machine a bench ran on, printed beside every figure: CPU model, cores and torch's version, and the
load average (figures taken under load are upper bounds)."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def machine() -> str:
    """CPU model, core count and the installed torch, for the record next to every figure."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        torch = f"torch {metadata.version('torch')}"
    except metadata.PackageNotFoundError:
        torch = "no torch"
    return f"{model}, {os.cpu_count()} cores, {torch}"


def load_average() -> str:
    """The 1/5/15-minute load average as text."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
