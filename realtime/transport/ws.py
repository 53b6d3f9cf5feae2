"""The realtime server: one port serves the browser client, the `/ws` event stream and `/healthz`,
over http/ws or, with a certificate, https/wss (`transport.tls`).

`Server` puts `transport.broadcast` on the network with the `websockets` library (asyncio).
Producers call `Server.publish(event)` on the event loop, or `Server.publish_threadsafe(event)`
from any thread (the pipeline's worker); events are protocol messages built with
`emostream.realtime.protocol`. Client `reset`/`config` messages of watching clients are handed to
`on_client_message(message, client_id)` on the event loop (it must not block). A connection to
`/ws?source=browser` is a capturing client: `capture.open(...)` gives it its own session, its
binary media frames go to that session, and that session's events go to it alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import re
import ssl
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server as _WsServer
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from emostream.realtime import protocol
from emostream.realtime.media_frames import MAX_FRAME_BYTES
from emostream.realtime.protocol import ClientMessage, Config, Ping, ProtocolError, Reset
from emostream.realtime.transport.broadcast import Broadcaster, ClientQueue
from emostream.realtime.transport.http import (
    _PAGE_CSP,
    _response,
    _text_response,
    content_type,
    default_web_root,
    is_loopback,
    resolve_static,
    server_version,
)

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
WS_PATH = "/ws"
HEALTH_PATH = "/healthz"
TOKEN_ENV = "EMOSTREAM_TOKEN"
SERVER_STOPPING = "server stopping"  # the reason sessions are closed with when the server (or a replica) stops

ClientMessageHandler = Callable[[ClientMessage, str], None]
_TOKEN_RE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: fits a Bearer header and a query string


class ServerConfigError(ValueError):
    """The server refuses a configuration (e.g. a non-loopback bind without a token)."""


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
        send_timeout: a client whose socket takes no data for this many seconds (it stopped
            reading and its buffers are full) is disconnected; None: never. The keepalive cannot
            catch such a client: its ping waits behind the full buffer, so its timeout never starts.
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
        send_timeout: float | None = 40.0,
        capture: Any | None = None,
        operator_token: str | None = None,
        tls: ssl.SSLContext | None = None,
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
        self.send_timeout = send_timeout
        self.capture = capture  # a SessionManager: `/ws?source=browser` connections get a session each
        self.health_checks: dict[str, Callable[[], tuple[bool, str]]] = {}
        self.capture_expected = False  # True: capture comes once the models are loaded (answer `busy` till then)
        self._operator = operator_token.encode() if operator_token else None
        self.tls = tls
        self.broadcaster = Broadcaster(client_queue_size)
        self._hello: dict[str, Any] = {}
        self.set_hello(hello or protocol.hello(labels=DEFAULT_LABELS, model="none", modalities=()))
        self._ids = itertools.count(1)
        self._ws: _WsServer | None = None
        self._hosted = False  # `host_on`: connections come from another listener
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
            max_size=max(4 * self.max_message_bytes, MAX_FRAME_BYTES + 1024),
            ssl=self.tls,
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

    def host_on(self, loop: asyncio.AbstractEventLoop, port: int) -> None:
        """Serve through someone else's listener (a cluster's HTTP proxy on `port`): the protocol,
        sessions and health as `start` gives them, fed connection by connection through
        `handle(connection)` (a websockets-like connection; see `emostream.realtime.cluster`)."""
        self._loop, self._port, self._hosted = loop, port, True
        self._allowed_origins = self._default_origins()
        self._started_at = time.monotonic()

    async def handle(self, connection: Any) -> None:
        """One websocket connection, already accepted, for its whole life."""
        await self._handle(connection)

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
        return self._ws is not None or self._hosted

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        host = self.host or "0.0.0.0"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{'https' if self.tls else 'http'}://{host}:{self._port}/"

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
        if loop is None or not self.running or loop.is_closed():
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
        """`ok` is False (and /healthz answers 503 with the reasons) when the server or any
        registered part (`health_checks`: name -> () -> (alive, reason)) is not alive."""
        parts = {}
        for name, check in list(self.health_checks.items()):
            try:
                alive, reason = check()
            except Exception as exc:  # noqa: BLE001 - a failing check is a dead part
                alive, reason = False, f"health check failed: {exc}"
            parts[name] = {"ok": bool(alive), "reason": str(reason)}
        dead = [f"{name}: {p['reason']}" for name, p in parts.items() if not p["ok"]]
        return {
            "ok": self.running and not dead,
            **({"reason": "; ".join(dead)} if dead else {}),
            "parts": parts,
            "clients": self.broadcaster.clients,
            "uptime_s": round(time.monotonic() - self._started_at, 3) if self._started_at else 0.0,
            "drops": self.broadcaster.dropped,
            "published": self.broadcaster.published,
            "session": self.session,
            "version": self.version,
            "protocol": protocol.VERSION,
            **({"capture": self.capture.health()} if self.capture is not None else {}),
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
        return _secret_ok(offered, self._token)

    def refusal(self, request: Any, query: str) -> tuple[int, str] | None:
        """Why a websocket request (anything with `headers`) is refused, as (HTTP status, text),
        or None to accept it: the Origin allow-list, then the token."""
        if not self._origin_ok(request):
            logger.warning("refused websocket from origin %r", request.headers.get("Origin"))
            return 403, "origin not allowed"
        if not self._token_ok(request, query):
            logger.warning("refused websocket without a valid token")
            return 401, "a valid token is required"
        return None

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        try:
            parts = urlsplit(request.path)
        except ValueError:
            return _text_response(400, "bad request")
        if parts.path == WS_PATH:
            refused = self.refusal(request, parts.query)
            if refused is not None:
                status, text = refused
                extra = [("WWW-Authenticate", "Bearer")] if status == 401 else []
                return _text_response(status, text, extra)
            return None  # go on with the websocket handshake
        if parts.path == HEALTH_PATH:
            health = self.health()
            return _response(200 if health["ok"] else 503, json.dumps(health).encode(), "application/json")
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
        query = parse_qs(urlsplit(ws.request.path).query) if ws.request is not None else {}
        capturing = query.get("source") == ["browser"]
        operator = self._operator is None or _secret_ok(query.get("operator", []), self._operator)
        if not capturing:  # only a capturer sends media frames: a watcher keeps the small limit
            ws.protocol.max_message_size = 4 * self.max_message_bytes
        queue = self.broadcaster.subscribe(client_id, first=None if capturing else self._hello, fanout=not capturing)
        logger.info("client %s connected from %s%s", client_id, ws.remote_address, " (capturing)" if capturing else "")
        sender = asyncio.create_task(self._send_loop(ws, queue), name=f"emostream-send-{client_id}")
        session: Any = None
        try:
            if capturing:
                session = await self._open_session(ws, queue, client_id)
                if session is None:
                    return
            while True:
                try:
                    data = await ws.recv()
                except ConnectionClosed:
                    break
                try:
                    self._on_incoming(queue, data, session, operator)
                except Exception:  # noqa: BLE001 - one message must not end the connection
                    logger.exception("client %s: failed to handle a %s message", client_id,
                                     "text" if isinstance(data, str) else "binary")
                    self.broadcaster.send_to(queue, protocol.error("internal", "the server failed to handle that message"))
        finally:
            if session is not None:
                await asyncio.to_thread(self.capture.close, session, "disconnected")
            self._connections.discard(ws)
            self.broadcaster.unsubscribe(queue)
            if not sender.done():
                sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            logger.info("client %s disconnected (%d dropped)", client_id, queue.dropped)

    async def _open_session(self, ws: ServerConnection, queue: ClientQueue, client_id: str) -> Any:
        """A capturing client's own session, or None (refused: the client was told why and closed)."""
        from emostream.realtime.sessions import Busy

        if self.capture is None:
            if self.capture_expected:  # still loading the models
                self.broadcaster.send_to(queue, protocol.error(
                    "busy", "the server is still loading its models: try again in a few seconds"))
                await _flush(queue, timeout=1.0)
                await ws.close(1013, "loading")
            else:
                self.broadcaster.send_to(queue, protocol.error("bad_message", "this server does not take browser capture"))
                await _flush(queue, timeout=1.0)
                await ws.close(1008, "no capture here")
            return None
        loop = asyncio.get_running_loop()

        def send(event: Mapping[str, Any]) -> None:
            loop.call_soon_threadsafe(self._deliver_logged, queue, event)

        def close(reason: str) -> None:
            if reason != "disconnected":  # 1001 (going away) when the server stops: the page reconnects
                code = 1001 if reason == SERVER_STOPPING else 1000
                asyncio.run_coroutine_threadsafe(ws.close(code, reason[:100]), loop)

        try:
            session = await asyncio.to_thread(self.capture.open, client_id, send, close)
        except Busy as exc:
            self.broadcaster.send_to(queue, protocol.error("busy", str(exc)))
            await _flush(queue, timeout=1.0)
            await ws.close(1013, "busy")
            return None
        hello = session.hello()
        hello["server_version"] = self.version
        self.broadcaster.deliver(queue, hello)
        return session

    def _deliver_logged(self, queue: ClientQueue, event: Mapping[str, Any]) -> None:
        try:
            self.broadcaster.deliver(queue, event)
        except (ValueError, TypeError):
            logger.exception("invalid %s event not sent", event.get("type"))

    async def _send_loop(self, ws: ServerConnection, queue: ClientQueue) -> None:
        try:
            while (item := await queue.get()) is not None:
                try:
                    text = self.broadcaster.render(item, queue)
                except (ValueError, TypeError):  # checked when queued: should not happen; skip, go on
                    logger.exception("client %s: %s message not sent", queue.client_id, item.type)
                    continue
                try:
                    async with asyncio.timeout(self.send_timeout):
                        await ws.send(text)  # waits while the client lags
                except TimeoutError:
                    logger.warning("client %s took no data for %.0f s: disconnected (%d messages queued)",
                                   queue.client_id, self.send_timeout, len(queue))
                    ws.transport.abort()  # a close frame could not get through its full buffers either
                    return
                queue.sent += 1
        except ConnectionClosed:
            pass

    def _on_incoming(self, queue: ClientQueue, data: str | bytes, session: Any = None, operator: bool = True) -> None:
        from emostream.realtime.media_frames import FrameError

        if session is not None and isinstance(data, (bytes, bytearray, memoryview)):
            try:
                session.on_frame(bytes(data))
            except FrameError as exc:
                self.broadcaster.send_to(queue, protocol.error(exc.code, str(exc)))
            return
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
            if session is not None:
                session.set_interim(message.interim)
        if session is not None:  # a capturing client's reset is its own session's
            if isinstance(message, Reset):
                session.request_reset()
            return
        if isinstance(message, Reset) and not operator:
            self.broadcaster.send_to(queue, protocol.error(
                "forbidden", "only the operator may reset the shared session (connect with ?operator=TOKEN)"))
            return
        if self.on_client_message is not None:
            try:
                self.on_client_message(message, queue.client_id)
            except Exception:
                logger.exception("on_client_message failed for %s", message.type)
                self.broadcaster.send_to(queue, protocol.error("internal", f"the server failed to handle {message.type!r}"))


async def _flush(queue: ClientQueue, timeout: float) -> None:
    """Wait until this client's queue is empty (its last words sent) or `timeout` passes: not the
    whole server's (`Server.drain`), which a stalled client elsewhere would hold up."""
    deadline = time.monotonic() + timeout
    while len(queue) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def _secret_ok(offered: Sequence[str], secret: bytes) -> bool:
    """Whether any offered string is the secret: constant-time comparison of equal-length digests,
    every candidate (no early exit)."""
    expected = hashlib.sha256(secret).digest()
    results = [hmac.compare_digest(hashlib.sha256(c.encode()).digest(), expected) for c in offered]
    return any(results)
