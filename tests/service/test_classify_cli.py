"""Specification of `roomtone classify FILE... [--json]`: offline, per window, exactly what the daemon's
Classify RPC answers for the same file (the same analysis path, compared against a real gRPC server)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile
from google.protobuf.json_format import MessageToDict

from service.analysis.analyser import Analyser
from service.cli.main import main
from service.config import GrpcConfig
from service.api.daemon_backend import DaemonBackend
from service.api.event_bus import EventBus
from service.store.event_store import EventStore
from service.api.grpc_server import start_server, stop_server
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc
from service.analysis.serving_model import load_serving_model

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "roomtone.pt"


@pytest.fixture(scope="module")
def files(homesounds: Path, tmp_path_factory) -> list[Path]:
    """A vendored typing clip and a 25 s stereo file (speech then water then 5 s of typing: 3 windows)."""
    audio = homesounds / "audio"
    typing = audio / "typing" / "typing_A1_000.flac"
    parts = [soundfile.read(audio / c / f"{c}_A1_000.flac", dtype="float32")[0] for c in ("speech", "water")]
    mono = np.concatenate(parts + [soundfile.read(typing, dtype="float32")[0][:5 * 16000]])
    joined = tmp_path_factory.mktemp("classify") / "joined.wav"
    soundfile.write(joined, np.stack([mono, 0.5 * mono], axis=1), 16000)
    return [typing, joined]


def classify_json(capsys, *args: str) -> tuple[int, list[dict]]:
    """Exit code and parsed JSON lines of `roomtone classify --json`."""
    code = main(["classify", "--json", "--model", str(MODEL), "--backend", "torch", *args])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_every_window_gets_label_probabilities_and_health_as_the_classify_rpc_gives_them(files, capsys, tmp_path):
    code, lines = classify_json(capsys, *map(str, files))
    assert code == 0
    assert [(Path(w["path"]).name, w["start_s"], w["end_s"]) for w in lines] == [
        ("typing_A1_000.flac", 0.0, 10.0), ("joined.wav", 0.0, 10.0), ("joined.wav", 10.0, 20.0),
        ("joined.wav", 20.0, 25.0)]
    for window in lines:
        assert window["label"] in window["probabilities"]
        assert sum(window["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert window["health_state"].startswith("HEALTH_STATE_") and "rms_dbfs" in window

    # The daemon's gRPC server over the daemon's backend, same model: the same windows, field for field.
    analyser = Analyser(load_serving_model(MODEL, "torch", "cpu"))
    store, bus = EventStore(tmp_path / "api.db"), EventBus(queue_size=8, max_subscribers=2)
    server = start_server(store, bus, DaemonBackend(analyser), GrpcConfig(address="127.0.0.1:0"))
    try:
        with grpc.insecure_channel(server.roomtone_address) as channel:
            stub = pb_grpc.RoomtoneStub(channel)
            served = [MessageToDict(w, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
                      for path in files
                      for w in stub.Classify(pb.ClassifyRequest(audio=path.read_bytes()), timeout=60).windows]
    finally:
        stop_server(server, grace_s=0.5)
        store.close()
    assert len(served) == len(lines)
    for offline, rpc in zip(lines, served):
        assert offline["start_s"] * 1000 == int(rpc["start_unix_ms"]) and offline["end_s"] * 1000 == int(rpc["end_unix_ms"])
        for key in ("label", "label_kind", "health_state", "health_reasons"):
            assert offline[key] == rpc[key]
        assert offline["probabilities"] == pytest.approx(rpc["probabilities"], abs=1e-6)
        assert offline["rms_dbfs"] == pytest.approx(rpc["rms_dbfs"])


def test_text_output_has_one_line_per_window_with_label_health_level_and_top_classes(files, capsys):
    assert main(["classify", "--model", str(MODEL), "--backend", "torch", "--top", "2", str(files[1])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" @ ")[1].split(":")[0] for line in lines] == ["0-10s", "10-20s", "20-25s"]
    for line in lines:
        assert line.startswith(f"{files[1]} @ ") and " dBFS  top: " in line and line.count(", ") == 1


def test_window_length_follows_the_pipeline_setting(files, capsys):
    code, lines = classify_json(capsys, "--window-s", "5", str(files[1]))
    assert code == 0 and [w["end_s"] for w in lines] == [5.0, 10.0, 15.0, 20.0, 25.0]


def test_an_unusable_file_is_named_with_exit_2_and_the_others_are_still_classified(files, capsys, tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wave file")
    code = main(["classify", "--model", str(MODEL), "--backend", "torch", str(broken), str(tmp_path / "missing.flac"),
                 str(files[0])])
    out, err = capsys.readouterr()
    assert code == 2
    assert "broken.wav: cannot decode audio" in err and "missing.flac" in err
    assert len(out.splitlines()) == 1 and "typing_A1_000.flac @ 0-10s" in out


def test_a_missing_model_is_refused_with_exit_2_naming_it(files, capsys, tmp_path):
    assert main(["classify", "--model", str(tmp_path / "none.pt"), "--backend", "torch", str(files[0])]) == 2
    assert "none.pt" in capsys.readouterr().err
