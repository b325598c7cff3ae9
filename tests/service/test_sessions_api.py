"""Activity sessions over gRPC: ListSessions pages the stored sessions, StreamEvents carries session
starts and ends live (filtered like every other item), and ListEvents leaves them to ListSessions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc
import pytest

from service.config import GrpcConfig
from service.api.event_bus import EventBus
from service.store.event_store import EventStore
from service.api.grpc_server import start_server, stop_server
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc
from service.records import StateChange
from service.analysis.sessions import ActivitySession, SessionEvent

MIN_MS = 60_000


class NoMicrophones:
    """The backend edge: these RPCs never analyse audio."""

    def microphones(self) -> list:
        return []


@pytest.fixture()
def api(tmp_path: Path):
    store = EventStore(tmp_path / "sessions.db")
    bus = EventBus(queue_size=64, max_subscribers=4)
    server = start_server(store, bus, NoMicrophones(), GrpcConfig(address="127.0.0.1:0"))
    channel = grpc.insecure_channel(server.roomtone_address)
    yield pb_grpc.RoomtoneStub(channel), store, bus
    channel.close()
    stop_server(server, grace_s=0.5)
    store.close()


def started(mic: str, activity: str, start: int) -> SessionEvent:
    return SessionEvent("session_started", ActivitySession(mic, activity, start, None, 2, 0.8, start + 20_000), start)


def ended(event: SessionEvent, end: int) -> SessionEvent:
    s = event.session
    return SessionEvent("session_ended", ActivitySession(s.mic_id, s.activity, s.start_unix_ms, end, 9, 0.85, end,
                                                         s.session_id), end)


def test_list_sessions_pages_newest_first_with_open_sessions_marked_and_filters(api):
    stub, store, _ = api
    [cooking] = store.add_session_events([started("kitchen", "cooking", 0)])
    store.add_session_events([ended(cooking, 23 * MIN_MS), started("kitchen", "dishes", 30 * MIN_MS),
                              started("hall", "speech", 40 * MIN_MS)])
    first = stub.ListSessions(pb.ListSessionsRequest(limit=2), timeout=10)
    assert [(s.mic_id, s.activity, s.open) for s in first.sessions] == [("hall", "speech", True), ("kitchen", "dishes", True)]
    second = stub.ListSessions(pb.ListSessionsRequest(limit=2, page_token=first.next_page_token), timeout=10)
    [done] = second.sessions
    assert (done.activity, done.start_unix_ms, done.end_unix_ms, done.open, done.windows) == ("cooking", 0, 23 * MIN_MS, False, 9)
    assert second.next_page_token == "" and done.last_window_end_unix_ms == 23 * MIN_MS
    only = stub.ListSessions(pb.ListSessionsRequest(mic_ids=["kitchen"], open_only=True), timeout=10).sessions
    assert [s.activity for s in only] == ["dishes"]


@pytest.mark.parametrize("request_, field", [
    (pb.ListSessionsRequest(limit=5000), "limit"), (pb.ListSessionsRequest(page_token="garbage"), "page_token"),
    (pb.ListSessionsRequest(since_unix_ms=10, until_unix_ms=5), "until_unix_ms"),
    (pb.ListSessionsRequest(mic_ids=[""]), "mic_ids")])
def test_bad_list_sessions_requests_are_invalid_argument_naming_the_field(api, request_, field):
    stub, _, _ = api
    with pytest.raises(grpc.RpcError) as error:
        stub.ListSessions(request_, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in error.value.details()


def test_stream_events_carries_session_starts_and_ends_filtered_by_kind_and_activity(api):
    stub, store, bus = api
    request = pb.StreamEventsRequest(filter=pb.EventFilter(kinds=[pb.EVENT_KIND_SESSION_STARTED, pb.EVENT_KIND_SESSION_ENDED],
                                                           labels=["cooking"]))
    stream = stub.StreamEvents(request, timeout=10)
    deadline = time.monotonic() + 5
    while bus.subscriber_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    [cooking] = store.add_session_events([started("kitchen", "cooking", 0)])
    bus.publish(started("hall", "speech", 0))  # another activity: filtered out
    bus.publish(cooking)
    [end] = store.add_session_events([ended(cooking, 5 * MIN_MS)])
    bus.publish(end)
    first, second = next(stream), next(stream)
    stream.cancel()
    assert first.session.kind == pb.EVENT_KIND_SESSION_STARTED and first.session.session.open
    assert first.session.session.session_id == cooking.session.session_id
    assert second.session.kind == pb.EVENT_KIND_SESSION_ENDED and second.session.time_unix_ms == 5 * MIN_MS
    assert not second.session.session.open and second.session.session.end_unix_ms == 5 * MIN_MS


def test_list_events_leaves_sessions_to_list_sessions(api):
    stub, store, _ = api
    store.add_session_events([started("kitchen", "cooking", 0)])
    response = stub.ListEvents(pb.ListEventsRequest(filter=pb.EventFilter(kinds=[pb.EVENT_KIND_SESSION_STARTED])), timeout=10)
    assert list(response.events) == []


@pytest.fixture()
def address(tmp_path: Path):
    store = EventStore(tmp_path / "cli.db")
    now = int(time.time() * 1000)
    [cooking] = store.add_session_events([started("kitchen", "cooking", now - 3 * 3600_000)])
    store.add_session_events([ended(cooking, now - 3 * 3600_000 + 23 * MIN_MS), started("hall", "speech", now - 5 * MIN_MS)])
    server = start_server(store, EventBus(), NoMicrophones(), GrpcConfig(address="127.0.0.1:0"))
    yield server.roomtone_address
    stop_server(server, grace_s=0.2)
    store.close()


def test_the_sessions_command_lists_sessions_oldest_first_with_duration_and_open_ones_marked(address, capsys):
    from service.cli.main import main

    assert main(["sessions", "--address", address]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["START", "END", "DURATION"]
    assert "23m 00s" in lines[1] and "cooking" in lines[1] and "kitchen" in lines[1]
    assert "(open)" in lines[2] and "speech" in lines[2]
    assert main(["sessions", "--address", address, "--open", "--json"]) == 0
    [only] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (only["mic_id"], only["activity"], only["open"], only["end_unix_ms"]) == ("hall", "speech", True, "0")
    assert main(["sessions", "--address", address, "--since", "1h"]) == 0  # the cooking session ended before
    assert "cooking" not in capsys.readouterr().out


def test_the_sessions_command_refuses_a_bad_time_and_says_when_the_daemon_is_unreachable(capsys):
    from service.cli.main import main
    from mosquitto_broker import free_port

    assert main(["sessions", "--since", "yesterday-ish"]) == 2
    assert "cannot read time" in capsys.readouterr().err
    assert main(["sessions", "--limit", "0"]) == 2
    assert capsys.readouterr().err.strip() == "roomtone sessions: --limit must be between 1 and 10000, got 0"
    assert main(["events", "--limit", "100000"]) == 2  # the same check, its bound the daemon's page size
    assert capsys.readouterr().err.strip().startswith("roomtone events: --limit must be between 1 and ")
    assert main(["sessions", "--address", f"127.0.0.1:{free_port()}"]) == 3


def test_events_follow_kind_session_prints_session_starts_and_ends_as_rows(tmp_path: Path, capsys):
    import threading

    from service.cli.main import main

    store, bus = EventStore(tmp_path / "follow.db"), EventBus()
    server = start_server(store, bus, NoMicrophones(), GrpcConfig(address="127.0.0.1:0"))
    codes = []
    follower = threading.Thread(target=lambda: codes.append(main(
        ["events", "--address", server.roomtone_address, "--follow", "--kind", "session", "--limit", "1"])))
    follower.start()
    try:
        deadline = time.monotonic() + 5
        while bus.subscriber_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = 1_700_000_000_000  # 2023-11-14
        [cooking] = store.add_session_events([started("kitchen", "cooking", t0)])
        bus.publish(cooking)
        bus.publish(StateChange("health_changed", "kitchen", t0, "ok", "faulty"))  # another kind: not shown
        [end] = store.add_session_events([ended(cooking, t0 + 5 * MIN_MS)])
        bus.publish(end)
        time.sleep(0.3)
        bus.close()  # the daemon shutting down ends the stream
        follower.join(timeout=10)
    finally:
        stop_server(server, grace_s=0.2)
        store.close()
    lines = capsys.readouterr().out.splitlines()
    assert codes == [0] and lines[0].split() == ["TIME", "MIC", "EVENT", "DETAIL"]
    assert len(lines) == 3 and " started " in lines[1] and " ended " in lines[2]
    assert all("kitchen" in line and "session #1 cooking since 2023-11-1" in line for line in lines[1:])
