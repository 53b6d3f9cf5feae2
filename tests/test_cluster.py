"""`serve --cluster ray` on a real local two-node Ray cluster (`ray.cluster_utils.Cluster`: two raylets
of one CPU each on this machine): sessions on different nodes, each with its own dialogue; a model
replica and an ingress replica killed mid-session. Marked `cluster` (run with `-m cluster`; about
4 minutes here): it starts Ray and plays real-time audio.

The audio: tests/data/dialogue.wav (six espeak-ng turns, two voices) and the first three turns of
tests/data/speakers3.wav (three voices), sent as browser capture frames at real-time pace.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.cluster
ray = pytest.importorskip("ray", reason="the cluster extra is not installed: pip install 'emostream[cluster]'")

DATA = Path(__file__).resolve().parent / "data"
FRAME = 1024  # samples per audio frame (64 ms)


@dataclass
class Script:
    audio: np.ndarray  # (n,) int16 16 kHz
    turns: list[tuple[float, float, str]]  # (start_s, end_s, text)


def script(name: str, key: str, max_s: float | None = None) -> Script:
    import soundfile as sf

    audio, rate = sf.read(DATA / f"{name}.wav", dtype="int16")
    assert rate == 16000
    turns = [(u["start_s"], u["end_s"], u["text"]) for u in json.loads((DATA / f"{name}.json").read_text())[key]]
    if max_s is not None:
        audio = audio[: int(max_s * rate)]
        turns = [t for t in turns if t[1] <= max_s]
    return Script(audio, turns)


@dataclass
class Capture:
    hello: dict[str, Any] | None = None
    finals: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    first_final: asyncio.Event = field(default_factory=asyncio.Event)


async def open_session(url: str, avoid_node: str | None = None, tries: int = 20) -> tuple[Any, dict[str, Any]]:
    """A capturing connection and its hello; with `avoid_node`, one on another node (Ray's proxy
    routes each new websocket to the less busy of two replicas: retried until it is another)."""
    from websockets.asyncio.client import connect

    for _ in range(tries):
        ws = await connect(url, max_size=2**22, ping_interval=None, open_timeout=30)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert hello["type"] == "hello", hello
        if avoid_node is None or not hello["session"].startswith(avoid_node):
            return ws, hello
        await ws.close()
        await asyncio.sleep(0.5)
    raise AssertionError(f"every session landed on node {avoid_node}")


def node_of(hello: dict[str, Any]) -> str:
    return hello["session"].split("-")[0]


async def capture(url: str, s: Script, out: Capture, tail_s: float = 25.0, avoid_node: str | None = None,
                  opened: asyncio.Event | None = None) -> Capture:
    """One browser-protocol capturing session: the audio at real-time pace, then 2 s of silence,
    then wait until every turn has a final (or the server closes, or tail_s passes)."""
    from websockets.exceptions import ConnectionClosed

    from emostream.realtime.media_frames import encode_audio

    stream = np.concatenate([s.audio, np.zeros(32000, np.int16)])
    ws, out.hello = await open_session(url, avoid_node)
    if opened is not None:
        opened.set()
    async with ws:
        async def receive() -> None:
            try:
                async for raw in ws:
                    msg = json.loads(raw)
                    if msg["type"] == "prediction" and msg.get("final"):
                        out.finals.append(msg)
                        out.first_final.set()
                    elif msg["type"] == "error":
                        out.errors.append(msg)
            except ConnectionClosed:
                pass
            out.close_code = ws.close_code

        receiver = asyncio.create_task(receive())
        t0 = time.monotonic()
        try:
            for seq, at in enumerate(range(0, stream.size, FRAME)):
                await asyncio.sleep(max(0.0, t0 + at / 16000 - time.monotonic()))
                await ws.send(encode_audio(seq, at / 16.0, stream[at:at + FRAME]))
        except ConnectionClosed:
            pass
        deadline = time.monotonic() + tail_s
        while not receiver.done() and not covered(s, out.finals) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await asyncio.sleep(0.5)
    await receiver
    return out


async def two_sessions(url: str, a: Script, b: Script, ca: Capture, cb: Capture) -> tuple[asyncio.Task, asyncio.Task]:
    """Session a, then session b on another node (b starts once a has its hello)."""
    opened = asyncio.Event()
    ta = asyncio.create_task(capture(url, a, ca, opened=opened))
    await asyncio.wait_for(opened.wait(), 60)
    tb = asyncio.create_task(capture(url, b, cb, avoid_node=node_of(ca.hello)))
    return ta, tb


def covered(s: Script, finals: list[dict[str, Any]]) -> bool:
    """Every turn's middle lies inside some final's span: no speech went without a final."""
    spans = [(f["t_start_ms"] / 1000, f["t_end_ms"] / 1000) for f in finals]
    return all(any(a <= (t0 + t1) / 2 <= b for a, b in spans) for t0, t1, _ in s.turns)


def in_order(finals: list[dict[str, Any]]) -> bool:
    """Utterance ids 0, 1, 2, ...: each final once, in order."""
    return [f["utterance_id"] for f in finals] == list(range(len(finals)))


def words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 5}


@pytest.fixture(scope="module")
def cluster() -> Any:
    from ray.cluster_utils import Cluster

    from emostream.realtime.cluster.config import ClusterConfig, IngressConfig
    from emostream.realtime.cluster.launch import SPREAD_ENV, deploy, shutdown
    from emostream.realtime.config import PipelineConfig

    monkey = pytest.MonkeyPatch()
    monkey.setenv(SPREAD_ENV, "0")  # before the raylets start: the proxy's process reads it
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes.add_node(num_cpus=1)
    nodes.wait_for_nodes()
    ray.init(address=nodes.address, logging_level="WARNING")
    settings = ClusterConfig(ingress=IngressConfig(replicas=2, sessions_per_replica=2, one_per_node=True,
                                                   graceful_shutdown_s=2.0))
    try:
        url = deploy(PipelineConfig(), {"host": "127.0.0.1", "port": 0}, settings, ray_address=nodes.address)
        yield url
    finally:
        shutdown()
        nodes.shutdown()
        monkey.undo()


def ws_url(url: str) -> str:
    return url.replace("http://", "ws://") + "ws?source=browser"


@dataclass(frozen=True)
class Replica:
    name: str
    node_id: str


def alive_actor(class_suffix: str) -> list[Replica]:
    """The live Serve replicas whose class name ends so (Ray's actor table: no dashboard needed)."""
    from ray._private.state import actors

    return [Replica(a["Name"], a["Address"]["NodeID"]) for a in actors(actor_state_name="ALIVE").values()
            if a["ActorClassName"].endswith(class_suffix)]


def kill(replica: Replica) -> None:
    ray.kill(ray.get_actor(replica.name, namespace="serve"), no_restart=False)


def test_page_health_and_deployments(cluster: str) -> None:
    with urllib.request.urlopen(cluster, timeout=10) as r:
        page = r.read().decode()
        assert "Content-Security-Policy" in r.headers and "<html" in page.lower()
    with urllib.request.urlopen(cluster + "healthz", timeout=30) as r:
        health = json.loads(r.read())
    deployments = health["cluster"]["deployments"]
    assert set(deployments) == {"Ingress", "asr", "turn", "speaker", "text", "face", "step"}
    assert all(d["status"] == "HEALTHY" for d in deployments.values()), deployments
    assert deployments["Ingress"]["replicas"] == {"RUNNING": 2} and health["ok"] is True


def test_two_sessions_on_two_nodes_each_with_its_own_dialogue(cluster: str) -> None:
    a, b = script("dialogue", "utterances"), script("speakers3", "lines", max_s=12.2)

    async def both() -> tuple[Capture, Capture]:
        ca, cb = Capture(), Capture()
        await asyncio.gather(*await two_sessions(ws_url(cluster), a, b, ca, cb))
        return ca, cb

    ca, cb = asyncio.run(both())
    node_ids = {n["NodeID"][:8] for n in ray.nodes() if n["Alive"]}
    prefixes = {node_of(c.hello) for c in (ca, cb)}
    assert prefixes <= node_ids and len(prefixes) == 2, (prefixes, node_ids)  # one session a node
    for c, s in ((ca, a), (cb, b)):
        assert covered(s, c.finals), [(f["t_start_ms"], f["t_end_ms"]) for f in c.finals]
        assert in_order(c.finals) and not c.errors
    # no state crosses: each session's words are its own script's, never the other's
    only_a = words(" ".join(t for *_, t in a.turns)) - words(" ".join(t for *_, t in b.turns))
    only_b = words(" ".join(t for *_, t in b.turns)) - words(" ".join(t for *_, t in a.turns))
    heard_a = words(" ".join(f["text"] for f in ca.finals))
    heard_b = words(" ".join(f["text"] for f in cb.finals))
    assert len(heard_a & only_a) >= len(only_a) / 2 and len(heard_b & only_b) >= len(only_b) / 2
    assert not heard_a & only_b and not heard_b & only_a
    # each dialogue's speakers are its own: both start at slot 0
    assert ca.finals[0]["speaker"] == 0 and cb.finals[0]["speaker"] == 0


def test_a_model_replica_killed_mid_session_costs_at_most_its_utterances(cluster: str) -> None:
    a = script("dialogue", "utterances")

    async def run() -> Capture:
        out = Capture()
        session = asyncio.create_task(capture(ws_url(cluster), a, out, tail_s=40.0))
        await asyncio.wait_for(out.first_final.wait(), 30)
        (asr,) = alive_actor(":asr")
        kill(asr)
        return await session

    out = asyncio.run(run())
    assert covered(a, out.finals) and in_order(out.finals)  # nothing lost
    after = out.finals[1:]
    failed = [f for f in after if "asr_failed" in f["flags"]]
    assert all(not f["text"] for f in failed)
    assert len(failed) <= 2, [f["flags"] for f in after]  # only what was in flight or waited past the timeout
    assert after[-1]["text"] and "asr_failed" not in after[-1]["flags"]  # Ray restarted the replica
    assert len(alive_actor(":asr")) == 1


def test_an_ingress_replica_killed_closes_its_sessions_only(cluster: str) -> None:
    a, b = script("dialogue", "utterances"), script("dialogue", "utterances")

    async def run() -> tuple[Capture, Capture, dict[str, Any] | None]:
        ca, cb = Capture(), Capture()
        ta, tb = await two_sessions(ws_url(cluster), a, b, ca, cb)
        await asyncio.wait_for(asyncio.gather(ca.first_final.wait(), cb.first_final.wait()), 40)
        node = node_of(ca.hello)
        replicas = alive_actor(":Ingress")
        victim = [r for r in replicas if r.node_id.startswith(node)]
        assert len(victim) == 1, (node, [r.node_id for r in replicas])
        kill(victim[0])
        await asyncio.gather(ta, tb)
        again = Capture()  # what the page does: reconnect, to a new session
        deadline = time.monotonic() + 60
        while again.hello is None and time.monotonic() < deadline:
            try:
                await asyncio.wait_for(capture(ws_url(cluster), script("dialogue", "utterances", max_s=4.5), again,
                                               tail_s=15.0), 40)
            except Exception:  # noqa: BLE001 - the proxy may still route to the dead replica: try again
                await asyncio.sleep(1.0)
        return ca, cb, again.hello

    ca, cb, hello = asyncio.run(run())
    assert ca.close_code is not None and ca.close_code != 1000 and not covered(a, ca.finals)  # cut, with a code
    assert covered(b, cb.finals) and in_order(cb.finals) and not cb.errors  # the other session went on
    assert hello is not None and hello["session"] not in (ca.hello["session"], cb.hello["session"])


def test_a_foreign_origin_is_refused(cluster: str) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect(ws_url(cluster), origin="http://evil.example", open_timeout=30)
    assert refused.value.response.status_code == 403


def test_zz_stopping_the_application_closes_sessions_so_the_page_reconnects(cluster: str) -> None:
    """Last in this module: it deletes the application. A live session is closed with 1001 (going
    away), which the page reconnects on, before Ray's drain would cut it."""
    from ray import serve

    from emostream.realtime.cluster.launch import APP_NAME

    async def run() -> Capture:
        out = Capture()
        session = asyncio.create_task(capture(ws_url(cluster), script("dialogue", "utterances"), out, tail_s=5.0))
        await asyncio.wait_for(out.first_final.wait(), 40)
        await asyncio.to_thread(serve.delete, APP_NAME)
        await asyncio.wait_for(session, 60)
        return out

    out = asyncio.run(run())
    assert out.close_code == 1001, out.close_code
