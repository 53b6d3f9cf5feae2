"""Websocket protocol v1 between the realtime server and its clients (see docs/protocol.md).

Every message is one JSON object in a text frame, with a `type` and the protocol version `v`.
This module is pure: builders return plain dicts, `encode` turns one into the wire text,
`parse_client_message` checks a client's text and returns a typed message or raises
`ProtocolError`. `SCHEMAS` holds a JSON Schema (Draft 2020-12) for every message type.

Versioning: `v` is the major version. Adding an optional field or a new message type keeps
`v`; clients must ignore fields and server message types they do not know. Removing or renaming
a field, or changing its meaning or type, bumps `v`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

VERSION = 1
"""Protocol (major) version carried in every message's `v`."""

SERVER_TYPES: tuple[str, ...] = (
    "hello", "utterance", "transcript", "prediction", "face", "metrics", "status", "error", "pong",
)
CLIENT_TYPES: tuple[str, ...] = ("reset", "config", "ping")
ERROR_CODES: tuple[str, ...] = (
    "bad_json",  # not JSON, or not a JSON object
    "bad_message",  # a known type with missing, extra or ill-typed fields
    "bad_version",  # `v` is not a version this server speaks
    "unknown_type",  # `type` is not a client message type
    "too_big",  # the message is over the server's size limit
    "binary",  # a binary frame from a watching connection (only capturing clients send media)
    "bad_frame",  # a binary media frame with a bad header, kind, rate or size (dropped; the session goes on)
    "too_fast",  # a capturing client sends audio faster than real time (the excess is dropped)
    "busy",  # the server has as many capturing sessions as it admits (--max-sessions)
    "forbidden",  # e.g. resetting the shared session without the operator's token
    "internal",  # the server failed handling an otherwise valid message
)
STATUS_LEVELS: tuple[str, ...] = ("info", "warning", "error")
END_REASONS: tuple[str, ...] = ("silence", "turn_complete", "speaker_change", "max_length")
"""Why an utterance ended (optional `end_reason` of a final prediction and of `utterance` end events):
a long pause, a pause after a turn the end-of-turn model judged complete, another voice taking over
inside speech, or the length cap."""

JsonDict = dict[str, Any]


class ProtocolError(ValueError):
    """A client message that the server cannot accept. `code` is one of ERROR_CODES."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------
# Client -> server messages


@dataclass(frozen=True, slots=True)
class Reset:
    """Forget the dialogue so far (the pipeline restarts its dialogue state)."""

    type: Literal["reset"] = "reset"


@dataclass(frozen=True, slots=True)
class Config:
    """Per-client options. A field left as None is not changed."""

    interim: bool | None = None  # receive interim predictions (default true)
    type: Literal["config"] = "config"


@dataclass(frozen=True, slots=True)
class Ping:
    """Liveness/latency probe; the server answers `pong` echoing `id`."""

    id: str | int | None = None
    type: Literal["ping"] = "ping"


ClientMessage = Reset | Config | Ping

_CONFIG_OPTIONS: dict[str, type] = {"interim": bool}


def _show(value: Any, limit: int = 64) -> str:
    """A client's value for an error message: ASCII (no lone surrogates, which cannot go out as
    UTF-8), at most about `limit` characters (no echoing back of a 64 KiB string)."""
    try:
        text = ascii(value)
    except (RecursionError, ValueError):  # deeply nested; an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def _valid_unicode(text: str) -> bool:
    """False for a string with lone surrogates (JSON's "\\ud800" escapes): it has no UTF-8 form."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_fields(obj: Mapping[str, Any], allowed: Iterable[str], kind: str) -> None:
    extra = sorted(set(obj) - set(allowed) - {"type", "v"})
    if extra:
        shown = ", ".join(_show(k, 40) for k in extra[:5]) + (f" (+{len(extra) - 5} more)" if len(extra) > 5 else "")
        raise ProtocolError("bad_message", f"unknown field(s) in {kind!r}: {shown}")


def parse_client_message(text: str | bytes) -> ClientMessage:
    """Parse one client text frame; raise ProtocolError (with a code) when it is not acceptable."""
    if isinstance(text, (bytes, bytearray, memoryview)):
        raise ProtocolError("binary", "binary media frames come only from capturing clients (/ws?source=browser)")
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_json", f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", "a message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_message", "missing string field 'type'")
    if "v" not in obj:
        raise ProtocolError("bad_version", f"missing field 'v' (this server speaks v{VERSION})")
    version = obj["v"]
    if isinstance(version, bool) or version != VERSION:
        raise ProtocolError("bad_version", f"unsupported protocol version {_show(version)}; this server speaks v{VERSION}")
    if kind == "reset":
        _check_fields(obj, (), kind)
        return Reset()
    if kind == "ping":
        _check_fields(obj, ("id",), kind)
        ping_id = obj.get("id")
        if ping_id is not None and (isinstance(ping_id, bool) or not isinstance(ping_id, (str, int))):
            raise ProtocolError("bad_message", "'id' of ping must be a string or an integer")
        if isinstance(ping_id, str) and len(ping_id) > 128:
            raise ProtocolError("bad_message", "'id' of ping must be at most 128 characters")
        if isinstance(ping_id, str) and not _valid_unicode(ping_id):  # the pong could not echo it
            raise ProtocolError("bad_message", "'id' of ping must be valid Unicode (no lone surrogates)")
        return Ping(id=ping_id)
    if kind == "config":
        _check_fields(obj, _CONFIG_OPTIONS, kind)
        options = {k: obj[k] for k in _CONFIG_OPTIONS if k in obj}
        if not options:
            raise ProtocolError("bad_message", f"config needs at least one of: {', '.join(_CONFIG_OPTIONS)}")
        for key, value in options.items():
            if not isinstance(value, _CONFIG_OPTIONS[key]):
                raise ProtocolError("bad_message", f"config option {key!r} must be a {_CONFIG_OPTIONS[key].__name__}")
        return Config(**options)
    if kind in SERVER_TYPES:
        raise ProtocolError("unknown_type", f"{kind!r} is a server message; clients may send: {', '.join(CLIENT_TYPES)}")
    raise ProtocolError("unknown_type", f"unknown message type {_show(kind)}; clients may send: {', '.join(CLIENT_TYPES)}")


def reset() -> JsonDict:
    return {"type": "reset", "v": VERSION}


def config(*, interim: bool | None = None) -> JsonDict:
    msg: JsonDict = {"type": "config", "v": VERSION}
    if interim is not None:
        msg["interim"] = bool(interim)
    return msg


def ping(id: str | int | None = None) -> JsonDict:
    msg: JsonDict = {"type": "ping", "v": VERSION}
    if id is not None:
        msg["id"] = id
    return msg


def client_message_to_dict(message: ClientMessage) -> JsonDict:
    """The wire form of a parsed client message (inverse of parse_client_message)."""
    if isinstance(message, Reset):
        return reset()
    if isinstance(message, Config):
        return config(interim=message.interim)
    return ping(message.id)


# ---------------------------------------------------------------------------------------------
# Server -> client messages


def _num(value: float, name: str) -> float:
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return out


def _ms(value: float | None, name: str) -> float | None:
    return None if value is None else round(_num(value, name), 3)


def _prob(value: float, name: str) -> float:
    out = _num(value, name)
    if not -1e-6 <= out <= 1 + 1e-6:
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return round(min(max(out, 0.0), 1.0), 6)


def _speaker(value: int | str) -> int | str:
    return value if isinstance(value, str) else _uid(value)


def _uid(value: int | str) -> int | str:
    if isinstance(value, bool):
        raise TypeError("utterance_id must be an int or a str, got bool")
    if not isinstance(value, (int, str)):
        # numpy integers and the like
        try:
            return int(value)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise TypeError(f"utterance_id must be an int or a str, got {type(value).__name__}") from None
    return value


def hello(
    *,
    labels: Iterable[str],
    model: str,
    modalities: Iterable[str],
    audio_hz: int = 16000,
    video_fps: float | None = None,
    session: str | None = None,
    server_version: str | None = None,
    client: str | None = None,
    interim: bool = True,
    live_modalities: Iterable[str] | None = None,
    experts: Mapping[str, str | None] | None = None,
    fusion: Mapping[str, Any] | None = None,
    capture: Mapping[str, Any] | None = None,
) -> JsonDict:
    """First message on every connection: what this server recognises and how.

    The server fills in `session`, `server_version`, `client` and `interim` when it sends it, so a
    pipeline only needs labels, model, modalities and rates. `modalities` are the checkpoint's;
    `live_modalities` the per-modality distributions that predictions carry (e.g. text, face);
    `experts` the pretrained models in use (face expression, speaker tracking); `fusion` the rule
    that combines them into `probs`.
    """
    msg: JsonDict = {
        "type": "hello",
        "v": VERSION,
        "labels": list(labels),
        "model": model,
        "modalities": list(modalities),
        "sample_rates": {"audio_hz": int(audio_hz), "video_fps": None if video_fps is None else _num(video_fps, "video_fps")},
        "interim": bool(interim),
    }
    if not msg["labels"]:
        raise ValueError("hello needs at least one label")
    if live_modalities is not None:
        msg["live_modalities"] = [str(m) for m in live_modalities]
    if experts is not None:
        msg["experts"] = {str(k): (None if v is None else str(v)) for k, v in experts.items()}
    if fusion is not None:
        msg["fusion"] = dict(fusion)
    if capture is not None:
        msg["capture"] = dict(capture)
    if session is not None:
        msg["session"] = session
    if server_version is not None:
        msg["server_version"] = server_version
    if client is not None:
        msg["client"] = client
    return msg


def _turn_end(end_reason: str | None, overlap: bool | None) -> JsonDict:
    """The optional end-of-turn fields (absent when None)."""
    out: JsonDict = {}
    if end_reason is not None:
        if end_reason not in END_REASONS:
            raise ValueError(f"end_reason must be one of {END_REASONS}, got {end_reason!r}")
        out["end_reason"] = end_reason
    if overlap is not None:
        out["overlap"] = bool(overlap)
    return out


def utterance(
    *, event: Literal["start", "end"], utterance_id: int | str, speaker: int | str, t_ms: float,
    end_reason: str | None = None, overlap: bool | None = None,
) -> JsonDict:
    """Voice activity: an utterance started or ended at `t_ms` (stream time). An end may say why it
    ended (`end_reason`, one of END_REASONS) and whether another voice was heard during it (`overlap`)."""
    if event not in ("start", "end"):
        raise ValueError(f"event must be 'start' or 'end', got {event!r}")
    return {
        "type": "utterance",
        "v": VERSION,
        "event": event,
        "utterance_id": _uid(utterance_id),
        "speaker": _speaker(speaker),
        "t_ms": _ms(t_ms, "t_ms"),
        **_turn_end(end_reason, overlap),
    }


def transcript(
    *, utterance_id: int | str, speaker: int | str, text: str, language: str | None = None
) -> JsonDict:
    msg: JsonDict = {
        "type": "transcript",
        "v": VERSION,
        "utterance_id": _uid(utterance_id),
        "speaker": _speaker(speaker),
        "text": str(text),
    }
    if language is not None:
        msg["language"] = str(language)
    return msg


def prediction(
    *,
    final: bool,
    utterance_id: int | str,
    speaker: int | str,
    text: str,
    probs: Mapping[str, float],
    t_start_ms: float,
    t_end_ms: float,
    latency_ms: float | None = None,
    label: str | None = None,
    confidence: float | None = None,
    flags: Iterable[str] = (),
    timings_ms: Mapping[str, float] | None = None,
    modalities: Mapping[str, Mapping[str, float] | None] | None = None,
    end_reason: str | None = None,
    overlap: bool | None = None,
) -> JsonDict:
    """An interim (`final=False`, while the utterance goes on) or final emotion prediction.

    A final may say why its utterance ended (`end_reason`, one of END_REASONS) and whether another
    voice was heard during it (`overlap`: the utterance went to its dominant speaker).

    `label` defaults to the arg-max of `probs` and `confidence` to its probability. `probs` is the
    fused distribution; `modalities` (optional) holds each modality's own distribution over the
    same labels, or None where that modality saw nothing (e.g. no face during the utterance).
    """
    clean = {str(k): _prob(p, f"probs[{k!r}]") for k, p in probs.items()}
    if not clean:
        raise ValueError("probs must not be empty")
    if label is None:
        label = max(clean, key=clean.__getitem__)
    if label not in clean:
        raise ValueError(f"label {label!r} is not one of the probs' labels")
    conf = clean[label] if confidence is None else _prob(confidence, "confidence")
    return {
        "type": "prediction",
        "v": VERSION,
        "final": bool(final),
        "utterance_id": _uid(utterance_id),
        "speaker": _speaker(speaker),
        "text": str(text),
        "label": label,
        "confidence": conf,
        "probs": clean,
        "t_start_ms": _ms(t_start_ms, "t_start_ms"),
        "t_end_ms": _ms(t_end_ms, "t_end_ms"),
        "latency_ms": _ms(latency_ms, "latency_ms"),
        "flags": [str(f) for f in flags],
        **({"timings_ms": {str(k): round(_num(v, k), 3) for k, v in timings_ms.items()}} if timings_ms else {}),
        **({"modalities": {str(m): _distribution(d, clean, m) for m, d in modalities.items()}}
           if modalities is not None else {}),
        **_turn_end(end_reason, overlap),
    }


def _distribution(probs: Mapping[str, float] | None, like: Mapping[str, float], name: str) -> JsonDict | None:
    """A per-modality distribution over the same labels as `like`, or None."""
    if probs is None:
        return None
    out = {str(k): _prob(p, f"modalities[{name!r}][{k!r}]") for k, p in probs.items()}
    if set(out) != set(like):
        raise ValueError(f"modalities[{name!r}] must have the labels of probs, got {sorted(out)}")
    return out


def face(
    *,
    t_ms: float,
    probs: Mapping[str, float] | None,
    box: Iterable[int] | None = None,
    frame_size: Iterable[int] | None = None,
    n_faces: int = 0,
) -> JsonDict:
    """The live facial expression (rate limited, a few a second): between utterances too.

    `probs` is the face expert's distribution over the checkpoint's labels, None when no face is in
    view; `box` the face's [x, y, w, h] in pixels of a frame of `frame_size` [w, h].
    """
    clean = None if probs is None else {str(k): _prob(p, f"probs[{k!r}]") for k, p in probs.items()}
    label = max(clean, key=clean.__getitem__) if clean else None
    return {
        "type": "face",
        "v": VERSION,
        "t_ms": _ms(t_ms, "t_ms"),
        "present": clean is not None,
        "label": label,
        "confidence": None if label is None else clean[label],  # type: ignore[index]
        "probs": clean,
        "box": None if box is None else [int(v) for v in box],
        "frame_size": None if frame_size is None else [int(v) for v in frame_size],
        "n_faces": int(n_faces),
    }


def prediction_from(pred: Any, *, t0_ns: int, now_ns: int | None = None, end_reason: str | None = None,
                    overlap: bool | None = None) -> JsonDict:
    """Message for an `emostream.realtime.types.Prediction` (duck-typed: no import here).

    Times become milliseconds since `t0_ns` (the stream start, monotonic clock); `latency_ms` is
    `now_ns - pred.t_end_ns` when `now_ns` is given (the time the prediction is published).
    """
    latency = None if now_ns is None else (now_ns - pred.t_end_ns) / 1e6
    return prediction(
        final=pred.final,
        utterance_id=pred.utterance_id,
        speaker=pred.speaker,
        text=pred.text,
        probs=pred.probs,
        label=pred.label,
        t_start_ms=(pred.t_start_ns - t0_ns) / 1e6,
        t_end_ms=(pred.t_end_ns - t0_ns) / 1e6,
        latency_ms=latency,
        flags=pred.flags,
        timings_ms=pred.timings_ms,
        modalities=getattr(pred, "modalities", None),
        end_reason=end_reason,
        overlap=overlap,
    )


def metrics(
    *,
    queues: Mapping[str, int] | None = None,
    drops: Mapping[str, int] | None = None,
    timings_ms: Mapping[str, float] | None = None,
    rtf: float | None = None,
    t_ms: float | None = None,
    clients: int | None = None,
) -> JsonDict:
    """Pipeline health. The server adds `drops.client` (this client's dropped messages) and `clients`."""
    msg: JsonDict = {
        "type": "metrics",
        "v": VERSION,
        "queues": {str(k): int(v) for k, v in (queues or {}).items()},
        "drops": {str(k): int(v) for k, v in (drops or {}).items()},
        "timings_ms": {str(k): round(_num(v, f"timings_ms[{k!r}]"), 3) for k, v in (timings_ms or {}).items()},
        "rtf": None if rtf is None else round(_num(rtf, "rtf"), 4),
    }
    if t_ms is not None:
        msg["t_ms"] = _ms(t_ms, "t_ms")
    if clients is not None:
        msg["clients"] = int(clients)
    return msg


def status(
    *,
    code: str,
    message: str,
    level: Literal["info", "warning", "error"] = "info",
    modalities: Iterable[str] | None = None,
) -> JsonDict:
    """A change of state, e.g. code='camera_missing', level='warning', modalities=['text', 'audio']."""
    if level not in STATUS_LEVELS:
        raise ValueError(f"level must be one of {STATUS_LEVELS}, got {level!r}")
    msg: JsonDict = {"type": "status", "v": VERSION, "code": str(code), "level": level, "message": str(message)}
    if modalities is not None:
        msg["modalities"] = list(modalities)
    return msg


def error(code: str, message: str) -> JsonDict:
    if code not in ERROR_CODES:
        raise ValueError(f"unknown error code {code!r}; known: {ERROR_CODES}")
    return {"type": "error", "v": VERSION, "code": code, "message": str(message)}


def error_from(exc: ProtocolError) -> JsonDict:
    return error(exc.code, exc.message)


def pong(id: str | int | None = None, *, t_ms: float | None = None) -> JsonDict:
    msg: JsonDict = {"type": "pong", "v": VERSION, "id": id}
    if t_ms is not None:
        msg["t_ms"] = _ms(t_ms, "t_ms")
    return msg


def encode(msg: Mapping[str, Any]) -> str:
    """Wire text of one message: compact JSON, UTF-8 kept as is, no NaN/Infinity (not JSON)."""
    if msg.get("type") not in SERVER_TYPES + CLIENT_TYPES or msg.get("v") != VERSION:
        raise ValueError(f"not a protocol v{VERSION} message: type={msg.get('type')!r} v={msg.get('v')!r}")
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# ---------------------------------------------------------------------------------------------
# JSON Schemas

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_ID_BASE = "urn:emostream:protocol:v1"

_STR = {"type": "string"}
_NUM = {"type": "number"}
_MS = {"type": "number", "description": "milliseconds"}
_UID = {"type": ["integer", "string"], "description": "utterance id, unique within a session"}
_SPEAKER = {"type": ["integer", "string"], "description": "speaker: a party slot number or a name"}
_NAME_INT = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
_NAME_NUM = {"type": "object", "additionalProperties": {"type": "number"}}
_PROBS = {"type": "object", "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1}, "minProperties": 1}
_BOX = {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 4, "maxItems": 4}
_END_REASON = {"enum": list(END_REASONS),
               "description": "optional (finals, end events): why the utterance ended: silence (a long pause), "
                              "turn_complete (a pause after a turn judged complete), speaker_change (another "
                              "voice took over inside speech), max_length (the length cap)"}
_OVERLAP = {"type": "boolean",
            "description": "optional (finals, end events): another voice was heard during the utterance; it went "
                           "to its dominant speaker"}


def _schema(kind: str, description: str, props: dict[str, Any], required: Iterable[str]) -> JsonDict:
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"{SCHEMA_ID_BASE}:{kind}",
        "title": kind,
        "description": description,
        "type": "object",
        "properties": {"type": {"const": kind}, "v": {"const": VERSION}, **props},
        "required": ["type", "v", *required],
        "additionalProperties": False,
    }


SCHEMAS: dict[str, JsonDict] = {
    # server -> client
    "hello": _schema(
        "hello",
        "Server -> client, first message of every connection.",
        {
            "session": {**_STR, "description": "id of the server's session (changes on restart)"},
            "client": {**_STR, "description": "id the server gave this connection"},
            "labels": {"type": "array", "items": _STR, "minItems": 1, "uniqueItems": True},
            "model": _STR,
            "modalities": {"type": "array", "items": {"enum": ["text", "audio", "visual"]}, "uniqueItems": True},
            "sample_rates": {
                "type": "object",
                "properties": {"audio_hz": {"type": "integer", "minimum": 1}, "video_fps": {"type": ["number", "null"]}},
                "required": ["audio_hz", "video_fps"],
                "additionalProperties": False,
            },
            "server_version": _STR,
            "interim": {"type": "boolean", "description": "whether this client receives interim predictions"},
            "live_modalities": {"type": "array", "items": _STR, "uniqueItems": True,
                                "description": "optional: the per-modality distributions predictions carry"},
            "experts": {"type": "object", "additionalProperties": {"type": ["string", "null"]},
                        "description": "optional: pretrained experts in use, e.g. face, speaker"},
            "fusion": {"type": "object", "description": "optional: how `probs` combines the modalities"},
            "capture": {"type": "object", "description": "optional: this connection captures; the media frame limits"},
        },
        ["session", "labels", "model", "modalities", "sample_rates", "server_version"],
    ),
    "utterance": _schema(
        "utterance",
        "Server -> client: an utterance started or ended (voice activity).",
        {"event": {"enum": ["start", "end"]}, "utterance_id": _UID, "speaker": _SPEAKER, "t_ms": _MS,
         "end_reason": _END_REASON, "overlap": _OVERLAP},
        ["event", "utterance_id", "speaker", "t_ms"],
    ),
    "transcript": _schema(
        "transcript",
        "Server -> client: the recognised text of an utterance.",
        {"utterance_id": _UID, "speaker": _SPEAKER, "text": _STR, "language": _STR},
        ["utterance_id", "speaker", "text"],
    ),
    "prediction": _schema(
        "prediction",
        "Server -> client: interim (final=false) or final emotion prediction for an utterance.",
        {
            "final": {"type": "boolean"},
            "utterance_id": _UID,
            "speaker": _SPEAKER,
            "text": _STR,
            "label": _STR,
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "probs": _PROBS,
            "t_start_ms": _MS,
            "t_end_ms": _MS,
            "latency_ms": {"type": ["number", "null"], "description": "end of audio -> prediction sent, ms"},
            "flags": {"type": "array", "items": _STR},
            "timings_ms": {**_NAME_NUM, "description": "optional: per-stage milliseconds of this prediction"},
            "modalities": {
                "type": "object",
                "description": "optional: each modality's own distribution over the labels, null if it saw nothing",
                "additionalProperties": {"oneOf": [_PROBS, {"type": "null"}]},
            },
            "end_reason": _END_REASON,
            "overlap": _OVERLAP,
        },
        ["final", "utterance_id", "speaker", "text", "label", "confidence", "probs", "t_start_ms", "t_end_ms",
         "latency_ms", "flags"],
    ),
    "face": _schema(
        "face",
        "Server -> client: the live facial expression, a few times a second (rate limited).",
        {
            "t_ms": _MS,
            "present": {"type": "boolean"},
            "label": {"type": ["string", "null"]},
            "confidence": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
            "probs": {"oneOf": [_PROBS, {"type": "null"}]},
            "box": {**_BOX, "description": "[x, y, w, h] of the face in pixels"},
            "frame_size": {"type": ["array", "null"], "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
            "n_faces": {"type": "integer", "minimum": 0},
        },
        ["t_ms", "present", "label", "probs"],
    ),
    "metrics": _schema(
        "metrics",
        "Server -> client: pipeline health; drops.client counts this client's dropped messages.",
        {
            "t_ms": _MS,
            "queues": _NAME_INT,
            "drops": _NAME_INT,
            "timings_ms": _NAME_NUM,
            "rtf": {"type": ["number", "null"], "description": "processing time / media time"},
            "clients": {"type": "integer", "minimum": 0},
        },
        ["queues", "drops", "timings_ms", "rtf"],
    ),
    "status": _schema(
        "status",
        "Server -> client: a change of state (e.g. camera missing -> audio-only).",
        {
            "code": _STR,
            "level": {"enum": list(STATUS_LEVELS)},
            "message": _STR,
            "modalities": {"type": "array", "items": {"enum": ["text", "audio", "visual"]}, "uniqueItems": True},
        },
        ["code", "level", "message"],
    ),
    "error": _schema(
        "error",
        "Server -> client: the client's last message was refused; the connection stays open.",
        {"code": {"enum": list(ERROR_CODES)}, "message": _STR},
        ["code", "message"],
    ),
    "pong": _schema(
        "pong",
        "Server -> client: answer to ping, echoing its id.",
        {"id": {"type": ["string", "integer", "null"]}, "t_ms": _MS},
        ["id"],
    ),
    # client -> server
    "reset": _schema("reset", "Client -> server: forget the dialogue so far.", {}, []),
    "config": _schema(
        "config",
        "Client -> server: per-client options (at least one).",
        {"interim": {"type": "boolean", "description": "receive interim predictions"}},
        [],
    ),
    "ping": _schema(
        "ping",
        "Client -> server: liveness probe, answered by pong.",
        {"id": {"type": ["string", "integer"], "maxLength": 128}},
        [],
    ),
}
SCHEMAS["config"]["minProperties"] = 3  # type, v and at least one option


def protocol_schema() -> JsonDict:
    """One schema document bundling every message: validates any server or client message."""
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": SCHEMA_ID_BASE,
        "title": f"emostream websocket protocol v{VERSION}",
        "description": "JSON text messages; see docs/protocol.md. `v` is the major version.",
        "oneOf": [{"$ref": "#/$defs/server_message"}, {"$ref": "#/$defs/client_message"}],
        "$defs": {
            "server_message": {"oneOf": [{"$ref": f"#/$defs/{k}"} for k in SERVER_TYPES]},
            "client_message": {"oneOf": [{"$ref": f"#/$defs/{k}"} for k in CLIENT_TYPES]},
            **{k: SCHEMAS[k] for k in SERVER_TYPES + CLIENT_TYPES},
        },
    }


def schema_json() -> str:
    return json.dumps(protocol_schema(), indent=2, sort_keys=False) + "\n"


def write_schema(path: str | Path = "docs/protocol.schema.json") -> Path:
    """Write the bundled JSON Schema (docs/protocol.schema.json in the repo)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(schema_json(), encoding="utf-8")
    return out


if __name__ == "__main__":  # python -m emostream.realtime.protocol [PATH]
    import sys

    write_schema(*(sys.argv[1:2] or []))
