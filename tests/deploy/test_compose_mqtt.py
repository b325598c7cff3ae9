"""The compose stack's MQTT broker: the daemon publishes to it with real config keys, its config file is
mounted, and it listens on the host's loopback only (the stack shares the host's network; Home Assistant
is a commented example)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from deploy_files import DEPLOY, EXAMPLE_CONFIG, REPO, compose_config

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def test_the_daemon_publishes_to_the_stacks_broker_with_real_config_keys():
    from service.config import DaemonConfig, build, env_overrides, merge, read_toml

    model = compose_config()
    env = {k: str(v) for k, v in model["services"]["roomtone"]["environment"].items() if k.startswith("ROOMTONE_")}
    config = build(DaemonConfig, merge(read_toml(EXAMPLE_CONFIG), env_overrides(env)))
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.enabled) == ("127.0.0.1", 1883, True)
    broker = model["services"]["mqtt"]
    assert broker["image"].startswith("eclipse-mosquitto:2")
    mounts = {(v["source"], v["target"]) if isinstance(v, dict) else tuple(v.split(":")[:2]) for v in broker["volumes"]}
    assert (str(DEPLOY / "mosquitto" / "mosquitto.conf"), "/mosquitto/config/mosquitto.conf") in mounts
    assert broker["network_mode"] == "host" and not broker.get("ports")
    assert "homeassistant" not in model["services"]  # an example only, commented in the file
    assert "# homeassistant:" in (REPO / "docker-compose.yml").read_text()


def test_the_stacks_broker_config_is_one_mosquitto_runs_with(tmp_path):
    if not os.path.isfile(MOSQUITTO):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI needs mosquitto (scripts/apt-packages-test.txt)")
        pytest.skip("mosquitto is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert "listener 1883 127.0.0.1" in conf and "/mosquitto/data/" in conf
    # the same file with a free port and a temporary data folder (the real 1883 may be taken here)
    conf = conf.replace("listener 1883 ", f"listener {port} ").replace("/mosquitto/data/", f"{tmp_path}/")
    (tmp_path / "mosquitto.conf").write_text(conf + ("user root\n" if os.geteuid() == 0 else ""))
    broker = subprocess.Popen([MOSQUITTO, "-c", str(tmp_path / "mosquitto.conf")], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and broker.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        assert broker.poll() is None, broker.stdout.read()
    finally:
        broker.terminate()
        broker.wait(10)
