"""Specification of the live-event fan-out: publishing never waits for a reader, losses are counted
and reported in order as gaps."""

from __future__ import annotations

import threading
import time

import pytest

from service.api.event_bus import BusClosed, EventBus, Gap
from service.records import StateChange


def change(n: int, mic: str = "kitchen") -> StateChange:
    return StateChange("health_changed", mic, n, None, "ok", event_id=n)


def drain(subscription) -> list:
    items = []
    while (item := subscription.get(timeout=0)) is not None:
        items.append(item)
    return items


def test_every_subscriber_gets_every_matching_item_in_order() -> None:
    bus = EventBus()
    everything = bus.subscribe()
    hall_only = bus.subscribe(lambda item: item.mic_id == "hall")
    for n in range(5):
        bus.publish(change(n, "hall" if n % 2 else "kitchen"))
    assert [i.time_unix_ms for i in drain(everything)] == [0, 1, 2, 3, 4]
    assert [i.time_unix_ms for i in drain(hall_only)] == [1, 3]


def test_a_subscriber_that_never_reads_does_not_slow_publishing_and_its_losses_are_counted() -> None:
    bus = EventBus(queue_size=10)
    stalled = bus.subscribe()
    reader = bus.subscribe(queue_size=100_000)
    started = time.perf_counter()
    dropped = sum(bus.publish(change(n)) for n in range(20_000))
    assert time.perf_counter() - started < 5.0  # never waits on a reader (about 40 ms here)
    assert dropped == stalled.dropped_total == bus.dropped_total == 19_990
    assert reader.dropped_total == 0 and len(drain(reader)) == 20_000


def test_a_slow_subscriber_sees_a_gap_exactly_where_items_were_lost() -> None:
    bus = EventBus(queue_size=2)
    slow = bus.subscribe()
    for n in range(5):
        bus.publish(change(n))
    assert drain(slow) == [change(0), change(1), Gap(dropped=3)]
    bus.publish(change(5))
    bus.publish(change(6))
    bus.publish(change(7))
    assert drain(slow) == [change(5), change(6), Gap(dropped=1)]
    assert slow.dropped_total == 4


def test_a_gap_is_queued_before_the_next_item_that_fits() -> None:
    bus = EventBus(queue_size=1)
    slow = bus.subscribe()
    bus.publish(change(0))
    bus.publish(change(1))  # dropped
    assert slow.get(timeout=0) == change(0)
    bus.publish(change(2))
    assert drain(slow) == [Gap(dropped=1), change(2)]


def test_closing_the_bus_wakes_a_waiting_reader_and_refuses_new_subscribers() -> None:
    bus = EventBus()
    subscription = bus.subscribe()
    outcome = []

    def wait() -> None:
        try:
            subscription.get(timeout=30)
        except BusClosed:
            outcome.append("closed")

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.05)
    bus.close()
    thread.join(timeout=5)
    assert outcome == ["closed"]
    with pytest.raises(BusClosed):
        bus.subscribe()


def test_closed_subscriptions_stop_receiving_and_free_their_slot() -> None:
    bus = EventBus(max_subscribers=1)
    with bus.subscribe() as first:
        with pytest.raises(OverflowError, match="too many"):
            bus.subscribe()
    assert bus.subscriber_count() == 0
    assert bus.publish(change(0)) == 0
    assert first.closed
    bus.subscribe()
    assert bus.subscriber_count() == 1


def test_get_times_out_with_none_when_nothing_arrives() -> None:
    subscription = EventBus().subscribe()
    started = time.perf_counter()
    assert subscription.get(timeout=0.05) is None
    assert time.perf_counter() - started >= 0.04
