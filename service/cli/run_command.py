"""Run the roomtone daemon: capture -> 10 s windows -> log-Mel -> embedding -> activity + health -> SQLite
store -> gRPC API and Prometheus /metrics.

With no arguments it uses the bundled model (models/roomtone.pt), stores windows and events in
<data dir>/roomtone.db (data dir: $ROOMTONE_DATA_DIR, else ./var), listens for gRPC on 127.0.0.1:50051 and
serves /metrics on 127.0.0.1:9464 and the web page on http://127.0.0.1:9480/, and records from the default input device, or, when the machine has
none, from the bundled demo recording looped at real time (a log line says so).

Settings come from, in increasing priority: built-in defaults, the TOML file given with --config, ROOMTONE_*
environment variables (ROOMTONE_DATA_DIR, ROOMTONE_MODEL, ROOMTONE_SECTION__KEY e.g.
ROOMTONE_METRICS__PORT=9500), and the options below. docs/daemon.md is the full reference.
--device/--file/--demo replace the configured microphones (several --file give several microphones).
SIGTERM, Ctrl-C (SIGINT) or SIGHUP stops capture, finishes the windows in flight, flushes the store and exits
0; a second signal exits at once with code 1 (no drain; stored windows are safe). There is no live reload:
restart to apply a changed config.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any


#: Signals that stop the daemon gracefully. SIGHUP (the terminal went away, or a user expecting a reload) stops
#: it too: there is no live reload; restart to apply a changed config (systemd: `systemctl restart roomtone`).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
#: Exit code after a second stop signal (no drain).
EXIT_SECOND_SIGNAL = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `roomtone run`; the defaults they name are read from the config schema."""
    from service.config import ClipsConfig, DaemonConfig, GrpcConfig, MetricsConfig, PipelineConfig, WebConfig

    parser.add_argument("--config", metavar="FILE.toml", help="TOML config file (see docs/daemon.md)")
    parser.add_argument("--model", help="model file (default: the bundled models/roomtone.pt)")
    parser.add_argument("--data-dir", help="directory for the store (default: $ROOMTONE_DATA_DIR or ./var)")
    parser.add_argument("--store", help="SQLite store file (default: <data dir>/roomtone.db)")
    source = parser.add_argument_group("microphones (each replaces the configured ones)")
    source.add_argument("--device", action="append", metavar="NAME|INDEX",
                        help="capture from this input device (name substring or index); repeat for more mics")
    source.add_argument("--file", action="append", metavar="[ID=]PATH",
                        help="read this WAV/FLAC file as a microphone; repeat for more mics")
    source.add_argument("--demo", action="store_true", help="use the bundled demo recording, looped")
    source.add_argument("--fast", action="store_true",
                        help="read --file sources as fast as the pipeline takes them instead of at real time")
    source.add_argument("--loop", action="store_true", help="loop --file sources")
    source.add_argument("--channels", type=int, help="input channels per --device microphone")
    parser.add_argument("--list-devices", action="store_true", help="print the audio input devices and exit")
    pipeline, grpc_config, metrics, daemon = PipelineConfig(), GrpcConfig(), MetricsConfig(), DaemonConfig.model_fields
    web, clips = WebConfig(), ClipsConfig()
    parser.add_argument("--window-s", type=float, help=f"window length in seconds (default {pipeline.window_s:g})")
    parser.add_argument("--hop-s", type=float, help=f"hop between windows in seconds (default {pipeline.hop_s:g})")
    parser.add_argument("--compute-device",
                        help=f"torch device for the model: auto, cpu, cuda, cuda:N (default {pipeline.device})")
    parser.add_argument("--backend", choices=("auto", "onnx", "torch"),
                        help="what runs the model: onnx (ONNX Runtime, no torch), torch, or auto = onnx unless the "
                             f"device is CUDA (default {pipeline.backend})")
    parser.add_argument("--grpc-address", help=f"gRPC listen address host:port (default {grpc_config.address})")
    parser.add_argument("--no-grpc", action="store_true", help="do not start the gRPC API")
    parser.add_argument("--metrics-address", help=f"/metrics listen address (default {metrics.address})")
    parser.add_argument("--metrics-port", type=int, help=f"/metrics port, 0 = any free port (default {metrics.port})")
    parser.add_argument("--no-metrics", action="store_true", help="do not serve /metrics")
    parser.add_argument("--web-address", help=f"web page listen address (default {web.address}; beyond loopback needs "
                                              "[web] TLS and a token or client certificates, see docs/web.md)")
    parser.add_argument("--web-port", type=int, help=f"web page port, 0 = any free port (default {web.port})")
    parser.add_argument("--no-web", action="store_true", help="do not serve the web page")
    parser.add_argument("--keep-clips", choices=("none", "events", "all"),
                        help=f"keep windows' audio as clips (default {clips.keep}; clips record people at home, see "
                             "docs/web.md)")
    parser.add_argument("--max-windows", type=int, help="stop after storing this many windows (demos, tests)")
    parser.add_argument("--log-level", help=f"DEBUG, INFO, WARNING or ERROR (default {daemon['log_level'].default})")
    parser.add_argument("--log-format", choices=("auto", "json", "text"),
                        help=f"log line format (default {daemon['log_format'].default}: text on a terminal, JSON otherwise)")


def _mics(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """Microphone tables from --device/--file/--demo, or None to keep the configured ones."""
    mics: list[dict[str, Any]] = []
    for i, device in enumerate(args.device or []):
        mic: dict[str, Any] = {"id": f"mic{i}", "kind": "device", "device": int(device) if device.isdigit() else device}
        if args.channels:
            mic["channels"] = args.channels
        mics.append(mic)
    for i, spec in enumerate(args.file or []):
        mic_id, sep, path = spec.partition("=")
        if not sep:
            mic_id, path = f"file{i}", spec
        mics.append({"id": mic_id, "kind": "file", "path": path, "realtime": not args.fast, "loop": args.loop})
    if args.demo:
        mics.append({"id": "demo", "kind": "demo"})
    return mics or None


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The plain config overrides the command-line options ask for."""
    out: dict[str, Any] = {}

    def put(section: str | None, key: str, value: Any) -> None:
        """Set ``section.key`` (top level when section is None) unless the option was not given."""
        if value is not None:
            (out.setdefault(section, {}) if section else out)[key] = value

    put(None, "model", args.model)
    put(None, "data_dir", args.data_dir)
    put(None, "log_level", args.log_level)
    put(None, "log_format", args.log_format)
    put("store", "path", args.store)
    put("pipeline", "window_s", args.window_s)
    put("pipeline", "hop_s", args.hop_s)
    put("pipeline", "device", args.compute_device)
    put("pipeline", "backend", args.backend)
    put("pipeline", "max_windows", args.max_windows)
    put("grpc", "address", args.grpc_address)
    put("grpc", "enabled", False if args.no_grpc else None)
    put("metrics", "address", args.metrics_address)
    put("metrics", "port", args.metrics_port)
    put("metrics", "enabled", False if args.no_metrics else None)
    put("web", "address", args.web_address)
    put("web", "port", args.web_port)
    put("web", "enabled", False if args.no_web else None)
    put("clips", "keep", args.keep_clips)
    mics = _mics(args)
    if mics is not None:
        out["mics"] = mics
    return out


def run(args: argparse.Namespace) -> int:
    """Start the daemon and run it until SIGTERM/SIGINT, max_windows, or the end of every file source."""
    from service.config import ConfigError, load_config

    if args.list_devices:
        from service.capture.sources import input_devices

        devices = input_devices()
        for device in devices:
            print(f"{device['index']}: {device['name']} ({device['max_input_channels']} ch, "
                  f"{device['default_samplerate']:.0f} Hz)")
        if not devices:
            print("no audio input devices (roomtone run would use the bundled demo recording)")
        return 0
    try:
        config = load_config(args.config, overrides_from_args(args))
    except ConfigError as exc:
        print(f"roomtone run: config error: {exc}", file=sys.stderr)
        return 2

    from encoder.embedder import DeviceError
    from encoder.model_file import ModelFileError
    from encoder.onnx_graph import GraphError
    from service.daemon import Daemon
    from service.logs import configure_logging
    from service.capture.sources import SourceError
    from service.store.store_guard import StoreInUse

    configure_logging(config.log_level, config.log_format)
    daemon = Daemon(config)
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        """First SIGTERM/SIGINT/SIGHUP: drain and stop; a second one: leave at once."""
        name = signal.Signals(signum).name
        if received:  # a second signal: the user really wants out now
            # os._exit, not sys.exit: unwinding the interpreter under gRPC's running C++ threads aborted
            # (exit -6, "terminate called without an active exception"). Every acknowledged window is
            # already committed (synchronous=FULL), so skipping the drain loses only windows in flight.
            print(f"roomtone run: second signal ({name}), exiting at once without draining", file=sys.stderr,
                  flush=True)
            os._exit(EXIT_SECOND_SIGNAL)
        received.append(signum)
        daemon.request_stop(name)

    for stop_signal in STOP_SIGNALS:
        signal.signal(stop_signal, on_signal)
    try:
        return daemon.run()  # only start raises: waiting and stopping log their trouble and carry on
    except StoreInUse as exc:  # another daemon runs on this store: restarting cannot help (systemd: no restart)
        print(f"roomtone run: cannot start: {exc}", file=sys.stderr)
        return 2
    except (DeviceError, GraphError, ModelFileError, SourceError, OSError, RuntimeError) as exc:
        print(f"roomtone run: cannot start: {exc}", file=sys.stderr)
        return 1
