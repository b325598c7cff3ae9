"""Connecting the command-line clients to a running daemon and turning gRPC failures into one clear
line and an exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import grpc

from service.api.daemon_address import ADDRESS_ENV, DEFAULT_ADDRESS, add_address_argument
from service.rpc import roomtone_pb2_grpc as pb_grpc
from service.daemon_vocabulary import CA_ENV, CERT_ENV, KEY_ENV, REASON_KEY, TOKEN_FILE_ENV

# Exit codes shared by the client commands.
EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
_EXIT_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: EXIT_USAGE,
    grpc.StatusCode.UNAVAILABLE: EXIT_UNREACHABLE,
    grpc.StatusCode.NOT_FOUND: EXIT_NOT_FOUND,
}


def _credentials(environ: dict[str, str]) -> grpc.ChannelCredentials | None:
    """TLS (+ bearer token, + client certificate) credentials from the environment; None = plaintext."""
    if not environ.get(CA_ENV):
        return None

    def read(name: str) -> bytes | None:
        return Path(environ[name]).read_bytes() if environ.get(name) else None

    credentials = grpc.ssl_channel_credentials(root_certificates=read(CA_ENV), private_key=read(KEY_ENV),
                                               certificate_chain=read(CERT_ENV))
    token = read(TOKEN_FILE_ENV)
    if token:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token.decode().strip()))
    return credentials


def connect(address: str, max_message_bytes: int = 64 * 1024 * 1024) -> pb_grpc.RoomtoneStub:
    """A stub on a channel to ``address`` (connects lazily): plaintext, or TLS when $ROOMTONE_CA is set."""
    options = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
    ]
    credentials = _credentials(dict(os.environ))
    channel = (grpc.secure_channel(address, credentials, options=options) if credentials is not None
               else grpc.insecure_channel(address, options=options))
    return pb_grpc.RoomtoneStub(channel)


def reason_of(error: grpc.RpcError) -> str | None:
    """The machine-readable reason the daemon sent with an error (trailing metadata `REASON_KEY`), if any."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    return next((value for key, value in trailing or () if key == REASON_KEY), None)


def is_unreachable(error: grpc.RpcError) -> bool:
    """True when the call failed because no daemon answered (not because a running daemon refused: those
    errors carry a reason)."""
    return error.code() == grpc.StatusCode.UNAVAILABLE and reason_of(error) is None


def report_rpc_error(command: str, address: str, error: grpc.RpcError) -> int:
    """Print one line for a failed call to stderr; returns the command's exit code."""
    if is_unreachable(error):
        print(f"roomtone {command}: no roomtone daemon at {address} — start it with `roomtone run`", file=sys.stderr)
        return EXIT_UNREACHABLE
    print(f"roomtone {command}: {error.code().name}: {error.details()}", file=sys.stderr)
    return _EXIT_BY_CODE.get(error.code(), EXIT_ERROR)


def call(command: str, address: str, body: Callable[[pb_grpc.RoomtoneStub], int]) -> int:
    """Run ``body(stub)``; gRPC failures become a message and an exit code."""
    try:
        return body(connect(address))
    except grpc.RpcError as error:
        return report_rpc_error(command, address, error)


def format_time(unix_ms: int) -> str:
    """Local wall-clock time of a Unix-ms timestamp ("-" for 0)."""
    if not unix_ms:
        return "-"
    return datetime.fromtimestamp(unix_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in [header, *rows])


__all__ = ["ADDRESS_ENV", "DEFAULT_ADDRESS", "add_address_argument", "call", "connect", "format_table", "format_time",
           "is_unreachable", "report_rpc_error"]
