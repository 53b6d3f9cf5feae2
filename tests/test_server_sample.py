"""The real server fed by the real pipeline on the bundled sample: 20 concurrent clients each get
every final prediction, in order; the face expert reads the sample's smiling face live and per
utterance; the voices are told apart. The sample is played as fast as possible (not in real time)
to keep the test short; the server cannot tell the difference."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from emostream.realtime import protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.pipeline import PipelineEventSource
from emostream.realtime.resources import sample_media as default_media
from emostream.realtime.transport.ws import Server
from tests.helpers import validate

N_CLIENTS = 20
END = protocol.status(code="test_end", message="the test's last message")  # published after the pipeline's


async def collect(ws_url: str, ready: asyncio.Event, counter: list[int]) -> list[dict]:
    """Everything one client receives, up to END (every message before it has been delivered: a
    client's queue is first in, first out, and a status is never dropped)."""
    async with connect(ws_url) as ws:
        got = [validate(json.loads(await ws.recv()))]  # its hello: the server has it as a client now
        counter[0] += 1
        if counter[0] == N_CLIENTS:
            ready.set()
        while (msg := validate(json.loads(await ws.recv()))) != END:
            got.append(msg)
        return got


@pytest.fixture(scope="module")
def run(engine_cache: Path) -> tuple[list[tuple[float, dict]], list[list[dict]]]:
    """(published messages with the wall time they were published, what each client received)"""

    async def scenario() -> tuple[list[tuple[float, dict]], list[list[dict]]]:
        published: list[tuple[float, dict]] = []
        async with Server("127.0.0.1", 0) as server:
            ready, counter = asyncio.Event(), [0]
            tasks = [asyncio.create_task(collect(server.ws_url, ready, counter)) for _ in range(N_CLIENTS)]
            await asyncio.wait_for(ready.wait(), 60)
            source = await asyncio.to_thread(
                PipelineEventSource, PipelineConfig(media=str(default_media()), realtime=False)
            )

            def publish(msg: dict) -> object:
                published.append((time.monotonic(), msg))
                return server.publish_threadsafe(msg)

            await asyncio.to_thread(source.start, publish)
            assert await asyncio.to_thread(source.wait, 240), "the pipeline did not finish the sample"
            await asyncio.to_thread(source.close)
            server.publish(END)  # after everything the pipeline published (the loop runs callbacks in order)
            received = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        return published, received

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSTREAM_CACHE", str(engine_cache))  # the ONNX exports go here
        return asyncio.run(scenario())


def finals_of(run: tuple[list[tuple[float, dict]], list[list[dict]]]) -> list[dict]:
    return [m for _, m in run[0] if m["type"] == "prediction" and m["final"]]


def test_twenty_clients_receive_every_final_in_order(run) -> None:
    published = [m for _, m in run[0]]
    received = run[1]
    finals = [(m["utterance_id"], m["text"], m["label"]) for m in published if m["type"] == "prediction" and m["final"]]
    assert len(finals) >= 8, finals  # the sample has 8 lines (the segmenter may split long ones)
    for messages in received:
        got = [(m["utterance_id"], m["text"], m["label"]) for m in messages if m["type"] == "prediction" and m["final"]]
        assert got == finals  # every final, in order, for every client
        assert messages[0]["type"] == "hello"


def test_no_whisper_loop_reaches_a_final(run) -> None:
    """The sample's early ASR loops on "I will miss you so much." (three copies, the last cut short)
    with greedy decoding: recovery must leave one copy, and the finals' WER stays low."""
    from emostream.realtime.repetition import looping
    from emostream.realtime.text_metrics import word_error_rate

    finals = finals_of(run)
    assert not [f["text"] for f in finals if looping(f["text"])]
    lines = json.loads((default_media().with_suffix(".json")).read_text())["lines"]
    wer = word_error_rate(" ".join(ln["text"] for ln in lines), " ".join(f["text"] for f in finals))
    assert wer <= 0.16, (wer, [f["text"] for f in finals])  # 0.123 here; 0.193 before loop recovery


def test_the_face_expert_reads_the_smiling_face_live_and_per_utterance(run) -> None:
    hello = next(m for _, m in run[0] if m["type"] == "hello")
    assert hello["live_modalities"] == ["text", "face"] and hello["experts"]["face"] == "fer-mini-xception"
    for final in finals_of(run):  # the sample's video is the smiling NASA astronaut portrait throughout
        face = final["modalities"]["face"]
        assert face is not None and "no_face" not in final["flags"], final
        assert max(face, key=face.get) == "joy", face
        assert set(face) == set(final["probs"]) == set(final["modalities"]["text"])
    faces = [(t, m) for t, m in run[0] if m["type"] == "face"]
    assert len(faces) >= 10
    assert all(m["present"] and m["label"] == "joy" and m["n_faces"] == 1 for _, m in faces)
    for _, m in faces:  # the box lies inside the frame
        x, y, w, h = m["box"]
        assert 0 <= x and 0 <= y and x + w <= m["frame_size"][0] and y + h <= m["frame_size"][1]
    # rate limited to face_event_hz (4) a second of wall clock: counted over the whole span, so that how
    # late any one event was published (a busy machine) does not matter; 1 s of slack for the first
    span_s = faces[-1][0] - faces[0][0]
    assert len(faces) <= 4 * (span_s + 1.0) + 1, (len(faces), span_s)


def voice_pairs(run) -> list[tuple[str, int]]:  # noqa: ANN001
    """(scripted speaker, found slot) for each final, by the line it overlaps most."""
    lines = json.loads((default_media().with_suffix(".json")).read_text())["lines"]
    pairs = []
    for final in finals_of(run):
        t0, t1 = final["t_start_ms"] / 1000, final["t_end_ms"] / 1000
        line = max(lines, key=lambda ln: min(t1, ln["end_s"]) - max(t0, ln["start_s"]))
        pairs.append((line["speaker"], final["speaker"]))
    return pairs


@pytest.mark.xfail(strict=False, reason="issue 18, machine-dependent: passes on the machines of earlier runs, fails on "
                   "an AVX-512 Xeon (2026-12-07, also at b4c6a8e): Ben's 0.55 s 'You got it' scores 0.656 against "
                   "Ava's profile (threshold 0.639), joins and teaches it, and every later final lands in slot 0")
def test_the_two_voices_are_told_apart(run) -> None:  # noqa: ANN001
    pairs = voice_pairs(run)
    assert 2 <= len({f for _, f in pairs}) <= 3, pairs
    mains = {spk: max(set(own), key=own.count)  # each voice's most frequent slot
             for spk in {s for s, _ in pairs} for own in [[f for s, f in pairs if s == spk]]}
    assert len(set(mains.values())) == 2, pairs  # the two voices have slots of their own


@pytest.mark.xfail(strict=True, reason="issue 18, not met: the end-of-turn model splits Ben's 'Wait, what? Really? "
                   "You got it?' into three 0.4-0.8 s utterances, and a short embedding does not found a speaker: "
                   "they join Ava, heard before (purity 0.77)")
def test_every_final_goes_to_its_voice(run) -> None:  # noqa: ANN001
    pairs = voice_pairs(run)
    n = len(pairs)
    purity = sum(max(sum(1 for s, f in pairs if f == slot and s == spk) for spk in {s for s, _ in pairs})
                 for slot in {f for _, f in pairs}) / n
    inverse = sum(max(sum(1 for s, f in pairs if s == spk and f == slot) for slot in {f for _, f in pairs})
                  for spk in {s for s, _ in pairs}) / n
    assert purity >= 0.9 and inverse >= 0.9, pairs
