"""Capture sources: webcam (OpenCV), microphone (sounddevice) and media files (PyAV).

Each source runs one thin, non-daemon thread: device -> callbacks. Audio goes to `on_audio`
(an `AudioChunk`, 16 kHz mono float32), video to `on_frame` (a `VideoFrame`, BGR). A file
played in real time stands in for a camera and a microphone; played as fast as possible it
drives tests and benchmarks with the same code. Files are decoded incrementally as they play
(never held whole: see `MediaFileSource`). Timestamps all come from `time.monotonic_ns()`:
a file's sample k is stamped `t0 + k / rate`, with t0 taken when playback starts.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emostream.model.features.pcm import resample_frames
from emostream.realtime.types import SAMPLE_RATE, AudioChunk, VideoFrame, samples_to_ns

logger = logging.getLogger(__name__)

AudioCallback = Callable[[AudioChunk], None]
FrameCallback = Callable[[VideoFrame], None]
StatusCallback = Callable[[str, str], None]  # (code, message), e.g. ("camera_missing", "...")

CHUNK_SAMPLES = 512  # 32 ms at 16 kHz: one VAD window


class SourceError(RuntimeError):
    """A capture device or file cannot be opened; the message says what to do."""


# ---------------------------------------------------------------------------------------- files
@dataclass(frozen=True)
class MediaInfo:
    duration_s: float
    has_audio: bool
    has_video: bool
    fps: float


def probe(path: str | Path) -> MediaInfo:
    import av

    try:
        with av.open(str(path)) as container:
            audio = container.streams.audio[0] if container.streams.audio else None
            video = container.streams.video[0] if container.streams.video else None
            duration = (container.duration or 0) / 1e6
            fps = float(video.average_rate) if video is not None and video.average_rate else 0.0
    except (OSError, av.error.FFmpegError) as e:  # type: ignore[attr-defined]
        raise SourceError(f"cannot open media file {path}: {e}") from e
    return MediaInfo(duration, audio is not None, video is not None, fps)


def decode_file(path: str | Path) -> tuple[np.ndarray, list[tuple[float, np.ndarray]]]:
    """All audio (16 kHz mono float32) and all frames ((pts seconds, BGR image)) of a media file."""
    import av

    audio_parts: list[np.ndarray] = []
    frames: list[tuple[float, np.ndarray]] = []
    try:
        with av.open(str(path)) as container:
            if container.streams.audio:
                audio_parts = list(_audio_blocks(container))
        with av.open(str(path)) as container:
            if container.streams.video:
                frames = list(_video_frames(container))
    except (OSError, av.error.FFmpegError) as e:  # type: ignore[attr-defined]
        raise SourceError(f"cannot decode media file {path}: {e}") from e
    audio = np.concatenate(audio_parts).astype(np.float32) if audio_parts else np.zeros(0, np.float32)
    return audio, frames


class _Chunker:
    """Cuts a stream of sample blocks into fixed-size chunks, holding only what the next chunk needs."""

    def __init__(self, blocks: Iterator[np.ndarray]) -> None:
        self._blocks = blocks
        self._pending: list[np.ndarray] = []
        self.buffered = 0  # samples decoded and not yet handed out
        self.peak = 0

    def take(self, n: int) -> np.ndarray:
        while self.buffered < n:
            block = next(self._blocks, None)
            if block is None:
                break
            if block.size:
                self._pending.append(block)
                self.buffered += block.size
                self.peak = max(self.peak, self.buffered)
        if not self._pending:
            return np.zeros(0, np.float32)
        data = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        chunk, rest = data[:n], data[n:]
        self._pending = [rest] if rest.size else []
        self.buffered = rest.size
        return chunk


def _audio_blocks(container: Any) -> Iterator[np.ndarray]:
    """The first audio stream, decoded lazily and resampled to 16 kHz mono float32 (only it is decoded)."""
    return resample_frames(container.decode(container.streams.audio[0]), SAMPLE_RATE)


def _video_frames(container: Any) -> Iterator[tuple[float, np.ndarray]]:
    """(pts seconds, BGR image) of the first video stream, decoded lazily, one frame at a time."""
    stream = container.streams.video[0]
    for n, frame in enumerate(container.decode(stream)):
        pts = float(frame.pts * frame.time_base) if frame.pts is not None else n / 25.0
        yield pts, frame.to_ndarray(format="bgr24")


class MediaFileSource:
    """Plays a media file (mp4 with audio, or a wav plus an optional video) as camera + microphone.

    realtime=True paces chunks by the wall clock; False delivers them as fast as the consumer
    takes them (the timestamps still follow the file's own timeline). loop=True starts over at
    the end (with a silence gap); `on_end` is called when a non-looping file is done.

    The constructor only probes the file(s). Playback opens them in the source's thread and decodes
    incrementally: audio one codec frame ahead of the 512-sample chunk being delivered, video one
    frame ahead of the audio timeline (its own container, pulled in step with the audio, whether it
    is the same file or `video_path`), so memory does not grow with the file's length. With no
    `on_frame` the video is not decoded at all. `peak_buffered_samples` / `peak_buffered_frames`
    say how much decoded media the source ever held; `frames_decoded` counts decoded video frames.
    """

    def __init__(self, path: str | Path, video_path: str | Path | None = None, realtime: bool = True,
                 loop: bool = False, gap_s: float = 1.0) -> None:
        self.path = Path(path)
        self.video_path = Path(video_path) if video_path else None
        if not self.path.is_file():
            raise SourceError(f"media file {self.path} does not exist")
        if self.video_path is not None and not self.video_path.is_file():
            raise SourceError(f"video file {self.video_path} does not exist")
        self.realtime = realtime
        self.loop = loop
        self.gap_s = gap_s
        info = probe(self.path)  # SourceError("cannot open media file ...") for a file that is not media
        if not info.has_audio:
            raise SourceError(f"media file {self.path} has no audio track")
        self._duration_s = info.duration_s
        self._has_video = probe(self.video_path).has_video if self.video_path is not None else info.has_video
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.finished = threading.Event()
        self.error: Exception | None = None  # a decoding error that ended playback early
        self.peak_buffered_samples = 0
        self.peak_buffered_frames = 0
        self.frames_decoded = 0
        self._frame_index = 0

    @property
    def has_video(self) -> bool:
        return self._has_video

    @property
    def duration_s(self) -> float:
        return self._duration_s

    def start(self, on_audio: AudioCallback, on_frame: FrameCallback | None = None,
              on_end: Callable[[], None] | None = None) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(on_audio, on_frame, on_end), name="media-source", daemon=False
        )
        self._thread.start()

    def _run(self, on_audio: AudioCallback, on_frame: FrameCallback | None, on_end: Callable[[], None] | None) -> None:
        import av

        t0 = time.monotonic_ns()
        offset = 0  # samples played so far over all loops
        self._frame_index = 0
        try:
            while not self._stop.is_set():
                lead = 0 if offset == 0 else int(self.gap_s * SAMPLE_RATE)
                with contextlib.ExitStack() as stack:
                    audio_c = stack.enter_context(av.open(str(self.path)))
                    frames: Iterator[tuple[float, np.ndarray]] = iter(())
                    if on_frame is not None and self._has_video:
                        video_c = stack.enter_context(av.open(str(self.video_path or self.path)))
                        frames = _video_frames(video_c)
                    played = self._play_pass(audio_c, frames, lead, t0, offset, on_audio, on_frame)
                if played is None:  # stopped
                    return
                if played == 0:  # an audio track that decodes to nothing: do not spin on it
                    logger.warning("media file %s has no audio samples", self.path)
                    break
                offset += played
                if not self.loop:
                    break
        except (OSError, av.error.FFmpegError) as e:  # type: ignore[attr-defined]
            files = str(self.path) + (f" (video {self.video_path})" if self.video_path else "")
            self.error = SourceError(f"cannot decode media file {files}: {e}")
            logger.error("%s", self.error)
        finally:
            self.finished.set()
            if on_end is not None and not self._stop.is_set():
                on_end()

    def _play_pass(self, audio_c: Any, frames: Iterator[tuple[float, np.ndarray]], lead: int, t0: int,
                   offset: int, on_audio: AudioCallback, on_frame: FrameCallback | None) -> int | None:
        """One pass over the file (after `lead` samples of silence); the samples played, None if stopped."""
        blocks = _audio_blocks(audio_c)
        if lead:
            silence = (np.zeros(min(CHUNK_SAMPLES, lead - i), np.float32) for i in range(0, lead, CHUNK_SAMPLES))
            blocks = itertools.chain(silence, blocks)
        chunker = _Chunker(blocks)
        next_frame = self._next_frame(frames)
        start = 0
        while True:
            if self._stop.is_set():
                return None
            chunk = chunker.take(CHUNK_SAMPLES)
            self.peak_buffered_samples = max(self.peak_buffered_samples, chunker.peak)
            if chunk.size == 0:
                return start
            t_chunk = t0 + samples_to_ns(offset + start)
            # frames whose time falls before the end of this chunk (decoded now, delivered after the wait)
            t_chunk_end_s = (start + chunk.size - lead) / SAMPLE_RATE
            due: list[tuple[float, np.ndarray]] = []
            while next_frame is not None and next_frame[0] <= t_chunk_end_s:
                due.append(next_frame)
                next_frame = self._next_frame(frames)
                self.peak_buffered_frames = max(self.peak_buffered_frames, len(due) + (next_frame is not None))
            if self.realtime:
                delay = (t_chunk + samples_to_ns(chunk.size) - time.monotonic_ns()) / 1e9
                if delay > 0 and self._stop.wait(delay):
                    return None  # stopped while waiting: nothing more is delivered
            if on_frame is not None:
                for pts, image in due:
                    t_frame = t0 + samples_to_ns(offset + lead) + int(pts * 1e9)
                    on_frame(VideoFrame(image=image, t_ns=t_frame, index=self._frame_index))
                    self._frame_index += 1
            del due
            on_audio(AudioChunk(samples=chunk, sample_rate=SAMPLE_RATE, t0_ns=t_chunk))
            start += chunk.size

    def _next_frame(self, frames: Iterator[tuple[float, np.ndarray]]) -> tuple[float, np.ndarray] | None:
        frame = next(frames, None)
        if frame is not None:
            self.frames_decoded += 1
        return frame

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


# ---------------------------------------------------------------------------------------- devices
class Backoff:
    """Exponential backoff delays for reconnecting a device: 0.5, 1, 2, ... capped."""

    def __init__(self, first_s: float = 0.5, cap_s: float = 8.0) -> None:
        self.first_s, self.cap_s = first_s, cap_s
        self.attempt = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.first_s * (2**self.attempt))
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class WebcamSource:
    """OpenCV camera in a thread; a camera that fails mid-stream is reopened with backoff."""

    def __init__(self, index: int = 0, fps: float = 10.0, opener: Callable[[int], Any] | None = None) -> None:
        self.index = index
        self.fps = fps
        self._opener = opener or _open_camera
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.failures = 0

    def available(self) -> bool:
        cap = self._opener(self.index)
        ok = cap is not None and cap.isOpened()
        if cap is not None:
            cap.release()
        return bool(ok)

    def start(self, on_frame: FrameCallback, on_status: StatusCallback | None = None) -> None:
        self._thread = threading.Thread(target=self._run, args=(on_frame, on_status), name="webcam", daemon=False)
        self._thread.start()

    def _run(self, on_frame: FrameCallback, on_status: StatusCallback | None) -> None:
        backoff = Backoff()
        index = 0
        cap = None
        period = 1.0 / self.fps
        while not self._stop.is_set():
            if cap is None:
                cap = self._opener(self.index)
                if cap is None or not cap.isOpened():
                    cap = None
                    self.failures += 1
                    delay = backoff.next_delay()
                    if on_status:
                        on_status("camera_retry", f"camera {self.index} unavailable; retrying in {delay:.1f}s")
                    self._stop.wait(delay)
                    continue
                if backoff.attempt and on_status:
                    on_status("camera_ok", f"camera {self.index} is back")
                backoff.reset()
            t_read = time.monotonic_ns()
            ok, image = cap.read()
            if not ok or image is None:
                logger.warning("camera %s read failed; reopening", self.index)
                self.failures += 1
                if on_status:
                    on_status("camera_lost", f"camera {self.index} stopped delivering frames; reopening")
                cap.release()
                cap = None
                backoff.attempt = max(backoff.attempt, 1)  # say so when it is back
                self._stop.wait(0.05)
                continue
            on_frame(VideoFrame(image=image, t_ns=t_read, index=index))
            index += 1
            self._stop.wait(max(0.0, period - (time.monotonic_ns() - t_read) / 1e9))
        if cap is not None:
            cap.release()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


def _open_camera(index: int) -> Any:
    import os

    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # a missing camera is reported by us, once
    import cv2

    return cv2.VideoCapture(index)


def import_sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as e:
        raise SourceError(
            "the microphone needs the sounddevice package and the PortAudio library: "
            "`pip install 'emostream[mic]'` and `sudo apt-get install libportaudio2` "
            f"(or use --media FILE instead of the devices): {e}"
        ) from e
    return sounddevice


class MicrophoneSource:
    """sounddevice input stream, 16 kHz mono float32; a failing stream is reopened with backoff."""

    def __init__(self, device: int | str | None = None, block: int = CHUNK_SAMPLES) -> None:
        self.device = device
        self.block = block
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, on_audio: AudioCallback, on_status: StatusCallback | None = None) -> None:
        sd = import_sounddevice()
        self._thread = threading.Thread(target=self._run, args=(sd, on_audio, on_status), name="microphone",
                                        daemon=False)
        self._thread.start()

    def _run(self, sd: Any, on_audio: AudioCallback, on_status: StatusCallback | None) -> None:
        backoff = Backoff()

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            t_end = time.monotonic_ns()
            samples = np.asarray(indata[:, 0], dtype=np.float32).copy()
            on_audio(AudioChunk(samples=samples, sample_rate=SAMPLE_RATE, t0_ns=t_end - samples_to_ns(samples.size)))

        while not self._stop.is_set():
            try:
                with sd.InputStream(samplerate=SAMPLE_RATE, channels=1, dtype="float32", blocksize=self.block,
                                    device=self.device, callback=callback) as stream:
                    backoff.reset()
                    while not self._stop.is_set() and stream.active:
                        self._stop.wait(0.1)
                if not self._stop.is_set():
                    raise SourceError("microphone stream stopped")
            except Exception as e:  # noqa: BLE001 - any device error is retried, never a crash
                delay = backoff.next_delay()
                logger.warning("microphone failed (%s); retrying in %.1fs", e, delay)
                if on_status:
                    on_status("microphone_retry", f"microphone failed ({e}); retrying in {delay:.1f}s")
                self._stop.wait(delay)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
