"""AddSound / ListSounds / RemoveSound over a real gRPC server (the daemon's own SoundService over a tiny
model and a real store), and `roomtone sounds add|list|remove` against it."""

from __future__ import annotations

import contextlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from daemon_support import tiny_backend  # tests/service/ is on sys.path
from service.cli.main import main
from service.config import GrpcConfig, SoundsConfig
from service.store.event_store import EventStore
from service.api.grpc_server import event_bus_for, start_server, stop_server
from service.records import WindowResult
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc
from service.analysis.sound_library import SoundLibrary, SoundService

RATE = 16000


@pytest.fixture(scope="module")
def backend(homesounds: Path):
    audio = homesounds / "audio"
    return tiny_backend({"speech": audio / "speech" / "speech_A1_000.flac",
                         "water": audio / "water" / "water_A1_000.flac"}, [], 32)


@contextlib.contextmanager
def sounds_server(directory: Path, backend, config: GrpcConfig | None = None, upload_backend=None):
    """A gRPC server with the daemon's SoundService (at most 2 sounds) over ``backend``'s model and a real store;
    ``upload_backend`` (default ``backend``) answers Classify. Yields (stub, store, address)."""
    config = config or GrpcConfig(address="127.0.0.1:0")
    store = EventStore(directory / "roomtone.db")
    analyser = backend.analyser
    library = SoundLibrary(directory / "roomtone.sounds", "a" * 64, analyser.runner.embedder.embed, RATE,
                           analyser.bundle.embedding_dim, max_sounds=2)
    service = SoundService(library, store, SoundsConfig())
    server = start_server(store, event_bus_for(config), upload_backend or backend, config, sounds=service)
    channel = grpc.insecure_channel(server.roomtone_address)
    try:
        yield pb_grpc.RoomtoneStub(channel), store, server.roomtone_address
    finally:
        channel.close()
        stop_server(server, grace_s=0.5)
        store.close()


@pytest.fixture()
def api(tmp_path: Path, backend):
    with sounds_server(tmp_path, backend) as served:
        yield served


def flac(path: Path, seconds: float = 10.0) -> bytes:
    data, _ = soundfile.read(path, dtype="float32")
    buffer = io.BytesIO()
    soundfile.write(buffer, data[: int(seconds * RATE)], RATE, format="FLAC")
    return buffer.getvalue()


def code_of(call, request) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as raised:
        call(request)
    return raised.value.code()


def test_a_sound_is_added_from_audio_and_stored_windows_listed_and_removed(api, homesounds: Path) -> None:
    stub, store, _ = api
    speech = homesounds / "audio" / "speech"
    (window,), _ = store.add_results([WindowResult("kitchen", 0, 10_000, "speech", {}, "ok", (), {}, -30.0,
                                                   embedding=np.eye(32, dtype=np.float32)[0])])
    sound = stub.AddSound(pb.AddSoundRequest(name="chatter", audio=[flac(speech / "speech_A1_001.flac", 20)],
                                             window_ids=[window.window_id]))
    assert (sound.examples, sound.example_files, sound.example_windows) == (2, 1, 1)  # 10 s of audio = 1 window
    assert sound.active and not sound.threshold_overridden and sound.calibration.startswith("examples")
    fixed = stub.AddSound(pb.AddSoundRequest(name="tap", audio=[flac(speech / "speech_A1_002.flac", 3)], threshold=0.5))
    assert fixed.threshold_overridden and abs(fixed.threshold - 0.5) < 1e-6
    assert [s.name for s in stub.ListSounds(pb.ListSoundsRequest()).sounds] == ["chatter", "tap"]
    stub.RemoveSound(pb.RemoveSoundRequest(name="tap"))
    assert [s.name for s in stub.ListSounds(pb.ListSoundsRequest()).sounds] == ["chatter"]


def test_bad_sound_requests_get_their_status_codes(api, homesounds: Path) -> None:
    stub, _, _ = api
    audio = [flac(homesounds / "audio" / "water" / "water_A1_001.flac", 2)]
    assert code_of(stub.AddSound, pb.AddSoundRequest(name="Bad Name", audio=audio)) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(stub.AddSound, pb.AddSoundRequest(name="water")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(stub.AddSound, pb.AddSoundRequest(name="water", audio=[b"not audio"])) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(stub.AddSound, pb.AddSoundRequest(name="water", window_ids=[999])) == grpc.StatusCode.NOT_FOUND
    stub.AddSound(pb.AddSoundRequest(name="water", audio=audio))
    assert code_of(stub.AddSound, pb.AddSoundRequest(name="water", audio=audio)) == grpc.StatusCode.ALREADY_EXISTS
    stub.AddSound(pb.AddSoundRequest(name="water", audio=audio, replace=True))
    stub.AddSound(pb.AddSoundRequest(name="drip", audio=audio))
    assert code_of(stub.AddSound, pb.AddSoundRequest(name="third", audio=audio)) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(stub.RemoveSound, pb.RemoveSoundRequest(name="nope")) == grpc.StatusCode.NOT_FOUND


class HeldUploads:
    """The tiny backend whose Classify holds its upload slot until ``release`` is set."""

    def __init__(self, backend) -> None:
        self.backend, self.holding, self.release = backend, threading.Event(), threading.Event()

    def microphones(self):
        return self.backend.microphones()

    def analyse_audio(self, data: bytes):
        self.holding.set()
        self.release.wait(30)
        return self.backend.analyse_audio(data)

    def embed_audio_bytes(self, data: bytes):
        return self.backend.embed_audio_bytes(data)


def test_add_sound_waits_for_an_upload_slot_like_classify(tmp_path: Path, backend, homesounds: Path) -> None:
    held = HeldUploads(backend)
    config = GrpcConfig(address="127.0.0.1:0", max_concurrent_uploads=1)
    audio = [flac(homesounds / "audio" / "water" / "water_A1_001.flac", 2)]
    with sounds_server(tmp_path, backend, config, upload_backend=held) as (stub, _, _), ThreadPoolExecutor(1) as pool:
        classify = pool.submit(stub.Classify, pb.ClassifyRequest(audio=audio[0]), timeout=60)
        assert held.holding.wait(30)
        with pytest.raises(grpc.RpcError) as refused:  # the only slot is taken: AddSound decodes nothing
            stub.AddSound(pb.AddSoundRequest(name="water", audio=audio), timeout=2)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "grpc.max_concurrent_uploads" in refused.value.details()
        held.release.set()
        assert classify.result().windows
        assert stub.AddSound(pb.AddSoundRequest(name="water", audio=audio), timeout=60).name == "water"


def test_reflection_describes_the_sound_rpcs(api) -> None:
    stub, _, address = api
    with grpc.insecure_channel(address) as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="roomtone.v1.AddSoundRequest")
        (reply,) = list(reflection.ServerReflectionInfo(iter([request])))
    from google.protobuf import descriptor_pb2

    files = [descriptor_pb2.FileDescriptorProto.FromString(raw) for raw in reply.file_descriptor_response.file_descriptor_proto]
    methods = {m.name for f in files for service in f.service for m in service.method}
    assert {"AddSound", "ListSounds", "RemoveSound"} <= methods


def test_the_sounds_command_adds_lists_and_removes(api, homesounds: Path, tmp_path: Path, capsys) -> None:
    _, _, address = api
    example = tmp_path / "bark.flac"
    example.write_bytes(flac(homesounds / "audio" / "animals" / "animals_A1_000.flac", 4))
    assert main(["sounds", "add", "--address", address, "bark", str(example), "--threshold", "0.8"]) == 0
    assert "added bark: 1 example window(s), threshold 0.800 (set by you)" in capsys.readouterr().out
    assert main(["sounds", "list", "--address", address]) == 0
    listing = capsys.readouterr().out
    assert "bark" in listing and "0.800 (set)" in listing
    assert main(["sounds", "remove", "--address", address, "bark"]) == 0
    assert main(["sounds", "remove", "--address", address, "bark"]) == 4  # not found
    assert main(["sounds", "add", "--address", address, "bark", str(tmp_path / "missing.wav")]) == 2


def test_mark_not_this_by_event_or_window_over_grpc_and_the_command(api, homesounds: Path, capsys) -> None:
    from service.records import StateChange
    from service.daemon_vocabulary import SOUND_DETECTED

    stub, store, address = api
    stub.AddSound(pb.AddSoundRequest(name="tap", audio=[flac(homesounds / "audio" / "water" / "water_A1_001.flac", 3)]))
    windows, (detection, change) = store.add_results(
        [WindowResult("kitchen", 0, 10_000, "water", {}, "ok", (), {}, -30.0, embedding=np.eye(32, dtype=np.float32)[1]),
         WindowResult("kitchen", 10_000, 20_000, "water", {}, "ok", (), {}, -30.0, embedding=np.eye(32, dtype=np.float32)[2])],
        [StateChange(SOUND_DETECTED, "kitchen", 0, None, "tap", score=0.95, sound_start_ms=1250, sound_end_ms=2500),
         StateChange("activity_changed", "kitchen", 10_000, "speech", "water")])
    listed = stub.ListEvents(pb.ListEventsRequest(limit=10)).events
    shown = [e.state_change for e in listed if e.state_change.kind == pb.EVENT_KIND_SOUND_DETECTED]
    assert [(c.start_offset_ms, c.end_offset_ms) for c in shown] == [(1250, 2500)]
    sound = stub.MarkNotThis(pb.MarkNotThisRequest(name="tap", event_id=detection.event_id))
    assert sound.not_this == 1
    assert code_of(stub.MarkNotThis, pb.MarkNotThisRequest(name="tap", event_id=detection.event_id)) == \
        grpc.StatusCode.ALREADY_EXISTS
    assert code_of(stub.MarkNotThis, pb.MarkNotThisRequest(name="tap", event_id=change.event_id)) == \
        grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(stub.MarkNotThis, pb.MarkNotThisRequest(name="tap")) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(stub.MarkNotThis, pb.MarkNotThisRequest(name="tap", window_id=999)) == grpc.StatusCode.NOT_FOUND
    assert code_of(stub.MarkNotThis, pb.MarkNotThisRequest(name="nope", window_id=1)) == grpc.StatusCode.NOT_FOUND
    assert main(["sounds", "not-this", "--address", address, "tap", "--window-id", str(windows[1].window_id)]) == 0
    assert 'tap: 2 detection(s) marked "not this"' in capsys.readouterr().out
