"""Clip retention, opt-in: the audio of stored windows kept as FLAC or Ogg/Opus files next to the store, so
the web page can play a window and `roomtone adapt` can learn from what a microphone really heard.

PRIVACY: a clip is a recording of the room. Speech in it is the voice of people at home. Clips are never
kept unless ``[clips] keep`` says so, and the web page serves them only on loopback or behind TLS and
authentication (service/web/server.py refuses any other listener).

Files are ``<dir>/<mic id>/<window start unix ms>.<ext>``: a clip is found from a stored window's microphone
and start time, so clips stay matched to their windows even when the store is rebuilt. Writing happens on
a background thread behind a bounded queue (`ClipWriter`), so encoding never slows the pipeline; a clip
that does not fit is dropped and counted. Retention deletes clips by age, then the oldest while the
directory is over its size limit, like the store's own retention. Clips never take the store's last free
space: before each write, while the disk is below ``min_free_mb`` the oldest clips are deleted, and if that
is not enough the new clip is dropped (counted as ``low_disk``, logged at most once a minute).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from service.config import ClipsConfig
from service.disk_space import free_bytes
from service.logs import ThrottledLog
from service.state_files import fsync_file

log = logging.getLogger("roomtone.clips")

#: codec name (ClipsConfig.codec) -> (soundfile format, subtype, file extension, HTTP content type).
CODECS = {
    "flac": ("FLAC", "PCM_16", ".flac", "audio/flac"),
    "opus": ("OGG", "OPUS", ".ogg", "audio/ogg"),
}


#: Most bytes per sample a clip file takes (16-bit FLAC that does not compress at all, plus headers): the room a
#: write checks for before it starts.
CLIP_BYTES_PER_SAMPLE = 2.2


def clip_bytes(samples: np.ndarray) -> int:
    """An upper bound of the clip file's size for ``samples`` (any shape), to check free space before writing."""
    return int(np.asarray(samples).size * CLIP_BYTES_PER_SAMPLE) + 65536


def should_keep(keep: str, has_state_change: bool) -> bool:
    """Whether a window's clip is kept under ``keep`` (ClipsConfig.keep; events: windows that show a state change)."""
    return keep == "all" or (keep == "events" and has_state_change)


@dataclass(frozen=True)
class RetentionPass:
    """What one `ClipStore.enforce_retention` pass deleted."""

    deleted: int
    bytes_in_use: int


class ClipStore:
    """The clip files of one directory: write, find and expire them."""

    def __init__(self, root: str | Path, config: ClipsConfig) -> None:
        self.root = Path(root)
        self.config = config
        self.extension = CODECS[config.codec][2]

    def path_for(self, mic_id: str, start_unix_ms: int) -> Path:
        """Where the clip of ``mic_id``'s window starting at ``start_unix_ms`` is (or would be) kept."""
        if not mic_id or "/" in mic_id or mic_id.startswith("."):
            raise ValueError(f"mic id {mic_id!r} cannot name a clip directory")
        return self.root / mic_id / f"{int(start_unix_ms)}{self.extension}"

    def find(self, mic_id: str, start_unix_ms: int) -> Path | None:
        """The stored clip of a window in any codec (the codec may have changed since), or None."""
        for _fmt, _subtype, extension, _ctype in CODECS.values():
            path = self.root / mic_id / f"{int(start_unix_ms)}{extension}"
            if path.is_file():
                return path
        return None

    def write(self, mic_id: str, start_unix_ms: int, samples: np.ndarray, sample_rate: int) -> Path:
        """Encode ``samples [channels, n]`` (float, [-1, 1]) to the clip file; written whole or not at all."""
        fmt, subtype, _ext, _ctype = CODECS[self.config.codec]
        path = self.path_for(mic_id, start_unix_ms)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = np.clip(np.nan_to_num(np.atleast_2d(samples).T, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
        partial = path.with_name(path.name + ".part")
        try:
            soundfile.write(str(partial), data.astype(np.float32), int(sample_rate), format=fmt, subtype=subtype)
            fsync_file(partial)
        except BaseException:
            partial.unlink(missing_ok=True)  # a full disk leaves no half-written file behind
            raise
        os.replace(partial, path)  # a crash mid-write leaves a .part file, never a truncated clip
        return path

    def room_for(self, needed: int) -> bool:
        """Whether ``needed`` more bytes leave ``min_free_mb`` free on the clips' disk, deleting the oldest clips
        while they do not (the store's space comes first)."""
        return self.give_back(needed)[0]

    def give_back(self, needed: int = 0) -> tuple[bool, int]:
        """Delete the oldest clips while the disk has less than ``min_free_mb`` + ``needed`` free; (whether it now
        has, clips deleted). Also what the store gets when another program filled the disk under it."""
        floor = int(self.config.min_free_mb * 2**20)
        if free_bytes(self.root) - needed >= floor:
            return True, 0
        deleted = 0
        for _mtime, _size, path in self._files():
            path.unlink(missing_ok=True)
            deleted += 1
            if free_bytes(self.root) - needed >= floor:
                return True, deleted
        return False, deleted

    def _files(self) -> list[tuple[float, int, Path]]:
        """(modification time, size, path) of every clip, oldest first."""
        out = []
        if not self.root.is_dir():
            return out
        for mic_dir in self.root.iterdir():
            if not mic_dir.is_dir():
                continue
            for path in mic_dir.iterdir():
                try:
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                out.append((stat.st_mtime, stat.st_size, path))
        out.sort()
        return out

    def enforce_retention(self, now: float | None = None) -> RetentionPass:
        """Delete clips older than ``max_age_days``, then the oldest while over ``max_size_mb``."""
        now = time.time() if now is None else now
        cutoff = now - self.config.max_age_days * 86400.0
        limit = self.config.max_size_mb * 1024 * 1024
        files = self._files()
        total = sum(size for _, size, _ in files)
        deleted = 0
        for mtime, size, path in files:
            if mtime >= cutoff and total <= limit:
                break
            path.unlink(missing_ok=True)
            total -= size
            deleted += 1
        return RetentionPass(deleted, total)


#: The writer queue's request to delete clips for the store (`ClipWriter.make_room`).
_MAKE_ROOM = object()


class ClipWriter:
    """Encodes clips on a background thread; `offer` never blocks the pipeline (a full queue drops). The same
    thread enforces retention every ``retention_interval_s``."""

    def __init__(self, store: ClipStore, sample_rate: int = 16000, retention_interval_s: float = 300.0,
                 on_drop=lambda reason: None) -> None:
        self.store = store
        self.sample_rate = sample_rate
        self.retention_interval_s = retention_interval_s
        self.on_drop = on_drop  # called with the reason of every dropped clip (the metric)
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self.low_disk = ThrottledLog(log, "clip dropped: its disk is below clips.min_free_mb even with no clips "
                                          "left to delete; free space on it (the store needs it too)")
        self._failures = ThrottledLog(log, "clip not written")
        self._queue: queue.Queue = queue.Queue(maxsize=store.config.queue_size)
        self._thread = threading.Thread(target=self._run, name="clip-writer", daemon=True)
        self._thread.start()

    def offer(self, mic_id: str, start_unix_ms: int, samples: np.ndarray, sample_rate: int) -> bool:
        """Queue one window's audio for writing; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait((mic_id, start_unix_ms, samples, sample_rate))
            return True
        except queue.Full:
            self.dropped += 1
            self.on_drop("queue_full")
            log.warning("clip dropped: clip queue full", extra={"mic": mic_id, "clips_dropped_total": self.dropped})
            return False

    def make_room(self) -> None:
        """Ask the writer thread to delete the oldest clips until the disk has ``min_free_mb`` free again: the
        daemon's answer to store writes failing on a full disk (clips are otherwise pruned only when one is written,
        and none is written while the store fails)."""
        try:
            self._queue.put_nowait(_MAKE_ROOM)
        except queue.Full:  # clips are being written: each one already makes room first
            pass

    def _give_back(self) -> None:
        try:
            _enough, deleted = self.store.give_back()
        except OSError as exc:
            self._failures.note(error=f"{type(exc).__name__}: {exc}")
            return
        if deleted:
            log.warning("clips deleted to give the store room: its disk was below clips.min_free_mb",
                        extra={"clips_deleted": deleted, "free_mb": round(free_bytes(self.store.root) / 2**20, 1),
                               "min_free_mb": self.store.config.min_free_mb})

    def on_stored(self, analysed, windows, changes) -> None:
        """The daemon's stored-batch listener: queue the clips ``[clips] keep`` asks for."""
        changed = {c.window_id for c in changes}
        for item, window in zip(analysed, windows):
            if item.samples is not None and should_keep(self.store.config.keep, window.window_id in changed):
                self.offer(window.mic_id, window.start_unix_ms, item.samples, self.sample_rate)

    def _expire(self) -> None:
        try:
            report = self.store.enforce_retention()
        except OSError:
            log.exception("clip retention pass failed")
            return
        if report.deleted:
            log.info("clip retention", extra={"clips_deleted": report.deleted, "bytes_in_use": report.bytes_in_use})

    def _run(self) -> None:
        self._expire()
        next_pass = time.monotonic() + self.retention_interval_s
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_pass - time.monotonic()))
            except queue.Empty:
                item = False
            if time.monotonic() >= next_pass:
                self._expire()
                next_pass = time.monotonic() + self.retention_interval_s
            if item is False:
                continue
            if item is None:
                return
            if item is _MAKE_ROOM:
                self._give_back()
                continue
            mic_id, _start, samples, _rate = item
            try:
                if not self.store.room_for(clip_bytes(samples)):
                    self.dropped += 1
                    self.on_drop("low_disk")
                    self.low_disk.note(mic=mic_id, free_mb=round(free_bytes(self.store.root) / 2**20, 1),
                                       min_free_mb=self.store.config.min_free_mb)
                    continue
                self.store.write(*item)
                self.written += 1
            except Exception as exc:  # a full disk must not stop the writer (logged at most once a minute)
                self.failed += 1
                self.on_drop("error")
                self._failures.note(mic=mic_id, error=f"{type(exc).__name__}: {exc}")

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)
