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
