"""The web page in a real browser (Debian's headless Chromium) against a real daemon on the demo recording:
every view loads without console errors or third-party requests, the live view updates within one window,
the timeline shows stored windows, find-similar returns results, a kept clip plays, a window is corrected and
the correction taken back, and a bad request gets a clear error page."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from browser_support import launch
from daemon_support import DaemonProcess, isolated_args

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "roomtone.pt"
WINDOW_S, HOP_S = 10.0, 2.0
VIEWS = ("/", "/timeline", "/mics", "/corrections")

pytestmark = pytest.mark.slow


def api(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """A daemon on the demo recording (10 s windows every 2 s) keeping every clip; yields the page's base URL
    once three windows are stored."""
    data = tmp_path_factory.mktemp("web-daemon")
    process = DaemonProcess(["--model", str(MODEL), "--demo", "--hop-s", str(HOP_S), "--keep-clips", "all",
                             "--web-port", "0", *isolated_args(data)])
    try:
        url = process.wait_for("web page listening", timeout=120)["url"].rstrip("/")
        deadline = time.monotonic() + 60
        while len(api(url, "/api/windows?limit=10")["windows"]) < 3:
            assert time.monotonic() < deadline, "the daemon stored fewer than 3 windows in 60 s"
            time.sleep(0.5)
        yield url
    finally:
        assert process.stop() == 0


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


class Watched:
    """A page with its console errors, uncaught exceptions and the hosts it requested."""

    def __init__(self, browser) -> None:
        self.page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors: list[str] = []
        self.hosts: set[str] = set()
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("request", lambda r: self.hosts.add(urllib.parse.urlsplit(r.url).hostname or r.url))

    def open(self, url: str) -> None:
        """Go to ``url`` and wait until the view says it is rendered."""
        self.page.goto(url)
        self.page.wait_for_selector("main[data-ready='true']", timeout=15_000)


@pytest.fixture
def page(browser):
    watched = Watched(browser)
    yield watched
    watched.page.close()


@pytest.mark.parametrize("path", VIEWS + ("/window/first",))
def test_every_view_renders_with_no_console_error_and_no_third_party_request(daemon, page, path):
    if path == "/window/first":
        path = f"/window/{api(daemon, '/api/windows?limit=1')['windows'][0]['window_id']}"
    page.open(daemon + path)
    page.page.wait_for_timeout(500)  # the live stream connects
    assert page.errors == []
    assert page.hosts <= {"127.0.0.1"}


def test_the_live_view_updates_within_one_window_and_draws_the_log_mel(daemon, page):
    page.open(daemon + "/")
    card = page.page.locator("section.mic-card[data-mic='demo']")
    card.wait_for(timeout=5_000)
    before = card.get_attribute("data-window-id")
    page.page.wait_for_function(
        "before => document.querySelector(\"section.mic-card[data-mic='demo']\").dataset.windowId !== before",
        arg=before, timeout=WINDOW_S * 1000)
    assert page.page.evaluate("window.roomtone.windowsReceived") >= 1
    latest = page.page.evaluate("window.roomtone.latenciesMs.at(-1)")
    assert 0 <= latest < WINDOW_S * 1000
    # the strip canvas was drawn: some pixel is not the empty background
    lit = page.page.evaluate("""() => {
        const c = document.querySelector("canvas.mel-strip");
        const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
        for (let i = 0; i < d.length; i += 4) if (d[i] !== 17 || d[i + 1] !== 17 || d[i + 2] !== 17) return true;
        return false; }""")
    assert lit
    assert page.errors == []


def test_a_page_that_fell_behind_starts_again_from_the_snapshot(daemon, page):
    page.open(daemon + "/")
    page.page.wait_for_function("window.roomtone.listeners.size > 0")
    with page.page.expect_response(lambda r: r.url.endswith("/api/status")):
        page.page.evaluate("for (const listener of window.roomtone.listeners) listener('gap', null)")
    page.page.wait_for_timeout(300)
    assert page.page.locator("section.mic-card[data-mic='demo']").get_attribute("data-window-id")
    assert page.errors == []


def test_the_timeline_shows_the_stored_windows_and_links_to_them(daemon, page):
    stored = len(api(daemon, "/api/windows?limit=1000")["windows"])
    page.open(daemon + "/timeline")
    assert int(page.page.locator("main").get_attribute("data-windows")) >= stored
    assert page.page.locator("section.lane-card[data-mic='demo'] rect.run").count() >= 1
    page.page.locator("tr.run-row a").first.click()
    page.page.wait_for_url("**/window/*")
    page.page.wait_for_selector("main[data-ready='true']")
    assert page.page.locator("h1").inner_text().startswith("Window ")


def test_find_similar_lists_the_nearest_stored_windows(daemon, page):
    first = api(daemon, "/api/windows?limit=1")["windows"][0]["window_id"]
    page.open(f"{daemon}/window/{first}")
    page.page.click("#find-similar")
    page.page.wait_for_selector("li.neighbor", timeout=10_000)
    neighbours = page.page.locator("li.neighbor a").all_inner_texts()
    assert neighbours and f"window {first}" not in neighbours
    assert page.errors == []


def test_with_clips_kept_a_window_plays_in_the_page(daemon, page):
    oldest = api(daemon, "/api/windows?limit=1000")["windows"][-1]["window_id"]
    page.open(f"{daemon}/window/{oldest}")
    duration = page.page.evaluate("""() => new Promise((resolve, reject) => {
        const audio = document.querySelector("audio#clip");
        if (!audio) return reject(new Error("no audio element"));
        const done = () => resolve(audio.duration);
        if (audio.readyState >= 1) done(); else audio.addEventListener("loadedmetadata", done);
        audio.addEventListener("error", () => reject(new Error("audio error " + audio.error.code)));
        setTimeout(() => reject(new Error("no metadata in 10 s")), 10000); })""")
    assert duration == pytest.approx(WINDOW_S, abs=0.1)
    played = page.page.evaluate("""async () => {
        const audio = document.querySelector("audio#clip");
        audio.muted = true;
        await audio.play();
        // the clock runs once the audio output does: more than 0.6 s at load 10 (2026-12-07), so wait up to 10 s
        const deadline = Date.now() + 10000;
        while (audio.currentTime <= 0.1 && Date.now() < deadline) await new Promise(r => setTimeout(r, 100));
        return audio.currentTime; }""")
    assert played > 0.1
    assert page.errors == []


def test_a_window_is_corrected_in_its_view_and_taken_back_in_the_corrections_view(daemon, page):
    window = api(daemon, "/api/windows?limit=1")["windows"][0]
    label = next(c for c in api(daemon, "/api/status")["classes"] if c != window["label"])
    page.open(f"{daemon}/window/{window['window_id']}")
    page.page.select_option("#correction-label", label)
    page.page.click("#correction button[type=submit]")
    page.page.wait_for_selector("#correction-current.ok", timeout=30_000)
    assert f'really "{label}"' in page.page.locator("#correction-current").inner_text()
    assert [c["label"] for c in api(daemon, "/api/corrections")["corrections"]] == [label]
    page.open(f"{daemon}/corrections")
    row = page.page.locator(f"tr.correction[data-window='{window['window_id']}']")
    assert label in row.inner_text()
    row.locator("button.remove-correction").click()
    row.wait_for(state="detached", timeout=15_000)
    assert api(daemon, "/api/corrections")["corrections"] == []
    assert "No corrections yet" in page.page.locator("#corrections-count").inner_text()
    assert page.errors == []


def test_this_is_a_teaches_a_custom_sound_from_the_window(daemon, page):
    window_id = api(daemon, "/api/windows?limit=1")["windows"][0]["window_id"]
    page.open(f"{daemon}/window/{window_id}")
    page.page.fill("#sound-name", "front-door")
    page.page.click("#teach button[type=submit]")
    page.page.wait_for_selector("#teach-result.ok", timeout=30_000)
    assert "front-door" in page.page.locator("#teach-result").inner_text()
    assert [s["name"] for s in api(daemon, "/api/sounds")["sounds"]] == ["front-door"]
    assert page.errors == []


def test_a_detection_shows_where_it_was_heard_and_not_this_marks_it(daemon, page):
    # the taught window's audio recurs in the next windows (10 s windows every 2 s), so detections follow
    if not api(daemon, "/api/sounds")["sounds"]:
        window_id = api(daemon, "/api/windows?limit=1")["windows"][0]["window_id"]
        urllib.request.urlopen(urllib.request.Request(f"{daemon}/api/windows/{window_id}/sound", method="POST",
                                                      data=json.dumps({"name": "front-door"}).encode(),
                                                      headers={"Content-Type": "application/json"}), timeout=30)
    deadline = time.monotonic() + 90
    while not (found := api(daemon, "/api/changes?kind=sound_detected&limit=1")["changes"]):
        assert time.monotonic() < deadline, "no sound_detected event within 90 s"
        time.sleep(1)
    detection = found[0]
    assert 0 <= detection["start_offset_ms"] < detection["end_offset_ms"] <= 10_000
    page.open(f"{daemon}/window/{detection['window_id']}")
    item = page.page.locator(f"#detections li.detection[data-sound='{detection['current']}']")
    shown = re.search(r"at (\d+\.\d)–(\d+\.\d) s", item.inner_text())  # JS rounds halves up, Python to even
    assert shown and abs(float(shown[1]) - detection["start_offset_ms"] / 1000) <= 0.05 + 1e-9
    assert abs(float(shown[2]) - detection["end_offset_ms"] / 1000) <= 0.05 + 1e-9
    style = page.page.locator("#detections .span-mark").first.get_attribute("style")
    left = re.match(r"left:(\d+(?:\.\d+)?)%", style)  # rounded to 0.1 % by the page, halves up
    assert left and abs(float(left[1]) - 100 * detection["start_offset_ms"] / 10_000) <= 0.05 + 1e-9
    item.locator("button.not-this").click()
    page.page.wait_for_selector("#detections .ok", timeout=60_000)
    sound = next(s for s in api(daemon, "/api/sounds")["sounds"] if s["name"] == detection["current"])
    assert sound["not_this"] == 1
    assert page.errors == []


@pytest.mark.parametrize("path, status, text", [
    ("/window/abc", 400, "window id must be a positive whole number"),
    ("/window/99999999", 404, "no stored window 99999999"),
])
def test_a_bad_request_gets_a_clear_error_page_not_a_traceback(daemon, page, path, status, text):
    response = page.page.goto(daemon + path)
    assert response.status == status
    body = page.page.locator("main").inner_text()
    assert text in body and "Traceback" not in body
    assert page.page.locator("a[href='/']").count() == 1
