"""The client commands `roomtone mics/events/similar` against a real daemon API on a loopback port."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from service.cli.events_command import parse_time
from service.cli.main import main
from service.config import GrpcConfig
from service.api.event_bus import EventBus
from service.store.event_store import EventStore
from service.api.grpc_server import start_server, stop_server
from service.records import MicStatus, StateChange, WindowResult

from daemon_support import SwitchableBackend, tiny_backend  # tests/service/ is on sys.path (pytest rootdir-relative import)
from mosquitto_broker import free_port

NOW_MS = int(time.time() * 1000)


@pytest.fixture(scope="module")
def clips(homesounds: Path) -> dict[str, Path]:
    audio = homesounds / "audio"
    return {"speech": audio / "speech" / "speech_A1_000.flac", "water": audio / "water" / "water_A1_000.flac"}


@pytest.fixture(scope="module")
def backend(clips: dict[str, Path]) -> SwitchableBackend:
    return tiny_backend(clips, [MicStatus("kitchen", "USB Audio Device", "running", NOW_MS, "degraded",
                                           ("hum: 50 Hz peak 24 dB above the floor",), {"hum": 24.0}, "water")])


@pytest.fixture(scope="module")
def analysed(backend: SwitchableBackend, clips: dict[str, Path]) -> list[WindowResult]:
    """The first window of the speech and the water clip, as a kitchen mic 60 s and 50 s ago."""
    windows = []
    for index, name in enumerate(("speech", "water")):
        result = backend.analyse_audio(clips[name].read_bytes())[0]
        start = NOW_MS - 60_000 + index * 10_000
        windows.append(WindowResult(**{**result.__dict__, "mic_id": "kitchen", "start_unix_ms": start, "end_unix_ms": start + 10_000}))
    return windows


@pytest.fixture()
def daemon(tmp_path: Path, backend: SwitchableBackend, analysed: list[WindowResult]):
    store, bus = EventStore(tmp_path / "cli.db"), EventBus()
    for previous, window in zip([None, "speech"], analysed):
        store.add_results([window], [StateChange("activity_changed", "kitchen", window.start_unix_ms, previous, window.label)])
    server = start_server(store, bus, backend, GrpcConfig(address="127.0.0.1:0"))
    yield server.roomtone_address, store, bus
    stop_server(server, grace_s=0.2)
    store.close()


def test_mics_prints_a_table_and_json(daemon, capsys: pytest.CaptureFixture) -> None:
    address, _, _ = daemon
    assert main(["mics", "--address", address]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["MIC", "DEVICE", "STATE", "HEALTH", "ACTIVITY", "LAST", "WINDOW", "REASONS"]
    assert table[1].startswith("kitchen") and "degraded" in table[1] and "hum: 50 Hz" in table[1]
    assert main(["mics", "--address", address, "--json"]) == 0
    (mic,) = json.loads(capsys.readouterr().out)
    assert mic["mic_id"] == "kitchen" and mic["health"]["state"] == "HEALTH_STATE_DEGRADED"


def test_events_prints_the_latest_items_oldest_first(daemon, capsys: pytest.CaptureFixture) -> None:
    address, _, _ = daemon
    assert main(["events", "--address", address, "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # newest first the store puts a window before the change it shows; printed oldest first, the
    # change is announced just before its window
    assert [line.split()[3] for line in lines[1:]] == ["window", "activity", "window"]
    assert "speech -> water" in lines[2] and "water (" in lines[3]
    # --since as Unix ms between the two stored windows (NOW_MS is fixed at import, so a duration like
    # "5m" would expire when the suite is slow)
    since = str(NOW_MS - 55_000)
    assert main(["events", "--address", address, "--kind", "window", "--label", "water", "--since", since, "--json"]) == 0
    (only,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert only["window"]["label"] == "water"
    assert main(["events", "--address", address, "--mic", "attic"]) == 0
    assert capsys.readouterr().out.strip() == "no matching events"


def test_events_follow_prints_live_items_until_the_stream_ends(daemon, capsys: pytest.CaptureFixture) -> None:
    address, store, bus = daemon
    codes = []
    follower = threading.Thread(target=lambda: codes.append(main(["events", "--address", address, "--follow", "--limit", "1", "--json"])))
    follower.start()
    # the change is stored only once the follower has printed its replay and listens: stored between its
    # subscription and its replay query, the change itself was the latest item replayed (a race seen at load 3)
    deadline = time.monotonic() + 10
    out = ""
    while (bus.subscriber_count() == 0 or not out) and time.monotonic() < deadline:
        out += capsys.readouterr().out
        time.sleep(0.01)
    _, (change,) = store.add_results([], [StateChange("health_changed", "kitchen", NOW_MS, "ok", "faulty", reasons=("dropout",))])
    bus.publish(change)
    time.sleep(0.3)
    bus.close()  # the daemon shutting down ends the stream
    follower.join(timeout=10)
    printed = [json.loads(line) for line in (out + capsys.readouterr().out).splitlines()]
    assert codes == [0]
    assert printed[0]["window"]["label"] == "water"  # the replayed latest item
    assert printed[1]["state_change"]["current"] == "faulty" and printed[1]["state_change"]["reasons"] == ["dropout"]


def test_similar_by_audio_file_and_by_window_id(daemon, clips: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    address, _, _ = daemon
    assert main(["similar", "--address", address, "--audio", str(clips["water"]), "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["RANK", "DISTANCE", "WINDOW"]
    assert lines[1].split()[2] == "#2" and lines[1].split()[-2] == "water"
    assert lines[-1] == "(2 stored windows compared)"
    assert main(["similar", "--address", address, "--window-id", "1", "--json"]) == 0
    neighbours = json.loads(capsys.readouterr().out)["neighbors"]
    assert [n["window"]["window_id"] for n in neighbours] == ["2"]


def test_client_errors_have_one_line_and_an_exit_code(daemon, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    address, _, _ = daemon
    assert main(["similar", "--address", address, "--window-id", "404"]) == 4
    assert capsys.readouterr().err.strip() == "roomtone similar: NOT_FOUND: no stored window 404"
    assert main(["similar", "--address", address, "--audio", str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav: cannot read" in capsys.readouterr().err
    (tmp_path / "notes.wav").write_text("not audio")
    assert main(["similar", "--address", address, "--audio", str(tmp_path / "notes.wav")]) == 2
    assert "cannot decode audio" in capsys.readouterr().err
    assert main(["events", "--address", address, "--since", "yesterday-ish"]) == 2
    assert "cannot read time 'yesterday-ish'" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["mics"], ["events"], ["events", "--follow"], ["similar", "--window-id", "1"]])
def test_without_a_daemon_every_client_says_how_to_start_one(command: list[str], capsys: pytest.CaptureFixture) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert main([*command, "--address", address]) == 3
    assert capsys.readouterr().err.strip() == (
        f"roomtone {command[0]}: no roomtone daemon at {address} — start it with `roomtone run`")


def test_times_are_durations_dates_or_unix_milliseconds() -> None:
    now = 1_800_000_000_000
    assert parse_time("90s", now) == now - 90_000
    assert parse_time("2h", now) == now - 7_200_000
    assert parse_time("7d", now) == now - 7 * 86_400_000
    assert parse_time("1700000000000", now) == 1_700_000_000_000
    assert parse_time("2026-11-24T18:30", now) == int(__import__("datetime").datetime(2026, 11, 24, 18, 30).timestamp() * 1000)
    with pytest.raises(ValueError, match="duration like 10m"):
        parse_time("soon", now)
    assert np.isfinite(parse_time("0.5m", now))


def test_a_running_daemon_that_cannot_serve_is_told_apart_by_its_reason_not_its_words(daemon, backend, capsys) -> None:
    address, _, _ = daemon
    backend.ready = False
    try:
        # the message says nothing the client could match ("model not loaded yet"): the reason decides
        assert main(["mics", "--address", address]) == 3
        assert capsys.readouterr().err.strip() == (
            "roomtone mics: UNAVAILABLE: analysis backend unavailable: model not loaded yet")
    finally:
        backend.ready = True
