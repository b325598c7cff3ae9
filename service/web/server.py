"""The daemon's web page: an aiohttp application on its own thread and event loop.

Routes: the page (``/``, ``/timeline``, ``/window/{id}``, ``/mics``: one HTML file, the ES modules pick the
view from the path), its static files, a small JSON API under ``/api/`` and the live stream
``/api/live`` (Server-Sent Events). Errors are an HTML page for the page routes and
``{"error": {"reason", "message"}}`` for the API, never a traceback.

Exposure: like gRPC, beyond loopback only with TLS and authentication (checked when the config is loaded,
service/config.py `_check_listener`, the same rule as gRPC's):
a bearer token (``token_file``; browsers send it as the password of HTTP Basic) or client certificates
(``client_ca``, mTLS). Clips are audio of people at home and are served under the same rule.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import html
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from encoder.windows import WindowSpec
from service.store.clips import CODECS, ClipStore
from service.config import WebConfig
from service.store.event_store import EventQuery, EventStore
from service.logs import ThrottledLog
from service.records import MicStatus
from service.web.connections import ACCEPT_BACKLOG, ConnectionGuard, GuardedSite
from service.web.live import LiveFeed
from service.web.origins import AllowedOrigins
from service.web.timeline_summary import bucket_ms_for, timeline_runs
from service.web.views import change_json, correction_json, mic_json, run_json, session_json, window_json

log = logging.getLogger("roomtone.web")

STATIC = Path(__file__).resolve().parent / "static"
#: Paths that serve the page; the ES modules choose the view from the path.
PAGE_ROUTES = ("/", "/timeline", "/mics", "/corrections")
MAX_SIMILAR = 50
MAX_LIST = 10000
#: Buckets of `/api/timeline`: the page asks for one per unit of its 1000-wide lanes.
DEFAULT_TIMELINE_BUCKETS = 1000
MAX_TIMELINE_BUCKETS = 5000


@dataclass
class WebBackend:
    """What the page reads from the running daemon."""

    store: EventStore
    feed: LiveFeed
    microphones: Callable[[], list[MicStatus]]
    windows: WindowSpec  # the pipeline's (shown in /api/status; the timeline joins cells one hop apart)
    class_names: tuple[str, ...] = ()
    clips: ClipStore | None = None
    clips_keep: str = "none"
    sessions_enabled: bool = False  # activity sessions are tracked ([sessions] enabled): the timeline shows them
    sounds: object | None = None  # service.analysis.sound_library.SoundService: "this is a..." teaches custom sounds
    corrections: object | None = None  # service.store.corrections.CorrectionService: "this was really a..."
    extra: dict = field(default_factory=dict)  # shown in /api/status (model sha, version)


BACKEND = web.AppKey("backend", WebBackend)
MAX_PAGES = web.AppKey("max_pages", int)
#: Largest magnitude of an integer query parameter (SQLite's INTEGER is 64-bit).
INT_PARAM_LIMIT = 2**63 - 1


@dataclass
class OriginsHolder:
    """The page's allowed hosts and origins; replaced once the listener knows its port."""

    allowed: AllowedOrigins


ORIGINS = web.AppKey("origins", OriginsHolder)


class ApiError(Exception):
    """A request the API refuses: HTTP status, machine-readable reason, message for people."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


# --- request parsing ---------------------------------------------------------------------------------

def _int_param(request: web.Request, name: str, default: int | None = None, lo: int | None = None,
               hi: int | None = None) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw) if len(raw) <= 20 else None
    except ValueError:
        value = None
    if value is None or abs(value) > INT_PARAM_LIMIT:
        raise ApiError(400, "bad_parameter", f"{name} must be a whole number of at most 19 digits, got {raw[:40]!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ApiError(400, "bad_parameter", f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _window_id(request: web.Request) -> int:
    raw = request.match_info["window_id"]
    if not raw.isdigit() or len(raw) > 18:
        raise ApiError(400, "bad_window_id", f"window id must be a positive whole number, got {raw!r}")
    return int(raw)


def _query(request: web.Request, kinds: tuple[str, ...]) -> EventQuery:
    mics = tuple(m for m in request.query.getall("mic", []) if m)
    try:
        return EventQuery(mic_ids=mics, kinds=kinds, since_unix_ms=_int_param(request, "since_ms"),
                          until_unix_ms=_int_param(request, "until_ms"))
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", str(exc)) from None


# --- handlers ----------------------------------------------------------------------------------------

def _backend(request: web.Request) -> WebBackend:
    return request.app[BACKEND]


async def _in_thread(function, *args):
    """Run blocking store calls off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def page(request: web.Request) -> web.FileResponse:
    """The single HTML page; the view follows from the path."""
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def window_page(request: web.Request) -> web.FileResponse:
    """The page for ``/window/{id}``, after checking the window exists (400/404 otherwise)."""
    window_id = _window_id(request)
    if await _in_thread(_backend(request).store.get_window, window_id, False) is None:
        raise ApiError(404, "window_not_found", f"no stored window {window_id} (it may have been deleted by retention)")
    return await page(request)


async def status(request: web.Request) -> web.Response:
    """Microphones, classes, window length, clip mode and the recent live windows (the Now view's start)."""
    backend = _backend(request)
    mics = await _in_thread(backend.microphones)
    return web.json_response({
        "mics": [mic_json(m) for m in mics], "classes": list(backend.class_names),
        "window_s": backend.windows.window_s, "hop_s": backend.windows.step_s, "clips": backend.clips_keep,
        "sessions": backend.sessions_enabled, "sounds": backend.sounds is not None,
        "corrections": backend.corrections is not None,
        "recent": backend.feed.recent(), **backend.extra})


async def list_windows(request: web.Request) -> web.Response:
    """Stored windows, newest first: ``?mic=&since_ms=&until_ms=&limit=&page=``."""
    backend = _backend(request)
    limit = _int_param(request, "limit", 500, 1, MAX_LIST)
    try:
        found = await _in_thread(backend.store.list_windows, _query(request, ("window",)), limit,
                                 request.query.get("page", ""))
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", str(exc)) from None
    return web.json_response({"windows": [window_json(w) for w in found.items], "next_page": found.next_page_token})


async def timeline(request: web.Request) -> web.Response:
    """Runs of windows with the same activity per microphone, at most one per bucket (the timeline's lanes):
    ``?since_ms=&until_ms=&mic=&buckets=``; ``until_ms`` defaults to now."""
    backend = _backend(request)
    since = _int_param(request, "since_ms")
    if since is None:
        raise ApiError(400, "bad_parameter", "since_ms is required (the start of the span, unix ms)")
    until = _int_param(request, "until_ms", int(time.time() * 1000))
    buckets = _int_param(request, "buckets", DEFAULT_TIMELINE_BUCKETS, 1, MAX_TIMELINE_BUCKETS)
    mics = tuple(m for m in request.query.getall("mic", []) if m)
    bucket_ms = bucket_ms_for(since, until, buckets)
    try:
        query = EventQuery(mic_ids=mics, kinds=("window",), since_unix_ms=since, until_unix_ms=until)
        cells = await _in_thread(backend.store.label_buckets, query, since, bucket_ms)
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", str(exc)) from None
    runs = timeline_runs(cells, max_gap_ms=round(1.5 * backend.windows.step_s * 1000))
    return web.json_response({
        "since_ms": since, "until_ms": until, "bucket_ms": bucket_ms, "windows": sum(c.windows for c in cells),
        "oldest_start_ms": min((c.start_unix_ms for c in cells), default=None), "runs": [run_json(r) for r in runs]})


async def list_changes(request: web.Request) -> web.Response:
    """Stored activity/health changes, newest first: ``?kind=health_changed&mic=&since_ms=&until_ms=&limit=``."""
    backend = _backend(request)
    kinds = tuple(request.query.getall("kind", [])) or ("activity_changed", "health_changed")
    if "window" in kinds:
        raise ApiError(400, "bad_parameter", "kind: use /api/windows for windows")
    limit = _int_param(request, "limit", 500, 1, MAX_LIST)
    try:
        found = await _in_thread(backend.store.list_events, _query(request, kinds), limit, request.query.get("page", ""))
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", str(exc)) from None
    return web.json_response({"changes": [change_json(c) for c in found.items], "next_page": found.next_page_token})


async def list_sessions(request: web.Request) -> web.Response:
    """Activity sessions, newest start first: ``?mic=&since_ms=&until_ms=&limit=&page=`` (sessions still going
    at ``since_ms`` included)."""
    from service.store.session_store import SessionQuery

    backend = _backend(request)
    limit = _int_param(request, "limit", 500, 1, MAX_LIST)
    try:
        query = SessionQuery(mic_ids=tuple(m for m in request.query.getall("mic", []) if m),
                             since_unix_ms=_int_param(request, "since_ms"), until_unix_ms=_int_param(request, "until_ms"))
        found = await _in_thread(backend.store.list_sessions, query, limit, request.query.get("page", ""))
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", str(exc)) from None
    return web.json_response({"sessions": [session_json(s) for s in found.sessions], "next_page": found.next_page_token,
                              "enabled": backend.sessions_enabled})


#: SoundError reasons (service/analysis/sound_library.py) -> HTTP status.
SOUND_STATUS = {"invalid_argument": 400, "not_found": 404, "already_exists": 409, "failed_precondition": 409,
                "resource_exhausted": 409}


def _sound_json(sound) -> dict:
    return {"name": sound.name, "active": sound.active, "problem": sound.problem, "threshold": sound.threshold,
            "examples": len(sound.examples), "not_this": len(sound.not_this),
            "window_ids": [e.window_id for e in sound.examples if e.kind == "window"]}


def teach_from_window(service, name: str, window_id: int):
    """Teach the custom sound ``name`` this stored window: a new sound, or one more example of a sound taught
    from windows (its threshold is recalibrated); SoundError says why not."""
    from service.analysis.sound_library import SoundError

    existing = next((s for s in service.library.sounds() if s.name == name), None)
    if existing is None:
        return service.add(name, window_ids=[window_id])
    if any(e.kind != "window" for e in existing.examples):
        raise SoundError("failed_precondition", f"sound {name!r} was taught from audio files; add this window with "
                                                f"`roomtone sounds add {name} FILE... --window-id {window_id} --replace`")
    ids = [e.window_id for e in existing.examples]
    if window_id in ids:
        raise SoundError("already_exists", f"window {window_id} is already an example of {name!r}")
    return service.add(name, window_ids=ids + [window_id], threshold=existing.threshold_override, replace_existing=True)


async def list_sounds(request: web.Request) -> web.Response:
    """The custom sounds the daemon detects (empty with ``[sounds] enabled = false``)."""
    service = _backend(request).sounds
    sounds = service.library.sounds() if service is not None else []
    return web.json_response({"enabled": service is not None, "sounds": [_sound_json(s) for s in sounds]})


async def teach_sound(request: web.Request) -> web.Response:
    """"This is a...": ``POST {"name": "doorbell"}`` adds this window to that custom sound (AddSound)."""
    from service.analysis.sound_library import SoundError

    service, window_id, name = await _sound_request(request)
    try:
        sound = await _in_thread(teach_from_window, service, name.strip(), window_id)
    except SoundError as exc:
        raise ApiError(SOUND_STATUS.get(exc.reason, 400), exc.reason, str(exc)) from None
    return web.json_response({"sound": _sound_json(sound)})


async def _sound_request(request: web.Request):
    """(sound service, window id, sound name) of a ``POST /api/windows/{id}/...`` ``{"name": ...}`` request."""
    service = _backend(request).sounds
    window_id = _window_id(request)
    if service is None:
        raise ApiError(409, "sounds_disabled", "custom sounds are off ([sounds] enabled = false)")
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # malformed, or nested deeper than the parser's recursion allows
        raise ApiError(400, "bad_body", "send JSON: {\"name\": \"<sound name>\"}") from None
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        raise ApiError(400, "bad_body", "send JSON: {\"name\": \"<sound name>\"}")
    return service, window_id, name


async def not_this(request: web.Request) -> web.Response:
    """"Not this": ``POST {"name": "doorbell"}`` marks that sound's detection in this window as wrong (MarkNotThis)."""
    from service.analysis.sound_library import SoundError

    service, window_id, name = await _sound_request(request)
    try:
        sound = await _in_thread(service.not_this, name.strip(), window_id)
    except SoundError as exc:
        raise ApiError(SOUND_STATUS.get(exc.reason, 400), exc.reason, str(exc)) from None
    return web.json_response({"sound": _sound_json(sound)})


CORRECTION_STATUS = {"invalid_argument": 400, "not_found": 404, "failed_precondition": 409}


def _corrections(request: web.Request):
    service = _backend(request).corrections
    if service is None:
        raise ApiError(409, "corrections_unavailable", "this daemon serves no corrections")
    return service


async def list_corrections(request: web.Request) -> web.Response:
    """Every activity correction, newest first (``mic`` and ``label`` filter, repeatable), and the classes a
    window can be corrected to."""
    service = _corrections(request)
    found = await _in_thread(service.list, tuple(request.query.getall("mic", [])), tuple(request.query.getall("label", [])))
    return web.json_response({"classes": list(service.class_names), "corrections": [correction_json(c) for c in found]})


async def correct_window(request: web.Request) -> web.Response:
    """"This was really a...": ``POST {"label": "speech"}`` records what this window really was (CorrectWindow)."""
    from service.store.corrections import CorrectionError

    service, window_id = _corrections(request), _window_id(request)
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # malformed, or nested deeper than the parser's recursion allows
        raise ApiError(400, "bad_body", "send JSON: {\"label\": \"<one of the head's classes>\"}") from None
    label = body.get("label") if isinstance(body, dict) else None
    if not isinstance(label, str):
        raise ApiError(400, "bad_body", "send JSON: {\"label\": \"<one of the head's classes>\"}")
    try:
        correction = await _in_thread(service.correct, window_id, label)
    except CorrectionError as exc:
        raise ApiError(CORRECTION_STATUS[exc.reason], exc.reason, str(exc)) from None
    return web.json_response({"correction": correction_json(correction)})


async def remove_correction(request: web.Request) -> web.Response:
    """``DELETE`` forgets this window's correction (RemoveCorrection)."""
    from service.store.corrections import CorrectionError

    service, window_id = _corrections(request), _window_id(request)
    try:
        await _in_thread(service.remove, window_id)
    except CorrectionError as exc:
        raise ApiError(CORRECTION_STATUS[exc.reason], exc.reason, str(exc)) from None
    return web.json_response({"removed": window_id})


def _window_correction(backend: WebBackend, window_id: int):
    """The correction of one window, or None."""
    found = backend.store.list_corrections(window_ids=[window_id]) if backend.corrections is not None else []
    return found[0] if found else None


async def get_window(request: web.Request) -> web.Response:
    """One stored window: probabilities, health scores (drift included), whether its clip is kept and its
    correction."""
    backend = _backend(request)
    window_id = _window_id(request)
    window = await _in_thread(backend.store.get_window, window_id, False)
    if window is None:
        raise ApiError(404, "window_not_found", f"no stored window {window_id}")
    clip = backend.clips.find(window.mic_id, window.start_unix_ms) if backend.clips else None
    detections = await _in_thread(backend.store.sound_detections, window_id)
    marked = ({s.name for s in backend.sounds.library.sounds() if any(n.window_id == window_id for n in s.not_this)}
              if backend.sounds is not None else set())
    correction = await _in_thread(_window_correction, backend, window_id)
    return web.json_response({**window_json(window), "clip_url": f"/api/windows/{window_id}/clip" if clip else None,
                              "detections": [{**change_json(c), "not_this": c.current in marked} for c in detections],
                              "correction": None if correction is None else correction_json(correction)})


async def similar(request: web.Request) -> web.Response:
    """The stored windows nearest to this one (FindSimilar): ``?k=10&mic=``."""
    backend = _backend(request)
    window_id = _window_id(request)
    k = _int_param(request, "k", 10, 1, MAX_SIMILAR)
    window = await _in_thread(backend.store.get_window, window_id, True)
    if window is None:
        raise ApiError(404, "window_not_found", f"no stored window {window_id}")
    if window.embedding is None:
        raise ApiError(409, "no_embedding", f"window {window_id} has no stored embedding")
    mics = [m for m in request.query.getall("mic", []) if m] or None
    result = await _in_thread(lambda: backend.store.nearest(window.embedding, k, mics, exclude_ids=[window_id]))
    return web.json_response({"neighbors": [{"window": window_json(w), "distance": d} for w, d in result.neighbors],
                              "searched": result.searched})


async def clip(request: web.Request) -> web.FileResponse:
    """A window's kept audio (FLAC or Ogg/Opus); 404 when clips are off or this one is not kept."""
    backend = _backend(request)
    window_id = _window_id(request)
    if backend.clips is None:
        raise ApiError(404, "clips_disabled", "clips are not kept ([clips] keep = \"none\"); see docs/web.md")
    window = await _in_thread(backend.store.get_window, window_id, False)
    if window is None:
        raise ApiError(404, "window_not_found", f"no stored window {window_id}")
    path = backend.clips.find(window.mic_id, window.start_unix_ms)
    if path is None:
        raise ApiError(404, "clip_not_kept", f"window {window_id} has no kept clip (clips.keep = "
                                             f"\"{backend.clips_keep}\", or it expired)")
    content_type = next(c[3] for c in CODECS.values() if c[2] == path.suffix)
    return web.FileResponse(path, headers={"Content-Type": content_type, "Cache-Control": "private, max-age=3600"})


async def live(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``window`` (a stored live window with its log-Mel strip) and ``change``."""
    feed = _backend(request).feed
    limit = request.app[MAX_PAGES]
    if feed.page_count() >= limit:
        raise ApiError(503, "too_many_pages", f"too many open live pages ({limit}, web.max_pages); close one")
    stream = feed.open_page()
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        reported = 0
        while True:
            try:
                frame = await asyncio.wait_for(stream.queue.get(), timeout=15.0)
            except asyncio.TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if frame is None:
                break
            if stream.dropped > reported:
                await response.write(f"event: gap\ndata: {stream.dropped - reported}\n\n".encode())
                reported = stream.dropped
            await response.write(frame.encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        feed.close_page(stream)
    return response


# --- middleware: authentication and error pages ----------------------------------------------------------

def _authorised(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip().encode(), token.encode())
    if scheme.lower() == "basic":
        try:
            password = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), token.encode())
    return False


def _same_origin_json(request: web.Request, origins: AllowedOrigins) -> bool:
    """A change request a page of another site cannot forge: JSON (a cross-site form cannot send it without a
    CORS preflight, which is never granted) and, when the browser says where it comes from, one of this page's
    origins (`AllowedOrigins`; never compared with the request's own Host, which the attacker also sends)."""
    if request.content_type != "application/json":
        return False
    origin = request.headers.get("Origin")
    return origin is None or origins.origin_allowed(origin)


def _error_page(status: int, reason: str, message: str) -> web.Response:
    title = {400: "Bad request", 401: "Authentication needed", 403: "Forbidden", 404: "Not found",
             405: "Method not allowed", 503: "Busy"}.get(status, "Error")
    body = (f"<!doctype html><html lang=en><meta charset=utf-8><link rel=icon href=data:,><title>{title} · roomtone</title>"
            f"<link rel=stylesheet href=/static/style.css><main class=error-page><h1>{title}</h1>"
            f"<p class=error-message>{html.escape(message)}</p><p><code>reason: {html.escape(reason)}</code></p>"
            f"<p><a href=/>Back to the live view</a></p></main></html>")
    return web.Response(status=status, text=body, content_type="text/html")


def _error(request: web.Request, status: int, reason: str, message: str) -> web.Response:
    if request.path.startswith("/api/"):
        return web.json_response({"error": {"reason": reason, "message": message}}, status=status)
    return _error_page(status, reason, message)


def make_app(backend: WebBackend, token: str | None = None, max_pages: int = 64,
             origins: AllowedOrigins | None = None) -> web.Application:
    """The aiohttp application serving ``backend``; with ``token`` every request must carry it. Requests must
    name an allowed host (``origins``, loopback by default) in ``Host``: DNS rebinding gets 403."""
    holder = OriginsHolder(origins or AllowedOrigins.of("http", "127.0.0.1"))
    refused_host = ThrottledLog(log, "web request for a host this page does not answer to refused (DNS rebinding, or "
                                     "a name missing from [web] hosts)")

    @web.middleware
    async def guard(request: web.Request, handler):
        allowed = holder.allowed
        if not allowed.host_allowed(request.headers.get("Host")):
            refused_host.note(host=request.headers.get("Host", "")[:80], path=request.path[:80])
            return _error(request, 403, "unknown_host",
                          f"this roomtone page does not answer to the host {request.headers.get('Host', '')[:80]!r}: "
                          "open it by a loopback address or name, or list the name in [web] hosts")
        if request.method not in ("GET", "HEAD") and not _same_origin_json(request, allowed):
            return _error(request, 403, "cross_origin", "changes are accepted only as JSON from this page's own origin")
        if token is not None and not _authorised(request, token):
            response = _error(request, 401, "unauthenticated",
                              "this roomtone page needs the token (HTTP Basic password, or Authorization: Bearer)")
            response.headers["WWW-Authenticate"] = 'Basic realm="roomtone", charset="UTF-8"'
            return response
        try:
            return await handler(request)
        except ApiError as exc:
            return _error(request, exc.status, exc.reason, exc.message)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
            message = {404: f"nothing here: {request.path}",
                       405: f"{request.method} is not allowed on {request.path}"}.get(exc.status, exc.text or exc.reason)
            return _error(request, exc.status, reason, message)
        except Exception:
            log.exception("web request failed", extra={"path": request.path})
            return _error(request, 500, "internal", "the daemon failed to answer this request; its log has the details")

    app = web.Application(middlewares=[guard])
    app[BACKEND] = backend
    app[MAX_PAGES] = max_pages
    app[ORIGINS] = holder
    for path in PAGE_ROUTES:
        app.router.add_get(path, page)
    app.router.add_get("/window/{window_id}", window_page)
    app.router.add_get("/api/status", status)
    app.router.add_get("/api/live", live)
    app.router.add_get("/api/windows", list_windows)
    app.router.add_get("/api/changes", list_changes)
    app.router.add_get("/api/timeline", timeline)
    app.router.add_get("/api/sessions", list_sessions)
    app.router.add_get("/api/sounds", list_sounds)
    app.router.add_post("/api/windows/{window_id}/sound", teach_sound)
    app.router.add_post("/api/windows/{window_id}/not-this", not_this)
    app.router.add_get("/api/corrections", list_corrections)
    app.router.add_post("/api/windows/{window_id}/correction", correct_window)
    app.router.add_delete("/api/windows/{window_id}/correction", remove_correction)
    app.router.add_get("/api/windows/{window_id}", get_window)
    app.router.add_get("/api/windows/{window_id}/similar", similar)
    app.router.add_get("/api/windows/{window_id}/clip", clip)
    app.router.add_static("/static/", STATIC, show_index=False)

    async def end_streams(_app: web.Application) -> None:
        backend.feed.end_all()

    app.on_shutdown.append(end_streams)
    return app


def _ssl_context(config: WebConfig) -> ssl.SSLContext | None:
    if not config.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.tls_cert, config.tls_key)
    if config.client_ca:
        context.load_verify_locations(config.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class _LoopErrors:
    """The page's event loop's error handler: asyncio reports each failed accept (EMFILE when descriptors run
    out) and each broken connection here; at most one line a minute, never a traceback per event."""

    def __init__(self) -> None:
        self.throttled = ThrottledLog(log, "web listener trouble")

    def handle(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        exc = context.get("exception")
        self.throttled.note(problem=context.get("message", ""), error=f"{type(exc).__name__}: {exc}" if exc else "")


_loop_errors = _LoopErrors()


def page_url(config: WebConfig, port: int) -> str:
    """The address a browser opens the page at: http(s), the listen address and ``port``; for a wildcard
    address (0.0.0.0, ::) the first `[web] hosts` name, else this machine's name (which the page accepts only
    when `[web] hosts` lists it)."""
    scheme = "https" if config.tls_cert else "http"
    host = config.address
    if host in ("0.0.0.0", "::", ""):
        host = config.hosts[0] if config.hosts else socket.gethostname()
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}/"


class WebServer:
    """The page's listener on its own thread: `start()` returns the bound port, `stop()` ends it."""

    def __init__(self, config: WebConfig, backend: WebBackend) -> None:
        self.config = config
        self.backend = backend
        self.port: int | None = None
        self.guard = ConnectionGuard(config.max_connections, config.header_timeout_s)
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address."""
        return page_url(self.config, self.port or 0)

    async def _start(self) -> int:
        token = Path(self.config.token_file).read_text().strip() if self.config.token_file else None
        scheme = "https" if self.config.tls_cert else "http"
        app = make_app(self.backend, token, self.config.max_pages,
                       AllowedOrigins.of(scheme, self.config.address, self.config.hosts))
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0,
                                     keepalive_timeout=self.config.idle_timeout_s)
        await self._runner.setup()
        asyncio.get_running_loop().set_exception_handler(_loop_errors.handle)
        site = GuardedSite(self._runner, self.config.address, self.config.port, self.guard,
                           ssl_context=_ssl_context(self.config), reuse_address=False, backlog=ACCEPT_BACKLOG)
        await site.start()
        self.backend.feed.attach(asyncio.get_running_loop())
        port = self._runner.addresses[0][1]
        app[ORIGINS].allowed = AllowedOrigins.of(scheme, self.config.address, self.config.hosts, port)
        return port

    def start(self) -> int:
        """Bind and serve on a daemon thread; OSError when the address cannot be bound."""
        self._thread = threading.Thread(target=self._loop.run_forever, name="web", daemon=True)
        self._thread.start()
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)
        except OSError as exc:
            self.stop()
            raise OSError(f"web.port: cannot listen on {self.config.address}:{self.config.port}: {exc.strerror or exc}"
                          " (another roomtone or program uses it? set [web] port, or port = 0)") from None
        return self.port

    def stop(self) -> None:
        """End live streams, close the listener and the thread (idempotent)."""
        if self._thread is None:
            return
        if self._runner is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            except Exception:  # shutting down anyway; a stuck page stream must not block the daemon's stop
                log.warning("web server did not stop cleanly", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._thread = None
        if not self._loop.is_running():
            self._loop.close()
