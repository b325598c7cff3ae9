"""A bound on the web page's connections, so a flood of slow clients cannot take the daemon's file descriptors.

1,100 slow connections to the page used to hold 1,100 descriptors (systemd's default limit is 1,024): the
page, new gRPC connections and /metrics stopped answering, every clip failed, and the log grew by 85 MB of
EMFILE tracebacks in 70 s. Now at most ``web.max_connections`` are open at once; one more is answered
``503`` and closed at once (logged at most once a minute, counted); a connection that has not sent its first
request's headers within ``web.header_timeout_s`` is closed, and aiohttp closes one idle between requests after
``web.idle_timeout_s``. The guard wraps aiohttp's protocol (`GuardedSite`); TLS handshakes are bounded by
the same header timeout (asyncio's ``ssl_handshake_timeout``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

from aiohttp import web

from service.logs import ThrottledLog

log = logging.getLogger("roomtone.web")

#: The end of an HTTP request's headers.
_HEADERS_END = b"\r\n\r\n"
#: The web listener's accept backlog. asyncio accepts up to this many connections per wake-up before any reaches
#: the guard, so a flood holds at most ``web.max_connections`` + this many descriptors (aiohttp's default, 128, made
#: a flood under a 256 open-file limit still reach EMFILE).
ACCEPT_BACKLOG = 16


def busy_response(limit: int) -> bytes:
    """The whole HTTP answer to a connection beyond the limit: 503, JSON error, connection closed."""
    body = json.dumps({"error": {"reason": "too_many_connections",
                                 "message": f"the page has {limit} open connections (web.max_connections); "
                                            "try again shortly"}}).encode()
    return (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 5\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class ConnectionGuard:
    """Counts the open connections of one listener and refuses those beyond ``max_connections``."""

    def __init__(self, max_connections: int, header_timeout_s: float, on_refused: Callable[[], None] = lambda: None):
        self.max_connections = max_connections
        self.header_timeout_s = header_timeout_s
        self.on_refused = on_refused  # the metric
        self.active = 0
        self.refused = ThrottledLog(log, "web connection refused with 503: web.max_connections are open (a flood of "
                                         "slow clients, or raise web.max_connections)")
        self.too_slow = 0  # connections closed for sending no complete request headers in time

    def protocol(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """A protocol factory for ``loop.create_server`` that guards each of ``inner``'s protocols."""
        return lambda: _GuardedProtocol(self, inner)


class _GuardedProtocol(asyncio.Protocol):
    """aiohttp's protocol behind the guard: refused at once beyond the limit, closed when its headers are late."""

    def __init__(self, guard: ConnectionGuard, inner: Callable[[], asyncio.Protocol]) -> None:
        self._guard = guard
        self._make_inner = inner
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self._guard
        if guard.active >= guard.max_connections:
            guard.refused.note(open=guard.active, max_connections=guard.max_connections)
            guard.on_refused()
            transport.write(busy_response(guard.max_connections))  # type: ignore[attr-defined]
            transport.close()
            return
        guard.active += 1
        self._transport = transport
        self._timer = asyncio.get_running_loop().call_later(guard.header_timeout_s, self._headers_late)
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def _headers_late(self) -> None:
        self._timer = None
        self._guard.too_slow += 1
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._timer is not None:
            seen = self._tail + data
            if _HEADERS_END in seen:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else None

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is None:
            return
        self._guard.active -= 1
        inner, self._inner, self._transport = self._inner, None, None
        inner.connection_lost(exc)


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite with every connection behind a `ConnectionGuard`."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, guard: ConnectionGuard, **kwargs) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.guard = guard

    async def start(self) -> None:
        """Listen, as TCPSite does, with the guarded protocol factory."""
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        assert self._runner.server is not None
        self._server = await loop.create_server(
            self.guard.protocol(self._runner.server), self._host, self._port, ssl=self._ssl_context,
            backlog=self._backlog, reuse_address=self._reuse_address, reuse_port=self._reuse_port,
            ssl_handshake_timeout=self.guard.header_timeout_s if self._ssl_context else None)
