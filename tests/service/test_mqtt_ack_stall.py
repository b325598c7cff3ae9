"""A broker that accepts the connection and then acknowledges nothing (issue 26, DEGRADED): the publisher
used to count nothing and log nothing, while every message waited forever. Now a stall of more than
`ACK_STALL_S` while connected is logged once and counted in ``roomtone_mqtt_ack_stalls_total``."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from prometheus_client import CollectorRegistry

import service.announce.mqtt_publisher
from service.announce import mqtt_messages as m
from service.config import MqttConfig
from service.announce.mqtt_publisher import MqttPublisher


class SilentBroker:
    """Accepts MQTT connections (CONNACK, PINGRESP) and never acknowledges a PUBLISH."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.publishes = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    @staticmethod
    def _read(connection: socket.socket, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = connection.recv(n - len(data))
            if not chunk:
                raise ConnectionError
            data += chunk
        return data

    def _serve(self, connection: socket.socket) -> None:
        try:
            while True:
                kind = self._read(connection, 1)[0] >> 4
                length, shift = 0, 0
                while True:
                    byte = self._read(connection, 1)[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                self._read(connection, length)
                if kind == 1:  # CONNECT
                    connection.sendall(b"\x20\x02\x00\x00")
                elif kind == 12:  # PINGREQ
                    connection.sendall(b"\xd0\x00")
                elif kind == 3:  # PUBLISH: never acknowledged
                    self.publishes += 1
        except (ConnectionError, OSError):
            connection.close()

    def close(self) -> None:
        self.server.close()


def test_a_connected_broker_that_stops_acknowledging_is_logged_once_and_counted(monkeypatch, caplog):
    monkeypatch.setattr(service.announce.mqtt_publisher, "ACK_STALL_S", 1.0)
    broker = SilentBroker()
    registry = CollectorRegistry()
    publisher = MqttPublisher(MqttConfig(host="127.0.0.1", port=broker.port, discovery=False, client_id="stall-test"),
                              ["kitchen"], m.DeviceInfo(version="0", activities=("cooking",)), registry)
    caplog.set_level(logging.INFO, logger="roomtone.mqtt")
    publisher.start()
    try:
        deadline = time.monotonic() + 30
        while not publisher.is_connected:
            assert time.monotonic() < deadline, "never connected to the silent broker"
            time.sleep(0.05)
        for i in range(5):
            publisher.publish_event("kitchen", {"n": i})
        deadline = time.monotonic() + 30
        while registry.get_sample_value("roomtone_mqtt_ack_stalls_total") != 1.0:
            assert time.monotonic() < deadline, "the stall was not counted"
            time.sleep(0.1)
        time.sleep(2.5)  # still stalled: not counted or logged again
        assert registry.get_sample_value("roomtone_mqtt_ack_stalls_total") == 1.0
        warnings = [r for r in caplog.records if "acknowledges nothing" in r.getMessage()]
        assert len(warnings) == 1 and warnings[0].waiting >= 1 and publisher.is_connected
        assert broker.publishes >= 1
    finally:
        publisher.stop(timeout=2)
        broker.close()
