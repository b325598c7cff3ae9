"""Specification of the daemon's lifecycle (service/daemon.py) and the mic-status rule: parts stop in the
reverse order they started, a part that fails to start stops what came before, and a microphone that
delivers no audio reads faulty."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon_support import file_daemon_config  # tests/service/ is on sys.path (pytest rootdir-relative import)
from service.daemon import Daemon
from service.store.event_store import StoreError
from service.api.mic_status import mic_status
from service.records import WindowResult


def config_for(small_model: Path, homesounds: Path, tmp_path: Path, grpc_address: str = "127.0.0.1:0"):
    clip = homesounds / "audio" / "water" / "water_A1_000.flac"
    return file_daemon_config(small_model, tmp_path / "data", "sink", clip, grpc={"address": grpc_address})


def test_a_part_that_fails_to_start_stops_every_part_started_before_it(small_model, homesounds, tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        daemon = Daemon(config_for(small_model, homesounds, tmp_path, f"127.0.0.1:{taken.getsockname()[1]}"))
        with pytest.raises(OSError, match="gRPC"):
            daemon.start()
    with pytest.raises(StoreError):  # the store opened before the API was closed again...
        daemon.store.add_results([WindowResult("sink", 0, 1, None, {}, "ok", (), {}, -30.0)])
    with socket.socket() as probe:  # ...and so was the /metrics listener
        probe.bind(("127.0.0.1", daemon.metrics_port))
    assert daemon.drift_path.is_file()  # the baselines were still saved
    assert not daemon.pipeline.drained.is_set() and daemon.pipeline.stats.windows_cut == 0  # capture never began


def test_stop_ends_capture_before_the_api_and_closes_the_store_last(small_model, homesounds, tmp_path) -> None:
    daemon = Daemon(config_for(small_model, homesounds, tmp_path))
    daemon.start()
    assert daemon.pipeline.drained.wait(60)
    order = [name for name, _ in reversed(daemon._stops)]
    daemon.stop()
    # the integrity check (begun once the daemon serves) ends just before the store closes; the lock
    # is released only once the store is closed
    core = ["custom-sound upkeep", "retention", "capture and pipeline", "gRPC API", "metrics", "event bus",
            "store checks", "store", "store lock", "drift baselines"]
    assert [name for name in order if name in core] == core  # other parts (web page, MQTT) stop in between
    # the store's upkeep loops first, then capture; then the APIs (any order)
    assert order[:3] == core[:3] and order[-3:] == core[-3:]
    assert daemon.pipeline.stats.windows_stored == 1
    daemon.stop()  # a second stop does nothing


@dataclass
class FakeSource:
    state: str
    description: str = "USB Audio Device"


def test_a_microphone_whose_capture_is_lost_reads_faulty_whatever_its_last_window_said() -> None:
    last = WindowResult("kitchen", 0, 10_000, "speech", {}, "ok", (), {"hum": 1.0}, -30.0)
    for state in ("reopening", "failed"):
        (status,) = mic_status({"kitchen": FakeSource(state)}, {"kitchen": last})
        assert (status.health_state, status.health_reasons) == ("faulty", (f"no_input: capture is {state} (device lost or stalled)",))
        assert status.label == "speech" and status.last_window_end_unix_ms == 10_000
    (running,) = mic_status({"kitchen": FakeSource("running")}, {"kitchen": last})
    assert (running.health_state, running.health_reasons, running.health_scores) == ("ok", (), {"hum": 1.0})
    (new,) = mic_status({"hall": FakeSource("starting")}, {})
    assert (new.health_state, new.label, new.last_window_end_unix_ms) == (None, None, None)


def test_a_silent_window_reads_the_one_silence_level_in_the_store_over_grpc_and_from_classify(
        small_model, homesounds, tmp_path) -> None:
    import grpc
    import numpy as np

    from daemon_support import write_wav
    from encoder.vocabulary import SILENCE_DBFS
    from service.store.event_store import EventStore
    from service.rpc import roomtone_pb2 as pb
    from service.rpc import roomtone_pb2_grpc as pb_grpc

    silence = write_wav(tmp_path / "silence.wav", np.zeros(10 * 16000, np.float32))
    config = file_daemon_config(small_model, tmp_path / "data", "attic", silence, metrics={"enabled": False})
    daemon = Daemon(config)
    daemon.start()
    try:
        assert daemon.pipeline.drained.wait(60)
        with grpc.insecure_channel(daemon.grpc_address) as channel:
            stub = pb_grpc.RoomtoneStub(channel)
            (listed,) = [e.window for e in stub.ListEvents(pb.ListEventsRequest(limit=10), timeout=10).events
                         if e.HasField("window")]
            (classified,) = stub.Classify(pb.ClassifyRequest(audio=silence.read_bytes()), timeout=60).windows
    finally:
        daemon.stop()
    with EventStore(config.store_path) as store:
        (stored,) = store.list_windows(limit=10).items
    assert stored.rms_dbfs == listed.rms_dbfs == classified.rms_dbfs == SILENCE_DBFS == -120.0
    assert listed.health_state == classified.health_state == pb.HEALTH_STATE_FAULTY


def test_the_start_up_log_tells_the_user_the_next_step() -> None:
    from service.daemon import next_steps

    assert next_steps("127.0.0.1:50051") == (
        "next: `roomtone events --follow` prints events as they happen, `roomtone mics` the microphones and their health")
    assert "`roomtone mics --address 127.0.0.1:6000`" in next_steps("127.0.0.1:6000")
    assert "--no-grpc" in next_steps(None)
