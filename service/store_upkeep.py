"""Background upkeep of the event store while the daemon runs: retention passes every
``store.retention_interval_s``, integrity checks every ``store.check_interval_s`` (and once at start), and
building FindSimilar's index once at start."""

from __future__ import annotations

import logging
import threading
import time

from service.event_store import StoreError
from service.store_guard import StoreCheck, quick_check

log = logging.getLogger("roomtone.daemon")
#: A retention pass that keeps failing is logged at most this often (each failure is counted).
RETENTION_LOG_EVERY_S = 60.0


class RetentionLoop:
    """A thread that runs `EventStore.enforce_retention` every ``interval_s`` until `stop`; a failed pass is
    logged and counted (``on_error``), never fatal."""

    def __init__(self, store, interval_s: float, on_error=lambda: None) -> None:
        self.store = store
        self.interval_s = interval_s
        self.on_error = on_error
        self.failures = 0  # failed passes (also counted by on_error: roomtone_store_errors_total)
        self._last_log = float("-inf")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        """Start the loop."""
        self._thread.start()

    def stop(self) -> None:
        """End the loop (a pass in progress finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                report = self.store.enforce_retention()
                if report.windows_deleted or report.events_deleted:
                    log.info("retention", extra={"windows_deleted": report.windows_deleted,
                                                 "events_deleted": report.events_deleted,
                                                 "bytes_in_use": report.bytes_in_use})
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a failed pass: it is the size guard
                self.failures += 1
                self.on_error()
                now = time.monotonic()
                if now - self._last_log >= RETENTION_LOG_EVERY_S:  # first with traceback, then one line a minute
                    log.error("retention pass failed; retrying every %.0f s", self.interval_s,
                              exc_info=exc if self.failures == 1 else None,
                              extra={"error": f"{type(exc).__name__}: {exc}", "failures_total": self.failures})
                    self._last_log = now


class IntegrityWatch:
    """SQLite's quick_check of the store, now (`check`) and every ``interval_s`` on a thread (`start`); each
    result goes to the ``listeners`` (metrics, gRPC health) and a failure to the log with what to do."""

    def __init__(self, store_path, interval_s: float) -> None:
        self.store_path = store_path
        self.interval_s = interval_s
        self.last: StoreCheck | None = None
        self.listeners: list = []  # called with each StoreCheck
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-check", daemon=True)

    def check(self) -> StoreCheck:
        """Check now; report and return the result."""
        result = quick_check(self.store_path)
        first_failure = not result.ok and (self.last is None or self.last.ok)
        self.last = result
        if result.ok:
            log.info("store integrity checked", extra={"store": str(self.store_path), "ok": True,
                                                       "seconds": round(result.seconds, 3)})
        elif first_failure:  # then once per check (at most hourly by default) until it is fixed
            log.error("store is damaged: %s", result.advice(self.store_path),
                      extra={"store": str(self.store_path), "problems": list(result.problems)})
        else:
            log.error("store is still damaged", extra={"store": str(self.store_path), "problems": list(result.problems)})
        for listener in self.listeners:
            listener(result)
        return result

    def start(self) -> None:
        """Check every ``interval_s`` until `stop`."""
        self._thread.start()

    def stop(self) -> None:
        """End the loop (a check in progress finishes first)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - a listener failing must not end the checks
                log.exception("store integrity check failed to report")


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
