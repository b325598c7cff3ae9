"""What the pipeline's store stage does with an analysed batch: write it to the event store, publish the
stored records on the event bus (StreamEvents, MQTT, ...), log state changes, remember each
microphone's last window (for `mic_status`) and hand the stored batch to listeners (the web page's live
feed, the clip writer), which must not block."""

from __future__ import annotations

import logging

from service.records import StateChange, WindowResult

log = logging.getLogger("roomtone.daemon")


class StoreAndPublish:
    """The pipeline's `StoreFn` over an EventStore and an EventBus; ``latest`` maps mic id -> last stored window."""

    def __init__(self, store, bus) -> None:
        self.store = store
        self.bus = bus
        self.latest: dict[str, WindowResult] = {}
        # called with (analysed, stored windows, stored changes) after each batch; a failing listener is
        # logged, never a store error (the batch is stored by then)
        self.listeners: list = []

    def __call__(self, analysed, changes: list[StateChange]) -> None:
        """Store a batch (`service.analysis.analyser.Analysed` items and their changes), then publish what was stored."""
        windows, stored_changes = self.store.add_results([a.result for a in analysed], changes)
        for window in windows:
            self.latest[window.mic_id] = window
            self.bus.publish(window)
        for change in stored_changes:
            log.info("state changed", extra={"mic": change.mic_id, "kind": change.kind, "previous": change.previous,
                                             "current": change.current, "reasons": list(change.reasons)})
            self.bus.publish(change)
        for listener in self.listeners:
            try:
                listener(analysed, windows, stored_changes)
            except Exception:
                log.exception("a stored-batch listener failed", extra={"listener": repr(listener)})
