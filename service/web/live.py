"""Live fan-out from the pipeline to the open pages (Server-Sent Events).

The pipeline's store thread calls `LiveFeed.publish` once per window or change: the message is
serialised once and handed to the web server's event loop, so its cost does not grow with the number
of open pages and it never waits on one. Each page has a bounded queue; a page that reads too slowly
loses its oldest messages and is told so (``event: gap``), and reloads the snapshot.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque

from service.web.mel_strip import mel_strip, strip_to_json
from service.web.views import change_json, window_json

#: Messages a page may fall behind before its oldest ones are dropped.
PAGE_QUEUE = 64
#: Live windows remembered per microphone for a page that opens (the log-Mel strip's width).
HISTORY = 30


class PageStream:
    """One open page's queue of SSE frames (text); `dropped` counts frames it lost to slowness."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=PAGE_QUEUE)
        self.dropped = 0

    def put(self, frame: str | None) -> None:
        """Queue a frame (None ends the stream); when full the oldest frame makes room."""
        while True:
            try:
                self.queue.put_nowait(frame)
                return
            except asyncio.QueueFull:
                self.queue.get_nowait()
                self.dropped += 1


def sse_frame(event: str, data: dict) -> str:
    """One Server-Sent Events frame (``event:`` + one ``data:`` line of JSON)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'), allow_nan=False)}\n\n"


class LiveFeed:
    """Recent live messages per microphone plus the set of open page streams."""

    def __init__(self, floor_db: float, history: int = HISTORY) -> None:
        self.floor_db = floor_db  # the model's log-Mel floor: the strip's black
        self._history = history
        self._recent: dict[str, deque[dict]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pages: set[PageStream] = set()
        self.published = 0

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver to pages on ``loop`` (the web server's event loop) from now on."""
        self._loop = loop

    def publish(self, event: str, data: dict, mic_id: str | None = None) -> None:
        """Send one message to every open page; thread-safe, never blocks. ``mic_id`` keeps it in history."""
        frame = sse_frame(event, data)
        with self._lock:
            self.published += 1
            if mic_id is not None:
                self._recent.setdefault(mic_id, deque(maxlen=self._history)).append(data)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._fan_out, frame)
            except RuntimeError:  # the loop closed between the check and the call (shutdown)
                pass

    def on_stored(self, analysed, windows, changes) -> None:
        """The daemon's stored-batch listener: each window (with its log-Mel strip, made here, and failing
        checks), then each state change, to every open page."""
        for item, window in zip(analysed, windows):
            strip = None if item.log_mel is None else strip_to_json(mel_strip(item.log_mel, self.floor_db))
            self.publish("window", {"window": window_json(window), "strip": strip, "failing": item.failing},
                         mic_id=window.mic_id)
        for change in changes:
            self.publish("change", change_json(change))

    def recent(self) -> dict[str, list[dict]]:
        """The last live messages of every microphone, oldest first."""
        with self._lock:
            return {mic: list(items) for mic, items in self._recent.items()}

    # --- on the event loop --------------------------------------------------------------------------

    def _fan_out(self, frame: str | None) -> None:
        for page in list(self._pages):
            page.put(frame)

    def open_page(self) -> PageStream:
        """A new page stream (event loop only)."""
        page = PageStream()
        self._pages.add(page)
        return page

    def close_page(self, page: PageStream) -> None:
        """Forget a page stream (event loop only)."""
        self._pages.discard(page)

    def page_count(self) -> int:
        """Open page streams."""
        return len(self._pages)

    def end_all(self) -> None:
        """End every open stream (event loop only), e.g. at shutdown."""
        self._fan_out(None)
