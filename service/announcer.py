"""What the daemon announces after each stored batch: activity sessions (tracked, stored, streamed to
StreamEvents subscribers) and, when MQTT is configured, each microphone's state and one-off events.

Runs on the pipeline's store thread, after the batch is durable. MQTT publishing only queues messages
(service/mqtt_publisher.py), so a slow or absent broker never holds up the pipeline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from service import mqtt_messages as messages
from service.event_store import EventStore
from service.mqtt_publisher import MqttPublisher
from service.records import StateChange, WindowResult
from service.sessions import ActivitySession, SessionEvent, SessionTracker

log = logging.getLogger("roomtone.sessions")


class Announcer:
    """Sessions + MQTT for a running daemon; `start`, `after_store` per stored batch, `tick`, `stop`."""

    def __init__(self, store: EventStore, publish_live, tracker: SessionTracker | None,
                 publisher: MqttPublisher | None = None) -> None:
        self.store = store
        self.publish_live = publish_live  # EventBus.publish: StreamEvents subscribers get session events
        self.tracker = tracker  # None: sessions disabled
        self.publisher = publisher  # None: MQTT off

    def start(self) -> None:
        """Close sessions a crashed run left open, then connect to the broker (in the background)."""
        closed = self.store.close_open_sessions()
        for session in closed:
            log.info("closed a session left open by an unclean stop", extra={
                "mic": session.mic_id, "activity": session.activity, "session_id": session.session_id,
                "end_unix_ms": session.end_unix_ms})
        if self.publisher is not None:
            self.publisher.start()

    def on_stored(self, analysed, windows: Sequence[WindowResult], changes: Sequence[StateChange]) -> None:
        """The store stage's listener (service/store_and_publish.py): ``analysed`` carries the failing checks."""
        self.after_store([(w, a.failing) for w, a in zip(windows, analysed)], changes)

    def after_store(self, stored: Sequence[tuple[WindowResult, dict[str, bool]]], changes: Sequence[StateChange]) -> None:
        """Track sessions over the stored windows (with their failing checks), store and announce the session
        events, publish each microphone's new state and its health changes."""
        events: list[SessionEvent] = []
        if self.tracker is not None:
            for window, _failing in stored:
                events += self.tracker.update(window)
            if stored:
                events += self.tracker.close_idle(max(w.end_unix_ms for w, _ in stored))
        self._announce(events)
        if self.publisher is None:
            return
        for change in changes:
            if change.kind == "health_changed":
                self.publisher.publish_event(change.mic_id, messages.health_event_payload(
                    change.mic_id, change.time_unix_ms, change.previous, change.current, change.reasons))
        latest: dict[str, tuple[WindowResult, dict[str, bool]]] = {}
        for window, failing in stored:
            latest[window.mic_id] = (window, failing)
        for mic, (window, failing) in latest.items():
            self.publisher.publish_state(mic, messages.state_payload(window, failing, self.open_session(mic)))

    def announce_sound(self, mic_id: str, time_unix_ms: int, sound: str, score: float | None = None) -> None:
        """Publish a custom sound detection as a one-off MQTT event."""
        if self.publisher is not None:
            self.publisher.publish_event(mic_id, messages.sound_event_payload(mic_id, time_unix_ms, sound, score))

    def open_session(self, mic_id: str) -> ActivitySession | None:
        """The microphone's open session (with its store id), or None."""
        return self.tracker.open_session(mic_id) if self.tracker is not None else None

    def _announce(self, events: list[SessionEvent]) -> None:
        if not events:
            return
        stored = self.store.add_session_events(events)
        for event in stored:
            if event.kind == "session_started":
                self.tracker.set_session_id(event.mic_id, event.session.session_id)
            s = event.session
            log.info(event.kind.replace("_", " "), extra={
                "mic": s.mic_id, "activity": s.activity, "session_id": s.session_id, "start_unix_ms": s.start_unix_ms,
                "end_unix_ms": s.end_unix_ms, "windows": s.windows})
            self.publish_live(event)
            if self.publisher is not None:
                self.publisher.publish_event(event.mic_id, messages.session_event_payload(event))

    def stop(self) -> None:
        """End open sessions at their last window (the daemon stops listening), then disconnect from MQTT."""
        if self.tracker is not None:
            try:
                self._announce(self.tracker.close_all())
            except Exception:  # the store may already be failing; crash recovery closes them at the next start
                log.exception("could not store the end of the open sessions")
        if self.publisher is not None:
            started = time.monotonic()
            self.publisher.stop()
            log.info("MQTT publisher stopped", extra={"seconds": round(time.monotonic() - started, 2)})
