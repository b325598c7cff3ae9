"""Fixtures of the reliability tests: a small real model file (shared with tests/service)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from daemon_support import small_model_file  # noqa: E402


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, homesounds) -> Path:
    """A width-4 model file with a head (fast enough to run the daemon at hundreds of windows a second)."""
    return small_model_file(tmp_path_factory.mktemp("model") / "small.pt", homesounds)


@pytest.fixture(scope="session")
def clip(homesounds) -> Path:
    """A real 10 s 16 kHz mono recording."""
    return homesounds / "audio" / "typing" / "typing_A1_000.flac"
