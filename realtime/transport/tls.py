"""TLS for the one port: https and wss with a certificate and key (PEM files).

Browsers grant `getUserMedia` only in a secure context: https, or http on localhost. To capture
from another machine on a LAN, serve with a certificate (a self-signed one is enough; see the
README) and open https://HOST:PORT/.
"""

from __future__ import annotations

import ssl
from pathlib import Path


class TlsConfigError(ValueError):
    """The certificate or key cannot be used; the message says why."""


def server_context(cert: str | Path, key: str | Path) -> ssl.SSLContext:
    """A server-side TLS context (TLS 1.2+) from PEM files, or TlsConfigError."""
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise TlsConfigError(f"TLS {what} file not found: {path}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"cannot load the TLS certificate {cert} with key {key}: {exc}") from exc
    return ctx
