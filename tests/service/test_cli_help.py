"""Every `roomtone` subcommand explains itself with --help, and `features` works end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.cli.main import COMMANDS, build_parser, main


def test_top_level_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, _, _ in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", [name for name, _, _ in COMMANDS])
def test_each_subcommand_help_has_a_description_and_options(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"roomtone {name}" in out
    assert len(out.splitlines()) >= 4


def test_features_writes_log_mel_arrays_with_their_config(homesounds, tmp_path):
    clip = homesounds / "audio" / "typing" / "typing_A1_000.flac"
    out = tmp_path / "f.npz"
    assert main(["features", str(clip), "--out", str(out)]) == 0
    with np.load(out) as data:
        assert data["features_0"].shape == (1, 128, 1001)
        assert json.loads(str(data["config"]))["n_mels"] == 128


def test_features_names_an_unusable_file_and_exits_2(tmp_path, capsys):
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    assert main(["features", str(tmp_path / "broken.wav"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "broken.wav" in capsys.readouterr().err
