"""`emostream serve --cluster ray`: start (or join) Ray, deploy the application, serve until a signal.

Without `--ray-address` a local Ray instance is started on this machine (the embedded default for
trying it); with one (`ray start --head` printed it, or `auto`) the application goes onto that
cluster. The HTTP proxy listens on `--host`/`--port` and has no request timeout (a websocket
session lasts as long as it is used).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import replace
from typing import Any

from emostream.realtime.calls import KINDS, used
from emostream.realtime.cluster.config import ClusterConfig

logger = logging.getLogger(__name__)

APP_NAME = "emostream"
SPREAD_ENV = "RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def build_application(pipeline_config: Any, server_options: dict[str, Any], cluster: ClusterConfig,
                      idle_timeout_s: float, modalities: tuple[str, ...]) -> Any:
    """The bound application: a model deployment per kind the configuration uses, and the ingress."""
    from emostream.realtime.cluster.ingress import ingress_deployment
    from emostream.realtime.cluster.models import model_deployment

    handles = {kind: model_deployment(kind, pipeline_config, cluster.models[kind])
               for kind in KINDS if used(kind, pipeline_config, modalities)}
    return ingress_deployment(pipeline_config, server_options, cluster, APP_NAME, handles, idle_timeout_s)


def deploy(pipeline_config: Any, server_options: dict[str, Any], cluster: ClusterConfig, *,
           ray_address: str | None, idle_timeout_s: float = 60.0, tls: tuple[str, str] | None = None,
           ray_init: dict[str, Any] | None = None) -> str:
    """Start or join Ray, start Serve's proxy on the server's host and port, deploy, and return the
    URL (blocking until every replica is up)."""
    import ray
    from ray import serve

    from emostream.model.checkpoint import load_checkpoint

    host = server_options.get("host") or "0.0.0.0"
    port = int(server_options.get("port") or 0) or free_port(host)
    server_options = {**server_options, "port": port}
    if cluster.proxy_location == "HeadOnly":
        # One proxy: by default it routes every new websocket to the ingress replica on its own node
        # until that one is full; spread them over the nodes instead. (Read by the proxy's process:
        # this reaches a Ray started here; on `ray start`, set it in that command's environment.)
        os.environ.setdefault(SPREAD_ENV, "0")
    if not ray.is_initialized():
        ray.init(address=ray_address or "local", include_dashboard=False, logging_level=logging.WARNING,
                 **(ray_init or {}))
    http: dict[str, Any] = {"host": host, "port": port, "request_timeout_s": None}
    if tls is not None:
        http.update(ssl_certfile=tls[0], ssl_keyfile=tls[1])
    serve.start(http_options=http, proxy_location=cluster.proxy_location)
    modalities = tuple(load_checkpoint(pipeline_config.checkpoint).modalities)
    serve.run(build_application(pipeline_config, server_options, cluster, idle_timeout_s, modalities),
              name=APP_NAME, route_prefix="/")
    shown = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{shown}:{port}/"


def shutdown() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def serve_cluster(args: Any, pipeline_config: Any, prog: str) -> int:
    """The `serve --cluster ray` command, after its arguments were checked."""
    try:
        cluster = ClusterConfig.load(args.cluster_config)
    except (OSError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if args.max_sessions_given:
        cluster = replace(cluster, ingress=replace(cluster.ingress, sessions_per_replica=args.max_sessions))
    server_options = {"host": args.host, "port": args.port, "token": args.token, "origins": list(args.allow_origin),
                      "web_root": args.web_root, "operator_token": args.operator_token}
    tls = (str(args.tls_cert), str(args.tls_key)) if args.tls_cert is not None else None
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        url = deploy(pipeline_config, server_options, cluster, ray_address=args.ray_address,
                     idle_timeout_s=args.idle_timeout, tls=tls)
    except Exception as exc:  # noqa: BLE001 - a clear message instead of a traceback
        logger.debug("deploying on Ray failed", exc_info=True)
        print(f"{prog}: error: could not deploy on Ray: {exc}", file=sys.stderr)
        shutdown()
        return 1
    print(f"serving {url}", flush=True)
    try:
        stop.wait()
    finally:
        shutdown()
    return 0
