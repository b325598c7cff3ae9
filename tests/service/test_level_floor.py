"""`quiet` relative to the microphone (service/analysis/level_floor.py): each microphone's noise floor learnt from its
own window levels, bounded, seeded from the store when the daemon starts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from daemon_support import tiny_bundle  # tests/service/ is on sys.path
from encoder.windows import WindowSpec
from service.analysis.analyser import Analyser
from service.config import ActivityConfig
from service.store.event_store import EventStore
from service.analysis.level_floor import LEVEL_BIN_DB, LevelHistory, history_capacity, quiet_below_dbfs
from service.records import WindowResult
from service.capture.windowing import Window

RATE = 16000
HOP_S = 10.0
HOUR = int(3600 / HOP_S)  # windows in an hour


def history_of(levels) -> LevelHistory:
    history = LevelHistory(history_capacity(ActivityConfig(), HOP_S))
    history.extend(levels)
    return history


def room(floor_dbfs: float, hours: float = 2.0, seed: int = 0) -> np.ndarray:
    """A day's window levels: the room's floor (+-2 dB) most of the time, an activity 25 dB above a third of it."""
    rng = np.random.default_rng(seed)
    n = int(hours * HOUR)
    levels = floor_dbfs + rng.uniform(0.0, 2.0, n)
    busy = rng.random(n) < 1 / 3
    levels[busy] += 25.0
    return levels


def test_a_percentile_of_the_history_is_exact_to_one_bin() -> None:
    history = history_of(np.arange(-60.0, -40.0, 0.5))  # 40 levels
    assert history.percentile(0) == pytest.approx(-60.0, abs=LEVEL_BIN_DB)
    assert history.percentile(50) == pytest.approx(-50.5, abs=LEVEL_BIN_DB)
    assert history.percentile(100) == pytest.approx(-40.5, abs=LEVEL_BIN_DB)
    assert LevelHistory(10).percentile(5) is None


def test_the_history_forgets_levels_beyond_its_capacity() -> None:
    history = LevelHistory(3)
    history.extend([-80.0, -50.0, -50.0, -50.0])
    assert len(history) == 3 and history.percentile(0) == pytest.approx(-50.0)


@pytest.mark.parametrize("before, batch", [(0, 5), (2, 3), (3, 9), (7, 4), (5, 25)],
                         ids=["empty", "fills_it", "overflows_it", "wraps_a_full_ring", "longer_than_it"])
def test_extending_at_once_leaves_the_history_that_adding_one_by_one_leaves(before: int, batch: int) -> None:
    rng = np.random.default_rng(before * 100 + batch)
    earlier, levels, later = (list(rng.uniform(-90.0, -20.0, n)) for n in (before, batch, 6))
    levels[1] = float("nan")  # ignored either way
    one_by_one, at_once = LevelHistory(8), LevelHistory(8)
    for level in earlier:
        one_by_one.add(level)
        at_once.add(level)
    for level in levels:
        one_by_one.add(level)
    at_once.extend(levels)
    for level in [None, *later]:  # the same levels are forgotten next, oldest first
        if level is not None:
            one_by_one.add(level)
            at_once.add(level)
        assert len(at_once) == len(one_by_one)
        assert [at_once.percentile(q) for q in (0, 25, 50, 75, 100)] == [one_by_one.percentile(q) for q in (0, 25, 50, 75, 100)]


def test_a_microphone_20_db_quieter_learns_a_threshold_20_db_lower() -> None:
    config = ActivityConfig()
    near = quiet_below_dbfs(history_of(room(-55.0)), config, HOP_S)
    far = quiet_below_dbfs(history_of(room(-75.0)), config, HOP_S)
    assert near - far == pytest.approx(20.0, abs=2 * LEVEL_BIN_DB)
    assert -55.0 < near < -30.0  # above the room, below its activity
    assert far < config.quiet_below_dbfs - 15.0  # the far microphone's speech (-50 dBFS) is not quiet


def test_the_absolute_floor_decides_until_an_hour_of_history_and_with_relative_quiet_off() -> None:
    config = ActivityConfig()
    assert quiet_below_dbfs(history_of(room(-75.0, hours=0.9)), config, HOP_S) == config.quiet_below_dbfs
    assert quiet_below_dbfs(None, config, HOP_S) == config.quiet_below_dbfs
    assert quiet_below_dbfs(history_of(room(-75.0)), ActivityConfig(quiet_relative=False), HOP_S) == config.quiet_below_dbfs


def test_the_learnt_threshold_stays_within_its_bounds() -> None:
    config = ActivityConfig(quiet_min_dbfs=-70.0, quiet_max_dbfs=-40.0)
    assert quiet_below_dbfs(history_of(room(-100.0)), config, HOP_S) == -70.0
    assert quiet_below_dbfs(history_of(room(-20.0)), config, HOP_S) == -40.0  # a room always this loud is never quiet


def test_bounds_out_of_order_are_refused_naming_the_keys() -> None:
    with pytest.raises(ValidationError, match="quiet_min_dbfs"):
        ActivityConfig(quiet_min_dbfs=-20.0, quiet_max_dbfs=-40.0)
    with pytest.raises(ValidationError, match="quiet_min_history_hours"):
        ActivityConfig(quiet_history_hours=1.0, quiet_min_history_hours=2.0)


def noise(level_dbfs: float, seed: int = 0) -> np.ndarray:
    return (10 ** (level_dbfs / 20) * np.random.default_rng(seed).normal(size=(1, 10 * RATE))).astype(np.float32)


@pytest.fixture(scope="module")
def bundle(homesounds: Path):
    audio = homesounds / "audio"
    return tiny_bundle({"speech": [audio / "speech" / "speech_A1_000.flac"], "water": [audio / "water" / "water_A1_000.flac"]})


def test_a_far_microphones_activity_is_not_quiet_once_its_floor_is_learnt(bundle) -> None:
    analyser = Analyser(bundle, windows=WindowSpec(hop_s=HOP_S))
    sound = noise(-48.0)  # below the absolute -45 dBFS: a far microphone's speech
    (before,), _ = analyser.analyse([Window("far", sound, RATE, 0.0, 10.0, True)])
    assert before.result.label == "quiet"
    analyser.restore_levels({"far": list(room(-66.0))})
    (after,), _ = analyser.analyse([Window("far", sound, RATE, 10.0, 20.0, True)])
    assert after.result.label != "quiet" and after.quiet_below_dbfs < -50.0
    (silent,), _ = analyser.analyse([Window("far", noise(-65.0), RATE, 20.0, 30.0, True)])
    assert silent.result.label == "quiet"  # its own empty room still is
    assert analyser.quiet_thresholds()["far"] == pytest.approx(after.quiet_below_dbfs, abs=LEVEL_BIN_DB)


def test_a_room_judged_a_dead_channel_by_its_level_teaches_the_floor_but_digital_silence_does_not(bundle) -> None:
    analyser = Analyser(bundle, windows=WindowSpec(hop_s=HOP_S), activity=ActivityConfig(quiet_min_history_hours=0.0))
    for i in range(3):  # a quiet preamp: the room at -75 dBFS, below the dead-channel floor (-70)
        (quiet_preamp,), _ = analyser.analyse([Window("attic", noise(-75.0, seed=i), RATE, 10.0 * i, 10.0 * i + 10, True)])
        assert quiet_preamp.result.health_state == "faulty"
        analyser.analyse([Window("attic", np.zeros((1, 10 * RATE), np.float32), RATE, 10.0 * i + 5, 10.0 * i + 15, True)])
    assert analyser.quiet_thresholds()["attic"] == pytest.approx(-75.0 + ActivityConfig().quiet_margin_db, abs=0.5)


def stored(mic: str, start_s: float, level: float, health: str = "ok", reasons: tuple[str, ...] = ()) -> WindowResult:
    return WindowResult(mic, int(start_s * 1000), int(start_s * 1000) + 10_000, "speech", {}, health, reasons, {}, level)


def test_the_store_gives_each_microphones_recent_levels_that_teach_a_floor_oldest_first(tmp_path: Path) -> None:
    now, t = 10 * 3600 * 1000, 9 * 3600.0
    with EventStore(tmp_path / "roomtone.db") as store:
        store.add_results([stored("hall", 1000.0, -70.0),  # older than the 2 h asked for
                           stored("hall", t, -61.0),
                           stored("hall", t + 10, -120.0, "faulty", ("dead_channel: level -120.0 dBFS",)),
                           stored("hall", t + 20, -75.0, "faulty", ("dead_channel: level -75.0 dBFS",)),
                           stored("hall", t + 30, -40.0, "faulty", ("stuck: 100% of samples repeat",)),
                           stored("hall", t + 40, -59.0, "degraded", ("hum: 50 Hz",)),
                           stored("attic", 9.5 * 3600.0, -80.0, "faulty", ("dead_channel: level -80.0 dBFS",))])
        assert store.recent_levels(2.0, now_unix_ms=now) == {"hall": [-61.0, -75.0, -59.0], "attic": [-80.0]}
