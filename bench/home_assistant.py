"""What Home Assistant makes of roomtone: starts mosquitto, a real Home Assistant Core (the version
scripts/home-assistant-requirements.txt pins; `bash scripts/setup-home-assistant.sh` installs it) and the
daemon on the demo recording, all on free loopback ports, then prints the device and every entity as Home Assistant
shows them (name, entity id, state, device class, category, icon), and takes a screenshot of the device
page in Debian's headless Chromium (a fresh profile, no network of its own).

    .venv/bin/python -m bench.home_assistant                        # prints, writes docs/img/ha-device.png
    .venv/bin/python -m bench.home_assistant --screenshot out.png --windows 6

The helpers are the real-Home-Assistant test's (tests/homeassistant/ha_support.py); its figures are in
docs/mqtt.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from tests.homeassistant.ha_support import HomeAssistant, daemon_toml, free_port, ha_missing, ha_version

REPO = Path(__file__).resolve().parents[1]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
DEVICE = "roomtone kitchen"


def entity_table(ha: HomeAssistant, device_id: str) -> list[dict]:
    """Every entity of the device as Home Assistant shows it."""
    states = ha.states()
    registry = ha.registry_entries(device_id)
    rows = []
    for entity_id in sorted(registry):
        state = states.get(entity_id, {"state": "(no state)", "attributes": {}})
        attributes = state["attributes"]
        rows.append({"name": attributes.get("friendly_name", "").removeprefix(DEVICE + " "), "entity_id": entity_id,
                     "state": state["state"], "device_class": attributes.get("device_class") or "",
                     "category": registry[entity_id]["entity_category"] or "", "icon": attributes.get("icon") or ""})
    return rows


def screenshot(ha: HomeAssistant, device_id: str, out: Path, profile: Path) -> None:
    """The device page in headless Chromium, logged in with the onboarding owner's tokens."""
    from playwright.sync_api import sync_playwright

    tokens = {"access_token": ha.token, "refresh_token": ha.refresh_token, "token_type": "Bearer",
              "expires_in": 1800, "expires": int(time.time() * 1000) + 1_800_000, "hassUrl": ha.url,
              "clientId": ha.url + "/"}
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 1320}, device_scale_factor=1)  # tall enough for the diagnostic card
        context.add_init_script(f"window.localStorage.setItem('hassTokens', {json.dumps(json.dumps(tokens))});")
        page = context.new_page()
        page.goto(f"{ha.url}/config/devices/device/{device_id}", wait_until="networkidle", timeout=120_000)
        # the page renders inside shadow roots, which playwright's text locators pierce
        page.get_by_text("Footsteps and doors").first.wait_for(timeout=90_000)
        time.sleep(3)  # icons and states settle
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        context.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", type=Path, default=REPO / "docs" / "img" / "ha-device.png",
                        help="where the device page's screenshot goes (default docs/img/ha-device.png)")
    parser.add_argument("--no-screenshot", action="store_true", help="only print what Home Assistant created")
    parser.add_argument("--windows", type=int, default=8,
                        help="windows (2 s apart) to wait for once the device exists before looking (default 8)")
    args = parser.parse_args()
    reason = ha_missing()
    if reason:
        print(f"home_assistant: {reason}", file=sys.stderr)
        return 3
    from tests.service.daemon_support import DaemonProcess
    from tests.service.mosquitto_broker import Broker

    with tempfile.TemporaryDirectory(prefix="roomtone-ha-") as tmp:
        tmp = Path(tmp)
        started = time.monotonic()
        broker = Broker(tmp / "broker")
        ha = HomeAssistant(tmp / "ha", broker.port)
        daemon = None
        try:  # whatever started is stopped, also when a start fails
            broker.start()
            ha.start()
            ha_up = time.monotonic() - started
            ha.onboard()
            web_port = free_port()
            daemon = DaemonProcess(["--config", str(daemon_toml(tmp, broker.port, web_port)), "--web-port", str(web_port)])
            daemon.wait_for("roomtone running", timeout=120)
            deadline = time.monotonic() + 60
            while ha.device_id(DEVICE) is None and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(10 + 2 * args.windows)  # the first window after 10 s, then one every 2 s
            device_id = ha.device_id(DEVICE)
            if device_id is None:
                print("home_assistant: Home Assistant created no roomtone device", file=sys.stderr)
                print(ha.log_tail(), file=sys.stderr)
                return 1
            device = ha.device(device_id)
            print(f"Home Assistant {ha_version()} (up in {ha_up:.1f} s), device {device['name']!r}: "
                  f"manufacturer {device['manufacturer']!r}, model {device['model']!r}, sw {device['sw_version']!r}, "
                  f"area {device['area']!r}, configuration_url {device['configuration_url']!r}")
            rows = entity_table(ha, device_id)
            print(f"{len(rows)} entities:")
            print("| name | entity id | state | device class | category | icon |")
            print("|---|---|---|---|---|---|")
            for row in rows:
                print("| {name} | `{entity_id}` | {state} | {device_class} | {category} | {icon} |".format(**row))
            warnings = [line for line in (ha.config_dir / "home-assistant.log").read_text(errors="replace").splitlines()
                        if ("WARNING" in line or "ERROR" in line) and "mqtt" in line.lower()]
            print(f"MQTT warnings or errors in Home Assistant's log: {len(warnings)}")
            for line in warnings[:10]:
                print("  " + line[:300])
            if not args.no_screenshot:
                screenshot(ha, device_id, args.screenshot, tmp / "chromium-profile")
                print(f"screenshot: {args.screenshot}")
        finally:
            if daemon is not None:
                daemon.stop()
            ha.stop()
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
