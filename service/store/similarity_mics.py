"""The microphone of every window an approximate similarity index holds, in two bytes per window id
(`MicsById`): what the mic filter, the exclusions and retention ask of the index besides faiss's lists.

Sorted int64 ids with int32 mic codes took 12 B per window (151 MB for a year of four microphones);
window ids are dense (one per stored window of any microphone), so a uint16 code per id of the span
from the lowest held id to the highest takes ~2 B per window.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The code of an id the index does not hold; mic codes run from 0 below it.
ABSENT = np.uint16(0xFFFF)


class MicsById:
    """Mic code per window id from ``first`` on (`ABSENT` where not held), the mic names, rows per mic."""

    def __init__(self) -> None:
        self.first = 0  # window id of slot 0
        self._codes = np.zeros(0, dtype=np.uint16)  # its capacity grows by half, as a list's does
        self._span = 0  # slots in use: window ids first .. first + span - 1
        self.names: list[str] = []
        self._by_name: dict[str, int] = {}
        self.rows = np.zeros(0, dtype=np.int64)  # rows held per mic code

    def __len__(self) -> int:
        return int(self.rows.sum())

    @property
    def nbytes(self) -> int:
        """Memory held: the codes array (its capacity) and the rows per mic."""
        return self._codes.nbytes + self.rows.nbytes

    def _code(self, mic: str) -> int:
        code = self._by_name.get(mic)
        if code is None:
            if len(self.names) >= ABSENT:
                raise ValueError(f"a similarity index holds at most {int(ABSENT)} microphone names")
            code = self._by_name[mic] = len(self.names)
            self.names.append(mic)
            self.rows = np.append(self.rows, 0)
        return code

    def add(self, ids: np.ndarray, mics: np.ndarray) -> None:
        """Hold window ``ids`` (any order, none held yet) of microphones ``mics``."""
        if ids.size == 0:
            return
        names, inverse = np.unique(np.asarray(mics, dtype=object).astype(str), return_inverse=True)
        codes = np.asarray([self._code(str(name)) for name in names], dtype=np.uint16)[inverse.reshape(-1)]
        low, high = int(ids.min()), int(ids.max())
        if self._span == 0:
            self.first = low
        if low < self.first:  # ids below the span: shift it
            self._codes = np.concatenate([np.full(self.first - low, ABSENT, dtype=np.uint16), self._codes])
            self._span += self.first - low
            self.first = low
        needed = high - self.first + 1
        if needed > self._codes.size:
            grown = np.full(max(needed, self._codes.size * 3 // 2), ABSENT, dtype=np.uint16)
            grown[:self._span] = self._codes[:self._span]
            self._codes = grown
        self._span = max(self._span, needed)
        self._codes[ids - self.first] = codes
        self.rows += np.bincount(codes, minlength=len(self.names))

    def state(self) -> dict[str, np.ndarray]:
        """What it holds as arrays (`from_state` reads them back): saved with the index between runs."""
        return {"mics_first": np.asarray([self.first], dtype=np.int64), "mics_codes": self._codes[:self._span],
                "mics_names": np.asarray(self.names, dtype=str), "mics_rows": self.rows}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> MicsById:
        """The `MicsById` whose `state` this is."""
        mics = cls()
        mics.first = int(state["mics_first"][0])
        mics._codes = np.array(state["mics_codes"], dtype=np.uint16)
        mics._span = mics._codes.size
        mics.names = [str(name) for name in state["mics_names"]]
        mics._by_name = {name: code for code, name in enumerate(mics.names)}
        mics.rows = np.array(state["mics_rows"], dtype=np.int64)
        if mics.rows.size != len(mics.names):
            raise ValueError(f"{mics.rows.size} row counts for {len(mics.names)} microphones")
        return mics

    def codes_of(self, ids: np.ndarray) -> np.ndarray:
        """The mic code of each of ``ids``, `ABSENT` for one not held."""
        ids = np.asarray(ids, dtype=np.int64)
        slots = ids - self.first
        inside = (slots >= 0) & (slots < self._span)
        codes = np.full(ids.size, ABSENT, dtype=np.uint16)
        codes[inside] = self._codes[slots[inside]]
        return codes

    def wanted(self, mic_ids: Sequence[str] | None) -> np.ndarray:
        """Per mic code (and one more for `ABSENT`, never wanted): whether a search over ``mic_ids`` (None: all) wants it."""
        wanted = np.zeros(len(self.names) + 1, dtype=bool)
        if mic_ids:
            wanted[[self._by_name[m] for m in mic_ids if m in self._by_name]] = True
        else:
            wanted[:-1] = True
        return wanted

    @staticmethod
    def index_of(codes: np.ndarray, wanted: np.ndarray) -> np.ndarray:
        """``codes`` as indexes into a `wanted` array (`ABSENT` maps to its last, never-wanted entry)."""
        return np.where(codes == ABSENT, wanted.size - 1, codes)

    def remove(self, ids: np.ndarray) -> np.ndarray:
        """Stop holding ``ids``; returns those that were held. Gives back the slots of a run of dropped
        oldest ids once it is a quarter of the span (retention drops the oldest)."""
        codes = self.codes_of(ids)
        held = codes != ABSENT
        gone = np.asarray(ids, dtype=np.int64)[held]
        if gone.size == 0:
            return gone
        self.rows -= np.bincount(codes[held], minlength=len(self.names))
        self._codes[gone - self.first] = ABSENT
        in_use = self._codes[:self._span] != ABSENT
        lead = int(np.argmax(in_use)) if in_use.any() else self._span
        if lead * 4 >= self._span:
            self._codes = self._codes[lead:self._span].copy()
            self.first += lead
            self._span -= lead
        return gone
