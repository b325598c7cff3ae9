"""`roomtone classify` reports the daemon's custom sounds per window, reading the library without changing it."""

from __future__ import annotations

import json
from pathlib import Path

import soundfile

from encoder.file_digest import file_sha256
from service.analysis.analyser import Analyser
from service.cli.main import main
from service.analysis.serving_model import load_serving_model
from service.analysis.sound_library import SoundLibrary

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "roomtone.pt"


def test_classify_names_the_custom_sounds_of_each_window_and_leaves_the_library_alone(homesounds, tmp_path, capsys):
    typing = homesounds / "audio" / "typing" / "typing_A1_000.flac"
    analyser = Analyser(load_serving_model(MODEL, "torch", "cpu"))
    library = SoundLibrary(tmp_path / "sounds", file_sha256(MODEL), analyser.runner.embedder.embed, 16000,
                           analyser.bundle.embedding_dim)
    library.add("keys", [("typing.flac", soundfile.read(typing, dtype="float32")[0])], threshold=0.99)
    before = (tmp_path / "sounds" / "library.json").read_bytes()
    args = ["classify", "--json", "--model", str(MODEL), "--backend", "torch", "--sounds", str(tmp_path / "sounds")]
    assert main([*args, str(typing)]) == 0
    [window] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [s["name"] for s in window["sounds"]] == ["keys"] and window["sounds"][0]["score"] > 0.99
    assert main([*args, "--no-sounds", str(typing)]) == 0
    assert json.loads(capsys.readouterr().out)["sounds"] == []
    assert main(["classify", "--model", str(MODEL), "--backend", "torch", "--sounds", str(tmp_path / "sounds"),
                 str(typing)]) == 0
    assert "sounds: keys 1.000" in capsys.readouterr().out
    assert (tmp_path / "sounds" / "library.json").read_bytes() == before
