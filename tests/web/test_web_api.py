"""The page's HTTP side: what it serves, its JSON API, its errors, its live stream and who may read it."""

from __future__ import annotations

import base64
import json
import re
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest

from web_support import T0
from service.store.clips import ClipStore
from service.config import ClipsConfig, ConfigError, WebConfig, load_config
from service.web.live import PAGE_QUEUE, LiveFeed, PageStream
from service.web.server import STATIC

PAGE_WEIGHT_LIMIT = 200 * 1024


def get(url: str, headers: dict | None = None, timeout: float = 10) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def api(server, path: str) -> tuple[int, dict]:
    status, _, body = get(server.url.rstrip("/") + path)
    return status, json.loads(body)


def test_the_page_weighs_under_200_kb_and_makes_no_third_party_request():
    files = sorted(p for p in STATIC.iterdir() if p.is_file())
    assert sum(p.stat().st_size for p in files) < PAGE_WEIGHT_LIMIT
    for path in files:
        text = path.read_text()
        # the SVG namespace is an identifier, not a request
        assert not re.findall(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[a-z0-9.-]+\.[a-z]{2,}", text), path.name


def test_every_view_path_serves_the_page_and_its_es_modules(serve):
    server = serve()
    for path in ("/", "/timeline", "/mics", "/window/1"):
        status, headers, body = get(server.url.rstrip("/") + path)
        assert status == 200 and headers["Content-Type"].startswith("text/html") and b'type="module"' in body
    status, headers, _ = get(server.url + "static/app.js")
    assert status == 200 and "javascript" in headers["Content-Type"]


def test_status_lists_the_microphones_classes_and_window_length(serve):
    status, body = api(serve(), "/api/status")
    assert status == 200
    assert [m["mic_id"] for m in body["mics"]] == ["kitchen", "hall"]
    assert body["classes"] == ["water", "speech"] and body["window_s"] == 10.0 and body["clips"] == "none"


def test_windows_are_listed_newest_first_and_filtered_by_microphone_and_time(serve):
    server = serve()
    _, body = api(server, "/api/windows?mic=kitchen")
    starts = [w["start_unix_ms"] for w in body["windows"]]
    assert len(starts) == 6 and starts == sorted(starts, reverse=True)
    assert all("embedding" not in w for w in body["windows"])
    _, body = api(server, f"/api/windows?mic=kitchen&since_ms={T0 + 30_000}")
    assert {w["label"] for w in body["windows"]} == {"speech"}


def test_health_changes_are_listed_apart_from_windows(serve):
    _, body = api(serve(), "/api/changes?kind=health_changed")
    assert [(c["mic_id"], c["current"]) for c in body["changes"]] == [("kitchen", "ok")]


def test_a_window_shows_its_probabilities_health_scores_and_drift(serve):
    server = serve()
    _, listing = api(server, "/api/windows?mic=kitchen&limit=1")
    window_id = listing["windows"][0]["window_id"]
    status, body = api(server, f"/api/windows/{window_id}")
    assert status == 200 and body["label"] == "speech" and body["probabilities"]["speech"] == pytest.approx(0.9)
    assert body["health_scores"]["drift"] == pytest.approx(0.5) and body["clip_url"] is None


def test_find_similar_returns_the_nearest_stored_windows_without_the_query_window(serve):
    server = serve()
    _, listing = api(server, "/api/windows?mic=kitchen&limit=1")
    query = listing["windows"][0]
    status, body = api(server, f"/api/windows/{query['window_id']}/similar?k=4")
    neighbours = body["neighbors"]
    assert status == 200 and len(neighbours) == 4
    assert query["window_id"] not in [n["window"]["window_id"] for n in neighbours]
    assert all(n["window"]["label"] == "speech" for n in neighbours)  # the other speech windows, not water
    assert [n["distance"] for n in neighbours] == sorted(n["distance"] for n in neighbours)


@pytest.mark.parametrize("path, status, reason", [
    ("/api/windows/abc", 400, "bad_window_id"),
    ("/api/windows/999999", 404, "window_not_found"),
    ("/api/windows/1/similar?k=0", 400, "bad_parameter"),
    ("/api/windows?limit=ten", 400, "bad_parameter"),
    (f"/api/windows?since_ms={T0}&until_ms={T0}", 400, "bad_parameter"),
    ("/api/windows/1/clip", 404, "clips_disabled"),
    ("/api/nothing", 404, "not_found"),
])
def test_a_bad_api_request_gets_a_json_error_with_a_machine_readable_reason(serve, path, status, reason):
    got_status, body = api(serve(), path)
    assert got_status == status and body["error"]["reason"] == reason and body["error"]["message"]


@pytest.mark.parametrize("path, status, text", [
    ("/window/abc", 400, "window id must be a positive whole number"),
    ("/window/999999", 404, "no stored window 999999"),
    ("/no/such/page", 404, "nothing here"),
])
def test_a_bad_page_request_gets_a_clear_html_error_page_not_a_traceback(serve, path, status, text):
    got_status, headers, body = get(serve().url.rstrip("/") + path)
    page = body.decode()
    assert got_status == status and headers["Content-Type"].startswith("text/html")
    assert text in page and "Traceback" not in page and "File \"" not in page


def test_a_kept_clip_is_served_with_its_audio_type(serve, store, tmp_path):
    clips = ClipStore(tmp_path / "clips", ClipsConfig(keep="all", codec="opus"))
    _, listing = {}, store.list_windows(limit=1)
    window = listing.items[0]
    samples = (0.2 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 300)).astype(np.float32)[None, :]
    clips.write(window.mic_id, window.start_unix_ms, samples, 16000)
    server = serve(clips=clips, clips_keep="all")
    _, body = api(server, f"/api/windows/{window.window_id}")
    status, headers, audio = get(server.url.rstrip("/") + body["clip_url"])
    assert status == 200 and headers["Content-Type"] == "audio/ogg" and audio[:4] == b"OggS"
    other = store.list_windows(limit=2).items[1]
    assert api(server, f"/api/windows/{other.window_id}/clip") == (404, {"error": {
        "reason": "clip_not_kept", "message": f"window {other.window_id} has no kept clip (clips.keep = \"all\", or it expired)"}})


def read_sse_event(response, name: str, timeout_lines: int = 50) -> dict:
    """The data of the next SSE event called ``name`` on an open response."""
    event = None
    for _ in range(timeout_lines):
        line = response.readline().decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == name:
            return json.loads(line[6:])
    raise AssertionError(f"no {name} event")


def test_a_published_window_reaches_an_open_live_stream(serve):
    feed = LiveFeed(floor_db=-100.0)
    server = serve(feed=feed)
    with urllib.request.urlopen(server.url + "api/live", timeout=10) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        response.readline()  # "retry:" line: the stream is open and the page registered
        response.readline()
        feed.publish("window", {"window": {"mic_id": "kitchen", "window_id": 7}, "strip": None}, mic_id="kitchen")
        assert read_sse_event(response, "window")["window"]["window_id"] == 7
    assert feed.recent()["kitchen"][-1]["window"]["window_id"] == 7


def test_pages_beyond_max_pages_are_refused_with_503(serve):
    server = serve(WebConfig(port=0, max_pages=1))
    with urllib.request.urlopen(server.url + "api/live", timeout=10) as first:
        first.readline()
        status, body = api(server, "/api/live")
        assert status == 503 and body["error"]["reason"] == "too_many_pages"


def test_a_slow_page_loses_its_oldest_messages_not_the_newest_and_is_counted():
    page = PageStream()
    for i in range(PAGE_QUEUE + 5):
        page.put(f"frame {i}")
    assert page.dropped == 5
    assert page.queue.get_nowait() == "frame 5"


def test_publishing_costs_one_serialisation_whatever_the_number_of_pages():
    feed = LiveFeed(floor_db=-100.0)
    calls = []
    feed.attach(type("Loop", (), {"is_closed": lambda self: False,
                                  "call_soon_threadsafe": lambda self, f, *a: calls.append(a)})())
    feed.publish("window", {"window": {"mic_id": "m"}}, mic_id="m")
    assert len(calls) == 1  # one hand-over to the event loop, which fans out to every page


def test_with_a_token_a_request_without_it_is_refused_and_basic_or_bearer_is_accepted(serve, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("tok-123\n")
    server = serve(WebConfig(port=0, token_file=str(token_file)))
    status, headers, _ = get(server.url)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    basic = base64.b64encode(b"anyone:tok-123").decode()
    assert get(server.url, {"Authorization": f"Basic {basic}"})[0] == 200
    assert get(server.url + "api/status", {"Authorization": "Bearer tok-123"})[0] == 200
    assert get(server.url + "api/status", {"Authorization": "Bearer wrong"})[0] == 401


def test_the_page_listens_on_loopback_port_9480_by_default():
    assert (WebConfig().address, WebConfig().port, WebConfig().enabled) == ("127.0.0.1", 9480, True)


@pytest.mark.parametrize("address", ["0.0.0.0", "192.0.2.10", "roomtone.example"])
def test_a_page_beyond_loopback_without_tls_and_authentication_is_refused_at_start(address):
    with pytest.raises(ConfigError, match=r"web\.address.*without TLS and client authentication"):
        load_config(None, {"model": __file__, "web": {"address": address}}, environ={})


def test_a_page_beyond_loopback_with_tls_and_a_token_is_allowed_and_a_token_alone_is_not(tmp_path):
    for name in ("cert.pem", "key.pem", "token"):
        (tmp_path / name).write_text("x")
    files = {"tls_cert": str(tmp_path / "cert.pem"), "tls_key": str(tmp_path / "key.pem"), "token_file": str(tmp_path / "token")}
    config = load_config(None, {"model": __file__, "web": {"address": "0.0.0.0", **files}}, environ={})
    assert config.web.address == "0.0.0.0"
    with pytest.raises(ConfigError, match=r"web\.address.*without TLS"):
        load_config(None, {"model": __file__, "web": {"address": "0.0.0.0", "token_file": files["token_file"]}}, environ={})


def test_https_with_a_token_serves_the_page_and_refuses_without_the_token(serve, tmp_path):
    from reliability_support import make_certificates
    import ssl

    certs = make_certificates(tmp_path / "certs")
    token_file = tmp_path / "token"
    token_file.write_text("tok-456")
    server = serve(WebConfig(port=0, tls_cert=str(certs["server"]), tls_key=str(certs["server_key"]),
                             token_file=str(token_file)))
    assert server.url.startswith("https://")
    context = ssl.create_default_context(cafile=str(certs["ca"]))
    request = urllib.request.Request(server.url + "api/status", headers={"Authorization": "Bearer tok-456"})
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        assert response.status == 200
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(server.url + "api/status", context=context, timeout=10)
    assert refused.value.code == 401


def test_a_port_in_use_is_a_clear_error_naming_web_port(serve):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"web\.port: cannot listen on 127\.0\.0\.1:{port}"):
            serve(WebConfig(port=port))


def test_activity_sessions_are_listed_for_the_timeline_newest_first(serve, store):
    from service.analysis.sessions import ActivitySession, SessionEvent

    cooking = ActivitySession("kitchen", "cooking", T0, T0 + 60_000, 6, 0.8)
    talking = ActivitySession("hall", "speech", T0 + 70_000, None, 2, 0.9)  # still open
    store.add_session_events([SessionEvent("session_ended", cooking, T0 + 60_000),  # stored closed at once
                              SessionEvent("session_started", talking, T0 + 70_000)])
    status, body = api(serve(sessions_enabled=True), "/api/sessions")
    assert status == 200 and body["enabled"] is True
    assert [(s["activity"], s["end_unix_ms"]) for s in body["sessions"]] == [("speech", None), ("cooking", T0 + 60_000)]


def sound_service(store, tmp_path):
    """A custom-sound library for the store's 8-d embeddings (calibrated on the examples only)."""
    from service.config import SoundsConfig
    from service.analysis.sound_library import SoundLibrary, SoundService

    library = SoundLibrary(tmp_path / "sounds", "sha-test", lambda windows: None, 16000, 8)
    return SoundService(library, store, SoundsConfig(calibration_hours=0.0))


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_this_is_a_teaches_a_new_sound_then_adds_more_windows_to_it(serve, store, tmp_path):
    service = sound_service(store, tmp_path)
    server = serve(sounds=service)
    first, second = [w.window_id for w in store.list_windows(limit=2).items]
    status, body = post(f"{server.url}api/windows/{first}/sound", {"name": "doorbell"})
    assert status == 200 and body["sound"]["window_ids"] == [first]
    status, body = post(f"{server.url}api/windows/{second}/sound", {"name": "doorbell"})
    assert status == 200 and body["sound"]["window_ids"] == [first, second]
    assert [s.name for s in service.library.sounds()] == ["doorbell"]
    assert api(server, "/api/sounds")[1]["sounds"][0]["examples"] == 2
    status, body = post(f"{server.url}api/windows/{second}/sound", {"name": "doorbell"})
    assert status == 409 and body["error"]["reason"] == "already_exists"


def test_a_window_lists_its_detections_and_not_this_marks_one(serve, store, tmp_path):
    from service.records import StateChange
    from service.daemon_vocabulary import SOUND_DETECTED

    service = sound_service(store, tmp_path)
    server = serve(sounds=service)
    first, second = [w.window_id for w in store.list_windows(limit=2).items]
    post(f"{server.url}api/windows/{first}/sound", {"name": "doorbell"})
    window = store.get_window(second)
    store.add_results([], [StateChange(SOUND_DETECTED, window.mic_id, window.start_unix_ms, None, "doorbell",
                                       window_id=second, score=0.97, sound_start_ms=2500, sound_end_ms=3750)])
    (detection,) = api(server, f"/api/windows/{second}")[1]["detections"]
    assert (detection["current"], detection["start_offset_ms"], detection["end_offset_ms"], detection["not_this"]) == \
        ("doorbell", 2500, 3750, False)
    status, body = post(f"{server.url}api/windows/{second}/not-this", {"name": "doorbell"})
    assert status == 200 and body["sound"]["not_this"] == 1
    assert api(server, f"/api/windows/{second}")[1]["detections"][0]["not_this"] is True
    assert post(f"{server.url}api/windows/{second}/not-this", {"name": "doorbell"})[1]["error"]["reason"] == "already_exists"
    assert post(f"{server.url}api/windows/{second}/not-this", {"name": "cat-flap"})[1]["error"]["reason"] == "not_found"


@pytest.mark.parametrize("body, status, reason", [
    ({"name": "Door Bell!"}, 400, "invalid_argument"),
    ({"nom": "doorbell"}, 400, "bad_body"),
])
def test_a_bad_sound_request_is_refused_with_its_reason(serve, store, tmp_path, body, status, reason):
    server = serve(sounds=sound_service(store, tmp_path))
    window_id = store.list_windows(limit=1).items[0].window_id
    assert post(f"{server.url}api/windows/{window_id}/sound", body)[0:1] == (status,)
    assert post(f"{server.url}api/windows/{window_id}/sound", body)[1]["error"]["reason"] == reason


def test_a_change_from_another_site_or_not_as_json_is_refused(serve, store, tmp_path):
    server = serve(sounds=sound_service(store, tmp_path))
    window_id = store.list_windows(limit=1).items[0].window_id
    url = f"{server.url}api/windows/{window_id}/sound"
    status, body = post(url, {"name": "doorbell"}, {"Origin": "https://evil.example"})
    assert status == 403 and body["error"]["reason"] == "cross_origin"
    form = urllib.request.Request(url, data=b"name=doorbell", method="POST",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(form, timeout=10)
    assert refused.value.code == 403


def test_the_timeline_summary_gives_each_microphones_runs_of_one_activity(serve):
    server = serve()
    status, body = api(server, f"/api/timeline?since_ms={T0}&until_ms={T0 + 3_600_000}&buckets=1000")
    assert status == 200 and body["windows"] == 8 and body["oldest_start_ms"] == T0 and body["bucket_ms"] == 3600
    assert [(r["mic_id"], r["label"], r["start_unix_ms"] - T0, r["end_unix_ms"] - T0, r["windows"]) for r in body["runs"]] == [
        ("hall", "speech", 0, 20_000, 2), ("kitchen", "water", 0, 30_000, 3), ("kitchen", "speech", 30_000, 60_000, 3)]
    _, window = api(server, f"/api/windows/{body['runs'][2]['first_window_id']}")
    assert (window["mic_id"], window["start_unix_ms"]) == ("kitchen", T0 + 30_000)
    _, one = api(server, f"/api/timeline?since_ms={T0}&mic=hall&buckets=1")
    assert [(r["mic_id"], r["windows"]) for r in one["runs"]] == [("hall", 2)]


@pytest.mark.parametrize("query", ["", f"since_ms={T0}&buckets=0", f"since_ms={T0}&until_ms={T0}", "since_ms=x"])
def test_a_timeline_summary_without_a_valid_span_or_bucket_count_is_a_bad_parameter(serve, query):
    status, body = api(serve(), f"/api/timeline?{query}")
    assert status == 400 and body["error"]["reason"] == "bad_parameter"
