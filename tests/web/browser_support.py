"""Debian's Chromium driven by playwright for the web page tests: the system executable, never a download."""

from __future__ import annotations

import os
import shutil

import pytest

#: Flags that work headless in containers and CI, with no network traffic of Chromium's own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--autoplay-policy=no-user-gesture-required"]


def chromium_path() -> str:
    """The system Chromium; skips without it, fails under CI=true (scripts/apt-packages-test.txt has it)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("chromium is missing under CI=true: install Debian's chromium (scripts/setup.sh --test does)")
    pytest.skip("chromium is not installed (Debian package chromium)")


def launch(playwright):
    """A headless Chromium browser (a fresh profile in a temporary directory, removed on close)."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
