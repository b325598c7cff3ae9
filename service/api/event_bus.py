"""Fan-out of live window records and state changes to StreamEvents subscribers.

`EventBus.publish` never blocks the pipeline: each subscriber has a bounded queue; when it is full
the new item is dropped for that subscriber only and counted, and the subscriber next receives a
`Gap` telling how many items it missed before the stream continues.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from service.records import StateChange, WindowResult

Item = WindowResult | StateChange


@dataclass(frozen=True)
class Gap:
    """``dropped`` items matching this subscriber's filter were lost here because it read too slowly."""

    dropped: int


class BusClosed(RuntimeError):
    """The bus was closed (the daemon is shutting down)."""


class Subscription:
    """One subscriber's bounded queue; read with `get`, release with `close` (or a ``with`` block)."""

    def __init__(self, bus: EventBus, accepts: Callable[[Item], bool] | None, queue_size: int) -> None:
        self._bus = bus
        self._accepts = accepts
        self._size = queue_size
        self._queue: deque[Item | Gap] = deque()
        self._queued_items = 0
        self._pending_gap = 0
        self._condition = threading.Condition()
        self.dropped_total = 0  # items dropped for this subscriber since it subscribed
        self.closed = False

    def _offer(self, item: Item) -> bool:
        """Queue ``item`` if it matches and fits; False when it was dropped (never waits)."""
        if self._accepts is not None and not self._accepts(item):
            return True
        with self._condition:
            if self.closed:
                return True
            if self._queued_items >= self._size:
                self._pending_gap += 1
                self.dropped_total += 1
                return False
            if self._pending_gap:
                self._queue.append(Gap(self._pending_gap))
                self._pending_gap = 0
            self._queue.append(item)
            self._queued_items += 1
            self._condition.notify()
            return True

    def get(self, timeout: float | None = None) -> Item | Gap | None:
        """Next item or Gap in publish order; None after ``timeout`` seconds without one.

        Raises BusClosed once the subscription (or the bus) is closed and the queue is drained.
        """
        with self._condition:
            if not self._queue and not self.closed:
                self._condition.wait(timeout)
            if self._queue:
                entry = self._queue.popleft()
                if not isinstance(entry, Gap):
                    self._queued_items -= 1
                return entry
            if self._pending_gap:  # overflowed and nothing queued since: report the loss now
                gap, self._pending_gap = Gap(self._pending_gap), 0
                return gap
            if self.closed:
                raise BusClosed("event bus closed")
            return None

    def close(self) -> None:
        """Stop receiving; wakes a reader blocked in `get`."""
        self._bus._remove(self)
        with self._condition:
            self.closed = True
            self._condition.notify_all()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Publish/subscribe of pipeline items; `publish` is O(subscribers) and never waits on a reader."""

    def __init__(self, queue_size: int = 1024, max_subscribers: int = 64) -> None:
        if queue_size < 1 or max_subscribers < 1:
            raise ValueError(f"queue_size and max_subscribers must be >= 1, got {queue_size}, {max_subscribers}")
        self.queue_size = queue_size
        self.max_subscribers = max_subscribers
        self._subscribers: list[Subscription] = []
        self._lock = threading.Lock()
        self._closed = False
        self.dropped_total = 0  # items dropped across all subscribers (each drop per subscriber counts)

    def subscribe(self, accepts: Callable[[Item], bool] | None = None, queue_size: int | None = None) -> Subscription:
        """A new subscription receiving the items for which ``accepts(item)`` is true (all if None).

        Raises BusClosed after `close`, and OverflowError when ``max_subscribers`` are already subscribed.
        """
        subscription = Subscription(self, accepts, queue_size or self.queue_size)
        with self._lock:
            if self._closed:
                raise BusClosed("event bus closed")
            if len(self._subscribers) >= self.max_subscribers:
                raise OverflowError(f"too many live subscribers ({self.max_subscribers})")
            self._subscribers.append(subscription)
        return subscription

    def publish(self, item: Item) -> int:
        """Hand ``item`` to every subscriber without blocking; returns how many subscribers dropped it."""
        with self._lock:
            subscribers = list(self._subscribers)
        dropped = sum(1 for s in subscribers if not s._offer(item))
        if dropped:
            with self._lock:
                self.dropped_total += dropped
        return dropped

    def subscriber_count(self) -> int:
        """Live subscriptions."""
        with self._lock:
            return len(self._subscribers)

    def close(self) -> None:
        """Close every subscription (their readers get BusClosed) and refuse new ones."""
        with self._lock:
            self._closed = True
            subscribers, self._subscribers = self._subscribers, []
        for subscription in subscribers:
            subscription.close()

    def _remove(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)
