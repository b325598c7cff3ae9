"""The processing pipeline: sources -> [capture queue] -> windowing -> [analysis queue] -> analysis (batched
across microphones) -> [store queue] -> store + publish. Every queue is bounded; when a stage falls behind a
realtime source, the newest item is dropped and COUNTED (roomtone_windows_dropped_total{stage} + a log
line), never lost silently. Fast file sources block instead, so they are processed completely.

    source ─► capture queue ─► windowing ─► analysis queue ─► analysis ─► store queue ─► store/publish
    (thread)  (chunks)         (thread)     (windows)         (thread)    (results)      (thread)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from service.analysis.analyser import Analysed, Analyser, Timings
from service.config import PipelineConfig
from service.disk_space import is_disk_full
from service.logs import ThrottledLog
from service.metrics.daemon_metrics import Metrics
from service.records import StateChange
from service.capture.sources import Chunk, Source
from service.daemon_vocabulary import CAPTURE_LOST_STATES
from service.capture.windowing import Window, Windower

log = logging.getLogger("roomtone.pipeline")

#: Queue length for capture blocks: this many blocks (0.1 s each by default) may wait for windowing, and at
#: least CAPTURE_BLOCKS_PER_MIC for each microphone (5 s of its audio), so many microphones do not share 600.
CAPTURE_QUEUE_BLOCKS = 600
CAPTURE_BLOCKS_PER_MIC = 50
#: Chunks a source that is not realtime may have waiting for windowing: its chunks are whole reads (a file
#: source's `FAST_READ_S`, not 0.1 s blocks) and it waits rather than drops, so reading further ahead would
#: only hold memory.
FAST_CHUNKS_AHEAD = 4
_END = object()  # sentinel: no more items will follow
#: Failed store writes in a row after which the store counts as failing (`on_store_failing`): one failure can be
#: a passing lock or I/O hiccup; three batches (about 30 s of windows by default) cannot.
STORE_FAILING_AFTER = 3
#: A drop, a failed analysis or a failed store write is logged at most this often per microphone (and stage).
LOG_EVERY_S = 5.0

#: What the store stage does with a batch: write it and publish it (an exception counts as a store error).
StoreFn = Callable[[list[Analysed], list[StateChange]], None]


def queue_windows(config: PipelineConfig, mics: int) -> int:
    """Length of the analysis and store queues: ``queue_size``, and at least two windows per microphone, so a
    burst of windows that end together (unstaggered microphones, a stalled stage catching up) is not dropped."""
    return max(config.queue_size, 2 * mics)


def window_phases(sources: list[Source], config: PipelineConfig) -> dict[str, float]:
    """Per realtime microphone, the seconds its first window starts after its first sample (see `Windower`):
    with ``stagger`` the n realtime microphones' windows end hop/n apart instead of all at once; empty when
    there is nothing to spread (stagger off, or fewer than two realtime microphones)."""
    realtime = [s.mic_id for s in sources if s.realtime]
    if not config.stagger or len(realtime) < 2:
        return {}
    return {mic_id: i * config.hop_s / len(realtime) for i, mic_id in enumerate(realtime)}


@dataclass
class StageStats:
    """Running totals, for logs and tests."""

    windows_cut: int = 0
    windows_analysed: int = 0
    windows_stored: int = 0
    dropped: int = 0
    store_errors: int = 0
    analysis_errors: int = 0  # windows whose analysis raised (each alone, after its batch failed)


class Pipeline:
    """Runs the stages of `sources` on threads; `stop()` stops capture and drains what is in flight."""

    def __init__(self, sources: list[Source], analyser: Analyser, store: StoreFn, metrics: Metrics,
                 config: PipelineConfig = PipelineConfig()) -> None:
        self.sources = {s.mic_id: s for s in sources}
        self.analyser = analyser
        self.store = store
        self.metrics = metrics
        self.config = config
        self.stats = StageStats()
        self.capture_q: queue.Queue = queue.Queue(maxsize=max(CAPTURE_QUEUE_BLOCKS,
                                                              CAPTURE_BLOCKS_PER_MIC * len(sources)))
        self.analysis_q: queue.Queue = queue.Queue(maxsize=queue_windows(config, len(sources)))
        self.store_q: queue.Queue = queue.Queue(maxsize=queue_windows(config, len(sources)))
        self._fast_room = {s.mic_id: threading.Semaphore(FAST_CHUNKS_AHEAD) for s in sources if not s.realtime}
        phases = window_phases(sources, config)
        self.windowers = {
            s.mic_id: Windower(s.mic_id, s.sample_rate, analyser.sample_rate, config.windows,
                               realtime=s.realtime, phase_s=phases.get(s.mic_id))
            for s in sources
        }
        self.ended: set[str] = set()  # microphones whose finite source has delivered everything
        self.drained = threading.Event()  # set when every stage has finished (after stop or all sources ended)
        self.on_stored: Callable[[int], None] | None = None  # called with the total stored count
        # called with (True, the error) after STORE_FAILING_AFTER failed writes in a row, (False, None) at the
        # next stored batch
        self.on_store_failing: Callable[[bool, Exception | None], None] | None = None
        self.on_store_error: Callable[[Exception], None] | None = None  # every failed store write
        self._store_failures_in_a_row = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._consumers: dict[queue.Queue, threading.Thread] = {}  # the stage thread that empties each queue
        # A full queue, a failing model or a full disk repeats every window: one line per 5 s per microphone
        # (and stage); the counters have them all.
        self._drop_log = ThrottledLog(log, "dropped %s: %s queue full", LOG_EVERY_S)
        self._analysis_error_log = ThrottledLog(log, "analysis of a window failed; it is not stored", LOG_EVERY_S,
                                                level=logging.ERROR)
        self._store_error_log = ThrottledLog(log, "store failed; windows not stored", LOG_EVERY_S, level=logging.ERROR)
        self._reported_overruns = {s.mic_id: 0 for s in sources}
        self._reported_errors = {s.mic_id: 0 for s in sources}

    # --- back-pressure ------------------------------------------------------------------------------

    def _drop(self, mic_id: str, stage: str, what: str = "window") -> None:
        self.stats.dropped += 1
        self.metrics.dropped.labels(mic=mic_id, stage=stage).inc()
        self._drop_log.note(what, stage, key=(mic_id, stage), mic=mic_id, stage=stage, dropped_total=self.stats.dropped)

    def _offer(self, q: queue.Queue, item, *, block: bool, mic_id: str, stage: str, what: str = "window") -> bool:
        """Put ``item`` on ``q``; realtime producers never wait (drop + count), fast file sources wait."""
        if block:
            while True:
                try:
                    q.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    if self._gives_up(q):
                        return False
        try:
            q.put_nowait(item)
            return True
        except queue.Full:
            self._drop(mic_id, stage, what)
            return False

    def _gives_up(self, q: queue.Queue) -> bool:
        """Whether a producer waiting for room on ``q`` stops waiting: the pipeline is stopping and the stage
        that empties ``q`` no longer runs (while it runs, a stopping pipeline's producers still wait for it)."""
        consumer = self._consumers.get(q)
        return self._stopping.is_set() and not (consumer is not None and consumer.is_alive())

    def sink(self, chunk: Chunk) -> bool:
        """Where sources deliver chunks (PortAudio callback thread for devices: never blocks for them; a source
        that is not realtime waits while FAST_CHUNKS_AHEAD of its chunks wait for windowing)."""
        source = self.sources[chunk.mic_id]
        if not source.realtime and not self._room_for(chunk.mic_id):
            return False
        block = not source.realtime or chunk.end_of_stream  # an end marker must never be lost
        return self._offer(self.capture_q, chunk, block=block, mic_id=chunk.mic_id, stage="capture",
                           what="capture block")

    def _room_for(self, mic_id: str) -> bool:
        """Wait until a fast source may queue one more chunk; False once the pipeline has stopped."""
        room = self._fast_room[mic_id]
        while not room.acquire(timeout=0.5):
            if self._gives_up(self.capture_q):
                return False
        return True

    # --- stages -------------------------------------------------------------------------------------

    def _windowing(self) -> None:
        while True:
            chunk = self.capture_q.get()
            if chunk is _END:
                for windower in self.windowers.values():
                    if windower.buffered_s:
                        log.info("capture stopped; discarding a partial window",
                                 extra={"mic": windower.mic_id, "seconds": round(windower.buffered_s, 2)})
                    windower.reset()
                self._offer(self.analysis_q, _END, block=True, mic_id="", stage="analysis")
                return
            if chunk.mic_id in self._fast_room:
                self._fast_room[chunk.mic_id].release()
            windower = self.windowers[chunk.mic_id]
            gaps, gap_s = windower.gaps, windower.gap_s
            windows = windower.finish() if chunk.end_of_stream else windower.push(chunk)
            if windower.gaps > gaps:
                self._capture_gap(chunk.mic_id, windower.gap_s - gap_s, windower.gaps)
            realtime = self.sources[chunk.mic_id].realtime
            for window in windows:
                self.stats.windows_cut += 1
                self._offer(self.analysis_q, window, block=not realtime, mic_id=window.mic_id, stage="analysis")
            if chunk.end_of_stream:
                self.ended.add(chunk.mic_id)
                log.info("source ended", extra={"mic": chunk.mic_id})
                if self.ended == set(self.sources):
                    self._offer(self.analysis_q, _END, block=True, mic_id="", stage="analysis")
                    return

    def _analysis(self) -> None:
        while True:
            first = self.analysis_q.get()
            if first is _END:
                self._offer(self.store_q, _END, block=True, mic_id="", stage="store")
                return
            batch: list[Window] = [first]
            end_seen = False
            while len(batch) < self.config.batch_size:
                try:
                    item = self.analysis_q.get_nowait()
                except queue.Empty:
                    break
                if item is _END:
                    end_seen = True
                    break
                batch.append(item)
            now = time.time()
            for w in batch:
                if w.realtime:
                    self.metrics.stage_latency.labels(stage="capture").observe(max(0.0, now - w.end_unix))
            timings = Timings()
            try:
                analysed, changes = self.analyser.analyse(batch, timings)
            except Exception:  # noqa: BLE001 - one bad window must not take its batch (other mics) with it
                analysed, changes = self._analyse_one_by_one(batch, timings)
            for stage in ("features", "embed", "head", "health"):
                self.metrics.stage_latency.labels(stage=stage).observe(getattr(timings, stage))
            for item in analysed:
                self.metrics.observe_analysis(item.result, item.failing, item.quiet_below_dbfs)
            self.stats.windows_analysed += len(analysed)
            if analysed:
                block = not all(item.realtime for item in analysed)
                if block:
                    self._offer(self.store_q, (analysed, changes), block=True, mic_id="", stage="store")
                else:
                    try:
                        self.store_q.put_nowait((analysed, changes))
                    except queue.Full:  # every window of the batch is counted, for its own microphone
                        for item in analysed:
                            self._drop(item.result.mic_id, "store")
            if end_seen:
                self._offer(self.store_q, _END, block=True, mic_id="", stage="store")
                return

    def _capture_gap(self, mic_id: str, seconds: float, total: int) -> None:
        """Audio time missing between two capture blocks (SIGSTOP, a stalled device): counted and logged."""
        self.metrics.capture_gaps.labels(mic=mic_id).inc()
        self.metrics.capture_gap_seconds.labels(mic=mic_id).inc(seconds)
        log.warning("capture gap: audio time is missing between two blocks (process stopped or device stalled); "
                    "the window restarts after it", extra={"mic": mic_id, "seconds": round(seconds, 2),
                                                           "gaps_total": total})

    def _analyse_one_by_one(self, batch: list[Window], timings: Timings) -> tuple[list, list]:
        """After a batch failed: every window alone, so only the window at fault is lost (and counted)."""
        analysed, changes = [], []
        for window in batch:
            try:
                one, its_changes = self.analyser.analyse([window], timings)
            except Exception as exc:  # noqa: BLE001 - counted in roomtone_analysis_errors_total and logged
                self._analysis_failed(window.mic_id, exc)
                continue
            analysed.extend(one)
            changes.extend(its_changes)
        return analysed, changes

    def _analysis_failed(self, mic_id: str, exc: Exception) -> None:
        self.stats.analysis_errors += 1
        self.metrics.analysis_errors.labels(mic=mic_id).inc()
        self._analysis_error_log.note(key=mic_id, exc=exc, mic=mic_id, error=f"{type(exc).__name__}: {exc}",
                                      analysis_errors_total=self.stats.analysis_errors)

    def _storing(self) -> None:
        while True:
            item = self.store_q.get()
            if item is _END:
                self.drained.set()
                return
            analysed, changes = item
            t0 = time.perf_counter()
            try:
                self.store(analysed, changes)
            except Exception as exc:
                self.stats.store_errors += 1
                self.metrics.store_errors.inc()
                # the first line carries the traceback, unless the disk is full (the daemon's advice line explains it)
                self._store_error_log.note(exc=None if is_disk_full(exc) else exc, windows=len(analysed),
                                           error=f"{type(exc).__name__}: {exc}",
                                           store_errors_total=self.stats.store_errors)
                self._store_failures_in_a_row += 1
                if self.on_store_error is not None:
                    self.on_store_error(exc)
                if self._store_failures_in_a_row == STORE_FAILING_AFTER and self.on_store_failing is not None:
                    self.on_store_failing(True, exc)
                continue
            if self._store_failures_in_a_row >= STORE_FAILING_AFTER and self.on_store_failing is not None:
                self.on_store_failing(False, None)
            self._store_failures_in_a_row = 0
            self.metrics.stage_latency.labels(stage="store").observe(time.perf_counter() - t0)
            now = time.time()
            for a in analysed:
                self.metrics.observe_stored(a.result)
                if a.realtime:
                    self.metrics.window_to_event.observe(max(0.0, now - a.result.end_unix_ms / 1000.0))
            self.stats.windows_stored += len(analysed)
            if self.on_stored is not None:
                self.on_stored(self.stats.windows_stored)

    def _poll_sources(self) -> None:
        """Copy sources' overrun/error counts into the metrics (PortAudio callbacks must stay lean)."""
        while not self._stopping.wait(1.0):
            self.sync_source_counters()
        self.sync_source_counters()

    def sync_source_counters(self) -> None:
        """Add new overruns and errors reported by sources to their counters."""
        for mic_id, source in self.sources.items():
            new = source.overruns - self._reported_overruns[mic_id]
            if new > 0:
                self.metrics.overruns.labels(mic=mic_id).inc(new)
                self._reported_overruns[mic_id] = source.overruns
                log.warning("capture overrun", extra={"mic": mic_id, "overruns_total": source.overruns})
            new = source.errors - self._reported_errors[mic_id]
            if new > 0:
                self.metrics.capture_errors.labels(mic=mic_id).inc(new)
                self._reported_errors[mic_id] = source.errors
            if source.state in CAPTURE_LOST_STATES:  # no audio: faulty until a window says otherwise
                self.metrics.health_state.labels(mic=mic_id).set(2.0)

    # --- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the stage threads, then the sources."""
        for mic_id in self.sources:
            self.metrics.register_mic(mic_id)
        for name, target in (("windowing", self._windowing), ("analysis", self._analysis),
                             ("store", self._storing), ("source-counters", self._poll_sources)):
            thread = threading.Thread(target=target, name=f"pipeline-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._consumers = dict(zip((self.capture_q, self.analysis_q, self.store_q), self._threads))
        started = []
        try:
            for source in self.sources.values():
                source.start(self.sink)
                started.append(source)
        except Exception:
            for source in started:
                source.stop()
            self.stop()
            raise

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop capture, let in-flight windows finish analysis and storage; True when fully drained."""
        self._stopping.set()
        for source in self.sources.values():
            source.stop()
        if not self.drained.is_set() and self._threads[0].is_alive():
            self._offer(self.capture_q, _END, block=True, mic_id="", stage="capture")
        drained = self.drained.wait(timeout)
        for thread in self._threads:
            thread.join(timeout=1.0)
        return drained
