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


@pytest.mark.parametrize("name", [name for name, _, _ in COMMANDS])
def test_no_option_names_its_default_twice_or_a_default_of_none(name, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([name, "--help"])
    options: list[str] = []  # each option's help, its wrapped lines joined
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  -"):
            options.append(line)
        elif options and line.startswith("    "):
            options[-1] += " " + line.strip()
    assert options and options[0].startswith("  -h, --help")
    for option in options:
        assert "(default: None)" not in option and "(default: False)" not in option, option
        assert option.count("(default") <= 1, option


def test_run_help_names_the_defaults_of_the_config_schema(capsys):
    from service.config import GrpcConfig, MetricsConfig, PipelineConfig

    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default {GrpcConfig().address})" in out and f"(default {MetricsConfig().port})" in out
    assert f"window length in seconds (default {PipelineConfig().window_s:g})" in out


def test_events_limit_is_capped_at_the_daemons_page_size_with_a_clear_error(capsys):
    from service.daemon_vocabulary import MAX_PAGE

    assert main(["events", "--address", "127.0.0.1:1", "--limit", str(MAX_PAGE + 1)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"roomtone events: --limit must be between 1 and {MAX_PAGE} (the most the daemon returns at once), got {MAX_PAGE + 1}")
