"""Column maps kept in the store for custom sounds (pruned by age), "not this" through the SoundService, and
the periodic recalibration (service/analysis/sound_upkeep.py)."""

from __future__ import annotations

import numpy as np
import pytest

from service.config import SoundsConfig
from service.store.event_store import EventStore
from service.records import StateChange, WindowMap, WindowResult
from service.analysis.sound_library import SoundError, SoundLibrary, SoundService
from service.analysis.sound_upkeep import SoundUpkeep
from service.daemon_vocabulary import SOUND_DETECTED

DIM = 8
HOUR_MS = 3_600_000


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def stored_window(start_ms, columns, rng=None):
    levels = np.full(len(columns), -30.0, np.float32)
    return WindowResult("hall", start_ms, start_ms + 10_000, None, {}, "ok", (), {}, -30.0,
                        embedding=unit(columns.mean(axis=0)), map=WindowMap(columns, levels, 10.0))


def background_columns(rng):
    return rng.normal(size=(32, DIM)).astype(np.float32)


@pytest.fixture()
def service(tmp_path):
    store = EventStore(tmp_path / "roomtone.db")
    library = SoundLibrary(tmp_path / "roomtone.sounds", "a" * 64, lambda w: None, 16000, DIM, column_dim=DIM)
    yield SoundService(library, store, SoundsConfig(calibration_hours=24.0, recalibrate_hours=24.0)), store
    store.close()


def test_the_store_keeps_a_windows_column_map_close_to_what_was_computed_and_prunes_it_by_age(service):
    _, store = service
    rng = np.random.default_rng(0)
    columns = background_columns(rng)
    (old, new), _ = store.add_results([stored_window(0, columns), stored_window(HOUR_MS, columns)])
    kept = store.window_map(new.window_id)
    assert kept.columns.shape == (32, DIM) and kept.duration_s == 10.0
    assert np.abs(kept.columns - columns).max() <= np.abs(columns).max() / 127 + 1e-3  # int8 per column
    assert kept.levels == pytest.approx(np.full(32, -30.0))
    assert store.prune_window_maps(HOUR_MS) == 1
    assert store.window_map(old.window_id) is None and store.window_map(new.window_id) is not None


def test_not_this_by_event_finds_the_detections_window_and_refuses_other_events(service):
    sounds, store = service
    rng = np.random.default_rng(1)
    event = unit(np.eye(DIM)[2])
    columns = background_columns(rng)
    columns[10:14] += 5 * event
    (window,), (detection, other) = store.add_results(
        [stored_window(0, columns)],
        [StateChange(SOUND_DETECTED, "hall", 0, None, "ring", score=0.95, sound_start_ms=3125, sound_end_ms=4375),
         StateChange(SOUND_DETECTED, "hall", 0, None, "knock", score=0.95)])
    example = WindowMap(np.tile(event, (4, 1)), np.full(4, -20.0, np.float32), 1.25)
    sounds.library.add("ring", window_examples=[(window.window_id, example)], threshold=0.5)
    assert sounds.detection_window("ring", detection.event_id) == window.window_id
    with pytest.raises(SoundError) as wrong:
        sounds.detection_window("ring", other.event_id)
    assert wrong.value.reason == "invalid_argument"
    marked = sounds.not_this("ring", window.window_id)
    assert [n.window_id for n in marked.not_this] == [window.window_id]
    assert store.sound_detections(window.window_id)[0].sound_start_ms == 3125


def test_thresholds_recalibrate_against_the_store_once_due_and_not_before(service):
    sounds, store = service
    rng = np.random.default_rng(2)
    since = sounds.library.model_since_unix_ms  # windows before it were embedded by another model
    store.add_results([stored_window(since + i * 10_000, background_columns(rng)) for i in range(400)])
    example = WindowMap(np.tile(unit(np.eye(DIM)[0]), (4, 1)), np.full(4, -20.0, np.float32), 1.25)
    sound = sounds.library.add("ring", window_examples=[(1, example)])
    assert sound.calibration.startswith("default")  # no background read at add time by the library alone
    upkeep = SoundUpkeep(sounds, interval_s=3600)
    # a threshold set without history is replaced at the first pass that finds an hour of windows
    assert upkeep.run_once(sound.calibrated_unix_ms + HOUR_MS)["recalibrated"] == ["ring"]
    [calibrated] = sounds.library.sounds()
    assert calibrated.calibration.startswith("background") and calibrated.calibrated_threshold != sound.calibrated_threshold
    # one calibrated against the history waits for sounds.recalibrate_hours (24 h)
    assert upkeep.run_once(calibrated.calibrated_unix_ms + HOUR_MS)["recalibrated"] == []  # not due yet
    assert upkeep.run_once(calibrated.calibrated_unix_ms + 25 * HOUR_MS)["recalibrated"] == ["ring"]


def test_an_examples_only_threshold_stays_while_the_store_holds_less_than_an_hour(service):
    sounds, store = service
    rng = np.random.default_rng(3)
    since = sounds.library.model_since_unix_ms
    store.add_results([stored_window(since + i * 10_000, background_columns(rng)) for i in range(30)])  # 5 minutes
    example = WindowMap(np.tile(unit(np.eye(DIM)[0]), (4, 1)), np.full(4, -20.0, np.float32), 1.25)
    sound = sounds.library.add("ring", window_examples=[(1, example)])
    assert SoundUpkeep(sounds, interval_s=3600).run_once(sound.calibrated_unix_ms + HOUR_MS)["recalibrated"] == []
    [kept] = sounds.library.sounds()
    assert kept.calibration.startswith("default") and kept.calibrated_threshold == sound.calibrated_threshold
