"""What the daemon announces after each stored batch: activity sessions (tracked, stored, streamed to
StreamEvents subscribers) and, when MQTT is configured, each microphone's state and one-off events.

Runs on the pipeline's store thread, after the batch is durable. MQTT publishing only queues messages
(service/announce/mqtt_publisher.py), so a slow or absent broker never holds up the pipeline.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence

from service.announce import mqtt_messages as messages
from service.store.event_store import EventStore
from service.announce.mqtt_publisher import MqttPublisher
from service.periodic import PeriodicThread
from service.records import MicStatus, StateChange, WindowResult
from service.daemon_vocabulary import CAPTURE_LOST_STATES, HEALTH_CHANGED, HEALTH_OK, SESSION_ENDED, SOUND_DETECTED
from service.analysis.sessions import ActivitySession, SessionEvent, SessionTracker

log = logging.getLogger("roomtone.sessions")


class Announcer:
    """Sessions + MQTT for a running daemon; `start`, `after_store` per stored batch, `tick`, `stop`."""

    def __init__(self, store: EventStore, publish_live, tracker: SessionTracker | None,
                 publisher: MqttPublisher | None = None) -> None:
        self.store = store
        self.publish_live = publish_live  # EventBus.publish: StreamEvents subscribers get session events
        self.tracker = tracker  # None: sessions disabled
        self.publisher = publisher  # None: MQTT off
        self._lock = threading.Lock()  # the tracker is fed by the store thread and checked by the capture watch
        self._lost: set[str] = set()  # microphones whose capture delivers no audio, already announced
        self._latest: dict[str, tuple[WindowResult, dict[str, bool]]] = {}  # mic -> last stored window, failing
        self._capture_watch: PeriodicThread | None = None

    def start(self) -> None:
        """Close sessions a crashed run left open, then connect to the broker (in the background); its first
        connect publishes their `session_ended` and a fresh retained state per microphone (no session)."""
        try:
            closed = self.store.close_open_sessions()
        except sqlite3.OperationalError as exc:  # e.g. a full disk: the daemon starts anyway, they close next time
            closed = []
            log.warning("could not close the sessions a crashed run left open; they are closed at a later start",
                        extra={"error": f"{type(exc).__name__}: {exc}"})
        for session in closed:
            log.info("closed a session left open by an unclean stop", extra={
                "mic": session.mic_id, "activity": session.activity, "session_id": session.session_id,
                "end_unix_ms": session.end_unix_ms})
        if self.publisher is not None:
            now = int(time.time() * 1000)
            mics = self.publisher.mic_ids
            ended = [("event", s.mic_id, messages.session_event_payload(SessionEvent(SESSION_ENDED, s, s.end_unix_ms)))
                     for s in closed if s.mic_id in mics]
            fresh = [("state", mic, messages.starting_payload(mic, now)) for mic in mics]
            self.publisher.start(first=ended + fresh)

    def on_stored(self, analysed, windows: Sequence[WindowResult], changes: Sequence[StateChange]) -> None:
        """The store stage's listener (service/announce/store_and_publish.py): ``analysed`` carries the failing checks."""
        self.after_store([(w, a.failing) for w, a in zip(windows, analysed)], changes)

    def after_store(self, stored: Sequence[tuple[WindowResult, dict[str, bool]]], changes: Sequence[StateChange]) -> None:
        """Track sessions over the stored windows (with their failing checks), store and announce the session
        events, publish each microphone's new state and its health changes."""
        events: list[SessionEvent] = []
        with self._lock:
            if self.tracker is not None:
                for window, _failing in stored:
                    events += self.tracker.update(window)
                if stored:
                    events += self.tracker.close_idle(max(w.end_unix_ms for w, _ in stored))
            self._announce(events)
            self._lost -= {w.mic_id for w, _ in stored}
        if self.publisher is None:
            return
        for change in changes:
            if change.kind == HEALTH_CHANGED and (change.previous, change.current) != (None, HEALTH_OK):
                # a microphone's first window at start is "null -> ok": not news (the state says ok)
                self.publisher.publish_event(change.mic_id, messages.health_event_payload(
                    change.mic_id, change.time_unix_ms, change.previous, change.current, change.reasons))
            elif change.kind == SOUND_DETECTED:  # a custom sound (docs/sounds.md): current = its name
                self.announce_sound(change.mic_id, change.time_unix_ms, change.current, change.score,
                                    change.sound_start_ms, change.sound_end_ms)
        latest: dict[str, tuple[WindowResult, dict[str, bool]]] = {}
        for window, failing in stored:
            latest[window.mic_id] = (window, failing)
        self._latest.update(latest)
        for mic, (window, failing) in latest.items():
            self.publisher.publish_state(mic, messages.state_payload(window, failing, self.open_session(mic)))

    def announce_sound(self, mic_id: str, time_unix_ms: int, sound: str, score: float | None = None,
                       start_offset_ms: int | None = None, end_offset_ms: int | None = None) -> None:
        """Publish a custom sound detection as a one-off MQTT event (offsets: ms from the window's start)."""
        if self.publisher is not None:
            self.publisher.publish_event(mic_id, messages.sound_event_payload(mic_id, time_unix_ms, sound, score,
                                                                              start_offset_ms, end_offset_ms))

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

    def watch_capture(self, mic_status: Callable[[], list[MicStatus]], interval_s: float = 5.0) -> None:
        """Check every ``interval_s`` for microphones whose capture delivers no audio (`check_capture`)."""
        self._capture_watch = PeriodicThread(
            "capture-watch", lambda: self.check_capture(mic_status(), int(time.time() * 1000)), interval_s)
        self._capture_watch.start()

    def check_capture(self, statuses: Sequence[MicStatus], now_unix_ms: int) -> None:
        """Microphones delivering no audio store no windows, so nothing else would say so: their open
        sessions end once the gap tolerance has passed (at their last window), and MQTT shows them faulty
        (once per loss; the next stored window clears it)."""
        lost = {s.mic_id: s for s in statuses if s.state in CAPTURE_LOST_STATES}
        if not lost:
            return
        with self._lock:
            if self.tracker is not None:
                self._announce(self.tracker.close_idle(now_unix_ms, set(lost)))
            newly = [s for mic, s in lost.items() if mic not in self._lost]
            self._lost |= set(lost)
        for status in newly:
            log.warning("microphone delivers no audio", extra={"mic": status.mic_id, "capture": status.state})
            if self.publisher is not None:
                self.publisher.publish_state(status.mic_id, messages.capture_lost_payload(
                    status, now_unix_ms, self.open_session(status.mic_id)))

    def stop(self) -> None:
        """End open sessions at their last window (the daemon stops listening), then disconnect from MQTT."""
        if self._capture_watch is not None:
            self._capture_watch.stop()
        if self.tracker is not None:
            try:
                with self._lock:
                    self._announce(self.tracker.close_all())
            except Exception:  # the store may already be failing; crash recovery closes them at the next start
                log.exception("could not store the end of the open sessions")
        if self.publisher is not None:
            now = int(time.time() * 1000)
            for mic in self.publisher.mic_ids:  # the last retained state shows no session before `offline`
                window, failing = self._latest.get(mic, (None, {}))
                self.publisher.publish_state(mic, messages.stopped_payload(mic, now, window, failing))
            started = time.monotonic()
            self.publisher.stop()
            log.info("MQTT publisher stopped", extra={"seconds": round(time.monotonic() - started, 2)})
