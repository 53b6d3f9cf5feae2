"""Transcripts are personal data: the library's logs show what someone said only when the operator
opts in (`--log-transcripts`, for debugging); otherwise a log line says how long the text was.

This covers log lines only. The websocket sends transcripts to the connections that may see them
(docs/security.md), and `emostream run` prints them, because that is its output.
"""

from __future__ import annotations

_log_transcripts = False


def log_transcripts(enabled: bool) -> None:
    """Whether log lines may carry transcript text (process-wide; off by default)."""
    global _log_transcripts
    _log_transcripts = bool(enabled)


def shown(text: str) -> str:
    """`text` as a log line may show it: quoted when opted in, else only its length."""
    return repr(text) if _log_transcripts else f"<{len(text)} characters>"
