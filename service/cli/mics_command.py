"""List the microphones of a running roomtone daemon: id, capture device, capture state, current
health (with reasons), latest activity and when its last window ended.

Talks to the daemon's gRPC API (--address, default 127.0.0.1:50051 or $ROOMTONE_ADDRESS).
Exit codes: 0 ok, 1 other error, 3 daemon not reachable."""

from __future__ import annotations

import argparse
import json

from service.api.daemon_address import add_address_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `mics` options."""
    add_address_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON array instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print the daemon's microphones."""
    from google.protobuf.json_format import MessageToDict

    from service.api.grpc_client import EXIT_OK, call, format_table, format_time
    from service.rpc import roomtone_pb2 as pb

    def body(stub) -> int:
        mics = stub.ListMicrophones(pb.ListMicrophonesRequest(), timeout=10).microphones
        if args.json:
            print(json.dumps([MessageToDict(m, preserving_proto_field_name=True) for m in mics], indent=2))
            return EXIT_OK
        if not mics:
            print("the daemon has no microphones configured")
            return EXIT_OK
        rows = [[m.mic_id, m.device, m.state, health_name(m.health.state), m.label or "-",
                 format_time(m.last_window_end_unix_ms), "; ".join(m.health.reasons)] for m in mics]
        print(format_table(["MIC", "DEVICE", "STATE", "HEALTH", "ACTIVITY", "LAST WINDOW", "REASONS"], rows))
        return EXIT_OK

    return call("mics", args.address, body)


def health_name(value: int) -> str:
    """"ok"/"degraded"/"faulty" for a HealthState value, "-" when unknown."""
    from service.api.proto_names import HEALTH_FROM_PB

    return HEALTH_FROM_PB.get(value, "-")
