"""Browser sessions: one per capturing connection, on models shared by the whole process. No I/O.

A `BrowserSession` is the producer of one `Dialogue` (realtime/dialogue.py: queues, worker,
control inbox, sink), as the server's own sources are of theirs: the transport hands it each
binary frame (`on_frame`, on the event loop: parse, check, enqueue; never blocks), it keeps the
capture's clock and the counters of what the client sent wrong, and the one `Scheduler`
(realtime/scheduler.py) drives the dialogue beside every other.

Clocks: a session's stream time 0 is its creation. Audio time is the count of samples received
(the audio clock), so a lost audio frame is replaced by as much silence (at most `MAX_FILL_S`);
video frames are placed by their capture time relative to the first audio frame's, both on the
client's clock. A client whose audio runs ahead of the wall clock by more than `AUDIO_SLACK_S`
is sending faster than real time: the excess is dropped and counted, and it is told once a
`TOO_FAST_REPEAT_S`.

`SessionManager` admits sessions up to `max_sessions` (then `Busy`), hands each dialogue to the
scheduler and takes it back on close, and closes idle sessions (on the scheduler's tick).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from emostream.model.features.pcm import as_float32
from emostream.realtime import media_frames as mf
from emostream.realtime import protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.dialogue import Dialogue
from emostream.realtime.scheduler import Scheduler
from emostream.realtime.types import AudioChunk, VideoFrame, samples_to_ns
from emostream.realtime.worker import EventCallback, Worker

logger = logging.getLogger(__name__)

AUDIO_SLACK_S = 2.0  # audio may run this far ahead of the wall clock (network bursts)
TOO_FAST_REPEAT_S = 5.0
MAX_FILL_S = 2.0  # silence put in for lost audio frames, at most
CAPTURE_LIMITS = {"audio_hz": mf.AUDIO_RATE, "max_audio_samples": mf.MAX_AUDIO_SAMPLES,
                  "max_video_bytes": mf.MAX_VIDEO_BYTES, "video_fps": 5}


class Busy(RuntimeError):
    """The server has as many capturing sessions as it admits."""


@dataclass
class SessionCounters:
    audio_too_fast: int = 0  # audio frames dropped: faster than real time
    bad_frames: int = 0
    audio_filled_ms: float = 0.0  # silence put in for lost audio frames
    video_undecodable: int = 0


class BrowserSession:
    """One capturing connection: the producer of its dialogue. `on_frame` runs on the event loop."""

    def __init__(self, client_id: str, parts: dict[str, Any], config: PipelineConfig, send: EventCallback,
                 close: Callable[[str], None], clock: Callable[[], int] = time.monotonic_ns,
                 id_prefix: str = "") -> None:
        self.id = id_prefix + uuid.uuid4().hex[:12]
        self.client_id = client_id
        self.config = config
        self._close = close
        self._clock = clock
        self.created_ns = clock()
        self.last_media_ns = self.created_ns
        self.dialogue = Dialogue(f"browser-{self.id}", parts, config, send, t0_ns=self.created_ns,
                                 extra_drops=self.drops)
        self.audio_seq = mf.SequenceTracker("audio")
        self.video_seq = mf.SequenceTracker("video")
        self.counters = SessionCounters()
        self._samples = 0  # audio samples received (the audio clock)
        self._first_audio: tuple[int, float] | None = None  # (wall ns, client t_ms) of the first audio frame
        self._last_audio_len = 1024
        self._too_fast_told_ns: int | None = None

    @property
    def worker(self) -> Worker:
        return self.dialogue.worker

    @property
    def closed(self) -> bool:
        return self.dialogue.closed

    def emit(self, msg: dict[str, Any]) -> None:
        self.dialogue.emit(msg)

    # ------------------------------------------------------------------ the event loop side
    def hello(self) -> dict[str, Any]:
        return self.dialogue.hello(session=self.id, capture=CAPTURE_LIMITS)

    def on_frame(self, data: bytes) -> None:
        """One binary frame from the client. Raises `media_frames.FrameError` (code bad_frame or
        too_fast) for the transport to answer with an `error`; the session goes on either way."""
        try:
            frame = mf.parse_frame(data)
        except mf.FrameError:
            self.counters.bad_frames += 1
            raise
        now = self._clock()
        self.last_media_ns = now
        if isinstance(frame, mf.AudioFrame):
            self._on_audio(frame, now)
        else:
            self._on_video(frame)

    def _on_audio(self, frame: mf.AudioFrame, now: int) -> None:
        if not self.audio_seq.accept(frame.seq):
            return
        if self._first_audio is None:
            self._first_audio = (now, frame.t_ms)
        lost_before = self.audio_seq.lost
        n = int(frame.samples.shape[0])
        elapsed_s = (now - self._first_audio[0]) / 1e9
        if (self._samples + n) / mf.AUDIO_RATE > elapsed_s + AUDIO_SLACK_S:
            self.counters.audio_too_fast += 1
            t = self.created_ns + samples_to_ns(self._samples)  # the excess is lost at this point of the clock
            self.worker.audio_lost(t, t + samples_to_ns(n))
            if self._too_fast_told_ns is None or now - self._too_fast_told_ns > TOO_FAST_REPEAT_S * 1e9:
                self._too_fast_told_ns = now
                raise mf.FrameError(
                    f"audio arrives faster than real time ({(self._samples + n) / mf.AUDIO_RATE:.1f} s of audio "
                    f"in {elapsed_s:.1f} s): the excess is dropped", code="too_fast")
            return
        gap = self.audio_seq.lost - lost_before
        if gap and self._samples:
            fill = min(gap * self._last_audio_len, int(MAX_FILL_S * mf.AUDIO_RATE))
            t = self.created_ns + samples_to_ns(self._samples)
            self.worker.audio_lost(t, t + samples_to_ns(fill))  # lost frames: silence in their place
            self._push(np.zeros(fill, np.float32))
            self.counters.audio_filled_ms += fill * 1000 / mf.AUDIO_RATE
        self._last_audio_len = n
        self._push(as_float32(frame.samples))

    def _push(self, samples: np.ndarray) -> None:
        t0 = self.created_ns + samples_to_ns(self._samples)
        self._samples += int(samples.shape[0])
        self.dialogue.put_audio(AudioChunk(samples=samples, sample_rate=mf.AUDIO_RATE, t0_ns=t0))

    def _on_video(self, frame: mf.VideoFrameData) -> None:
        if self.worker.faces is None and "visual" not in self.worker.session.model.modalities:
            return  # nothing looks at faces: do not even decode
        if not self.video_seq.accept(frame.seq) or self._first_audio is None:
            return  # frames before the first audio have no place on the audio clock
        try:
            image = mf.decode_jpeg(frame)
        except mf.FrameError:
            self.counters.video_undecodable += 1
            raise
        t_ns = self.created_ns + int((frame.t_ms - self._first_audio[1]) * 1e6)
        self.dialogue.frames.add(VideoFrame(image=image, t_ns=t_ns, index=frame.seq))

    def request_reset(self) -> None:
        """From the event loop: the scheduler resets this dialogue before its next audio."""
        self.dialogue.request_reset()

    def set_interim(self, enabled: bool) -> None:
        self.dialogue.set_interim(enabled)

    def drops(self) -> dict[str, int]:
        """What the client sent that was lost or refused (the dialogue adds its queue's drops)."""
        c = self.counters
        return {"audio_lost": self.audio_seq.lost, "video_lost": self.video_seq.lost,
                "audio_too_fast": c.audio_too_fast, "bad_frames": c.bad_frames,
                "reordered": self.audio_seq.reordered + self.video_seq.reordered,
                "video_undecodable": c.video_undecodable}

    def metrics(self) -> dict[str, Any]:
        return self.dialogue.metrics()

    def idle(self, now_ns: int, timeout_s: float) -> bool:
        return now_ns - self.last_media_ns > timeout_s * 1e9

    def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.dialogue.close()
        self._close(reason)


class SessionManager:
    """Admission (`max_sessions`), the shared models, the live sessions, each session's dialogue on
    the scheduler. Thread-safe."""

    def __init__(self, shared: Any, config: PipelineConfig, scheduler: Scheduler, max_sessions: int = 4,
                 idle_timeout_s: float = 60.0, id_prefix: str = "") -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.shared = shared
        self.scheduler = scheduler
        scheduler.every_tick.append(self.close_idle)
        self.config = config
        self.max_sessions = max_sessions
        self.idle_timeout_s = idle_timeout_s
        self.id_prefix = id_prefix  # before every session id (on a cluster: the node that holds it)
        self._sessions: dict[str, BrowserSession] = {}
        self._lock = threading.Lock()
        self.refused = 0
        self.opened = 0

    def open(self, client_id: str, send: EventCallback, close: Callable[[str], None]) -> BrowserSession:
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                self.refused += 1
                raise Busy(f"the server is busy: it runs {self.max_sessions} capturing session(s) at most; "
                           "try again later")
            session = BrowserSession(client_id, self.shared.dialogue_parts(), self.config, send, close,
                                     id_prefix=self.id_prefix)
            self._sessions[session.id] = session
            self.opened += 1
        self.scheduler.add(session.dialogue)
        logger.info("browser session %s opened for client %s (%d live)", session.id, client_id, len(self._sessions))
        return session

    def close(self, session: BrowserSession, reason: str = "closed") -> None:
        with self._lock:
            self._sessions.pop(session.id, None)
        self.scheduler.remove(session.dialogue)
        session.close(reason)
        logger.info("browser session %s closed: %s", session.id, reason)

    def sessions(self) -> list[BrowserSession]:
        with self._lock:
            return list(self._sessions.values())

    def close_idle(self, now_ns: int | None = None) -> list[BrowserSession]:
        now = time.monotonic_ns() if now_ns is None else now_ns
        idle = [s for s in self.sessions() if s.idle(now, self.idle_timeout_s)]
        for s in idle:
            s.emit(protocol.status(code="session_idle", level="warning",
                                   message=f"no media for {self.idle_timeout_s:.0f} s: session closed"))
            self.close(s, "idle")
        return idle

    def close_all(self, reason: str = "server stopping") -> None:
        for s in self.sessions():
            self.close(s, reason)

    def health(self) -> dict[str, Any]:
        live = self.sessions()
        return {"sessions": len(live), "max_sessions": self.max_sessions, "refused": self.refused,
                "opened": self.opened, "dialogues": [s.dialogue.counters() for s in live]}
