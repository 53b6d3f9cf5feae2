"""Hostile clients against the real server (`transport.ws.Server` on real sockets, the real shared
models behind `/ws?source=browser`).

- Fuzzing (hypothesis) of every client message type and of the binary media frames: valid-ish
  mutations (right keys, wrong types, huge ints, NaN/inf, deep nesting, long strings, lone
  surrogates) and raw garbage, invalid UTF-8 in text frames, oversized frames. Each input is
  followed by a sentinel `ping` on the same connection, so every example checks both the answer
  (an `error` with the documented code, a `pong`, nothing, or the documented close code) and that
  the connection still works afterwards.
- A burst: 200 connects and disconnects of every kind (clean, aborted, mid-handshake, garbage),
  clients that never read, a ping flooder, a capturing client faster than real time, refused
  (`busy`) captures, while a well-behaved watcher must receive every final in order; afterwards the
  server's bookkeeping is back to its baseline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import random
import struct
import threading
import time
import urllib.request
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from emostream.realtime import media_frames as mf
from emostream.realtime import protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.protocol import Config, Reset
from emostream.realtime.scheduler import Scheduler
from emostream.realtime.sessions import SessionManager
from emostream.realtime.transport.broadcast import ClientQueue
from emostream.realtime.transport.ws import Server
from tests.helpers import HANDSHAKE, LABELS, eventually, final, interim, raw_ws, validate

T = TypeVar("T")
LIMIT = 1024  # max_message_bytes of the fuzzed servers: too_big above it, close 1009 above 4x
# The fuzzing runs under the hypothesis profile of tests/conftest.py ("ci": derandomized, a failure
# prints a @reproduce_failure blob); only the number of examples is set here.
_ids = itertools.count()


# ---------------------------------------------------------------------------------------------
# A real server on its own event loop (a thread), driven example by example from hypothesis


class LiveServer:
    """`Server` (and, with `shared`, a SessionManager and its Scheduler) on an event loop in a thread."""

    def __init__(self, shared: Any = None, **server_kw: Any) -> None:
        self.hooked: list[tuple[Any, str]] = []  # what reached on_client_message
        self.scheduler = Scheduler()
        self.manager = SessionManager(shared, PipelineConfig(), self.scheduler) if shared is not None else None
        hello = protocol.hello(labels=LABELS, model="test-model", modalities=["text"])
        self.server = Server("127.0.0.1", 0, hello=hello, capture=self.manager, max_message_bytes=LIMIT,
                             on_client_message=lambda m, cid: self.hooked.append((m, cid)), **server_kw)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="hostile-server-loop", daemon=True)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        if self.manager is not None:
            self.scheduler.start()
            self.server.health_checks["scheduler"] = self.scheduler.health
        self.call(self.server.start())
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.server.stop())
        finally:
            if self.manager is not None:
                self.manager.close_all()
            self.scheduler.close()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@dataclass
class Outcome:
    replies: list[dict] = field(default_factory=list)  # server messages before the sentinel's pong
    closed: int | None = None  # the close code, if the server closed the connection instead


async def exchange(ws: ClientConnection, data: str | bytes, *, text: bool | None = None,
                   timeout: float = 20.0) -> Outcome:
    """Send `data`, then a sentinel ping; collect what the server says up to the sentinel's pong."""
    sentinel = f"sentinel-{next(_ids)}"
    out = Outcome()
    try:
        await ws.send(data, text=text)
        await ws.send(json.dumps(protocol.ping(sentinel)))
        while True:
            msg = validate(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
            if msg["type"] == "pong" and msg["id"] == sentinel:
                return out
            out.replies.append(msg)
    except ConnectionClosed as exc:
        out.closed = exc.rcvd.code if exc.rcvd is not None else -1
        return out


async def open_client(url: str) -> tuple[ClientConnection, dict]:
    ws = await connect(url, max_size=None, ping_interval=None, compression=None)
    return ws, validate(json.loads(await asyncio.wait_for(ws.recv(), 20)))


def codes(outcome: Outcome) -> list[str]:
    return [m["code"] for m in outcome.replies if m["type"] == "error"]


# ---------------------------------------------------------------------------------------------
# What the protocol says (docs/protocol.md), written independently of the parser


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def expected_for_object(obj: Any) -> tuple[str, Any]:
    """("error", code) | ("pong", id) | ("ok", parsed message) for one JSON value from a client."""
    if not isinstance(obj, dict):
        return "error", "bad_json"
    kind = obj.get("type")
    if not isinstance(kind, str):
        return "error", "bad_message"
    v = obj.get("v", None)
    if "v" not in obj or isinstance(v, bool) or not isinstance(v, (int, float)) or v != 1:
        return "error", "bad_version"
    allowed = {"reset": set(), "config": {"interim"}, "ping": {"id"}}
    if kind not in allowed:
        return "error", "unknown_type"
    if set(obj) - {"type", "v"} - allowed[kind]:
        return "error", "bad_message"
    if kind == "reset":
        return "ok", Reset()
    if kind == "config":
        interim = obj.get("interim")
        return ("ok", Config(interim=interim)) if isinstance(interim, bool) else ("error", "bad_message")
    ping_id = obj.get("id")
    if ping_id is None:
        return "pong", None
    if isinstance(ping_id, bool) or not isinstance(ping_id, (str, int)):
        return "error", "bad_message"
    if isinstance(ping_id, str) and (len(ping_id) > 128 or not _utf8_ok(ping_id)):
        return "error", "bad_message"
    return "pong", ping_id


def expected_for_text(text: str) -> tuple[str, Any]:
    size = len(text.encode("utf-8"))
    if size > 4 * LIMIT:
        return "close", 1009
    if size > LIMIT:
        return "error", "too_big"
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError):
        return "error", "bad_json"
    return expected_for_object(obj)


def check_text_outcome(live: LiveServer, text: str, outcome: Outcome) -> None:
    kind, detail = expected_for_text(text)
    shown = text[:120]
    if kind == "close":
        assert outcome.closed == detail, (shown, outcome)
        return
    assert outcome.closed is None, (shown, outcome)
    if kind == "error":
        assert [(m["type"], m.get("code")) for m in outcome.replies] == [("error", detail)], (shown, outcome)
        assert len(outcome.replies[0]["message"]) < 1000  # the client's junk is not echoed back in full
    elif kind == "pong":
        assert [(m["type"], m["id"]) for m in outcome.replies] == [("pong", detail)], (shown, outcome)
    else:
        assert outcome.replies == [], (shown, outcome)
        assert live.hooked and live.hooked[-1][0] == detail, (shown, live.hooked[-1:])


# ---------------------------------------------------------------------------------------------
# Strategies: client messages

SURROGATES = st.sampled_from(["\ud800", "x\udfff", "\udc00\ud800", "a\ud83d", "\ude00b"])
HUGE_INTS = st.builds(lambda digits, sign: sign * (10 ** digits - 1), st.integers(18, 4200), st.sampled_from([1, -1]))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), HUGE_INTS, st.floats(),  # floats: NaN and +-inf included
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 1.0, 2**53 + 1]),
    st.text(max_size=40), st.text(max_size=300), SURROGATES,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10) | SURROGATES, kids, max_size=4),
    max_leaves=12,
)
TYPES = st.one_of(st.sampled_from([*protocol.CLIENT_TYPES, *protocol.SERVER_TYPES, "subscribe", "Ping", "", "reset "]),
                  st.text(max_size=20), SURROGATES)
VERSIONS = st.one_of(st.sampled_from([1, 1, 1, 1.0, True, 0, 2, -1, "1", None, [1], {"v": 1}, 1e400, 1 + 1e-15]),
                     JSON_VALUES)


@st.composite
def client_objects(draw: st.DrawFn) -> dict[str, Any]:
    """Valid-ish client messages: the right keys, often, with wrong values, extra or missing keys."""
    kind = draw(st.sampled_from(protocol.CLIENT_TYPES) | TYPES)
    obj: dict[str, Any] = {"type": kind}
    if draw(st.integers(0, 9)):
        obj["v"] = draw(VERSIONS)
    if kind == "ping" and draw(st.booleans()):
        obj["id"] = draw(st.one_of(st.integers(), HUGE_INTS, st.text(min_size=100, max_size=140), SURROGATES,
                                   JSON_VALUES))
    if kind == "config" and draw(st.integers(0, 4)):
        obj["interim"] = draw(st.booleans() | JSON_VALUES)
    if draw(st.integers(0, 4)) == 0:
        obj.update(draw(st.dictionaries(st.text(max_size=30) | SURROGATES, JSON_VALUES, max_size=3)))
    if draw(st.integers(0, 15)) == 0:
        obj["type"] = draw(JSON_VALUES)
    if draw(st.integers(0, 15)) == 0:
        del obj["type"]
    return obj


def _dumps(obj: Any, ensure_ascii: bool) -> str:
    text = json.dumps(obj, ensure_ascii=ensure_ascii)  # NaN/Infinity as Python writes them
    return text if _utf8_ok(text) else json.dumps(obj)  # lone surrogates: escaped, the only way to send them


def _deep(depth: int, opener: str) -> str:
    closer = "]" if opener == "[" else "}"
    inner = ('{"a":' * depth + "1" + closer * depth) if opener == "{" else "[" * depth + "1" + closer * depth
    return '{"type":"ping","v":1,"id":' + inner + "}"


CLIENT_TEXTS = st.one_of(
    st.builds(_dumps, client_objects(), st.booleans()),
    st.builds(_dumps, client_objects(), st.booleans()),
    st.builds(_dumps, client_objects(), st.booleans()),
    # deep nesting (away from the recursion limit's exact value, which depends on the stack)
    st.builds(_deep, st.integers(1, 200) | st.integers(2500, 4000), st.sampled_from(["[", "{"])),
    # huge numbers as text: beyond what json.dumps can write (int digits limit), exponents
    st.builds(lambda d: '{"type":"ping","v":1,"id":' + "7" * d + "}", st.integers(4000, 4400)),
    st.sampled_from(['{"type":"ping","v":1e999}', '{"type":"ping","v":-Infinity}', '{"type":"ping","v":NaN}',
                     '{"type":"config","v":1,"interim":true,"interim":1}', '{"v":1,"type":"reset","type":"ping"}',
                     '{"type":"ping","v":1,"id":"\\ud800"}', '{"\\udfff":0,"type":"reset","v":1}', "", " ", "null",
                     "[]", '"ping"', "{", '{"type":"ping","v":1}\x00', "\ufeff{}"]),
    # raw garbage and sizes around the limits (bytes, not characters: é is 2 bytes, 😀 4)
    st.text(max_size=200),
    st.builds(lambda n, c: c * n, st.integers(0, 5 * LIMIT // 2), st.sampled_from(["x", "é", "😀", "{"])),
    st.builds(lambda n: '{"type":"ping","v":1,"pad":"' + "x" * n + '"}', st.integers(LIMIT - 60, 4 * LIMIT + 10)),
)


# ---------------------------------------------------------------------------------------------
# Tests: text messages


def test_fuzzed_client_messages_get_the_documented_answer() -> None:
    with LiveServer() as live:
        state: dict[str, Any] = {}

        def connection() -> ClientConnection:
            if "ws" not in state:
                state["ws"], hello = live.call(open_client(live.server.ws_url))
                assert hello["type"] == "hello"
            return state["ws"]

        @settings(max_examples=150)
        @given(text=CLIENT_TEXTS)
        def check(text: str) -> None:
            outcome = live.call(exchange(connection(), text))
            if outcome.closed is not None:
                state.pop("ws")
            check_text_outcome(live, text, outcome)

        check()
        assert_still_serving(live)


def test_invalid_utf8_text_frames_close_with_1007_others_are_parsed() -> None:
    with LiveServer() as live:
        state: dict[str, Any] = {"closes": 0}

        @settings(max_examples=40)
        @given(data=st.binary(max_size=64) | st.builds(lambda b: b'{"type":"ping","v":1,"id":"' + b + b'"}',
                                                      st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf",
                                                                       b"\xf8\x88\x80\x80\x80", b"\xe2\x82"])))
        def check(data: bytes) -> None:
            if "ws" not in state:
                state["ws"], _ = live.call(open_client(live.server.ws_url))
            outcome = live.call(exchange(state["ws"], data, text=True))  # a text frame, whatever the bytes
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                state.pop("ws")
                state["closes"] += 1
                assert outcome.closed == 1007, (data, outcome)  # RFC 6455: invalid frame payload data
                return
            check_text_outcome(live, text, outcome)

        check()
        assert state["closes"] > 0
        assert_still_serving(live)


def assert_still_serving(live: LiveServer) -> None:
    """/healthz is 200 and ok, a new client gets its hello and a pong."""

    async def probe() -> None:
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(live.server.url + "healthz", timeout=10).read())
        assert json.loads(body)["ok"] is True
        ws, hello = await open_client(live.server.ws_url)
        assert hello["type"] == "hello"
        assert (await exchange(ws, json.dumps(protocol.ping(7)))).replies == [
            {"type": "pong", "v": 1, "id": 7, "t_ms": pytest.approx(time.monotonic() * 1000, abs=60_000)}]
        await ws.close()

    live.call(probe())


def test_binary_frames_on_a_watcher_get_binary_or_1009() -> None:
    with LiveServer() as live:
        ws, _ = live.call(open_client(live.server.ws_url))
        for data in (b"", b"\x00", mf.encode_audio(0, 0.0, np.zeros(8, np.int16)), os.urandom(4 * LIMIT)):
            assert codes(live.call(exchange(ws, data))) == ["binary"]
        assert live.call(exchange(ws, os.urandom(4 * LIMIT + 1))).closed == 1009
        ws, first = live.call(open_client(live.server.ws_url + "?source=browser"))  # this server takes no capture
        assert (first["type"], first.get("code")) == ("error", "bad_message"), first
        assert live.call(exchange(ws, mf.encode_audio(0, 0.0, np.zeros(8, np.int16)))).closed == 1008
        assert_still_serving(live)


# ---------------------------------------------------------------------------------------------
# Strategies: binary media frames


def _jpeg(width: int, height: int) -> bytes:
    image = np.zeros((height, width, 3), np.uint8)
    cv2.rectangle(image, (2, 2), (width // 2, height // 2), (40, 200, 90), -1)
    return cv2.imencode(".jpg", image)[1].tobytes()


JPEGS = {size: _jpeg(*size) for size in ((16, 16), (32, 24), (64, 48))}
U32 = st.integers(0, 2**32 - 1)
T_MS = st.one_of(st.floats(-1e6, 1e9), st.floats(), st.sampled_from([2.0**53, -(2.0**53), 2.0**53 * 2, 1.7e308,
                                                                        -1.7e308, 5e-324, float("nan")]))


@dataclass
class FrameSpec:
    """One binary message to send; `seq` None: the next one of its kind (filled in when sent)."""

    magic: bytes
    version: int
    kind: int
    seq: int | None
    t_ms: float
    tail: bytes  # header bytes 16..20: the rate, or width and height
    payload: bytes
    raw: bytes | None = None  # garbage sent as it is

    def encode(self, seq: int) -> bytes:
        if self.raw is not None:
            return self.raw
        return struct.pack("<2sBBId", self.magic, self.version, self.kind, seq, self.t_ms) + self.tail + self.payload

    def __repr__(self) -> str:  # short: the payloads can be large
        if self.raw is not None:
            return f"FrameSpec(raw={self.raw[:40]!r}..{len(self.raw)} bytes)"
        return (f"FrameSpec({self.magic!r}, v{self.version}, kind {self.kind}, seq {self.seq}, t_ms {self.t_ms!r}, "
                f"tail {self.tail.hex()}, payload {self.payload[:8].hex()}..{len(self.payload)} bytes)")


@st.composite
def media_frames(draw: st.DrawFn) -> FrameSpec:
    choice = draw(st.sampled_from(["audio", "audio", "video", "video", "garbage"]))
    if choice == "garbage":
        raw = draw(st.binary(max_size=80) | st.builds(lambda b: b"EM\x01" + b, st.binary(max_size=40)))
        return FrameSpec(b"", 0, 0, 0, 0.0, b"", b"", raw=raw)
    often = st.integers(0, 7)
    magic = b"EM" if draw(often) else draw(st.binary(min_size=2, max_size=2))
    version = mf.FORMAT_VERSION if draw(often) else draw(st.integers(0, 255))
    kind = (mf.KIND_AUDIO if choice == "audio" else mf.KIND_VIDEO) if draw(often) else draw(st.integers(0, 255))
    seq = None if draw(st.integers(0, 3)) else draw(U32)
    t_ms = draw(st.floats(0, 1e7) if draw(st.integers(0, 2)) else T_MS)
    if choice == "audio":
        rate = mf.AUDIO_RATE if draw(often) else draw(U32)
        n_bytes = draw(st.sampled_from([2048, 2 * mf.MAX_AUDIO_SAMPLES, 2]) | st.integers(0, 2 * mf.MAX_AUDIO_SAMPLES + 4))
        amp = draw(st.integers(0, 40))  # quiet: the segmenter hears no speech, so no ASR work
        noise = np.random.default_rng(draw(st.integers(0, 2**16))).integers(-amp, amp + 1, n_bytes // 2 + 1)
        payload = noise.astype("<i2").tobytes()[:n_bytes]
        return FrameSpec(magic, version, kind, seq, t_ms, struct.pack("<I", rate), payload)
    size = draw(st.sampled_from(sorted(JPEGS)))
    width, height = size if draw(st.integers(0, 3)) else (draw(st.integers(0, 2000)), draw(st.integers(0, 1000)))
    payload = draw(st.one_of(
        st.just(JPEGS[size]), st.just(JPEGS[size]),
        st.builds(lambda b: mf.JPEG_SOI + b, st.binary(max_size=200)),  # looks like a JPEG, does not decode
        st.builds(lambda cut: JPEGS[size][:cut], st.integers(0, len(JPEGS[size]))),  # truncated
        st.builds(lambda n: mf.JPEG_SOI + bytes(n), st.integers(mf.MAX_VIDEO_BYTES - 4, mf.MAX_VIDEO_BYTES + 8)),
        st.binary(max_size=64),
    ))
    return FrameSpec(magic, version, kind, seq, t_ms, struct.pack("<HH", width, height), payload)


def frame_is_bad(data: bytes) -> bool:
    """Whether docs/protocol.md (Binary media frames, Errors) makes this message a `bad_frame`."""
    if len(data) < 20:
        return True
    magic, version, kind, _seq, t_ms = struct.unpack_from("<2sBBId", data)
    if magic != b"EM" or version != 1 or kind not in (1, 2) or not math.isfinite(t_ms) or abs(t_ms) > 2.0**53:
        return True
    payload = data[20:]
    if kind == 1:
        (rate,) = struct.unpack_from("<I", data, 16)
        return rate != 16000 or not 0 < len(payload) <= 16000 or len(payload) % 2 == 1
    width, height = struct.unpack_from("<HH", data, 16)
    return (not (16 <= width <= 1280 and 16 <= height <= 720) or len(payload) > 262144
            or not payload.startswith(b"\xff\xd8\xff"))


def test_fuzzed_media_frames_on_a_capturing_connection(shared: Any) -> None:
    with LiveServer(shared) as live:
        assert live.manager is not None
        state: dict[str, Any] = {"bad": 0, "next": {1: 0, 2: 0}}
        state["ws"], hello = live.call(open_client(live.server.ws_url + "?source=browser"))
        assert hello["capture"]["max_video_bytes"] == mf.MAX_VIDEO_BYTES
        (session,) = live.manager.sessions()
        # a first good audio frame: video is placed on the audio clock, so it is decoded from then on
        assert live.call(exchange(state["ws"], mf.encode_audio(0, 0.0, np.zeros(1024, np.int16)))).replies == []

        @settings(max_examples=150)
        @given(spec=media_frames())
        def check(spec: FrameSpec) -> None:
            nexts = state["next"]
            seq = spec.seq if spec.seq is not None else nexts.get(spec.kind, 0) + 1
            data = spec.encode(seq)
            if spec.raw is None and spec.kind in nexts:
                nexts[spec.kind] = max(nexts[spec.kind], min(seq, 2**32 - 2))
            outcome = live.call(exchange(state["ws"], data))
            assert outcome.closed is None, (spec, outcome)
            got = codes(outcome)
            others = {m["type"] for m in outcome.replies if m["type"] != "error"}
            assert others <= {"face", "metrics", "utterance", "transcript", "prediction"}, outcome  # its session's
            if frame_is_bad(data):
                state["bad"] += 1
                assert got == ["bad_frame"], (spec, outcome)
            elif data[3] == mf.KIND_AUDIO:
                assert got in ([], ["too_fast"]), (spec, outcome)  # too_fast: said once, then dropped quietly
            else:
                decodable = spec.payload in JPEGS.values() and (
                    struct.unpack_from("<HH", data, 16) == next(k for k, v in JPEGS.items() if v == spec.payload))
                assert got in (([],) if decodable else ([], ["bad_frame"])), (spec, outcome)

        check()
        assert live.manager.sessions() == [session] and not session.closed  # the session went on
        assert session.counters.bad_frames == state["bad"] > 0

        # text is judged as on any connection, though the websocket limit is one media frame here
        ws = state["ws"]
        assert codes(live.call(exchange(ws, "x" * (LIMIT + 1)))) == ["too_big"]
        assert codes(live.call(exchange(ws, "x" * (4 * LIMIT + 1)))) == ["too_big"]
        assert live.call(exchange(ws, os.urandom(mf.MAX_FRAME_BYTES + 2048))).closed == 1009
        assert_still_serving(live)  # /healthz includes the scheduler: it survived the fuzzing


# ---------------------------------------------------------------------------------------------
# Bursts: many connects and disconnects, stalled readers, a flooder, a too-fast capturer


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """One websocket frame as a client writes it (masked)."""
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def churn_one(i: int, server: Server, rng: random.Random) -> str:
    """One short-lived client of kind i % 8; returns the kind (for the tally)."""
    port = server.port
    mode = i % 8
    if mode in (0, 1, 2):  # a proper client: closes cleanly, aborts (no close handshake), or sends junk and aborts
        ws = await connect(server.ws_url, ping_interval=None, compression=None)
        hello = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert hello["type"] == "hello"
        if mode == 0:
            await ws.close()
            return "clean"
        if mode == 2:
            await ws.send(rng.choice(["{", '{"type":"ping","v":1,"id":"\\ud800"}', "é" * 3000]))
        ws.transport.abort()
        return "abort"
    if mode == 3:  # mid-handshake: part of the request, then gone
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HANDSHAKE[: rng.randrange(1, len(HANDSHAKE) - 1)])
        await writer.drain()
        await asyncio.sleep(0)
        writer.transport.abort()
        return "mid-handshake"
    if mode == 4:  # not HTTP at all
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(rng.randbytes(rng.randrange(1, 300)) + b"\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), 20)  # the server answers (400) or hangs up
        writer.close()
        return "garbage-http"
    if mode in (5, 6):  # a websocket that breaks the framing: unmasked, reserved bits, bad opcode, truncated
        reader, writer = await raw_ws(port)
        junk = rng.choice([client_frame(1, b"{}", masked=False), client_frame(1, b"{}", rsv=3), client_frame(5, b""),
                           client_frame(9, b"x" * 200), client_frame(1, b'{"type":"ping"', fin=False)[:-3],
                           rng.randbytes(40)])
        writer.write(junk)
        await writer.drain()
        if mode == 5:
            try:
                await asyncio.wait_for(reader.read(), 20)  # the server closes (1002) or we give up
            except TimeoutError:
                pass
        writer.transport.abort()
        return "bad-framing"
    # a capture that is refused (busy) or gets a session, then vanishes
    ws = await connect(server.ws_url + "?source=browser", ping_interval=None, compression=None)
    try:
        msg = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert msg["type"] in ("hello", "error"), msg
        if msg["type"] == "error":
            assert msg["code"] == "busy"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 20)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            return "busy"
    finally:
        ws.transport.abort()
    return "capture"


@dataclass
class Watcher:
    ws: ClientConnection
    finals: list[int] = field(default_factory=list)


async def watch(w: Watcher, n_finals: int) -> None:
    while len(w.finals) < n_finals:
        msg = validate(json.loads(await asyncio.wait_for(w.ws.recv(), 30)))
        if msg["type"] == "prediction" and msg["final"]:
            w.finals.append(msg["utterance_id"])


async def drain_into(ws: ClientConnection, into: list[dict]) -> None:
    """Read everything (so that websockets keeps answering the server's pings) until closed."""
    try:
        async for text in ws:
            into.append(validate(json.loads(text)))
    except ConnectionClosed:
        pass


def test_burst_of_hostile_clients_while_a_watcher_gets_every_final(shared: Any) -> None:
    n_big, n_small, n_churn, qsize = 150, 300, 200, 128
    rng = random.Random(11)

    async def main() -> None:
        scheduler = Scheduler()
        manager = SessionManager(shared, PipelineConfig(), scheduler, max_sessions=2)
        scheduler.start()
        server = Server("127.0.0.1", 0, capture=manager, client_queue_size=qsize, ping_interval=2.0,
                        ping_timeout=3.0, close_timeout=1.0, send_timeout=3.0,
                        hello=protocol.hello(labels=LABELS, model="test-model", modalities=["text"]))
        server.health_checks["scheduler"] = scheduler.health
        try:
            async with server:
                await scenario(server, manager)
        finally:
            await asyncio.to_thread(manager.close_all)
            await asyncio.to_thread(scheduler.close)

    async def scenario(server: Server, manager: SessionManager) -> None:
        assert server.broadcaster.clients == 0 and not server._connections
        watcher = Watcher(await connect(server.ws_url, compression=None, max_size=None))
        assert validate(json.loads(await asyncio.wait_for(watcher.ws.recv(), 20)))["type"] == "hello"
        await eventually(lambda: server.broadcaster.clients == 1)
        (watcher_q,) = server.broadcaster.queues()
        watching = asyncio.create_task(watch(watcher, n_big + n_small))

        # clients that never read, and one that floods pings without reading
        stalled = [await raw_ws(server.port) for _ in range(3)]
        flooder = await raw_ws(server.port)
        await eventually(lambda: server.broadcaster.clients == 5)
        stalled_qs: list[ClientQueue] = [q for q in server.broadcaster.queues() if q is not watcher_q]
        flood_text = json.dumps(protocol.ping("f" * 100)).encode()
        flooder[1].write(b"".join(client_frame(1, flood_text) for _ in range(2000)))

        # big finals first: the never-readers' socket buffers fill (the kernel takes up to ~4 MB: tcp_wmem),
        # then their queues, which drop the oldest
        filler = os.urandom(32_000).hex()
        for i in range(n_big):
            server.publish(final(i, text=filler))
            server.publish(interim(i))
            await asyncio.sleep(0.002)
        await eventually(lambda: all(q.dropped > 0 for q in stalled_qs), 30, "never-readers dropping")
        assert all(len(q) <= qsize for q in stalled_qs)

        # capture: a client sending 8 s of audio at once gets too_fast and goes on; a third session is busy
        fast, hello = await open_client(server.ws_url + "?source=browser")
        holder, _ = await open_client(server.ws_url + "?source=browser")
        assert "capture" in hello and len(manager.sessions()) == 2
        quiet = np.zeros(1024, np.int16)
        for seq in range(125):
            await fast.send(mf.encode_audio(seq, seq * 64.0, quiet))
        outcome = await exchange(fast, mf.encode_audio(125, 125 * 64.0, quiet))
        assert "too_fast" in codes(outcome), outcome
        third, first = await open_client(server.ws_url + "?source=browser")
        assert (first["type"], first.get("code")) == ("error", "busy"), first
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(third.recv(), 20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        fast_msgs: list[dict] = []
        draining = asyncio.create_task(drain_into(fast, fast_msgs))
        await holder.close()  # one slot free for the churn's captures

        # the churn, while finals are published from another thread (as the pipeline does)
        def publisher() -> None:
            for i in range(n_big, n_big + n_small):
                assert server.publish_threadsafe(final(i))
                if i % 3 == 0:
                    server.publish_threadsafe(interim(i))
                if i % 10 == 0:
                    server.publish_threadsafe(protocol.metrics(drops={"audio": 0}))
                time.sleep(0.003)

        limit = asyncio.Semaphore(24)

        async def one(i: int) -> str:
            async with limit:
                return await asyncio.wait_for(churn_one(i, server, rng), 30)

        publishing = asyncio.create_task(asyncio.to_thread(publisher))
        kinds = await asyncio.gather(*(one(i) for i in range(n_churn)))
        await publishing
        tally = {k: kinds.count(k) for k in set(kinds)}
        assert tally.get("busy", 0) + tally.get("capture", 0) == n_churn // 8, tally

        await asyncio.wait_for(watching, 60)
        # every final, in order (how fast they come is measured by benchmarks/load.py, not asserted here)
        assert watcher.finals == list(range(n_big + n_small)), "the watcher missed or reordered finals"

        # the too-fast capturer is still served
        await fast.send(json.dumps(protocol.ping("fast")))
        await eventually(lambda: any(m["type"] == "pong" and m["id"] == "fast" for m in fast_msgs), 20, "pong")
        assert any(s.counters.audio_too_fast > 0 for s in manager.sessions())

        # the never-readers are disconnected (their socket took no data for send_timeout; or the
        # keepalive got no pong): nothing is left of them
        await eventually(lambda: all(q.closed for q in stalled_qs), 30, "never-readers disconnected")
        for _, writer in [*stalled, flooder]:
            writer.transport.abort()
        await fast.close()
        await draining

        # back to the baseline: the watcher alone, no session, nothing queued for anyone gone
        await eventually(lambda: server.broadcaster.clients == 1 and len(server._connections) == 1
                         and server._ws is not None and len(server._ws.connections) == 1, 30, "baseline")
        assert server.broadcaster.queues() == [watcher_q]
        await eventually(lambda: manager.sessions() == [], 30, "sessions closed")
        health = server.health()
        assert health["ok"] and health["clients"] == 1 and health["capture"]["sessions"] == 0, health
        assert health["drops"] >= sum(q.dropped for q in stalled_qs) > 0
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(server.url + "healthz", timeout=10).read())
        assert json.loads(body)["clients"] == 1
        again, hello = await open_client(server.ws_url)
        assert hello["type"] == "hello"
        await again.close()
        await watcher.ws.close()

    asyncio.run(asyncio.wait_for(main(), timeout=120))
