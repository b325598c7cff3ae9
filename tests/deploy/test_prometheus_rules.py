"""The Prometheus scrape config and alert rules: valid for promtool, unit-tested, and about real metrics."""

from __future__ import annotations

import re

import pytest

from deploy_files import (
    PROMETHEUS_CONFIG, RULE_TESTS, RULES, daemon_metric_names, metric_names_in, require_tool, run_tool,
)

pytestmark = pytest.mark.prometheus

#: The alerts issue 8 asks for; more may exist.
REQUIRED_ALERTS = {
    "RoomtoneMicrophoneFaulty", "RoomtoneMicrophoneDegraded", "RoomtoneCaptureStalled",
    "RoomtoneWindowsDropped", "RoomtoneDaemonDown",
}


def alert_names() -> list[str]:
    """Names of the alerts in the rules file, in order."""
    return re.findall(r"^\s*- alert:\s*(\w+)", RULES.read_text(), flags=re.M)


def test_scrape_config_and_the_rule_files_it_loads_pass_promtool_check_config():
    result = run_tool([require_tool("promtool"), "check", "config", str(PROMETHEUS_CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rules/roomtone.yml" in result.stdout + result.stderr, "prometheus.yml does not load the alert rules"


def test_alert_rules_pass_promtool_check_rules():
    result = run_tool([require_tool("promtool"), "check", "rules", str(RULES)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass():
    result = run_tool([require_tool("promtool"), "test", "rules", str(RULE_TESTS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_fail_when_a_rule_is_broken(tmp_path):
    """The unit tests have teeth: a faulty rule that waits 20 s instead of 30 s is caught."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    rules = RULES.read_text()
    faulty = "expr: roomtone_mic_health_state == 2\n        for: 30s"
    assert faulty in rules
    (tmp_path / "rules" / "roomtone.yml").write_text(rules.replace(faulty, faulty.replace("30s", "20s")))
    (tmp_path / "tests" / "roomtone_test.yml").write_text(RULE_TESTS.read_text())
    result = run_tool([require_tool("promtool"), "test", "rules", str(tmp_path / "tests" / "roomtone_test.yml")])
    assert result.returncode != 0
    assert "RoomtoneMicrophoneFaulty" in result.stdout + result.stderr


def test_the_alerts_the_issue_asks_for_exist_once_each():
    names = alert_names()
    assert REQUIRED_ALERTS <= set(names)
    assert len(names) == len(set(names))


def test_every_alert_is_tested_both_firing_and_silent():
    """Each alert has a unit test that expects it to fire and one that expects nothing firing."""
    cases = re.split(r"^\s*- eval_time:", RULE_TESTS.read_text(), flags=re.M)[1:]
    fires, silent = set(), set()
    for case in cases:
        alert = re.search(r"alertname:\s*(\w+)", case).group(1)
        (silent if re.search(r"exp_alerts:\s*\[\]", case) else fires).add(alert)
    for name in alert_names():
        assert name in fires, f"{name} has no unit test in which it fires"
        assert name in silent, f"{name} has no unit test in which it stays silent"


def test_rules_only_query_metrics_the_daemon_exports():
    used = metric_names_in(RULES.read_text())
    assert used, "no roomtone_ metric found in the rules"
    missing = used - daemon_metric_names()
    assert not missing, f"rules query metrics service/metrics/daemon_metrics.py does not export: {sorted(missing)}"


def test_daemon_metrics_pass_promtool_check_metrics():
    """The exposition the rules are written against follows Prometheus naming conventions."""
    from prometheus_client import generate_latest

    from service.metrics.daemon_metrics import Metrics

    metrics = Metrics()
    metrics.register_mic("kitchen")
    metrics.set_model("0" * 64, 256, ["speech", "music"])
    result = run_tool([require_tool("promtool"), "check", "metrics"], input=generate_latest(metrics.registry).decode())
    assert result.returncode == 0, result.stdout + result.stderr
