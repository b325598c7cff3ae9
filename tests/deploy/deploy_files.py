"""Helpers for the deployment checks: the external tools they run and the files they read."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = REPO / "docker-compose.yml"
RULES = DEPLOY / "prometheus" / "rules" / "roomtone.yml"
RULE_TESTS = DEPLOY / "prometheus" / "tests" / "roomtone_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "roomtone.json"
UNIT = DEPLOY / "systemd" / "roomtone.service"
EXAMPLE_CONFIG = DEPLOY / "roomtone.toml"

#: Debian packages (scripts/apt-packages-test.txt) whose absence fails the suite under CI=true.
REQUIRED_IN_CI = {"promtool": "prometheus", "docker-compose": "docker-compose"}


def require_tool(name: str) -> str:
    """Path of the executable ``name``; skips the test when it is missing, fails instead under CI=true."""
    path = shutil.which(name)
    if path:
        return path
    package = REQUIRED_IN_CI.get(name)
    if package and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{name} is missing under CI=true: install Debian's {package} (scripts/setup.sh does)")
    pytest.skip(f"{name} is not installed" + (f" (Debian package {package})" if package else ""))


def run_tool(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command from the repository root and capture its text output."""
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, **kwargs)


def compose_config(*override_files: str, env: dict[str, str] | None = None) -> dict:
    """The merged compose model `docker-compose config` prints, as plain data (cached: treat as read-only).

    docker-compose prints YAML; the YAML reader of docker-compose's own interpreter (Debian's python3-yaml,
    a dependency of the docker-compose package) turns it into JSON, so the venv needs no YAML library.
    """
    return _compose_config(override_files, tuple(sorted((env or {}).items())))


@functools.lru_cache(maxsize=None)
def _compose_config(override_files: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> dict:
    exe = require_tool("docker-compose")
    files = ["-f", str(COMPOSE_FILE)]
    for extra in override_files:
        files += ["-f", str(REPO / extra)]
    result = run_tool([exe, *files, "config"], env={**os.environ, **dict(env)})
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    interpreter = Path(exe).read_text(errors="replace").splitlines()[0].removeprefix("#!").split()
    as_json = subprocess.run(
        [*interpreter, "-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"],
        input=result.stdout, capture_output=True, text=True, timeout=60, check=True,
    )
    return json.loads(as_json.stdout)


def metric_names_in(text: str) -> set[str]:
    """Every ``roomtone_*`` metric a PromQL/YAML text refers to (``#`` comment lines ignored), histogram
    series folded to their base name."""
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    names = set(re.findall(r"\broomtone_[a-z0-9_]+", text))
    return {re.sub(r"_(bucket|sum|count)$", "", n) if n.endswith(("_bucket", "_sum", "_count")) else n
            for n in names}


def daemon_metric_names() -> set[str]:
    """Every metric name the daemon's registry (service/metrics/daemon_metrics.py) exposes, as PromQL spells it."""
    from service.metrics.daemon_metrics import Metrics

    return {family.name + "_total" if family.type == "counter" else family.name
            for family in Metrics().registry.collect()}
