"""Who may talk to the gRPC API beyond loopback: TLS (optionally requiring client certificates) and a bearer
token, read from the files `[grpc]` names (docs/reliability.md)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

import grpc

from service.config import GrpcConfig
from service.metrics.grpc_metrics import GRPC_REQUESTS


@dataclass(frozen=True)
class ServerSecurity:
    """TLS and client authentication for a listener beyond loopback (PEM bytes; token as text)."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes | None = None  # require client certificates signed by this CA (mTLS)
    token: str | None = None  # require "authorization: Bearer <token>" metadata on every call


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuses every call without the right bearer token with UNAUTHENTICATED (constant-time comparison)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation, handler_call_details):  # noqa: D102 - grpc hook
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization" and hmac.compare_digest(str(value).encode(), self._expected):
                return continuation(handler_call_details)
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method.rsplit("/", 1)[-1]

        def deny(request, context):
            GRPC_REQUESTS.labels(method, grpc.StatusCode.UNAUTHENTICATED.name).inc()
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token (metadata authorization: Bearer <token>)")

        wrap = (grpc.unary_unary_rpc_method_handler if handler.unary_unary else
                grpc.unary_stream_rpc_method_handler if handler.unary_stream else
                grpc.stream_unary_rpc_method_handler if handler.stream_unary else
                grpc.stream_stream_rpc_method_handler)
        return wrap(deny, request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer)


def server_security(config: GrpcConfig) -> ServerSecurity | None:
    """The TLS material and token of ``config`` read from their files; None when the API is plaintext."""
    if not config.tls_cert:
        return None
    return ServerSecurity(
        cert_chain=Path(config.tls_cert).read_bytes(), private_key=Path(config.tls_key).read_bytes(),
        client_ca=Path(config.client_ca).read_bytes() if config.client_ca else None,
        token=Path(config.token_file).read_text().strip() if config.token_file else None)
