"""Model files that load but can never produce a window (issue 15, BROKE 6) stop `roomtone run` at start with
`cannot start: <path>: ...` and no traceback: configs out of bounds and heads that do not fit are refused
when the file is read, and one window of `pipeline.window_s` is analysed (a dry run) before capture opens."""

from __future__ import annotations

import pytest
import torch

from service.cli.main import main


def variant(small_model, tmp_path, name: str, section: str, **changes):
    """A copy of the small model file with ``changes`` to one stored section (bypassing save_model's checks)."""
    data = torch.load(small_model, map_location="cpu", weights_only=True)
    data[section] = {**data[section], **changes}
    path = tmp_path / f"{name}.pt"
    torch.save(data, path)
    return path


@pytest.mark.parametrize("name, section, changes, window_s, says", [
    ("huge_fft", "feature_config", {"n_fft": 2 ** 22}, "2", "feature_config.n_fft"),
    ("huge_mels", "feature_config", {"n_fft": 2 ** 20, "n_mels": 100_000}, "2", "feature_config.n"),
    ("wrong_head", "head", {"coef": [[0.1] * 7] * 3}, "2", "unusable activity head"),
    # in bounds, but an 8192-point FFT cannot be centred on a 0.25 s window of 4000 samples
    ("window_too_short", "feature_config", {"n_fft": 8192}, "0.25", "with pipeline.window_s = 0.25: a dry run"),
])
def test_a_model_that_cannot_analyse_a_window_stops_the_start_naming_the_file(small_model, tmp_path, capsys, name,
                                                                               section, changes, window_s, says):
    model = variant(small_model, tmp_path, name, section, **changes)
    code = main(["run", "--model", str(model), "--backend", "torch", "--demo", "--window-s", window_s,
                 "--hop-s", window_s, "--no-grpc", "--no-metrics", "--no-web", "--data-dir", str(tmp_path / "data"),
                 "--log-level", "ERROR"])
    err = capsys.readouterr().err
    assert code == 1 and f"cannot start: {model}: " in err and says in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "data" / "roomtone.db").exists()  # refused before the store was opened
