"""The page's connection bound (issue 26, BROKE 4): slow clients beyond ``web.max_connections`` are answered 503
at once instead of holding a descriptor each, and a client that never finishes its headers is closed after
``web.header_timeout_s``. (The daemon under a lowered open-file limit: tests/reliability/test_descriptor_flood.py.)"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from reliability_support import slow_connection
from service.config import WebConfig


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_beyond_max_connections_a_client_gets_503_at_once_and_slow_clients_are_closed_after_the_header_timeout(
        serve):
    server = serve(WebConfig(port=0, max_connections=8, max_pages=4, header_timeout_s=3.0))
    held = [slow_connection(server.port) for _ in range(20)]
    try:
        time.sleep(0.5)
        assert server.guard.active == 8  # the other 12 were answered and closed
        started = time.monotonic()
        assert status_of(f"{server.url}api/status") == 503
        assert time.monotonic() - started < 10
        refused = [s for s in held if s.recv(4096).startswith(b"HTTP/1.1 503")]
        assert len(refused) == 12
        deadline = time.monotonic() + 60  # the 8 slow ones time out; the page answers again
        while status_of(f"{server.url}api/status") != 200:
            assert time.monotonic() < deadline, "slow clients were not closed by the header timeout"
            time.sleep(0.5)
        assert server.guard.too_slow == 8 and server.guard.refused.count >= 13
    finally:
        for sock in held:
            sock.close()
