"""Capture sources and the pipeline's buffers, without devices (fakes only where a device would be)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from emostream.realtime.sources import MediaFileSource, SourceError, WebcamSource, import_sounddevice
from emostream.realtime.types import AudioChunk, VideoFrame
from emostream.realtime.worker import DropOldestQueue, FrameRing

ROOT = Path(__file__).resolve().parents[1]


def play(path: Path, **kw) -> tuple[list[AudioChunk], list[VideoFrame]]:
    chunks: list[AudioChunk] = []
    frames: list[VideoFrame] = []
    done = threading.Event()
    src = MediaFileSource(path, realtime=False, **kw)
    src.start(chunks.append, frames.append, on_end=done.set)
    assert done.wait(60)
    src.stop()
    return chunks, frames


def test_wav_plays_completely_with_contiguous_timestamps() -> None:
    chunks, frames = play(ROOT / "tests/data/dialogue.wav")
    total = sum(c.samples.size for c in chunks)
    assert abs(total / 16000 - 24.66) < 0.05 and not frames
    steps = np.diff([c.t0_ns for c in chunks])
    assert np.all(steps == 32_000_000)  # 512 samples at 16 kHz, exactly


def test_mp4_delivers_frames_inside_the_audio_timeline() -> None:
    chunks, frames = play(ROOT / "demo/media/sample.mp4")
    assert len(frames) > 100
    assert all(f.image.ndim == 3 and f.image.shape[2] == 3 for f in frames[:5])
    t_frames = [f.t_ns for f in frames]
    assert t_frames == sorted(t_frames)
    assert chunks[0].t0_ns <= t_frames[0] and t_frames[-1] <= chunks[-1].t0_ns + 10**9


def test_realtime_pacing() -> None:
    src = MediaFileSource(ROOT / "tests/data/dialogue.wav", realtime=True)
    got: list[AudioChunk] = []
    t0 = time.monotonic()
    src.start(got.append)
    time.sleep(1.0)
    src.stop()
    seconds = sum(c.samples.size for c in got) / 16000
    assert 0.7 <= seconds <= 1.3, f"{seconds:.2f} s of audio in 1 s of wall time"
    assert time.monotonic() - t0 < 3


def test_missing_and_broken_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        MediaFileSource(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot"):
        MediaFileSource(bad)


class FakeCapture:
    """Stands in for cv2.VideoCapture in this unit test of the retry logic."""

    def __init__(self, opened: bool, reads: int) -> None:
        self.opened, self.reads = opened, reads

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.reads <= 0:
            return False, None
        self.reads -= 1
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self) -> None:
        pass


def test_webcam_missing_then_failing_is_retried_not_fatal() -> None:
    opens = iter([FakeCapture(False, 0), FakeCapture(False, 0), FakeCapture(True, 3), FakeCapture(True, 1000)])
    cam = WebcamSource(0, fps=100.0, opener=lambda i: next(opens))
    statuses: list[tuple[str, str]] = []
    frames: list[VideoFrame] = []
    cam.start(frames.append, lambda code, msg: statuses.append((code, msg)))
    deadline = time.monotonic() + 10
    while len(frames) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    cam.stop()
    codes = [c for c, _ in statuses]
    assert codes[:2] == ["camera_retry", "camera_retry"] and "camera_ok" in codes
    assert len(frames) >= 10 and cam.failures == 2  # it came back, and a read failure only reopened it


def test_microphone_without_portaudio_says_what_to_install() -> None:
    try:
        import_sounddevice()
    except SourceError as e:
        assert "pip install 'emostream[mic]'" in str(e)
    else:
        pytest.skip("sounddevice and PortAudio are installed here")


def test_drop_oldest_queue_counts_drops() -> None:
    q = DropOldestQueue(3)
    for i in range(5):
        q.put(i)
    assert q.dropped == 2 and [q.get(0.1) for _ in range(3)] == [2, 3, 4]


def test_frame_ring_slices_by_time() -> None:
    ring = FrameRing(4)
    for i in range(6):
        ring.add(VideoFrame(np.zeros((1, 1, 3), np.uint8), t_ns=i * 100, index=i))
    assert [f.index for f in ring.between(250, 500)] == [3, 4] and len(ring) == 4
