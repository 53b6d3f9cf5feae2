"""Where the files emostream ships beside its code are: the browser client and the bundled sample.

They live in `demo/` (`demo/web/`, `demo/media/sample.mp4` + `sample.json`), which is the package
`emostream.demo` (pyproject.toml maps it and lists them as package data). The layout relative to
this module is the same in a source checkout (`realtime/` and `demo/` side by side) and in an
installed wheel (`emostream/realtime/` and `emostream/demo/`), so one lookup serves both, and an
editable install needs no reinstall to find them.
"""

from __future__ import annotations

from pathlib import Path

_DEMO = Path(__file__).resolve().parent.parent / "demo"


def web_root() -> Path:
    """The folder of the browser client (index.html, app.js, ...): the server's default `--web-root`."""
    return _DEMO / "web"


def sample_media() -> Path:
    """The bundled sample dialogue `sample.mp4` (its script, `sample.json`, lies beside it)."""
    return _DEMO / "media" / "sample.mp4"
