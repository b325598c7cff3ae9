"""deploy/systemd/roomtone.service: a valid, restarting, hardened unit for a bare-metal install.

`systemd-analyze verify` and `security --offline` run when systemd-analyze exists (skipped otherwise:
CI containers have no systemd). The unit itself was never started under a real systemd here.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from deploy_files import UNIT, run_tool

GPU_DROPIN = UNIT.parent / "roomtone.service.d" / "gpu.conf"
MAX_EXPOSURE = 2.5  # systemd-analyze security: below 3.0 reads "OK"


def unit_settings(*paths: Path) -> dict[str, list[str]]:
    """Every Key=value of the unit files (repeated keys keep every value, in order)."""
    settings: dict[str, list[str]] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
                key, value = line.split("=", 1)
                settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def installed_copy(tmp_path: Path) -> Path:
    """The unit and its GPU drop-in in a unit directory, ExecStart pointed at this checkout's roomtone
    (verify insists the binary exists; /opt/roomtone is where an install puts it)."""
    roomtone = Path(sys.executable).parent / "roomtone"
    assert roomtone.is_file(), f"{roomtone} missing: run scripts/setup.sh"
    text = UNIT.read_text().replace("ExecStart=/opt/roomtone/.venv/bin/roomtone", f"ExecStart={roomtone}")
    assert str(roomtone) in text
    (tmp_path / "roomtone.service").write_text(text)
    (tmp_path / "roomtone.service.d").mkdir()
    shutil.copy(GPU_DROPIN, tmp_path / "roomtone.service.d" / "gpu.conf")
    return tmp_path / "roomtone.service"


def systemd_analyze() -> str:
    """Path of systemd-analyze; skips the test where systemd is not installed."""
    path = shutil.which("systemd-analyze")
    if not path:
        pytest.skip("systemd-analyze is not installed (no systemd on this machine)")
    return path


def test_unit_and_gpu_dropin_pass_systemd_analyze_verify_without_warnings(tmp_path):
    unit = installed_copy(tmp_path)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}
    result = run_tool([systemd_analyze(), "verify", str(unit)], env=env)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


def test_unit_exposure_score_is_ok_with_the_gpu_dropin_too(tmp_path):
    unit = installed_copy(tmp_path)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{tmp_path}:"}
    result = run_tool([systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit)], env=env)
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE
    assert "/dev/nvidiactl" in result.stdout, "the GPU drop-in was not applied"


def test_unit_restarts_on_failure_and_runs_as_its_own_user_in_the_audio_group():
    s = unit_settings(UNIT)
    assert s["Restart"] == ["on-failure"]
    assert s["User"] == ["roomtone"] and s["Group"] == ["roomtone"]
    assert "audio" in s["SupplementaryGroups"][0].split()
    assert s["ExecStart"][0].split()[1:] == ["run", "--config", "/etc/roomtone/roomtone.toml"]


def test_unit_is_hardened_with_only_the_data_dir_writable():
    s = unit_settings(UNIT)
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "ProtectHome": "yes", "DevicePolicy": "closed", "RestrictSUIDSGID": "yes"}.items():
        assert s.get(key) == [value], key
    assert s["ReadWritePaths"] == ["/var/lib/roomtone"]
    assert s["StateDirectory"] == ["roomtone"]
    assert s["CapabilityBoundingSet"] == [""]
    assert "char-alsa rw" in s["DeviceAllow"]


def test_unit_and_example_config_agree_on_paths():
    from service.config import DaemonConfig, build, read_toml

    s = unit_settings(UNIT)
    config_path = s["ExecStart"][0].split()[-1]
    assert Path(config_path).name == "roomtone.toml" and Path(config_path).parent.name == s["ConfigurationDirectory"][0]
    config = build(DaemonConfig, read_toml(UNIT.parents[1] / "roomtone.toml"))
    assert config.data_dir == "/var/lib/" + s["StateDirectory"][0]
    assert config.model.startswith(str(Path(s["ExecStart"][0].split()[0]).parents[2]))
