"""The browser client in real headless Chromium (Debian's), driven by Playwright.

Marked `browser`: run with `python -m pytest -m browser` where /usr/bin/chromium exists.
The page must connect, show final predictions and the transcript of the bundled sample within a
bounded time, and reconnect by itself after a server restart. A screenshot is saved in
artifacts/ (and copied to docs/screenshot.png when EMOSTREAM_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"

pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, cache: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, EMOSTREAM_CACHE=str(cache), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream.realtime.cli", "serve", "--media", str(ROOT / "demo/media/sample.mp4"),
         "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("serving http://"):
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the server did not print its URL")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
def test_page_shows_predictions_and_reconnects(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start_server(port, tmp_path / "cache")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=CHROMIUM, headless=True,
                args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
            )
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector('#conn[data-state="open"]', timeout=30_000)
            # final predictions with their transcript appear (the sample's first lines are ~3-8 s long)
            finals = page.locator('#transcript li.utt[data-state="final"]')  # (the page's CSP forbids eval)
            finals.nth(1).wait_for(timeout=90_000)
            first_text = finals.first.locator(".text").inner_text()
            assert len(first_text.split()) >= 2, first_text
            assert page.locator("#bars > *").count() >= 7  # one bar per label
            assert page.locator("#now-label").inner_text() not in ("", "waiting for speech")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser.png"), full_page=True)
            if os.environ.get("EMOSTREAM_UPDATE_SCREENSHOT") == "1":
                shutil.copy(ARTIFACTS / "browser.png", ROOT / "docs" / "screenshot.png")

            # restart the server on the same port: the page must notice and reconnect by itself
            stop(server)
            page.wait_for_selector('#conn:not([data-state="open"])', timeout=15_000)
            server = start_server(port, tmp_path / "cache")
            page.wait_for_selector('#conn[data-state="open"]', timeout=60_000)
            assert not errors, errors
            browser.close()
    finally:
        stop(server)
