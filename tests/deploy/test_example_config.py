"""deploy/roomtone.toml, the example config the image and the systemd unit use: real keys, safe defaults."""

from __future__ import annotations

import re

from deploy_files import EXAMPLE_CONFIG, RULES


def example():
    from service.config import DaemonConfig, build, read_toml

    return build(DaemonConfig, read_toml(EXAMPLE_CONFIG))


def test_example_config_uses_only_keys_and_types_the_daemon_accepts():
    config = example()
    assert config.mics and all(mic.id for mic in config.mics)


def test_example_config_listens_on_loopback_on_a_bare_metal_host():
    config = example()
    assert config.grpc.address == "127.0.0.1:50051"
    assert config.metrics.address == "127.0.0.1" and config.metrics.port == 9464


def test_alert_thresholds_match_the_configured_window_length():
    """The rules count windows as 10 s each: "no window for 25 s" is two missed windows."""
    config = example()
    assert config.pipeline.window_s == config.pipeline.hop_s == 10.0
    assert re.search(r"time\(\) - roomtone_last_window_timestamp_seconds > 25\b", RULES.read_text())
