"""Live check of the alert chain on this machine, no Docker: the real `roomtone run` daemon -> /metrics ->
Debian's real `prometheus` server with deploy/prometheus/rules -> alerts firing in its API.

Three microphones: "demo" (the bundled recording, looped: healthy), "silent" (digital silence, looped:
dead_channel -> faulty) and "short" (a 20 s recording, not looped: stops after 2 windows -> stalled).
Waits for RoomtoneMicrophoneFaulty{mic="silent"} and RoomtoneCaptureStalled{mic="short"}, checks nothing
fires for "demo", then stops the daemon and waits for RoomtoneDaemonDown. Takes about 2-3 minutes.
Without models/roomtone.pt it writes an untrained stand-in model (the health checks and alerts do not
depend on what the model learned).

    .venv/bin/python deploy/prometheus/live_check.py [--model M] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules"


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stand_in_model(path: Path) -> Path:
    """An untrained model file (random encoder, no head) for exercising the pipeline and alerts."""
    from encoder.features import LogMelConfig
    from encoder.model import Encoder, EncoderConfig
    from encoder.model_file import ModelBundle, save_model

    config = EncoderConfig()
    save_model(ModelBundle(Encoder(config).eval(), LogMelConfig(), config, None, {"note": "untrained stand-in"}), path)
    return path


def test_audio(folder: Path) -> tuple[Path, Path]:
    """A 30 s silent FLAC and a 20 s FLAC: the demo recording twice."""
    import numpy as np
    import soundfile as sf

    from encoder.audio import load_audio
    from service.config import DEMO_CLIP

    silent = folder / "silent.flac"
    sf.write(silent, np.zeros(16000 * 30, dtype=np.float32), 16000)
    demo, rate = load_audio(DEMO_CLIP, sample_rate=16000, mono=True)
    short = folder / "short.flac"
    sf.write(short, np.tile(demo[0].numpy(), 2), rate)
    return silent, short


def firing(prometheus: str) -> set[tuple[str, str]]:
    """(alertname, mic) of every firing alert."""
    with urllib.request.urlopen(f"{prometheus}/api/v1/alerts", timeout=5) as response:
        alerts = json.load(response)["data"]["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("mic", "")) for a in alerts if a["state"] == "firing"}


def wait_for(prometheus: str, wanted: set[tuple[str, str]], timeout_s: float, started: float) -> set:
    """Poll until every wanted alert fires; returns the firing set (raises on timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = firing(prometheus)
        if wanted <= now:
            for alert in sorted(wanted):
                print(f"  {time.monotonic() - started:6.1f} s  firing: {alert[0]} {alert[1]}")
            return now
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {sorted(wanted - now)}; firing: {sorted(now)}")
        time.sleep(2)


def main() -> int:
    """Run the check; exit code 0 when every expected alert fired."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model file (default: models/roomtone.pt, else an untrained stand-in)")
    parser.add_argument("--keep", help="work in this folder and keep it (logs, store, Prometheus data)")
    args = parser.parse_args()
    prometheus_bin = shutil.which("prometheus")
    if not prometheus_bin:
        print("live_check: Debian's prometheus package is not installed", file=sys.stderr)
        return 2
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="roomtone-live-"))
    work.mkdir(parents=True, exist_ok=True)
    model = Path(args.model) if args.model else REPO / "models" / "roomtone.pt"
    if not model.is_file():
        model = stand_in_model(work / "stand-in.pt")
        print(f"live_check: no trained model, using an untrained stand-in {model}")
    silent, short = test_audio(work)
    metrics_port, short_port, web_port = free_port(), free_port(), free_port()
    (work / "rules").mkdir(exist_ok=True)
    for rules in RULES.glob("*.yml"):
        shutil.copy(rules, work / "rules" / rules.name)
    (work / "prometheus.yml").write_text(
        "global: {scrape_interval: 10s, evaluation_interval: 10s}\n"
        "rule_files: [rules/*.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: roomtone\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{metrics_port}', '127.0.0.1:{short_port}']}}]\n"
    )
    roomtone = str(Path(sys.executable).parent / "roomtone")
    daemon_cmd = [roomtone, "run", "--model", str(model), "--data-dir", str(work / "data"), "--no-grpc",
                  "--metrics-port", str(metrics_port), "--demo", "--file", f"silent={silent}", "--loop",
                  "--log-format", "text"]
    # "short" runs in a second daemon (kept alive by its own demo microphone) because --loop applies to
    # every --file of one process.
    short_cmd = [roomtone, "run", "--model", str(model), "--data-dir", str(work / "data-short"), "--no-grpc",
                 "--metrics-port", str(short_port), "--file", f"short={short}", "--demo", "--log-format", "text"]
    prometheus_cmd = [prometheus_bin, f"--config.file={work / 'prometheus.yml'}",
                      f"--storage.tsdb.path={work / 'tsdb'}", f"--web.listen-address=127.0.0.1:{web_port}"]
    url = f"http://127.0.0.1:{web_port}"
    started = time.monotonic()
    with open(work / "daemon.log", "w") as daemon_log, open(work / "prometheus.log", "w") as prom_log:
        daemon = subprocess.Popen(daemon_cmd, stdout=daemon_log, stderr=subprocess.STDOUT)
        short_daemon = subprocess.Popen(short_cmd, stdout=daemon_log, stderr=subprocess.STDOUT)
        prometheus = subprocess.Popen(prometheus_cmd, stdout=prom_log, stderr=subprocess.STDOUT)
        try:
            for _ in range(60):
                try:
                    firing(url)
                    break
                except OSError:
                    time.sleep(1)
            print(f"live_check: daemon metrics :{metrics_port}/:{short_port}, Prometheus {url}, work dir {work}")
            now = wait_for(url, {("RoomtoneMicrophoneFaulty", "silent"), ("RoomtoneCaptureStalled", "short")},
                           240, started)
            bad = sorted(alert for alert in now if alert[1] == "demo")
            if bad:
                raise SystemExit(f"alerts fired for the healthy demo microphone: {bad}")
            print("  firing for the healthy 'demo' microphone: none")
            daemon.send_signal(signal.SIGTERM)
            print(f"live_check: SIGTERM to the daemon -> exit code {daemon.wait(60)}")
            wait_for(url, {("RoomtoneDaemonDown", "")}, 120, started)
        finally:
            for process in (daemon, short_daemon, prometheus):
                if process.poll() is None:
                    process.terminate()
                    process.wait(30)
    print(f"live_check: OK in {time.monotonic() - started:.0f} s" + (f" (logs in {work})" if args.keep else ""))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
