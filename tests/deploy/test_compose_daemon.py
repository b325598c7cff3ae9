"""docker-compose.yml as shipped starts the daemon, and the clients reach it the way docs/deploy.md says.

No Docker engine runs here, so the test runs what the container would: the image's ENTRYPOINT and ENV
(deploy/Dockerfile) plus the `roomtone` service's environment and command from `docker-compose config`,
with the container's paths mapped to a temporary folder and the checkout (tests/deploy/compose_service.py)
and the stack's fixed ports mapped to free ones. The stack shares the host's network, so what the daemon
binds is what the host offers: loopback only. The broker runs from deploy/mosquitto/mosquitto.conf.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from compose_service import STACK_PORTS, compose_daemon, map_text  # noqa: E402
from deploy_files import DEPLOY, EXAMPLE_CONFIG, PROMETHEUS_CONFIG, compose_config  # noqa: E402
from mosquitto_broker import MOSQUITTO, Recorder, free_port, require_mosquitto  # noqa: E402

pytestmark = pytest.mark.slow


def test_the_compose_environment_passes_the_daemons_exposure_rule_with_every_listener_on_loopback():
    from service.config import DaemonConfig, _validate_exposure, build, env_overrides, is_loopback, merge, read_toml

    env = {k: str(v) for k, v in compose_config()["services"]["roomtone"]["environment"].items()}
    config = build(DaemonConfig, merge(read_toml(EXAMPLE_CONFIG), env_overrides(env)))
    _validate_exposure(config)  # raised "reachable from other machines; refusing ..." before issue 27
    assert is_loopback(config.grpc.address.rpartition(":")[0]) and is_loopback(config.metrics.address)
    assert config.web.enabled and is_loopback(config.web.address)
    assert config.mqtt.host == "127.0.0.1"


def test_every_service_shares_the_host_network_and_publishes_no_port():
    for name, service in compose_config()["services"].items():
        assert service.get("network_mode") == "host", f"{name} is not on the host's network"
        assert not service.get("ports"), f"{name} publishes ports, which host networking ignores"


def test_prometheus_grafana_and_the_broker_listen_on_loopback_and_find_each_other_there():
    services = compose_config()["services"]
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"
    assert "listener 1883 127.0.0.1" in (DEPLOY / "mosquitto" / "mosquitto.conf").read_text().splitlines()
    assert '"127.0.0.1:9464"' in PROMETHEUS_CONFIG.read_text()
    datasource = (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    assert "url: http://127.0.0.1:9090" in datasource


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


class StackBroker:
    """mosquitto run from the stack's own config file (deploy/mosquitto/mosquitto.conf), with its port and
    data folder mapped; plain TCP, anonymous, as the stack runs it (what `Recorder` needs to connect)."""

    auth = tls = False

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        conf = map_text((DEPLOY / "mosquitto" / "mosquitto.conf").read_text(), {"/mosquitto/data": directory},
                        {1883: self.port})
        if os.geteuid() == 0:
            conf += "user root\n"  # otherwise it switches to user mosquitto, who cannot write pytest's tmp dirs
        (directory / "mosquitto.conf").write_text(conf)
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(directory / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start from the stack's config (exit {self.proc.poll()})")

    def stop(self) -> None:
        """SIGTERM and wait."""
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def stack_broker(tmp_path):
    require_mosquitto()
    broker = StackBroker(tmp_path / "broker")
    yield broker
    broker.stop()


def test_the_shipped_compose_service_starts_and_serves_grpc_metrics_web_and_mqtt_on_loopback(tmp_path, stack_broker):
    from daemon_support import DaemonProcess

    ports = {p: free_port() for p in STACK_PORTS if p != 1883}
    ports[1883] = stack_broker.port
    daemon_run = compose_daemon(tmp_path, ports)
    recorder = Recorder(stack_broker, ("roomtone/#", "homeassistant/#"))
    daemon = DaemonProcess(daemon_run.argv[1:], env=daemon_run.env, command=(daemon_run.argv[0],))
    try:
        running = daemon.wait_for("roomtone running", timeout=120)
        assert running["grpc"] == f"127.0.0.1:{ports[50051]}"
        assert running["web"] == f"http://127.0.0.1:{ports[9480]}/"
        assert Path(running["store"]).is_relative_to(tmp_path / "volumes"), "the store is not in the data volume"

        # the container's own health check, as the compose file writes it
        check = [map_text(arg, {}, ports) for arg in daemon_run.service["healthcheck"]["test"][1:]]
        check[0] = str(Path(daemon_run.argv[0]).parent / check[0])  # `python` on the image's PATH
        assert subprocess.run(check, timeout=30).returncode == 0

        # docs/deploy.md: `roomtone mics` on the host (its default address, 127.0.0.1:50051, mapped here)
        mics = subprocess.run([daemon_run.argv[0], "mics"], capture_output=True, text=True, timeout=60,
                              env={**daemon_run.env, "ROOMTONE_ADDRESS": f"127.0.0.1:{ports[50051]}"})
        assert mics.returncode == 0, mics.stderr
        assert "livingroom" in mics.stdout

        status, page = _get(f"http://127.0.0.1:{ports[9480]}/")
        assert status == 200 and b"roomtone" in page.lower()
        status, metrics = _get(f"http://127.0.0.1:{ports[9464]}/metrics")
        assert status == 200 and b"roomtone_windows_total" in metrics

        discovery = recorder.wait_json("homeassistant/device/roomtone_livingroom/config", timeout=60)
        assert discovery["dev"]["cu"] == f"http://127.0.0.1:{ports[9480]}/"
        state = recorder.wait_json("roomtone/livingroom/state", timeout=60)
        assert state["mic"] == "livingroom"
        assert recorder.wait_for("roomtone/status", lambda p: p == b"online", timeout=30)
    finally:
        code = daemon.stop()
        recorder.close()
    assert code == 0, "".join(daemon.raw[-30:])
    assert json.loads(recorder.on("roomtone/livingroom/state")[-1])["capture"] == "stopped"
