"""`PeriodicThread`: one function called on its own thread every interval until stopped (the store's
retention passes and integrity checks, the capture watch, custom-sound upkeep). A base module: it imports
nothing in service/ and several wings run such loops."""

from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("roomtone.daemon")
#: How long `PeriodicThread.stop` waits for a call in progress to finish.
STOP_TIMEOUT_S = 30.0


class PeriodicThread:
    """Calls ``work()`` on a daemon thread every ``interval_s`` until `stop`: first at once with ``at_start``,
    else after one interval. A call that raises goes to ``on_error`` (default: logged with its traceback)
    and never ends the loop; ``on_thread_start`` runs once on the thread first (e.g. to lower its priority)."""

    def __init__(self, name: str, work: Callable[[], object], interval_s: float, *, at_start: bool = False,
                 on_error: Callable[[Exception], None] | None = None,
                 on_thread_start: Callable[[], None] | None = None) -> None:
        self.name, self.work, self.interval_s, self.at_start = name, work, interval_s, at_start
        self.on_error = on_error if on_error is not None else self._log_error
        self.on_thread_start = on_thread_start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        """Start the loop."""
        self._thread.start()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """End the loop; a call in progress finishes first (waited for up to ``timeout_s``)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s)

    def is_alive(self) -> bool:
        """True while the loop's thread runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        if self.on_thread_start is not None:
            self.on_thread_start()
        if self.at_start and not self._stop.is_set():
            self._call()
        while not self._stop.wait(self.interval_s):
            self._call()

    def _call(self) -> None:
        try:
            self.work()
        except Exception as exc:  # noqa: BLE001 - the loop outlives a failed call; on_error says what failed
            self.on_error(exc)

    def _log_error(self, exc: Exception) -> None:
        log.error("%s failed; trying again in %.0f s", self.name, self.interval_s, exc_info=exc)
