"""Show stored window records and events (activity changed, health changed, custom sound detected) of a
running roomtone daemon, newest last; with --follow keep printing live ones as they are stored.

A window's activity is a head class, `quiet` (below the level floor), `unknown` (the head is unsure) or
`-` with the reason: `(no activity: mic faulty)` or `(no head)` (docs/sounds.md).

Times for --since/--until: a duration back from now ("90s", "10m", "2h", "7d"), a local date/time
("2026-11-24", "2026-11-24T18:30"), or Unix milliseconds. Repeat --mic/--label/--health/--kind to
allow several values. A state change matches --label only if it is an activity change to that label
(`quiet` and `unknown` included) or a detection of the custom sound of that name, and --health only if
it is a health change to that state. With --follow a client that reads too
slowly is told how many items it missed ("... N items dropped ...") and the stream continues.
Talks to the daemon's gRPC API (--address, default 127.0.0.1:50051 or $ROOMTONE_ADDRESS).
Exit codes: 0 ok, 1 other error, 2 invalid argument, 3 daemon not reachable."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import datetime

from service.api.daemon_address import add_address_argument
from service.daemon_vocabulary import HEALTH_STATES, MAX_PAGE, SESSION_EVENT_KINDS

HEALTH_CHOICES = HEALTH_STATES
KIND_CHOICES = ("window", "activity", "health", "sound", "session")
_KIND_NAMES = {"window": ("window",), "activity": ("activity_changed",), "health": ("health_changed",),
               "sound": ("sound_detected",), "session": SESSION_EVENT_KINDS}
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
FOLLOW_ROW = "{:<19}  {:<12}  {:<8}  {}"  # TIME, MIC, EVENT, DETAIL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register `events` options."""
    add_address_argument(parser)
    parser.add_argument("--mic", action="append", default=[], help="only this microphone id (repeatable)")
    parser.add_argument("--since", help="only items at or after this time (e.g. 10m, 2h, 2026-11-24T18:30)")
    parser.add_argument("--until", help="only items before this time (same forms as --since)")
    parser.add_argument("--label", action="append", default=[], help="only this activity label (repeatable)")
    parser.add_argument("--health", action="append", default=[], choices=HEALTH_CHOICES,
                        help="only this health state (repeatable)")
    parser.add_argument("--kind", action="append", default=[], choices=KIND_CHOICES,
                        help="only windows, activity changes, health changes, custom-sound detections or "
                             "activity session starts/ends (sessions: live only, with --follow; stored ones: "
                             "`roomtone sessions`) (repeatable; default all)")
    parser.add_argument("--limit", type=int, default=20,
                        help=f"how many of the latest matching items to show (1..{MAX_PAGE}, the daemon's page size)")
    parser.add_argument("--follow", "-f", action="store_true", help="after the latest items, print live ones until Ctrl-C")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def parse_time(text: str, now_unix_ms: int) -> int:
    """Unix ms for a duration back from now ("10m"), a local ISO date/time, or Unix ms digits."""
    value = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", value)
    if match:
        return now_unix_ms - int(float(match.group(1)) * _UNITS_S[match.group(2)] * 1000)
    if re.fullmatch(r"\d{10,}", value):
        return int(value)
    try:
        return int(datetime.fromisoformat(value).timestamp() * 1000)
    except ValueError:
        raise ValueError(f"cannot read time {text!r}: use a duration like 10m/2h/7d, a date/time like "
                         "2026-11-24T18:30, or Unix milliseconds") from None


def time_range(args: argparse.Namespace, now_unix_ms: int) -> tuple[int, int]:
    """(since, until) Unix ms of the --since/--until options (0 when absent); ValueError names a bad time."""
    since = parse_time(args.since, now_unix_ms) if args.since else 0
    until = parse_time(args.until, now_unix_ms) if args.until else 0
    return since, until


def query_range(args: argparse.Namespace, command: str, now_unix_ms: int, max_limit: int,
                limit_note: str = "") -> tuple[int, int] | None:
    """(since, until) of --since/--until after checking them and --limit; None once a usage error naming the
    option is printed, so that `events` and `sessions` refuse bad options the same way."""
    try:
        since, until = time_range(args, now_unix_ms)
    except ValueError as exc:
        print(f"roomtone {command}: {exc}", file=sys.stderr)
        return None
    if not 1 <= args.limit <= max_limit:
        print(f"roomtone {command}: --limit must be between 1 and {max_limit}{limit_note}, got {args.limit}",
              file=sys.stderr)
        return None
    return since, until


def describe_event(event) -> list[str]:
    """Table row [time, mic, event, detail] for one Event message."""
    from service.api.grpc_client import format_time
    from service.api.proto_names import HEALTH_FROM_PB, KIND_FROM_PB
    from service.rpc import roomtone_pb2 as pb

    which = event.WhichOneof("item")
    if which == "window":
        w = event.window
        top = f"{w.label} ({w.probabilities[w.label]:.2f})" if w.label in w.probabilities else (w.label or "-")
        if w.label_kind == pb.LABEL_KIND_MIC_FAULTY:
            top = "- (no activity: mic faulty)"
        elif w.label_kind == pb.LABEL_KIND_NO_HEAD:
            top = "- (no head)"
        elif w.label_kind == pb.LABEL_KIND_UNKNOWN and w.probabilities:
            best = max(w.probabilities, key=w.probabilities.__getitem__)
            top = f"unknown (best {best} {w.probabilities[best]:.2f})"
        health = HEALTH_FROM_PB.get(w.health_state, "?")
        reasons = f" ({'; '.join(w.health_reasons)})" if w.health_reasons else ""
        return [format_time(w.start_unix_ms), w.mic_id, "window",
                f"#{w.window_id} {top}  {health}{reasons}  {w.rms_dbfs:.1f} dBFS"]
    if which == "state_change":
        c = event.state_change
        kind = KIND_FROM_PB.get(c.kind, "?").replace("_changed", "")
        if kind == "sound_detected":
            where = (f" at {c.start_offset_ms / 1000:.1f}-{c.end_offset_ms / 1000:.1f} s"
                     if c.end_offset_ms > c.start_offset_ms else "")
            return [format_time(c.time_unix_ms), c.mic_id, "sound",
                    f"{c.current} (score {c.score:.3f}) in #{c.window_id}{where}, event {c.event_id}"]
        reasons = f" ({'; '.join(c.reasons)})" if c.reasons else ""
        return [format_time(c.time_unix_ms), c.mic_id, kind, f"{c.previous or '(start)'} -> {c.current}{reasons}"]
    if which == "session":
        e = event.session
        kind = KIND_FROM_PB.get(e.kind, "?").replace("_", " ")
        return [format_time(e.time_unix_ms), e.session.mic_id, kind.removeprefix("session "),
                f"session #{e.session.session_id} {e.session.activity} since {format_time(e.session.start_unix_ms)}"]
    return ["", "", "gap", f"... {event.gap.dropped} items dropped: this client read too slowly ..."]


def run(args: argparse.Namespace) -> int:
    """Print the latest matching items, then (with --follow) live ones."""
    from google.protobuf.json_format import MessageToDict

    from service.api.grpc_client import EXIT_OK, EXIT_USAGE, call, format_table
    from service.api.proto_names import HEALTH_TO_PB, KIND_TO_PB
    from service.rpc import roomtone_pb2 as pb

    now = int(time.time() * 1000)
    checked = query_range(args, "events", now, MAX_PAGE, " (the most the daemon returns at once)")
    if checked is None:
        return EXIT_USAGE
    since, until = checked
    event_filter = pb.EventFilter(
        mic_ids=args.mic, labels=args.label, health_states=[HEALTH_TO_PB[h] for h in args.health],
        kinds=[KIND_TO_PB[name] for k in args.kind for name in _KIND_NAMES[k]], since_unix_ms=since, until_unix_ms=until)

    def as_json(event) -> str:
        return json.dumps(MessageToDict(event, preserving_proto_field_name=True))

    def body(stub) -> int:
        if args.follow:
            stream = stub.StreamEvents(pb.StreamEventsRequest(filter=event_filter, replay_last=args.limit))
            if not args.json:
                print(FOLLOW_ROW.format("TIME", "MIC", "EVENT", "DETAIL"), flush=True)
            try:
                for event in stream:  # fixed column widths: rows are printed as they arrive
                    print(as_json(event) if args.json else FOLLOW_ROW.format(*describe_event(event)), flush=True)
            except KeyboardInterrupt:
                stream.cancel()
            return EXIT_OK
        events = list(stub.ListEvents(pb.ListEventsRequest(filter=event_filter, limit=args.limit), timeout=30).events)
        events.reverse()  # oldest first, the latest at the bottom
        if args.json:
            for event in events:
                print(as_json(event))
        elif events:
            print(format_table(["TIME", "MIC", "EVENT", "DETAIL"], [describe_event(e) for e in events]))
        else:
            print("no matching events")
        return EXIT_OK

    return call("events", args.address, body)
