"""The page's corrections API: "this was really a..." on a window, the list of corrections, taking one back."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from service.store.corrections import CorrectionService
from web_support import T0


def call(url: str, body: dict | None = None, method: str = "GET", headers: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json", **(headers or {})} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_a_window_is_corrected_shown_listed_and_taken_back(serve, store):
    store.record_model_run("c" * 64, T0)
    server = serve(corrections=CorrectionService(store, ("water", "speech")))
    window_id = store.list_windows(limit=1).items[0].window_id
    base = server.url.rstrip("/")
    assert call(f"{base}/api/windows/{window_id}")[1]["correction"] is None
    status, body = call(f"{base}/api/windows/{window_id}/correction", {"label": "water"}, "POST")
    assert status == 200 and body["correction"]["label"] == "water" and body["correction"]["predicted"] == "speech"
    assert call(f"{base}/api/windows/{window_id}")[1]["correction"]["label"] == "water"
    status, listing = call(f"{base}/api/corrections")
    assert status == 200 and listing["classes"] == ["water", "speech"]
    assert [(c["window_id"], c["label"], c["window_kept"]) for c in listing["corrections"]] == [(window_id, "water", True)]
    assert call(f"{base}/api/corrections?label=speech")[1]["corrections"] == []
    assert call(f"{base}/api/status")[1]["corrections"] is True
    status, body = call(f"{base}/api/windows/{window_id}/correction", {}, "DELETE")
    assert status == 200 and body == {"removed": window_id}
    assert call(f"{base}/api/corrections")[1]["corrections"] == []
    status, body = call(f"{base}/api/windows/{window_id}/correction", {}, "DELETE")
    assert status == 404 and body["error"]["reason"] == "not_found"


def test_a_bad_correction_is_refused_with_its_reason(serve, store):
    server = serve(corrections=CorrectionService(store, ("water", "speech")))
    base = server.url.rstrip("/")
    window_id = store.list_windows(limit=1).items[0].window_id
    for path, body, status, reason in ((f"/api/windows/{window_id}/correction", {"label": "unknown"}, 400, "invalid_argument"),
                                       (f"/api/windows/{window_id}/correction", {"class": "water"}, 400, "bad_body"),
                                       ("/api/windows/99999/correction", {"label": "water"}, 404, "not_found")):
        answer = call(base + path, body, "POST")
        assert answer[0] == status and answer[1]["error"]["reason"] == reason
    forged = call(f"{base}/api/windows/{window_id}/correction", {"label": "water"}, "POST", {"Origin": "https://evil.example"})
    assert forged[0] == 403 and store.list_corrections() == []


def test_without_a_correction_service_the_page_says_so(serve, store):
    server = serve()
    base = server.url.rstrip("/")
    assert call(f"{base}/api/status")[1]["corrections"] is False
    status, body = call(f"{base}/api/corrections")
    assert status == 409 and body["error"]["reason"] == "corrections_unavailable"
