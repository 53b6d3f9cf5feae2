"""Helpers shared by the test modules: waiting on a condition (never a bare sleep), reading server
messages (each checked against the protocol's JSON Schema), and a few canned server events.

Import them as `from tests.helpers import ...` (the tests run with `--import-mode=importlib`, the
same way as `tests.model_helpers`); the fixtures and the hypothesis profiles live in conftest.py.

Every wait here has a generous deadline: a slow or busy machine only makes a test slower, and a
deadline that passes fails with a message saying what was awaited.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from typing import TypeVar

import jsonschema
from websockets.asyncio.client import ClientConnection

from emostream.realtime import protocol

T = TypeVar("T")

LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]
VALIDATORS = {kind: jsonschema.Draft202012Validator(schema) for kind, schema in protocol.SCHEMAS.items()}
WAIT_S = 20.0  # the default deadline of every wait below: generous, a passing wait returns at once


# ---------------------------------------------------------------------------------------------
# Waiting on a condition


def wait_until(cond: Callable[[], T], timeout: float = WAIT_S, what: str | Callable[[], str] = "condition",
               interval: float = 0.01) -> T:
    """Poll `cond` until it returns something truthy and return that; fail after `timeout` seconds,
    saying `what` was awaited (a callable `what` is asked then, to describe the state at that moment)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, _timed_out(timeout, what)
        time.sleep(interval)


async def eventually(cond: Callable[[], T], timeout: float = WAIT_S, what: str | Callable[[], str] = "condition",
                     interval: float = 0.01) -> T:
    """`wait_until` for a coroutine: the event loop runs while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, _timed_out(timeout, what)
        await asyncio.sleep(interval)


def _timed_out(timeout: float, what: str | Callable[[], str]) -> str:
    return f"timed out after {timeout} s waiting for {what() if callable(what) else what}"


# ---------------------------------------------------------------------------------------------
# Server messages


def validate(msg: dict) -> dict:
    """Every message the server sends matches the JSON Schema of its type; returns `msg`."""
    assert msg.get("type") in protocol.SERVER_TYPES, msg
    VALIDATORS[msg["type"]].validate(msg)
    return msg


async def recv_json(ws: ClientConnection, timeout: float = WAIT_S) -> dict:
    """The next message from the server, parsed and validated."""
    text = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(text, str), text
    return validate(json.loads(text))


async def recv_until(ws: ClientConnection, match: str | Callable[[dict], bool], timeout: float = WAIT_S, *,
                     skipped: list[dict] | None = None) -> dict:
    """The first message of type `match` (a string) or for which `match(msg)` is true, within
    `timeout` seconds in all. The messages read before it are appended to `skipped` when given."""
    pred = (lambda m: m["type"] == match) if isinstance(match, str) else match
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no message matching {match!r} in {timeout} s"
        try:
            msg = await recv_json(ws, left)
        except TimeoutError:
            raise AssertionError(f"no message matching {match!r} in {timeout} s") from None
        if pred(msg):
            return msg
        if skipped is not None:
            skipped.append(msg)


def final(i: int, label: str = "joy", text: str = "") -> dict:
    """A final prediction for utterance `i` (speaker i % 2), `label` at 0.7."""
    probs = {k: (0.7 if k == label else 0.05) for k in LABELS}
    return protocol.prediction(final=True, utterance_id=i, speaker=i % 2, text=text or f"line {i}", probs=probs,
                               t_start_ms=i * 1000.0, t_end_ms=i * 1000.0 + 800, latency_ms=50.0)


def interim(i: int) -> dict:
    """An interim (droppable) prediction for utterance `i`, uniform probabilities."""
    probs = {k: 1 / len(LABELS) for k in LABELS}
    return protocol.prediction(final=False, utterance_id=i, speaker=0, text="", probs=probs, t_start_ms=i * 1000.0,
                               t_end_ms=i * 1000.0 + 400)


# ---------------------------------------------------------------------------------------------
# A raw websocket client


HANDSHAKE = (b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


async def raw_ws(port: int, rcvbuf: int = 4096,
                 timeout: float = 20.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A websocket client on a raw socket with a tiny receive buffer, which reads nothing after the
    handshake unless asked (a client that stalls)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(HANDSHAKE)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer

