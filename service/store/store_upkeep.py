"""Background upkeep of the event store while the daemon runs: retention passes every
``store.retention_interval_s``, integrity checks every ``store.check_interval_s`` (and once at start), and
building FindSimilar's index once at start."""

from __future__ import annotations

import logging
import os
import threading
import time

from service.logs import ThrottledLog
from service.periodic import PeriodicThread
from service.store.event_store import StoreError
from service.store.store_guard import StoreCheck, table_checks

log = logging.getLogger("roomtone.daemon")
#: A retention pass that keeps failing is logged at most this often (each failure is counted).
RETENTION_LOG_EVERY_S = 60.0


class RetentionLoop:
    """Runs `EventStore.enforce_retention` every ``interval_s`` on a thread until `stop`; a failed pass is
    logged (the first with its traceback, then a line a minute) and counted (``on_error``), never fatal."""

    def __init__(self, store, interval_s: float, on_error=lambda: None) -> None:
        self.store = store
        self.interval_s = interval_s
        self.on_error = on_error
        self.failures = 0  # failed passes (also counted by on_error: roomtone_store_errors_total)
        self._failure_log = ThrottledLog(log, "retention pass failed; retrying every %.0f s", RETENTION_LOG_EVERY_S,
                                         level=logging.ERROR)
        self._thread = PeriodicThread("retention", self._pass, interval_s, on_error=self._failed)

    def start(self) -> None:
        """Start the loop."""
        self._thread.start()

    def stop(self) -> None:
        """End the loop (a pass in progress finishes first)."""
        self._thread.stop()

    def _pass(self) -> None:
        report = self.store.enforce_retention()
        if report.windows_deleted or report.events_deleted:
            log.info("retention", extra={"windows_deleted": report.windows_deleted,
                                         "events_deleted": report.events_deleted,
                                         "bytes_in_use": report.bytes_in_use})

    def _failed(self, exc: Exception) -> None:
        """The loop must outlive a failed pass: it is the size guard."""
        self.failures += 1
        self.on_error()
        self._failure_log.note(self.interval_s, exc=exc, error=f"{type(exc).__name__}: {exc}",
                               failures_total=self.failures)


#: The integrity check's thread runs at this nice level: it reads the whole file, the window path comes first.
CHECK_NICENESS = 10


class IntegrityWatch:
    """SQLite's quick_check of the store, table by table, now (`check`) or on a thread (`start`: at once, then
    every ``interval_s``). Damage goes to the ``listeners`` (metrics, gRPC health) and the log, with what to
    do, as soon as a table shows it; the whole result when the check ends. Start-up never waits for it."""

    def __init__(self, store_path, interval_s: float) -> None:
        self.store_path = store_path
        self.interval_s = interval_s
        self.last: StoreCheck | None = None
        self.listeners: list = []  # called with each StoreCheck
        self._thread = PeriodicThread("store-check", self.check, interval_s, at_start=True,
                                      on_error=_report_failed, on_thread_start=_lower_priority)

    def check(self) -> StoreCheck:
        """Check every table now, reporting damage as each table shows it; report and return the whole result."""
        problems: list[str] = []
        seconds = 0.0
        for part in table_checks(self.store_path):
            seconds += part.seconds
            if not part.ok:
                problems += part.problems
                self._report(StoreCheck(False, tuple(problems), seconds))  # damage as found, before the rest
        result = StoreCheck(not problems, tuple(problems), seconds)
        if result.ok or self.last is None or self.last.problems != result.problems:
            self._report(result)
        return result

    def _report(self, result: StoreCheck) -> None:
        first_failure = not result.ok and (self.last is None or self.last.ok)
        self.last = result
        for listener in self.listeners:
            listener(result)
        if result.ok:
            log.info("store integrity checked", extra={"store": str(self.store_path), "ok": True,
                                                       "seconds": round(result.seconds, 3)})
        elif first_failure:  # then once per check (at most hourly by default) until it is fixed
            log.error("store is damaged: %s", result.advice(self.store_path),
                      extra={"store": str(self.store_path), "problems": list(result.problems)})
        else:
            log.error("store is still damaged", extra={"store": str(self.store_path), "problems": list(result.problems)})

    def start(self) -> None:
        """Check now and then every ``interval_s`` until `stop`, on a thread of low priority."""
        self._thread.start()

    def stop(self) -> None:
        """End the loop (a check in progress finishes first)."""
        self._thread.stop()


def _report_failed(exc: Exception) -> None:
    """A listener failing must not end the checks."""
    log.error("store integrity check failed to report", exc_info=exc)


def _lower_priority() -> None:
    """Linux: this thread's own nice level, so the window path comes first; elsewhere the daemon's priority."""
    try:
        niceness = max(CHECK_NICENESS, os.getpriority(os.PRIO_PROCESS, 0))  # lowering it needs privileges
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
    except (AttributeError, OSError):
        pass


def warm_similarity_index(store) -> None:
    """Build FindSimilar's index from the stored windows (at 10^6 windows the load and the IVF training take
    ~16 s, longer than a client's deadline if the first query paid for it); run on a background thread."""
    started = time.monotonic()
    try:
        indexes = store.warm_similarity()
    except StoreError:  # closed by a stop during the warm-up
        return
    except Exception:
        log.exception("similarity index warm-up failed; FindSimilar will build it on its first call")
        return
    log.info("similarity index ready", extra={
        "seconds": round(time.monotonic() - started, 2),
        "indexes": {str(dim): {"kind": i.kind, "rows": i.rows} for dim, i in indexes.items()}})


def start_similarity_warm_up(store) -> threading.Thread:
    """`warm_similarity_index` on a daemon thread, started."""
    thread = threading.Thread(target=warm_similarity_index, args=(store,), name="similarity-warm-up", daemon=True)
    thread.start()
    return thread
