"""The live pipeline for a source the server reads (a media file, or its camera and microphone):
capture threads -> bounded queue -> one inference thread driving a `Worker` -> events; plus the
face thread that publishes live `face` events between utterances. Threads and lifecycle only:
the dialogue logic is in `emostream.realtime.worker`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from emostream.realtime import protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.faces import FaceTracker
from emostream.realtime.segmenter import Segmenter
from emostream.realtime.session import DialogueSession
from emostream.realtime.worker import DropOldestQueue, EventCallback, FrameRing, Worker

logger = logging.getLogger(__name__)

_SENTINEL = object()
CONTROL_QUEUE = 16  # pending reset/config commands; more are refused (a reset is idempotent anyway)


class Pipeline:
    """Threads and lifecycle around `Worker`. Use as a context manager, or start()/close()."""

    def __init__(self, config: PipelineConfig, on_event: EventCallback, components: dict[str, Any] | None = None) -> None:
        self.config = config
        self.on_event = on_event
        self._components = components
        self.audio_q = DropOldestQueue(config.audio_queue)
        self.frames = FrameRing(config.video_ring)
        self._stop = threading.Event()
        self._ended = threading.Event()  # the media source reached its end
        self.done = threading.Event()  # the worker has processed everything and stopped
        self._thread: threading.Thread | None = None
        self._face_thread: threading.Thread | None = None
        self.failure: str | None = None  # why the inference thread died, if it did
        self._sources: list[Any] = []
        self.worker: Worker | None = None
        self.modalities: tuple[str, ...] = ()
        self._control: queue.Queue[dict[str, Any]] = queue.Queue(CONTROL_QUEUE)

    # ------------------------------------------------------------------ set-up
    def _build(self) -> dict[str, Any]:
        if self._components is not None:
            return self._components
        from emostream.realtime.runtime import build_components

        return build_components(self.config)

    def hello(self) -> dict[str, Any]:
        assert self.worker is not None
        return self.worker.hello(interim=self.config.interim)

    def start(self) -> Pipeline:
        """Build the parts, start the sources and threads. A failure releases whatever was already
        started (a camera thread keeps no process alive) and raises."""
        try:
            return self._start()
        except BaseException:
            logger.debug("pipeline start failed; releasing what was started", exc_info=True)
            self.close(timeout=2.0)
            raise

    def _start(self) -> Pipeline:
        parts = self._build()
        session: DialogueSession = parts["session"]
        t0 = time.monotonic_ns()
        faces: FaceTracker | None = parts.get("faces")
        self.worker = Worker(session, Segmenter(self.config.segmenter), parts["transcriber"], self.frames,
                             self.on_event, self.config, t0, faces=faces, speakers=parts.get("speakers"),
                             turn_model=parts.get("turn_model"))
        self.audio_q.on_drop = self.worker.chunk_lost  # a dropped chunk flags its utterance audio_dropped
        self.modalities = tuple(session.model.modalities)
        wants_video = "visual" in self.modalities or faces is not None
        video_on = False  # a video source is running
        if self.config.media:
            from emostream.realtime.sources import MediaFileSource

            src = MediaFileSource(self.config.media, self.config.video, realtime=self.config.realtime,
                                  loop=self.config.loop)
            if wants_video and not src.has_video:
                self._status("camera_missing", "the media file has no video: running without faces", "warning")
            video_on = wants_video and src.has_video
            put = self.audio_q.put if self.config.realtime else self.audio_q.put_wait
            self.worker.t0_ns = time.monotonic_ns()  # stream time 0 = the file's start (opening it took a while)
            src.start(put, self.frames.add if wants_video else None, on_end=self._ended.set)
            self._sources.append(src)
        else:
            from emostream.realtime.sources import MicrophoneSource, WebcamSource

            if wants_video:
                cam = WebcamSource(self.config.camera)
                if cam.available():
                    cam.start(self.frames.add, self._status)
                    self._sources.append(cam)
                    video_on = True
                else:
                    self._status("camera_missing", f"no camera {self.config.camera}: running audio-only", "warning")
            mic = MicrophoneSource()
            mic.start(self.audio_q.put, self._status)
            self._sources.append(mic)
        self._thread = threading.Thread(target=self._run, name="inference-worker", daemon=False)
        self._thread.start()
        if faces is not None and video_on:
            self._face_thread = threading.Thread(target=self._run_faces, args=(faces,), name="face-expert",
                                                 daemon=False)
            self._face_thread.start()
        return self

    # ------------------------------------------------------------------ the face thread
    def _run_faces(self, faces: FaceTracker) -> None:
        """Between utterances too: analyse new frames at the tracker's rate, publish `face` events."""
        assert self.worker is not None
        while not self._stop.wait(faces.period_ns / 2e9):
            self.worker.live_face()

    def _status(self, code: str, message: str, level: str = "warning") -> None:
        logger.warning("%s: %s", code, message)
        self.on_event(protocol.status(code=code, message=message, level=level))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ control from clients
    def reset(self) -> bool:
        """Ask the worker to reset the dialogue before its next chunk. False: too many pending."""
        return self._command({"type": "reset"})

    def set_interim(self, enabled: bool) -> bool:
        return self._command({"type": "config", "interim": enabled})

    def _command(self, cmd: dict[str, Any]) -> bool:
        try:
            self._control.put_nowait(cmd)
            return True
        except queue.Full:
            logger.warning("control queue full: %s dropped", cmd["type"])
            return False

    # ------------------------------------------------------------------ the worker thread
    def _run(self) -> None:
        worker = self.worker
        assert worker is not None
        try:
            self._loop(worker)
        except Exception as e:  # noqa: BLE001 - the worker thread ends here: /healthz says why
            self.failure = f"the inference worker died: {type(e).__name__}: {e}"
            logger.exception("inference worker died")
        finally:
            worker.emit(worker.metrics({"audio": self.audio_q.qsize(), "video": len(self.frames)},
                                       {"audio": self.audio_q.dropped}))
            worker.close()
            self.done.set()

    def _loop(self, worker: Worker) -> None:
        last_metrics = time.monotonic()
        while not self._stop.is_set():
            while not self._control.empty():
                cmd = self._control.get_nowait()
                try:
                    if cmd["type"] == "reset":
                        worker.reset()
                    elif cmd["type"] == "config":
                        worker.interim = bool(cmd["interim"])
                except Exception:  # noqa: BLE001 - a failed reset must not end the dialogue
                    logger.exception("control %s failed", cmd["type"])
                    worker.emit(protocol.error("internal", f"the pipeline failed to {cmd['type']}"))
            try:
                item = self.audio_q.get(timeout=0.05)
            except queue.Empty:
                if self._ended.is_set():
                    try:
                        worker.flush()
                    except Exception:  # noqa: BLE001 - report it; the source has ended anyway
                        logger.exception("worker failed flushing the last utterance")
                        worker.emit(protocol.error("internal", "the pipeline failed on the last utterance"))
                    break
                continue
            if item is _SENTINEL:
                break
            worker.backlog_s = self.audio_q.qsize() * item.samples.shape[0] / item.sample_rate
            try:
                worker.process(item)
            except Exception:  # noqa: BLE001 - one bad chunk must not end the session
                logger.exception("worker failed on a chunk; continuing")
                worker.emit(protocol.error("internal", "the pipeline failed on one audio chunk"))
            if time.monotonic() - last_metrics >= self.config.metrics_interval_s:
                last_metrics = time.monotonic()
                worker.emit(worker.metrics({"audio": self.audio_q.qsize(), "video": len(self.frames)},
                                           {"audio": self.audio_q.dropped}))

    def health(self) -> tuple[bool, str]:
        """(alive, reason): the inference thread runs, or ended because its source did."""
        if self.failure is not None:
            return False, self.failure
        if self._thread is not None and not self._thread.is_alive() and not self.done.is_set():
            return False, "the inference worker is not running"
        return True, "running" if not self.done.is_set() else "the source has ended"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a non-looping media file is fully processed."""
        return self.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for src in self._sources:
            src.stop()
        self.audio_q.put(_SENTINEL)
        if self._thread is None and self.worker is not None:  # never started: its own pool only
            self.worker.close()
        for thread in (self._thread, self._face_thread):
            if thread is not None:
                thread.join(timeout)
                if thread.is_alive():
                    logger.warning("%s did not stop within %.1fs", thread.name, timeout)

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()




# ---------------------------------------------------------------------------------------- server glue
class PipelineEventSource:
    """The `EventSource` that `emostream serve` / `demo` drive: a Pipeline publishing to the server."""

    def __init__(self, config: PipelineConfig, components: dict[str, Any] | None = None) -> None:
        self.config = config
        self._components = components
        self.pipeline: Pipeline | None = None
        self._publish: Callable[[dict[str, Any]], object] | None = None

    def start(self, publish: Callable[[dict[str, Any]], object]) -> None:
        self._publish = publish
        self.pipeline = Pipeline(self.config, lambda msg: publish(msg), self._components)
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
