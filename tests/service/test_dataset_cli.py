"""`roomtone dataset summary` prints classes x folds and exits 2 with the file named on bad metadata."""

from __future__ import annotations

from service.cli.main import main


def test_summary_of_homesounds_lists_every_class_and_the_total(full_homesounds, capsys):
    assert main(["dataset", "summary", str(full_homesounds)]) == 0
    out = capsys.readouterr().out
    for label in ("speech", "water", "quiet_ambience", "motor_machine"):
        assert label in out
    assert "320 clips, 8 classes, 53.3 minutes" in out
    assert "no problems found" in out


def test_summary_of_a_non_dataset_exits_2_naming_the_path(tmp_path, capsys):
    assert main(["dataset", "summary", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
