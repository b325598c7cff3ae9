"""Bad input to every command that reads audio, to the daemon's config and to its model file: each is
refused with a message naming the file or key (exit 2 for the offline tools), or, when the audio is odd but
decodable, processed. No traceback, ever."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from reliability_support import DECODABLE, UNUSABLE, write_bad_audio
from service.cli.main import main
from service.store.event_store import EventStore

COMMANDS = {  # command -> argv for one input file (tmp: a scratch dir, model: the small model file)
    "features": lambda f, tmp, model: ["features", "--out", str(tmp / "out.npz"), str(f)],
    "health": lambda f, tmp, model: ["health", str(f)],
    "embed": lambda f, tmp, model: ["embed", "--model", str(model), "--quiet", "--out", str(tmp / "out.npz"), str(f)],
    "neighbours": lambda f, tmp, model: ["neighbours", "--model", str(model), "--index", str(tmp / "index.npz"), str(f)],
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory, clip) -> dict[str, Path]:
    return write_bad_audio(tmp_path_factory.mktemp("bad"), clip)


@pytest.fixture(scope="module")
def index(tmp_path_factory, small_model, clip) -> Path:
    directory = tmp_path_factory.mktemp("index")
    assert main(["embed", "--model", str(small_model), "--quiet", "--out", str(directory / "index.npz"), str(clip)]) == 0
    return directory


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_audio_command_refuses_unusable_files_by_name_and_processes_odd_ones(command, bad, index, small_model, capsys):
    for kind in UNUSABLE:
        code = main(COMMANDS[command](bad[kind], index, small_model))
        err = capsys.readouterr().err
        assert code == 2, f"{command} {kind}: exit {code}\n{err}"
        assert str(bad[kind]) in err and "Traceback" not in err, f"{command} {kind}: {err}"
    for kind in DECODABLE:
        code = main(COMMANDS[command](bad[kind], index, small_model))
        captured = capsys.readouterr()
        assert code == 0, f"{command} {kind}: exit {code}\n{captured.err}"


def test_the_daemon_refuses_an_unreadable_file_microphone_by_name(bad, small_model, tmp_path, capsys):
    for kind in ("corrupt", "empty", "no_samples", "zero_channels"):
        code = main(["run", "--model", str(small_model), "--file", f"hall={bad[kind]}", "--fast", "--no-grpc",
                     "--no-metrics", "--data-dir", str(tmp_path), "--log-level", "ERROR"])
        err = capsys.readouterr().err
        assert code == 1 and f"cannot start: mic hall:" in err and str(bad[kind]) in err, err


def test_the_daemon_stores_odd_and_half_broken_files_with_their_faults(bad, small_model, tmp_path, capsys):
    args = ["run", "--model", str(small_model), "--fast", "--no-grpc", "--no-metrics", "--data-dir", str(tmp_path),
            "--log-level", "ERROR"]
    for kind in ("nan", "garbage_1e6", "truncated", "huge_header", "rate_8k"):
        args += ["--file", f"{kind}={bad[kind]}"]
    assert main(args) == 0, capsys.readouterr().err
    with EventStore(tmp_path / "roomtone.db") as store:
        windows = {w.mic_id: w for w in store.list_windows(limit=100).items}
    assert set(windows) == {"nan", "garbage_1e6", "truncated", "huge_header", "rate_8k"}  # the decodable part of each
    assert windows["nan"].health_state == "faulty" and "non_finite" in " ".join(windows["nan"].health_reasons)
    assert windows["garbage_1e6"].health_state != "ok"
    assert np.isfinite(windows["nan"].rms_dbfs) or windows["nan"].rms_dbfs == float("-inf")


@pytest.mark.parametrize("text, key", [
    ("bogus = 1", "bogus"),
    ("[pipeline]\nhop_seconds = 5", "pipeline.hop_seconds"),
    ("[pipeline]\nbatch_size = \"eight\"", "pipeline.batch_size"),
    ("[metrics]\nport = 70000", "metrics.port"),
    ("[[mics]]\nid = \"a\"\nkind = \"file\"\npath = \"/no/such.wav\"", "mics[0].path"),
    ("model = \"/no/such/model.pt\"", "model"),
    ("[grpc]\naddress = \"nonsense\"", "grpc.address"),
    ("[health]\nno_such_threshold = 1", "health"),
    ("[pipeline\nbroken", "invalid TOML"),
])
def test_a_malformed_config_stops_the_start_with_exit_2_naming_the_key(text, key, small_model, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text((f'model = "{small_model}"\n' if not text.startswith("model") else "") + text + "\n")
    sources = [] if "[[mics]]" in text else ["--demo"]
    assert main(["run", "--config", str(config), *sources, "--max-windows", "1", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config error" in err and key in err, err


def _broken_models(small_model: Path, directory: Path) -> dict[str, Path]:
    data = torch.load(small_model, map_location="cpu", weights_only=True)
    out = {}

    def save(name: str, value) -> None:
        out[name] = directory / f"{name}.pt"
        torch.save(value, out[name])

    save("newer_version", {**data, "version": 999})
    save("feature_config_unknown_key", {**data, "feature_config": {**data["feature_config"], "pcen": True}})
    save("feature_config_impossible", {**data, "feature_config": {**data["feature_config"], "fmax": 48000.0}})
    save("weights_for_another_width", {**data, "encoder_config": {**data["encoder_config"], "width": 8}})
    save("not_a_model", {"hello": "world"})
    out["truncated"] = directory / "truncated.pt"
    out["truncated"].write_bytes(small_model.read_bytes()[:2000])
    out["text"] = directory / "text.pt"
    out["text"].write_text("not a model\n")
    return out


def test_an_incompatible_or_damaged_model_file_is_refused_by_every_command_naming_the_file(small_model, clip, tmp_path, capsys):
    broken = _broken_models(small_model, tmp_path)
    for name, model in broken.items():
        code = main(["run", "--model", str(model), "--demo", "--no-grpc", "--no-metrics", "--data-dir", str(tmp_path),
                     "--log-level", "ERROR"])
        err = capsys.readouterr().err
        assert code == 1 and "cannot start" in err and str(model) in err and "Traceback" not in err, f"{name}: {err}"
        code = main(["embed", "--model", str(model), "--quiet", "--out", str(tmp_path / "e.npz"), str(clip)])
        err = capsys.readouterr().err
        assert code == 2 and str(model) in err and "Traceback" not in err, f"{name}: {err}"
    messages = {}
    for name, model in broken.items():
        main(["embed", "--model", str(model), "--quiet", "--out", str(tmp_path / "e.npz"), str(clip)])
        messages[name] = capsys.readouterr().err
    assert "version 999" in messages["newer_version"]
    assert "pcen" in messages["feature_config_unknown_key"]
    assert "fmax" in messages["feature_config_impossible"]
    assert "width=8" in messages["weights_for_another_width"]
