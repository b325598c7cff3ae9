"""Teach a running daemon custom sounds from a few examples, list them, forget them.

  roomtone sounds add NAME FILE... [--window-id ID...] [--threshold T] [--replace]
  roomtone sounds list [--json]
  roomtone sounds remove NAME
  roomtone sounds not-this NAME (--event ID | --window-id ID)

Examples are audio files (WAV/FLAC/OGG; every 10 s window of a file is one example; a file of 1-10 s is
one) and/or stored windows (the #N of `roomtone events` or `roomtone similar`). Three to five examples
work better than one. The daemon embeds them with its model and calibrates the threshold so that its
recent stored windows would have given at most `sounds.alarms_per_hour` false alarms; --threshold (a
cosine similarity, -1..1) overrides it. Every live window is then scored, and a window at or above the
threshold gives a `sound_detected` event (`roomtone events --kind sound`) that says where in the window
the sound was heard. A detection that was wrong can be marked `not-this` (by its event id, the `event N`
of `roomtone events --kind sound`, or its window's #N): that window becomes a negative example and the
sound recalibrates. Thresholds also recalibrate by themselves every `sounds.recalibrate_hours` (24) as
the store's history grows. At most 64 sounds. See docs/sounds.md.

Talks to the daemon's gRPC API (--address, default 127.0.0.1:50051 or $ROOMTONE_ADDRESS).
Exit codes: 0 ok, 1 other error, 2 invalid argument, 3 daemon not reachable, 4 not found."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from service.api.daemon_address import add_address_argument
from service.cli.main import DefaultsHelpFormatter


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `sounds add|list|remove|not-this`."""
    sub = parser.add_subparsers(dest="sounds_command", metavar="ACTION")
    sub.required = True
    add = sub.add_parser("add", help="teach a sound from audio files and/or stored windows",
                         formatter_class=DefaultsHelpFormatter)
    add_address_argument(add)
    add.add_argument("name", help="the sound's name: 1-64 of a-z, 0-9, _ and - (e.g. doorbell)")
    add.add_argument("files", nargs="*", metavar="FILE", help="example audio files")
    add.add_argument("--window-id", type=int, action="append", default=[], metavar="ID",
                     help="a stored window to use as an example (repeatable)")
    add.add_argument("--threshold", type=float, default=None,
                     help="detection threshold (cosine similarity, -1..1) instead of the calibrated one")
    add.add_argument("--replace", action="store_true", help="replace an existing sound of that name")
    listing = sub.add_parser("list", help="the custom sounds, their thresholds and whether they are active")
    add_address_argument(listing)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    remove = sub.add_parser("remove", help="forget a sound and its kept example audio")
    add_address_argument(remove)
    remove.add_argument("name", help="the sound's name")
    wrong = sub.add_parser("not-this", help="mark a detection as wrong: its window becomes a negative example "
                                            "and the sound recalibrates")
    add_address_argument(wrong)
    wrong.add_argument("name", help="the sound that was wrongly detected")
    which = wrong.add_mutually_exclusive_group(required=True)
    which.add_argument("--event", type=int, metavar="ID", help="the sound_detected event's id (roomtone events --kind sound)")
    which.add_argument("--window-id", type=int, metavar="ID", help="the detection's window (the #N)")


def run(args: argparse.Namespace) -> int:
    """Do the chosen action against the daemon."""
    from google.protobuf.json_format import MessageToDict

    from service.api.grpc_client import EXIT_OK, EXIT_USAGE, call, format_table, format_time
    from service.rpc import roomtone_pb2 as pb

    if args.sounds_command == "add":
        if not args.files and not args.window_id:
            print("roomtone sounds add: give at least one example FILE or --window-id", file=sys.stderr)
            return EXIT_USAGE
        audio = []
        for name in args.files:
            try:
                audio.append(Path(name).read_bytes())
            except OSError as exc:
                print(f"roomtone sounds add: {name}: cannot read ({exc.strerror or exc})", file=sys.stderr)
                return EXIT_USAGE
        request = pb.AddSoundRequest(name=args.name, audio=audio, window_ids=args.window_id, replace=args.replace)
        if args.threshold is not None:
            request.threshold = args.threshold

        def body(stub) -> int:
            sound = stub.AddSound(request, timeout=300)
            how = "set by you" if sound.threshold_overridden else sound.calibration
            print(f"added {sound.name}: {sound.examples} example window(s), threshold {sound.threshold:.3f} ({how})")
            return EXIT_OK

        return call("sounds add", args.address, body)

    if args.sounds_command == "list":
        def body(stub) -> int:
            response = stub.ListSounds(pb.ListSoundsRequest(), timeout=30)
            if args.json:
                print(json.dumps(MessageToDict(response, preserving_proto_field_name=True), indent=2))
                return EXIT_OK
            if not response.sounds:
                print("no custom sounds (add one with `roomtone sounds add NAME FILE...`)")
                return EXIT_OK
            rows = [[s.name, str(s.examples), f"{s.span_ms / 1000:.1f} s" if s.span_ms else "window",
                     f"{s.threshold:.3f}" + (" (set)" if s.threshold_overridden else ""), str(s.not_this),
                     "yes" if s.active else "NO", format_time(s.created_unix_ms), format_time(s.calibrated_unix_ms),
                     s.problem or s.calibration] for s in response.sounds]
            print(format_table(["NAME", "EXAMPLES", "SPAN", "THRESHOLD", "NOT THIS", "ACTIVE", "ADDED", "CALIBRATED",
                                "CALIBRATION / PROBLEM"], rows))
            return EXIT_OK

        return call("sounds list", args.address, body)

    if args.sounds_command == "not-this":
        def body(stub) -> int:
            sound = stub.MarkNotThis(pb.MarkNotThisRequest(name=args.name, window_id=args.window_id or 0,
                                                           event_id=args.event or 0), timeout=300)
            print(f"{sound.name}: {sound.not_this} detection(s) marked \"not this\"; threshold {sound.threshold:.3f} "
                  f"({sound.calibration})")
            return EXIT_OK

        return call("sounds not-this", args.address, body)

    def body(stub) -> int:
        stub.RemoveSound(pb.RemoveSoundRequest(name=args.name), timeout=30)
        print(f"removed {args.name}")
        return EXIT_OK

    return call("sounds remove", args.address, body)
