"""Specification of embedding drift (encoder/drift.py): a microphone that keeps sounding like itself
is never flagged; one that suddenly sounds unlike its history is, and stays flagged until reset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from encoder.drift import DriftConfig, DriftScore, DriftTracker, with_drift
from encoder.signal_checks import WindowHealth

DIM = 256


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def room(seed: int, count: int, centre_seed: int = 0, spread: float = 0.05) -> np.ndarray:
    """Embeddings of one place: a fixed direction plus per-window variation, L2-normalised like the encoder's."""
    centre = np.random.default_rng(centre_seed).normal(size=DIM)
    centre /= np.linalg.norm(centre)
    noise = np.random.default_rng(seed).normal(scale=spread, size=(count, DIM))
    return unit(centre + noise)


def trained(count: int = 60) -> DriftTracker:
    tracker = DriftTracker()
    for embedding in room(1, count):
        tracker.update(embedding)
    return tracker


def test_no_score_is_given_before_the_minimum_history():
    tracker = DriftTracker(DriftConfig(min_history=30))
    other = room(9, 1, centre_seed=7)[0]
    for embedding in room(1, 29):
        result = tracker.update(embedding)
        assert result == DriftScore(0.0, False, False, result.distance)
    assert not tracker.score(other).flagged
    tracker.update(room(2, 1)[0])
    assert tracker.ready and tracker.score(other).flagged


def test_a_microphone_that_keeps_sounding_like_itself_is_never_flagged():
    tracker = trained()
    results = [tracker.update(e) for e in room(2, 500)]
    assert all(r.ready for r in results)
    assert not any(r.flagged for r in results)


def test_a_window_from_another_place_is_flagged_with_a_high_score():
    tracker = trained()
    result = tracker.update(room(3, 1, centre_seed=42)[0])
    assert result.flagged and result.score > 10
    assert result.distance > 0.5


def test_flagged_windows_are_not_learned_so_a_lasting_change_stays_flagged():
    tracker = trained()
    assert all(tracker.update(e).flagged for e in room(4, 100, centre_seed=42))


def test_score_does_not_learn_and_reset_forgets():
    tracker = trained()
    before = tracker.to_dict()
    tracker.score(room(5, 1, centre_seed=42)[0])
    tracker.update(room(6, 1)[0], learn=False)
    assert tracker.to_dict() == before
    tracker.reset()
    assert not tracker.ready and tracker.score(room(7, 1)[0]) == DriftScore(0.0, False, False, 0.0)


def test_the_baseline_survives_a_json_round_trip():
    tracker = trained()
    restored = DriftTracker.from_dict(json.loads(json.dumps(tracker.to_dict())))
    probe = room(8, 3, centre_seed=5)
    assert [restored.score(e) for e in probe] == [tracker.score(e) for e in probe]


def test_a_saved_baseline_of_another_kind_is_rejected_by_name():
    with pytest.raises(ValueError, match="format"):
        DriftTracker.from_dict({"centroid": []})
    data = trained().to_dict()
    del data["distance_var"]
    with pytest.raises(ValueError, match="distance_var"):
        DriftTracker.from_dict(data)
    with pytest.raises(ValueError, match="memry"):
        DriftConfig.from_dict({"memry": 10})


def test_an_embedding_of_another_size_or_with_nan_is_an_error():
    tracker = trained()
    with pytest.raises(ValueError, match="128"):
        tracker.score(np.ones(128, np.float32))
    bad = room(1, 1)[0].copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tracker.update(bad)


def test_with_drift_adds_the_check_and_degrades_an_ok_window():
    ok = WindowHealth("ok", (), {"clipping": 0.0}, {"clipping": False})
    drifted = with_drift(ok, DriftScore(7.5, True, True, 0.4))
    assert drifted.state == "degraded"
    assert drifted.flags == {"clipping": False, "drift": True}
    assert drifted.scores["drift"] == 7.5 and drifted.scores["drift_ready"] == 1.0
    assert drifted.reasons[0].startswith("drift:")
    assert with_drift(ok, DriftScore(0.0, False, False)).state == "ok"


def test_with_drift_keeps_a_faulty_state_and_its_reasons():
    faulty = WindowHealth("faulty", ("dead_channel: ...",), {}, {"dead_channel": True})
    result = with_drift(faulty, DriftScore(9.0, True, True, 0.5))
    assert result.state == "faulty"
    assert result.reasons[0] == "dead_channel: ..." and result.reasons[1].startswith("drift:")
