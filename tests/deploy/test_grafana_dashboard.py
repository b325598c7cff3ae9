"""The provisioned Grafana dashboard: wired to the stack's Prometheus, valid PromQL, about real metrics,
and showing what issue 8 asks for. (Grafana itself never ran here: no Grafana on these machines.)"""

from __future__ import annotations

import json
import re

from deploy_files import DASHBOARD, DEPLOY, REPO, compose_config, daemon_metric_names, metric_names_in, require_tool, run_tool

PROVISIONING = DEPLOY / "grafana" / "provisioning"


def dashboard() -> dict:
    """The dashboard JSON."""
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict]:
    """Every panel except row headers."""
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query on the dashboard."""
    return [(p["title"], t["expr"]) for p in panels() for t in p["targets"]]


def provisioned(path, key: str) -> list[str]:
    """Values of ``key:`` in a Grafana provisioning YAML file."""
    return re.findall(rf"^\s*-?\s*{key}:\s*(\S+)", path.read_text(), flags=re.M)


def test_every_panel_queries_the_provisioned_prometheus_datasource():
    (uid,) = provisioned(PROVISIONING / "datasources" / "prometheus.yml", "uid")
    for panel in panels():
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid, panel["title"]
    for variable in dashboard()["templating"]["list"]:
        assert variable["datasource"]["uid"] == uid


def test_provisioning_points_grafana_at_the_mounted_dashboard_and_the_prometheus_service():
    grafana = compose_config()["services"]["grafana"]
    mounts = {(v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2]) for v in grafana["volumes"]}
    (folder,) = provisioned(PROVISIONING / "dashboards" / "roomtone.yml", "path")
    assert (str(DASHBOARD.parent), folder) in mounts
    assert (str(PROVISIONING), "/etc/grafana/provisioning") in mounts
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{folder}/{DASHBOARD.name}"
    (url,) = provisioned(PROVISIONING / "datasources" / "prometheus.yml", "url")
    prometheus = compose_config()["services"]["prometheus"]  # host networking: Prometheus on loopback
    assert f"--web.listen-address={url.removeprefix('http://')}" in prometheus["command"]


def test_every_dashboard_query_is_valid_promql(tmp_path):
    """promtool parses each query (Grafana's $variables replaced by values) as a recording rule."""
    lines = ["groups:", "  - name: dashboard", "    rules:"]
    for i, (title, expr) in enumerate(queries()):
        promql = expr.replace("$__rate_interval", "1m").replace("$mic", ".*")
        assert "$" not in promql, f"{title}: unknown Grafana variable in {expr}"
        lines += [f"      - record: dashboard:query_{i}", f"        expr: {json.dumps(promql)}"]
    rules = tmp_path / "dashboard.yml"
    rules.write_text("\n".join(lines) + "\n")
    result = run_tool([require_tool("promtool"), "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries())} rules found" in result.stdout


def test_dashboard_shows_every_metric_the_daemon_exports_and_no_other():
    used = metric_names_in(" ".join(expr for _title, expr in queries()))
    exported = daemon_metric_names()
    assert used == exported, f"not shown: {sorted(exported - used)}; unknown: {sorted(used - exported)}"


def test_dashboard_has_activity_timeline_health_per_mic_and_check_drops_and_latencies():
    by_metric = {}
    for title, expr in queries():
        for name in metric_names_in(expr):
            by_metric.setdefault(name, []).append(title)
    timelines = {p["title"] for p in panels() if p["type"] == "state-timeline"}
    assert set(by_metric["roomtone_activity_probability"]) & timelines
    assert set(by_metric["roomtone_mic_health_state"]) & timelines
    assert set(by_metric["roomtone_mic_check_failing"]) & timelines
    assert by_metric["roomtone_windows_dropped_total"] and by_metric["roomtone_stage_latency_seconds"]
    repeated = [p for p in panels() if p.get("repeat") == "mic"]
    assert repeated, "no per-microphone panel"
    (mic,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "mic"]
    assert "roomtone_windows_total" in mic["definition"]


def test_panels_have_unique_ids_and_do_not_overlap_on_the_24_column_grid():
    all_panels = dashboard()["panels"]
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in all_panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, p["title"]
        if p.get("repeat"):
            continue  # Grafana lays out the copies itself
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))


def test_dashboard_file_is_the_one_documented():
    assert DASHBOARD.relative_to(REPO).as_posix() in (REPO / "docs" / "deploy.md").read_text()
