"""Websocket server: one port serves the browser client, the `/ws` event stream and `/healthz`.

The core is `Broadcaster`, free of I/O: each client has its own bounded drop-oldest queue of
outgoing messages, so a slow or stalled client never blocks the producer or the other clients.
`Server` puts it on the network with the `websockets` library (asyncio implementation).

Producers call `Server.publish(event)` on the event loop, or `Server.publish_threadsafe(event)`
from any thread (the pipeline's worker); events are protocol messages built with
`emostream.realtime.protocol`. Client `reset`/`config` messages are handed to the
`on_client_message(message, client_id)` callback, on the event loop (it must not block).
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import hashlib
import hmac
import http
import importlib.metadata
import ipaddress
import itertools
import json
import logging
import mimetypes
import os
import re
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from websockets.asyncio.server import Server as _WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from emostream.realtime import protocol
from emostream.realtime.protocol import ClientMessage, Config, Ping, ProtocolError

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
WS_PATH = "/ws"
HEALTH_PATH = "/healthz"
TOKEN_ENV = "EMOSTREAM_TOKEN"

ClientMessageHandler = Callable[[ClientMessage, str], None]

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
    ".mp4": "video/mp4",
    ".wav": "audio/wav",
}
_SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),  # the page URL may carry ?token=
    ("Cache-Control", "no-cache"),
)
_PAGE_CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; frame-ancestors 'none'"
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: fits a Bearer header and a query string


def server_version() -> str:
    try:
        return importlib.metadata.version("emostream")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def default_web_root() -> Path:
    """The browser client shipped in the repository: <repo>/demo/web."""
    return Path(__file__).resolve().parent.parent / "demo" / "web"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ServerConfigError(ValueError):
    """The server refuses a configuration (e.g. a non-loopback bind without a token)."""


# ---------------------------------------------------------------------------------------------
# I/O-free core: per-client queues and fan-out

_PER_CLIENT_TYPES = frozenset({"hello", "metrics"})  # rendered for each client when sent


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One queued message: wire text, or a dict finished per client when sent (hello, metrics)."""

    type: str
    text: str | None = None
    message: Mapping[str, Any] | None = None
    droppable: bool = False  # interim predictions and metrics go first when a queue overflows


class ClientQueue:
    """Bounded drop-oldest queue of one client's outgoing messages; counts what it drops.

    On overflow the oldest droppable message (interim prediction, face, metrics) goes first, else the
    oldest message. A pending metrics snapshot is replaced by a newer one (not counted as a drop).
    """

    def __init__(self, client_id: str, maxsize: int = 256) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.client_id = client_id
        self.maxsize = maxsize
        self.interim = True
        self.dropped = 0
        self.sent = 0
        self._items: deque[Outgoing] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: Outgoing) -> None:
        if self._closed:
            return
        if item.type == "metrics":
            for i, old in enumerate(self._items):
                if old.type == "metrics":
                    del self._items[i]
                    break
        if len(self._items) >= self.maxsize:
            victim = next((i for i, old in enumerate(self._items) if old.droppable), None)
            if victim is None:  # keep an unsent hello: the client needs its labels
                victim = next((i for i, old in enumerate(self._items) if old.type != "hello"), 0)
            del self._items[victim]
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def get_nowait(self) -> Outgoing | None:
        return self._items.popleft() if self._items else None

    async def get(self) -> Outgoing | None:
        """The next message, waiting for one; None once the queue is closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def close(self) -> None:
        self._closed = True
        self._ready.set()


class Broadcaster:
    """Fans server events out to every client's queue. Never blocks; call on the event loop."""

    def __init__(self, queue_size: int = 256) -> None:
        self.queue_size = queue_size
        self._clients: dict[str, ClientQueue] = {}
        self.published = 0
        self._departed_drops = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def dropped(self) -> int:
        """Messages dropped for slow clients, over all clients ever connected."""
        return self._departed_drops + sum(q.dropped for q in self._clients.values())

    def queues(self) -> list[ClientQueue]:
        return list(self._clients.values())

    def subscribe(self, client_id: str, first: Mapping[str, Any] | None = None) -> ClientQueue:
        """Add a client; `first` (its hello) is queued before any later event."""
        if client_id in self._clients:
            raise ValueError(f"client {client_id!r} is already subscribed")
        queue = ClientQueue(client_id, self.queue_size)
        if first is not None:
            queue.put(self._item(first))
        self._clients[client_id] = queue
        return queue

    def unsubscribe(self, queue: ClientQueue) -> None:
        if self._clients.get(queue.client_id) is queue:
            del self._clients[queue.client_id]
            self._departed_drops += queue.dropped
        queue.close()

    @staticmethod
    def _item(event: Mapping[str, Any]) -> Outgoing:
        kind = event.get("type")
        if kind not in protocol.SERVER_TYPES:
            raise ValueError(f"not a server message type: {kind!r}")
        droppable = kind in ("metrics", "face") or (kind == "prediction" and not event.get("final", True))
        if kind in _PER_CLIENT_TYPES:
            protocol.encode(event)  # fail now, at the producer, rather than in a sender
            return Outgoing(kind, message=dict(event), droppable=droppable)
        return Outgoing(kind, text=protocol.encode(event), droppable=droppable)

    def publish(self, event: Mapping[str, Any]) -> None:
        """Queue one server message for every client (encoded once). Raises ValueError if invalid."""
        item = self._item(event)
        interim = item.type == "prediction" and item.droppable
        self.published += 1
        for queue in self._clients.values():
            if interim and not queue.interim:
                continue
            queue.put(item)

    def send_to(self, queue: ClientQueue, event: Mapping[str, Any]) -> None:
        """Queue a reply (pong, error) for one client."""
        queue.put(self._item(event))

    def render(self, item: Outgoing, queue: ClientQueue) -> str:
        """Wire text of `item` for the client of `queue`."""
        if item.text is not None:
            return item.text
        msg = dict(item.message or {})
        if item.type == "metrics":
            msg["drops"] = {**msg.get("drops", {}), "client": queue.dropped}
            msg["clients"] = self.clients
        elif item.type == "hello":
            msg["client"] = queue.client_id
            msg["interim"] = queue.interim
        return protocol.encode(msg)


# ---------------------------------------------------------------------------------------------
# HTTP helpers


def _response(status: int, body: bytes, content_type: str, extra: Iterable[tuple[str, str]] = ()) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            *_SECURITY_HEADERS,
            *extra,
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def _text_response(status: int, text: str, extra: Iterable[tuple[str, str]] = ()) -> Response:
    return _response(status, (text + "\n").encode(), "text/plain; charset=utf-8", extra)


def resolve_static(root: Path, url_path: str) -> Path | None:
    """The file under `root` that `url_path` names, or None (missing, hidden, or outside root)."""
    path = unquote(url_path, errors="strict") if "%" in url_path else url_path
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return None
    if path.endswith("/"):
        path += "index.html"
    parts = [p for p in path.split("/") if p]
    if any(p.startswith(".") for p in parts):  # dot files and any ".." segment
        return None
    base = root.resolve()
    candidate = base.joinpath(*parts).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in _CONTENT_TYPES:
        return _CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


# ---------------------------------------------------------------------------------------------
# The server


class Server:
    """The realtime server. Use `async with Server(...) as server:` or `await start()`/`stop()`.

    Args:
        host, port: where to listen; port 0 picks a free port (see `port`/`url` after start).
        token: shared secret required on `/ws` (Bearer header or `?token=`); mandatory unless
            `host` is a loopback address.
        origins: extra allowed `Origin`s for `/ws` ("*" allows any). The defaults are this
            server's own http(s) origins; with a token, also the origin naming the request's Host.
        allow_no_origin: accept clients that send no Origin (non-browser clients).
        hello: the hello message sent to new clients (a pipeline can also publish one later).
        on_client_message: called on the event loop with (reset|config, client_id); must not block.
        max_message_bytes: larger client messages get an `error` (up to 4x this size; beyond
            that the protocol layer closes the connection with 1009).
        client_queue_size: outgoing messages buffered per client before dropping the oldest.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        token: str | None = None,
        origins: Sequence[str] = (),
        allow_no_origin: bool = True,
        web_root: str | Path | None = None,
        hello: Mapping[str, Any] | None = None,
        on_client_message: ClientMessageHandler | None = None,
        max_message_bytes: int = 64 * 1024,
        client_queue_size: int = 256,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        close_timeout: float = 2.0,
    ) -> None:
        if token is not None and not _TOKEN_RE.fullmatch(token):
            raise ServerConfigError("the token must be non-empty visible ASCII (no spaces)")
        if not is_loopback(host) and not token:
            shown = host or "all interfaces"
            raise ServerConfigError(
                f"refusing to listen on {shown}: a non-loopback address needs a token "
                f"(--token or ${TOKEN_ENV}); use --host 127.0.0.1 to serve this machine only"
            )
        if token and len(token) < 16:
            logger.warning("the token is short (%d characters); use at least 16 random characters", len(token))
        if not 0 <= port <= 65535:
            raise ServerConfigError(f"port must be in 0..65535, got {port}")
        if max_message_bytes < 256:
            raise ServerConfigError("max_message_bytes must be at least 256")
        self.host = host
        self._port = port
        self._token = token.encode() if token else None
        self._extra_origins = tuple(origins)
        self._allow_no_origin = allow_no_origin
        self.web_root = Path(web_root) if web_root is not None else default_web_root()
        self.session = uuid.uuid4().hex[:12]
        self.version = server_version()
        self.on_client_message = on_client_message
        self.max_message_bytes = max_message_bytes
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._close_timeout = close_timeout
        self.broadcaster = Broadcaster(client_queue_size)
        self._hello: dict[str, Any] = {}
        self.set_hello(hello or protocol.hello(labels=DEFAULT_LABELS, model="none", modalities=()))
        self._ids = itertools.count(1)
        self._ws: _WsServer | None = None
        self._connections: set[ServerConnection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started_at = 0.0
        self._allowed_origins: frozenset[str] = frozenset()

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> Server:
        if self._ws is not None:
            raise RuntimeError("server already started")
        if not self.web_root.is_dir():
            logger.warning("web client folder %s does not exist: only /ws and /healthz will work", self.web_root)
        bind = "127.0.0.1" if self.host.lower() == "localhost" else (self.host or None)
        self._loop = asyncio.get_running_loop()
        self._ws = await serve(
            self._handle,
            bind,
            self._port,
            process_request=self._process_request,
            compression=None,  # small JSON messages: not worth a deflate context per client
            max_size=4 * self.max_message_bytes,
            max_queue=4,
            ping_interval=self._ping_interval,
            ping_timeout=self._ping_timeout,
            close_timeout=self._close_timeout,
            server_header=f"emostream/{self.version}",
        )
        self._port = self._ws.sockets[0].getsockname()[1]
        self._allowed_origins = self._default_origins()
        self._started_at = time.monotonic()
        logger.info("serving %s (websocket %s)", self.url, self.ws_url)
        return self

    async def stop(self) -> None:
        """Close every connection (1001 going away) and stop listening. Idempotent."""
        ws, self._ws = self._ws, None
        if ws is None:
            return
        for queue in self.broadcaster.queues():
            queue.close()
        ws.close(close_connections=True)
        try:
            await asyncio.wait_for(asyncio.shield(ws.wait_closed()), timeout=self._close_timeout + 1)
        except TimeoutError:
            # A stalled client: the closing handshake waits for its write buffer to drain.
            logger.warning("%d connection(s) did not close in time; aborting them", len(self._connections))
            for conn in list(self._connections):
                conn.transport.abort()
            await ws.wait_closed()
        logger.info("server stopped")

    async def __aenter__(self) -> Server:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        return self._ws is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = self.host or "0.0.0.0"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self._port}/"

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[4:] + WS_PATH.lstrip("/")

    async def drain(self, timeout: float = 2.0) -> bool:
        """Wait until every client's queue is empty (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while any(len(q) for q in self.broadcaster.queues()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    # -- producer side -----------------------------------------------------------------------

    def set_hello(self, hello: Mapping[str, Any]) -> None:
        """The hello for new clients; `session` and `server_version` are filled in if missing."""
        msg = dict(hello)
        if msg.get("type") != "hello":
            raise ValueError("set_hello needs a hello message")
        msg.setdefault("session", self.session)
        msg.setdefault("server_version", self.version)
        protocol.encode(msg)
        self._hello = msg

    def publish(self, event: Mapping[str, Any]) -> None:
        """Send a server message to every client. Call on the event loop; never blocks.

        A published `hello` also replaces the one new clients get. Raises ValueError if `event`
        is not a valid server message (unknown type, NaN, ...).
        """
        if event.get("type") == "hello":
            self.set_hello(event)
            event = self._hello
        self.broadcaster.publish(event)

    def publish_threadsafe(self, event: Mapping[str, Any]) -> bool:
        """`publish` from any thread. False if the server is not running (the event is dropped)."""
        loop = self._loop
        if loop is None or self._ws is None or loop.is_closed():
            logger.debug("server not running: dropped %s event", event.get("type"))
            return False
        try:
            loop.call_soon_threadsafe(self._publish_logged, event)
        except RuntimeError:  # loop closed meanwhile
            return False
        return True

    def _publish_logged(self, event: Mapping[str, Any]) -> None:
        try:
            self.publish(event)
        except (ValueError, TypeError):
            logger.exception("invalid %s event not published", event.get("type"))

    def health(self) -> dict[str, Any]:
        return {
            "ok": self.running,
            "clients": self.broadcaster.clients,
            "uptime_s": round(time.monotonic() - self._started_at, 3) if self._started_at else 0.0,
            "drops": self.broadcaster.dropped,
            "published": self.broadcaster.published,
            "session": self.session,
            "version": self.version,
            "protocol": protocol.VERSION,
        }

    # -- HTTP --------------------------------------------------------------------------------

    def _default_origins(self) -> frozenset[str]:
        port = self._port
        hosts = {self.host} if self.host and self.host not in ("0.0.0.0", "::") else set()
        if is_loopback(self.host):
            hosts |= {"localhost", "127.0.0.1", "[::1]"}
        hosts = {f"[{h}]" if ":" in h and not h.startswith("[") else h for h in hosts}
        return frozenset(f"{scheme}://{h}:{port}" for h in hosts for scheme in ("http", "https"))

    def _origin_ok(self, request: Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return self._allow_no_origin
        if "*" in self._extra_origins or origin in self._extra_origins or origin in self._allowed_origins:
            return True
        # With a token, an attacker's page (DNS rebinding) still cannot connect, so the origin of
        # whatever name the user browsed to is fine.
        host = request.headers.get("Host")
        return bool(self._token and host and origin in (f"http://{host}", f"https://{host}"))

    def _token_ok(self, request: Request, query: str) -> bool:
        if self._token is None:
            return True
        offered: list[str] = parse_qs(query).get("token", [])
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            offered.append(auth[7:].strip())
        # Constant-time comparison of equal-length digests, every candidate (no early exit).
        expected = hashlib.sha256(self._token).digest()
        results = [hmac.compare_digest(hashlib.sha256(c.encode()).digest(), expected) for c in offered]
        return any(results)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            parts = urlsplit(request.path)
        except ValueError:
            return _text_response(400, "bad request")
        if parts.path == WS_PATH:
            if not self._origin_ok(request):
                logger.warning("refused websocket from origin %r", request.headers.get("Origin"))
                return _text_response(403, "origin not allowed")
            if not self._token_ok(request, parts.query):
                logger.warning("refused websocket without a valid token")
                return _text_response(401, "a valid token is required", [("WWW-Authenticate", "Bearer")])
            return None  # go on with the websocket handshake
        if parts.path == HEALTH_PATH:
            body = json.dumps(self.health()).encode()
            return _response(200, body, "application/json")
        try:
            path = resolve_static(self.web_root, parts.path)
        except UnicodeDecodeError:
            path = None
        if path is None:
            return _text_response(404, "not found")
        try:
            body = await asyncio.to_thread(path.read_bytes)
        except OSError:
            return _text_response(404, "not found")
        extra = [("Content-Security-Policy", _PAGE_CSP)] if path.suffix == ".html" else []
        return _response(200, body, content_type(path), extra)

    # -- websocket ---------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        client_id = f"c{next(self._ids)}"
        self._connections.add(ws)
        queue = self.broadcaster.subscribe(client_id, first=self._hello)
        logger.info("client %s connected from %s", client_id, ws.remote_address)
        sender = asyncio.create_task(self._send_loop(ws, queue), name=f"emostream-send-{client_id}")
        try:
            while True:
                try:
                    data = await ws.recv()
                except ConnectionClosed:
                    break
                self._on_incoming(queue, data)
        finally:
            self._connections.discard(ws)
            self.broadcaster.unsubscribe(queue)
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            logger.info("client %s disconnected (%d dropped)", client_id, queue.dropped)

    async def _send_loop(self, ws: ServerConnection, queue: ClientQueue) -> None:
        try:
            while (item := await queue.get()) is not None:
                await ws.send(self.broadcaster.render(item, queue))  # waits while the client lags
                queue.sent += 1
        except ConnectionClosed:
            pass

    def _on_incoming(self, queue: ClientQueue, data: str | bytes) -> None:
        try:
            if isinstance(data, str) and len(data) * 4 > self.max_message_bytes:
                size = len(data.encode("utf-8", "surrogatepass"))
                if size > self.max_message_bytes:
                    raise ProtocolError("too_big", f"message of {size} bytes; the limit is {self.max_message_bytes}")
            message = protocol.parse_client_message(data)
        except ProtocolError as exc:
            logger.debug("client %s: %s", queue.client_id, exc)
            self.broadcaster.send_to(queue, protocol.error_from(exc))
            return
        if isinstance(message, Ping):
            self.broadcaster.send_to(queue, protocol.pong(message.id, t_ms=time.monotonic() * 1000.0))
            return
        if isinstance(message, Config) and message.interim is not None:
            queue.interim = message.interim
        if self.on_client_message is not None:
            try:
                self.on_client_message(message, queue.client_id)
            except Exception:
                logger.exception("on_client_message failed for %s", message.type)
                self.broadcaster.send_to(queue, protocol.error("internal", f"the server failed to handle {message.type!r}"))


# ---------------------------------------------------------------------------------------------
# `emostream serve` / `emostream demo`


class EventSource(Protocol):
    """What `emostream.realtime.pipeline.build_event_source(args)` returns.

    `start(publish)`: begin producing; `publish` is thread-safe and takes protocol messages
    (publish a `hello` first so clients learn the labels). `on_client_message`: reset/config from
    a client, called on the event loop (hand it to the pipeline thread; do not block).
    `wait(timeout)`: True once the source has ended (media played through, or failed).
    `close()`: stop and join threads.
    """

    def start(self, publish: Callable[[Mapping[str, Any]], object]) -> None: ...

    def on_client_message(self, message: ClientMessage, client_id: str) -> None: ...

    def wait(self, timeout: float | None = None) -> bool: ...

    def close(self) -> None: ...


def default_media() -> Path:
    return Path(__file__).resolve().parent.parent / "demo" / "media" / "sample.mp4"


def build_parser(prog: str = "emostream serve", *, demo: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Recognise emotions live and stream them to a browser client over a websocket.",
    )
    media_help = "media file (mp4/wav) played in real time as camera and microphone"
    if demo:
        parser.add_argument("--media", type=Path, default=None,
                            help=f"{media_help} (default: the webcam and microphone if present, else the bundled sample)")
    else:
        parser.add_argument("--media", type=Path, default=None, help=f"{media_help} (default: live camera and microphone)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1; others need --token)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--once", action="store_true", help="exit when the media has played through once")
    parser.add_argument(
        "--token", default=os.environ.get(TOKEN_ENV) or None, help=f"shared secret for /ws (default ${TOKEN_ENV})"
    )
    parser.add_argument("--open", action="store_true", help="open the client in a web browser")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="extra allowed Origin for /ws (repeatable; '*' allows any)")
    parser.add_argument("--web-root", type=Path, default=None, help="folder of the browser client (default demo/web)")
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    from emostream.realtime.pipeline import add_model_arguments

    add_model_arguments(parser)
    parser.set_defaults(demo=demo)
    return parser


def _load_event_source_factory() -> Callable[[argparse.Namespace], EventSource]:
    from emostream.realtime.pipeline import build_event_source  # lazy: heavy imports

    return build_event_source


async def _run(server: Server, args: argparse.Namespace, factory: Callable[[argparse.Namespace], EventSource]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # Windows, or not the main thread
            pass
    source: EventSource | None = None
    try:
        async with server:
            print(f"serving {server.url}", flush=True)
            if args.open:
                import webbrowser

                webbrowser.open(server.url)
            try:
                source = await asyncio.to_thread(factory, args)
            except Exception as exc:
                logger.debug("build_event_source failed", exc_info=True)
                print(f"{args.prog}: error: could not start the pipeline: {exc}", file=sys.stderr)
                return 1
            server.on_client_message = source.on_client_message
            try:
                await asyncio.to_thread(source.start, server.publish_threadsafe)
            except Exception as exc:
                logger.debug("the event source failed to start", exc_info=True)
                print(f"{args.prog}: error: could not start the pipeline: {exc}", file=sys.stderr)
                return 1
            while not stop.is_set():
                ended = await asyncio.to_thread(source.wait, 0.25)
                if ended and args.once:
                    await asyncio.sleep(0.2)  # let the last events cross over from the pipeline thread
                    await server.drain(timeout=3.0)
                    break
            return 0
    finally:
        if source is not None:
            await asyncio.to_thread(source.close)
        for sig in handled:
            loop.remove_signal_handler(sig)


def main(argv: list[str] | None = None, *, prog: str = "emostream serve", demo: bool = False) -> int:
    """`emostream serve` (and `emostream demo` with demo=True). Prints `serving http://HOST:PORT/`."""
    args = build_parser(prog, demo=demo).parse_args(argv)
    args.prog = prog
    if args.log_level:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.getLogger().setLevel(args.log_level)
    if args.log_level != "DEBUG":  # one INFO line per HTTP request otherwise
        logging.getLogger("websockets").setLevel(logging.WARNING)
    if args.media is not None and not args.media.is_file():
        print(f"{prog}: error: media file not found: {args.media}", file=sys.stderr)
        return 2
    try:
        server = Server(args.host, args.port, token=args.token, origins=args.allow_origin, web_root=args.web_root)
    except ServerConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        factory = _load_event_source_factory()
    except ImportError as exc:
        print(
            f"{prog}: error: the realtime pipeline is not available "
            f"(emostream.realtime.pipeline.build_event_source): {exc}",
            file=sys.stderr,
        )
        return 1
    try:
        return asyncio.run(_run(server, args, factory))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # e.g. the port is in use
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1


def demo_main(argv: list[str] | None = None) -> int:
    """`emostream demo`: `serve` with the bundled sample dialogue as the default media."""
    return main(argv, prog="emostream demo", demo=True)
