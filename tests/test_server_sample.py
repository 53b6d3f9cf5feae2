"""The real server fed by the real pipeline on the bundled sample: 20 concurrent clients each get
every final prediction, in order. The sample is played as fast as possible (not in real time) to
keep the test short; the server cannot tell the difference."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from emostream.realtime.pipeline import PipelineConfig, PipelineEventSource
from emostream.realtime.server import Server, default_media

N_CLIENTS = 20


async def collect(ws_url: str, ready: asyncio.Event, counter: list[int], stop: asyncio.Event) -> list[dict]:
    got: list[dict] = []
    async with connect(ws_url) as ws:
        counter[0] += 1
        if counter[0] == N_CLIENTS:
            ready.set()
        while True:
            try:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), timeout=1.0)))
            except TimeoutError:
                if stop.is_set():
                    return got


def test_twenty_clients_receive_every_final_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_CACHE", str(tmp_path / "cache"))  # the ONNX export goes here

    async def scenario() -> tuple[list[dict], list[list[dict]]]:
        published: list[dict] = []
        async with Server("127.0.0.1", 0) as server:
            ready, stop, counter = asyncio.Event(), asyncio.Event(), [0]
            tasks = [asyncio.create_task(collect(server.ws_url, ready, counter, stop)) for _ in range(N_CLIENTS)]
            await asyncio.wait_for(ready.wait(), 30)
            source = await asyncio.to_thread(
                PipelineEventSource, PipelineConfig(media=str(default_media()), realtime=False)
            )

            def publish(msg: dict) -> object:
                published.append(msg)
                return server.publish_threadsafe(msg)

            await asyncio.to_thread(source.start, publish)
            assert await asyncio.to_thread(source.wait, 240), "the pipeline did not finish the sample"
            await asyncio.to_thread(source.close)
            await asyncio.sleep(0.5)
            await server.drain(timeout=5.0)
            stop.set()
            received = await asyncio.gather(*tasks)
        return published, received

    published, received = asyncio.run(scenario())
    finals = [(m["utterance_id"], m["text"], m["label"]) for m in published if m["type"] == "prediction" and m["final"]]
    assert len(finals) >= 8, finals  # the sample has 8 lines (the segmenter may split long ones)
    for messages in received:
        got = [(m["utterance_id"], m["text"], m["label"]) for m in messages if m["type"] == "prediction" and m["final"]]
        assert got == finals  # every final, in order, for every client
        assert messages[0]["type"] == "hello"
