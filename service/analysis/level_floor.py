"""`quiet` relative to the microphone: each microphone's noise floor learnt from its own recent window
levels, and the level below which its windows are `quiet`.

A fixed floor (-45 dBFS) calls a quiet preamp's or a far microphone's speech `quiet` all day, and a hot
microphone's empty room never quiet. Instead the floor of a microphone is a low percentile of the RMS levels
of its last ``activity.quiet_history_hours`` of usable windows (``activity.quiet_floor_percentile``: the
level its room sits at when nothing happens), and a window is `quiet` below floor + ``quiet_margin_db``,
bounded to ``[quiet_min_dbfs, quiet_max_dbfs]``. Until a microphone has ``quiet_min_history_hours`` of
windows, and with ``quiet_relative = false``, the absolute ``quiet_below_dbfs`` decides. Faulty windows do
not enter the history (`counts_for_floor`), except those judged dead only by their low level: a quiet room
through a quiet preamp sits below ``health.dead_floor_dbfs`` (-70 dBFS) and is the floor to learn, while
digital silence (an unplugged input), stuck or non-finite samples are not. The history is rebuilt from the
store's windows when the daemon starts (`EventStore.recent_levels`), so it survives restarts and crashes.
bench/quiet_levels.py measures it on level-shifted copies of the labelled sets (docs/sounds.md).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from service.config import ActivityConfig
from service.daemon_vocabulary import SILENCE_DBFS

#: Histogram resolution of a level history (dB): percentiles are exact to this.
LEVEL_BIN_DB = 0.1
_BINS = int(round(-SILENCE_DBFS / LEVEL_BIN_DB)) + 1


class LevelHistory:
    """The last ``capacity`` window levels (dBFS) of one microphone: a ring of histogram bins plus the
    histogram itself, so adding a level and reading a percentile cost O(1) and O(bins) whatever the
    history's length, in 2 bytes a window (a day of 10 s windows is 17 KB)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"LevelHistory capacity must be at least 1, got {capacity}")
        self.capacity = int(capacity)
        self._ring = np.zeros(self.capacity, dtype=np.int16)
        self._next = 0
        self._size = 0
        self._counts = np.zeros(_BINS, dtype=np.int64)

    def __len__(self) -> int:
        return self._size

    def add(self, level_dbfs: float) -> None:
        """Remember one window's level (NaN is ignored; below silence reads as silence); forget the oldest
        beyond the capacity."""
        if level_dbfs != level_dbfs:  # NaN
            return
        index = int(round((min(max(float(level_dbfs), SILENCE_DBFS), 0.0) - SILENCE_DBFS) / LEVEL_BIN_DB))
        if self._size == self.capacity:
            self._counts[self._ring[self._next]] -= 1
        else:
            self._size += 1
        self._ring[self._next] = index
        self._counts[index] += 1
        self._next = (self._next + 1) % self.capacity

    def extend(self, levels: Iterable[float]) -> None:
        """`add` each level, oldest first (at once: a day of four microphones' windows at start-up took
        0.1-0.16 s one by one at load 4.5)."""
        values = np.asarray(levels if isinstance(levels, np.ndarray) else list(levels), dtype=np.float64).reshape(-1)
        values = values[~np.isnan(values)]
        if values.size == 0:
            return
        indexes = np.rint((np.clip(values, SILENCE_DBFS, 0.0) - SILENCE_DBFS) / LEVEL_BIN_DB).astype(np.int16)
        count = indexes.size
        indexes = indexes[-self.capacity:]  # only the last `capacity` can remain
        slots = (self._next + np.arange(count - indexes.size, count)) % self.capacity
        # slots holding a level that is forgotten now: filled ones (a ring not yet full is filled from slot 0)
        overwritten = slots if self._size == self.capacity else slots[slots < self._size]
        self._counts -= np.bincount(self._ring[overwritten], minlength=_BINS)
        self._ring[slots] = indexes
        self._counts += np.bincount(indexes, minlength=_BINS)
        self._size = min(self.capacity, self._size + count)
        self._next = (self._next + count) % self.capacity

    def percentile(self, q: float) -> float | None:
        """The level (dBFS, to `LEVEL_BIN_DB`) that ``q`` % of the history is at or below; None when empty."""
        if not self._size:
            return None
        rank = max(1, int(np.ceil(q / 100.0 * self._size)))
        index = int(np.searchsorted(np.cumsum(self._counts), rank))
        return SILENCE_DBFS + index * LEVEL_BIN_DB


#: At or below this a window is digital silence or dither (a muted or unplugged input), no room's level.
NEAR_SILENCE_DBFS = -100.0
#: Health checks whose failure says nothing about the room's level (stuck or non-finite samples).
_NOT_A_LEVEL = ("non_finite", "stuck")


def above_near_silence(level_dbfs: float | np.ndarray) -> bool | np.ndarray:
    """Whether a level (or each of an array of levels) is above `NEAR_SILENCE_DBFS`: a room's level."""
    return level_dbfs > NEAR_SILENCE_DBFS


def counts_for_floor(level_dbfs: float, failing_checks: Iterable[str]) -> bool:
    """Whether a window's level belongs in its microphone's history: anything above near-silence whose
    samples are neither stuck nor non-finite (a level judged a dead channel still is the room's level)."""
    return bool(above_near_silence(level_dbfs)) and not any(check in _NOT_A_LEVEL for check in failing_checks)


def history_capacity(config: ActivityConfig, hop_s: float) -> int:
    """How many windows (one every ``hop_s``) the history of ``activity.quiet_history_hours`` holds."""
    return max(1, int(round(config.quiet_history_hours * 3600.0 / hop_s)))


def quiet_below_dbfs(history: LevelHistory | None, config: ActivityConfig, hop_s: float) -> float:
    """The level below which this microphone's next window is `quiet`: its learnt floor plus the margin
    within the bounds, or the absolute `quiet_below_dbfs` while too little history is known (or relative
    quiet is off)."""
    needed = config.quiet_min_history_hours * 3600.0 / hop_s
    if not config.quiet_relative or history is None or len(history) < max(1.0, needed):
        return config.quiet_below_dbfs
    floor = history.percentile(config.quiet_floor_percentile)
    return float(np.clip(floor + config.quiet_margin_db, config.quiet_min_dbfs, config.quiet_max_dbfs))
