"""Background upkeep of the store (service/store_upkeep.py): a retention pass that fails is counted and logged
at most once a minute, and the loop goes on (issue 15: `retention_interval_s = 1e10` killed the retention
thread and the daemon ran on with no retention; a failing pass logged a traceback each time)."""

from __future__ import annotations

import logging
import time

from service.store_upkeep import RetentionLoop


class FailingStore:
    """A store at the edge whose retention always fails."""

    def __init__(self) -> None:
        self.calls = 0

    def enforce_retention(self):
        self.calls += 1
        raise OSError("disk I/O error")


def test_a_failing_retention_pass_is_counted_logged_once_a_minute_and_retried(caplog):
    store, errors = FailingStore(), []
    loop = RetentionLoop(store, 0.02, on_error=lambda: errors.append(1))
    with caplog.at_level(logging.ERROR, logger="roomtone.daemon"):
        loop.start()
        deadline = time.monotonic() + 10
        while store.calls < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loop._thread.is_alive()  # the loop outlives its failures
        loop.stop()
    assert store.calls >= 10 and len(errors) == store.calls == loop.failures
    lines = [r for r in caplog.records if r.getMessage().startswith("retention pass failed")]
    assert len(lines) == 1 and lines[0].exc_info  # the first with its traceback, the rest only counted
