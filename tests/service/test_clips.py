"""Clip retention: off by default, kept per the keep mode, encoded as FLAC or Opus, expired by age and size."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import soundfile

from service.store.clips import ClipStore, ClipWriter, should_keep
from service.config import ClipsConfig, ConfigError, load_config

RATE = 16000


def tone(seconds: float = 2.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]


def test_clips_are_never_kept_by_default():
    assert ClipsConfig().keep == "none" and not ClipsConfig().enabled
    assert load_config(None, {"model": __file__}, environ={}).clips.keep == "none"


def test_events_mode_keeps_only_windows_that_show_a_state_change():
    assert should_keep("events", has_state_change=True)
    assert not should_keep("events", has_state_change=False)
    assert should_keep("all", has_state_change=False)
    assert not should_keep("none", has_state_change=True)


def test_an_unknown_keep_mode_or_codec_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"clips\.keep"):
        load_config(None, {"model": __file__, "clips": {"keep": "some"}}, environ={})
    with pytest.raises(ConfigError, match=r"clips\.codec"):
        load_config(None, {"model": __file__, "clips": {"codec": "mp3"}}, environ={})


@pytest.mark.parametrize("codec,suffix", [("flac", ".flac"), ("opus", ".ogg")])
def test_a_written_clip_decodes_back_to_the_window_length(tmp_path, codec, suffix):
    store = ClipStore(tmp_path, ClipsConfig(keep="all", codec=codec))
    path = store.write("kitchen", 1_700_000_000_000, tone(2.0), RATE)
    assert path.suffix == suffix and store.find("kitchen", 1_700_000_000_000) == path
    info = soundfile.info(str(path))
    assert info.duration == pytest.approx(2.0, abs=0.03)
    assert not list(tmp_path.rglob("*.part"))


def test_a_clip_is_found_in_the_codec_it_was_written_with_after_the_codec_changes(tmp_path):
    ClipStore(tmp_path, ClipsConfig(keep="all", codec="flac")).write("mic0", 5, tone(1.0), RATE)
    assert ClipStore(tmp_path, ClipsConfig(keep="all", codec="opus")).find("mic0", 5).suffix == ".flac"


def test_a_mic_id_that_would_leave_the_clip_directory_is_refused(tmp_path):
    with pytest.raises(ValueError):
        ClipStore(tmp_path, ClipsConfig(keep="all")).path_for("../etc", 1)


def test_retention_deletes_clips_older_than_max_age(tmp_path):
    store = ClipStore(tmp_path, ClipsConfig(keep="all", max_age_days=1.0))
    old = store.write("mic0", 1, tone(0.5), RATE)
    new = store.write("mic0", 2, tone(0.5), RATE)
    two_days_ago = time.time() - 2 * 86400
    os.utime(old, (two_days_ago, two_days_ago))
    report = store.enforce_retention()
    assert report.deleted == 1 and not old.exists() and new.exists()


def test_retention_deletes_the_oldest_clips_while_over_the_size_limit(tmp_path):
    store = ClipStore(tmp_path, ClipsConfig(keep="all", max_size_mb=0.1))  # ~2 one-second FLAC clips of noise
    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(store.write("mic0", i, (0.5 * rng.standard_normal((1, RATE))).astype(np.float32), RATE))
        os.utime(paths[-1], (1000.0 + i, 1000.0 + i))
    report = store.enforce_retention(now=1000.0 + 10)
    kept = [p for p in paths if p.exists()]
    assert report.bytes_in_use <= 0.1 * 1024 * 1024
    assert kept and kept == paths[-len(kept):]  # the newest survive


def test_the_writer_drops_and_counts_clips_when_its_queue_is_full(tmp_path):
    writer = ClipWriter(ClipStore(tmp_path, ClipsConfig(keep="all", codec="opus", queue_size=1)))
    offered = [writer.offer("mic0", i, tone(3.0), RATE) for i in range(20)]
    writer.close()
    assert writer.dropped == offered.count(False) > 0
    assert writer.written == offered.count(True)


def test_in_events_mode_only_windows_carrying_a_change_are_written(tmp_path):
    from service.analysis.analyser import Analysed
    from service.records import StateChange, WindowResult

    def stored(window_id: int) -> WindowResult:
        return WindowResult("mic0", 1000 * window_id, 1000 * window_id + 2000, "speech", {"speech": 1.0}, "ok", (), {},
                            -20.0, window_id=window_id)

    windows = [stored(1), stored(2), stored(3)]
    analysed = [Analysed(w, {}, True, samples=tone(2.0)) for w in windows]
    changes = [StateChange("sound_detected", "mic0", 2000, None, "doorbell", window_id=2)]
    store = ClipStore(tmp_path, ClipsConfig(keep="events"))
    writer = ClipWriter(store, RATE)
    writer.on_stored(analysed, windows, changes)
    writer.close()
    assert [w.window_id for w in windows if store.find("mic0", w.start_unix_ms)] == [2]


def test_the_clip_folder_is_a_folder_roomtone_adapt_reads_with_one_domain_per_microphone(tmp_path):
    from encoder.datasets import read_unlabelled

    store = ClipStore(tmp_path, ClipsConfig(keep="all", codec="opus"))
    store.write("kitchen", 1, tone(1.0), RATE)
    store.write("hall", 2, tone(1.0), RATE)
    (tmp_path / "hall" / "3.ogg.part").write_bytes(b"half-written")  # a crash mid-write is never read
    records = read_unlabelled(tmp_path)
    assert sorted((r.domain, r.path.name) for r in records) == [("hall", "2.ogg"), ("kitchen", "1.ogg")]


class FakeDisk:
    """The clips' disk at the statvfs edge: ``free`` bytes plus whatever clips are deleted."""

    def __init__(self, root, free: int) -> None:
        self.root, self.free = root, free

    def __call__(self, path) -> int:
        clips = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return self.free - clips


def test_near_the_free_space_floor_the_oldest_clips_make_room_and_the_floor_is_never_crossed(tmp_path, monkeypatch):
    import service.store.clips

    mib = 2**20
    store = ClipStore(tmp_path, ClipsConfig(keep="all", min_free_mb=1.0))
    for i in range(3):
        store.write("mic0", i, tone(2.0), RATE)
    disk = FakeDisk(tmp_path, mib + 400_000)  # free: the floor + 400 kB, less what the clips take
    monkeypatch.setattr(service.store.clips, "free_bytes", disk)
    drops = []
    writer = ClipWriter(store, RATE, on_drop=drops.append)
    for i in range(10, 40):
        writer.offer("mic0", i, tone(2.0), RATE)
    writer.close(timeout=300)  # every queued clip written, however busy the machine
    assert not store.find("mic0", 0) and store.find("mic0", 39)  # the oldest went, the newest is kept
    assert writer.written == 30 and not drops
    assert disk(tmp_path) >= mib


def test_when_the_store_has_taken_the_floor_every_clip_goes_and_new_ones_are_dropped_counted_and_logged_once(
        tmp_path, monkeypatch, caplog):
    import service.store.clips

    store = ClipStore(tmp_path, ClipsConfig(keep="all", min_free_mb=1.0))
    for i in range(3):
        store.write("mic0", i, tone(2.0), RATE)
    monkeypatch.setattr(service.store.clips, "free_bytes", FakeDisk(tmp_path, 2**20 - 1))  # below the floor, clips or not
    drops = []
    writer = ClipWriter(store, RATE, on_drop=drops.append)
    for i in range(10, 30):
        writer.offer("mic0", i, tone(2.0), RATE)
    writer.close(timeout=300)  # every queued clip written, however busy the machine
    assert not list(tmp_path.rglob("*.flac"))
    assert drops == ["low_disk"] * 20 and writer.dropped == 20 and writer.written == 0
    lines = [r for r in caplog.records if r.getMessage().startswith("clip dropped: its disk is below")]
    assert len(lines) == 1 and lines[0].occurrences == 1


def test_when_another_program_fills_the_disk_make_room_deletes_the_oldest_clips_down_to_the_floor_with_no_new_clip(
        tmp_path, monkeypatch, caplog):
    import service.store.clips

    mib = 2**20
    store = ClipStore(tmp_path, ClipsConfig(keep="all", min_free_mb=1.0))
    for i in range(6):
        store.write("mic0", i, tone(2.0), RATE)
    size = store.find("mic0", 0).stat().st_size
    disk = FakeDisk(tmp_path, mib + 2 * size)  # the floor is short by four clips' worth: the store cannot write
    monkeypatch.setattr(service.store.clips, "free_bytes", disk)
    writer = ClipWriter(store, RATE, on_drop=lambda reason: None)
    writer.make_room()  # what the daemon asks when the store's writes fail on a full disk
    writer.close(timeout=300)
    assert [store.find("mic0", i) is not None for i in range(6)] == [False] * 4 + [True] * 2  # the oldest went
    assert disk(tmp_path) >= mib and writer.written == 0
    lines = [r for r in caplog.records if r.getMessage().startswith("clips deleted to give the store room")]
    assert len(lines) == 1 and lines[0].clips_deleted == 4


def test_a_clip_that_fails_to_write_leaves_no_part_file_and_is_counted(tmp_path, monkeypatch):
    import service.store.clips

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    store = ClipStore(tmp_path, ClipsConfig(keep="all", min_free_mb=0.0))
    monkeypatch.setattr(service.store.clips, "fsync_file", full)
    drops = []
    writer = ClipWriter(store, RATE, on_drop=drops.append)
    writer.offer("mic0", 1, tone(1.0), RATE)
    writer.close(timeout=300)  # every queued clip written, however busy the machine
    assert drops == ["error"] and writer.failed == 1
    assert not list(tmp_path.rglob("*.part")) and not store.find("mic0", 1)
