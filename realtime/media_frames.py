"""Binary media frames from a capturing browser client (docs/protocol.md, "Binary media frames").

Every binary websocket message from a capturing connection is one frame: a 20-byte little-endian
header, then the payload.

    offset size field
    0      2    magic, ASCII "EM"
    2      1    u8 format version (1)
    3      1    u8 kind: 1 = audio (PCM s16le mono), 2 = video (JPEG)
    4      4    u32 seq: per kind, 0, 1, 2, ...
    8      8    f64 t_ms: capture time, ms on the client's monotonic clock (audio: of the first sample)
    16     4    audio: u32 sample rate (16000); video: u16 width, u16 height
    20     n    audio: 1..8000 int16 samples; video: one JPEG (FF D8 FF ...), at most 256 KiB

This module does no I/O: `parse_frame` checks one message and returns an `AudioFrame` or a
`VideoFrameData`, or raises `FrameError` (code "bad_frame", the server's error code); `encode_audio`
and `encode_video` build frames (tests, benchmarks/sessions.py); `SequenceTracker` counts lost,
reordered and duplicate frames of one kind; `decode_jpeg` turns a video frame into a BGR image.
"""

from __future__ import annotations

import logging
import math
import struct
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

HEADER_SIZE = 20
MAGIC = b"EM"
FORMAT_VERSION = 1
KIND_AUDIO = 1
KIND_VIDEO = 2
KIND_NAMES: dict[int, str] = {KIND_AUDIO: "audio", KIND_VIDEO: "video"}

AUDIO_RATE = 16_000
"""The only sample rate a capturing client may send (what the segmenter and ASR expect)."""
MAX_AUDIO_SAMPLES = 8_000
"""At most 0.5 s of audio in one frame."""
MAX_VIDEO_BYTES = 262_144
"""At most 256 KiB of JPEG in one frame."""
MIN_WIDTH = MIN_HEIGHT = 16
MAX_WIDTH = 1280
MAX_HEIGHT = 720
MAX_SEQ = 2**32 - 1
MAX_ABS_T_MS = float(2**53)
"""|t_ms| at most this (ms; about 285,000 years, the integers a double counts exactly): a session
subtracts and scales capture times, which overflow for timestamps near the double's limit."""
MAX_FRAME_BYTES = HEADER_SIZE + max(2 * MAX_AUDIO_SAMPLES, MAX_VIDEO_BYTES)
"""The largest valid frame (header + the largest payload): the websocket's message size limit
for a capturing connection must be at least this."""

JPEG_SOI = b"\xff\xd8\xff"

# magic, version, kind, seq, t_ms | audio: rate | video: width, height
_PREFIX = struct.Struct("<2sBBId")  # 16 bytes
_AUDIO_HEADER = struct.Struct("<2sBBIdI")  # 20 bytes
_VIDEO_HEADER = struct.Struct("<2sBBIdHH")  # 20 bytes
assert _AUDIO_HEADER.size == _VIDEO_HEADER.size == HEADER_SIZE


class FrameError(ValueError):
    """A binary frame the server cannot accept. `code` is the protocol error code ("bad_frame")."""

    def __init__(self, message: str, code: str = "bad_frame") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True, eq=False)
class AudioFrame:
    """One block of captured audio. samples: (n,) int16, mono, 16 kHz, read-only; 1 <= n <= 8000.

    t_ms: capture time of samples[0], ms on the client's monotonic clock.
    """

    seq: int
    t_ms: float
    samples: np.ndarray

    @property
    def duration_ms(self) -> float:
        return 1000.0 * int(self.samples.shape[0]) / AUDIO_RATE


@dataclass(frozen=True, slots=True, eq=False)
class VideoFrameData:
    """One captured camera frame, still JPEG-encoded (decode with `decode_jpeg`).

    width, height: the size the client says the image has (checked again on decoding).
    """

    seq: int
    t_ms: float
    width: int
    height: int
    jpeg: bytes


MediaFrame = AudioFrame | VideoFrameData


def _check_dims(width: int, height: int) -> None:
    if not (MIN_WIDTH <= width <= MAX_WIDTH and MIN_HEIGHT <= height <= MAX_HEIGHT):
        raise FrameError(
            f"bad video dimensions {width}x{height}: width must be {MIN_WIDTH}..{MAX_WIDTH} "
            f"and height {MIN_HEIGHT}..{MAX_HEIGHT}"
        )


def _check_jpeg(payload: bytes | memoryview) -> None:
    n = len(payload)
    if n > MAX_VIDEO_BYTES:
        raise FrameError(f"video payload too large: {n} bytes (at most {MAX_VIDEO_BYTES})")
    if bytes(payload[:3]) != JPEG_SOI:
        raise FrameError(f"video payload is not a JPEG: it must start with FF D8 FF ({n} bytes)")


def parse_frame(data: bytes | bytearray | memoryview) -> MediaFrame:
    """Check one binary websocket message and return its frame; raise FrameError when it is bad."""
    view = memoryview(data).cast("B")
    if len(view) < HEADER_SIZE:
        raise FrameError(f"frame too short: {len(view)} bytes, the header alone is {HEADER_SIZE}")
    magic, version, kind, seq, t_ms = _PREFIX.unpack_from(view)
    if magic != MAGIC:
        raise FrameError(f"bad magic {bytes(magic)!r}: a media frame starts with {MAGIC!r}")
    if version != FORMAT_VERSION:
        raise FrameError(f"unknown frame format version {version}; this server reads version {FORMAT_VERSION}")
    if kind not in KIND_NAMES:
        raise FrameError(f"unknown frame kind {kind}: 1 is audio, 2 is video")
    if not math.isfinite(t_ms):
        raise FrameError(f"non-finite t_ms {t_ms!r} in {KIND_NAMES[kind]} frame {seq}")
    if abs(t_ms) > MAX_ABS_T_MS:
        raise FrameError(f"t_ms {t_ms!r} out of range in {KIND_NAMES[kind]} frame {seq}: |t_ms| <= 2**53")
    payload = view[HEADER_SIZE:]
    n = len(payload)
    if kind == KIND_AUDIO:
        rate = _AUDIO_HEADER.unpack_from(view)[5]
        if rate != AUDIO_RATE:
            raise FrameError(f"wrong audio sample rate {rate} Hz: send {AUDIO_RATE} Hz mono int16")
        if n == 0:
            raise FrameError("empty audio payload: a frame carries 1 or more samples")
        if n % 2:
            raise FrameError(f"odd audio payload of {n} bytes: int16 samples take 2 bytes each")
        if n > 2 * MAX_AUDIO_SAMPLES:
            raise FrameError(f"audio payload too large: {n // 2} samples (at most {MAX_AUDIO_SAMPLES}, 0.5 s)")
        samples = np.frombuffer(payload, dtype="<i2").astype(np.int16)  # (n,) a copy: data may be reused
        samples.flags.writeable = False
        return AudioFrame(seq=int(seq), t_ms=float(t_ms), samples=samples)
    width, height = _VIDEO_HEADER.unpack_from(view)[5:7]
    _check_dims(width, height)
    _check_jpeg(payload)
    return VideoFrameData(seq=int(seq), t_ms=float(t_ms), width=int(width), height=int(height), jpeg=bytes(payload))


def _check_seq_t(seq: int, t_ms: float) -> None:
    if isinstance(seq, bool) or not 0 <= int(seq) <= MAX_SEQ:
        raise ValueError(f"seq must be a u32 (0..{MAX_SEQ}), got {seq!r}")
    if not math.isfinite(t_ms) or abs(t_ms) > MAX_ABS_T_MS:
        raise ValueError(f"t_ms must be finite and |t_ms| <= 2**53, got {t_ms!r}")


def encode_audio(seq: int, t_ms: float, samples: np.ndarray) -> bytes:
    """One audio frame. samples: (n,) int16 mono at 16 kHz, 1 <= n <= 8000."""
    _check_seq_t(seq, t_ms)
    arr = np.asarray(samples)
    if arr.dtype != np.int16:
        raise TypeError(f"samples must be int16, got {arr.dtype}")
    if arr.ndim != 1 or not 1 <= arr.shape[0] <= MAX_AUDIO_SAMPLES:
        raise ValueError(f"samples must have shape (n,) with 1 <= n <= {MAX_AUDIO_SAMPLES}, got {arr.shape}")
    header = _AUDIO_HEADER.pack(MAGIC, FORMAT_VERSION, KIND_AUDIO, int(seq), float(t_ms), AUDIO_RATE)
    return header + arr.astype("<i2", copy=False).tobytes()


def encode_video(seq: int, t_ms: float, width: int, height: int, jpeg: bytes) -> bytes:
    """One video frame: a JPEG of width x height pixels (16..1280 x 16..720), at most 256 KiB."""
    _check_seq_t(seq, t_ms)
    _check_dims(int(width), int(height))
    _check_jpeg(jpeg)
    header = _VIDEO_HEADER.pack(MAGIC, FORMAT_VERSION, KIND_VIDEO, int(seq), float(t_ms), int(width), int(height))
    return header + bytes(jpeg)


def decode_jpeg(frame: VideoFrameData) -> np.ndarray:
    """The frame's image: (H, W, 3) uint8 BGR. FrameError if it does not decode or its size is not the header's."""
    import cv2  # lazy: parsing needs no OpenCV

    image = cv2.imdecode(np.frombuffer(frame.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameError(f"video frame {frame.seq}: the JPEG ({len(frame.jpeg)} bytes) does not decode")
    h, w = image.shape[:2]
    if (w, h) != (frame.width, frame.height):
        raise FrameError(
            f"video frame {frame.seq}: the JPEG is {w}x{h} but the header says {frame.width}x{frame.height}"
        )
    return image


class SequenceTracker:
    """Sequence numbers of one kind of frame on one connection, from the first one seen.

    `accept(seq)` is True for a frame to use: the first one, or one ahead of the last accepted
    (a jump of k counts k - 1 `lost`). A frame at or behind the last accepted one is refused
    (False): `duplicate` when equal, `reordered` when older (it was already counted as lost).
    """

    __slots__ = ("kind", "last", "received", "lost", "reordered", "duplicate")

    def __init__(self, kind: str = "") -> None:
        self.kind = kind
        self.last: int | None = None
        self.received = 0  # frames accepted
        self.lost = 0  # frames skipped over by a jump ahead
        self.reordered = 0  # frames older than the last accepted one (dropped)
        self.duplicate = 0  # frames repeating the last accepted seq (dropped)

    def accept(self, seq: int) -> bool:
        seq = int(seq)
        if self.last is None:
            self.last = seq
            self.received += 1
            return True
        if seq == self.last:
            self.duplicate += 1
            logger.debug("%s frame %d: duplicate, dropped", self.kind or "media", seq)
            return False
        if seq < self.last:
            self.reordered += 1
            logger.debug("%s frame %d: behind %d, dropped", self.kind or "media", seq, self.last)
            return False
        gap = seq - self.last - 1
        if gap:
            self.lost += gap
            logger.debug("%s frames %d..%d lost", self.kind or "media", self.last + 1, seq - 1)
        self.last = seq
        self.received += 1
        return True

    def counts(self) -> dict[str, int]:
        """{"received", "lost", "reordered", "duplicate"}: for metrics."""
        return {"received": self.received, "lost": self.lost, "reordered": self.reordered,
                "duplicate": self.duplicate}
