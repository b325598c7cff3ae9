"""Shared fixtures: the vendored test clips (tests/data, always present) and the full shared sets
(../shared/data, present in CI and on the developers' machines, absent from a user's clone).

Tests that need the full shared sets ask for the ``shared_data`` fixture (or ``full_homesounds``);
they are marked ``shared_data`` and skip with the reason when ../shared/data is absent, unless
TESTS_REQUIRE_SHARED_DATA=1 (set by .ci/run), which turns that skip into a failure.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

# Test daemons serve their web page on a free port, never on 9480, where a real roomtone (or another test
# session on this machine) may listen; a test that sets ROOMTONE_WEB__PORT itself still wins.
os.environ.setdefault("ROOMTONE_WEB__PORT", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
VENDORED_HOMESOUNDS = REPO / "tests" / "data" / "homesounds"
REQUIRE_SHARED = "TESTS_REQUIRE_SHARED_DATA"
SHARED_FIXTURES = {"shared_data", "full_homesounds"}


def shared_data_present() -> bool:
    """True when ../shared/data holds the labelled sets."""
    return (SHARED_DATA / "homesounds" / "meta.csv").is_file()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses the full shared sets, so `-m "not shared_data"` selects the rest."""
    for item in items:
        if SHARED_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared_data)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data (all 320 homesounds clips, music, unlabelled); skips without it, and fails
    without it when TESTS_REQUIRE_SHARED_DATA=1 so that CI never skips these tests silently."""
    if not shared_data_present():
        message = f"the full shared data sets are not at {SHARED_DATA} (a clone without ../shared)"
        if os.environ.get(REQUIRE_SHARED) == "1":
            pytest.fail(f"{message}, and {REQUIRE_SHARED}=1 requires them")
        pytest.skip(message)
    return SHARED_DATA


@pytest.fixture(scope="session")
def full_homesounds(shared_data: Path) -> Path:
    """The whole homesounds stand-in for SINS (320 clips, 4 folds)."""
    return shared_data / "homesounds"


@pytest.fixture(scope="session")
def homesounds() -> Path:
    """The vendored homesounds subset (tests/data/homesounds: 22 real clips, same layout and meta.csv)."""
    return VENDORED_HOMESOUNDS


@pytest.fixture(autouse=True)
def roomtone_logs_reach_caplog():
    """A test that runs the CLI calls `configure_logging`, which stops the ``roomtone`` logger propagating
    to the root (where pytest's caplog listens); put it back after every test so that later tests see logs."""
    logger = logging.getLogger("roomtone")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]
