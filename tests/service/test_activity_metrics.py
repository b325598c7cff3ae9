"""Prometheus view of the activity decision and custom sounds (service/metrics/daemon_metrics.py)."""

from __future__ import annotations

from service.metrics.daemon_metrics import Metrics
from service.records import SoundMatch, WindowResult


def result(label, health="ok", sounds=()):
    return WindowResult("kitchen", 0, 10_000, label, {"speech": 0.6, "typing": 0.4}, health, (), {}, -30.0,
                        sounds=sounds)


def value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels)


def test_quiet_and_unknown_are_first_class_activity_series():
    metrics = Metrics()
    metrics.observe_analysis(result("quiet"), {})
    assert value(metrics, "roomtone_activity_probability", mic="kitchen", activity="quiet") == 1.0
    assert value(metrics, "roomtone_activity_probability", mic="kitchen", activity="speech") == 0.0
    assert value(metrics, "roomtone_activity_label_kind", mic="kitchen", kind="quiet") == 1.0
    metrics.observe_analysis(result("unknown"), {})
    assert value(metrics, "roomtone_activity_probability", mic="kitchen", activity="unknown") == 1.0
    assert value(metrics, "roomtone_activity_probability", mic="kitchen", activity="quiet") == 0.0
    assert value(metrics, "roomtone_activity_probability", mic="kitchen", activity="speech") == 0.6


def test_a_faulty_microphone_shows_no_activity_and_says_why():
    metrics = Metrics()
    metrics.observe_analysis(result(None, health="faulty"), {})
    assert value(metrics, "roomtone_activity_label_kind", mic="kitchen", kind="mic_faulty") == 1.0
    assert value(metrics, "roomtone_activity_label_kind", mic="kitchen", kind="class") == 0.0
    assert value(metrics, "roomtone_activity_probability", mic="kitchen", activity="speech") == 0.0


def test_custom_sound_detections_are_counted_per_sound():
    metrics = Metrics()
    for _ in range(2):
        metrics.observe_analysis(result("speech", sounds=(SoundMatch("doorbell", 0.93, 0.9),)), {})
    assert value(metrics, "roomtone_sound_detections_total", mic="kitchen", sound="doorbell") == 2.0
