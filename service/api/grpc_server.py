"""The gRPC face of the daemon: thin servicers over EventStore, EventBus and a ServiceBackend, plus
grpc.health.v1 and server reflection. Servicers validate, call plain Python and map errors to status
codes; unexpected errors are logged here and reach the client only as INTERNAL "internal error"."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from encoder.audio import AudioError, AudioTooLarge
from encoder.vocabulary import SILENCE_DBFS
from encoder.windows import WindowSpec
from service.analysis.activity import label_kind
from service.api.service_backend import BackendUnavailable, ServiceBackend
from service.config import GrpcConfig
from service.api.event_bus import BusClosed, EventBus, Gap
from service.store.event_store import EventQuery, EventStore, StoreError
from service.metrics.grpc_metrics import GRPC_REQUESTS, STREAM_ITEMS_DROPPED
from service.api.reflection import enable_reflection
from service.api.grpc_security import BearerTokenInterceptor, ServerSecurity
from service.api.proto_names import HEALTH_FROM_PB, HEALTH_TO_PB, KIND_FROM_PB, KIND_TO_PB, LABEL_KIND_TO_PB
from service.records import MicStatus, StateChange, WindowResult
from service.store.session_store import SessionQuery
from service.analysis.sessions import ActivitySession, SessionEvent
from service.analysis.sound_library import Sound, SoundError, SoundService, sound_span_ms
from service.store.correction_store import Correction
from service.store.corrections import CorrectionError, CorrectionService
from service.daemon_vocabulary import (MAX_K, MAX_PAGE, REASON_BACKEND_UNAVAILABLE, REASON_KEY, REASON_SHUTTING_DOWN,
                                REASON_STORE_DAMAGED)
from service.rpc import roomtone_pb2 as pb
from service.rpc import roomtone_pb2_grpc as pb_grpc

log = logging.getLogger("roomtone.grpc")

#: gRPC status of each SoundError reason (the reason itself travels as the machine-readable one).
SOUND_ERROR_CODES = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT, "already_exists": grpc.StatusCode.ALREADY_EXISTS,
    "not_found": grpc.StatusCode.NOT_FOUND, "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
}

#: gRPC status of each CorrectionError reason.
CORRECTION_ERROR_CODES = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT, "not_found": grpc.StatusCode.NOT_FOUND,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
}

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Roomtone"].full_name  # "roomtone.v1.Roomtone"
#: Subscribers of the bus that are not StreamEvents clients (in-process publishers such as MQTT or the web page).
IN_PROCESS_SUBSCRIBERS = 8
#: Longest an upload waits for a decode slot (grpc.max_concurrent_uploads) before RESOURCE_EXHAUSTED.
UPLOAD_WAIT_S = 30.0



class Reject(Exception):
    """Ends an RPC with ``code`` and a message meant for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- records -> messages -------------------------------------------------------------------------
def _finite_dbfs(value: float) -> float:
    """A level as sent on the wire: never below `SILENCE_DBFS` (the level of digital silence), never NaN/-inf."""
    return max(float(value), SILENCE_DBFS) if math.isfinite(value) else SILENCE_DBFS


def window_to_pb(window: WindowResult, include_embedding: bool = False) -> pb.Window:
    """The wire form of a window record."""
    message = pb.Window(
        window_id=window.window_id or 0, mic_id=window.mic_id, start_unix_ms=int(window.start_unix_ms),
        end_unix_ms=int(window.end_unix_ms), label=window.label or "", probabilities=window.probabilities,
        health_state=HEALTH_TO_PB.get(window.health_state, pb.HEALTH_STATE_UNSPECIFIED),
        health_reasons=list(window.health_reasons), health_scores=window.health_scores,
        rms_dbfs=_finite_dbfs(window.rms_dbfs),
        label_kind=LABEL_KIND_TO_PB[label_kind(window.label, window.health_state)],
        sounds=[pb.SoundMatch(name=m.name, score=m.score, threshold=m.threshold, start_offset_ms=round(m.start_s * 1000),
                              end_offset_ms=round(m.end_s * 1000)) for m in window.sounds],
    )
    if include_embedding and window.embedding is not None:
        message.embedding.extend(np.asarray(window.embedding, dtype=np.float32).tolist())
    return message


def change_to_pb(change: StateChange) -> pb.StateChange:
    """The wire form of a state change."""
    return pb.StateChange(
        event_id=change.event_id or 0, kind=KIND_TO_PB[change.kind], mic_id=change.mic_id,
        time_unix_ms=int(change.time_unix_ms), previous=change.previous or "", current=change.current,
        window_id=change.window_id or 0, reasons=list(change.reasons), score=change.score or 0.0,
        start_offset_ms=change.sound_start_ms or 0, end_offset_ms=change.sound_end_ms or 0,
    )


def session_to_pb(session: ActivitySession) -> pb.ActivitySession:
    """The wire form of an activity session."""
    return pb.ActivitySession(
        session_id=session.session_id or 0, mic_id=session.mic_id, activity=session.activity,
        start_unix_ms=int(session.start_unix_ms), end_unix_ms=int(session.end_unix_ms or 0), open=session.is_open,
        windows=session.windows, mean_probability=session.mean_probability,
        last_window_end_unix_ms=int(session.last_seen_unix_ms or session.end_unix_ms or 0))


def event_to_pb(item: WindowResult | StateChange | SessionEvent | Gap) -> pb.Event:
    """An Event wrapping a window, a state change, a session start/end or a stream gap."""
    if isinstance(item, WindowResult):
        return pb.Event(window=window_to_pb(item))
    if isinstance(item, StateChange):
        return pb.Event(state_change=change_to_pb(item))
    if isinstance(item, SessionEvent):
        return pb.Event(session=pb.SessionEvent(kind=KIND_TO_PB[item.kind], session=session_to_pb(item.session),
                                                time_unix_ms=int(item.time_unix_ms)))
    return pb.Event(gap=pb.StreamGap(dropped=item.dropped))


def sound_to_pb(sound: Sound, windows: WindowSpec) -> pb.Sound:
    """The wire form of a custom sound matched in the windows of ``windows``."""
    return pb.Sound(
        name=sound.name, examples=len(sound.examples), threshold=sound.threshold,
        calibrated_threshold=sound.calibrated_threshold, threshold_overridden=sound.threshold_override is not None,
        calibration=sound.calibration, model_sha256=sound.model_sha256, created_unix_ms=sound.created_unix_ms,
        active=sound.active, problem=sound.problem,
        example_files=sum(e.kind == "file" for e in sound.examples),
        example_windows=sum(e.kind == "window" for e in sound.examples),
        span_ms=sound_span_ms(sound, windows), not_this=len(sound.not_this), calibrated_unix_ms=sound.calibrated_unix_ms)


def correction_to_pb(correction: Correction) -> pb.Correction:
    """The wire form of an activity correction."""
    return pb.Correction(window_id=correction.window_id, mic_id=correction.mic_id, start_unix_ms=correction.start_unix_ms,
                         end_unix_ms=correction.end_unix_ms, label=correction.label,
                         predicted_label=correction.predicted or "", created_unix_ms=correction.created_unix_ms,
                         model_sha256=correction.model_sha256 or "", window_kept=correction.window_kept)


def health_to_pb(mic: MicStatus) -> pb.MicrophoneHealth:
    """Current health of a microphone."""
    return pb.MicrophoneHealth(
        mic_id=mic.mic_id, state=HEALTH_TO_PB.get(mic.health_state or "", pb.HEALTH_STATE_UNSPECIFIED),
        reasons=list(mic.health_reasons), scores=mic.health_scores,
        last_window_end_unix_ms=mic.last_window_end_unix_ms or 0,
    )


def mic_to_pb(mic: MicStatus) -> pb.Microphone:
    """Status of one microphone."""
    return pb.Microphone(mic_id=mic.mic_id, device=mic.device, state=mic.state,
                         last_window_end_unix_ms=mic.last_window_end_unix_ms or 0,
                         health=health_to_pb(mic), label=mic.label or "",
                         label_kind=LABEL_KIND_TO_PB[label_kind(mic.label, mic.health_state)]
                         if mic.health_state else pb.LABEL_KIND_UNSPECIFIED)


# -- requests -> queries -------------------------------------------------------------------------
def query_from_pb(message: pb.EventFilter) -> EventQuery:
    """EventQuery for an EventFilter; Reject(INVALID_ARGUMENT) naming the bad field."""
    states = []
    for value in message.health_states:
        if value not in HEALTH_FROM_PB:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, f"filter.health_states: unsupported value {value}")
        states.append(HEALTH_FROM_PB[value])
    kinds = []
    for value in message.kinds:
        if value not in KIND_FROM_PB:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, f"filter.kinds: unsupported value {value}")
        kinds.append(KIND_FROM_PB[value])
    if message.since_unix_ms < 0 or message.until_unix_ms < 0:
        raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "filter.since_unix_ms/until_unix_ms must not be negative")
    if any(not mic for mic in message.mic_ids) or any(not label for label in message.labels):
        raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "filter.mic_ids/labels must not contain empty strings")
    try:
        return EventQuery(
            mic_ids=tuple(message.mic_ids), labels=tuple(message.labels), health_states=tuple(states),
            kinds=tuple(kinds), since_unix_ms=message.since_unix_ms or None, until_unix_ms=message.until_unix_ms or None,
        )
    except ValueError as exc:
        raise Reject(grpc.StatusCode.INVALID_ARGUMENT, f"filter: {exc}") from None


# -- error mapping -------------------------------------------------------------------------------
def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, str, str | None]:
    """Status code, client-facing message and machine-readable reason (or None) for an exception raised
    while serving."""
    if isinstance(exc, Reject):
        return exc.code, exc.message, None
    if isinstance(exc, AudioTooLarge):
        return grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc), None
    if isinstance(exc, AudioError):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), None
    if isinstance(exc, SoundError):
        return SOUND_ERROR_CODES[exc.reason], str(exc), exc.reason
    if isinstance(exc, CorrectionError):
        return CORRECTION_ERROR_CODES[exc.reason], str(exc), exc.reason
    if isinstance(exc, BackendUnavailable):
        return grpc.StatusCode.UNAVAILABLE, f"analysis backend unavailable: {exc}", REASON_BACKEND_UNAVAILABLE
    if isinstance(exc, (StoreError, BusClosed)):
        return grpc.StatusCode.UNAVAILABLE, "the daemon is shutting down or its store is unavailable", REASON_SHUTTING_DOWN
    if isinstance(exc, sqlite3.DatabaseError):  # a damaged store file: the integrity check logs what to do
        log.error("the store could not be read: %s", exc)
        return (grpc.StatusCode.DATA_LOSS, f"the event store is damaged ({exc}); see the roomtone log for what to do",
                REASON_STORE_DAMAGED)
    log.exception("unexpected error while serving a gRPC request")
    return grpc.StatusCode.INTERNAL, "internal error; see the roomtone daemon log", None


def _abort(context: grpc.ServicerContext, exc: BaseException, method: str) -> None:
    """Count the failed call and end it with its status; a reason travels as trailing metadata `REASON_KEY`,
    so clients tell "the daemon refused" from "no daemon" without reading the message."""
    code, message, reason = _status_of(exc)
    GRPC_REQUESTS.labels(method, code.name).inc()
    if reason is not None:
        context.set_trailing_metadata(((REASON_KEY, reason),))
    context.abort(code, message)


def _unary(method: Callable) -> Callable:
    """Count the call, map exceptions to status codes."""
    name = method.__name__

    @functools.wraps(method)
    def handler(self: RoomtoneServicer, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            response = method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a status code, never a traceback
            _abort(context, exc, name)
        GRPC_REQUESTS.labels(name, "OK").inc()
        return response

    return handler


def _streaming(method: Callable) -> Callable:
    """`_unary` for server-streaming methods; a client that goes away counts as CANCELLED."""
    name = method.__name__

    @functools.wraps(method)
    def handler(self: RoomtoneServicer, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except GeneratorExit:
            GRPC_REQUESTS.labels(name, "CANCELLED").inc()
            raise
        except Exception as exc:  # noqa: BLE001
            _abort(context, exc, name)
        GRPC_REQUESTS.labels(name, "OK" if context.is_active() else "CANCELLED").inc()

    return handler


class RoomtoneServicer(pb_grpc.RoomtoneServicer):
    """roomtone.v1.Roomtone over a store, a bus and a backend."""

    def __init__(self, store: EventStore, bus: EventBus, backend: ServiceBackend,
                 config: GrpcConfig = GrpcConfig(), sounds: SoundService | None = None,
                 corrections: CorrectionService | None = None) -> None:
        self.store, self.bus, self.backend, self.sounds = store, bus, backend, sounds
        self.corrections = corrections if corrections is not None else CorrectionService(store, ())
        self.max_upload_bytes = config.max_upload_bytes
        self.max_streams = config.max_streams
        # Each upload decodes to up to MAX_UPLOAD_SAMPLES floats (128 MiB) plus its windows: bound how many at once.
        self._uploads = threading.BoundedSemaphore(config.max_concurrent_uploads)
        self._upload_slots = config.max_concurrent_uploads
        # Building a page of 1,000 rows is Python work that holds the GIL: bound how many run at once, so
        # the pipeline keeps its share of the CPU under heavy reads (docs/reliability.md has the figures).
        self._reads = threading.BoundedSemaphore(config.max_concurrent_reads)
        self._read_slots = config.max_concurrent_reads
        self._streams = 0
        self._streams_lock = threading.Lock()

    def _check_upload(self, data: bytes, field: str) -> bytes:
        if not data:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: empty audio upload (0 bytes)")
        if len(data) > self.max_upload_bytes:
            raise Reject(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"{field}: upload of {len(data)} bytes exceeds the limit of {self.max_upload_bytes} bytes")
        # What it decodes to (a few MB of FLAC can claim gigabytes) is checked from its header by the decode
        # itself (encoder.audio, MAX_UPLOAD_SAMPLES after mixing and resampling), before any sample is decoded.
        return data

    @contextlib.contextmanager
    def _slot(self, slots: threading.Semaphore, context: grpc.ServicerContext, margin_s: float, busy: str) -> Iterator[None]:
        """Hold one of ``slots``; waits while the client's deadline (less ``margin_s`` for the work itself, at
        most UPLOAD_WAIT_S) allows, then RESOURCE_EXHAUSTED with ``busy``."""
        remaining = context.time_remaining()
        wait = UPLOAD_WAIT_S if remaining is None else max(0.0, min(UPLOAD_WAIT_S, remaining - margin_s))
        if not slots.acquire(timeout=wait):
            raise Reject(grpc.StatusCode.RESOURCE_EXHAUSTED, busy)
        try:
            yield
        finally:
            slots.release()

    def _read_slot(self, context: grpc.ServicerContext) -> contextlib.AbstractContextManager[None]:
        """One of ``max_concurrent_reads`` page-building slots."""
        return self._slot(self._reads, context, 0.5,
                          f"{self._read_slots} pages are being read (grpc.max_concurrent_reads); try again shortly")

    def _upload_slot(self, context: grpc.ServicerContext) -> contextlib.AbstractContextManager[None]:
        """One of ``max_concurrent_uploads`` decode slots."""
        return self._slot(self._uploads, context, 1.0,
                          f"{self._upload_slots} uploads are being analysed (grpc.max_concurrent_uploads); try again shortly")

    def _mic(self, mic_id: str) -> MicStatus:
        for mic in self.backend.microphones():
            if mic.mic_id == mic_id:
                return mic
        raise Reject(grpc.StatusCode.NOT_FOUND, f"no microphone {mic_id!r}")

    @_unary
    def ListMicrophones(self, request: pb.ListMicrophonesRequest, context: grpc.ServicerContext) -> pb.ListMicrophonesResponse:
        """Every microphone of the backend, sorted by id."""
        mics = sorted(self.backend.microphones(), key=lambda m: m.mic_id)
        return pb.ListMicrophonesResponse(microphones=[mic_to_pb(m) for m in mics])

    @_unary
    def GetMicrophoneHealth(self, request: pb.GetMicrophoneHealthRequest, context: grpc.ServicerContext) -> pb.MicrophoneHealth:
        """Health of one microphone; INVALID_ARGUMENT without mic_id, NOT_FOUND for an unknown one."""
        if not request.mic_id:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "mic_id is required")
        return health_to_pb(self._mic(request.mic_id))

    @_unary
    def ListEvents(self, request: pb.ListEventsRequest, context: grpc.ServicerContext) -> pb.ListEventsResponse:
        """One page of stored windows and state changes, newest first."""
        if not 0 <= request.limit <= MAX_PAGE:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, f"limit must be between 0 and {MAX_PAGE}, got {request.limit}")
        query = query_from_pb(request.filter)
        with self._read_slot(context):
            try:
                page = self.store.list_events(query, request.limit or 100, request.page_token)
            except ValueError as exc:
                raise Reject(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            return pb.ListEventsResponse(events=[event_to_pb(i) for i in page.items], next_page_token=page.next_page_token)

    @_unary
    def ListSessions(self, request: pb.ListSessionsRequest, context: grpc.ServicerContext) -> pb.ListSessionsResponse:
        """One page of stored activity sessions, newest start first."""
        if not 0 <= request.limit <= MAX_PAGE:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, f"limit must be between 0 and {MAX_PAGE}, got {request.limit}")
        if request.since_unix_ms < 0 or request.until_unix_ms < 0:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "since_unix_ms/until_unix_ms must not be negative")
        if any(not v for v in request.mic_ids) or any(not v for v in request.activities):
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "mic_ids/activities must not contain empty strings")
        try:
            query = SessionQuery(tuple(request.mic_ids), tuple(request.activities), request.since_unix_ms or None,
                                 request.until_unix_ms or None, request.open_only)
            page = self.store.list_sessions(query, request.limit or 100, request.page_token)
        except ValueError as exc:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        return pb.ListSessionsResponse(sessions=[session_to_pb(s) for s in page.sessions],
                                       next_page_token=page.next_page_token)

    @_streaming
    def StreamEvents(self, request: pb.StreamEventsRequest, context: grpc.ServicerContext) -> Iterator[pb.Event]:
        """Optionally the latest stored items, then live ones (with gaps where this client was too slow)."""
        if not 0 <= request.replay_last <= MAX_PAGE:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, f"replay_last must be between 0 and {MAX_PAGE}, got {request.replay_last}")
        query = query_from_pb(request.filter)
        live = EventQuery(query.mic_ids, query.labels, query.health_states, query.kinds, query.since_unix_ms, None)
        with self._streams_lock:
            if self._streams >= self.max_streams:
                raise Reject(grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many live streams (limit {self.max_streams}); try again later")
            self._streams += 1
        subscription = None
        reported = 0
        try:
            try:
                subscription = self.bus.subscribe(live.matches)  # before the replay, so nothing falls in between
            except OverflowError as exc:
                raise Reject(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{exc}; try again later") from None
            context.add_callback(subscription.close)  # wakes the loop below when the client goes away
            last_window = last_event = 0
            if request.replay_last:
                for item in reversed(self.store.list_events(query, request.replay_last).items):
                    if isinstance(item, WindowResult):
                        last_window = max(last_window, item.window_id or 0)
                    else:
                        last_event = max(last_event, item.event_id or 0)
                    yield event_to_pb(item)
            while context.is_active():
                try:
                    entry = subscription.get(timeout=0.5)
                except BusClosed:
                    return
                if entry is None:
                    continue
                if isinstance(entry, Gap):
                    reported += entry.dropped
                    STREAM_ITEMS_DROPPED.inc(entry.dropped)
                elif isinstance(entry, WindowResult) and entry.window_id is not None and entry.window_id <= last_window:
                    continue  # already sent by the replay
                elif isinstance(entry, StateChange) and entry.event_id is not None and entry.event_id <= last_event:
                    continue
                yield event_to_pb(entry)
        finally:
            if subscription is not None:
                subscription.close()
                if subscription.dropped_total > reported:
                    STREAM_ITEMS_DROPPED.inc(subscription.dropped_total - reported)
            with self._streams_lock:
                self._streams -= 1

    @_unary
    def FindSimilar(self, request: pb.FindSimilarRequest, context: grpc.ServicerContext) -> pb.FindSimilarResponse:
        """Nearest stored windows to a stored window or to uploaded audio."""
        if not 0 <= request.k <= MAX_K:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, f"k must be between 0 and {MAX_K}, got {request.k}")
        if any(not mic for mic in request.mic_ids):
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "mic_ids must not contain empty strings")
        which = request.WhichOneof("query")
        exclude: list[int] = []
        if which == "window_id":
            window = self.store.get_window(request.window_id)
            if window is None:
                raise Reject(grpc.StatusCode.NOT_FOUND, f"no stored window {request.window_id}")
            if window.embedding is None:
                raise Reject(grpc.StatusCode.FAILED_PRECONDITION, f"window {request.window_id} has no stored embedding")
            query, exclude = window.embedding, [request.window_id]
        elif which == "audio":
            with self._upload_slot(context):
                embeddings = np.asarray(self.backend.embed_audio_bytes(self._check_upload(request.audio, "audio")),
                                        dtype=np.float32)
            if embeddings.ndim != 2 or embeddings.shape[0] == 0:
                raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "audio: too short for one analysis window")
            query = embeddings.mean(axis=0)
            if not np.linalg.norm(query) > 0:
                raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "audio: its windows' embeddings cancel out; upload a longer or single-sound clip")
        else:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "set either window_id or audio")
        result = self.store.nearest(query, request.k or 10, list(request.mic_ids) or None, exclude_ids=exclude)
        return pb.FindSimilarResponse(
            neighbors=[pb.Neighbor(window=window_to_pb(w), distance=d) for w, d in result.neighbors], searched=result.searched)

    @_unary
    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        """Per-window analysis of uploaded audio; nothing is stored."""
        with self._upload_slot(context):
            windows = self.backend.analyse_audio(self._check_upload(request.audio, "audio"))
        return pb.ClassifyResponse(windows=[window_to_pb(w, request.include_embedding) for w in windows])

    def _sound_service(self) -> SoundService:
        if self.sounds is None:
            raise Reject(grpc.StatusCode.FAILED_PRECONDITION, "custom sounds are off in this daemon (sounds.enabled = false)")
        return self.sounds

    @_unary
    def AddSound(self, request: pb.AddSoundRequest, context: grpc.ServicerContext) -> pb.Sound:
        """Teach a custom sound from uploaded audio and/or stored windows."""
        service = self._sound_service()
        audio = [(f"audio[{i}]", self._check_upload(data, f"audio[{i}]")) for i, data in enumerate(request.audio)]
        threshold = request.threshold if request.HasField("threshold") else None
        with self._upload_slot(context):  # decoding and embedding examples is an upload like Classify's
            return sound_to_pb(service.add(request.name, audio, list(request.window_ids), threshold, request.replace),
                               service.windows)

    @_unary
    def ListSounds(self, request: pb.ListSoundsRequest, context: grpc.ServicerContext) -> pb.ListSoundsResponse:
        """Every custom sound, sorted by name."""
        service = self._sound_service()
        return pb.ListSoundsResponse(sounds=[sound_to_pb(s, service.windows) for s in service.library.sounds()])

    @_unary
    def RemoveSound(self, request: pb.RemoveSoundRequest, context: grpc.ServicerContext) -> pb.RemoveSoundResponse:
        """Forget a custom sound."""
        if not request.name:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "name is required")
        self._sound_service().library.remove(request.name)
        return pb.RemoveSoundResponse()

    @_unary
    def MarkNotThis(self, request: pb.MarkNotThisRequest, context: grpc.ServicerContext) -> pb.Sound:
        """A detection was wrong: its window becomes a negative example and the sound recalibrates."""
        if not request.name:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "name is required")
        if (request.window_id > 0) == (request.event_id > 0):
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "give exactly one of window_id and event_id (> 0)")
        service = self._sound_service()
        window_id = request.window_id or service.detection_window(request.name, request.event_id)
        return sound_to_pb(service.not_this(request.name, window_id), service.windows)


    @_unary
    def CorrectWindow(self, request: pb.CorrectWindowRequest, context: grpc.ServicerContext) -> pb.Correction:
        """Record what a stored window really was."""
        if request.window_id <= 0 or not request.label:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "window_id (> 0) and label are required")
        return correction_to_pb(self.corrections.correct(request.window_id, request.label))

    @_unary
    def ListCorrections(self, request: pb.ListCorrectionsRequest,
                        context: grpc.ServicerContext) -> pb.ListCorrectionsResponse:
        """Every correction, newest first, filtered by microphone and label."""
        found = self.corrections.list(tuple(request.mic_ids), tuple(request.labels))
        return pb.ListCorrectionsResponse(corrections=[correction_to_pb(c) for c in found])

    @_unary
    def RemoveCorrection(self, request: pb.RemoveCorrectionRequest,
                         context: grpc.ServicerContext) -> pb.RemoveCorrectionResponse:
        """Forget the correction of a window."""
        if request.window_id <= 0:
            raise Reject(grpc.StatusCode.INVALID_ARGUMENT, "window_id (> 0) is required")
        self.corrections.remove(request.window_id)
        return pb.RemoveCorrectionResponse()


def _bind_host(address: str) -> str:
    """The host part of host:port (IPv6 in brackets kept as is)."""
    return address.rsplit(":", 1)[0]


def event_bus_for(config: GrpcConfig) -> EventBus:
    """The bus StreamEvents reads: room for every stream ``config`` allows plus the in-process subscribers."""
    return EventBus(max_subscribers=config.max_streams + IN_PROCESS_SUBSCRIBERS)


def start_server(
    store: EventStore,
    bus: EventBus,
    backend: ServiceBackend,
    config: GrpcConfig = GrpcConfig(),
    *,
    security: ServerSecurity | None = None,
    sounds: SoundService | None = None,
    corrections: CorrectionService | None = None,
) -> grpc.Server:
    """Start roomtone.v1.Roomtone + grpc.health.v1 + reflection on ``config.address`` (port 0 = any free port).

    The bound address is ``server.roomtone_address``; stop with `stop_server`. Raises OSError naming the
    gRPC listener when the address cannot be bound. Build ``bus`` with `event_bus_for` (same config).
    """
    address, max_upload_bytes, max_streams = config.address, config.max_upload_bytes, config.max_streams
    # Each live stream holds a worker thread; keep 8 for unary calls.
    interceptors = [BearerTokenInterceptor(security.token)] if security is not None and security.token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_streams + 8, thread_name_prefix="grpc"),
        interceptors=interceptors,
        options=[
            # room for the request envelope around an upload that is exactly at the limit; anything
            # larger than this is refused by gRPC itself with RESOURCE_EXHAUSTED
            ("grpc.max_receive_message_length", max_upload_bytes + 1024 * 1024),
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ("grpc.so_reuseport", 0),  # a second daemon on the same port must fail, not share it
        ],
    )
    pb_grpc.add_RoomtoneServicer_to_server(RoomtoneServicer(store, bus, backend, config, sounds, corrections), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(server, (SERVICE_NAME,))
    try:
        if security is None:
            port = server.add_insecure_port(address)
        else:
            credentials = grpc.ssl_server_credentials(
                [(security.private_key, security.cert_chain)], root_certificates=security.client_ca,
                require_client_auth=security.client_ca is not None)
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise OSError(f"gRPC API (grpc.address): cannot listen on {address}: {exc} "
                      f"(address in use, e.g. by another roomtone, or not local?)") from None
    if not port:
        raise OSError(f"gRPC API (grpc.address): cannot listen on {address} "
                      f"(address in use, e.g. by another roomtone, or not local?)")
    server.start()
    for service in ("", SERVICE_NAME):
        health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    server.roomtone_address = f"{_bind_host(address)}:{port}"  # type: ignore[attr-defined]
    server.roomtone_health = health_servicer  # type: ignore[attr-defined]
    log.info("gRPC API listening on %s (max upload %d bytes)", server.roomtone_address, max_upload_bytes)
    return server


def set_serving(server: grpc.Server, serving: bool) -> None:
    """Report SERVING or NOT_SERVING on grpc.health.v1 (both the server and roomtone.v1.Roomtone), e.g.
    NOT_SERVING while the store's integrity check fails."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", SERVICE_NAME):
        server.roomtone_health.set(service, status)


def stop_server(server: grpc.Server, grace_s: float = 2.0) -> None:
    """Report NOT_SERVING, let running calls finish for ``grace_s`` seconds, then stop."""
    health_servicer = getattr(server, "roomtone_health", None)
    if health_servicer is not None:
        health_servicer.enter_graceful_shutdown()
    server.stop(grace_s).wait()
