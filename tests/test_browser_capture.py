"""The page captures the browser's own camera and microphone (demo/web/capture.js, pcm-worklet.js).

Marked `browser`: real headless Chromium (Debian's) with fake capture devices fed from files:
`--use-file-for-fake-audio-capture` plays tests/data/dialogue.wav (6 lines, 24.7 s; Chromium loops
it) and `--use-file-for-fake-video-capture` a y4m made here from demo/media/sample.mp4 (the NASA
astronaut portrait, a real face).

- Against `FakeCaptureServer`, a FAKE used only to test the page's capture code: it serves
  demo/web, answers `/ws?source=browser` with a `hello` that carries `capture`, and records the
  binary frames the page sends, so the tests check their headers, sequence numbers, times, the
  audio rate (samples per second of wall time) and content, and that the JPEGs decode; and the
  page's behaviour when the server is full (`busy`, close 1013), when getUserMedia fails, and when
  the user stops capturing. No pipeline, no model.
- Against the real server (`emostream serve --source browser`), skipped until the server has
  browser sessions: finals for every line of the fixture with a bounded WER, live face
  probabilities, two pages with independent sessions, and `busy` past `--max-sessions`.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import wait_until
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, PAGE_CSP, ROOT, WEB, free_port, stop

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]

DIALOGUE_WAV = ROOT / "tests" / "data" / "dialogue.wav"
DIALOGUE = json.loads((ROOT / "tests" / "data" / "dialogue.json").read_text())
SAMPLE_MP4 = ROOT / "demo" / "media" / "sample.mp4"
CAPTURE = {"audio_hz": 16000, "max_audio_samples": 8000, "max_video_bytes": 262144, "video_fps": 5}
HEADER = struct.Struct("<2sBBIdI")  # magic, version, kind, seq, t_ms, rate | (width, height)
MELD = ["neutral", "joy", "sadness", "anger", "surprise", "fear", "disgust"]


# ---------------------------------------------------------------------------------------------
# fixtures: the fake devices' files


def make_y4m(src: Path, dst: Path, *, width: int = 320, height: int = 240, fps: int = 10,
             seconds: float = 4.0) -> Path:
    """Decode `src` (PyAV) and write its first `seconds` as an I420 YUV4MPEG2 file for Chromium's
    `--use-file-for-fake-video-capture` (which loops it)."""
    import av

    n_max = int(round(seconds * fps))
    with av.open(str(src)) as container, dst.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        n = 0
        for frame in container.decode(video=0):
            i420 = frame.reformat(width=width, height=height, format="yuv420p").to_ndarray()
            assert i420.shape == (height * 3 // 2, width), i420.shape  # Y rows, then U and V (packed)
            out.write(b"FRAME\n" + np.ascontiguousarray(i420).tobytes())
            n += 1
            if n >= n_max:
                break
    assert n > 0, f"no video frames in {src}"
    return dst


def fake_wav(tmp: Path) -> Path:
    """The dialogue as Chromium's fake audio capture reads it: 16-bit PCM WAV (Chromium's
    WavAudioHandler takes PCM at any rate and converts; a plain RIFF header, no extra chunks)."""
    import soundfile as sf

    info = sf.info(str(DIALOGUE_WAV))
    if info.format == "WAV" and info.subtype == "PCM_16":
        return DIALOGUE_WAV
    data, rate = sf.read(str(DIALOGUE_WAV), dtype="int16")
    out = tmp / "dialogue-pcm16.wav"
    sf.write(str(out), data, rate, subtype="PCM_16", format="WAV")
    return out


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("fake-devices")
    return {"wav": fake_wav(tmp), "y4m": make_y4m(SAMPLE_MP4, tmp / "face.y4m")}


def capture_args(media: dict[str, Path]) -> list[str]:
    return [*CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={media['wav']}",
            f"--use-file-for-fake-video-capture={media['y4m']}",
            "--autoplay-policy=no-user-gesture-required"]


@pytest.fixture(scope="module")
def browser(media: dict[str, Path]) -> Any:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=capture_args(media))
        yield b
        b.close()


def open_page(browser: Any, url: str) -> tuple[Any, list[str]]:
    """A page in its own context (its own websocket), collecting page errors."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    return page, errors


# ---------------------------------------------------------------------------------------------
# A FAKE capture server, used only to test the page's capture code.


class FakeCaptureServer:
    """FAKE emostream server for tests of the page's capture code only: serves demo/web and, on
    /ws, sends a `hello` (with `capture` for `?source=browser` connections) and records every
    connection's query and binary frames with their arrival times. With `max_capturers`, capturing
    connections past that number get the real server's `busy` error and close 1013. No pipeline."""

    def __init__(self, max_capturers: int | None = None, refuse_capture: bool = False) -> None:
        self.port = free_port()
        self.max_capturers = max_capturers
        self.refuse_capture = refuse_capture  # as the real server before its models are loaded
        self.connections: list[dict[str, Any]] = []  # {query, capture, frames: [(wall_s, bytes)], texts, open}
        self._live: list[Any] = []
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)

    def __enter__(self) -> FakeCaptureServer:
        self._thread.start()
        assert self._started.wait(10), "the fake server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def capturers(self) -> list[dict[str, Any]]:
        return [c for c in self.connections if c["capture"]]

    def send(self, conn: dict[str, Any], **msg: Any) -> None:
        asyncio.run_coroutine_threadsafe(conn["ws"].send(json.dumps({"v": 1, **msg})), self._loop).result(5)

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", self.port, process_request=self._http, max_size=2**20):
            self._started.set()
            await self._stop.wait()

    async def _handler(self, ws: Any) -> None:
        from urllib.parse import parse_qs, urlsplit

        query = {k: v[0] for k, v in parse_qs(urlsplit(ws.request.path).query).items()}
        capture = query.get("source") == "browser"
        conn: dict[str, Any] = {"query": query, "capture": capture, "frames": [], "texts": [], "open": True,
                                "ws": ws, "session": f"fake{len(self.connections)}"}
        self.connections.append(conn)
        if capture and self.refuse_capture:
            await ws.send(json.dumps({"type": "error", "v": 1, "code": "bad_message",
                                      "message": "this server does not take browser capture"}))
            await ws.close(1008, "no capture here")
            conn["open"] = False
            return
        if capture and self.max_capturers is not None and \
                sum(1 for c in self.connections if c["capture"] and c["open"] and not c.get("busy")) > self.max_capturers:
            conn["busy"] = True
            await ws.send(json.dumps({"type": "error", "v": 1, "code": "busy",
                                      "message": f"{self.max_capturers} capturing sessions already"}))
            await ws.close(1013, "busy")
            conn["open"] = False
            return
        hello = {"type": "hello", "v": 1, "session": conn["session"], "labels": MELD, "model": "fake-model",
                 "modalities": ["text"], "live_modalities": ["text", "face"],
                 "sample_rates": {"audio_hz": 16000, "video_fps": 5}, "server_version": "0.0.0-fake", "interim": True}
        if capture:
            hello["capture"] = dict(CAPTURE)
        await ws.send(json.dumps(hello))
        try:
            async for data in ws:
                if isinstance(data, bytes):
                    conn["frames"].append((time.monotonic(), data))
                else:
                    conn["texts"].append(json.loads(data))
        except Exception:  # noqa: BLE001 - the page going away mid-frame
            pass
        finally:
            conn["open"] = False

    def _http(self, connection: Any, request: Any) -> Any:
        from websockets.datastructures import Headers
        from websockets.http11 import Response

        path = request.path.split("?", 1)[0]
        if path == "/ws":
            return None
        name = "index.html" if path == "/" else path.lstrip("/")
        file = (WEB / name).resolve()
        if not file.is_relative_to(WEB.resolve()) or not file.is_file():
            return connection.respond(404, "not found\n")
        body = file.read_bytes()
        ctype = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}.get(file.suffix, "text/plain")
        headers = Headers([("Content-Type", ctype + "; charset=utf-8"), ("Content-Length", str(len(body))),
                           ("Connection", "close"), ("Content-Security-Policy", PAGE_CSP)])
        return Response(200, "OK", headers, body)


def parse_frames(frames: list[tuple[float, bytes]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    for wall, data in frames:
        assert len(data) > HEADER.size, len(data)
        magic, version, kind, seq, t_ms, tail = HEADER.unpack_from(data)
        assert magic == b"EM" and version == 1 and kind in (1, 2), (magic, version, kind)
        frame = {"wall": wall, "seq": seq, "t_ms": t_ms, "payload": data[HEADER.size:]}
        if kind == 1:
            frame["rate"] = tail
        else:
            frame["width"], frame["height"] = struct.unpack_from("<HH", data, 16)
        out[kind].append(frame)
    return out


def best_correlation(received: np.ndarray, reference: np.ndarray) -> float:
    """Largest normalised cross-correlation of `received` against the looped `reference` (any lag)."""
    ref = np.tile(reference, 3).astype(np.float64)
    x = received.astype(np.float64)
    x = (x - x.mean()) / (x.std() + 1e-9)
    n = len(ref) + len(x)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(ref, size) * np.conj(np.fft.rfft(x, size)), size)[: len(ref) - len(x) + 1]
    # local energy of ref windows, for normalisation
    c = np.concatenate([[0.0], np.cumsum(ref)])
    c2 = np.concatenate([[0.0], np.cumsum(ref * ref)])
    m = len(x)
    mean = (c[m:] - c[:-m]) / m
    var = np.maximum((c2[m:] - c2[:-m]) / m - mean * mean, 1e-9)
    return float(np.max(corr[: len(var)] / (m * np.sqrt(var[: len(corr)]))))


# ---------------------------------------------------------------------------------------------
# the page's capture code against the FAKE server


def test_page_streams_its_camera_and_microphone_to_a_fake_server(browser: Any) -> None:
    from PIL import Image
    from playwright.sync_api import expect

    with FakeCaptureServer() as fake:
        page, errors = open_page(browser, fake.url + "?source=browser&token=t0k")
        conn = wait_until(lambda: next(iter(fake.capturers()), None), 20, "a capturing connection")
        assert conn["query"] == {"source": "browser", "token": "t0k"}  # the token is kept
        expect(page.locator("#self-view")).to_be_visible()
        expect(page.locator("#capture-stop")).to_be_visible()
        expect(page.locator("#capture-btn")).to_be_hidden()
        expect(page.locator("#capture-state")).to_contain_text("sending", timeout=10_000)
        assert page.evaluate("window.emostream.mode") == "capture"
        assert page.evaluate("window.emostream.session") == conn["session"]
        wait_until(lambda: conn["frames"], 15, "the first frame")

        def count(kind: int) -> int:
            return sum(1 for _, data in list(conn["frames"]) if len(data) > 3 and data[3] == kind)

        # about 6 s of streaming: 96 audio frames of 1024 samples and 20 of video (at 5 a second)
        wait_until(lambda: count(1) >= 96 and count(2) >= 20, 60, "6 s of audio and 20 video frames")
        frames = parse_frames(list(conn["frames"]))
        audio, video = frames[1], frames[2]

        # audio: seq from 0 without gaps, 16 kHz header, <= max samples, t_ms in step with the samples
        assert [f["seq"] for f in audio] == list(range(len(audio)))
        assert {f["rate"] for f in audio} == {16000}
        sizes = [len(f["payload"]) // 2 for f in audio]
        assert all(len(f["payload"]) % 2 == 0 for f in audio)
        assert all(1 <= s <= CAPTURE["max_audio_samples"] for s in sizes)
        assert set(sizes) == {1024}, set(sizes)
        t = np.array([f["t_ms"] for f in audio])
        assert np.all(np.diff(t) > 0)
        step = np.diff(t) / (np.array(sizes[:-1]) / 16.0)  # ms between chunks / ms of audio in a chunk
        assert abs(float(np.median(step)) - 1) < 0.02, np.median(step)
        now_ms = page.evaluate("performance.now()")
        assert 0 < t[0] < now_ms, (t[0], now_ms)  # performance.now() of the page, from before now
        # (nothing lost: the seqs above have no gap; how fast the page sends is not asserted here, its
        # wall-clock rate depends on how busy the machine is)
        # the content is the fixture's speech, resampled (48 kHz context -> 16 kHz), not silence or noise
        pcm = np.frombuffer(b"".join(f["payload"] for f in audio), "<i2")
        assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 200
        import soundfile as sf

        ref, sr = sf.read(str(DIALOGUE_WAV), dtype="int16")
        assert sr == 16000
        piece = pcm[16000:16000 * 4] if len(pcm) > 16000 * 4 else pcm
        corr = best_correlation(piece, ref)
        assert corr > 0.5, corr

        # video: seq from 0, 320x240 JPEGs that decode to the face video, at most 5 a second (their stamps)
        assert [f["seq"] for f in video] == list(range(len(video)))
        assert len(video) >= 20, len(video)
        vt = np.array([f["t_ms"] for f in video])
        assert np.all(np.diff(vt) > 100)
        for f in video:
            jpeg = f["payload"]
            assert (f["width"], f["height"]) == (320, 240)
            assert jpeg[:2] == b"\xff\xd8" and jpeg[-2:] == b"\xff\xd9" and len(jpeg) <= CAPTURE["max_video_bytes"]
        img = Image.open(io.BytesIO(video[-1]["payload"]))
        assert img.format == "JPEG" and img.size == (320, 240)
        arr = np.asarray(img.convert("RGB"), dtype=np.float64)
        assert 60 < arr.mean() < 230 and arr.std() > 20  # the portrait, not a black or test-pattern frame

        stats = page.evaluate("window.emostream.capture")
        assert stats["audioFrames"] >= len(audio) and stats["videoFrames"] >= len(video)

        # face events are shown on the self view (label, and the box over the mirrored video)
        fake.send(conn, type="face", t_ms=500.0, present=True, label="joy", confidence=0.83,
                  probs={k: (0.83 if k == "joy" else 0.17 / 6) for k in MELD}, box=[100, 40, 120, 120],
                  frame_size=[320, 240], n_faces=1)
        expect(page.locator("#self-face")).to_have_text("joy 83.0%")
        expect(page.locator("#self-box")).to_be_visible()
        assert page.locator("#self-box").evaluate("n => n.style.left") == "31.25%"  # mirrored: 1 - 220/320
        expect(page.locator("#face-now-label")).to_have_text("joy")
        # server errors about frames are shown, and capture goes on
        fake.send(conn, type="error", code="too_fast", message="audio is arriving faster than real time")
        expect(page.locator('#banners .banner[data-code="too_fast"]')).to_contain_text("faster than real time")
        n = len(conn["frames"])
        wait_until(lambda: len(conn["frames"]) > n + 10, 5, "frames after the error")

        # stop: back to watching (a connection without source=browser), the devices released
        page.locator("#capture-stop").click()
        watcher = wait_until(lambda: next((c for c in fake.connections if not c["capture"]), None), 10, "a watcher")
        assert "source" not in watcher["query"] and watcher["query"].get("token") == "t0k"
        expect(page.locator("#capture-btn")).to_be_visible()
        expect(page.locator("#self-view")).to_be_hidden()
        assert page.evaluate("window.emostream.mode") == "watch"
        assert page.evaluate("document.getElementById('self-video').srcObject") is None
        wait_until(lambda: not conn["open"], 10, "the capturing connection to close")  # no frame after it

        # and the button starts capturing again, with a fresh connection whose seqs start at 0
        page.locator("#capture-btn").click()
        wait_until(lambda: len(fake.capturers()) == 2 and fake.capturers()[1]["frames"], 15, "capture again")
        again = parse_frames(list(fake.capturers()[1]["frames"]))
        assert again[1][0]["seq"] == 0 and (not again[2] or again[2][0]["seq"] == 0)
        assert not watcher["frames"]  # the page sent no media while it watched
        assert not errors, errors
        page.context.close()


def test_page_shows_busy_and_does_not_reconnect_loop(browser: Any) -> None:
    """The FAKE server is full: `busy` then close 1013. The page says so, watches instead, and
    tries to capture again only when asked."""
    from playwright.sync_api import expect

    with FakeCaptureServer(max_capturers=0) as fake:
        page, errors = open_page(browser, fake.url + "?source=browser")
        banner = page.locator('#banners .banner[data-code="busy"]')
        expect(banner).to_be_visible(timeout=20_000)
        expect(banner).to_contain_text("server busy: too many capturing sessions")
        expect(banner).to_have_attribute("role", "alert")
        wait_until(lambda: any(not c["capture"] for c in fake.connections), 10, "a watcher connection")
        expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        time.sleep(3.0)
        assert len(fake.capturers()) == 1, [c["query"] for c in fake.connections]  # no capture loop
        assert page.evaluate("window.emostream.mode") == "watch"
        expect(page.locator("#self-view")).to_be_hidden()
        expect(page.locator("#capture-btn")).to_be_visible()
        banner.get_by_role("button", name="Retry capturing").click()
        wait_until(lambda: len(fake.capturers()) == 2, 15, "a second capture attempt")
        expect(page.locator('#banners .banner[data-code="busy"]')).to_be_visible(timeout=10_000)
        time.sleep(1.5)
        assert len(fake.capturers()) == 2
        assert not [e for e in errors if "1013" not in e], errors
        page.context.close()


def test_page_backs_off_when_refused_as_a_capturer(browser: Any) -> None:
    """The FAKE server takes the connection and closes it at once (the real one does while it loads
    its models): the page retries with a growing backoff, not every half second."""
    with FakeCaptureServer(refuse_capture=True) as fake:
        page, _ = open_page(browser, fake.url + "?source=browser")
        wait_until(lambda: fake.capturers(), 20, "a capture attempt")
        wait_until(lambda: len(fake.capturers()) >= 2, 20, "a second attempt")  # it does retry (after 0.5 s)
        time.sleep(3.0)  # a window to count the retries in (a busy machine can only make them fewer)
        assert len(fake.capturers()) <= 4, len(fake.capturers())  # 0.5 s, 1 s, 2 s, ... (+-25 %): not every 0.5 s
        assert page.evaluate("window.emostream.mode") == "capture"
        page.context.close()


def test_page_explains_a_getusermedia_failure(browser: Any) -> None:
    """getUserMedia refused (as a denied permission): a clear message, and the page watches."""
    from playwright.sync_api import expect

    with FakeCaptureServer() as fake:
        ctx = browser.new_context()
        ctx.add_init_script("""navigator.mediaDevices.getUserMedia = () =>
            Promise.reject(new DOMException("Permission denied", "NotAllowedError"));""")
        page = ctx.new_page()
        page.goto(fake.url)
        expect(page.locator("#conn")).to_have_attribute("data-state", "open", timeout=15_000)
        page.locator("#capture-btn").click()
        banner = page.locator('#banners .banner[data-code="capture_failed"]')
        expect(banner).to_contain_text("denied")
        expect(banner).to_contain_text("https")
        expect(banner).to_contain_text("localhost")
        assert page.evaluate("window.emostream.mode") == "watch"
        expect(page.locator("#capture-btn")).to_be_enabled()
        assert not fake.capturers()
        ctx.close()


# ---------------------------------------------------------------------------------------------
# against the real server (`emostream serve --source browser`)


def start_browser_server(cache: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    env = dict(os.environ, EMOSTREAM_CACHE=str(cache), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emostream.realtime.cli", "serve", "--source", "browser", "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith("serving http://"):
            url = line.split()[1].rstrip("/") + "/"
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # drain
            return proc, url
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("the server did not print its URL:\n" + "".join(lines[-30:]))


@pytest.fixture(scope="module")
def real_server(engine_cache: Path) -> Any:
    proc, url = start_browser_server(engine_cache, "--max-sessions", "2")
    try:
        yield url
    finally:
        stop(proc)


def aligned_wer(texts: list[str], word_error_rate: Any) -> float:
    """WER of `len(lines)` consecutive finals against the fixture's lines, taken in their looped
    order from the line the finals start at: the best over the start of the window (the first final
    may be a line clipped by where the device opened) and the rotation of the lines."""
    lines = [u["text"] for u in DIALOGUE["utterances"]]
    n = len(lines)
    best = float("inf")
    for start in range(0, max(1, len(texts) - n + 1)):
        hyp = " ".join(texts[start:start + n])
        for r in range(n):
            best = min(best, word_error_rate(" ".join(lines[r:] + lines[:r]), hyp))
    return best


def finals(page: Any) -> list[dict[str, Any]]:
    return page.evaluate("window.emostream.finals()")


def test_two_capturing_pages_get_their_own_dialogues_from_the_real_server(browser: Any, real_server: str) -> None:
    """(a) each page gets a final per line of the fixture, WER <= 0.35; (b) face probabilities from
    the face video; (c) two pages at once: distinct sessions, own finals, a reset on one only."""
    from playwright.sync_api import expect

    from emostream.realtime.text_metrics import word_error_rate

    pages = [open_page(browser, real_server + "?source=browser") for _ in range(2)]
    try:
        for page, _ in pages:
            expect(page.locator("#capture-state")).to_contain_text("sending", timeout=30_000)
        sessions = [page.evaluate("window.emostream.session") for page, _ in pages]
        assert sessions[0] and sessions[1] and sessions[0] != sessions[1], sessions
        for page, _ in pages:
            hello = page.evaluate("window.emostream.hellos[window.emostream.hellos.length - 1]")
            assert hello["capture"]["audio_hz"] == 16000, hello
        wanted = len(DIALOGUE["utterances"])
        # Chromium loops the wav from wherever the device opened: wait for one more final than there
        # are lines (the first may be a clipped one), then align the finals to the looped lines. A
        # generous deadline: a busy machine makes the finals late (the loop ends as soon as they are in)
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and min(len(finals(p)) for p, _ in pages) < wanted + 1:
            time.sleep(0.5)
        for page, errors in pages:
            got = finals(page)
            texts = [f["text"] for f in got]
            diag = {"finals": [(f["utterance_id"], round(f["t_start_ms"]), f["text"]) for f in got],
                    "errors": page.evaluate("window.emostream.messages.filter(m => m.type === 'error' || "
                                            "m.type === 'status')"),
                    "capture": page.evaluate("window.emostream.capture")}
            assert len(got) >= wanted, diag
            wer = aligned_wer(texts, word_error_rate)
            assert wer <= 0.35, (wer, diag)
            assert page.locator('#transcript li.utt[data-state="final"]').count() >= wanted  # shown, too
            # (b) the face: live face events with probabilities, the face row and the self view show a label
            faces = page.evaluate("window.emostream.messages.filter(m => m.type === 'face' && m.present)")
            assert faces and faces[-1]["probs"] and faces[-1]["label"] in faces[-1]["probs"], faces[-1:]
            expect(page.locator("#face-now")).to_be_visible()
            if isinstance((got[-1].get("modalities") or {}).get("face"), dict):  # the face row shows a label
                expect(page.locator('#modalities .mod-row[data-modality="face"][data-state="ok"]')).to_have_count(1)
            assert any(isinstance((f.get("modalities") or {}).get("face"), dict) for f in got)
            assert not errors, errors
        # (c) a reset on page 0 clears its dialogue only
        before = [len(finals(p)) for p, _ in pages]
        pages[0][0].locator("#reset-btn").click()
        expect(pages[0][0].locator("#transcript > li")).to_have_count(0)
        assert pages[1][0].locator("#transcript > li").count() >= before[1]
        wait_until(lambda: len(finals(pages[1][0])) > before[1], 120, "page 1's next final", interval=0.5)
        assert pages[1][0].locator('#transcript li.utt[data-state="final"]').count() > before[1]
        assert pages[1][0].evaluate("window.emostream.session") == sessions[1]
        ARTIFACTS = ROOT / "artifacts"
        ARTIFACTS.mkdir(exist_ok=True)
        pages[1][0].screenshot(path=str(ARTIFACTS / "browser-capture.png"), full_page=True)
    finally:
        for page, _ in pages:
            page.context.close()


def test_a_capturing_page_past_max_sessions_gets_busy_from_the_real_server(browser: Any,
                                                                          engine_cache: Path) -> None:
    """(d) `--max-sessions 1`: the second capturing page is told `busy` and says so."""
    from playwright.sync_api import expect

    proc, url = start_browser_server(engine_cache, "--max-sessions", "1")
    try:
        first, _ = open_page(browser, url + "?source=browser")
        expect(first.locator("#capture-state")).to_contain_text("sending", timeout=30_000)
        second, _ = open_page(browser, url + "?source=browser")
        banner = second.locator('#banners .banner[data-code="busy"]')
        expect(banner).to_contain_text("server busy: too many capturing sessions", timeout=20_000)
        expect(second.locator("#conn")).to_have_attribute("data-state", "open", timeout=10_000)  # watching
        assert second.evaluate("window.emostream.mode") == "watch"
        time.sleep(2.0)
        busy = second.evaluate("window.emostream.messages.filter(m => m.type === 'error' && m.code === 'busy').length")
        assert busy == 1  # no capture reconnect loop
        expect(first.locator("#capture-state")).to_contain_text("sending")
        for page in (first, second):
            page.context.close()
    finally:
        stop(proc)
