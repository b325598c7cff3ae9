"""The activity decision after the head: faulty -> no activity, quiet below the level floor, unknown below
the probability threshold, else the head's class (service/analysis/activity.py)."""

import pytest

from service.analysis.activity import check_head_classes, decide_activity, label_kind
from service.config import ActivityConfig

CONFIG = ActivityConfig(quiet_below_dbfs=-45.0, unknown_below=0.7)
SURE = {"speech": 0.9, "typing": 0.1}
UNSURE = {"speech": 0.55, "typing": 0.45}


def test_a_faulty_microphone_gives_no_activity_even_when_the_head_is_sure():
    assert decide_activity(SURE, -20.0, "faulty", CONFIG) is None
    assert label_kind(None, "faulty") == "mic_faulty"


def test_digital_silence_is_quiet_not_a_class():
    assert decide_activity({"motor_machine": 0.72, "speech": 0.28}, -120.0, "ok", CONFIG) == "quiet"


def test_the_level_floor_is_exclusive_and_configurable():
    assert decide_activity(SURE, -45.0, "ok", CONFIG) == "speech"
    assert decide_activity(SURE, -45.01, "ok", CONFIG) == "quiet"
    assert decide_activity(SURE, -50.0, "ok", ActivityConfig(quiet_below_dbfs=-60.0)) == "speech"


def test_an_unsure_head_answer_is_unknown_and_a_sure_one_is_its_class():
    assert decide_activity(UNSURE, -20.0, "degraded", CONFIG) == "unknown"
    assert decide_activity(SURE, -20.0, "ok", CONFIG) == "speech"
    assert decide_activity(UNSURE, -20.0, "ok", ActivityConfig(unknown_below=0.0)) == "speech"


def test_quiet_needs_no_head_but_a_label_does():
    assert decide_activity({}, -90.0, "ok", CONFIG) == "quiet"
    assert decide_activity({}, -20.0, "ok", CONFIG) is None
    assert label_kind(None, "ok") == "no_head"


def test_label_kind_names_quiet_unknown_and_classes():
    assert [label_kind(x, "ok") for x in ("quiet", "unknown", "speech")] == ["quiet", "unknown", "class"]


def test_a_head_may_not_use_the_reserved_labels_as_classes():
    with pytest.raises(ValueError, match="quiet"):
        check_head_classes(["speech", "quiet"])
    check_head_classes(["speech", "typing"])


def test_config_rejects_thresholds_out_of_range():
    with pytest.raises(ValueError):
        ActivityConfig(unknown_below=1.5)
    with pytest.raises(ValueError):
        ActivityConfig(quiet_below_dbfs=3.0)
