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


def test_a_warning_that_comes_thousands_of_times_is_logged_once_per_interval_with_its_count(caplog):
    import logging

    from service.logs import ThrottledLog

    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("roomtone.test"), "connection refused", 60.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="roomtone.test")
    logged = [throttled.note(port=1) for _ in range(1000)]
    now[0] = 61.0
    logged.append(throttled.note(port=1))
    assert logged.count(True) == 2 and logged[0] and logged[-1]
    records = [r for r in caplog.records if r.getMessage() == "connection refused"]
    assert [(r.occurrences, r.total) for r in records] == [(1, 1), (1000, 1001)]


def test_each_key_of_a_throttled_line_has_its_own_interval_and_count_and_only_its_first_line_a_traceback(caplog):
    from service.logs import ThrottledLog

    now = [0.0]
    throttled = ThrottledLog(logging.getLogger("roomtone.test"), "analysis of %s failed", 5.0, clock=lambda: now[0],
                             level=logging.ERROR)
    caplog.set_level(logging.ERROR, logger="roomtone.test")
    error = RuntimeError("model broke")
    for _ in range(3):
        throttled.note("a window", key="kitchen", exc=error, mic="kitchen")
        throttled.note("a window", key="hall", exc=error, mic="hall")
    now[0] = 5.0
    throttled.note("a window", key="kitchen", exc=error, mic="kitchen")
    lines = [(r.mic, r.occurrences, r.total, r.exc_info is not None, r.levelno) for r in caplog.records]
    assert lines == [("kitchen", 1, 1, True, logging.ERROR), ("hall", 1, 2, True, logging.ERROR),
                     ("kitchen", 3, 7, False, logging.ERROR)]
    assert caplog.records[0].getMessage() == "analysis of a window failed"


def test_library_lines_such_as_aiohttp_request_errors_pass_once_per_interval():
    import logging

    from service.logs import RateLimitFilter

    now = [0.0]
    limit = RateLimitFilter(60.0, clock=lambda: now[0])

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, msg, (), None)

    assert [limit.filter(record("Error handling request")) for _ in range(3)] == [True, False, False]
    assert limit.filter(record("another problem"))
    now[0] = 61.0
    assert limit.filter(record("Error handling request"))
