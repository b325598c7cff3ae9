"""Exposure: the API and /metrics listen on loopback by default; any other address needs TLS and client
authentication or the daemon refuses to start; an authenticated client is served, others are refused;
neither /metrics nor the log reveals the token or a key. Every connection here stays on loopback."""

from __future__ import annotations

import ssl
import subprocess
import urllib.error

import grpc
import pytest

from reliability_support import ROOMTONE, DaemonProcess, make_certificates, metric_value, scrape
from service.cli.main import main
from service.config import ConfigError, load_config
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

TOKEN = "s3cret-token-7f1e2d9c"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


def test_the_defaults_listen_on_loopback_only(small_model):
    config = load_config(overrides={"model": str(small_model)}, environ={})
    assert config.grpc.address.startswith("127.0.0.1:") and config.metrics.address == "127.0.0.1"


@pytest.mark.parametrize("args, key", [
    (["--grpc-address", "0.0.0.0:0"], "grpc.address"),
    (["--grpc-address", "192.0.2.10:50051"], "grpc.address"),
    (["--metrics-address", "0.0.0.0"], "metrics.address"),
])
def test_a_non_loopback_listener_without_tls_and_authentication_refuses_to_start(small_model, tmp_path, args, key):
    result = subprocess.run([str(ROOMTONE), "run", "--model", str(small_model), "--demo", "--data-dir",
                             str(tmp_path), *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f"config error: {key}" in result.stderr and "refusing" in result.stderr, result.stderr
    assert ("TLS" if key == "grpc.address" else "HTTPS") in result.stderr
    assert not (tmp_path / "roomtone.db").exists()  # refused before anything was opened


def test_tls_alone_is_not_enough_beyond_loopback_but_tls_with_a_token_or_client_certificates_is(small_model, certs, tmp_path):
    token = tmp_path / "token"
    token.write_text(TOKEN)
    tls = {"address": "0.0.0.0:50051", "tls_cert": str(certs["server"]), "tls_key": str(certs["server_key"])}
    base = {"model": str(small_model)}
    with pytest.raises(ConfigError, match="grpc.address: 0.0.0.0:50051 is reachable from other machines"):
        load_config(overrides={**base, "grpc": tls}, environ={})
    assert load_config(overrides={**base, "grpc": {**tls, "token_file": str(token)}}, environ={}).grpc.token_file
    assert load_config(overrides={**base, "grpc": {**tls, "client_ca": str(certs["ca"])}}, environ={}).grpc.client_ca
    with pytest.raises(ConfigError, match="grpc.token_file: no such file"):
        load_config(overrides={**base, "grpc": {**tls, "token_file": str(tmp_path / "missing")}}, environ={})
    with pytest.raises(ConfigError, match="metrics.address: 0.0.0.0 is reachable"):
        load_config(overrides={**base, "metrics": {"address": "0.0.0.0", "tls_cert": str(certs["server"]),
                                                   "tls_key": str(certs["server_key"])}}, environ={})


def _list_mics(address: str, credentials: grpc.ChannelCredentials | None, token: str | None = None):
    channel = grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    with channel:
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        return pb_grpc.RoomtoneStub(channel).ListMicrophones(pb.ListMicrophonesRequest(), timeout=10, metadata=metadata)


def test_the_client_variables_are_not_daemon_config_keys(small_model, certs):
    environ = {"ROOMTONE_ADDRESS": "127.0.0.1:1", "ROOMTONE_CA": str(certs["ca"]), "ROOMTONE_TOKEN_FILE": "/x"}
    assert load_config(overrides={"model": str(small_model)}, environ=environ).grpc.address == "127.0.0.1:50051"


def test_with_tls_and_a_token_only_an_authenticated_client_is_served_and_secrets_never_show(
        small_model, certs, tmp_path, monkeypatch, capsys):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    config = tmp_path / "roomtone.toml"
    config.write_text(f"""
model = "{small_model}"
data_dir = "{tmp_path / 'data'}"
[[mics]]
id = "demo"
kind = "demo"
[grpc]
address = "127.0.0.1:0"
tls_cert = "{certs['server']}"
tls_key = "{certs['server_key']}"
token_file = "{token_file}"
[metrics]
port = 0
tls_cert = "{certs['server']}"
tls_key = "{certs['server_key']}"
client_ca = "{certs['ca']}"
""")
    daemon = DaemonProcess(["--config", str(config)])
    try:
        running = daemon.wait_for("roomtone running", 60)
        address, port = running["grpc"], running["metrics_port"]
        assert daemon.find("gRPC listening")["bearer_token"] is True
        tls = grpc.ssl_channel_credentials(root_certificates=certs["ca"].read_bytes())

        assert [m.mic_id for m in _list_mics(address, tls, TOKEN).microphones] == ["demo"]
        monkeypatch.setenv("ROOMTONE_CA", str(certs["ca"]))
        assert main(["mics", "--address", address]) == 1  # the command-line client without the token
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        monkeypatch.setenv("ROOMTONE_TOKEN_FILE", str(token_file))
        assert main(["mics", "--address", address]) == 0
        assert "demo" in capsys.readouterr().out
        for token in (None, "wrong-token"):
            with pytest.raises(grpc.RpcError) as refused:
                _list_mics(address, tls, token)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "bearer token" in refused.value.details()
        with pytest.raises(grpc.RpcError) as plaintext:  # no TLS: the handshake fails, nothing is served
            _list_mics(address, None, TOKEN)
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE

        url = f"https://127.0.0.1:{port}/metrics"
        with_client_cert = ssl.create_default_context(cafile=str(certs["ca"]))
        with_client_cert.load_cert_chain(str(certs["client"]), str(certs["client_key"]))
        text = scrape(url, with_client_cert)
        assert metric_value(text, "roomtone_grpc_requests_total", method="ListMicrophones", code="UNAUTHENTICATED") == 3
        without_client_cert = ssl.create_default_context(cafile=str(certs["ca"]))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            scrape(url, without_client_cert)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            scrape(f"http://127.0.0.1:{port}/metrics")
        key_body = certs["server_key"].read_text().splitlines()[1]
        for secret in (TOKEN, key_body, "PRIVATE KEY"):
            assert secret not in text
    finally:
        assert daemon.stop() == 0
    log = "".join(daemon.raw)
    assert TOKEN not in log and key_body not in log
