"""Specification of `roomtone health FILE... [--json]`: per-window state and reasons, JSON Lines with
every score, exit 0 even when faults are found, exit 2 (naming the file) only for unusable input."""

from __future__ import annotations

import json

import numpy as np
import soundfile

from encoder.signal_checks import CHECKS
from service.cli.main import main

RATE = 16000


def live(seconds: float, channels: int = 1, seed: int = 0) -> np.ndarray:
    """Room noise at -35 dBFS, [samples, channels] as soundfile writes it."""
    return np.random.default_rng(seed).normal(0, 0.018, (int(seconds * RATE), channels)).astype(np.float32)


def windows(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_a_clean_shared_clip_is_one_ok_window(homesounds, capsys):
    path = homesounds / "audio" / "speech" / "speech_A1_000.flac"
    assert main(["health", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path} @ 0s: ok" in out
    assert "1 windows: 1 ok, 0 degraded, 0 faulty" in out


def test_json_gives_one_object_per_window_with_every_score_and_faults_still_exit_0(tmp_path, capsys):
    data = live(25.0)
    data[12 * RATE : 12 * RATE + 800] = 1.0  # clipped burst in the second window
    data[20 * RATE :] = 0.0  # the mic died in the third (5 s) window
    path = tmp_path / "mic.wav"
    soundfile.write(path, data, RATE, subtype="FLOAT")
    assert main(["health", "--json", str(path)]) == 0
    rows = windows(capsys)
    assert [row["offset_s"] for row in rows] == [0.0, 10.0, 20.0]
    assert [row["state"] for row in rows] == ["ok", "degraded", "faulty"]
    assert [reason.split(":")[0] for reason in rows[1]["reasons"]] == ["clipping"]
    assert rows[2]["reasons"] == ["dead_channel: level -120.0 dBFS is below the -70 dBFS floor"]
    assert rows[2]["duration_s"] == 5.0
    for row in rows:
        assert row["path"] == str(path)
        assert set(CHECKS) <= set(row["scores"]) and set(row["flags"]) == set(CHECKS)


def test_a_dead_channel_of_a_multichannel_file_is_named(tmp_path, capsys):
    data = live(10.0, channels=4)
    data[:, 1] = 0.0
    path = tmp_path / "node.wav"
    soundfile.write(path, data, RATE)
    assert main(["health", str(path)]) == 0
    out = capsys.readouterr().out
    assert ": faulty" in out and "(channel 2)" in out


def test_an_unusable_file_exits_2_naming_it_and_the_other_files_are_still_checked(tmp_path, homesounds, capsys):
    missing = tmp_path / "gone.wav"
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"not audio at all")
    good = homesounds / "audio" / "speech" / "speech_A1_000.flac"
    assert main(["health", str(missing), str(broken), str(good)]) == 2
    captured = capsys.readouterr()
    assert f"{missing}: no such file" in captured.err
    assert f"{broken}: cannot decode audio" in captured.err
    assert f"{good} @ 0s: ok" in captured.out


def test_audio_shorter_than_a_minimum_window_is_unusable(tmp_path, capsys):
    path = tmp_path / "blip.wav"
    soundfile.write(path, live(0.5), RATE)
    assert main(["health", str(path)]) == 2
    assert "shorter than --min-s" in capsys.readouterr().err


def test_threshold_overrides_come_from_a_json_config_and_unknown_keys_are_named(tmp_path, capsys):
    path = tmp_path / "dc.wav"
    soundfile.write(path, live(10.0) + 0.02, RATE)
    assert main(["health", "--json", str(path)]) == 0
    assert windows(capsys)[0]["state"] == "ok"
    strict = tmp_path / "strict.json"
    strict.write_text(json.dumps({"dc_offset_max": 0.01}))
    assert main(["health", "--json", "--config", str(strict), str(path)]) == 0
    assert windows(capsys)[0]["flags"]["dc_offset"] is True
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"dc_ofset_max": 0.01}))
    assert main(["health", "--config", str(typo), str(path)]) == 2
    assert "dc_ofset_max" in capsys.readouterr().err
