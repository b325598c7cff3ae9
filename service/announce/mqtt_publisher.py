"""The MQTT publisher: states, events, availability and Home Assistant discovery on a broker (paho-mqtt).

It never blocks or slows the pipeline. `publish_state`/`publish_event` only put a message on a bounded
queue (full: the message is dropped and counted); a worker thread hands messages to paho's network
thread, which reconnects with exponential back-off (``reconnect_min_s`` doubling up to ``reconnect_max_s``).
While the broker is unreachable messages are dropped and counted (``roomtone_mqtt_messages_dropped_total``
by reason) and the last error is logged once per ``error_log_interval_s``; after every (re)connect the
publisher republishes discovery and the latest retained state of every microphone, then announces
``online``, so Home Assistant catches up without a backlog of stale windows.
"""

from __future__ import annotations

import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from prometheus_client import CollectorRegistry, Counter, Gauge

from service.announce import mqtt_messages as messages
from service.config import MqttConfig, check_mic_ids
from service.logs import ThrottledLog

log = logging.getLogger("roomtone.mqtt")

DROP_REASONS = ("queue_full", "disconnected", "broker_slow")
#: Seconds without an acknowledgement, while connected and waiting for one, after which the broker counts as
#: stalled (it accepted the connection but answers nothing: the messages are neither lost nor delivered).
ACK_STALL_S = 60.0


def _encode(payload: dict[str, Any]) -> bytes:
    """A payload as compact JSON bytes."""
    return json.dumps(payload, separators=(",", ":")).encode()


class PublisherMetrics:
    """The publisher's Prometheus metrics (registered in the daemon's registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter("roomtone_mqtt_messages_published_total",
                                 "MQTT messages the broker acknowledged.", registry=registry)
        self.dropped = Counter("roomtone_mqtt_messages_dropped_total",
                               "MQTT messages dropped: queue_full (publisher queue), disconnected (no broker), "
                               "broker_slow (paho's queue of unacknowledged messages full).", ["reason"],
                               registry=registry)
        self.connected = Gauge("roomtone_mqtt_connected", "1 while connected to the MQTT broker.", registry=registry)
        self.ack_stalls = Counter("roomtone_mqtt_ack_stalls_total",
                                  "Times the broker, while connected, acknowledged nothing for more than "
                                  "ACK_STALL_S (60 s) with messages waiting.", registry=registry)
        for reason in DROP_REASONS:
            self.dropped.labels(reason=reason)


class MqttPublisher:
    """Publishes to one broker from its own threads; `start`, then `publish_*` from any thread, then `stop`."""

    def __init__(self, config: MqttConfig, mic_ids: list[str], info: messages.DeviceInfo,
                 registry: CollectorRegistry | None = None) -> None:
        check_mic_ids(mic_ids, config)
        self.config = config
        self.mic_ids = list(mic_ids)
        self.info = info
        self.metrics = PublisherMetrics(registry if registry is not None else CollectorRegistry())
        self._queue: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self._connected = threading.Event()
        self._resync = threading.Event()  # set on (re)connect and when Home Assistant comes online
        self._stopping = threading.Event()
        self._last_state: dict[str, bytes] = {}  # mic -> latest state payload (republished after a reconnect)
        self._first_events: list[tuple[str, bytes]] = []  # events for the first connect (`start`'s ``first``)
        self._state_lock = threading.Lock()
        self._broker_errors = ThrottledLog(log, "MQTT broker unavailable; retrying with back-off",
                                           config.error_log_interval_s)
        self._worker: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._acks_lock = threading.Lock()
        self._unacked = 0  # messages sent and not yet acknowledged
        self._waiting_since: float | None = None  # the last acknowledgement (or first send) while some wait
        self._stalled = False  # the current stall was reported

    # --- topics -------------------------------------------------------------------------------------
    @property
    def availability_topic(self) -> str:
        """Where online/offline is published."""
        return messages.availability_topic(self.config.base_topic)

    @property
    def is_connected(self) -> bool:
        """True while connected to the broker."""
        return self._connected.is_set()

    # --- what the daemon calls (never blocks) ---------------------------------------------------
    def publish_state(self, mic_id: str, payload: dict[str, Any]) -> bool:
        """Queue the microphone's retained state; False when the queue was full (dropped and counted)."""
        return self._offer(("state", mic_id, payload))

    def publish_event(self, mic_id: str, payload: dict[str, Any]) -> bool:
        """Queue a one-off event of the microphone; False when the queue was full (dropped and counted)."""
        return self._offer(("event", mic_id, payload))

    def _offer(self, item: tuple) -> bool:
        try:
            self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.metrics.dropped.labels(reason="queue_full").inc()
            return False

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self, first: Sequence[tuple[str, str, dict[str, Any]]] = ()) -> None:
        """Start paho's network thread (connecting in the background, retrying with back-off) and the worker.

        ``first``: ``(kind, mic, payload)`` messages ("state" or "event") sent at the first connect, however
        long the broker takes to answer: the start-up state (before ``online``) and the end of sessions a
        crash left open (after it), which would otherwise be dropped while not yet connected."""
        with self._state_lock:
            for kind, mic, payload in first:
                if kind == "state":
                    self._last_state[mic] = _encode(payload)
                else:
                    self._first_events.append((mic, _encode(payload)))
        c = self.config
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=c.effective_client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.will_set(self.availability_topic, messages.OFFLINE, qos=1, retain=True)
        if c.username:
            password = Path(c.password_file).read_text().strip() if c.password_file else None
            client.username_pw_set(c.username, password)
        if c.tls_ca:
            client.tls_set(ca_certs=c.tls_ca, cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.reconnect_delay_set(min_delay=c.reconnect_min_s, max_delay=c.reconnect_max_s)  # type: ignore[arg-type]
        client.max_queued_messages_set(c.queue_size)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        self._client = client
        client.connect_async(c.host, c.port, keepalive=c.keepalive_s)
        client.loop_start()
        self._worker = threading.Thread(target=self._work, name="mqtt-publisher", daemon=True)
        self._worker.start()
        log.info("MQTT publisher started", extra={"host": c.host, "port": c.port, "tls": bool(c.tls_ca),
                                                  "client_id": c.effective_client_id, "base_topic": c.base_topic,
                                                  "discovery": c.discovery})

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is queued (while connected), announce offline, disconnect; returns within ~``timeout`` s."""
        if self._client is None:
            return
        self._stopping.set()
        deadline = time.monotonic() + timeout
        if self._worker is not None:
            self._worker.join(max(0.1, deadline - time.monotonic() - 1.0))
        client, self._client = self._client, None
        if self._connected.is_set():
            info = client.publish(self.availability_topic, messages.OFFLINE, qos=1, retain=True)
            try:
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            except (RuntimeError, ValueError):  # not queued: the connection went away meanwhile
                pass
        client.disconnect()
        client.loop_stop()
        self._connected.clear()
        self.metrics.connected.set(0)

    # --- worker ---------------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            self._check_acknowledgements()
            if self._resync.is_set() and self._connected.is_set():
                self._resync.clear()
                self._publish_all()
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                continue
            kind, mic, payload = item
            data = _encode(payload)
            if kind == "state":
                with self._state_lock:
                    self._last_state[mic] = data
                self._send(messages.state_topic(self.config.base_topic, mic), data, retain=True)
            else:
                self._send(messages.event_topic(self.config.base_topic, mic), data, retain=False)
            if self._stopping.is_set() and (not self._connected.is_set() or self._queue.empty()):
                return

    def _publish_all(self) -> None:
        """After a (re)connect or a Home Assistant restart: discovery, every latest state, then ``online``
        (so Home Assistant never shows the state a crash left behind as current), then the first connect's
        events (after ``online``: automations that ignore changes from "unavailable" still see them)."""
        c = self.config
        if c.discovery:
            for mic in self.mic_ids:
                payload = messages.discovery_payload(c.discovery_prefix, c.base_topic, mic, self.info)
                self._send(messages.discovery_topic(c.discovery_prefix, c.base_topic, mic), _encode(payload),
                           retain=True)
        with self._state_lock:
            states = dict(self._last_state)
            events, self._first_events = self._first_events, []
        for mic, data in states.items():
            self._send(messages.state_topic(c.base_topic, mic), data, retain=True)
        self._send(self.availability_topic, messages.ONLINE.encode(), retain=True)
        for mic, data in events:
            self._send(messages.event_topic(c.base_topic, mic), data, retain=False)

    def _send(self, topic: str, data: bytes, retain: bool) -> None:
        client = self._client
        if client is None or not self._connected.is_set():
            self.metrics.dropped.labels(reason="disconnected").inc()
            return
        info = client.publish(topic, data, qos=1, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.metrics.dropped.labels(reason="broker_slow").inc()
        elif info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            with self._acks_lock:
                if self._unacked == 0:
                    self._waiting_since = time.monotonic()
                self._unacked += 1

    def _check_acknowledgements(self) -> None:
        """Warn once (and count) when, connected, no acknowledgement came for ACK_STALL_S while messages wait."""
        with self._acks_lock:
            stalled = (self._connected.is_set() and self._unacked > 0 and self._waiting_since is not None
                       and time.monotonic() - self._waiting_since > ACK_STALL_S)
            if not stalled or self._stalled:
                return
            self._stalled = True
            waiting = self._unacked
        self.metrics.ack_stalls.inc()
        log.warning("MQTT broker is connected but acknowledges nothing: messages are not being delivered",
                    extra={"host": self.config.host, "port": self.config.port, "waiting": waiting,
                           "seconds": ACK_STALL_S})

    # --- paho callbacks (paho's network thread) -------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._note_error(f"broker refused the connection: {reason_code}")
            return
        with self._acks_lock:  # a new session: what the old one waited for is resent or gone
            self._unacked, self._waiting_since, self._stalled = 0, None, False
        self._connected.set()
        self.metrics.connected.set(1)
        c = self.config
        if c.discovery:
            client.subscribe(f"{c.discovery_prefix}/status", qos=1)
            client.subscribe(f"{c.discovery_prefix}/device/+/config", qos=1)
        self._resync.set()
        log.info("MQTT connected", extra={"host": c.host, "port": c.port})

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self.metrics.connected.set(0)
        if was_connected and not self._stopping.is_set():
            self._note_error(f"connection lost: {reason_code}")

    def _on_connect_fail(self, client, userdata) -> None:
        self._note_error(f"cannot connect to {self.config.host}:{self.config.port}")

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.metrics.published.inc()
        with self._acks_lock:
            self._unacked = max(0, self._unacked - 1)
            self._waiting_since = time.monotonic() if self._unacked else None
            resumed, self._stalled = self._stalled, False
        if resumed:
            log.info("MQTT broker acknowledges messages again", extra={"host": self.config.host})

    def _on_message(self, client, userdata, message) -> None:
        c = self.config
        if message.topic == f"{c.discovery_prefix}/status":
            if message.payload == messages.ONLINE.encode():
                log.info("Home Assistant is online; republishing discovery")
                self._resync.set()
            return
        mic = messages.stale_mic(message.topic, message.payload, c.discovery_prefix, c.base_topic, set(self.mic_ids))
        if mic is not None:
            log.info("removing the discovery of a microphone that is no longer configured", extra={"mic": mic})
            client.publish(message.topic, b"", qos=1, retain=True)
            client.publish(messages.state_topic(c.base_topic, mic), b"", qos=1, retain=True)

    def _note_error(self, error: str) -> None:
        """Count a connection error; log it at most once per interval (with how many came since)."""
        self._broker_errors.note(error=error, host=self.config.host, port=self.config.port)
