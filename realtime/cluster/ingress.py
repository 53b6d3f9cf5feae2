"""The ingress deployment: a FastAPI app that serves the page, `/ws` and `/healthz` exactly as the
single-process server does, and holds its sessions (segmenter, turns, speakers, dialogue state)
on its own scheduler. Their models are model deployments, reached through `RayCall`s.

A websocket stays on the replica that accepted it for its whole life. The protocol is the
single-process server's own code (`Server.handle`), fed through `StarletteConnection`, which gives
a Starlette websocket the few methods of a `websockets` connection it uses. Every open websocket
holds one of the replica's `max_ongoing_requests` slots; the replica itself answers `busy` past
`sessions_per_replica`. When the application is deleted or the ingress redeployed, each replica
closes its sessions with 1001 (going away; it watches the application's status, since Ray tells a
replica nothing before draining it), and the page reconnects to a new session. A replica stopped
alone (a scale-down) waits up to `graceful_shutdown_s` for its open websockets, then they are cut
(1006) and the page reconnects. (`__del__` runs only after that wait.)
"""

# No `from __future__ import annotations` here: FastAPI reads the route parameters' annotations at
# run time (a string `WebSocket` would make it a query parameter, and every websocket a 1008).
import asyncio
import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from ray import serve
from websockets.exceptions import ConnectionClosed

from emostream.realtime.cluster.config import ClusterConfig
from emostream.realtime.cluster.models import RayCall

logger = logging.getLogger(__name__)

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


class StarletteConnection:
    """A Starlette websocket (accepted) as the `websockets` connection `Server.handle` expects."""

    def __init__(self, websocket: WebSocket, max_message_bytes: int) -> None:
        self._ws = websocket
        query = websocket.url.query
        self.request = SimpleNamespace(path=websocket.url.path + (f"?{query}" if query else ""),
                                       headers=websocket.headers)
        client = websocket.client
        self.remote_address = (client.host, client.port) if client is not None else None
        self.protocol = SimpleNamespace(max_message_size=max_message_bytes)
        self.transport = SimpleNamespace(abort=self._abort)
        self._closed = False

    async def recv(self) -> str | bytes:
        if self._closed:
            raise ConnectionClosed(None, None)
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            self._closed = True
            raise ConnectionClosed(None, None)
        data = message.get("text") if message.get("text") is not None else message.get("bytes") or b""
        if len(data) > self.protocol.max_message_size:  # what websockets' max_size does: close with 1009
            await self.close(1009, "message too big")
            raise ConnectionClosed(None, None)
        return data

    async def send(self, text: str) -> None:
        if self._closed:
            raise ConnectionClosed(None, None)
        try:
            await self._ws.send_text(text)
        except Exception as exc:  # noqa: BLE001 - the client went away (Starlette's own errors)
            self._closed = True
            raise ConnectionClosed(None, None) from exc

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._ws.close(code, reason)
        except Exception:  # noqa: BLE001 - already closed by the client
            logger.debug("closing a websocket that was gone", exc_info=True)

    def _abort(self) -> None:
        self._closed = True
        asyncio.get_running_loop().create_task(self._ws.close(1011, "not reading"))


def _value(x: Any) -> str:
    """An enum's value (Ray's statuses), or the thing itself, as text. (Defined above the deployment
    class: Ray serializes the class when it is decorated, with the globals known then.)"""
    return str(getattr(x, "value", x))


def _build_in_thread(fn: Any, *args: Any) -> Any:
    """Run `fn` in a plain thread (model handles must not be waited on from an event loop)."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=run, name="emostream-ingress-build")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(app)
class Ingress:
    def __init__(self, pipeline_config: Any, server_options: dict[str, Any], cluster: ClusterConfig,
                 app_name: str, handles: dict[str, Any], idle_timeout_s: float = 60.0) -> None:
        import ray

        from emostream.realtime.runtime import shared_models_from
        from emostream.realtime.scheduler import Scheduler
        from emostream.realtime.sessions import SessionManager
        from emostream.realtime.transport.ws import Server
        from emostream.realtime.worker import hello_of

        self.app_name = app_name
        self.node_id = ray.get_runtime_context().get_node_id()
        self.calls = {kind: RayCall(handle, kind, cluster.call_timeout_s) for kind, handle in handles.items()}
        shared = _build_in_thread(shared_models_from, pipeline_config, self.calls)
        self.server = Server(**server_options)
        self.server.session = f"{self.node_id[:8]}-{self.server.session[:8]}"  # which node holds the watchers
        parts = shared.dialogue_parts()
        self.server.set_hello(hello_of(parts["session"], pipeline_config, parts["speakers"].mode, shared.turn_model))
        self.scheduler = Scheduler(metrics_interval_s=pipeline_config.metrics_interval_s).start()
        self.manager = SessionManager(shared, pipeline_config, self.scheduler,
                                      max_sessions=cluster.ingress.sessions_per_replica,
                                      idle_timeout_s=idle_timeout_s, id_prefix=f"{self.node_id[:8]}-")
        self.server.capture = self.manager
        self.server.health_checks["scheduler"] = self.scheduler.health
        self.server.health_checks["models"] = lambda: (True, f"{shared.model.name} on model deployments "
                                                             f"{', '.join(sorted(self.calls))}")
        self._port = int(server_options.get("port", 0))
        self._stopping = threading.Event()
        threading.Thread(target=self._watch_application, name="emostream-ingress-watch", daemon=True).start()
        logger.info("ingress replica on node %s ready", self.node_id[:8])

    def _watch_application(self, every_s: float = 2.0) -> None:
        """Ray tells a replica nothing before it drains it, and a live websocket holds the drain
        until `graceful_shutdown_s` cuts it. So watch the application: when it is being deleted or
        the ingress redeployed, close every session with 1001 (the page reconnects at once)."""
        while not self._stopping.wait(every_s):
            try:
                app = serve.status().applications.get(self.app_name)
            except Exception:  # noqa: BLE001 - the controller restarting: look again later
                continue
            ingress = app.deployments.get("Ingress") if app is not None else None
            trigger = _value(getattr(ingress, "status_trigger", "")) if ingress is not None else ""
            if app is None or _value(app.status) == "DELETING" or trigger in ("CONFIG_UPDATE_STARTED", "DELETING"):
                from emostream.realtime.transport.ws import SERVER_STOPPING

                logger.info("the application is stopping or redeploying: closing %d session(s)",
                            len(self.manager.sessions()))
                self.manager.close_all(SERVER_STOPPING)

    def _host(self) -> None:
        """On the first request: the server serves through this replica's event loop."""
        if not self.server.running:
            self.server.host_on(asyncio.get_running_loop(), self._port)

    @app.websocket("/ws")
    async def websocket(self, websocket: WebSocket) -> None:
        self._host()
        refused = self.server.refusal(websocket, websocket.url.query)
        if refused is not None:  # closed before the handshake: the client sees HTTP 403
            await websocket.close(code=1008, reason=refused[1])
            return
        await websocket.accept()
        await self.server.handle(StarletteConnection(websocket, self.server.max_message_bytes))

    @app.get("/healthz")
    async def healthz(self) -> Response:
        self._host()
        health = self.server.health()
        health["cluster"] = await asyncio.to_thread(self.cluster_health)
        health["node"] = self.node_id
        if not health["cluster"]["ok"]:
            health["ok"] = False
            health["reason"] = "; ".join(filter(None, [health.get("reason"), health["cluster"]["reason"]]))
        return JSONResponse(health, status_code=200 if health["ok"] else 503)

    def cluster_health(self) -> dict[str, Any]:
        """Every deployment of the application: status, replicas, and the batch sizes its models reached."""
        try:
            status = serve.status().applications[self.app_name]
        except Exception as exc:  # noqa: BLE001 - the controller is unreachable
            return {"ok": False, "reason": f"cluster status unavailable: {exc}", "deployments": {}}
        deployments: dict[str, Any] = {}
        for name, dep in status.deployments.items():
            deployments[name] = {"status": _value(dep.status),
                                 "replicas": {_value(k): v for k, v in dep.replica_states.items()}}
            if name in self.calls:
                try:
                    deployments[name]["batches"] = self.calls[name].stats()["batches"]
                except Exception as exc:  # noqa: BLE001 - a replica restarting
                    deployments[name]["batches_error"] = str(exc)[:200]
        bad = [n for n, d in deployments.items() if d["status"] not in ("HEALTHY", "UPDATING")]
        return {"ok": not bad, "reason": f"deployment(s) {', '.join(bad)} unhealthy" if bad else "",
                "deployments": deployments, "checked_at": time.time()}

    @app.get("/{path:path}")
    async def static(self, path: str) -> Response:
        from emostream.realtime.transport.http import _PAGE_CSP, content_type, resolve_static

        try:
            found = resolve_static(self.server.web_root, "/" + path)
        except UnicodeDecodeError:
            found = None
        if found is None:
            return PlainTextResponse("not found", status_code=404)
        try:
            body = await asyncio.to_thread(found.read_bytes)
        except OSError:
            return PlainTextResponse("not found", status_code=404)
        headers = {"Content-Security-Policy": _PAGE_CSP} if found.suffix == ".html" else {}
        return Response(body, media_type=content_type(found), headers=headers)

    def __del__(self) -> None:
        """Ray stops this replica (scale-down, redeploy, shutdown), after its drain: close what is
        left (with 1001, which the page answers by reconnecting) and stop the scheduler."""
        from emostream.realtime.transport.ws import SERVER_STOPPING

        try:
            self._stopping.set()
            self.manager.close_all(SERVER_STOPPING)
            self.scheduler.close()
        except Exception:  # noqa: BLE001 - stopping anyway
            logger.exception("closing the sessions of a stopping replica failed")


def ingress_deployment(pipeline_config: Any, server_options: dict[str, Any], cluster: ClusterConfig,
                       app_name: str, handles: dict[str, Any], idle_timeout_s: float) -> Any:
    settings = cluster.ingress
    extra = {"max_replicas_per_node": 1} if settings.one_per_node else {}
    return Ingress.options(num_replicas=settings.replicas, max_ongoing_requests=settings.max_ongoing_requests(),
                           graceful_shutdown_timeout_s=settings.graceful_shutdown_s, **extra).bind(
        pipeline_config, server_options, cluster, app_name, handles, idle_timeout_s)
