"""A real Home Assistant Core for the tests and the bench: the version pinned in
scripts/home-assistant-requirements.txt, installed by `bash scripts/setup-home-assistant.sh` into its own
Python 3.13 virtual environment outside the repository, cached between runs.

`HomeAssistant` writes a configuration folder whose MQTT integration points at a broker (Home Assistant
takes the broker only from a config entry: `.storage/core.config_entries`, one entry of domain `mqtt`
with discovery on), starts `python -m homeassistant --skip-pip` on a free loopback port (nothing is
installed or downloaded at run time), onboards an owner through the REST API for a token, and answers
REST and template queries. `StateLog` follows every state change over the websocket API."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tests.service.mosquitto_broker import free_port  # the repository root is on the path (pytest, -m)

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "scripts" / "home-assistant-requirements.txt"
OWNER = {"name": "roomtone test", "username": "roomtone", "password": "roomtone-test-pass", "language": "en"}


def ha_version() -> str:
    """The Home Assistant Core version the requirements file pins."""
    match = re.search(r"^homeassistant==(\S+)", REQUIREMENTS.read_text(), re.M)
    assert match, f"{REQUIREMENTS} pins no homeassistant version"
    return match.group(1)


def ha_venv() -> Path:
    """Where scripts/setup-home-assistant.sh installs it ($ROOMTONE_HA_VENV, else the user's cache folder)."""
    if os.environ.get("ROOMTONE_HA_VENV"):
        return Path(os.environ["ROOMTONE_HA_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "roomtone" / f"ha-{ha_version()}"


def ha_missing() -> str | None:
    """Why Home Assistant cannot run here, or None."""
    venv = ha_venv()
    if not (venv / ".roomtone-ready").is_file():
        return f"Home Assistant {ha_version()} is not installed in {venv} (run bash scripts/setup-home-assistant.sh)"
    return None


def require_home_assistant() -> Path:
    """The virtual environment's python; skips without it, fails without it under CI=true (where
    `scripts/setup.sh --test` installs it, so a missing Home Assistant is a broken set-up, not a skip)."""
    reason = ha_missing()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI=true requires it (scripts/setup.sh --test installs it)")
        pytest.skip(reason)
    return ha_venv() / "bin" / "python"


#: The vendored clips (tests/data/homesounds) the test recording is made of, in order: 30 s of each activity.
RECORDING_CLIPS = tuple(f"{label}/{label}_A1_00{i}.flac" for label in ("speech", "water", "typing") for i in range(3))


def varied_recording(path: Path) -> Path:
    """A 90 s FLAC of real clips, three activities 30 s each. The bundled demo recording is one 10 s clip, so
    every 10 s window of it holds the same audio (same level, same label): nothing would change per window."""
    import numpy as np
    import soundfile

    clips = [soundfile.read(REPO / "tests" / "data" / "homesounds" / "audio" / clip, dtype="float32") for clip in RECORDING_CLIPS]
    rates = {rate for _, rate in clips}
    assert len(rates) == 1, f"the vendored clips differ in sample rate: {rates}"
    soundfile.write(str(path), np.concatenate([audio for audio, _ in clips]), rates.pop(), subtype="PCM_16")
    return path


def daemon_toml(directory: Path, broker_port: int, web_port: int, recording: Path | None = None) -> Path:
    """The daemon's TOML: microphone "kitchen" in area "Kitchen" (the demo recording, or ``recording`` looped at
    real time), 10 s windows every 2 s, sessions that start with their first window, the web page on
    ``web_port``, MQTT on loopback with a 5 s keepalive."""
    source = 'kind = "demo"' if recording is None else f'kind = "file"\npath = "{recording}"\nloop = true'
    path = directory / "roomtone.toml"
    path.write_text(f"""
model = "{REPO / 'models' / 'roomtone.pt'}"
data_dir = "{directory / 'data'}"
log_format = "json"

[[mics]]
id = "kitchen"
{source}
area = "Kitchen"

[grpc]
address = "127.0.0.1:0"

[metrics]
port = 0

[web]
port = {web_port}

[pipeline]
hop_s = 2.0

[sessions]
min_duration_s = 10.0

[mqtt]
host = "127.0.0.1"
port = {broker_port}
keepalive_s = 5
reconnect_min_s = 0.2
reconnect_max_s = 1.0
""")
    return path


def mqtt_config_entry(broker_port: int) -> dict:
    """`.storage/core.config_entries` with one MQTT entry: broker on loopback, discovery on."""
    entry = {
        "entry_id": "01JROOMTONETESTMQTTENTRY00", "version": 1, "minor_version": 2, "domain": "mqtt",
        "title": f"127.0.0.1:{broker_port}", "data": {"broker": "127.0.0.1", "port": broker_port},
        "options": {"discovery": True, "discovery_prefix": "homeassistant"}, "pref_disable_new_entities": False,
        "pref_disable_polling": False, "source": "user", "unique_id": None, "disabled_by": None,
        "discovery_keys": {}, "created_at": "2026-01-01T00:00:00+00:00", "modified_at": "2026-01-01T00:00:00+00:00",
        "subentries": [],
    }
    return {"version": 1, "minor_version": 5, "key": "core.config_entries", "data": {"entries": [entry]}}


#: `.storage/onboarding` with every step but the owner's done. Onboarding's core_config step would set up
#: Home Assistant's default integrations (met, radio_browser, google_translate, shopping_list), whose
#: requirements are not installed (errors in the log) and which would reach for the internet.
ONBOARDING = {"version": 4, "minor_version": 1, "key": "onboarding",
              "data": {"done": ["core_config", "analytics", "integration"]}}

CONFIGURATION = """\
homeassistant:
  name: roomtone test
  unit_system: metric
  time_zone: UTC
  latitude: 52.37
  longitude: 4.89
  elevation: 0
  currency: EUR
  country: NL
http:
  server_host: 127.0.0.1
  server_port: {port}
logger:
  default: warning
"""


class HomeAssistant:
    """One Home Assistant Core process with a fresh configuration folder; `start`, `onboard`, queries, `stop`."""

    def __init__(self, config_dir: Path, broker_port: int) -> None:
        self.python = require_home_assistant()
        self.config_dir = config_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token: str | None = None
        self.proc: subprocess.Popen | None = None
        storage = config_dir / ".storage"
        storage.mkdir(parents=True, exist_ok=True)
        (config_dir / "configuration.yaml").write_text(CONFIGURATION.format(port=self.port))
        (storage / "core.config_entries").write_text(json.dumps(mqtt_config_entry(broker_port), indent=1))
        (storage / "onboarding").write_text(json.dumps(ONBOARDING, indent=1))

    def start(self, timeout: float = 150.0) -> HomeAssistant:
        """Start Home Assistant and wait until its HTTP API answers and the MQTT entry is loaded."""
        self.log = open(self.config_dir / "stdout.log", "ab")
        self.proc = subprocess.Popen(
            [str(self.python), "-m", "homeassistant", "--config", str(self.config_dir), "--skip-pip"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Home Assistant exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                self.request("GET", "/api/onboarding", auth=False)
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.5)
        raise RuntimeError(f"Home Assistant did not answer within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The end of Home Assistant's log file."""
        path = self.config_dir / "home-assistant.log"
        text = path.read_text(errors="replace") if path.is_file() else ""
        text += (self.config_dir / "stdout.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def request(self, method: str, path: str, body: object = None, auth: bool = True, form: bool = False):
        """One HTTP request to Home Assistant; the decoded JSON answer (text when it is not JSON)."""
        headers = {}
        data = None
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
        try:
            return json.loads(text)
        except ValueError:
            return text

    def onboard(self) -> str:
        """Create the owner (the one onboarding step `ONBOARDING` leaves open, so that onboarding is then done
        and the frontend opens the app), exchange its auth code for an access token; returns the token."""
        client_id = self.url + "/"
        created = self.request("POST", "/api/onboarding/users", {"client_id": client_id, **OWNER}, auth=False)
        tokens = self.request("POST", "/auth/token", {"grant_type": "authorization_code", "code": created["auth_code"],
                                                      "client_id": client_id}, auth=False, form=True)
        self.token = tokens["access_token"]
        self.refresh_token = tokens["refresh_token"]
        return self.token

    def states(self) -> dict[str, dict]:
        """entity_id -> its state object, for every entity."""
        return {s["entity_id"]: s for s in self.request("GET", "/api/states")}

    def template(self, template: str):
        """A template rendered by Home Assistant (the registries are reachable from templates); JSON output
        comes back decoded."""
        return self.request("POST", "/api/template", {"template": template})

    def device_id(self, name: str) -> str | None:
        """The device registry id of the device called ``name`` (template `device_id` looks names up)."""
        found = self.template("{{ device_id(%s) | tojson }}" % json.dumps(name))
        return found if isinstance(found, str) and found else None

    def device(self, device_id: str) -> dict:
        """The device registry fields a user sees on the device page, its area's name and its entity ids."""
        fields = ("name", "manufacturer", "model", "sw_version", "configuration_url", "area_id")
        parts = [f"'{f}': device_attr('{device_id}', '{f}')" for f in fields]
        parts += [f"'area': area_name('{device_id}')", f"'entities': device_entities('{device_id}')"]
        return self.template("{{ {%s} | tojson }}" % ", ".join(parts))

    def ws(self, message: dict):
        """One command over the websocket API (e.g. ``{"type": "config/entity_registry/list"}``); its result."""
        import asyncio

        import aiohttp

        async def call():
            async with aiohttp.ClientSession() as session, session.ws_connect(self.url + "/api/websocket") as ws:
                await ws.receive_json()
                await ws.send_json({"type": "auth", "access_token": self.token})
                assert (await ws.receive_json())["type"] == "auth_ok"
                await ws.send_json({"id": 1, **message})
                answer = await ws.receive_json()
                assert answer.get("success"), f"{message['type']}: {answer}"
                return answer["result"]

        return asyncio.run(call())

    def registry_entries(self, device_id: str) -> dict[str, dict]:
        """entity_id -> its entity registry entry (name, device class, category, icon, ...), for one device."""
        return {e["entity_id"]: e for e in self.ws({"type": "config/entity_registry/list"})
                if e["device_id"] == device_id}

    def wait_until(self, predicate, timeout: float, what: str, interval: float = 0.3):
        """Poll the states until ``predicate(states)`` is truthy; returns its value, or fails naming ``what``."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = self.states()
            value = predicate(last)
            if value:
                return value
            time.sleep(interval)
        summary = {k: v["state"] for k, v in (last or {}).items() if "roomtone" in k}
        raise AssertionError(f"Home Assistant: {what} not within {timeout} s; states: {summary}\n{self.log_tail(15)}")

    def stop(self) -> None:
        """SIGTERM, wait (then SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None:
            self.log.close()
        self.proc = None


class StateLog:
    """Every `state_changed` event of Home Assistant, recorded over its websocket API from a thread:
    ``(entity_id, old state object or None, new state object or None)`` in the order Home Assistant fired them."""

    def __init__(self, ha: HomeAssistant) -> None:
        import asyncio

        self.ha = ha
        self.changes: list[tuple[str, dict | None, dict | None]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._follow(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError(f"could not subscribe to Home Assistant's events: {self._error}")

    async def _follow(self) -> None:
        import aiohttp

        try:
            async with aiohttp.ClientSession() as session, session.ws_connect(self.ha.url + "/api/websocket") as ws:
                await ws.receive_json()  # auth_required
                await ws.send_json({"type": "auth", "access_token": self.ha.token})
                assert (await ws.receive_json())["type"] == "auth_ok"
                await ws.send_json({"id": 1, "type": "subscribe_events", "event_type": "state_changed"})
                async for message in ws:
                    data = json.loads(message.data)
                    if data.get("type") == "result":
                        self._ready.set()
                    elif data.get("type") == "event":
                        event = data["event"]["data"]
                        with self._lock:
                            self.changes.append((event["entity_id"], event.get("old_state"), event.get("new_state")))
        except BaseException as exc:  # reported by the constructor, or simply ends the log
            self._error = exc
            self._ready.set()

    def mark(self) -> int:
        """A position in the log (for `since`)."""
        with self._lock:
            return len(self.changes)

    def since(self, mark: int, entity_id: str) -> list[dict | None]:
        """The new states of one entity after ``mark``, in order."""
        return [new for _, new in self.changes_since(mark, entity_id)]

    def changes_since(self, mark: int, entity_id: str) -> list[tuple[dict | None, dict | None]]:
        """(old, new) of every change of one entity after ``mark``, in order."""
        with self._lock:
            return [(old, new) for e, old, new in self.changes[mark:] if e == entity_id]

    def close(self) -> None:
        """Stop following."""
        import asyncio

        for task in list(asyncio.all_tasks(self._loop)):
            self._loop.call_soon_threadsafe(task.cancel)
        self._thread.join(5)
