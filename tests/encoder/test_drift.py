"""Specification of embedding drift (encoder/drift.py): a microphone that keeps sounding like itself
is never flagged; one odd window is not enough; one that keeps sounding unlike its history is flagged
within a minute and stays flagged until reset."""

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
    tracker = DriftTracker(DriftConfig(learn_s=300.0))
    other = room(9, 1, centre_seed=7)[0]
    for embedding in room(1, 29):
        result = tracker.update(embedding)
        assert result == DriftScore(0.0, False, False, result.distance)
    assert not tracker.score(other).flagged
    tracker.update(room(2, 1)[0])
    assert tracker.ready and tracker.score(other).flagged


def test_a_microphone_that_keeps_sounding_like_itself_is_flagged_at_most_1_percent_of_the_time():
    tracker = trained()
    results = [tracker.update(e) for e in room(2, 500)]
    assert all(r.ready for r in results)
    assert sum(r.flagged for r in results) <= 5


def test_one_odd_window_is_not_drift_but_a_lasting_change_is_flagged_within_a_minute():
    tracker = trained()
    elsewhere = room(3, 6, centre_seed=42)
    first = tracker.update(elsewhere[0])
    assert not first.flagged and first.window_score > 0
    later = [tracker.update(e) for e in elsewhere[1:]]
    assert later[-1].flagged and later[-1].score >= tracker.config.threshold
    assert later[-1].distance > 0.5


def test_a_lasting_change_is_not_learned_so_it_stays_flagged():
    tracker = trained()
    results = [tracker.update(e) for e in room(4, 100, centre_seed=42)]
    assert all(r.flagged for r in results[tracker.persistence :])


def test_a_microphone_with_many_kinds_of_sound_is_judged_against_the_nearest_kind():
    # A room that hears three different activities: each is usual, none is near their mean.
    tracker = DriftTracker()
    kinds = [room(10 + i, 40, centre_seed=100 + i) for i in range(3)]
    for step in range(40):
        for kind in kinds:
            tracker.update(kind[step])
    assert not any(tracker.update(e).flagged for kind_seed in (100, 101, 102) for e in room(50, 10, centre_seed=kind_seed))
    assert tracker.update(room(60, 6, centre_seed=7)[-1]).window_score > 1


def test_score_does_not_change_the_tracker_and_reset_forgets():
    tracker = trained()
    before = json.dumps(tracker.to_dict())
    tracker.score(room(5, 1, centre_seed=42)[0])
    assert json.dumps(tracker.to_dict()) == before
    count = tracker.count
    tracker.update(room(6, 1)[0], learn=False)
    assert tracker.count == count
    tracker.reset()
    assert not tracker.ready and tracker.score(room(7, 1)[0]) == DriftScore(0.0, False, False, 1.0)


def test_the_baseline_survives_a_json_round_trip_exactly():
    tracker = trained()
    for e in room(11, 3):
        tracker.update(e)  # some scores remembered and windows pending
    restored = DriftTracker.from_dict(json.loads(json.dumps(tracker.to_dict())))
    probe = room(8, 3, centre_seed=5)
    assert [restored.score(e) for e in probe] == [tracker.score(e) for e in probe]
    assert [restored.update(e) for e in probe] == [tracker.update(e) for e in probe]


def test_a_saved_baseline_of_another_kind_is_rejected_by_name():
    with pytest.raises(ValueError, match="format"):
        DriftTracker.from_dict({"centroid": []})
    data = trained().to_dict()
    del data["distance_var"]
    with pytest.raises(ValueError, match="distance_var"):
        DriftTracker.from_dict(data)
    data = trained().to_dict()
    data["exemplars"] = {"shape": [3], "float32_base64": "!!"}
    with pytest.raises(ValueError, match="exemplars"):
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
    drifted = with_drift(ok, DriftScore(7.5, True, True, 0.4, 3.0))
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


def overlapping(seed: int, seconds: float, hop_s: float, centre_seed: int = 0) -> np.ndarray:
    """Embeddings of overlapping 10 s windows every ``hop_s``: each new window only shifts a little, so
    neighbours are near-copies (one fresh direction per 10 s, blended across the overlap)."""
    fresh = room(seed, int(np.ceil(seconds / 10.0)) + 2, centre_seed)
    out = []
    for i in range(int(round(seconds / hop_s))):
        t = i * hop_s / 10.0
        a, frac = int(t), t - int(t)
        out.append(unit((1 - frac) * fresh[a] + frac * fresh[a + 1]))
    return np.stack(out)


def test_the_learning_period_is_a_duration_whatever_the_hop():
    for hop_s in (10.0, 2.0, 0.5):
        tracker = DriftTracker(DriftConfig(learn_s=300.0), hop_s=hop_s, window_s=10.0)
        windows = overlapping(1, 320.0, hop_s)
        ready_at = next(i for i, e in enumerate(windows) if tracker.update(e).ready)
        assert ready_at * hop_s == pytest.approx(300.0, abs=10.0), hop_s  # five minutes, not 30 windows


def test_with_a_short_hop_ordinary_sound_changes_are_not_drift_but_a_lasting_change_still_is():
    hop_s = 0.5
    tracker = DriftTracker(hop_s=hop_s, window_s=10.0)
    for e in overlapping(1, 600.0, hop_s):
        tracker.update(e)
    assert tracker.persistence == 120 and tracker.stride == 20  # one minute of windows; one learned per 10 s
    ordinary = [tracker.update(e) for e in overlapping(2, 300.0, hop_s)]  # the same room, five more minutes
    assert sum(r.flagged for r in ordinary) <= 0.01 * len(ordinary)
    brief = [tracker.update(e) for e in overlapping(3, 20.0, hop_s, centre_seed=42)]  # 20 s of something else
    assert not any(r.flagged for r in brief)
    for e in overlapping(4, 60.0, hop_s):
        tracker.update(e)
    moved = [tracker.update(e) for e in overlapping(5, 120.0, hop_s, centre_seed=43)]  # the mic moved for good
    assert moved[-1].flagged and not any(r.flagged for r in moved[: int(30 / hop_s)])


def test_a_saved_baseline_of_the_window_count_format_is_read_as_durations():
    data = trained().to_dict()
    data["format"] = "roomtone.drift/2"
    config = {k: v for k, v in data["config"].items() if k not in ("learn_s", "persistence_s")}
    data["config"] = {**config, "min_history": 30, "persistence": 6}
    restored = DriftTracker.from_dict(data, hop_s=10.0, window_s=10.0)
    assert (restored.config.learn_s, restored.config.persistence_s) == (300.0, 60.0) and restored.ready
    shorter = DriftTracker.from_dict(trained().to_dict(), hop_s=0.5, window_s=10.0)  # the hop changed since
    assert shorter.ready and shorter.persistence == 120 and len(shorter.recent) == 0
