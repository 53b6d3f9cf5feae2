"""HTTP side of the one port: static files of the browser client, security headers, helpers.

Pure functions and constants (no sockets): `transport.ws.Server` answers plain HTTP requests
(`/`, the client's files, `/healthz`) with them before any websocket handshake.
"""

from __future__ import annotations

import email.utils
import http
import importlib.metadata
import ipaddress
import mimetypes
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.http11 import Response

from emostream.realtime import resources

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


def server_version() -> str:
    try:
        return importlib.metadata.version("emostream")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def default_web_root() -> Path:
    """The browser client shipped with the package (demo/web; see `emostream.realtime.resources`)."""
    return resources.web_root()


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
