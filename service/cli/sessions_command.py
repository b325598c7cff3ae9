"""Show the activity sessions of a running roomtone daemon ("cooking 18:02-18:25"), newest last: each is
a stretch of one activity on one microphone, merged from consecutive windows with a minimum duration and
a gap tolerance ([sessions] in the config, docs/mqtt.md). Open sessions show "(open)" as their end.

Times for --since/--until: a duration back from now ("90s", "10m", "2h", "7d"), a local date/time
("2026-11-24", "2026-11-24T18:30"), or Unix milliseconds. --since keeps sessions still going at or after
that time; --until keeps sessions that started before it. Repeat --mic/--activity for several values.
Talks to the daemon's gRPC API (ListSessions; --address, default 127.0.0.1:50051 or $ROOMTONE_ADDRESS).
Exit codes: 0 ok, 1 other error, 2 invalid argument, 3 daemon not reachable."""

from __future__ import annotations

import argparse
import json
import sys
import time

from service.api.daemon_address import add_address_argument
from service.cli.events_command import query_range
from service.daemon_vocabulary import MAX_PAGE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `sessions` options."""
    add_address_argument(parser)
    parser.add_argument("--mic", action="append", default=[], help="only this microphone id (repeatable)")
    parser.add_argument("--activity", action="append", default=[], help="only this activity (repeatable)")
    parser.add_argument("--since", help="only sessions still going at or after this time (e.g. 10m, 2h, 2026-11-24)")
    parser.add_argument("--until", help="only sessions that started before this time (same forms as --since)")
    parser.add_argument("--open", action="store_true", help="only sessions that have not ended")
    parser.add_argument("--limit", type=int, default=20, help="how many of the latest matching sessions to show (1..10000)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def duration_text(seconds: float) -> str:
    """``1h 05m``, ``23m 10s`` or ``40s``."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def session_row(session, now_unix_ms: int) -> list[str]:
    """Table row [start, end, duration, mic, activity, windows, mean p] of one ActivitySession message."""
    from service.api.grpc_client import format_time

    end = session.end_unix_ms if not session.open else now_unix_ms
    return [format_time(session.start_unix_ms), "(open)" if session.open else format_time(session.end_unix_ms),
            duration_text((end - session.start_unix_ms) / 1000) + ("+" if session.open else ""), session.mic_id,
            session.activity, str(session.windows), f"{session.mean_probability:.2f}"]


def run(args: argparse.Namespace) -> int:
    """Print the latest matching sessions, oldest first."""
    from google.protobuf.json_format import MessageToDict

    from service.api.grpc_client import EXIT_OK, EXIT_USAGE, call, format_table
    from service.rpc import roomtone_pb2 as pb

    now = int(time.time() * 1000)
    checked = query_range(args, "sessions", now, 10000)
    if checked is None:
        return EXIT_USAGE
    since, until = checked

    def body(stub) -> int:
        sessions, token = [], ""
        while len(sessions) < args.limit:
            page = stub.ListSessions(pb.ListSessionsRequest(
                mic_ids=args.mic, activities=args.activity, since_unix_ms=since, until_unix_ms=until,
                open_only=args.open, limit=min(MAX_PAGE, args.limit - len(sessions)), page_token=token), timeout=30)
            sessions += page.sessions
            token = page.next_page_token
            if not token:
                break
        sessions.reverse()  # oldest first, the latest at the bottom
        if args.json:
            for session in sessions:
                print(json.dumps(MessageToDict(session, preserving_proto_field_name=True,
                                               always_print_fields_with_no_presence=True)))
        elif sessions:
            print(format_table(["START", "END", "DURATION", "MIC", "ACTIVITY", "WINDOWS", "MEAN P"],
                               [session_row(s, now) for s in sessions]))
        else:
            print("no matching sessions")
        return EXIT_OK

    return call("sessions", args.address, body)
