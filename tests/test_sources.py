"""Capture sources and the pipeline's buffers, without devices (fakes only where a device would be)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from emostream.realtime import sources
from emostream.realtime.sources import (
    CHUNK_SAMPLES,
    MediaFileSource,
    SourceError,
    WebcamSource,
    decode_file,
    import_sounddevice,
)
from emostream.realtime.types import SAMPLE_RATE, AudioChunk, VideoFrame, samples_to_ns
from emostream.realtime.worker import DropOldestQueue, FrameRing
from tests.helpers import wait_until

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
    """realtime=True never delivers audio ahead of the wall clock: each chunk arrives once the clock
    has passed the chunk's end (the file played as a microphone would), in order and without gaps;
    stop() ends playback. A busy machine can only make the chunks later, so nothing here depends on
    its speed. (How late a live source's audio gets under load: benchmarks/latency.py, sessions.py.)"""
    src = MediaFileSource(ROOT / "tests/data/dialogue.wav", realtime=True)
    got: list[tuple[int, AudioChunk]] = []  # (monotonic_ns on arrival, chunk)
    enough = threading.Event()

    def on_audio(chunk: AudioChunk) -> None:
        got.append((time.monotonic_ns(), chunk))
        if len(got) >= 16:  # 0.5 s of audio
            enough.set()

    src.start(on_audio)
    assert enough.wait(60), "no audio from the source"
    src.stop()
    assert src.finished.is_set()  # stop() ended the playback thread
    early = [(i, c.t0_ns + samples_to_ns(c.samples.size) - arrived) for i, (arrived, c) in enumerate(got)
             if arrived < c.t0_ns + samples_to_ns(c.samples.size)]
    assert early == [], f"chunks delivered before the wall clock reached their end (index, ns early): {early}"
    assert np.all(np.diff([c.t0_ns for _, c in got]) == samples_to_ns(CHUNK_SAMPLES))


def test_missing_and_broken_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        MediaFileSource(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(SourceError, match="cannot"):
        MediaFileSource(bad)


def reference_timeline(path: Path, passes: int, gap_s: float = 1.0) -> tuple[list, list]:
    """What the former whole-file source delivered (decode_file up front), relative to t0:
    [(t0_ns, samples)] per chunk and [(t_ns, index, image bytes hash)] per frame."""
    audio, frames = decode_file(path)
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    chunks: list[tuple[int, np.ndarray]] = []
    out_frames: list[tuple[int, int, int]] = []
    offset = 0
    for _ in range(passes):
        samples = audio if offset == 0 else np.concatenate([gap, audio])
        lead = 0 if offset == 0 else gap.size
        it = iter(frames)
        nxt = next(it, None)
        for start in range(0, samples.size, CHUNK_SAMPLES):
            chunk = samples[start : start + CHUNK_SAMPLES]
            end_s = (start + chunk.size - lead) / SAMPLE_RATE
            while nxt is not None and nxt[0] <= end_s:
                t = samples_to_ns(offset + lead) + int(nxt[0] * 1e9)
                out_frames.append((t, len(out_frames), hash(nxt[1].tobytes())))
                nxt = next(it, None)
            chunks.append((samples_to_ns(offset + start), chunk))
        offset += samples.size
    return chunks, out_frames


def play_relative(path: Path, n_chunks: int | None = None, **kw) -> tuple[list, list, MediaFileSource]:
    """Plays as fast as possible (stopping after n_chunks when looping); timestamps relative to chunk 0."""
    chunks: list[AudioChunk] = []
    frames: list[tuple[int, int, int]] = []
    done = threading.Event()

    def on_audio(c: AudioChunk) -> None:
        chunks.append(c)
        if n_chunks is not None and len(chunks) >= n_chunks:
            done.set()

    src = MediaFileSource(path, realtime=False, **kw)
    src.start(on_audio, lambda f: frames.append((f.t_ns, f.index, hash(f.image.tobytes()))), on_end=done.set)
    assert done.wait(120)
    src.stop()
    t0 = chunks[0].t0_ns
    rel_chunks = [(c.t0_ns - t0, c.samples) for c in chunks]
    rel_frames = [(t - t0, i, h) for t, i, h in frames]
    if n_chunks is not None:
        end = rel_chunks[n_chunks - 1][0]
        rel_chunks = rel_chunks[:n_chunks]
        rel_frames = [f for f in rel_frames if f[0] <= end + 32_000_000]
    return rel_chunks, rel_frames, src


def assert_same_timeline(got: tuple[list, list], want: tuple[list, list]) -> None:
    (got_chunks, got_frames), (want_chunks, want_frames) = got, want
    assert len(got_chunks) == len(want_chunks)
    assert [t for t, _ in got_chunks] == [t for t, _ in want_chunks]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got_chunks, want_chunks))
    assert got_frames == want_frames


@pytest.mark.parametrize("name", ["demo/media/sample.mp4", "tests/data/dialogue.wav"])
def test_incremental_decoding_matches_the_whole_file_timeline(name: str) -> None:
    chunks, frames, src = play_relative(ROOT / name)
    want_chunks, want_frames = reference_timeline(ROOT / name, passes=1)
    assert_same_timeline((chunks, frames), (want_chunks, want_frames))
    assert src.has_video == bool(want_frames)
    assert abs(src.duration_s - sum(c.size for _, c in want_chunks) / SAMPLE_RATE) < 0.05


def test_looping_matches_the_whole_file_timeline_gap_included() -> None:
    path = ROOT / "demo/media/sample.mp4"
    want_chunks, want_frames = reference_timeline(path, passes=2)
    n = len(want_chunks) - 5  # stop inside the second pass
    chunks, frames, _ = play_relative(path, n_chunks=n, loop=True)
    end = want_chunks[n - 1][0] + 32_000_000
    assert_same_timeline((chunks, frames), (want_chunks[:n], [f for f in want_frames if f[0] <= end]))


def test_separate_video_file_is_decoded_in_step() -> None:
    wav = ROOT / "tests/data/dialogue.wav"
    video = ROOT / "demo/media/sample.mp4"
    chunks, frames, src = play_relative(wav, video_path=video)
    assert src.has_video and len(frames) > 100
    audio_end = chunks[-1][0] + 32_000_000
    assert frames[-1][0] <= audio_end  # frames past the end of the wav are not delivered
    assert src.peak_buffered_frames <= 2


def test_no_video_is_decoded_without_on_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_video(container: object) -> None:
        raise AssertionError("video decoded although nothing uses it")

    monkeypatch.setattr(sources, "_video_frames", no_video)
    chunks: list[AudioChunk] = []
    done = threading.Event()
    src = MediaFileSource(ROOT / "demo/media/sample.mp4", realtime=False)
    assert src.has_video
    src.start(chunks.append, None, on_end=done.set)
    assert done.wait(60)
    src.stop()
    assert src.error is None and src.frames_decoded == 0
    assert abs(sum(c.samples.size for c in chunks) / SAMPLE_RATE - 47.6) < 0.1  # all of the audio


def test_long_looped_input_keeps_buffering_bounded() -> None:
    import tracemalloc

    path = ROOT / "demo/media/sample.mp4"
    pass_samples = int(47.6 * SAMPLE_RATE) + SAMPLE_RATE  # one loop, gap included
    got = {"samples": 0, "frames": 0}
    enough = threading.Event()

    def on_audio(c: AudioChunk) -> None:  # discards
        got["samples"] += c.samples.size
        if got["samples"] >= 3 * pass_samples:
            enough.set()

    def on_frame(f: VideoFrame) -> None:
        got["frames"] += 1

    src = MediaFileSource(path, realtime=False, loop=True)
    tracemalloc.start()
    try:
        src.start(on_audio, on_frame)
        assert enough.wait(180)
        src.stop()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert src.finished.is_set() and src.error is None
    assert got["frames"] > 3 * 470  # three loops of video did play
    assert src.peak_buffered_frames <= 2  # never more than the frames of one 32 ms chunk + one ahead
    assert src.peak_buffered_samples <= 4 * CHUNK_SAMPLES  # a chunk plus at most one codec frame
    # the whole file decoded would be ~110 MB of frames and 3 MB of audio per loop
    assert peak < 30 * 2**20, f"tracemalloc peak {peak / 2**20:.1f} MiB"


def test_files_without_audio_or_not_media_are_rejected_by_name(tmp_path: Path) -> None:
    import av

    silent = tmp_path / "silent.mp4"
    with av.open(str(silent), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    with pytest.raises(SourceError, match="has no audio track") as e:
        MediaFileSource(silent)
    assert str(silent) in str(e.value)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(SourceError, match="cannot open media file") as e:
        MediaFileSource(empty)
    assert str(empty) in str(e.value)
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    with pytest.raises(SourceError, match=f"cannot open media file {text}"):
        MediaFileSource(text)
    with pytest.raises(SourceError, match="video file .* does not exist"):
        MediaFileSource(ROOT / "tests/data/dialogue.wav", video_path=tmp_path / "nope.mp4")
    with pytest.raises(SourceError, match="cannot open media file"):
        MediaFileSource(ROOT / "tests/data/dialogue.wav", video_path=text)


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
    wait_until(lambda: len(frames) >= 10, what="10 frames from the reopened camera")
    cam.stop()
    codes = [c for c, _ in statuses]
    assert codes[:3] == ["camera_retry", "camera_retry", "camera_ok"]
    # mid-stream (3 frames, then reads fail): camera_lost, reopened, and camera_ok again
    assert codes[3:5] == ["camera_lost", "camera_ok"], codes
    assert len(frames) >= 10 and cam.failures == 3


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


def test_a_producer_blocked_on_a_full_queue_gives_up_once_its_consumer_is_gone() -> None:
    q = DropOldestQueue(1)
    q.put(0)
    gone = threading.Event()
    result: list[bool] = []
    producer = threading.Thread(target=lambda: result.append(q.put_wait(1, give_up=gone.is_set, poll_s=0.01)))
    producer.start()
    producer.join(0.2)
    assert producer.is_alive()  # still waiting for room: back-pressure
    gone.set()  # e.g. the dialogue closed while a file played faster than real time
    producer.join(10)
    assert not producer.is_alive() and result == [False] and q.get(0.1) == 0  # the waiting item was not put


def test_frame_ring_slices_by_time() -> None:
    ring = FrameRing(4)
    for i in range(6):
        ring.add(VideoFrame(np.zeros((1, 1, 3), np.uint8), t_ns=i * 100, index=i))
    assert [f.index for f in ring.between(250, 500)] == [3, 4] and len(ring) == 4
