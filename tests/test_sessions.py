"""Browser sessions on the real server and the real shared models: admission (`busy`), bad and
hostile binary frames (`bad_frame`, `too_fast`, a watcher sending media), who may reset what
(`forbidden`), idle sessions, independent dialogues, and https/wss with a certificate."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from emostream.realtime import media_frames as mf
from emostream.realtime import protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.scheduler import Scheduler
from emostream.realtime.sessions import SessionManager
from emostream.realtime.transport.tls import TlsConfigError, server_context
from emostream.realtime.transport.ws import Server
from tests.helpers import eventually, recv_until

DATA = Path(__file__).parent / "data"


def fixture_pcm() -> np.ndarray:
    with wave.open(str(DATA / "dialogue.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def run(shared: Any, scenario, **manager_kw: Any) -> None:  # noqa: ANN001
    async def main() -> None:
        scheduler = Scheduler()
        manager = SessionManager(shared, PipelineConfig(), scheduler, **manager_kw)
        scheduler.start()
        try:
            async with Server("127.0.0.1", 0, capture=manager) as server:
                await scenario(server, manager)
        finally:
            await asyncio.to_thread(manager.close_all)
            await asyncio.to_thread(scheduler.close)

    asyncio.run(asyncio.wait_for(main(), timeout=90))


def test_bad_frames_get_errors_and_the_session_goes_on(shared: Any) -> None:
    async def scenario(server: Server, manager: SessionManager) -> None:
        async with connect(server.ws_url + "?source=browser") as ws:
            hello = await recv_until(ws, lambda m: m["type"] == "hello")
            assert hello["capture"]["audio_hz"] == 16000 and hello["session"] != server.session
            pcm = fixture_pcm()[:1024]
            bad = [b"xx", b"ZZ" + mf.encode_audio(0, 0.0, pcm)[2:],
                   mf.encode_audio(0, 0.0, pcm)[:16] + (44100).to_bytes(4, "little") + pcm.tobytes(),  # wrong rate
                   mf.encode_audio(0, 0.0, pcm)[:20] + b"\0" * (2 * (mf.MAX_AUDIO_SAMPLES + 1)),  # oversized
                   mf.encode_video(0, 0.0, 320, 240, b"\xff\xd8\xff" + b"\0" * 100)]  # not a decodable JPEG
            await ws.send(mf.encode_audio(0, 0.0, pcm))  # video is placed on the audio clock: audio first
            for frame in bad:
                await ws.send(frame)
                err = await recv_until(ws, lambda m: m["type"] == "error")
                assert err["code"] == "bad_frame", err
            await ws.send(mf.encode_audio(1, 64.0, pcm))  # a good frame after the bad ones
            await ws.send(json.dumps(protocol.ping("still-there")))
            pong = await recv_until(ws, lambda m: m["type"] == "pong")
            assert pong["id"] == "still-there"
            (session,) = manager.sessions()
            assert session.counters.bad_frames == 4 and session.counters.video_undecodable == 1
            assert session.audio_seq.received == 2 and session.audio_seq.lost == 0

    run(shared, scenario)


def test_a_watcher_sending_media_and_a_client_faster_than_real_time(shared: Any) -> None:
    async def scenario(server: Server, manager: SessionManager) -> None:
        pcm = fixture_pcm()
        async with connect(server.ws_url) as watcher:
            await recv_until(watcher, lambda m: m["type"] == "hello")
            await watcher.send(mf.encode_audio(0, 0.0, pcm[:1024]))
            err = await recv_until(watcher, lambda m: m["type"] == "error")
            assert err["code"] == "binary" and not manager.sessions()
        async with connect(server.ws_url + "?source=browser") as ws:
            await recv_until(ws, lambda m: m["type"] == "hello")
            for seq, start in enumerate(range(0, 8 * 16000, 1024)):  # 8 s of audio at once
                await ws.send(mf.encode_audio(seq, seq * 64.0, pcm[start:start + 1024]))
            err = await recv_until(ws, lambda m: m["type"] == "error")
            assert err["code"] == "too_fast", err
            (session,) = manager.sessions()
            await eventually(lambda: session.counters.audio_too_fast > 0, what="audio counted as too fast")
            assert session.dialogue.backlog_s() <= 2.0 + 1.0  # what was kept: no more than the slack ahead of the clock

    run(shared, scenario)


def test_busy_idle_and_independent_sessions(shared: Any) -> None:
    async def scenario(server: Server, manager: SessionManager) -> None:
        a = await connect(server.ws_url + "?source=browser")
        b = await connect(server.ws_url + "?source=browser")
        ha = await recv_until(a, lambda m: m["type"] == "hello")
        hb = await recv_until(b, lambda m: m["type"] == "hello")
        assert ha["session"] != hb["session"]
        dialogues = server.health()["capture"]["dialogues"]  # /healthz names each session's dialogue
        assert sorted(d["name"] for d in dialogues) == sorted(f"browser-{h['session']}" for h in (ha, hb))
        assert all(d["drops"]["audio"] == 0 and d["utterances"] == 0 and d["failure"] is None for d in dialogues)
        async with connect(server.ws_url + "?source=browser") as c:  # max_sessions=2: the third is refused
            err = await recv_until(c, lambda m: m["type"] == "error")
            assert err["code"] == "busy"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(c.recv(), 5)
            assert closed.value.rcvd.code == 1013
        await a.send(json.dumps(protocol.reset()))  # a capturing client resets its own session only:
        await recv_until(a, lambda m: m["type"] == "status" and m["code"] == "reset")  # the scheduler did it
        # nothing arrives from b: after the idle timeout it is closed with a status, its first (so b
        # was not reset)
        status = await recv_until(b, lambda m: m["type"] == "status")
        assert status["code"] == "session_idle"
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(b.recv(), 5)
        await a.close()
        await eventually(lambda: manager.sessions() == [], what="both sessions closed")

    run(shared, scenario, max_sessions=2, idle_timeout_s=3.0)


def test_only_the_operator_resets_the_shared_session() -> None:
    resets: list[str] = []

    async def main() -> None:
        async with Server("127.0.0.1", 0, operator_token="op-secret-0123456789",
                          on_client_message=lambda m, cid: resets.append(cid)) as server:
            async with connect(server.ws_url) as ws:
                await recv_until(ws, lambda m: m["type"] == "hello")
                await ws.send(json.dumps(protocol.reset()))
                err = await recv_until(ws, lambda m: m["type"] == "error")
                assert err["code"] == "forbidden"
            async with connect(server.ws_url + "?operator=op-secret-0123456789") as ws:
                await recv_until(ws, lambda m: m["type"] == "hello")
                await ws.send(json.dumps(protocol.reset()))
                await ws.send(json.dumps(protocol.ping(1)))
                await recv_until(ws, lambda m: m["type"] == "pong")
            async with connect(server.ws_url + "?source=browser") as ws:  # this server takes no capture
                err = await recv_until(ws, lambda m: m["type"] == "error")
                assert err["code"] == "bad_message"

    asyncio.run(asyncio.wait_for(main(), timeout=30))
    assert len(resets) == 1


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make a certificate")
def test_https_and_wss_with_a_self_signed_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    with pytest.raises(TlsConfigError, match="not found"):
        server_context(tmp_path / "missing.pem", key)
    with pytest.raises(TlsConfigError, match="cannot load"):
        server_context(key, key)
    client = ssl.create_default_context(cafile=str(cert))

    async def main() -> None:
        async with Server("127.0.0.1", 0, tls=server_context(cert, key)) as server:
            assert server.url.startswith("https://") and server.ws_url.startswith("wss://")
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(server.url + "healthz", context=client, timeout=5).read())
            assert json.loads(body)["ok"] is True
            async with connect(server.ws_url, ssl=client) as ws:
                assert (await recv_until(ws, lambda m: m["type"] == "hello"))["type"] == "hello"

    asyncio.run(asyncio.wait_for(main(), timeout=30))


def test_healthz_is_503_with_the_reason_when_the_pipeline_dies(shared: Any) -> None:
    from emostream.realtime.pipeline import Pipeline

    events: list[dict] = []
    pipeline = Pipeline(PipelineConfig(media=str(DATA / "dialogue.wav"), realtime=False), events.append,
                        components=shared.dialogue_parts())
    pipeline.start()
    assert pipeline.health() == (True, "running")

    def broken() -> None:
        raise RuntimeError("queue exploded")

    pipeline.audio_q.get_nowait = broken  # the dialogue fails outside a chunk: the scheduler gives it up
    assert pipeline.wait(30)
    alive, reason = pipeline.health()
    assert not alive and "queue exploded" in reason
    pipeline.close()

    async def main() -> None:
        async with Server("127.0.0.1", 0) as server:
            url = server.url + "healthz"
            ok = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read()))
            assert ok["ok"] is True
            server.health_checks["pipeline"] = pipeline.health
            with pytest.raises(urllib.error.HTTPError) as err:
                await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5))
            assert err.value.code == 503
            body = json.loads(err.value.read())
            assert body["ok"] is False and "queue exploded" in body["reason"]
            assert body["parts"]["pipeline"]["ok"] is False

    asyncio.run(asyncio.wait_for(main(), timeout=30))
