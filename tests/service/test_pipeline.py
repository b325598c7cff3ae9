"""The pipeline: every window a source yields is analysed and stored, or counted as dropped; the stored
record carries the head's label, the health verdict and the very embedding `embed_windows` gives."""

from __future__ import annotations

import errno
import logging
import sqlite3
import time

import numpy as np
import pytest
import torch
from prometheus_client import generate_latest

from daemon_support import HEAD_CLASSES, clipped, write_wav
from encoder.audio import load_audio
from encoder.recording_embeddings import embed_windows
from encoder.model_file import load_model
from encoder.windows import window_spans
from service.analysis.analyser import Analyser
from service.analysis.result_builder import rms_dbfs
from service.config import PipelineConfig
from service.store.event_store import EventQuery, EventStore
from service.metrics.daemon_metrics import Metrics
from service.pipeline import FAST_CHUNKS_AHEAD, Pipeline, window_phases
from service.capture.sources import Chunk, FileSource


@pytest.fixture(scope="module")
def small_bundle(small_model):
    """The session's small model file, loaded (its head knows HEAD_CLASSES)."""
    return load_model(small_model)


@pytest.fixture()
def store(tmp_path):
    with EventStore(tmp_path / "events.db") as s:
        yield s


def store_into(store: EventStore):
    def write(analysed, changes):
        store.add_results([a.result for a in analysed], changes)
    return write


def run_to_end(pipeline: Pipeline, timeout: float = 120.0) -> None:
    pipeline.start()
    assert pipeline.drained.wait(timeout), "pipeline did not finish its finite sources"
    pipeline.stop()


def test_every_window_of_two_file_microphones_is_stored_with_label_health_and_embedding(small_bundle, store, homesounds, tmp_path):
    water = load_audio(homesounds / "audio" / "water" / "water_A2_000.flac")[0].numpy()
    typing = load_audio(homesounds / "audio" / "typing" / "typing_A2_000.flac")[0].numpy()
    long_water = write_wav(tmp_path / "water25.wav", np.concatenate([water, water, water[:, :50_000]], axis=1))
    sources = [FileSource("kitchen", long_water, realtime=False), FileSource("desk", homesounds / "audio" / "typing" /
                                                                            "typing_A2_000.flac", realtime=False)]
    pipeline = Pipeline(sources, Analyser(small_bundle), store_into(store), Metrics(), PipelineConfig(batch_size=4))
    run_to_end(pipeline)

    kitchen = sorted(store.list_windows(limit=100).items, key=lambda w: w.start_unix_ms)
    kitchen = [w for w in kitchen if w.mic_id == "kitchen"]
    desk = [w for w in store.list_windows(limit=100).items if w.mic_id == "desk"]
    assert len(kitchen) == len(window_spans(2 * 160_000 + 50_000, 16000)) == 3
    assert len(desk) == 1 and pipeline.stats.dropped == 0
    window = store.get_window(desk[0].window_id)
    assert window.label in HEAD_CLASSES and set(window.probabilities) == set(HEAD_CLASSES)
    assert sum(window.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    assert window.health_state in ("ok", "degraded", "faulty") and "clipping" in window.health_scores
    assert window.rms_dbfs == pytest.approx(rms_dbfs(typing), abs=0.01)
    expected = embed_windows(small_bundle, torch.from_numpy(typing))[0]
    np.testing.assert_allclose(window.embedding, expected, atol=2e-3)  # float16 in the store
    assert window.end_unix_ms - window.start_unix_ms == 10_000


def test_the_first_window_and_every_change_of_label_or_health_is_an_event(small_bundle, store, homesounds, tmp_path):
    speech = load_audio(homesounds / "audio" / "speech" / "speech_A1_001.flac")[0].numpy()
    path = write_wav(tmp_path / "three.wav", np.concatenate([speech, speech, clipped(speech)], axis=1))
    pipeline = Pipeline([FileSource("m", path, realtime=False)], Analyser(small_bundle), store_into(store), Metrics())
    run_to_end(pipeline)
    windows = sorted(store.list_windows(limit=10).items, key=lambda w: w.start_unix_ms)
    assert [w.health_state for w in windows][:2] == ["ok", "ok"] and windows[2].health_state != "ok"
    assert any("clipping" in r for r in windows[2].health_reasons)
    changes = store.list_events(EventQuery(kinds=("activity_changed", "health_changed")), limit=50).items
    events = [e for e in changes if e.kind == "health_changed"]
    assert [(e.previous, e.current) for e in sorted(events, key=lambda e: e.time_unix_ms)] == [
        (None, "ok"), ("ok", windows[2].health_state)]
    assert sorted(events, key=lambda e: e.time_unix_ms)[1].window_id == windows[2].window_id
    first_activity = [e for e in changes if e.kind == "activity_changed" and e.previous is None]
    assert len(first_activity) == 1 and first_activity[0].current == windows[0].label


class SlowStore:
    """The real store behind a slow disk: each write takes ``delay`` seconds longer."""

    def __init__(self, store: EventStore, delay: float) -> None:
        self.store, self.delay, self.stored = store, delay, 0

    def __call__(self, analysed, changes) -> None:
        time.sleep(self.delay)
        self.store.add_results([a.result for a in analysed], changes)
        self.stored += len(analysed)


def test_a_stage_that_falls_behind_a_realtime_source_drops_windows_and_counts_every_one(small_bundle, store, homesounds):
    metrics = Metrics()
    slow = SlowStore(store, delay=0.6)
    source = FileSource("hall", homesounds / "audio" / "water" / "water_A1_000.flac", realtime=True, loop=True,
                        block_s=0.05)
    config = PipelineConfig(window_s=0.25, hop_s=0.25, queue_size=1, batch_size=1)
    pipeline = Pipeline([source], Analyser(small_bundle), slow, metrics, config)
    pipeline.start()
    time.sleep(3.0)
    assert pipeline.stop(timeout=30)
    dropped = sum(metrics.dropped.labels(mic="hall", stage=s)._value.get() for s in ("analysis", "store"))
    assert dropped > 0
    assert pipeline.stats.windows_cut == slow.stored + dropped  # nothing silently lost
    assert slow.stored == len(store.list_windows(limit=1000).items)
    text = generate_latest(metrics.registry).decode()
    assert 'roomtone_windows_dropped_total{mic="hall",stage="' in text


def test_stop_finishes_the_windows_in_flight_before_returning(small_bundle, store, homesounds):
    slow = SlowStore(store, delay=0.2)
    source = FileSource("hall", homesounds / "audio" / "water" / "water_A1_000.flac", realtime=True, loop=True,
                        block_s=0.05)
    pipeline = Pipeline([source], Analyser(small_bundle), slow, Metrics(),
                        PipelineConfig(window_s=0.5, hop_s=0.5, queue_size=64, batch_size=1))
    pipeline.start()
    time.sleep(2.2)
    assert pipeline.stop(timeout=30)
    assert pipeline.stats.dropped == 0
    assert pipeline.stats.windows_cut >= 3
    assert slow.stored == pipeline.stats.windows_cut  # every window cut before stop reached the store


def test_a_fast_source_waits_while_a_few_of_its_chunks_wait_for_windowing(small_bundle, store, homesounds):
    slow = SlowStore(store, delay=0.3)
    source = FileSource("desk", homesounds / "audio" / "typing" / "typing_A1_000.flac", realtime=False, loop=True)
    pipeline = Pipeline([source], Analyser(small_bundle), slow, Metrics(), PipelineConfig(queue_size=1, batch_size=1))
    pipeline.start()
    waiting = []
    for _ in range(20):
        time.sleep(0.1)
        waiting.append(pipeline.capture_q.qsize())
    assert pipeline.stop(timeout=30)
    # whole reads of a second wait, FAST_CHUNKS_AHEAD of them: not the 600 blocks the queue holds
    assert max(waiting) == FAST_CHUNKS_AHEAD, waiting
    assert pipeline.stats.dropped == 0 and slow.stored == pipeline.stats.windows_cut >= 2, (pipeline.stats, slow.stored)


def test_stop_stores_every_window_of_a_fast_source_that_has_ended_however_slow_the_store(small_bundle, store,
                                                                                        homesounds, tmp_path):
    water = load_audio(homesounds / "audio" / "water" / "water_A1_000.flac")[0].numpy()
    slow = SlowStore(store, delay=0.7)
    source = FileSource("hall", write_wav(tmp_path / "water60.wav", np.tile(water, 6)), realtime=False)
    pipeline = Pipeline([source], Analyser(small_bundle), slow, Metrics(), PipelineConfig(queue_size=1, batch_size=1))
    pipeline.start()
    deadline = time.monotonic() + 60
    while "hall" not in pipeline.ended and time.monotonic() < deadline:  # windowing has cut all six windows
        time.sleep(0.05)
    assert pipeline.stop(timeout=60)  # while most of them still wait for the store
    assert pipeline.stats.windows_cut == slow.stored == 6 and pipeline.stats.dropped == 0


def test_a_failing_store_is_counted_and_the_pipeline_goes_on(small_bundle, homesounds, tmp_path):
    metrics = Metrics()
    calls = []

    def broken_then_working(analysed, changes):
        calls.append(len(analysed))
        if len(calls) == 1:
            raise OSError("disk full")

    speech = load_audio(homesounds / "audio" / "speech" / "speech_A1_001.flac")[0].numpy()
    path = write_wav(tmp_path / "two.wav", np.concatenate([speech, speech], axis=1))
    pipeline = Pipeline([FileSource("m", path, realtime=False)], Analyser(small_bundle), broken_then_working, metrics,
                        PipelineConfig(batch_size=1))
    run_to_end(pipeline)
    assert len(calls) == 2 and pipeline.stats.windows_stored == 1
    assert metrics.store_errors._value.get() == 1


@pytest.mark.parametrize("failure, with_traceback", [
    (OSError(errno.ENOSPC, "No space left on device"), False),
    (sqlite3.OperationalError("database or disk is full"), False),
    (ValueError("a bug in the store"), True),
], ids=["ENOSPC", "SQLITE_FULL", "unexpected"])
def test_the_first_store_failure_logs_a_traceback_unless_the_disk_is_full(failure, with_traceback, small_bundle,
                                                                          homesounds, caplog):
    def broken(analysed, changes):
        raise failure

    pipeline = Pipeline([FileSource("m", homesounds / "audio" / "speech" / "speech_A1_001.flac", realtime=False)],
                        Analyser(small_bundle), broken, Metrics(), PipelineConfig(batch_size=1))
    with caplog.at_level(logging.ERROR, logger="roomtone"):
        run_to_end(pipeline)
    (first, *_) = [r for r in caplog.records if r.getMessage() == "store failed; windows not stored"]
    assert bool(first.exc_info) == with_traceback


def test_a_two_channel_microphone_is_checked_per_channel_and_embedded_as_its_mix(small_bundle, store, homesounds, tmp_path):
    speech = load_audio(homesounds / "audio" / "speech" / "speech_A3_000.flac")[0].numpy()
    stereo = write_wav(tmp_path / "stereo.wav", np.concatenate([speech, np.zeros_like(speech)], axis=0))
    pipeline = Pipeline([FileSource("pair", stereo, realtime=False)], Analyser(small_bundle), store_into(store), Metrics())
    run_to_end(pipeline)
    (listed,) = store.list_windows(limit=10).items
    window = store.get_window(listed.window_id)
    assert window.health_state == "faulty" and any(r.startswith("dead_channel") for r in window.health_reasons)
    mix = speech * 0.5  # the channel mean
    np.testing.assert_allclose(window.embedding, embed_windows(small_bundle, torch.from_numpy(mix))[0], atol=2e-3)
    assert window.rms_dbfs == pytest.approx(rms_dbfs(mix), abs=0.01)


class FailsForOneMic(Analyser):
    """The real analyser, except that any batch holding a window of ``mic`` raises (an unforeseen fault)."""

    def __init__(self, small_bundle, mic: str) -> None:
        super().__init__(small_bundle)
        self.mic = mic

    def analyse(self, windows, timings=None):
        if any(w.mic_id == self.mic for w in windows):
            raise RuntimeError(f"cannot analyse {self.mic}")
        return super().analyse(windows, timings)


def test_a_window_whose_analysis_fails_is_lost_alone_and_counted_for_its_microphone(small_bundle, store, homesounds, tmp_path):
    speech = load_audio(homesounds / "audio" / "speech" / "speech_A1_001.flac")[0].numpy()
    path = write_wav(tmp_path / "two.wav", np.concatenate([speech, speech], axis=1))
    metrics = Metrics()
    sources = [FileSource("good", path, realtime=False), FileSource("bad", path, realtime=False)]
    pipeline = Pipeline(sources, FailsForOneMic(small_bundle, "bad"), store_into(store), metrics, PipelineConfig(batch_size=8))
    run_to_end(pipeline)
    assert sorted(w.mic_id for w in store.list_windows(limit=10).items) == ["good", "good"]
    assert pipeline.stats.analysis_errors == 2 and pipeline.stats.dropped == 0
    assert metrics.analysis_errors.labels(mic="bad")._value.get() == 2
    assert metrics.analysis_errors.labels(mic="good")._value.get() == 0


class JumpingSource:
    """A realtime source at the edge: 1 s of blocks, then a 30 s jump in capture time (SIGSTOP/SIGCONT), then 1 s."""

    mic_id, description, sample_rate, channels, realtime, overruns, errors = "jumpy", "test", 16000, 1, True, 0, 0
    state = "running"

    def start(self, sink) -> None:
        t0 = time.time()
        block = np.zeros((1, 1600), np.float32)
        for i in range(10):
            sink(Chunk("jumpy", block, 16000, t0 + i * 0.1))
        for i in range(10):
            sink(Chunk("jumpy", block, 16000, t0 + 31.0 + i * 0.1))
        sink(Chunk("jumpy", block[:, :0], 16000, t0 + 32.0, end_of_stream=True))

    def stop(self) -> None:
        pass


def test_a_jump_in_capture_time_is_counted_in_the_gap_metrics(small_bundle, store):
    metrics = Metrics()
    pipeline = Pipeline([JumpingSource()], Analyser(small_bundle), store_into(store), metrics, PipelineConfig())
    run_to_end(pipeline)
    assert metrics.capture_gaps.labels(mic="jumpy")._value.get() == 1
    assert 29.5 < metrics.capture_gap_seconds.labels(mic="jumpy")._value.get() < 30.5


def test_realtime_microphones_end_their_windows_a_hop_over_n_apart_unless_stagger_is_off(small_bundle, homesounds):
    clip = homesounds / "audio" / "water" / "water_A1_000.flac"
    sources = [FileSource(f"m{i}", clip, realtime=True) for i in range(4)] + [FileSource("fast", clip, realtime=False)]
    assert window_phases(sources, PipelineConfig(hop_s=10.0)) == {"m0": 0.0, "m1": 2.5, "m2": 5.0, "m3": 7.5}
    assert window_phases(sources, PipelineConfig(hop_s=10.0, stagger=False)) == {}
    assert window_phases(sources[:1], PipelineConfig()) == {}  # one microphone: nothing to spread, no delay


def test_windows_of_many_microphones_that_end_together_are_not_dropped(small_bundle, store, homesounds):
    metrics = Metrics()
    clip = homesounds / "audio" / "water" / "water_A1_000.flac"
    sources = [FileSource(f"m{i}", clip, realtime=True, loop=True, block_s=0.05) for i in range(12)]
    config = PipelineConfig(window_s=1.0, hop_s=1.0, queue_size=1, batch_size=4, stagger=False)
    pipeline = Pipeline(sources, Analyser(small_bundle), store_into(store), metrics, config)
    pipeline.start()
    time.sleep(2.6)
    assert pipeline.stop(timeout=60)
    assert pipeline.stats.windows_cut >= 12  # every microphone finished at least one window, all at once
    assert pipeline.stats.dropped == 0
    assert pipeline.stats.windows_stored == pipeline.stats.windows_cut
