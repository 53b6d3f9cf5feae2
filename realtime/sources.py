"""Capture sources: webcam (OpenCV), microphone (sounddevice) and media files (PyAV).

Each source runs one thin, non-daemon thread: device -> callbacks. Audio goes to `on_audio`
(an `AudioChunk`, 16 kHz mono float32), video to `on_frame` (a `VideoFrame`, BGR). A file
played in real time stands in for a camera and a microphone; played as fast as possible it
drives tests and benchmarks with the same code. Timestamps all come from `time.monotonic_ns()`:
a file's sample k is stamped `t0 + k / rate`, with t0 taken when playback starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                for frame in container.decode(audio=0):
                    for out in resampler.resample(frame):
                        audio_parts.append(out.to_ndarray().reshape(-1))
                for out in resampler.resample(None):
                    audio_parts.append(out.to_ndarray().reshape(-1))
        with av.open(str(path)) as container:
            if container.streams.video:
                stream = container.streams.video[0]
                for frame in container.decode(stream):
                    pts = float(frame.pts * frame.time_base) if frame.pts is not None else len(frames) / 25.0
                    frames.append((pts, frame.to_ndarray(format="bgr24")))
    except (OSError, av.error.FFmpegError) as e:  # type: ignore[attr-defined]
        raise SourceError(f"cannot decode media file {path}: {e}") from e
    audio = np.concatenate(audio_parts).astype(np.float32) if audio_parts else np.zeros(0, np.float32)
    return audio, frames


class MediaFileSource:
    """Plays a media file (mp4 with audio, or a wav plus an optional video) as camera + microphone.

    realtime=True paces chunks by the wall clock; False delivers them as fast as the consumer
    takes them (the timestamps still follow the file's own timeline). loop=True starts over at
    the end (with a silence gap); `on_end` is called when a non-looping file is done.
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
        self.audio, frames = decode_file(self.path)
        if self.video_path is not None:
            _, frames = decode_file(self.video_path)
        self.frames = frames
        if self.audio.size == 0:
            raise SourceError(f"media file {self.path} has no audio track")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.finished = threading.Event()

    @property
    def has_video(self) -> bool:
        return bool(self.frames)

    @property
    def duration_s(self) -> float:
        return self.audio.size / SAMPLE_RATE

    def start(self, on_audio: AudioCallback, on_frame: FrameCallback | None = None,
              on_end: Callable[[], None] | None = None) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(on_audio, on_frame, on_end), name="media-source", daemon=False
        )
        self._thread.start()

    def _run(self, on_audio: AudioCallback, on_frame: FrameCallback | None, on_end: Callable[[], None] | None) -> None:
        gap = np.zeros(int(self.gap_s * SAMPLE_RATE), np.float32)
        t0 = time.monotonic_ns()
        offset = 0  # samples played so far over all loops
        frame_index = 0
        try:
            while not self._stop.is_set():
                audio = self.audio if offset == 0 else np.concatenate([gap, self.audio])
                lead = 0 if offset == 0 else gap.size
                frames = iter(self.frames)
                next_frame = next(frames, None)
                for start in range(0, audio.size, CHUNK_SAMPLES):
                    if self._stop.is_set():
                        return
                    chunk = audio[start : start + CHUNK_SAMPLES]
                    t_chunk = t0 + samples_to_ns(offset + start)
                    if self.realtime:
                        delay = (t_chunk + samples_to_ns(chunk.size) - time.monotonic_ns()) / 1e9
                        if delay > 0:
                            self._stop.wait(delay)
                    # frames whose time falls before the end of this chunk
                    t_chunk_end_s = (start + chunk.size - lead) / SAMPLE_RATE
                    while on_frame is not None and next_frame is not None and next_frame[0] <= t_chunk_end_s:
                        t_frame = t0 + samples_to_ns(offset + lead) + int(next_frame[0] * 1e9)
                        on_frame(VideoFrame(image=next_frame[1], t_ns=t_frame, index=frame_index))
                        frame_index += 1
                        next_frame = next(frames, None)
                    on_audio(AudioChunk(samples=chunk, sample_rate=SAMPLE_RATE, t0_ns=t_chunk))
                offset += audio.size
                if not self.loop:
                    break
        finally:
            self.finished.set()
            if on_end is not None and not self._stop.is_set():
                on_end()

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
                cap.release()
                cap = None
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
