"""The daemon's Prometheus metrics (names are a contract: docs/daemon.md and the README list them) and the
/metrics HTTP listener. Labels stay low-cardinality: microphone id, activity, check, stage, state."""

from __future__ import annotations

import logging
from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.metrics import grpc_metrics
from service.config import MetricsConfig
from service.metrics.http_server import serve_metrics
from service.analysis.activity import LABEL_KINDS, RESERVED_LABELS, label_kind
from service.records import WindowResult
from service.daemon_vocabulary import HEALTH_STATES

log = logging.getLogger("roomtone.metrics")

DROP_STAGES = ("capture", "analysis", "store")  # the queue a window was dropped in front of
HEALTH_VALUE = {state: float(i) for i, state in enumerate(HEALTH_STATES)}  # ok 0, degraded 1, faulty 2
#: Head classes exported as their own `activity` label per microphone; a head with more (issue 15: 5,000 classes
#: made 5,000 series per microphone) has the rest summed into OTHER_ACTIVITY.
MAX_ACTIVITY_SERIES = 32
OTHER_ACTIVITY = "_other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every roomtone metric in its own registry (so tests and several daemons in one process never clash)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.windows = Counter("roomtone_windows_total", "Windows fully processed and stored.", ["mic"], registry=r)
        self.dropped = Counter("roomtone_windows_dropped_total",
                               "Windows (or capture blocks, stage=capture) dropped by back-pressure, by the queue "
                               "they were dropped in front of.", ["mic", "stage"], registry=r)
        self.overruns = Counter("roomtone_capture_overruns_total", "PortAudio input overflows.", ["mic"], registry=r)
        self.capture_errors = Counter("roomtone_capture_errors_total",
                                      "Source failures: device lost, stalled, reopen attempts.", ["mic"], registry=r)
        self.health_state = Gauge("roomtone_mic_health_state", "Microphone health: 0 ok, 1 degraded, 2 faulty.",
                                  ["mic"], registry=r)
        self.check_score = Gauge("roomtone_mic_check_score",
                                 "Score of one health check on the last window (units: encoder/signal_checks.py).",
                                 ["mic", "check"], registry=r)
        self.check_failing = Gauge("roomtone_mic_check_failing", "1 when the check failed on the last window.",
                                   ["mic", "check"], registry=r)
        self.activity = Gauge("roomtone_activity_probability",
                              "Class probability of the last window (0 when it was quiet or the mic faulty); "
                              "activity=quiet/unknown: 1 when that was the decision, else 0.",
                              ["mic", "activity"], registry=r)
        self.label_kind = Gauge("roomtone_activity_label_kind",
                                "1 for why the last window has its label: class, quiet, unknown, mic_faulty "
                                "(no activity: the mic is faulty), no_head; 0 for the others.",
                                ["mic", "kind"], registry=r)
        self.sound_detections = Counter("roomtone_sound_detections_total",
                                        "Windows in which a custom sound was detected (at most 64 sounds).",
                                        ["mic", "sound"], registry=r)
        self.rms = Gauge("roomtone_rms_dbfs", "RMS level of the last window in dBFS.", ["mic"], registry=r)
        self.quiet_threshold = Gauge("roomtone_quiet_threshold_dbfs",
                                     "Level below which the microphone's windows are quiet, dBFS: learnt from its noise "
                                     "floor, or activity.quiet_below_dbfs until then.", ["mic"], registry=r)
        self.last_window = Gauge("roomtone_last_window_timestamp_seconds",
                                 "Unix time of the end of the last processed window.", ["mic"], registry=r)
        self.stage_latency = Histogram("roomtone_stage_latency_seconds",
                                       "Time spent per pipeline stage per batch (capture: window end until "
                                       "analysis starts).", ["stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.window_to_event = Histogram("roomtone_window_to_event_seconds",
                                         "Window end (wall clock) until its record is stored and published.",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.store_errors = Counter("roomtone_store_errors_total", "Failed writes to the event store.", registry=r)
        self.store_write_failing = Gauge("roomtone_store_write_failing",
                                         "1 while writes to the event store keep failing (STORE_FAILING_AFTER batches in "
                                         "a row, e.g. a full disk): windows are not stored and gRPC health is "
                                         "NOT_SERVING; 0 again after the next stored batch.", registry=r)
        self.clips_dropped = Counter("roomtone_clips_dropped_total",
                                     "Clips not kept: queue_full (the writer fell behind), low_disk (free space "
                                     "below clips.min_free_mb, kept for the store), error (the write failed).",
                                     ["reason"], registry=r)
        self.capture_gaps = Counter("roomtone_capture_gaps_total",
                                    "Jumps of more than 1 s in capture time between two blocks (the process was "
                                    "stopped, or the device stalled): audio lost, the window restarts.",
                                    ["mic"], registry=r)
        self.capture_gap_seconds = Counter("roomtone_capture_gap_seconds_total",
                                           "Capture time lost in those jumps, seconds.", ["mic"], registry=r)
        self.store_corrupt = Gauge("roomtone_store_corrupt",
                                   "1 when the last integrity check of the store (SQLite quick_check, at start and "
                                   "every store.check_interval_s) found damage; the log says what to do.", registry=r)
        self.analysis_errors = Counter("roomtone_analysis_errors_total",
                                       "Windows whose analysis failed, so they were not stored (each is retried "
                                       "alone after its batch failed, so other microphones are unaffected).",
                                       ["mic"], registry=r)
        # The gRPC API counts its requests itself (service/metrics/grpc_metrics.py); serve them from here too.
        for collector in (grpc_metrics.GRPC_REQUESTS, grpc_metrics.STREAM_ITEMS_DROPPED):
            r.register(collector)
        self.model_info = Gauge("roomtone_model_info", "The loaded model (value 1).",
                                ["model_sha256", "embedding_dim", "classes"], registry=r)
        self._server = None
        self._exported_classes: frozenset[str] | None = None  # set_model: the classes with their own series

    def register_mic(self, mic_id: str) -> None:
        """Create a microphone's counters at 0 so dashboards and rate() see them before the first event."""
        self.windows.labels(mic=mic_id)
        self.overruns.labels(mic=mic_id)
        self.capture_errors.labels(mic=mic_id)
        self.analysis_errors.labels(mic=mic_id)
        self.capture_gaps.labels(mic=mic_id)
        self.capture_gap_seconds.labels(mic=mic_id)
        for stage in DROP_STAGES:
            self.dropped.labels(mic=mic_id, stage=stage)

    def set_model(self, sha256: str, embedding_dim: int, classes: Iterable[str]) -> None:
        """Publish which model is loaded; its first MAX_ACTIVITY_SERIES classes get their own activity series."""
        classes = list(classes)
        self._exported_classes = frozenset(classes[:MAX_ACTIVITY_SERIES])
        if len(classes) > MAX_ACTIVITY_SERIES:
            log.warning("the head has more classes than are exported as metric labels: the rest are summed into "
                        "activity=\"%s\" (gRPC, MQTT and the store keep every class)", OTHER_ACTIVITY,
                        extra={"classes": len(classes), "exported": MAX_ACTIVITY_SERIES})
        shown = classes if len(classes) <= MAX_ACTIVITY_SERIES else classes[:MAX_ACTIVITY_SERIES] + ["..."]
        self.model_info.labels(model_sha256=sha256, embedding_dim=str(embedding_dim),
                               classes=",".join(shown)).set(1)

    def observe_analysis(self, result: WindowResult, failing: dict[str, bool], quiet_below_dbfs: float | None = None) -> None:
        """Gauges describing the microphone's latest window: health, checks, activity, level (and the quiet
        threshold it was judged with, when given)."""
        mic = result.mic_id
        self.health_state.labels(mic=mic).set(HEALTH_VALUE.get(result.health_state, 2.0))
        for check, score in result.health_scores.items():
            self.check_score.labels(mic=mic, check=check).set(score)
        for check, is_failing in failing.items():
            self.check_failing.labels(mic=mic, check=check).set(1.0 if is_failing else 0.0)
        kind = label_kind(result.label, result.health_state)
        judged = kind in ("class", "unknown")  # the head's posteriors mean something for this window
        other = None
        for activity, p in result.probabilities.items():
            if self._exported_classes is None or activity in self._exported_classes:
                self.activity.labels(mic=mic, activity=activity).set(p if judged else 0.0)
            else:  # label cardinality stays bounded whatever the head holds
                other = (other or 0.0) + p
        if other is not None:
            self.activity.labels(mic=mic, activity=OTHER_ACTIVITY).set(other if judged else 0.0)
        for decision in RESERVED_LABELS:
            self.activity.labels(mic=mic, activity=decision).set(1.0 if result.label == decision else 0.0)
        for name in LABEL_KINDS:
            self.label_kind.labels(mic=mic, kind=name).set(1.0 if name == kind else 0.0)
        for match in result.sounds:
            self.sound_detections.labels(mic=mic, sound=match.name).inc()
        self.rms.labels(mic=mic).set(result.rms_dbfs)
        if quiet_below_dbfs is not None:
            self.quiet_threshold.labels(mic=mic).set(quiet_below_dbfs)

    def observe_store_check(self, check) -> None:
        """The result of a store integrity check (service.store.store_guard.StoreCheck; None: none has ended yet)."""
        self.store_corrupt.set(0.0 if check is None or check.ok else 1.0)

    def observe_stored(self, result: WindowResult) -> None:
        """Count a stored window and its end time."""
        self.windows.labels(mic=result.mic_id).inc()
        self.last_window.labels(mic=result.mic_id).set(result.end_unix_ms / 1000.0)

    def serve(self, config: MetricsConfig = MetricsConfig()) -> int:
        """Start the /metrics listener on a daemon thread (HTTPS with tls_cert/tls_key; client certificates
        required with client_ca; at most max_connections at once, idle ones closed after idle_timeout_s:
        service/metrics/http_server.py); returns the bound port (port 0 = any free). OSError names the listener."""
        try:
            server = serve_metrics(self.registry, config)
        except OSError as exc:
            raise OSError(exc.errno, f"/metrics (metrics.address, metrics.port): cannot listen on "
                                     f"{config.address}:{config.port}: {exc.strerror or exc} (address in use, "
                                     f"e.g. by another roomtone, or not local?)") from None
        self._server = server
        return int(server.server_port)

    def close(self) -> None:
        """Stop the HTTP listener (if started)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self._exported_classes: frozenset[str] | None = None  # set_model: the classes with their own series
