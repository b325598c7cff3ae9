"""The /metrics HTTP(S) listener, bounded: at most ``metrics.max_connections`` connections are served at once
(one thread each; more are closed at once and counted), and a connection idle for ``metrics.idle_timeout_s``
(TLS handshake, request line, headers) is closed. prometheus_client's own server started a thread per
connection with no timeout (1,000 idle connections made 1,017 threads) and did the TLS handshake on its
accepting thread, so one silent TLS client stalled every scrape.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import make_wsgi_app

from service.config import MetricsConfig
from service.logs import ThrottledLog

log = logging.getLogger("roomtone.metrics")
#: Pause after a failed accept for want of descriptors (asyncio's own choice is 1 s; scrapes come every 15 s).
ACCEPT_RETRY_S = 0.5
#: The whole answer to a connection beyond metrics.max_connections.
BUSY = (b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 5\r\nConnection: close\r\n\r\n"
        b"too many /metrics connections (metrics.max_connections)\n")


class _QuietHandler(WSGIRequestHandler):
    """One request per connection (HTTP/1.0), no access log."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Scrapes are not logged."""


class BoundedMetricsServer(ThreadingMixIn, WSGIServer):
    """WSGI server for the metrics app with a connection limit, an idle timeout and TLS done per connection."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # a burst is accepted and refused at once instead of waiting in the kernel

    def __init__(self, address: tuple[str, int], config: MetricsConfig, ssl_context: ssl.SSLContext | None) -> None:
        self.config = config
        self.ssl_context = ssl_context
        self.refused = 0  # connections closed at once because max_connections were busy
        self.busy = ThrottledLog(log, "/metrics connection refused with 503: metrics.max_connections are open")
        self.out_of_descriptors = ThrottledLog(log, "/metrics cannot accept: the process is out of file descriptors "
                                                    "(raise LimitNOFILE / ulimit -n, see docs/deploy.md)")
        self._slots = threading.BoundedSemaphore(config.max_connections)
        super().__init__(address, _QuietHandler)

    def get_request(self) -> tuple[socket.socket, object]:
        """accept(); when the process is out of descriptors (EMFILE) the listener stays readable, so pause a
        little instead of spinning, and log it at most once a minute."""
        try:
            return super().get_request()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self.out_of_descriptors.note(error=str(exc))
                time.sleep(ACCEPT_RETRY_S)
            raise

    def process_request(self, request: socket.socket, client_address: object) -> None:
        """Serve on a thread if a slot is free; otherwise answer 503 and close the connection now."""
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            self.busy.note(max_connections=self.config.max_connections)
            if self.ssl_context is None:  # a TLS client would need a handshake first: just close
                try:
                    request.setblocking(False)
                    request.send(BUSY)
                except OSError:
                    pass
            self.shutdown_request(request)
            return
        request.settimeout(self.config.idle_timeout_s)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address: object) -> None:
        """TLS handshake (bounded by the timeout) and the request, then free the slot."""
        try:
            if self.ssl_context is not None:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            self.finish_request(request, client_address)
        except (OSError, ssl.SSLError) as exc:  # timeouts, resets, failed handshakes: the client's problem
            log.debug("metrics connection ended: %s", exc)
        finally:
            self.shutdown_request(request)
            self._slots.release()


def _ssl_context(config: MetricsConfig) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=config.client_ca)
    return context


def serve_metrics(registry: CollectorRegistry, config: MetricsConfig) -> BoundedMetricsServer:
    """Start serving ``registry`` on ``config.address``/``config.port`` on a daemon thread; OSError when the
    address cannot be bound. Stop with ``server.shutdown(); server.server_close()``."""
    family = socket.getaddrinfo(config.address, config.port, type=socket.SOCK_STREAM)[0][0]
    server_class = type("MetricsServer", (BoundedMetricsServer,), {"address_family": family})
    server = server_class((config.address, config.port), config, _ssl_context(config))
    server.set_app(make_wsgi_app(registry))
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
