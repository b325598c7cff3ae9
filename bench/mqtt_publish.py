"""What MQTT costs the pipeline's store stage: time per stored batch spent in `Announcer.after_store`
(session tracking + building the state payload + queueing it) with a real mosquitto up, with no broker at
all, and with a publisher queue that is always full, plus how many messages reached a subscriber.

    .venv/bin/python -m bench.mqtt_publish             # 2000 one-window batches per case
    .venv/bin/python -m bench.mqtt_publish --batches 500

Needs Debian's mosquitto (tests/service/mosquitto_broker.py starts it on a free loopback port). Sessions
are written to a throw-away SQLite store, as in the daemon. Takes under a minute.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.service.mosquitto_broker import Broker, Recorder, free_port
from service.announce.announcer import Announcer
from service.config import MqttConfig, SessionConfig
from service.store.event_store import EventStore
from service.announce.mqtt_messages import DeviceInfo
from service.announce.mqtt_publisher import MqttPublisher
from service.records import WindowResult
from service.analysis.sessions import SessionTracker

REPO = Path(__file__).resolve().parents[1]

CHECKS = {name: False for name in ("clipping", "dc_offset", "dead_channel", "drift", "dropout", "hum", "stuck")}
CLASSES = ("speech", "water", "typing", "footsteps_doors", "animals", "motor_machine", "tv_speech_music", "quiet_ambience")


def windows(count: int) -> list[WindowResult]:
    """Realistic window records: 8 class probabilities, 13 health scores, labels in runs of 6."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        label = CLASSES[(i // 6) % len(CLASSES)]
        p = rng.dirichlet(np.ones(len(CLASSES)))
        out.append(WindowResult("kitchen", i * 10_000, (i + 1) * 10_000, label, dict(zip(CLASSES, p.tolist())), "ok",
                                (), {f"score{k}": float(k) for k in range(13)}, -31.0))
    return out


def run_case(name: str, config: MqttConfig | None, batches: list[WindowResult], recorder: Recorder | None,
             directory: Path) -> dict:
    """Per-batch `after_store` time for one case, and what arrived."""
    publisher = MqttPublisher(config, ["kitchen"], DeviceInfo("bench", CLASSES)) if config else None
    with EventStore(directory / f"{name}.db") as store:
        announcer = Announcer(store, lambda item: None, SessionTracker(SessionConfig()), publisher)
        announcer.start()
        time.sleep(1.0)  # connected (or given up once) before timing
        times = []
        for window in batches:
            t0 = time.perf_counter()
            announcer.after_store([(window, CHECKS)], [])
            times.append(time.perf_counter() - t0)
        time.sleep(1.0)
        announcer.stop()
    arrived = len(recorder.on("roomtone/kitchen/state")) if recorder is not None else 0
    dropped = {r: publisher.metrics.dropped.labels(reason=r)._value.get() for r in ("queue_full", "disconnected", "broker_slow")} if publisher else {}
    us = np.array(times) * 1e6
    return {"case": name, "median_us": round(float(np.median(us)), 1), "p99_us": round(float(np.percentile(us, 99)), 1),
            "max_us": round(float(us.max()), 1), "states_arrived": arrived, "dropped": dropped}


def main(argv: list[str] | None = None) -> int:
    """Print one Markdown row per case."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=2000)
    args = parser.parse_args(argv)
    batches = windows(args.batches)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        broker = Broker(directory / "broker").start()
        recorder = Recorder(broker, topics=("roomtone/kitchen/state",))
        fast = {"reconnect_min_s": 0.2, "reconnect_max_s": 1.0}
        cases = [
            ("sessions only, MQTT off", None, None),
            ("broker up", MqttConfig(host="127.0.0.1", port=broker.port, client_id="bench-up", **fast), recorder),
            ("no broker", MqttConfig(host="127.0.0.1", port=free_port(), client_id="bench-down", **fast), None),
            ("queue of 1 (always full)", MqttConfig(host="127.0.0.1", port=free_port(), client_id="bench-full",
                                                     queue_size=1, **fast), None),
        ]
        print("| case | median µs / batch | p99 µs | max µs | states that reached a subscriber | dropped |")
        print("|---|---|---|---|---|---|")
        for name, config, rec in cases:
            r = run_case(name.split(",")[0].replace(" ", "_"), config, batches, rec, directory)
            print(f"| {name} | {r['median_us']} | {r['p99_us']} | {r['max_us']} | {r['states_arrived'] if rec else '-'} | "
                  f"{', '.join(f'{k} {int(v)}' for k, v in r['dropped'].items() if v) or '-'} |")
        recorder.close()
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
