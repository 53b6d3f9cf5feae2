"""The server's own source (a media file, or its camera and microphone) as a `Dialogue`: capture
threads are its producers, and a `Scheduler` drives it (the server's one scheduler, shared with
the browser sessions, or one of its own for `emostream run`). Sources and lifecycle only: the
serving state is in `emostream.realtime.dialogue`, the dialogue logic in `emostream.realtime.worker`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from emostream.realtime import protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.dialogue import Dialogue
from emostream.realtime.scheduler import Scheduler
from emostream.realtime.worker import DropOldestQueue, EventCallback, FrameRing, Worker

logger = logging.getLogger(__name__)


class Pipeline:
    """Sources into one dialogue. Use as a context manager, or start()/close().

    `scheduler`: the scheduler that drives the dialogue (the server's); None: the pipeline starts
    and stops one of its own."""

    def __init__(self, config: PipelineConfig, on_event: EventCallback, components: dict[str, Any] | None = None,
                 scheduler: Scheduler | None = None) -> None:
        self.config = config
        self.on_event = on_event
        self._components = components
        self._own_scheduler = scheduler is None
        self.scheduler = scheduler if scheduler is not None else Scheduler(metrics_interval_s=config.metrics_interval_s)
        self.dialogue: Dialogue | None = None
        self._sources: list[Any] = []
        self.modalities: tuple[str, ...] = ()

    # ------------------------------------------------------------------ set-up
    def _build(self) -> dict[str, Any]:
        if self._components is not None:
            return self._components
        from emostream.realtime.runtime import build_components

        return build_components(self.config)

    def _started(self) -> Dialogue:
        assert self.dialogue is not None, "the pipeline has not started"
        return self.dialogue

    @property
    def worker(self) -> Worker:
        return self._started().worker

    @property
    def audio_q(self) -> DropOldestQueue:
        return self._started().audio_q

    @property
    def frames(self) -> FrameRing:
        return self._started().frames

    @property
    def done(self) -> threading.Event:
        """Set once the source has ended and every utterance has its final (or the dialogue failed)."""
        return self._started().done

    def hello(self) -> dict[str, Any]:
        return self._started().hello()

    def start(self) -> Pipeline:
        """Build the parts, start the sources and the scheduler. A failure releases whatever was
        already started (a camera thread keeps no process alive) and raises."""
        try:
            return self._start()
        except BaseException:
            logger.debug("pipeline start failed; releasing what was started", exc_info=True)
            self.close(timeout=2.0)
            raise

    def _start(self) -> Pipeline:
        parts = self._build()
        dialogue = self.dialogue = Dialogue("watched", parts, self.config, self.on_event)
        faces = parts.get("faces")
        self.modalities = tuple(parts["session"].model.modalities)
        wants_video = "visual" in self.modalities or faces is not None
        if self.config.media:
            from emostream.realtime.sources import MediaFileSource

            src = MediaFileSource(self.config.media, self.config.video, realtime=self.config.realtime,
                                  loop=self.config.loop)
            if wants_video and not src.has_video:
                self._status("camera_missing", "the media file has no video: running without faces", "warning")
            put = dialogue.put_audio if self.config.realtime else dialogue.put_audio_wait
            dialogue.worker.t0_ns = time.monotonic_ns()  # stream time 0 = the file's start (opening it took a while)
            src.start(put, dialogue.frames.add if wants_video and src.has_video else None, on_end=dialogue.end_input)
            self._sources.append(src)
        else:
            from emostream.realtime.sources import MicrophoneSource, WebcamSource

            if wants_video:
                cam = WebcamSource(self.config.camera)
                if cam.available():
                    cam.start(dialogue.frames.add, self._status)
                    self._sources.append(cam)
                else:
                    self._status("camera_missing", f"no camera {self.config.camera}: running audio-only", "warning")
            mic = MicrophoneSource()
            mic.start(dialogue.put_audio, self._status)
            self._sources.append(mic)
        self.scheduler.add(dialogue)
        if self._own_scheduler:
            self.scheduler.start()
        return self

    def _status(self, code: str, message: str, level: str = "warning") -> None:
        logger.warning("%s: %s", code, message)
        self.on_event(protocol.status(code=code, message=message, level=level))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ control from clients
    def reset(self) -> None:
        """The dialogue resets before its next chunk."""
        if self.dialogue is not None:
            self.dialogue.request_reset()

    # ------------------------------------------------------------------ lifecycle
    def health(self) -> tuple[bool, str]:
        """(alive, reason): the dialogue is served, or ended because its source did."""
        if self.dialogue is None:
            return False, "the pipeline has not started"
        if self.dialogue.failure is not None:
            return False, self.dialogue.failure
        if self.dialogue.done.is_set():
            return True, "the source has ended"
        if not self.scheduler.alive:
            return False, "the dialogue scheduler is not running"
        return True, "running"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a non-looping media file is fully processed."""
        return self.dialogue.done.wait(timeout) if self.dialogue is not None else False

    def close(self, timeout: float = 5.0) -> None:
        if self.dialogue is not None:
            self.dialogue.close()  # first: a source blocked on its full queue gives up instead of hanging
            self.scheduler.remove(self.dialogue)
        for src in self._sources:
            src.stop()
        if self._own_scheduler:
            self.scheduler.close(timeout)

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- server glue
class PipelineEventSource:
    """The `EventSource` that `emostream serve` / `demo` drive: a Pipeline publishing to the server."""

    def __init__(self, config: PipelineConfig, components: dict[str, Any] | None = None,
                 scheduler: Scheduler | None = None) -> None:
        self.config = config
        self._components = components
        self._scheduler = scheduler
        self.pipeline: Pipeline | None = None

    def start(self, publish: Callable[[dict[str, Any]], object]) -> None:
        self.pipeline = Pipeline(self.config, lambda msg: publish(msg), self._components, self._scheduler)
        self.pipeline.start()
        publish(self.pipeline.hello())

    def on_client_message(self, message: Any, client_id: str) -> None:
        """Reset from any client resets the dialogue; interim filtering is per client, in the server."""
        if self.pipeline is not None and isinstance(message, protocol.Reset):
            logger.info("reset requested by client %s", client_id)
            self.pipeline.reset()

    def wait(self, timeout: float | None = None) -> bool:
        return self.pipeline.wait(timeout) if self.pipeline is not None else False

    def health(self) -> tuple[bool, str]:
        return self.pipeline.health() if self.pipeline is not None else (False, "the pipeline has not started")

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
