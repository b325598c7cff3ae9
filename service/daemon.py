"""The roomtone daemon's lifecycle: load the model, open the store, start the event bus, gRPC API, /metrics,
sources and pipeline, enforce retention in the background; on stop: stop capture, finish in-flight windows,
flush and close the store. Logs are one JSON object per line and say which device, model and store are used.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from encoder.file_digest import file_sha256
from service.config import DaemonConfig, config_to_dict
from service.drift_baselines import drift_path, load_drift_baselines, save_drift_baselines

log = logging.getLogger("roomtone.daemon")

#: Capture states in which a microphone delivers no audio (service.records.MIC_STATES).
CAPTURE_LOST_STATES = ("reopening", "failed")

#: Attributes every LogRecord has; anything else came from ``extra=`` and is logged as a field.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and every ``extra`` field."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Human-readable lines with the ``extra`` fields appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one text line."""
        extras = " ".join(f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_"))
        line = f"{time.strftime('%H:%M:%S')} {record.levelname:<7} {record.name}: {record.getMessage()}"
        line = f"{line} {extras}" if extras else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Send roomtone's logs to stderr as JSON (or text) lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("roomtone")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


class Daemon:
    """One running roomtone: `start()`, then `wait()` until a stop request, then `stop()` (or `run()`)."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.store = None
        self.bus = None
        self.metrics = None
        self.pipeline = None
        self.grpc_server = None
        self.grpc_port: int | None = None
        self.grpc_address: str | None = None
        self.metrics_port: int | None = None
        self.analyzer = None
        self._latest: dict = {}  # mic id -> last stored WindowResult
        self._stop_requested = threading.Event()
        self._stop_reason = ""
        self._retention_thread: threading.Thread | None = None
        self._stopped = False

    # --- what the pipeline's store stage does -------------------------------------------------------

    def _store_and_publish(self, analysed, changes) -> None:
        windows, stored_changes = self.store.add_results([a.result for a in analysed], changes)
        for window in windows:
            self._latest[window.mic_id] = window
            self.bus.publish(window)
        for change in stored_changes:
            log.info("state changed", extra={"mic": change.mic_id, "kind": change.kind, "previous": change.previous,
                                             "current": change.current, "reasons": list(change.reasons)})
            self.bus.publish(change)

    def _on_stored(self, total: int) -> None:
        limit = self.config.pipeline.max_windows
        if limit is not None and total >= limit:
            self.request_stop(f"pipeline.max_windows={limit} reached")

    def mic_status(self) -> list:
        """MicStatus of every configured microphone (capture state + last stored window)."""
        from service.records import MicStatus

        out = []
        for mic_id, source in (self.pipeline.sources.items() if self.pipeline else []):
            last = self._latest.get(mic_id)
            state = source.state
            lost = state in CAPTURE_LOST_STATES  # no audio arrives: the mic is faulty whatever its last window said
            out.append(MicStatus(
                mic_id=mic_id, device=source.description, state=state,
                last_window_end_unix_ms=last.end_unix_ms if last else None,
                health_state="faulty" if lost else (last.health_state if last else None),
                health_reasons=(f"no_input: capture is {state} (device lost or stalled)",) if lost
                else (tuple(last.health_reasons) if last else ()),
                health_scores=dict(last.health_scores) if last else {},
                label=last.label if last else None,
            ))
        return out

    # --- lifecycle ----------------------------------------------------------------------------------

    @property
    def drift_path(self) -> Path:
        """Where microphones' drift baselines are kept between runs (next to the store)."""
        return drift_path(self.config.store_path)

    def start(self) -> None:
        """Bring every part up; on failure, whatever was started is stopped again and the error raised."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        from encoder.model_file import load_model
        from encoder.embedder import resolve_device
        from service.analysis import Analyzer
        from service.daemon_backend import DaemonBackend
        from service.event_store import EventStore
        from service.grpc_server import event_bus_for
        from service.metrics import Metrics
        from service.pipeline import Pipeline
        from service.sources import open_source

        config = self.config
        log.info("starting roomtone", extra={"config": config_to_dict(config), "pid": os.getpid()})
        from encoder.allocator import reuse_freed_memory

        reuse_freed_memory()  # window-sized buffers are reused instead of page-faulted in anew (docs/performance.md)
        device = resolve_device(config.pipeline.device)
        bundle = load_model(config.model, device=device)
        sha = file_sha256(config.model)
        log.info("model loaded", extra={"model": str(config.model), "model_sha256": sha, "device": str(device),
                                        "embedding_dim": bundle.embedding_dim, "classes": bundle.class_names,
                                        "has_head": bundle.head is not None})
        if bundle.head is None:
            log.warning("the model has no activity head: windows get an embedding and health only "
                        "(add one with `roomtone train-head`)", extra={"model": str(config.model)})
        self.analyzer = Analyzer(bundle, config.health, window_s=config.pipeline.window_s)
        self.analyzer.restore_drift(load_drift_baselines(self.drift_path))
        store_path = config.store_path
        store_path.parent.mkdir(parents=True, exist_ok=True)
        self.store = EventStore(store_path, config.store, config.similarity)
        log.info("store opened", extra={"store": str(store_path.resolve())})
        self.bus = event_bus_for(config.grpc)
        self.metrics = Metrics()
        self.metrics.set_model(sha, bundle.embedding_dim, bundle.class_names)
        sources = [open_source(mic) for mic in config.mics]
        for source in sources:
            log.info("microphone", extra={"mic": source.mic_id, "device": source.description,
                                          "sample_rate": source.sample_rate, "channels": source.channels,
                                          "realtime": source.realtime})
        self.pipeline = Pipeline(sources, self.analyzer, self._store_and_publish, self.metrics, config.pipeline)
        self.pipeline.on_stored = self._on_stored
        if config.metrics.enabled:
            m = config.metrics
            self.metrics_port = self.metrics.serve(m)
            scheme = "https" if m.tls_cert else "http"
            log.info("metrics listening", extra={"url": f"{scheme}://{m.address}:{self.metrics_port}/metrics",
                                                 "client_certificates": m.client_ca is not None})
        if config.grpc.enabled:
            self._start_grpc(DaemonBackend(self.analyzer, self.mic_status))
        self.pipeline.start()
        self._retention_thread = threading.Thread(target=self._retention_loop, name="retention", daemon=True)
        self._retention_thread.start()
        if config.similarity.warm_at_start:
            threading.Thread(target=self._warm_similarity, name="similarity-warm-up", daemon=True).start()
        log.info("roomtone running", extra={"mics": [s.mic_id for s in sources], "store": str(store_path),
                                            "grpc": self.grpc_address, "metrics_port": self.metrics_port})

    def _start_grpc(self, backend) -> None:
        from service.grpc_server import ServerSecurity, start_server

        g = self.config.grpc
        security = None
        if g.tls_cert:
            security = ServerSecurity(
                cert_chain=Path(g.tls_cert).read_bytes(), private_key=Path(g.tls_key).read_bytes(),
                client_ca=Path(g.client_ca).read_bytes() if g.client_ca else None,
                token=Path(g.token_file).read_text().strip() if g.token_file else None)
        self.grpc_server = start_server(self.store, self.bus, backend, g, security=security)
        self.grpc_address = self.grpc_server.roomtone_address
        self.grpc_port = int(self.grpc_address.rpartition(":")[2])
        log.info("gRPC listening", extra={"address": self.grpc_address, "tls": security is not None,
                                          "bearer_token": bool(security and security.token),
                                          "client_certificates": bool(security and security.client_ca)})

    def _warm_similarity(self) -> None:
        """Build FindSimilar's index from the stored windows in the background (at 10^6 windows the load
        and the IVF training take ~16 s, longer than a client's deadline if the first query paid for it)."""
        from service.event_store import StoreError

        started = time.monotonic()
        try:
            indexes = self.store.warm_similarity()
        except StoreError:  # closed by a stop during the warm-up
            return
        except Exception:
            log.exception("similarity index warm-up failed; FindSimilar will build it on its first call")
            return
        log.info("similarity index ready", extra={
            "seconds": round(time.monotonic() - started, 2),
            "indexes": {str(dim): {"kind": i.kind, "rows": i.rows} for dim, i in indexes.items()}})

    def _retention_loop(self) -> None:
        interval = self.config.store.retention_interval_s
        while not self._stop_requested.wait(interval):
            try:
                report = self.store.enforce_retention()
                if report.windows_deleted or report.events_deleted:
                    log.info("retention", extra={"windows_deleted": report.windows_deleted,
                                                 "events_deleted": report.events_deleted,
                                                 "bytes_in_use": report.bytes_in_use})
            except Exception:
                self.metrics.store_errors.inc()
                log.exception("retention pass failed")

    def request_stop(self, reason: str) -> None:
        """Ask `wait()` to return (signal handlers, max_windows); safe from any thread."""
        if not self._stop_requested.is_set():
            self._stop_reason = reason
            self._stop_requested.set()

    def wait(self) -> str:
        """Block until a stop is requested or every (finite) source has been processed; returns why."""
        while not self._stop_requested.wait(0.2):
            if self.pipeline is not None and self.pipeline.drained.is_set():
                self.request_stop("all sources ended")
        return self._stop_reason

    def stop(self) -> None:
        """Stop capture, finish in-flight windows, stop the API, flush and close the store (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_requested.set()
        drained = True
        if self.pipeline is not None and self.pipeline._threads:
            drained = self.pipeline.stop()
            self.pipeline.sync_source_counters()
        if self.grpc_server is not None:
            from service.grpc_server import stop_server

            stop_server(self.grpc_server, grace_s=2.0)
        if self.bus is not None:
            self.bus.close()
        if self.analyzer is not None and self.store is not None:
            save_drift_baselines(self.drift_path, self.analyzer.drift_state())
        if self.store is not None:
            self.store.close()
        if self.metrics is not None:
            self.metrics.close()
        stats = self.pipeline.stats if self.pipeline is not None else None
        log.info("roomtone stopped", extra={"reason": self._stop_reason, "drained": drained,
                                            "windows_stored": stats.windows_stored if stats else 0,
                                            "windows_dropped": stats.dropped if stats else 0})

    def run(self) -> int:
        """start, wait, stop; returns the process exit code (0 on a clean stop)."""
        self.start()
        try:
            self.wait()
        finally:
            self.stop()
        return 0
