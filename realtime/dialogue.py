"""One conversation being served: `Dialogue`.

Whatever the source (a media file, the server's camera and microphone, a browser's capture), its
producers put audio chunks and video frames into one `Dialogue`, and the one `Scheduler`
(realtime/scheduler.py) drives its `Worker` on the shared models. A dialogue holds:

- the input: a bounded drop-oldest audio queue (a dropped chunk flags its utterance
  `audio_dropped`) and a frame ring;
- the worker (segmenter, turns, speakers, early ASR, face state, `DialogueSession`);
- the control inbox (reset, the interim wish), read by the scheduler before the next audio;
- what happened to it: drops (its own and its producer's), whether its input has ended, whether
  it is done, why it failed;
- the sink its events go to: a broadcast to every watcher for the server's own source, one
  connection for a browser's capture.

Producers call `put_audio` / `frames.add` / `end_input` from their threads, the transport calls
`request_reset` / `set_interim` from the event loop; everything else runs on the scheduler thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from emostream.realtime.config import PipelineConfig
from emostream.realtime.segmenter import Segmenter
from emostream.realtime.types import AudioChunk
from emostream.realtime.worker import DropOldestQueue, EventCallback, FrameRing, Worker

logger = logging.getLogger(__name__)


class Dialogue:
    """One conversation's queues, worker, control inbox, counters and sink."""

    def __init__(self, name: str, parts: dict[str, Any], config: PipelineConfig, sink: EventCallback,
                 t0_ns: int | None = None, extra_drops: Callable[[], dict[str, int]] | None = None) -> None:
        self.name = name
        self.config = config
        self._sink = sink
        self._extra_drops = extra_drops  # the producer's own counters (a browser's bad frames, ...)
        self.closed = False
        self.audio_q = DropOldestQueue(config.audio_queue)
        self.frames = FrameRing(config.video_ring)
        t0 = time.monotonic_ns() if t0_ns is None else t0_ns
        self.worker = Worker(parts["session"], Segmenter(config.segmenter), parts["transcriber"], self.frames,
                             config, t0, faces=parts.get("faces"), speakers=parts.get("speakers"),
                             turn_model=parts.get("turn_model"), clock=time.monotonic_ns)
        self.worker.defer_windows = True  # the scheduler embeds every dialogue's speaker windows in one call
        self.audio_q.on_drop = self.worker.chunk_lost
        self.wants_interim = config.interim
        self._reset_requested = threading.Event()
        self.input_ended = threading.Event()  # the producer has no more audio (a media file played through)
        self.done = threading.Event()  # everything processed after the input ended, or the dialogue failed
        self.failure: str | None = None  # why the scheduler gave up on this dialogue, if it did
        self.last_metrics_ns = t0
        self._chunk_s = 0.064  # the last chunk's length: the backlog is counted in chunks

    # ------------------------------------------------------------------ producers and transport
    def emit(self, msg: dict[str, Any]) -> None:
        if not self.closed:
            self._sink(msg)

    def deliver(self) -> None:
        """The worker's events since the last delivery, to the sink as protocol messages, in order.
        A failing sink is logged: it must not stop the dialogue."""
        for event in self.worker.take_events():
            try:
                self.emit(event.message())
            except Exception:  # noqa: BLE001 - a broken consumer must not stop the worker
                logger.exception("event consumer failed")

    def hello(self, **extra: Any) -> dict[str, Any]:
        return self.worker.hello(interim=self.wants_interim, **extra)

    def put_audio(self, chunk: AudioChunk) -> None:
        """Never blocks: the oldest chunk is dropped when the queue is full (a live source)."""
        self._chunk_s = chunk.samples.shape[0] / chunk.sample_rate or self._chunk_s
        self.audio_q.put(chunk)

    def put_audio_wait(self, chunk: AudioChunk) -> None:
        """Blocks while the queue is full (a file played as fast as it is processed); returns at
        once, the chunk not queued, once the dialogue is closed (nobody will make room)."""
        self._chunk_s = chunk.samples.shape[0] / chunk.sample_rate or self._chunk_s
        self.audio_q.put_wait(chunk, give_up=lambda: self.closed)

    def end_input(self) -> None:
        self.input_ended.set()

    def request_reset(self) -> None:
        """The scheduler resets this dialogue before its next audio. Idempotent."""
        self._reset_requested.set()

    def set_interim(self, enabled: bool) -> None:
        self.wants_interim = enabled

    # ------------------------------------------------------------------ the scheduler side
    def take_reset(self) -> bool:
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            return True
        return False

    def backlog_s(self) -> float:
        """Seconds of audio waiting."""
        return self.audio_q.qsize() * self._chunk_s

    def drops(self) -> dict[str, int]:
        return {"audio": self.audio_q.dropped, **(self._extra_drops() if self._extra_drops is not None else {})}

    def metrics(self) -> dict[str, Any]:
        return self.worker.metrics({"audio": self.audio_q.qsize(), "video": len(self.frames)}, self.drops())

    def counters(self) -> dict[str, Any]:
        """What /healthz shows of this dialogue: its backlog, queue, drops, utterances and real-time factor."""
        w = self.worker
        return {"name": self.name, "backlog_s": round(self.backlog_s(), 3), "audio_queue": self.audio_q.qsize(),
                "drops": self.drops(), "utterances": w.next_id,
                "rtf": round(w.busy_ns / w.audio_ns, 3) if w.audio_ns else None, "failure": self.failure}

    def fail(self, reason: str) -> None:
        self.failure = reason
        self.done.set()

    def close(self) -> None:
        self.closed = True
        self.worker.close()
