"""Background upkeep of the event store while the daemon runs: retention passes every
``store.retention_interval_s``, and building FindSimilar's index once at start."""

from __future__ import annotations

import logging
import threading
import time

from service.event_store import StoreError

log = logging.getLogger("roomtone.daemon")


class RetentionLoop:
    """A thread that runs `EventStore.enforce_retention` every ``interval_s`` until `stop`; a failed pass is
    logged and counted (``on_error``), never fatal."""

    def __init__(self, store, interval_s: float, on_error=lambda: None) -> None:
        self.store = store
        self.interval_s = interval_s
        self.on_error = on_error
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
            except Exception:
                self.on_error()
                log.exception("retention pass failed")


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
