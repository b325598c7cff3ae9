"""Fixtures the tests of service/ share (the data ones, ``homesounds`` and ``shared_data``, are in
tests/conftest.py; the helpers they are built from are in daemon_support.py). Each is built once per
session and read-only: a test that changes a model or a bundle copies it first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from daemon_support import small_model_file, tiny_bundle  # tests/service/ is on sys.path (conftest's folder)
from encoder.model_file import ModelBundle

RATE = 16000


@pytest.fixture(scope="session")
def small_model(tmp_path_factory, homesounds: Path) -> Path:
    """A width-4 model file with a head (water, typing, speech) and its ONNX graph: fast enough to run the
    daemon at hundreds of windows a second."""
    return small_model_file(tmp_path_factory.mktemp("model") / "small.pt", homesounds)


@pytest.fixture(scope="session")
def bundle(homesounds: Path) -> ModelBundle:
    """A tiny model in memory whose head knows two classes, speech and water (one clip each)."""
    audio = homesounds / "audio"
    return tiny_bundle({"speech": [audio / "speech" / "speech_A1_000.flac"], "water": [audio / "water" / "water_A1_000.flac"]})


@pytest.fixture(scope="session")
def speech(homesounds: Path) -> np.ndarray:
    """10 s of a real speech recording the bundle's head never saw: ``[1, n]`` float32 at 16 kHz."""
    data, rate = soundfile.read(homesounds / "audio" / "speech" / "speech_A1_001.flac", dtype="float32", always_2d=True)
    assert rate == RATE
    return data.T[:, : 10 * RATE]
