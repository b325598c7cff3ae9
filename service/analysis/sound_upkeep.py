"""Background upkeep of custom sounds while the daemon runs: every ``interval_s`` the stored maps
older than ``sounds.calibration_hours`` are pruned (they are kept only to calibrate against), and every
sound whose threshold is older than ``sounds.recalibrate_hours`` is recalibrated against the store's
recent windows (`SoundService.recalibrate_due`; each change is logged with the old and new threshold)."""

from __future__ import annotations

import logging
import time

from service.periodic import PeriodicThread

log = logging.getLogger("roomtone.sounds")


class SoundUpkeep:
    """Prunes stored maps and recalibrates due sounds every ``interval_s`` on a thread until `stop`; a failed
    pass is logged, never fatal."""

    def __init__(self, service, interval_s: float) -> None:
        self.service = service  # service.analysis.sound_library.SoundService
        self.interval_s = interval_s
        self._thread = PeriodicThread("sound-upkeep", self._pass, interval_s, on_error=_failed)

    def start(self) -> None:
        """Start the loop."""
        self._thread.start()

    def stop(self) -> None:
        """End the loop (a pass in progress finishes first)."""
        self._thread.stop()

    def run_once(self, now_unix_ms: int | None = None) -> dict:
        """One pass: prune, then recalibrate what is due; returns what it did (for the log and tests)."""
        now = int(time.time() * 1000) if now_unix_ms is None else int(now_unix_ms)
        hours = self.service.config.calibration_hours
        pruned = self.service.store.prune_window_maps(now - int(hours * 3_600_000))
        recalibrated = [s.name for s in self.service.recalibrate_due(now)] if self.service.config.recalibrate_hours else []
        return {"maps_pruned": pruned, "recalibrated": recalibrated}

    def _pass(self) -> None:
        done = self.run_once()
        if done["maps_pruned"] or done["recalibrated"]:
            log.info("custom-sound upkeep", extra=done)


def _failed(exc: Exception) -> None:
    """Upkeep outlives a failed pass (`PeriodicThread` tries again after the interval)."""
    log.error("custom-sound upkeep failed", extra={"error": f"{type(exc).__name__}: {exc}"})
