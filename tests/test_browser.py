"""The browser client in real headless Chromium (Debian's), driven by Playwright.

Marked `browser`: run with `python -m pytest -m browser` where /usr/bin/chromium exists.

- Against the real server on the bundled sample: the page must connect, show final predictions
  and the transcript within a bounded time, and reconnect by itself after a server restart; and it
  must show the per-modality rows, transcript chips and the live "face now" line that the server's
  per-modality predictions and `face` events feed. A screenshot is saved in artifacts/ (and copied
  to docs/screenshot.png when EMOSTREAM_UPDATE_SCREENSHOT=1).
- Against `FakeProtocolServer`, a FAKE used only to drive the page's rendering code: it serves
  demo/web and sends scripted protocol messages (no pipeline, no model), so every optional field
  and event of protocol v1 is rendered in a known state, and an old server's messages still are.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "artifacts"
WEB = ROOT / "demo" / "web"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")

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


@needs_chromium
def test_page_shows_predictions_and_reconnects(engine_cache: Path) -> None:
    from playwright.sync_api import sync_playwright

    port = free_port()
    server = start_server(port, engine_cache)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
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
            server = start_server(port, engine_cache)
            page.wait_for_selector('#conn[data-state="open"]', timeout=60_000)
            assert not errors, errors
            browser.close()
    finally:
        stop(server)


def bar_labels(page: Any) -> list[str]:
    """The labels of the fused bars: the page draws one per label of `hello.labels`."""
    bars = page.locator("#bars > .bar")
    return [bars.nth(i).get_attribute("data-label") for i in range(bars.count())]


# Depends on the server side of the per-modality predictions: hello.live_modalities/experts,
# prediction.modalities and `face` events (the sample's video is a portrait of a smiling face).
@needs_chromium
def test_page_shows_modalities_and_live_face_on_the_sample(engine_cache: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    port = free_port()
    server = start_server(port, engine_cache)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector('#conn[data-state="open"]', timeout=30_000)
            # `face` events between and during utterances: the face-now line shows the live face
            # (the server sends a second hello once its models are loaded; face events follow it)
            face_now = page.locator('#face-now[data-present="true"]')
            face_now.wait_for(timeout=90_000)
            labels = bar_labels(page)
            assert len(labels) >= 7, labels

            # hello names the experts; the Pipeline card shows them
            expect(page.locator("#meta-experts")).to_contain_text("face fer-mini-xception")
            assert page.locator("#face-now").get_attribute("data-label") in labels
            assert page.locator("#face-now-label").text_content() in labels  # (inner_text is capitalised by CSS)
            assert page.locator("#face-now-conf").inner_text().endswith("%")

            # finals carry per-modality distributions: a row per live modality, chips per final
            finals = page.locator('#transcript li.utt[data-state="final"]')
            finals.first.wait_for(timeout=90_000)
            text_row = page.locator('#modalities .mod-row[data-modality="text"][data-state="ok"]')
            text_row.wait_for(timeout=10_000)
            assert text_row.locator(".mod-top").text_content() in labels
            assert text_row.get_attribute("data-label") in labels
            assert text_row.locator(".dist > .dseg").count() == len(labels)
            face_row = page.locator('#modalities .mod-row[data-modality="face"]')
            assert face_row.count() == 1
            assert face_row.get_attribute("data-state") in ("ok", "absent")
            chip = finals.first.locator('.chip[data-modality="text"]')
            assert chip.get_attribute("data-label") in labels
            assert finals.first.locator('.chip[data-modality="face"]').count() == 1
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser-modalities.png"), full_page=True)
            assert not errors, errors
            browser.close()
    finally:
        stop(server)


# ---------------------------------------------------------------------------------------------
# A FAKE server, used only to drive the page's rendering code with scripted messages.

try:  # the page is served under the real server's Content-Security-Policy
    from emostream.realtime.transport.http import _PAGE_CSP as PAGE_CSP
except ImportError:  # pragma: no cover
    PAGE_CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'"

MELD = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]


class FakeProtocolServer:
    """FAKE emostream server for tests of the page only: serves demo/web over HTTP and speaks
    protocol v1 on /ws, sending `hello` on connect and then whatever the test `send`s. It runs no
    pipeline and no model; it records what the page sends (`received`)."""

    def __init__(self, hello: dict[str, Any], port: int | None = None) -> None:
        self.hello = hello
        self.port = port or free_port()
        self.received: list[dict[str, Any]] = []
        self._clients: set[Any] = set()
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    def __enter__(self) -> FakeProtocolServer:
        self._thread.start()
        assert self._started.wait(10), "the fake server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    def send(self, **msg: Any) -> None:
        text = json.dumps({"v": 1, **msg})
        asyncio.run_coroutine_threadsafe(self._broadcast(text), self._loop).result(5)

    def wait_for_clients(self, n: int = 1, timeout: float = 20) -> None:
        wait_until(lambda: len(self._clients) >= n, timeout, "the page to connect to the fake server")

    def wait_received(self, type_: str, timeout: float = 20) -> dict[str, Any]:
        return wait_until(lambda: next((m for m in list(self.received) if m.get("type") == type_), None), timeout,
                          lambda: f"the page to send a {type_!r}; it sent {self.received}")

    async def _broadcast(self, text: str) -> None:
        for ws in list(self._clients):
            await ws.send(text)

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", self.port, process_request=self._http):
            self._started.set()
            await self._stop.wait()

    async def _handler(self, ws: Any) -> None:
        await ws.send(json.dumps(self.hello))  # first, as the real server does
        self._clients.add(ws)
        try:
            async for text in ws:
                self.received.append(json.loads(text))
        except Exception:  # noqa: BLE001 - the page going away mid-frame
            pass
        finally:
            self._clients.discard(ws)

    def _http(self, connection: Any, request: Any) -> Any:
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return None  # the websocket handshake goes on
        name = "index.html" if path == "/" else path.lstrip("/")
        file = (WEB / name).resolve()
        if not file.is_relative_to(WEB.resolve()) or not file.is_file():
            return connection.respond(404, "not found\n")
        body = file.read_bytes()
        ctype = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}.get(
            file.suffix, mimetypes.guess_type(file.name)[0] or "application/octet-stream")
        headers = Headers([("Content-Type", ctype + "; charset=utf-8"), ("Content-Length", str(len(body))),
                           ("Connection", "close"), ("Content-Security-Policy", PAGE_CSP)])
        return Response(200, "OK", headers, body)


def dist(top: str, p: float, labels: list[str] = MELD) -> dict[str, float]:
    """A distribution over `labels` with `top` at probability `p` and the rest shared evenly."""
    rest = (1 - p) / (len(labels) - 1)
    return {k: (p if k == top else round(rest, 4)) for k in labels}


def fake_hello(**extra: Any) -> dict[str, Any]:
    return {"type": "hello", "v": 1, "session": "fake0session", "client": "c1", "labels": MELD,
            "model": "fake-model", "modalities": ["text", "visual"],
            "sample_rates": {"audio_hz": 16000, "video_fps": 10}, "server_version": "0.0.0-fake",
            "interim": True, **extra}


def fake_prediction(uid: int, *, final: bool, label: str, p: float, t0: float, t1: float, speaker: int = 0,
                    **extra: Any) -> dict[str, Any]:
    return {"type": "prediction", "final": final, "utterance_id": uid, "speaker": speaker, "text": "",
            "label": label, "confidence": p, "probs": dist(label, p), "t_start_ms": t0, "t_end_ms": t1,
            "latency_ms": 120.0, "flags": [], **extra}


@needs_chromium
def test_page_renders_modalities_and_face_events_from_a_fake_server() -> None:
    """The page's rendering of the optional v1 fields and `face` events, driven by the FAKE server;
    then an old server (none of them) after a reconnect."""
    from playwright.sync_api import expect, sync_playwright

    hello = fake_hello(live_modalities=["text", "face"], experts={"face": "fer-mini-xception", "speaker": "voice"},
                       fusion={"rule": "log-linear", "face_weight": 0.5}, some_future_field={"x": 1})
    fake = FakeProtocolServer(hello).__enter__()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(f"http://127.0.0.1:{fake.port}/")
            page.wait_for_selector('#conn[data-state="open"]', timeout=15_000)
            fake.wait_for_clients(1)
            expect(page.locator("#meta")).to_contain_text("fake-model")

            # hello: experts in the Pipeline card, an empty row per live modality, no face line yet
            expect(page.locator("#meta-experts")).to_be_visible()
            expect(page.locator("#meta-experts")).to_contain_text("face fer-mini-xception")
            expect(page.locator("#meta-experts")).to_contain_text("speaker voice")
            expect(page.locator("#fusion-rule")).to_contain_text("log-linear")
            rows = page.locator("#modalities > .mod-row")
            expect(rows).to_have_count(2)
            assert [rows.nth(i).get_attribute("data-modality") for i in range(2)] == ["text", "face"]
            expect(page.locator("#face-now")).to_be_hidden()

            # a face event between utterances: the face-now line follows it
            fake.send(type="face", t_ms=500.0, present=True, label="joy", confidence=0.83, probs=dist("joy", 0.83),
                      box=[40, 30, 120, 120], frame_size=[320, 240], n_faces=1)
            expect(page.locator("#face-now")).to_be_visible()
            expect(page.locator("#face-now")).to_have_attribute("data-present", "true")
            expect(page.locator("#face-now-label")).to_have_text("joy")
            expect(page.locator("#face-now-conf")).to_have_text("83.0%")
            expect(page.locator("#face-now-dist > .dseg")).to_have_count(len(MELD))
            fake.send(type="some_future_event", payload=[1, 2, 3])  # unknown types are ignored

            # utterance 1: no face during it (face null, flag no_face)
            fake.send(type="utterance", event="start", utterance_id=1, speaker=0, t_ms=1000.0)
            fake.send(type="utterance", event="end", utterance_id=1, speaker=0, t_ms=2600.0)
            fake.send(type="transcript", utterance_id=1, speaker=0, text="Is anyone there?")
            fake.send(**fake_prediction(1, final=True, label="fear", p=0.55, t0=1000.0, t1=2600.0,
                                        text="Is anyone there?", flags=["no_face"],
                                        modalities={"text": dist("fear", 0.55), "face": None}))
            first = page.locator('#transcript li.utt[data-id="1"][data-state="final"]')
            first.wait_for(timeout=5_000)
            face_row = page.locator('#modalities .mod-row[data-modality="face"]')
            expect(face_row).to_have_attribute("data-state", "absent")
            expect(face_row.locator(".mod-top")).to_have_text("no face")
            expect(first.locator('.chip[data-modality="face"]')).to_have_class("chip absent")
            expect(first.locator('.chip[data-modality="text"]')).to_have_attribute("data-label", "fear")
            expect(first.locator(".flags")).not_to_contain_text("no_face")  # the chip says it

            # utterance 2: interim, then final with text and face disagreeing
            fake.send(type="utterance", event="start", utterance_id=2, speaker=1, t_ms=3000.0)
            fake.send(**fake_prediction(2, final=False, label="surprise", p=0.4, t0=3000.0, t1=4000.0, speaker=1,
                                        modalities={"text": dist("surprise", 0.5), "face": dist("joy", 0.7)}))
            expect(page.locator("#modalities")).to_have_class("mod-rows interim")
            expect(page.locator("#now-interim")).to_be_visible()
            fake.send(type="utterance", event="end", utterance_id=2, speaker=1, t_ms=5200.0)
            fake.send(type="transcript", utterance_id=2, speaker=1, text="Guess what, I got the job!")
            fake.send(**fake_prediction(2, final=True, label="joy", p=0.71, t0=3000.0, t1=5200.0, speaker=1,
                                        text="Guess what, I got the job!", some_future_field=True,
                                        modalities={"text": dist("surprise", 0.62), "face": dist("joy", 0.9)}))
            second = page.locator('#transcript li.utt[data-id="2"][data-state="final"]')
            second.wait_for(timeout=5_000)
            expect(page.locator("#now-label")).to_have_text("joy")
            expect(page.locator("#modalities")).to_have_class("mod-rows")
            text_row = page.locator('#modalities .mod-row[data-modality="text"]')
            expect(text_row).to_have_attribute("data-state", "ok")
            expect(text_row.locator(".mod-top")).to_have_text("surprise")
            expect(text_row.locator(".mod-pct")).to_have_text("62.0%")
            expect(text_row.locator(".dist > .dseg")).to_have_count(len(MELD))
            expect(face_row).to_have_attribute("data-state", "ok")
            expect(face_row.locator(".mod-top")).to_have_text("joy")
            expect(face_row.locator(".mod-pct")).to_have_text("90.0%")
            expect(second.locator('.chip[data-modality="text"]')).to_have_attribute("data-label", "surprise")
            expect(second.locator('.chip[data-modality="face"]')).to_have_attribute("data-label", "joy")
            fake.send(type="face", t_ms=5400.0, present=True, label="joy", confidence=0.88, probs=dist("joy", 0.88),
                      box=[44, 30, 118, 121], frame_size=[320, 240], n_faces=1)
            fake.send(type="metrics", t_ms=5400.0, queues={"audio": 0, "video": 0}, drops={"client": 0},
                      timings_ms={"total": 120.0}, rtf=0.2, clients=1)
            expect(page.locator("#face-now-conf")).to_have_text("88.0%")
            page.wait_for_timeout(400)  # bar transitions
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "browser-fake.png"), full_page=True)

            # the face leaves: the line says so; with no events for a while it goes stale
            fake.send(type="face", t_ms=5700.0, present=False, label=None, confidence=None, probs=None, box=None,
                      frame_size=[320, 240], n_faces=0)
            expect(page.locator("#face-now-label")).to_have_text("no face in view")
            expect(page.locator("#face-now")).to_have_attribute("data-present", "false")
            expect(page.locator("#face-now-conf")).to_have_text("")
            expect(page.locator("#face-now")).to_have_attribute("data-stale", "true", timeout=6_000)

            # controls still speak the protocol
            page.locator("#interim-toggle").uncheck()
            assert fake.wait_received("config") == {"v": 1, "type": "config", "interim": False}
            page.locator("#reset-btn").click()
            fake.wait_received("reset")
            expect(page.locator("#transcript > li")).to_have_count(0)
            assert not errors, errors

            # an old server (no live_modalities, experts, modalities or face events) after a reconnect
            fake.stop()
            page.wait_for_selector('#conn:not([data-state="open"])', timeout=10_000)
            fake = FakeProtocolServer(fake_hello(model="old-model"), port=fake.port).__enter__()
            page.wait_for_selector('#conn[data-state="open"]', timeout=30_000)
            expect(page.locator("#meta")).to_contain_text("old-model")
            expect(page.locator("#face-now")).to_be_hidden()
            expect(page.locator("#modalities-box")).to_be_hidden()
            expect(page.locator("#meta-experts")).to_be_hidden()
            fake.wait_for_clients(1)
            fake.send(type="utterance", event="start", utterance_id=1, speaker=0, t_ms=100.0)
            fake.send(**fake_prediction(1, final=True, label="anger", p=0.6, t0=100.0, t1=900.0, text="No!"))
            old = page.locator('#transcript li.utt[data-id="1"][data-state="final"]')
            old.wait_for(timeout=5_000)
            expect(page.locator("#now-label")).to_have_text("anger")
            expect(old.locator(".chip")).to_have_count(0)
            expect(page.locator("#modalities-box")).to_be_hidden()
            assert not errors, errors
            browser.close()
    finally:
        fake.stop()
