"""DNS rebinding and malformed requests against the page (issue 26, BROKE 2 and DEGRADED): a page of
evil.example whose name re-resolves to 127.0.0.1 sends ``Host: evil.example`` and ``Origin: http://evil.example``;
it got 200 on "teach this sound", the window list and the clip audio. Only loopback names, the bound address and
``[web] hosts`` are answered; Origin is compared with those, never with Host."""

from __future__ import annotations

import http.client
import json

import numpy as np
import pytest

from service.store.clips import ClipStore
from service.config import ClipsConfig, WebConfig
from service.web.origins import AllowedOrigins
from test_web_api import sound_service

EVIL = {"Host": "evil.example", "Origin": "http://evil.example"}


def request(server, method: str, path: str, headers: dict, body: bytes | None = None) -> tuple[int, bytes]:
    """One request with exactly these headers (urllib would set Host itself)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        for key, value in headers.items():
            connection.putheader(key, value)
        if body is not None:
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def page(serve, store, tmp_path):
    """A page with custom sounds and a kept clip of its newest window: everything the attack read or changed."""
    clips = ClipStore(tmp_path / "clips", ClipsConfig(keep="all"))
    window = store.list_windows(limit=1).items[0]
    clips.write(window.mic_id, window.start_unix_ms, np.zeros((1, 16000), np.float32), 16000)
    server = serve(WebConfig(port=0, hosts=("roomtone.home",)), sounds=sound_service(store, tmp_path), clips=clips,
                   clips_keep="all")
    return server, window.window_id


def test_the_rebinding_requests_that_broke_are_refused(page):
    server, window_id = page
    teach = json.dumps({"name": "doorbell"}).encode()
    for method, path, body in (("POST", f"/api/windows/{window_id}/sound", teach), ("GET", "/api/windows", None),
                               ("GET", f"/api/windows/{window_id}/clip", None), ("GET", "/", None),
                               ("GET", "/api/live", None)):
        status, answer = request(server, method, path, {**EVIL, "Content-Type": "application/json"}, body)
        assert status == 403, (method, path, status)
        assert b"unknown_host" in answer and b"[web] hosts" in answer


def test_an_origin_of_another_site_is_refused_even_with_a_loopback_host(page):
    server, window_id = page
    status, answer = request(server, "POST", f"/api/windows/{window_id}/sound",
                             {"Host": f"127.0.0.1:{server.port}", "Origin": "http://evil.example",
                              "Content-Type": "application/json"}, b'{"name": "doorbell"}')
    assert status == 403 and json.loads(answer)["error"]["reason"] == "cross_origin"


def test_loopback_names_the_bound_port_and_configured_hosts_are_answered(page):
    server, window_id = page
    for host in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost", f"[::1]:{server.port}",
                 "roomtone.home", "ROOMTONE.home:443"):
        assert request(server, "GET", "/api/windows", {"Host": host})[0] == 200, host
    status, answer = request(server, "POST", f"/api/windows/{window_id}/sound",
                             {"Host": f"localhost:{server.port}", "Origin": f"http://localhost:{server.port}",
                              "Content-Type": "application/json"}, b'{"name": "doorbell"}')
    assert status == 200, answer
    assert request(server, "GET", "/api/windows", {})[0] == 400  # HTTP/1.1 without a Host header: aiohttp refuses it


@pytest.mark.parametrize("origin, allowed", [
    ("http://127.0.0.1:9480", True), ("http://localhost:9480", True), ("http://[::1]:9480", True),
    ("http://127.0.0.1:9481", False),  # another local port is another site
    ("https://127.0.0.1:9480", False), ("http://evil.example:9480", False), ("http://127.0.0.1.evil.example", False),
    ("https://roomtone.home", True), ("http://roomtone.home:8080", True),  # a proxy's name, its own port
    ("null", False), ("http://", False), ("http://[::1", False),
])
def test_an_origin_is_allowed_only_for_loopback_on_the_bound_port_or_a_configured_host(origin, allowed):
    origins = AllowedOrigins.of("http", "127.0.0.1", ("roomtone.home",), port=9480)
    assert origins.origin_allowed(origin) is allowed


def test_a_page_bound_beyond_loopback_answers_to_its_address_and_not_to_other_names():
    origins = AllowedOrigins.of("https", "192.168.1.20", (), port=9480)
    assert origins.host_allowed("192.168.1.20:9480") and origins.origin_allowed("https://192.168.1.20:9480")
    assert not origins.host_allowed("evil.example") and not origins.host_allowed("192.168.1.21")
    everywhere = AllowedOrigins.of("https", "0.0.0.0", ("nas.local",), port=9480)
    assert everywhere.host_allowed("nas.local:9480") and not everywhere.host_allowed("0.0.0.0")


@pytest.mark.parametrize("path", ["/api/windows?since_ms=" + "1" * 24, "/api/windows?until_ms=-" + "9" * 20,
                                  "/api/changes?since_ms=1e23", "/api/sessions?since_ms=" + "9" * 19])
def test_absurd_numbers_in_parameters_are_a_400_not_a_500(page, path):
    server, _ = page
    status, answer = request(server, "GET", path, {"Host": "localhost"})
    assert status == 400 and json.loads(answer)["error"]["reason"] == "bad_parameter"


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"name": ' * 50_000, b"\xff\xfe{", b"nul"])
def test_deeply_nested_or_malformed_json_is_a_400_not_a_500(page, body):
    server, window_id = page
    status, answer = request(server, "POST", f"/api/windows/{window_id}/sound",
                             {"Host": "localhost", "Content-Type": "application/json"}, body)
    assert status == 400 and json.loads(answer)["error"]["reason"] == "bad_body"
