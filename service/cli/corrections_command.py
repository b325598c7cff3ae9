"""Say what stored windows really were (activity corrections), list the corrections, take one back.

  roomtone corrections add WINDOW_ID LABEL
  roomtone corrections list [--mic M] [--label L] [--json]
  roomtone corrections remove WINDOW_ID

WINDOW_ID is a stored window (the #N of `roomtone events` or `roomtone similar`); LABEL is one of the
model head's classes (`quiet` and `unknown` are decided by level and confidence, not learnt). A correction
changes no live label: `roomtone train-head --model M --data SHARED --corrections <data_dir>/roomtone.db`
refits the head on the shared set plus the home's corrections, weighted (docs/sounds.md). Correcting a
window again replaces its correction.

Talks to the daemon's gRPC API (--address, default 127.0.0.1:50051 or $ROOMTONE_ADDRESS).
Exit codes: 0 ok, 1 other error, 2 invalid argument, 3 daemon not reachable, 4 not found."""

from __future__ import annotations

import argparse
import json

from service.api.daemon_address import add_address_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `corrections add|list|remove`."""
    sub = parser.add_subparsers(dest="corrections_command", metavar="ACTION")
    sub.required = True
    add = sub.add_parser("add", help="say what a stored window really was")
    add_address_argument(add)
    add.add_argument("window_id", type=int, metavar="WINDOW_ID", help="the stored window (#N in roomtone events)")
    add.add_argument("label", metavar="LABEL", help="what it really was: one of the head's classes")
    listing = sub.add_parser("list", help="the corrections, newest first")
    add_address_argument(listing)
    listing.add_argument("--mic", action="append", default=[], help="only this microphone (repeatable)")
    listing.add_argument("--label", action="append", default=[], help="only corrections to this class (repeatable)")
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    remove = sub.add_parser("remove", help="take the correction of a window back")
    add_address_argument(remove)
    remove.add_argument("window_id", type=int, metavar="WINDOW_ID", help="the corrected window")


def run(args: argparse.Namespace) -> int:
    """Do the chosen action against the daemon."""
    from google.protobuf.json_format import MessageToDict

    from service.api.grpc_client import EXIT_OK, call, format_table, format_time
    from service.rpc import roomtone_pb2 as pb

    if args.corrections_command == "add":
        def body(stub) -> int:
            c = stub.CorrectWindow(pb.CorrectWindowRequest(window_id=args.window_id, label=args.label), timeout=30)
            print(f"window {c.window_id} ({c.mic_id}, {format_time(c.start_unix_ms)}) was really {c.label} "
                  f"(labelled {c.predicted_label or '-'}); refit the head with roomtone train-head --corrections")
            return EXIT_OK

        return call("corrections add", args.address, body)

    if args.corrections_command == "list":
        def body(stub) -> int:
            response = stub.ListCorrections(pb.ListCorrectionsRequest(mic_ids=args.mic, labels=args.label), timeout=30)
            if args.json:
                print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
                return EXIT_OK
            if not response.corrections:
                print("no corrections (add one with `roomtone corrections add WINDOW_ID LABEL`)")
                return EXIT_OK
            rows = [[f"#{c.window_id}" + ("" if c.window_kept else " (deleted)"), c.mic_id, format_time(c.start_unix_ms),
                     c.predicted_label or "-", c.label, format_time(c.created_unix_ms)] for c in response.corrections]
            print(format_table(["WINDOW", "MIC", "TIME", "LABELLED", "REALLY", "CORRECTED"], rows))
            return EXIT_OK

        return call("corrections list", args.address, body)

    def body(stub) -> int:
        stub.RemoveCorrection(pb.RemoveCorrectionRequest(window_id=args.window_id), timeout=30)
        print(f"removed the correction of window {args.window_id}")
        return EXIT_OK

    return call("corrections remove", args.address, body)
