"""Specification of the daemon's model backends (service/analysis/serving_model.py, `pipeline.backend`): the onnx
backend serves without ever importing torch (checked in a real daemon process), both backends give the
same windows, and a graph that does not belong to the model file stops the start with the command that
re-exports it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

from daemon_support import DaemonProcess, isolated_args
from encoder.model_file import load_model, save_model, with_metadata
from encoder.onnx_graph import GraphError, graph_path_for
from service.config import load_config
from service.daemon import Daemon
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc
from service.analysis.serving_model import BackendError, backend_for, load_serving_model

REPO = Path(__file__).resolve().parents[2]

# `roomtone run ARGS` in this interpreter, writing the names of every module it imported to argv[1] at exit
RUN_AND_LIST_MODULES = (
    "import atexit, json, sys\n"
    "out = sys.argv[1]\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "from service.cli.main import main\n"
    "sys.exit(main(['run', *sys.argv[2:]]))\n"
)


def test_auto_is_onnx_on_the_cpu_and_torch_on_cuda():
    assert backend_for("auto", "cpu") == "onnx"
    assert backend_for("auto", "cuda") == "torch"
    assert backend_for("auto", "cuda:1") == "torch"
    assert backend_for("torch", "cpu") == "torch" and backend_for("onnx", "auto") == "onnx"


def test_the_onnx_backend_refuses_a_cuda_device(small_model):
    with pytest.raises(BackendError) as caught:
        load_serving_model(small_model, "onnx", "cuda")
    assert caught.value.reason == "onnx_on_cuda"


def test_the_daemon_with_the_onnx_backend_never_imports_torch(small_model, homesounds, tmp_path):
    clip = homesounds / "audio" / "typing" / "typing_A2_000.flac"
    modules = tmp_path / "modules.json"
    args = [*isolated_args(tmp_path / "data"), "--model", str(small_model), "--file", str(clip), "--loop",
            "--backend", "onnx"]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    daemon = DaemonProcess([str(modules), *args], env=env,
                           command=(sys.executable, "-c", RUN_AND_LIST_MODULES))
    try:
        assert daemon.wait_for("model loaded", 60)["backend"] == "onnx"
        address = daemon.wait_for("gRPC listening", 60)["address"]
        daemon.wait_for("state changed", 60, kind="health_changed")  # a live window was analysed and stored
        with grpc.insecure_channel(address) as channel:  # uploads take the same path
            classified = pb_grpc.RoomtoneStub(channel).Classify(pb.ClassifyRequest(audio=clip.read_bytes()), timeout=60)
        assert len(classified.windows) == 1 and classified.windows[0].label
    finally:
        code = daemon.stop()
    assert code == 0, "".join(daemon.raw[-20:])
    loaded = set(json.loads(modules.read_text()))
    assert "onnxruntime" in loaded
    assert not {name for name in loaded if name.split(".")[0] in ("torch", "torchaudio")}


def run_daemon(model: Path, clip: Path, data: Path, backend: str) -> list:
    config = load_config(None, {
        "model": str(model), "data_dir": str(data), "pipeline": {"backend": backend},
        "mics": [{"id": "desk", "kind": "file", "path": str(clip), "realtime": False}],
        "grpc": {"enabled": False}, "metrics": {"enabled": False},
    }, environ={})
    daemon = Daemon(config)
    daemon.start()
    try:
        assert daemon.pipeline.drained.wait(60)
        assert daemon.analyser.runner.embedder.__class__.__name__ == {"onnx": "OnnxEmbedder", "torch": "TorchEmbedder"}[backend]
    finally:
        daemon.stop()
    from service.store.event_store import EventStore

    with EventStore(data / "roomtone.db") as store:
        listed = sorted(store.list_windows(limit=100).items, key=lambda w: w.start_unix_ms)
        return [store.get_window(w.window_id) for w in listed]


def test_both_backends_store_the_same_windows(small_model, homesounds, tmp_path):
    clip = homesounds / "audio" / "speech" / "speech_A1_001.flac"
    onnx = run_daemon(small_model, clip, tmp_path / "onnx", "onnx")
    torch = run_daemon(small_model, clip, tmp_path / "torch", "torch")
    assert len(onnx) == len(torch) >= 1
    for a, b in zip(onnx, torch):
        assert a.label == b.label and a.health_state == b.health_state
        assert float(np.dot(a.embedding, b.embedding)) >= 0.9999
        assert a.probabilities.keys() == b.probabilities.keys()
        assert max(abs(a.probabilities[k] - b.probabilities[k]) for k in a.probabilities) <= 1e-3


def test_a_stale_graph_stops_the_daemon_naming_the_export_command(small_model, tmp_path, capsys):
    from service.cli.main import main

    model = tmp_path / "retrained.pt"
    save_model(with_metadata(load_model(small_model), note="retrained"), model)
    graph_path_for(model).write_bytes(graph_path_for(small_model).read_bytes())  # the old model's graph
    with pytest.raises(GraphError) as caught:
        load_serving_model(model, "onnx", "cpu")
    assert caught.value.reason == "stale"
    code = main(["run", *isolated_args(tmp_path / "data"), "--model", str(model), "--max-windows", "1"])
    assert code == 1
    assert f"roomtone export --model {model}" in capsys.readouterr().err
