"""The daemon's log lines: one JSON object per line (for journald, Docker and log shippers) or readable text
(for a person at a terminal), each with the ``extra=`` fields a call site passes."""

from __future__ import annotations

import json
import logging
import sys
import time

#: Attributes every LogRecord has; anything else came from ``extra=`` and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the ``extra`` fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one text line."""
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_"))
        line = f"{time.strftime('%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line} {extras}" if extras else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def log_format_for(fmt: str, stream=None) -> str:
    """``json`` or ``text``: ``auto`` is text when ``stream`` (stderr) is a terminal a person reads, JSON
    otherwise (journald, Docker, a pipe to a log shipper)."""
    if fmt != "auto":
        return fmt
    stream = stream if stream is not None else sys.stderr
    return "text" if getattr(stream, "isatty", lambda: False)() else "json"


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    """Send roomtone's logs to stderr as JSON or text lines (``auto``: see `log_format_for`)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format_for(fmt) == "json" else TextFormatter())
    root = logging.getLogger("roomtone")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # Libraries that log once per bad request or failed accept (aiohttp's "Error handling request" with a
    # traceback, asyncio's "socket.accept() out of system resource"): the same lines, at most once a minute.
    quiet = logging.StreamHandler(sys.stderr)
    quiet.setFormatter(handler.formatter)
    quiet.addFilter(RateLimitFilter())
    for name in ("aiohttp", "asyncio"):
        library = logging.getLogger(name)
        library.handlers[:] = [quiet]
        library.setLevel(logging.WARNING)
        library.propagate = False


class ThrottledLog:
    """A line that may come thousands of times a second (refused connections, a full disk, a failing store):
    logged at most once per ``interval_s`` for each ``key`` (a microphone, a stage), each line saying how many
    came since the last one for that key (``occurrences``) and in all (``total``). The first line of a key
    carries the exception's traceback; later ones only its text. Thread-safe enough: a race logs one line
    more, never fewer."""

    def __init__(self, logger: logging.Logger, message: str, interval_s: float = 60.0,
                 clock=time.monotonic, level: int = logging.WARNING) -> None:
        self.logger, self.message, self.interval_s, self.clock, self.level = logger, message, interval_s, clock, level
        self.count = 0  # every occurrence, all keys
        self._since_log: dict[object, int] = {}
        self._last: dict[object, float] = {}

    def note(self, *args, key: object = None, exc: BaseException | None = None, **extra) -> bool:
        """Count one occurrence of ``key``; log it (the message formatted with ``args``, ``extra`` as fields)
        when the interval has passed for that key. True when this one was logged."""
        self.count += 1
        self._since_log[key] = self._since_log.get(key, 0) + 1
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            return False
        self._last[key] = now
        self.logger.log(self.level, self.message, *args, exc_info=exc if last is None else None,
                        extra={**extra, "occurrences": self._since_log[key], "total": self.count})
        self._since_log[key] = 0
        return True


class RateLimitFilter(logging.Filter):
    """Lets each (logger, message template) through at most once per ``interval_s``; the rest are dropped."""

    def __init__(self, interval_s: float = 60.0, clock=time.monotonic) -> None:
        super().__init__()
        self.interval_s, self.clock = interval_s, clock
        self._last: dict[tuple[str, object], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """True when this kind of record was not let through in the last interval."""
        key = (record.name, record.msg)
        now = self.clock()
        if now - self._last.get(key, float("-inf")) < self.interval_s:
            return False
        if len(self._last) > 1000:  # bounded: forget old keys rather than grow with odd messages
            self._last.clear()
        self._last[key] = now
        return True
