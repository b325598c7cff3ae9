"""State files beside the store (drift baselines, the sound library) are replaced whole or not at all."""

from __future__ import annotations

import errno
import json
import os

import pytest

from service.analysis.drift_baselines import load_drift_baselines, save_drift_baselines
from service.state_files import write_atomically


def test_an_atomic_write_replaces_the_file_with_the_new_content(tmp_path):
    path = tmp_path / "state.json"
    write_atomically(path, "old")
    write_atomically(path, b"new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_write_that_fails_on_a_full_disk_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_atomically(path, "old")

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError):
        write_atomically(path, "new")
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_drift_baselines_that_cannot_be_saved_keep_the_previous_file_readable(tmp_path, monkeypatch):
    path = tmp_path / "roomtone.db.drift.json"
    save_drift_baselines(path, {"kitchen": {"n": 1}})

    def full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    save_drift_baselines(path, {"kitchen": {"n": 2}})  # logged, not raised
    assert load_drift_baselines(path) == {"kitchen": {"n": 1}}
    assert json.loads(path.read_text()) == {"kitchen": {"n": 1}}
