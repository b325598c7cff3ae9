"""Activity corrections: stored with their window in the store (schema step 6), made and taken back through
the rules of service/store/corrections.py, over a real gRPC server and with `roomtone corrections add|list|remove`."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import numpy as np
import pytest

from daemon_support import tiny_backend  # tests/service/ is on sys.path
from service.cli.main import main
from service.config import GrpcConfig, StoreConfig
from service.store.correction_store import corrections_in_file
from service.store.corrections import CorrectionError, CorrectionService
from service.store.event_store import EventStore
from service.store.store_schema import SCHEMA_VERSION, migrate
from service.api.grpc_server import event_bus_for, start_server, stop_server
from service.records import WindowResult
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

CLASSES = ("speech", "water")
MODEL = "a" * 64
T0 = 1_790_000_000_000


def window(i: int, label: str | None = "water", embedding: bool = True, mic: str = "kitchen") -> WindowResult:
    vector = np.eye(8, dtype=np.float32)[i % 8] if embedding else None
    return WindowResult(mic, T0 + i * 10_000, T0 + (i + 1) * 10_000, label, {"water": 0.8, "speech": 0.2},
                        "ok" if embedding else "faulty", (), {}, -30.0, embedding=vector)


@pytest.fixture()
def store(tmp_path: Path):
    with EventStore(tmp_path / "roomtone.db") as opened:
        opened.record_model_run(MODEL, T0)
        yield opened


def test_a_correction_keeps_its_window_embedding_and_the_model_that_made_it(store) -> None:
    (stored,), _ = store.add_results([window(1)])
    service = CorrectionService(store, CLASSES)
    correction = service.correct(stored.window_id, "speech", now_unix_ms=T0 + 99_000)
    assert (correction.label, correction.predicted, correction.model_sha256) == ("speech", "water", MODEL)
    (listed,) = store.list_corrections(include_embedding=True)
    assert listed.window_id == stored.window_id and listed.created_unix_ms == T0 + 99_000
    assert np.allclose(listed.embedding, stored.embedding) and listed.window_kept


def test_correcting_a_window_again_replaces_its_correction_and_remove_takes_it_back(store) -> None:
    (first, second), _ = store.add_results([window(1), window(2)])
    service = CorrectionService(store, CLASSES)
    service.correct(first.window_id, "speech", now_unix_ms=T0 + 1)
    service.correct(second.window_id, "speech", now_unix_ms=T0 + 2)
    service.correct(first.window_id, "water", now_unix_ms=T0 + 3)
    assert [(c.window_id, c.label) for c in service.list()] == [(first.window_id, "water"), (second.window_id, "speech")]
    assert [c.window_id for c in service.list(labels=("speech",))] == [second.window_id]
    service.remove(first.window_id)
    assert [c.window_id for c in service.list()] == [second.window_id]
    with pytest.raises(CorrectionError) as missing:
        service.remove(first.window_id)
    assert missing.value.reason == "not_found"


@pytest.mark.parametrize("label, reason, words", [
    ("cat", "invalid_argument", "not one of the head's classes"),
    ("quiet", "invalid_argument", "decided by level or confidence"),
])
def test_a_label_that_is_not_a_head_class_is_refused_saying_why(store, label, reason, words) -> None:
    (stored,), _ = store.add_results([window(1)])
    with pytest.raises(CorrectionError, match=words) as refused:
        CorrectionService(store, CLASSES).correct(stored.window_id, label)
    assert refused.value.reason == reason and store.list_corrections() == []


def test_an_unknown_window_a_faulty_one_and_a_model_without_head_are_refused(store) -> None:
    (faulty,), _ = store.add_results([window(1, label=None, embedding=False)])
    service = CorrectionService(store, CLASSES)
    for window_id, reason in ((12345, "not_found"), (faulty.window_id, "failed_precondition")):
        with pytest.raises(CorrectionError) as refused:
            service.correct(window_id, "speech")
        assert refused.value.reason == reason
    with pytest.raises(CorrectionError) as no_head:
        CorrectionService(store, ()).correct(faulty.window_id, "speech")
    assert no_head.value.reason == "failed_precondition"


def test_a_correction_outlives_its_window_under_retention(tmp_path: Path) -> None:
    with EventStore(tmp_path / "roomtone.db", StoreConfig(max_age_days=1)) as store:
        store.record_model_run(MODEL, T0)
        (old, new), _ = store.add_results([window(1), window(2)])
        CorrectionService(store, CLASSES).correct(old.window_id, "speech")
        store.enforce_retention(now_unix_ms=T0 + 86_400_000 + 15_000)  # deletes window 1 only
        assert store.get_window(old.window_id) is None and store.get_window(new.window_id) is not None
        (kept,) = store.list_corrections(include_embedding=True)
        assert kept.window_id == old.window_id and not kept.window_kept and kept.embedding is not None


def test_the_model_of_a_window_is_the_run_that_started_before_it(store) -> None:
    store.record_model_run("b" * 64, T0 + 50_000)
    assert store.model_at(T0 - 1) is None
    assert store.model_at(T0 + 10_000) == MODEL and store.model_at(T0 + 60_000) == "b" * 64


@pytest.mark.parametrize("old_version", [4, 5])  # before custom-sound spans (step 5), and with them
def test_a_store_of_an_older_schema_upgrades_keeping_its_windows(tmp_path: Path, old_version: int) -> None:
    path = tmp_path / "old.db"
    connection = sqlite3.connect(path, isolation_level=None)
    assert migrate(connection, target=old_version) == old_version
    connection.execute("INSERT INTO windows (mic_id, start_unix_ms, end_unix_ms, label, probabilities_json, health_state, "
                       "health_reasons_json, health_scores_json, rms_dbfs) VALUES ('hall', 1, 2, 'speech', '{}', 'ok', "
                       "'[]', '{}', -30)")
    connection.close()
    assert corrections_in_file(path) == []  # an older store has none, and reading does not upgrade it
    with EventStore(path) as store:
        assert store.schema_version() == SCHEMA_VERSION and store.counts()[0] == 1 and store.list_corrections() == []


def test_reading_corrections_from_a_file_that_is_not_a_store_names_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing.db"):
        corrections_in_file(tmp_path / "missing.db")
    (tmp_path / "notes.db").write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ValueError, match="notes.db"):
        corrections_in_file(tmp_path / "notes.db")


# --- over gRPC and the command line -------------------------------------------------------------------

@pytest.fixture(scope="module")
def backend(homesounds: Path):
    audio = homesounds / "audio"
    return tiny_backend({"speech": audio / "speech" / "speech_A1_000.flac",
                         "water": audio / "water" / "water_A1_000.flac"}, [], 8)


@pytest.fixture()
def api(store, backend):
    config = GrpcConfig(address="127.0.0.1:0")
    server = start_server(store, event_bus_for(config), backend, config, corrections=CorrectionService(store, CLASSES))
    channel = grpc.insecure_channel(server.roomtone_address)
    yield pb_grpc.RoomtoneStub(channel), server.roomtone_address
    channel.close()
    stop_server(server, grace_s=0.5)


def test_corrections_are_made_listed_and_removed_over_grpc(api, store) -> None:
    stub, _ = api
    (stored,), _ = store.add_results([window(3)])
    made = stub.CorrectWindow(pb.CorrectWindowRequest(window_id=stored.window_id, label="speech"))
    assert (made.label, made.predicted_label, made.model_sha256, made.window_kept) == ("speech", "water", MODEL, True)
    assert [c.window_id for c in stub.ListCorrections(pb.ListCorrectionsRequest(labels=["speech"])).corrections] == [
        stored.window_id]
    assert not stub.ListCorrections(pb.ListCorrectionsRequest(mic_ids=["hall"])).corrections
    stub.RemoveCorrection(pb.RemoveCorrectionRequest(window_id=stored.window_id))
    assert not stub.ListCorrections(pb.ListCorrectionsRequest()).corrections


def test_bad_corrections_get_their_status_codes_and_reasons(api, store) -> None:
    stub, _ = api
    (stored,), _ = store.add_results([window(3)])
    for request, code in ((pb.CorrectWindowRequest(window_id=stored.window_id, label="cat"), grpc.StatusCode.INVALID_ARGUMENT),
                          (pb.CorrectWindowRequest(window_id=stored.window_id), grpc.StatusCode.INVALID_ARGUMENT),
                          (pb.CorrectWindowRequest(window_id=999, label="speech"), grpc.StatusCode.NOT_FOUND)):
        with pytest.raises(grpc.RpcError) as refused:
            stub.CorrectWindow(request)
        assert refused.value.code() == code
    with pytest.raises(grpc.RpcError) as missing:
        stub.RemoveCorrection(pb.RemoveCorrectionRequest(window_id=stored.window_id))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("roomtone-reason", "not_found") in tuple(missing.value.trailing_metadata())


def test_the_corrections_command_adds_lists_and_removes(api, store, capsys) -> None:
    _, address = api
    (stored,), _ = store.add_results([window(4)])
    assert main(["corrections", "add", str(stored.window_id), "speech", "--address", address]) == 0
    assert f"window {stored.window_id}" in capsys.readouterr().out
    assert main(["corrections", "list", "--address", address]) == 0
    listing = capsys.readouterr().out
    assert f"#{stored.window_id}" in listing and "speech" in listing and "water" in listing
    assert main(["corrections", "add", str(stored.window_id), "cat", "--address", address]) == 2
    assert "cat" in capsys.readouterr().err
    assert main(["corrections", "remove", str(stored.window_id), "--address", address]) == 0
    assert main(["corrections", "remove", str(stored.window_id), "--address", address]) == 4
