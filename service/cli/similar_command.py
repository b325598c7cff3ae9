"""Find the stored windows that sound most like a stored window (--window-id, e.g. from
`roomtone events`) or like an audio file (--audio; WAV/FLAC/OGG, sent to the daemon, which embeds it
with its model; the mean embedding of the file's windows is the query). Distances are cosine
distances between embeddings (0 = same direction, 2 = opposite).

Talks to the daemon's gRPC API (--address, default 127.0.0.1:50051 or $ROOMTONE_ADDRESS).
Exit codes: 0 ok, 1 other error, 2 invalid argument (bad audio, unreadable file), 3 daemon not
reachable, 4 window not found."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.api.daemon_address import add_address_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `similar` options."""
    add_address_argument(parser)
    query = parser.add_mutually_exclusive_group(required=True)
    query.add_argument("--window-id", type=int, help="id of a stored window (the #N shown by `roomtone events`)")
    query.add_argument("--audio", help="an audio file to compare against the stored windows")
    parser.add_argument("-k", type=int, default=10, help="number of neighbours (1..1000)")
    parser.add_argument("--mic", action="append", default=[], help="only search this microphone's windows (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Print the k nearest stored windows."""
    from google.protobuf.json_format import MessageToDict

    from service.api.grpc_client import EXIT_OK, EXIT_USAGE, call, format_table, format_time
    from service.api.proto_names import HEALTH_FROM_PB
    from service.rpc import roomtone_pb2 as pb

    if not 1 <= args.k <= 1000:
        print(f"roomtone similar: -k must be between 1 and 1000, got {args.k}", file=sys.stderr)
        return EXIT_USAGE
    if args.audio is not None:
        path = Path(args.audio)
        try:
            data = path.read_bytes()
        except OSError as exc:
            print(f"roomtone similar: {path}: cannot read ({exc.strerror or exc})", file=sys.stderr)
            return EXIT_USAGE
        request = pb.FindSimilarRequest(audio=data, k=args.k, mic_ids=args.mic)
    else:
        request = pb.FindSimilarRequest(window_id=args.window_id, k=args.k, mic_ids=args.mic)

    def body(stub) -> int:
        response = stub.FindSimilar(request, timeout=120)
        if args.json:
            print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
            return EXIT_OK
        if not response.neighbors:
            print("no stored windows with embeddings to compare" if not response.searched else "no neighbours")
            return EXIT_OK
        rows = [[str(rank), f"{n.distance:.4f}", f"#{n.window.window_id}", n.window.mic_id,
                 format_time(n.window.start_unix_ms), n.window.label or "-",
                 HEALTH_FROM_PB.get(n.window.health_state, "-")]
                for rank, n in enumerate(response.neighbors, 1)]
        print(format_table(["RANK", "DISTANCE", "WINDOW", "MIC", "START", "LABEL", "HEALTH"], rows))
        print(f"({response.searched} stored windows compared)")
        return EXIT_OK

    return call("similar", args.address, body)
