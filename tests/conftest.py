"""Shared fixtures: where the shared real audio lives, and small helpers to write test audio."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (real recordings); CI clones the repo with shared/ beside it."""
    if not (SHARED_DATA / "homesounds" / "meta.csv").is_file():
        pytest.fail(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def homesounds(shared_data: Path) -> Path:
    """The homesounds stand-in for SINS."""
    return shared_data / "homesounds"
