"""The roomtone daemon's lifecycle. `Daemon.start` brings the parts up in order, as Frigate's
`FrigateApp.start()` does; each step that starts something registers how to stop it, and `Daemon.stop`
runs those in reverse order:

    open-file limit -> model + analyser (dry run) -> drift baselines -> store (lock, corrections,
    noise floors) -> custom sounds -> event bus + metrics -> sources + pipeline
    -> sessions + MQTT -> clip writer -> /metrics listener -> gRPC API -> web page -> capture
    -> store upkeep (integrity check, retention, similarity warm-up, custom-sound upkeep)

so on stop capture ends first, the windows in flight are analysed and stored, the API closes, the drift
baselines are saved and the store is flushed and closed last. A step that fails stops what came before.
Which module holds what: docs/daemon.md "Module map".
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Callable

from encoder.file_digest import file_sha256
from service.config import DaemonConfig, config_to_dict
from service.disk_space import free_bytes, full_disk_advice, is_disk_full
from service.analysis.drift_baselines import drift_path, load_drift_baselines, save_drift_baselines
from service.api.mic_status import mic_status

log = logging.getLogger("roomtone.daemon")
#: Descriptors the daemon holds besides its listeners' connections: store, WAL, readers, sources, threads' pipes.
RESERVED_DESCRIPTORS = 128


def roomtone_version() -> str:
    """The installed roomtone version ("unknown" when run from a tree that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("roomtone")
    except PackageNotFoundError:
        return "unknown"


def next_steps(grpc_address: str | None) -> str:
    """What a user can do once the daemon runs: the client commands, with ``--address`` when not the default."""
    from service.daemon_vocabulary import DEFAULT_GRPC_ADDRESS

    if grpc_address is None:
        return "the gRPC API is off (--no-grpc), so `roomtone events` and `roomtone mics` cannot reach this daemon"
    address = "" if grpc_address == DEFAULT_GRPC_ADDRESS else f" --address {grpc_address}"
    return (f"next: `roomtone events --follow{address}` prints events as they happen, "
            f"`roomtone mics{address}` the microphones and their health")


class Daemon:
    """One running roomtone: `run()` (or `start()`, `wait()` until a stop request, `stop()`)."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.analyser = None
        self.sounds = None  # service.analysis.sound_library.SoundService; None with sounds.enabled = false
        self.corrections = None  # service.store.corrections.CorrectionService, once the store is open
        self.store = None
        self.bus = None
        self.metrics = None
        self.pipeline = None
        self.store_stage = None  # service.announce.store_and_publish.StoreAndPublish: the pipeline's store stage
        self.announcer = None  # service.announce.announcer.Announcer: activity sessions + MQTT
        self.grpc_server = None
        self._unhealthy: set[str] = set()  # why gRPC health is NOT_SERVING (`_set_unhealthy`)
        self.grpc_port: int | None = None
        self.grpc_address: str | None = None
        self.metrics_port: int | None = None
        self.clips = None  # service.store.clips.ClipStore when [clips] keep is not "none"
        self._clip_writer = None  # its ClipWriter
        self.feed = None  # service.web.live.LiveFeed: live windows for the web page
        self.web = None  # service.web.server.WebServer
        self.web_port: int | None = None
        self.integrity = None  # service.store.store_upkeep.IntegrityWatch: the store's quick_check, from start and hourly
        self._stops: list[tuple[str, Callable[[], object]]] = []  # what start() started, in order
        self._stop_requested = threading.Event()
        self._stop_reason = ""
        self._drained = True
        self._stopped = False

    @property
    def drift_path(self) -> Path:
        """Where microphones' drift baselines are kept between runs (next to the store)."""
        return drift_path(self.config.store_path)

    def mic_status(self) -> list:
        """MicStatus of every configured microphone (capture state + last stored window)."""
        if self.pipeline is None or self.store_stage is None:
            return []
        return mic_status(self.pipeline.sources, self.store_stage.latest)

    # --- start, in order ----------------------------------------------------------------------------

    def start(self) -> None:
        """Bring every part up in order; on failure, whatever was started is stopped again and the error raised."""
        log.info("starting roomtone", extra={"config": config_to_dict(self.config), "pid": os.getpid()})
        try:
            for step in (self._check_open_files, self._load_model, self._open_store, self._open_sounds,
                         self._start_bus_and_metrics, self._build_pipeline, self._start_announcer, self._keep_clips,
                         self._serve_metrics, self._serve_grpc, self._serve_web, self._start_capture,
                         self._start_store_upkeep):
                step()
        except BaseException:
            self.stop()
            raise
        log.info("roomtone running", extra={"mics": list(self.pipeline.sources), "store": str(self.config.store_path),
                                            "grpc": self.grpc_address, "metrics_port": self.metrics_port,
                                            "web": self.web.url if self.web else None})
        log.info(next_steps(self.grpc_address))

    def _on_stop(self, name: str, stop: Callable[[], object]) -> None:
        """Register how to stop what a step just started (stop() runs these last first)."""
        self._stops.append((name, stop))

    def _check_open_files(self) -> None:
        """Raise the soft open-file limit to the hard one, and warn when it is below what the listeners may hold
        at once (each connection is a descriptor; EMFILE would stop gRPC, /metrics and clips together)."""
        import resource

        from service.web.connections import ACCEPT_BACKLOG

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        c = self.config
        needed = (RESERVED_DESCRIPTORS + (c.web.max_connections + ACCEPT_BACKLOG if c.web.enabled else 0)
                  + (c.metrics.max_connections if c.metrics.enabled else 0) + (c.grpc.max_streams if c.grpc.enabled else 0))
        if soft < needed:
            log.warning("the open-file limit is below what the listeners may hold at once: a flood of connections "
                        "could exhaust it; raise it (systemd LimitNOFILE, compose ulimits.nofile, ulimit -n) or lower "
                        "web.max_connections / grpc.max_streams", extra={"limit": soft, "needed": needed})

    def _load_model(self) -> None:
        from encoder.allocator import reuse_freed_memory
        from encoder.model_file import ModelFileError
        from service.analysis.analyser import Analyser
        from service.analysis.serving_model import describe, load_serving_model

        config = self.config
        reuse_freed_memory()  # window-sized buffers are reused instead of page-faulted in anew (docs/performance.md)
        bundle = load_serving_model(config.model, config.pipeline.backend, config.pipeline.device)
        self._model_sha256 = file_sha256(config.model)
        self._bundle = bundle
        log.info("model loaded", extra={"model": str(config.model), "model_sha256": self._model_sha256,
                                        **describe(bundle)})
        if bundle.head is None:
            log.warning("the model has no activity head: windows get an embedding and health only "
                        "(add one with `roomtone train-head`)", extra={"model": str(config.model)})
        self.analyser = Analyser(bundle, config.health, windows=config.pipeline.windows,
                                 activity=config.activity, keep_samples=config.clips.enabled,
                                 keep_maps=config.sounds.enabled and config.sounds.calibration_hours > 0)
        try:  # a model that cannot analyse one window must stop the start, not fail every window after it
            seconds = self.analyser.dry_run()
        except ValueError as exc:
            raise ModelFileError(f"{config.model}: with pipeline.window_s = {config.pipeline.window_s:g}: {exc}") from None
        log.info("dry run", extra={"window_s": config.pipeline.window_s, "seconds": round(seconds, 3)})
        self.analyser.restore_drift(load_drift_baselines(self.drift_path))
        # registered before the store: saved after the store is closed, once no window can change a baseline
        self._on_stop("drift baselines", lambda: save_drift_baselines(self.drift_path, self.analyser.drift_state()))

    def _open_store(self) -> None:
        from service.store.corrections import CorrectionService
        from service.store.event_store import EventStore
        from service.store.store_guard import StoreGuard
        from service.store.store_upkeep import IntegrityWatch

        store_path = self.config.store_path
        store_path.parent.mkdir(parents=True, exist_ok=True)
        guard = StoreGuard(store_path)
        guard.acquire()  # StoreInUse when another roomtone has this store: `roomtone run` exits 2
        self._on_stop("store lock", guard.release)  # released after the store is closed
        self.store = EventStore(store_path, self.config.store, self.config.similarity, guard=guard)
        self._on_stop("store", self.store.close)
        log.info("store opened", extra={"store": str(store_path.resolve())})
        lost = guard.lost_windows(self.store.highest_assigned_window_id())
        if lost:
            log.warning("acknowledged windows are missing from the store: its write-ahead log was lost or damaged "
                        "after a crash (SQLite cannot tell); they cannot be recovered. Check the disk, and never "
                        "delete the -wal file of a store that was not closed cleanly",
                        extra={"store": str(store_path), "missing_window_ids": f"{lost.start}..{lost.stop - 1}",
                               "missing": len(lost)})
        # Checked in the background once the daemon serves (`_start_store_upkeep`; a year of windows takes
        # minutes to read): damage is reported (log, metric, gRPC health) as found, and the store is served meanwhile.
        self.integrity = IntegrityWatch(store_path, self.config.store.check_interval_s)
        self._on_stop("store checks", self.integrity.stop)  # stopped just before the store closes
        try:
            low = free_bytes(store_path) < self.config.clips.min_free_mb * 2**20
        except OSError:  # a file system that cannot say: nothing to warn about
            low = False
        if low:  # start anyway, and say what to do
            log.warning("little free space for the store: windows may not be stored",
                        extra={"store": str(store_path), "advice": full_disk_advice(store_path)})
        try:  # corrections record which model embedded a window; a full disk must not stop the start
            self.store.record_model_run(self._model_sha256)
        except sqlite3.OperationalError as exc:
            log.warning("could not note the model run in the store: corrections of this run's windows will not "
                        "know their model (train-head skips them)", extra={"error": str(exc)})
        self.corrections = CorrectionService(self.store, tuple(self._bundle.class_names or ()))
        if self.config.activity.quiet_relative:  # microphones' noise floors, learnt again from their stored windows
            self.analyser.restore_levels(self.store.recent_levels(self.config.activity.quiet_history_hours))
            thresholds = self.analyser.quiet_thresholds()
            if thresholds:
                log.info("quiet thresholds", extra={"quiet_below_dbfs": {m: round(t, 1) for m, t in thresholds.items()}})

    def _set_unhealthy(self, reason: str, unhealthy: bool) -> None:
        """Note why the daemon cannot serve fully (``store_damaged``, ``store_write_failing``); gRPC health is
        NOT_SERVING while any reason holds."""
        from service.api.grpc_server import set_serving

        (self._unhealthy.add if unhealthy else self._unhealthy.discard)(reason)
        if self.grpc_server is not None:
            set_serving(self.grpc_server, not self._unhealthy)

    def _store_error(self, exc: Exception) -> None:
        """Every failed store write: on a full disk the clips give their space back at once (another program may
        have filled the disk under the store; clips are otherwise pruned only when one is written)."""
        if self._clip_writer is not None and is_disk_full(exc):
            self._clip_writer.make_room()

    def _store_failing(self, failing: bool, exc: Exception | None) -> None:
        """The pipeline's report that store writes keep failing (or work again): metric, health, one log line."""
        self.metrics.store_write_failing.set(1.0 if failing else 0.0)
        self._set_unhealthy("store_write_failing", failing)
        store_path = self.config.store_path
        if failing:
            advice = (full_disk_advice(store_path) if exc is not None and is_disk_full(exc)
                      else f"check the disk holding {store_path} and the errors above")
            log.error("the store keeps failing to write: windows are not stored, gRPC health is NOT_SERVING",
                      extra={"store": str(store_path), "error": f"{type(exc).__name__}: {exc}", "advice": advice})
        else:
            log.info("the store writes again: gRPC health is SERVING unless something else is wrong",
                     extra={"store": str(store_path)})

    def _open_sounds(self) -> None:
        """The custom-sound library beside the store, scored on every live window (off: sounds.enabled = false)."""
        from functools import partial

        from service.analysis.model_runner import column_dim, column_maps_available, sound_maps
        from service.analysis.sound_library import SoundLibrary, SoundService

        if not self.config.sounds.enabled:
            return
        path = self.config.sounds_path
        embedder = self.analyser.runner.embedder
        library = SoundLibrary(path, self._model_sha256, embedder.embed, self.analyser.sample_rate,
                               self._bundle.embedding_dim, self.config.sounds.max_sounds,
                               embed_columns=partial(sound_maps, embedder) if column_maps_available(embedder) else None,
                               column_dim=column_dim(embedder))
        self.analyser.sounds = library  # built after the store lock: the library writes beside the store
        self.sounds = SoundService(library, self.store, self.config.sounds, self.config.pipeline.windows)
        log.info("custom sounds", extra={"library": str(path), "sounds": [s.name for s in library.sounds()],
                                         "inactive": [s.name for s in library.sounds() if not s.active]})

    def _start_bus_and_metrics(self) -> None:
        from service.api.grpc_server import event_bus_for
        from service.metrics.daemon_metrics import Metrics

        self.bus = event_bus_for(self.config.grpc)
        self._on_stop("event bus", self.bus.close)
        self.metrics = Metrics()
        self.metrics.set_model(self._model_sha256, self._bundle.embedding_dim, self._bundle.class_names)
        self.integrity.listeners.append(self.metrics.observe_store_check)
        self.metrics.observe_store_check(self.integrity.last)

    def _start_announcer(self) -> None:
        """Activity sessions (unless disabled) and the MQTT publisher (when a broker is configured); on stop,
        after capture has drained, open sessions end and MQTT says offline."""
        from service.announce.announcer import Announcer
        from service.announce.mqtt_messages import DeviceInfo
        from service.announce.mqtt_publisher import MqttPublisher
        from service.analysis.sessions import SessionTracker
        from service.daemon_vocabulary import RESERVED_LABELS
        from service.web.server import page_url

        config = self.config
        tracker = SessionTracker(config.sessions) if config.sessions.enabled else None
        publisher = None
        if config.mqtt.enabled:
            # every label a session can carry: the head's classes and the decision's quiet/unknown, minus ignored ones
            labels = (*self._bundle.class_names, *RESERVED_LABELS)
            activities = tuple(c for c in labels if c not in config.sessions.ignored_labels)
            web = config.web
            info = DeviceInfo(version=roomtone_version(), activities=activities,
                              areas={m.id: m.area for m in config.mics if m.area},
                              # Home Assistant links the device to the web page (known before it listens
                              # unless its port is 0, any free port)
                              configuration_url=page_url(web, web.port) if web.enabled and web.port else None)
            publisher = MqttPublisher(config.mqtt, [m.id for m in config.mics], info, registry=self.metrics.registry)
        self.announcer = Announcer(self.store, self.bus.publish, tracker, publisher)
        self.announcer.start()
        self._on_stop("sessions and MQTT", self.announcer.stop)
        self.store_stage.listeners.append(self.announcer.on_stored)
        self.announcer.watch_capture(self.mic_status)

    def _build_pipeline(self) -> None:
        from service.pipeline import Pipeline
        from service.capture.sources import open_source
        from service.announce.store_and_publish import StoreAndPublish

        sources = [open_source(mic, self.analyser.sample_rate) for mic in self.config.mics]
        for source in sources:
            log.info("microphone", extra={"mic": source.mic_id, "device": source.description,
                                          "input": getattr(source, "input", source.description),
                                          "sample_rate": source.sample_rate, "channels": source.channels,
                                          "realtime": source.realtime})
        self.store_stage = StoreAndPublish(self.store, self.bus)
        self.pipeline = Pipeline(sources, self.analyser, self.store_stage, self.metrics, self.config.pipeline)
        self.pipeline.on_stored = self._on_stored
        self.pipeline.on_store_failing = self._store_failing
        self.pipeline.on_store_error = self._store_error

    def _keep_clips(self) -> None:
        from service.store.clips import ClipStore, ClipWriter

        c = self.config.clips
        if not c.enabled:
            return
        directory = Path(c.dir) if c.dir else Path(self.config.data_dir) / "clips"
        self.clips = ClipStore(directory, c)
        writer = self._clip_writer = ClipWriter(
            self.clips, self.analyser.sample_rate, self.config.store.retention_interval_s,
            on_drop=lambda reason: self.metrics.clips_dropped.labels(reason=reason).inc())
        self._on_stop("clip writer", writer.close)  # after capture: the last windows' clips are written
        self.store_stage.listeners.append(writer.on_stored)
        log.warning("clips are kept: windows' audio is written to disk and can contain people's speech",
                    extra={"keep": c.keep, "codec": c.codec, "dir": str(directory.resolve()),
                           "max_age_days": c.max_age_days, "max_size_mb": c.max_size_mb})

    def _serve_metrics(self) -> None:
        m = self.config.metrics
        if not m.enabled:
            return
        self.metrics_port = self.metrics.serve(m)
        self._on_stop("metrics", self.metrics.close)
        scheme = "https" if m.tls_cert else "http"
        log.info("metrics listening", extra={"url": f"{scheme}://{m.address}:{self.metrics_port}/metrics",
                                             "client_certificates": m.client_ca is not None})

    def _serve_grpc(self) -> None:
        from service.api.daemon_backend import DaemonBackend
        from service.api.grpc_security import server_security
        from service.api.grpc_server import start_server, stop_server

        g = self.config.grpc
        if not g.enabled:
            return
        security = server_security(g)
        self.grpc_server = start_server(self.store, self.bus, DaemonBackend(self.analyser, self.mic_status), g,
                                        security=security, sounds=self.sounds, corrections=self.corrections)
        self._on_stop("gRPC API", lambda: stop_server(self.grpc_server, grace_s=2.0))
        self.grpc_address = self.grpc_server.roomtone_address
        self.grpc_port = int(self.grpc_address.rpartition(":")[2])
        report = lambda check: check is None or self._set_unhealthy("store_damaged", not check.ok)  # noqa: E731
        self.integrity.listeners.append(report)
        report(self.integrity.last)
        log.info("gRPC listening", extra={"address": self.grpc_address, "tls": security is not None,
                                          "bearer_token": bool(security and security.token),
                                          "client_certificates": bool(security and security.client_ca)})

    def _serve_web(self) -> None:
        from service.web.live import LiveFeed
        from service.web.server import WebBackend, WebServer

        w, p = self.config.web, self.config.pipeline
        if not w.enabled:
            return
        self.feed = LiveFeed(self._bundle.feature_config.floor_db)
        self.store_stage.listeners.append(self.feed.on_stored)
        backend = WebBackend(store=self.store, feed=self.feed, microphones=self.mic_status, windows=p.windows,
                             class_names=tuple(self._bundle.class_names or ()), clips=self.clips,
                             clips_keep=self.config.clips.keep, sessions_enabled=self.config.sessions.enabled,
                             sounds=self.sounds, corrections=self.corrections,
                             extra={"model_sha256": self._model_sha256})
        self.web = WebServer(w, backend)
        self.web_port = self.web.start()
        self._on_stop("web page", self.web.stop)
        log.info("web page listening", extra={"url": self.web.url, "token": w.token_file is not None,
                                              "client_certificates": w.client_ca is not None})

    def _start_capture(self) -> None:
        self.pipeline.start()  # on failure the pipeline stops what it started itself

        def drain() -> None:
            self._drained = self.pipeline.stop()
            self.pipeline.sync_source_counters()

        self._on_stop("capture and pipeline", drain)

    def _start_store_upkeep(self) -> None:
        from service.store.store_upkeep import RetentionLoop, start_similarity_warm_up

        # Not earlier: reading the whole file from its first page, the check slowed the start's own reads of
        # the newest windows (a year's 18 GB store does not fit the page cache beside everything else).
        self.integrity.start()
        retention = RetentionLoop(self.store, self.config.store.retention_interval_s,
                                  on_error=self.metrics.store_errors.inc)
        retention.start()
        self._on_stop("retention", retention.stop)
        if self.config.similarity.warm_at_start:
            start_similarity_warm_up(self.store)  # ends by itself (StoreError) once the store is closed
        if self.sounds is not None:
            from service.analysis.sound_upkeep import SoundUpkeep

            upkeep = SoundUpkeep(self.sounds, self.config.store.retention_interval_s)
            upkeep.start()
            self._on_stop("custom-sound upkeep", upkeep.stop)

    # --- running ------------------------------------------------------------------------------------

    def _on_stored(self, total: int) -> None:
        limit = self.config.pipeline.max_windows
        if limit is not None and total >= limit:
            self.request_stop(f"pipeline.max_windows={limit} reached")

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

    def run(self) -> int:
        """start, wait, stop; returns the process exit code (0 on a clean stop). Start errors are raised."""
        self.start()
        try:
            self.wait()
        finally:
            self.stop()
        return 0

    # --- stop, in reverse order ---------------------------------------------------------------------

    def stop(self) -> None:
        """Stop what `start` started, last first: capture (in-flight windows finish), the API, metrics, the
        bus, the store, then the drift baselines are saved (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_requested.set()
        while self._stops:
            name, stop = self._stops.pop()
            try:
                stop()
            except Exception:  # one part failing to stop must not keep the rest (the store!) open
                log.exception("stopping %s failed", name)
        stats = self.pipeline.stats if self.pipeline is not None else None
        log.info("roomtone stopped", extra={"reason": self._stop_reason, "drained": self._drained,
                                            "windows_stored": stats.windows_stored if stats else 0,
                                            "windows_dropped": stats.dropped if stats else 0})
