"""Specification of the daemon's log lines (service/logs.py): text for a person at a terminal, JSON for
everything else, every ``extra`` field kept."""

from __future__ import annotations

import io
import json
import logging

from service.logs import JsonFormatter, TextFormatter, log_format_for


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_is_text_on_a_terminal_and_json_on_a_pipe_or_file() -> None:
    assert log_format_for("auto", Terminal()) == "text"
    assert log_format_for("auto", io.StringIO()) == "json"
    assert log_format_for("json", Terminal()) == "json" and log_format_for("text", io.StringIO()) == "text"


def test_both_formats_carry_the_message_and_every_extra_field() -> None:
    record = logging.LogRecord("roomtone.daemon", logging.INFO, __file__, 1, "microphone", (), None)
    record.mic, record.device = "kitchen", "USB Audio"
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["message"], entry["mic"], entry["device"], entry["level"]) == ("microphone", "kitchen", "USB Audio", "INFO")
    line = TextFormatter().format(record)
    assert "roomtone.daemon: microphone" in line and "mic=kitchen" in line and "device=USB Audio" in line
