"""Binary media frames of browser capture: encode/parse round trips, every refusal, sequence tracking, JPEG."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
import skimage.data

from emostream.realtime import media_frames as mf
from emostream.realtime.media_frames import AudioFrame, FrameError, SequenceTracker, VideoFrameData


def raw_frame(kind: int = mf.KIND_AUDIO, *, seq: int = 0, t_ms: float = 0.0, extra: bytes | None = None,
              payload: bytes = b"\x00\x00", magic: bytes = b"EM", version: int = 1) -> bytes:
    """A frame built by hand, so that the parser can be fed what encode_* refuses to make."""
    if extra is None:
        extra = struct.pack("<I", 16000) if kind == mf.KIND_AUDIO else struct.pack("<HH", 320, 240)
    return struct.pack("<2sBBId", magic, version, kind, seq, t_ms) + extra + payload


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)  # (512, 512, 3)
    ok, buf = cv2.imencode(".jpg", cv2.resize(image, (320, 240)), [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert ok
    return buf.tobytes()


def test_header_layout_constants() -> None:
    assert mf.HEADER_SIZE == 20 and mf.MAGIC == b"EM" and mf.FORMAT_VERSION == 1
    assert (mf.KIND_AUDIO, mf.KIND_VIDEO, mf.AUDIO_RATE) == (1, 2, 16000)
    assert (mf.MAX_AUDIO_SAMPLES, mf.MAX_VIDEO_BYTES, mf.MAX_WIDTH, mf.MAX_HEIGHT) == (8000, 262144, 1280, 720)
    assert mf.MAX_FRAME_BYTES == 20 + 262144
    data = mf.encode_audio(7, 1234.5, np.array([1, -2, 32767, -32768], dtype=np.int16))
    assert data[:2] == b"EM" and data[2] == 1 and data[3] == 1
    assert struct.unpack_from("<I", data, 4)[0] == 7
    assert struct.unpack_from("<d", data, 8)[0] == 1234.5
    assert struct.unpack_from("<I", data, 16)[0] == 16000
    assert data[20:] == b"\x01\x00\xfe\xff\xff\x7f\x00\x80"  # s16le
    video = mf.encode_video(3, 9.0, 320, 240, b"\xff\xd8\xff\xe0rest")
    assert video[3] == 2 and struct.unpack_from("<HH", video, 16) == (320, 240) and video[20:] == b"\xff\xd8\xff\xe0rest"


def test_audio_round_trip() -> None:
    samples = (np.sin(np.arange(1024) / 5.0) * 20000).astype(np.int16)
    frame = mf.parse_frame(mf.encode_audio(41, 98765.125, samples))
    assert isinstance(frame, AudioFrame)
    assert frame.seq == 41 and frame.t_ms == 98765.125
    assert frame.samples.dtype == np.int16 and frame.samples.shape == (1024,)
    np.testing.assert_array_equal(frame.samples, samples)
    assert frame.duration_ms == pytest.approx(64.0)
    assert not frame.samples.flags.writeable
    # the largest frame, from a bytearray and a memoryview too; the samples do not alias the buffer
    big = np.full(8000, -3, dtype=np.int16)
    buf = bytearray(mf.encode_audio(mf.MAX_SEQ, 0.0, big))
    out = mf.parse_frame(memoryview(buf))
    buf[20:22] = b"\x00\x00"
    assert out.seq == mf.MAX_SEQ and out.samples.shape == (8000,) and int(out.samples[0]) == -3
    assert mf.parse_frame(mf.encode_audio(0, 0.0, np.zeros(1, np.int16))).samples.shape == (1,)


def test_video_round_trip(jpeg: bytes) -> None:
    frame = mf.parse_frame(mf.encode_video(5, 200.0, 320, 240, jpeg))
    assert isinstance(frame, VideoFrameData)
    assert (frame.seq, frame.t_ms, frame.width, frame.height) == (5, 200.0, 320, 240)
    assert frame.jpeg == jpeg and isinstance(frame.jpeg, bytes)


def test_real_jpeg_decodes_to_bgr(jpeg: bytes) -> None:
    frame = mf.parse_frame(mf.encode_video(0, 0.0, 320, 240, jpeg))
    image = mf.decode_jpeg(frame)
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    # the astronaut's suit is white and the background dark: the decoded image is that picture
    reference = cv2.resize(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR), (320, 240))
    assert np.abs(image.astype(int) - reference.astype(int)).mean() < 8


def test_corrupt_or_mis_sized_jpeg_is_a_frame_error(jpeg: bytes) -> None:
    for bad in (jpeg[: len(jpeg) // 2], b"\xff\xd8\xff" + bytes(500)):
        frame = mf.parse_frame(mf.encode_video(1, 0.0, 320, 240, bad))  # the header checks pass
        with pytest.raises(FrameError, match="does not decode") as info:
            mf.decode_jpeg(frame)
        assert info.value.code == "bad_frame"
    frame = mf.parse_frame(mf.encode_video(2, 0.0, 640, 480, jpeg))
    with pytest.raises(FrameError, match="320x240 but the header says 640x480"):
        mf.decode_jpeg(frame)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "too short: 0 bytes"),
        (b"EM\x01\x01" + bytes(15), "too short: 19 bytes"),
        (raw_frame(magic=b"XX"), "bad magic"),
        (raw_frame(version=2), "unknown frame format version 2"),
        (raw_frame(version=0), "unknown frame format version 0"),
        (raw_frame(kind=3), "unknown frame kind 3"),
        (raw_frame(kind=0), "unknown frame kind 0"),
        (raw_frame(t_ms=float("nan")), "non-finite t_ms"),
        (raw_frame(t_ms=float("inf")), "non-finite t_ms"),
        (raw_frame(kind=mf.KIND_VIDEO, t_ms=float("-inf"), payload=b"\xff\xd8\xff"), "non-finite t_ms"),
        (raw_frame(extra=struct.pack("<I", 48000)), "wrong audio sample rate 48000"),
        (raw_frame(extra=struct.pack("<I", 8000)), "wrong audio sample rate 8000"),
        (raw_frame(payload=b""), "empty audio payload"),
        (raw_frame(payload=b"\x00\x00\x00"), "odd audio payload of 3 bytes"),
        (raw_frame(payload=bytes(2 * 8001)), "audio payload too large: 8001 samples"),
        (raw_frame(kind=mf.KIND_VIDEO, payload=b"\xff\xd8\xff" + bytes(262142)), "video payload too large: 262145"),
        (raw_frame(kind=mf.KIND_VIDEO, payload=b"\x89PNG\r\n\x1a\n"), "not a JPEG"),
        (raw_frame(kind=mf.KIND_VIDEO, payload=b""), "not a JPEG"),
        (raw_frame(kind=mf.KIND_VIDEO, extra=struct.pack("<HH", 15, 240), payload=b"\xff\xd8\xff"), "bad video dimensions 15x240"),
        (raw_frame(kind=mf.KIND_VIDEO, extra=struct.pack("<HH", 1281, 720), payload=b"\xff\xd8\xff"), "bad video dimensions 1281x720"),
        (raw_frame(kind=mf.KIND_VIDEO, extra=struct.pack("<HH", 320, 721), payload=b"\xff\xd8\xff"), "bad video dimensions 320x721"),
        (raw_frame(kind=mf.KIND_VIDEO, extra=struct.pack("<HH", 320, 0), payload=b"\xff\xd8\xff"), "bad video dimensions 320x0"),
    ],
)
def test_parse_refuses_bad_frames(data: bytes, match: str) -> None:
    with pytest.raises(FrameError, match=match) as info:
        mf.parse_frame(data)
    assert info.value.code == "bad_frame"
    assert isinstance(info.value, ValueError) and info.value.message == str(info.value)


def test_parse_accepts_the_limits() -> None:
    assert mf.parse_frame(raw_frame(payload=bytes(16000))).samples.shape == (8000,)
    for w, h in ((16, 16), (1280, 720)):
        frame = mf.parse_frame(raw_frame(kind=mf.KIND_VIDEO, extra=struct.pack("<HH", w, h), payload=b"\xff\xd8\xff"))
        assert (frame.width, frame.height) == (w, h)
    frame = mf.parse_frame(raw_frame(kind=mf.KIND_VIDEO, payload=b"\xff\xd8\xff" + bytes(262141)))
    assert len(frame.jpeg) == mf.MAX_VIDEO_BYTES
    assert mf.parse_frame(raw_frame(t_ms=-5.0)).t_ms == -5.0


def test_encoders_refuse_what_the_parser_would() -> None:
    ok = np.zeros(10, np.int16)
    with pytest.raises(TypeError, match="int16"):
        mf.encode_audio(0, 0.0, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match="shape"):
        mf.encode_audio(0, 0.0, np.zeros(8001, np.int16))
    with pytest.raises(ValueError, match="shape"):
        mf.encode_audio(0, 0.0, np.zeros(0, np.int16))
    with pytest.raises(ValueError, match="shape"):
        mf.encode_audio(0, 0.0, np.zeros((10, 2), np.int16))
    with pytest.raises(ValueError, match="u32"):
        mf.encode_audio(-1, 0.0, ok)
    with pytest.raises(ValueError, match="u32"):
        mf.encode_audio(2**32, 0.0, ok)
    with pytest.raises(ValueError, match="finite"):
        mf.encode_audio(0, float("nan"), ok)
    with pytest.raises(FrameError, match="not a JPEG"):
        mf.encode_video(0, 0.0, 320, 240, b"GIF89a")
    with pytest.raises(FrameError, match="dimensions"):
        mf.encode_video(0, 0.0, 2000, 240, b"\xff\xd8\xff")
    with pytest.raises(FrameError, match="too large"):
        mf.encode_video(0, 0.0, 320, 240, b"\xff\xd8\xff" + bytes(mf.MAX_VIDEO_BYTES))


def test_sequence_tracker_in_order_from_the_first_seq() -> None:
    t = SequenceTracker("audio")
    assert all(t.accept(s) for s in range(100, 110))  # starts wherever the client starts
    assert t.counts() == {"received": 10, "lost": 0, "reordered": 0, "duplicate": 0}
    assert t.last == 109


def test_sequence_tracker_counts_gaps() -> None:
    t = SequenceTracker("video")
    assert t.accept(0) and t.accept(1)
    assert t.accept(4)  # 2, 3 missing
    assert t.accept(5) and t.accept(15)  # 6..14 missing
    assert t.lost == 2 + 9 and t.received == 4 + 1 and t.last == 15


def test_sequence_tracker_drops_reordered_and_duplicates() -> None:
    t = SequenceTracker("audio")
    assert t.accept(0) and t.accept(2)
    assert t.lost == 1
    assert not t.accept(1)  # late: already counted lost, dropped
    assert not t.accept(2)  # duplicate of the last
    assert not t.accept(2)
    assert not t.accept(0)  # an old one again: behind the last
    assert t.accept(3)
    assert t.counts() == {"received": 3, "lost": 1, "reordered": 2, "duplicate": 2}
