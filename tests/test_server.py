"""The websocket server against real sockets on port 0, with events published by the tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import struct
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from emostream.realtime import cli as server_mod
from emostream.realtime import protocol
from emostream.realtime.protocol import Config, Reset
from emostream.realtime.transport.broadcast import Broadcaster, ClientQueue
from emostream.realtime.transport.ws import Server, ServerConfigError
from tests.helpers import LABELS, eventually, final, interim, raw_ws, recv_json, validate


def run_async(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop, with an overall timeout."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout=60))

    return wrapper


def make_server(**kwargs: Any) -> Server:
    hello = protocol.hello(labels=LABELS, model="test-model", modalities=["text", "audio"], video_fps=10)
    return Server("127.0.0.1", 0, hello=hello, **kwargs)


async def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A raw GET that sends `path` exactly as given (no client-side normalisation)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in header_lines)}
    return int(status_line.split()[1]), found, body


# ---------------------------------------------------------------------------------------------
# I/O-free core


def test_client_queue_drops_oldest_droppable_first_and_counts() -> None:
    b = Broadcaster(queue_size=4)
    q = b.subscribe("c1", first=protocol.hello(labels=LABELS, model="m", modalities=[], session="s", server_version="1"))
    b.publish(final(1))
    b.publish(interim(2))
    b.publish(final(3))
    b.publish(final(4))  # full: the interim goes
    assert q.dropped == 1 and len(q) == 4
    b.publish(final(5))  # no droppable left: the oldest non-hello goes (final 1)
    assert q.dropped == 2
    kinds = [(item.type, json.loads(item.text)["utterance_id"]) if item.text else (item.type, None) for item in q._items]
    assert kinds == [("hello", None), ("prediction", 3), ("prediction", 4), ("prediction", 5)]


def test_metrics_report_this_clients_drops_and_coalesce() -> None:
    b = Broadcaster(queue_size=3)
    slow, fast = b.subscribe("slow"), b.subscribe("fast")
    for i in range(10):
        b.publish(final(i))
        while fast.get_nowait() is not None:
            pass
    assert slow.dropped == 7 and fast.dropped == 0
    b.publish(protocol.metrics(drops={"audio": 2}))
    b.publish(protocol.metrics(drops={"audio": 3}))  # replaces the pending snapshot, not a drop
    items = [slow.get_nowait() for _ in range(len(slow))]
    metrics = [json.loads(b.render(it, slow)) for it in items if it.type == "metrics"]
    assert len(metrics) == 1
    assert metrics[0]["drops"] == {"audio": 3, "client": slow.dropped} and metrics[0]["clients"] == 2
    validate(metrics[0])
    fast_metrics = json.loads(b.render(fast.get_nowait(), fast))
    assert fast_metrics["drops"]["client"] == 0
    b.unsubscribe(slow)
    assert b.dropped == slow.dropped and b.clients == 1


def test_broadcaster_refuses_invalid_events() -> None:
    b = Broadcaster()
    with pytest.raises(ValueError):
        b.publish({"type": "reset", "v": 1})
    bad = final(1)
    bad["confidence"] = float("nan")
    with pytest.raises(ValueError):
        b.publish(bad)


def test_client_queue_get_waits_and_close_wakes() -> None:
    async def scenario() -> None:
        q = ClientQueue("c", maxsize=2)
        getter = asyncio.create_task(q.get())
        await asyncio.sleep(0.01)
        assert not getter.done()
        q.close()
        assert await asyncio.wait_for(getter, 1) is None

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------------
# The real server


@run_async
async def test_hello_then_every_message_type_validates() -> None:
    async with make_server() as server:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", server.url) and server.port > 0
        async with connect(server.ws_url) as ws:
            hello = await recv_json(ws)
            assert hello["type"] == "hello" and hello["labels"] == LABELS and hello["session"] == server.session
            assert hello["client"] and hello["interim"] is True and hello["model"] == "test-model"
            events = [
                protocol.utterance(event="start", utterance_id=1, speaker=0, t_ms=0),
                interim(1),
                protocol.utterance(event="end", utterance_id=1, speaker=0, t_ms=900),
                protocol.transcript(utterance_id=1, speaker=0, text="hello there", language="en"),
                final(1),
                protocol.metrics(queues={"audio": 1}, drops={"audio": 0}, timings_ms={"asr": 250}, rtf=0.3),
                protocol.status(code="camera_missing", level="warning", message="audio-only", modalities=["text", "audio"]),
            ]
            for event in events:
                server.publish(event)
            got = [await recv_json(ws) for _ in events]
            assert [m["type"] for m in got] == [e["type"] for e in events]
            assert got[5]["drops"]["client"] == 0 and got[5]["clients"] == 1
            await ws.send(json.dumps(protocol.ping("p1")))
            pong = await recv_json(ws)
            assert pong == {**pong, "type": "pong", "id": "p1"}
            await ws.send("nonsense")
            assert (await recv_json(ws))["type"] == "error"
            # a new hello (e.g. a model loaded) reaches connected and later clients
            server.publish(protocol.hello(labels=["calm", "tense"], model="other", modalities=["audio"]))
            assert (await recv_json(ws))["labels"] == ["calm", "tense"]
        async with connect(server.ws_url) as ws2:
            assert (await recv_json(ws2))["model"] == "other"


@run_async
async def test_twenty_clients_receive_every_final_in_order() -> None:
    n_clients, n_finals = 20, 40
    async with make_server() as server:
        clients = await asyncio.gather(*(connect(server.ws_url) for _ in range(n_clients)))
        try:
            for ws in clients:
                assert (await recv_json(ws))["type"] == "hello"
            await eventually(lambda: server.broadcaster.clients == n_clients)

            async def collect(ws: ClientConnection) -> list[int]:
                ids: list[int] = []
                while len(ids) < n_finals:
                    msg = await recv_json(ws)
                    if msg["type"] == "prediction" and msg["final"]:
                        ids.append(msg["utterance_id"])
                return ids

            readers = [asyncio.create_task(collect(ws)) for ws in clients]
            for i in range(n_finals):
                server.publish(interim(i))
                server.publish(final(i))
                if i % 5 == 0:
                    await asyncio.sleep(0)
            results = await asyncio.gather(*readers)
        finally:
            await asyncio.gather(*(ws.close() for ws in clients))
    assert all(ids == list(range(n_finals)) for ids in results)
    assert server.broadcaster.dropped == 0


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return b0 & 0x0F, await reader.readexactly(n)


@run_async
async def test_a_stalled_client_does_not_delay_the_others() -> None:
    """A client that reads nothing loses the oldest of its own queue; the clients that read get every
    message, in order, and lose none. (How fast fan-out delivers is benchmarks/load.py's to measure.)"""
    n_msgs, size = 300, 16_000
    async with make_server(client_queue_size=16) as server:
        reader, writer = await raw_ws(server.port)
        await eventually(lambda: server.broadcaster.clients == 1, what="the raw client")
        stalled = server.broadcaster.queues()[0]
        fast = [await connect(server.ws_url) for _ in range(3)]
        for ws in fast:
            await recv_json(ws)
        await eventually(lambda: server.broadcaster.clients == 4, what="the three readers")
        fast_qs = [q for q in server.broadcaster.queues() if q is not stalled]

        async def consume(ws: ClientConnection) -> list[int]:
            ids: list[int] = []
            while len(ids) < n_msgs:
                msg = await recv_json(ws)
                if msg["type"] == "prediction":
                    ids.append(msg["utterance_id"])
            return ids

        readers = [asyncio.create_task(consume(ws)) for ws in fast]
        filler = os.urandom(size // 2).hex()
        for i in range(n_msgs):
            server.publish(final(i, text=filler))
            await asyncio.sleep(0.002)  # the producer's pace, not a wait for an outcome
        got = await asyncio.gather(*readers)

        report = (f"{n_msgs} x {size} B to 3 readers + 1 stalled: stalled client dropped {stalled.dropped}, "
                  f"queued {len(stalled)}; the readers dropped {[q.dropped for q in fast_qs]}")
        assert stalled.dropped > 0, "the raw client was not stalled: " + report
        assert len(stalled) <= 16
        assert all(ids == list(range(n_msgs)) for ids in got), report  # every message, in order
        assert all(q.dropped == 0 for q in fast_qs), report

        # The stalled client wakes up: what it got is in order, and the next metrics says what it lost.
        server.publish(protocol.metrics(drops={"audio": 0}))
        got: list[int] = []
        while True:
            opcode, payload = await asyncio.wait_for(_read_frame(reader), 10)
            if opcode != 1:
                continue
            msg = json.loads(payload)
            validate(msg)
            if msg["type"] == "prediction":
                got.append(msg["utterance_id"])
            elif msg["type"] == "metrics":
                assert msg["drops"]["client"] == stalled.dropped > 0
                break
        assert got == sorted(got) and len(got) + stalled.dropped == n_msgs
        writer.close()
        for ws in fast:
            await ws.close()


@run_async
async def test_stop_does_not_hang_on_a_stalled_client() -> None:
    server = await make_server(close_timeout=0.5).start()
    reader, writer = await raw_ws(server.port)
    await eventually(lambda: server.broadcaster.clients == 1)
    big = os.urandom(20_000).hex()
    for i in range(400):
        server.publish(final(i, text=big))
        await asyncio.sleep(0)
    await eventually(lambda: server.broadcaster.queues()[0].dropped > 0)
    # the closing handshake cannot complete (the client reads nothing): stop() aborts the connection
    # after close_timeout and returns; a stop that hangs fails here
    await asyncio.wait_for(server.stop(), 30)
    assert not server.running
    with contextlib.suppress(ConnectionError):  # the stalled client is cut off: its stream ends
        while await asyncio.wait_for(reader.read(1 << 16), 10):
            pass
    writer.close()


@run_async
async def test_bad_messages_get_errors_and_the_server_keeps_serving() -> None:
    async with make_server(max_message_bytes=1024) as server:
        async with connect(server.ws_url) as ws:
            await recv_json(ws)
            cases = [
                ("not json", "bad_json"),
                ("[1]", "bad_json"),
                ('{"type":"subscribe","v":1}', "unknown_type"),
                ('{"type":"reset","v":2}', "bad_version"),
                ('{"type":"config","v":1,"interim":"yes"}', "bad_message"),
                (b"\x00\x01binary", "binary"),
                ('{"type":"ping","v":1,"id":"' + "x" * 2000 + '"}', "too_big"),
                ("é" * 600, "too_big"),  # 600 characters, 1200 bytes
            ]
            for text, code in cases:
                await ws.send(text)
                err = await recv_json(ws)
                assert (err["type"], err["code"]) == ("error", code), text[:40]
            await ws.send(json.dumps(protocol.ping(1)))
            assert (await recv_json(ws))["type"] == "pong"
            server.publish(final(1))
            assert (await recv_json(ws))["utterance_id"] == 1

            # far over the limit: the websocket layer closes this connection (1009) ...
            async with connect(server.ws_url, max_size=None) as big:
                await recv_json(big)
                await big.send("x" * (8 * 1024))
                with pytest.raises(ConnectionClosed) as info:
                    await asyncio.wait_for(big.recv(), 5)
                assert info.value.rcvd is not None and info.value.rcvd.code == 1009
            # ... and everyone else is still served
            server.publish(final(2))
            assert (await recv_json(ws))["utterance_id"] == 2
        async with connect(server.ws_url) as again:
            assert (await recv_json(again))["type"] == "hello"


@run_async
async def test_client_messages_reach_the_hook_and_config_filters_interim() -> None:
    received: list[tuple[object, str]] = []

    def hook(message: object, client_id: str) -> None:
        if isinstance(message, Reset) and received and isinstance(received[-1][0], Reset):
            raise RuntimeError("boom")
        received.append((message, client_id))

    async with make_server(on_client_message=hook) as server:
        async with connect(server.ws_url) as ws, connect(server.ws_url) as other:
            hello = await recv_json(ws)
            await recv_json(other)
            await ws.send(json.dumps(protocol.config(interim=False)))
            await ws.send(json.dumps(protocol.reset()))
            await ws.send(json.dumps(protocol.ping()))  # answered by the server, not forwarded
            assert (await recv_json(ws))["type"] == "pong"
            assert received == [(Config(interim=False), hello["client"]), (Reset(), hello["client"])]
            server.publish(interim(1))
            server.publish(final(1))
            assert (await recv_json(ws))["final"] is True  # the interim was skipped for this client
            assert (await recv_json(other))["final"] is False
            assert (await recv_json(other))["final"] is True
            await ws.send(json.dumps(protocol.reset()))  # the hook fails: an internal error, still connected
            err = await recv_json(ws)
            assert err["code"] == "internal"
            await ws.send(json.dumps(protocol.ping(2)))
            assert (await recv_json(ws))["id"] == 2


@run_async
async def test_publish_threadsafe_from_a_pipeline_thread_and_clean_stop() -> None:
    async with make_server() as server:
        ws = await connect(server.ws_url)
        await recv_json(ws)
        thread = threading.Thread(target=lambda: [server.publish_threadsafe(final(i)) for i in range(50)])
        thread.start()
        ids = [(await recv_json(ws))["utterance_id"] for _ in range(50)]
        thread.join()
        assert ids == list(range(50))
        # an invalid event from the thread is logged, not raised into the loop
        assert server.publish_threadsafe({"type": "bogus", "v": 1})
        server.publish(final(99))
        assert (await recv_json(ws))["utterance_id"] == 99
    await asyncio.wait_for(ws.wait_closed(), 10)
    assert ws.close_code == 1001  # going away: the server shut down cleanly
    assert not server.running and server.publish_threadsafe(final(1)) is False
    await server.stop()  # idempotent


def test_non_loopback_bind_without_token_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for host in ("0.0.0.0", "", "::", "192.168.1.20", "example.org"):
        with pytest.raises(ServerConfigError, match="token"):
            Server(host, 0)
    Server("0.0.0.0", 0, token="a-long-enough-secret-token")  # constructing is enough
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        Server(host, 0)
    with pytest.raises(ServerConfigError):
        Server("127.0.0.1", 0, token="has space")
    assert server_mod.serve_main(["--host", "0.0.0.0", "--port", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "token" in err


@run_async
async def test_token_is_required_and_checked() -> None:
    token = "s3cret-token-0123456789"
    async with make_server(token=token) as server:
        for url, headers in [
            (server.ws_url, None),
            (server.ws_url + "?token=wrong", None),
            (server.ws_url, {"Authorization": "Bearer wrong"}),
            (server.ws_url + "?token=" + token[:-1], None),
        ]:
            with pytest.raises(InvalidStatus) as info:
                await connect(url, additional_headers=headers)
            assert info.value.response.status_code == 401
        async with connect(server.ws_url + "?token=" + token) as ws:
            assert (await recv_json(ws))["type"] == "hello"
        async with connect(server.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            assert (await recv_json(ws))["type"] == "hello"
        status, _, _ = await http_get(server.port, "/healthz")  # the page and health need no token
        assert status == 200


@run_async
async def test_origin_allow_list() -> None:
    async with make_server(origins=["https://dashboard.example"]) as server:
        with pytest.raises(InvalidStatus) as info:
            await connect(server.ws_url, origin="http://evil.example")
        assert info.value.response.status_code == 403
        with pytest.raises(InvalidStatus):
            await connect(server.ws_url, origin=f"http://evil.example:{server.port}")  # DNS rebinding
        for origin in (f"http://127.0.0.1:{server.port}", f"http://localhost:{server.port}", "https://dashboard.example", None):
            async with connect(server.ws_url, origin=origin) as ws:
                assert (await recv_json(ws))["type"] == "hello"
    async with make_server(allow_no_origin=False) as strict:
        with pytest.raises(InvalidStatus) as info:
            await connect(strict.ws_url)
        assert info.value.response.status_code == 403


@run_async
async def test_static_client_content_types_and_no_traversal(tmp_path: Path) -> None:
    async with make_server() as server:  # the real client folder
        for path, ctype, needle in [
            ("/", "text/html", b"app.js"),
            ("/index.html", "text/html", b"<html"),
            ("/app.js", "text/javascript", b"WebSocket"),
            ("/style.css", "text/css", b"--bg"),
        ]:
            status, headers, body = await http_get(server.port, path)
            assert status == 200 and headers["content-type"].startswith(ctype) and needle in body, path
            assert headers["x-content-type-options"] == "nosniff"
        _, headers, _ = await http_get(server.port, "/")
        assert "default-src 'self'" in headers["content-security-policy"]
        for path in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/..%2fpyproject.toml", "/%2E%2E%2Fpyproject.toml",
                     "/../../README.md", "/web/../../pyproject.toml"):
            status, _, body = await http_get(server.port, path)
            assert status == 404 and b"[project]" not in body, path

    web = tmp_path / "web"
    (web / "sub").mkdir(parents=True)
    (web / "index.html").write_text("<html>root</html>")
    (web / "sub" / "page.html").write_text("<html>sub</html>")
    (web / ".env").write_text("SECRET=1")
    (tmp_path / "secret.txt").write_text("SECRET=1")
    (web / "link.txt").symlink_to(tmp_path / "secret.txt")
    async with make_server(web_root=web) as server:
        assert (await http_get(server.port, "/sub/page.html"))[0] == 200
        assert (await http_get(server.port, "/sub/"))[0] == 404  # no index there
        for path in ("/../secret.txt", "/%2e%2e/secret.txt", "/%2e%2e%2fsecret.txt", "/sub/../../secret.txt",
                     "/sub/%2e%2e/%2e%2e/secret.txt", "/..%5csecret.txt", "/%252e%252e/secret.txt", "/.env", "/link.txt",
                     "/missing.js", "//secret.txt", "/%00", "/%ff", "/index.html%00.js", str(tmp_path / "secret.txt")):
            status, _, body = await http_get(server.port, path)
            assert status == 404 and b"SECRET" not in body, path


@run_async
async def test_healthz() -> None:
    async with make_server() as server:
        status, headers, body = await http_get(server.port, "/healthz")
        health = json.loads(body)
        assert status == 200 and headers["content-type"] == "application/json"
        assert health["ok"] is True and health["clients"] == 0 and health["drops"] == 0 and health["uptime_s"] >= 0
        async with connect(server.ws_url) as ws:
            await recv_json(ws)
            await eventually(lambda: server.broadcaster.clients == 1)
            health = json.loads((await http_get(server.port, "/healthz?x=1"))[2])
            assert health["clients"] == 1 and health["protocol"] == 1


class FakeSource:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.closed = False
        self.messages: list[object] = []

    def start(self, publish: Callable[[dict], object]) -> None:
        def produce() -> None:
            publish(protocol.hello(labels=LABELS, model="fake", modalities=["audio"]))
            for i in range(3):
                publish(final(i))
            self.done.set()

        threading.Thread(target=produce).start()

    def on_client_message(self, message: object, client_id: str) -> None:
        self.messages.append(message)

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    def close(self) -> None:
        self.closed = True


def test_main_prints_one_serving_line_and_runs_the_source_once(capsys: pytest.CaptureFixture[str]) -> None:
    sources: list[FakeSource] = []

    def factory(app: object) -> FakeSource:
        assert app.options.once  # type: ignore[attr-defined]
        sources.append(FakeSource())
        return sources[-1]

    assert server_mod.serve_main(["--port", "0", "--once"], source_factory=factory) == 0
    out, _ = capsys.readouterr()
    assert re.fullmatch(r"serving http://127\.0\.0\.1:\d+/\n", out), out
    assert sources and sources[0].closed


def test_main_explains_a_source_that_cannot_start(capsys: pytest.CaptureFixture[str]) -> None:
    def broken(app: object) -> FakeSource:
        raise RuntimeError("no such device")

    assert server_mod.serve_main(["--port", "0"], source_factory=broken) == 1
    out, err = capsys.readouterr()
    assert out.startswith("serving http://") and "could not start the pipeline: no such device" in err
    assert server_mod.serve_main(["--port", "0", "--media", "/no/such/file.mp4"]) == 2
    assert "not found" in capsys.readouterr().err
