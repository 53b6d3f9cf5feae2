"""The live pipeline: capture threads -> bounded queue -> one inference worker -> events.

The worker owns the segmenter, ASR, the feature extractors, the model and the dialogue state
(ownership instead of locks). Audio reaches it through a bounded drop-oldest queue; video frames
go into a time-indexed ring from which the worker takes each utterance's span. Every event is a
protocol v1 message (a dict) handed to `on_event`, the same messages the websocket sends.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emostream.realtime import protocol
from emostream.realtime.faces import FaceTracker
from emostream.realtime.segmenter import (
    EndpointPending,
    Segmenter,
    SegmenterConfig,
    SpeechEnd,
    SpeechResumed,
    SpeechStart,
)
from emostream.realtime.session import DialogueSession
from emostream.realtime.speakers import SpeakerTracker
from emostream.realtime.types import AudioChunk, Prediction, Utterance, VideoFrame, samples_to_ns

logger = logging.getLogger(__name__)

EventCallback = Callable[[dict[str, Any]], None]
_SENTINEL = object()
PEEK_SAMPLES = 4 * 16_000  # an interim's speaker guess looks at the last 4 s (bounded cost)


@dataclass(frozen=True)
class PipelineConfig:
    media: str | None = None  # a media file standing in for camera + microphone; None: the devices
    video: str | None = None  # optional separate video file for a wav
    realtime: bool = True  # pace a media file by the wall clock
    loop: bool = False  # replay a media file forever
    camera: int = 0
    checkpoint: str | None = None  # None: the bundled checkpoint
    engine: str = "onnx"  # torch | onnx | tensorrt
    engine_dir: str | None = None  # exported engines (default: export the checkpoint on first use)
    asr_model: str = "whisper-tiny.en"
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    interim: bool = True
    interim_interval_s: float = 1.0
    speaker_mode: str = "voice"  # voice (embeddings + online clustering) | pitch | single
    face_expert: str | None = "fer-mini-xception"  # None: no face expert (faces only if the model uses them)
    face_weight: float = 0.5  # weight of the face expert in the fused distribution (see realtime/fusion.py)
    face_fps: float = 5.0  # frames a second the detector and the expert look at
    face_detector: str = "mtcnn"  # mtcnn (recall 0.99 on the benchmark set) | haar (0.47; no extra package)
    face_event_hz: float = 4.0  # live `face` events a second at most
    audio_queue: int = 512  # chunks of 32 ms: 16 s of audio
    video_ring: int = 256  # frames kept for utterance spans
    metrics_interval_s: float = 2.0


class DropOldestQueue:
    """A bounded queue that drops its oldest item when full, counting the drops."""

    def __init__(self, maxsize: int) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize)
        self.dropped = 0
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        with self._lock:
            while True:
                try:
                    self._q.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._q.get_nowait()
                        self.dropped += 1
                    except queue.Empty:
                        pass

    def put_wait(self, item: Any) -> None:
        """Block until there is room (back-pressure for files played as fast as possible)."""
        self._q.put(item)

    def get(self, timeout: float) -> Any:
        return self._q.get(timeout=timeout)

    def qsize(self) -> int:
        return self._q.qsize()


class FrameRing:
    """The last K video frames; the worker takes the frames within an utterance's time span."""

    def __init__(self, maxlen: int) -> None:
        self._frames: collections.deque[VideoFrame] = collections.deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def add(self, frame: VideoFrame) -> None:
        with self._lock:
            self._frames.append(frame)

    def between(self, t0_ns: int, t1_ns: int) -> tuple[VideoFrame, ...]:
        with self._lock:
            return tuple(f for f in self._frames if t0_ns <= f.t_ns < t1_ns)

    def until(self, t1_ns: int) -> tuple[VideoFrame, ...]:
        """The frames kept that are older than t1_ns."""
        with self._lock:
            return tuple(f for f in self._frames if f.t_ns < t1_ns)

    def __len__(self) -> int:
        return len(self._frames)


class Worker:
    """The inference loop's logic: audio chunks in, protocol events out. Runs in one thread."""

    def __init__(self, session: DialogueSession, segmenter: Segmenter, transcriber: Any, frames: FrameRing,
                 on_event: EventCallback, config: PipelineConfig, t0_ns: int,
                 faces: FaceTracker | None = None, speakers: SpeakerTracker | None = None) -> None:
        from emostream.realtime.asr import EarlyTranscriber

        self.session = session
        self.segmenter = segmenter
        self.early = EarlyTranscriber.for_segmenter(transcriber, config.segmenter)
        self.transcriber = transcriber
        self.frames = frames
        self.on_event = on_event
        self.config = config
        self.t0_ns = t0_ns
        self.speakers = speakers or SpeakerTracker(session.model.n_parties, config.speaker_mode)
        self.faces = faces
        # the speaker embedding of a probable utterance end, computed beside the early ASR
        self._voice_pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="speaker-embedding")
        self._early_voice: concurrent.futures.Future[Any] | None = None
        self.interim = config.interim
        self.next_id = 0
        self.current_id: int | None = None
        self.current_start_ns = 0
        self.last_interim_ns = 0
        self.audio_ns = 0  # audio consumed (for the real-time factor)
        self.busy_ns = 0
        self.timings: dict[str, float] = {}
        self.finals: list[Prediction] = []

    def ms(self, t_ns: int) -> float:
        return max(0.0, (t_ns - self.t0_ns) / 1e6)

    def emit(self, msg: dict[str, Any]) -> None:
        try:
            self.on_event(msg)
        except Exception:  # noqa: BLE001 - a broken consumer must not stop the worker
            logger.exception("event consumer failed")

    def close(self) -> None:
        self._voice_pool.shutdown(wait=True, cancel_futures=True)

    def reset(self) -> None:
        self._early_voice = None
        self.session.reset()
        self.speakers.reset()
        self.early.reset()
        self.segmenter.reset()
        if self.faces is not None:
            self.faces.reset()
        self.current_id = None
        self.emit(protocol.status(code="reset", message="dialogue state reset"))

    def process(self, chunk: AudioChunk) -> None:
        t_start = time.perf_counter_ns()
        samples = chunk.as_float32()
        self.audio_ns += samples_to_ns(samples.size, chunk.sample_rate)
        for event in self.segmenter.push(samples, chunk.t0_ns):
            self.handle(event)
        self.maybe_interim(chunk.t0_ns + samples_to_ns(samples.size, chunk.sample_rate))
        self.busy_ns += time.perf_counter_ns() - t_start

    def flush(self) -> None:
        for event in self.segmenter.flush():
            self.handle(event)

    def handle(self, event: Any) -> None:
        if isinstance(event, SpeechStart):
            self.current_id = self.next_id
            self.next_id += 1
            self.current_start_ns = event.t_ns
            self.last_interim_ns = event.t_ns
            audio = self.segmenter.active_audio()
            speaker = self.speakers.peek(audio[-PEEK_SAMPLES:]) if audio is not None and audio.size else "?"  # a guess
            self.emit(protocol.utterance(event="start", utterance_id=self.current_id, speaker=speaker,
                                         t_ms=self.ms(event.t_ns)))
            return
        job = self.early.on_event(event)
        if job is not None and isinstance(event, EndpointPending):
            t = time.perf_counter()
            self._early_voice = self._voice_pool.submit(self.speakers.early, event)  # beside the early ASR
            job.run()  # early ASR: overlaps the endpoint wait (the audio keeps queueing meanwhile)
            self.timings["early_asr_ms"] = round((time.perf_counter() - t) * 1000, 2)
        if isinstance(event, SpeechResumed):
            self._early_voice = None
        if isinstance(event, SpeechEnd):
            self.finish(event)

    def finish(self, end: SpeechEnd) -> None:
        t_detect = time.monotonic_ns()
        uid = self.current_id if self.current_id is not None else self.next_id
        if self.current_id is None:
            self.next_id += 1
        self.current_id = None
        t = time.perf_counter()
        transcript, reused = self.early.finish(end, uid)
        asr_ms = 0.0 if reused else round((time.perf_counter() - t) * 1000, 2)
        t = time.perf_counter()
        early_voice, self._early_voice = self._early_voice, None
        speaker = self.speakers.assign_final(end, early_voice.result() if early_voice is not None else None)
        speaker_ms = round((time.perf_counter() - t) * 1000, 2)
        utt = Utterance(id=uid, audio=end.audio, t_start_ns=end.t_start_ns, t_end_ns=end.t_end_ns,
                        frames=self.frames.between(end.t_start_ns, end.t_end_ns), speaker=speaker)
        flags = ["forced_split"] if end.forced else []
        timings = {"asr_ms": asr_ms, "asr_reused": float(reused), "speaker_ms": speaker_ms,
                   "endpoint_wait_ms": round((t_detect - end.speech_end_ns) / 1e6, 2)}
        pred = self.session.predict(utt, transcript.text, final=True, extra_flags=flags, timings_ms=timings,
                                    face=self.face_of(end.t_start_ns, end.t_end_ns, timings))
        now = time.monotonic_ns()
        pred.timings_ms["compute_ms"] = round((now - t_detect) / 1e6, 2)
        pred.timings_ms["total_ms"] = round((now - end.speech_end_ns) / 1e6, 2)
        self.timings.update({k: v for k, v in pred.timings_ms.items() if k.endswith("_ms")})
        self.finals.append(pred)
        self.emit(protocol.transcript(utterance_id=uid, speaker=speaker, text=transcript.text,
                                      language=transcript.language))
        msg = protocol.prediction_from(pred, t0_ns=self.t0_ns)
        msg["latency_ms"] = pred.timings_ms["total_ms"]  # end of speech -> final prediction
        self.emit(msg)
        self.emit(protocol.utterance(event="end", utterance_id=uid, speaker=speaker, t_ms=self.ms(end.t_end_ns)))

    def maybe_interim(self, now_stream_ns: int) -> None:
        if not self.interim or self.current_id is None or not self.segmenter.in_speech:
            return
        if now_stream_ns - self.last_interim_ns < self.config.interim_interval_s * 1e9:
            return
        self.last_interim_ns = now_stream_ns
        audio = self.segmenter.active_audio()
        if audio is None or audio.size == 0:
            return
        t = time.perf_counter()
        text = self.transcriber.transcribe(audio, self.current_id).text
        asr_ms = round((time.perf_counter() - t) * 1000, 2)
        speaker = self.speakers.peek(audio[-PEEK_SAMPLES:])  # partial audio: the tracker learns only from finals
        start = now_stream_ns - samples_to_ns(audio.size)
        utt = Utterance(id=self.current_id, audio=audio, t_start_ns=start, t_end_ns=now_stream_ns,
                        frames=self.frames.between(start, now_stream_ns), speaker=speaker)
        timings = {"asr_ms": asr_ms}
        pred = self.session.predict(utt, text, final=False, timings_ms=timings,
                                    face=self.face_of(start, now_stream_ns, timings))
        self.emit(protocol.prediction_from(pred, t0_ns=self.t0_ns, now_ns=time.monotonic_ns()))

    def face_of(self, t0_ns: int, t1_ns: int, timings: dict[str, float]) -> Any:
        """The face expert's expression over [t0, t1): (E,) or None (no face, or no face expert)."""
        if self.faces is None:
            return None
        t = time.perf_counter()
        self.faces.catch_up(self.frames.until(t1_ns))  # frames the face thread has not reached yet
        span = self.faces.expression(t0_ns, t1_ns)
        timings["face_ms"] = round((time.perf_counter() - t) * 1000, 3)
        timings["face_frames"] = float(span.n_with_face)
        return span.probs

    def metrics(self, queues: dict[str, int], drops: dict[str, int]) -> dict[str, Any]:
        rtf = self.busy_ns / self.audio_ns if self.audio_ns else None
        return protocol.metrics(queues=queues, drops=drops, timings_ms=self.timings, rtf=rtf,
                                t_ms=self.ms(time.monotonic_ns()))


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
        self._sources: list[Any] = []
        self.worker: Worker | None = None
        self.modalities: tuple[str, ...] = ()
        self._control: queue.Queue[dict[str, Any]] = queue.Queue()

    # ------------------------------------------------------------------ set-up
    def _build(self) -> dict[str, Any]:
        if self._components is not None:
            return self._components
        from emostream.realtime.runtime import build_components

        return build_components(self.config)

    def hello(self) -> dict[str, Any]:
        assert self.worker is not None
        session = self.worker.session
        model = session.model
        fusion = session.face_fusion
        return protocol.hello(
            labels=model.labels, model=getattr(model, "name", "mcncl"), modalities=self.modalities,
            interim=self.config.interim, live_modalities=("text", "face") if fusion is not None else ("text",),
            experts={"face": self.config.face_expert if fusion is not None else None,
                     "speaker": self.worker.speakers.mode},
            fusion=fusion.describe() if fusion is not None else None,
        )

    def start(self) -> Pipeline:
        parts = self._build()
        session: DialogueSession = parts["session"]
        t0 = time.monotonic_ns()
        faces: FaceTracker | None = parts.get("faces")
        self.worker = Worker(session, Segmenter(self.config.segmenter), parts["transcriber"], self.frames,
                             self.on_event, self.config, t0, faces=faces, speakers=parts.get("speakers"))
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
            self.worker.t0_ns = time.monotonic_ns()  # stream time 0 = the file's start (decoding took a while)
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
        worker = self.worker
        label_map = worker.session.face_fusion.label_map if worker.session.face_fusion is not None else None
        min_gap_ns = int(1e9 / self.config.face_event_hz)
        last_sent_t: int | None = None
        last_sent_at = 0
        while not self._stop.wait(faces.period_ns / 2e9):
            try:
                faces.catch_up(self.frames.until(time.monotonic_ns() + 1))
            except Exception:  # noqa: BLE001 - the face path must not take the pipeline down
                logger.exception("face analysis failed")
                continue
            obs = faces.latest()
            now = time.monotonic_ns()
            if obs is None or obs.t_ns == last_sent_t or now - last_sent_at < min_gap_ns or label_map is None:
                continue
            last_sent_t, last_sent_at = obs.t_ns, now
            probs = label_map.distribution(obs.probs[0]) if obs.n_faces else None
            worker.emit(protocol.face(
                t_ms=worker.ms(obs.t_ns), probs=None if probs is None else dict(zip(worker.session.labels, probs)),
                box=obs.boxes[0] if obs.n_faces else None, frame_size=obs.frame_size, n_faces=obs.n_faces))

    def _status(self, code: str, message: str, level: str = "warning") -> None:
        logger.warning("%s: %s", code, message)
        self.on_event(protocol.status(code=code, message=message, level=level))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ control from clients
    def reset(self) -> None:
        self._control.put({"type": "reset"})

    def set_interim(self, enabled: bool) -> None:
        self._control.put({"type": "config", "interim": enabled})

    # ------------------------------------------------------------------ the worker thread
    def _run(self) -> None:
        worker = self.worker
        assert worker is not None
        last_metrics = time.monotonic()
        try:
            while not self._stop.is_set():
                while not self._control.empty():
                    cmd = self._control.get_nowait()
                    if cmd["type"] == "reset":
                        worker.reset()
                    elif cmd["type"] == "config":
                        worker.interim = bool(cmd["interim"])
                try:
                    item = self.audio_q.get(timeout=0.05)
                except queue.Empty:
                    if self._ended.is_set():
                        worker.flush()
                        break
                    continue
                if item is _SENTINEL:
                    break
                try:
                    worker.process(item)
                except Exception:  # noqa: BLE001 - one bad chunk must not end the session
                    logger.exception("worker failed on a chunk; continuing")
                    worker.emit(protocol.error("internal", "the pipeline failed on one audio chunk"))
                if time.monotonic() - last_metrics >= self.config.metrics_interval_s:
                    last_metrics = time.monotonic()
                    worker.emit(worker.metrics({"audio": self.audio_q.qsize(), "video": len(self.frames)},
                                               {"audio": self.audio_q.dropped}))
        finally:
            worker.emit(worker.metrics({"audio": self.audio_q.qsize(), "video": len(self.frames)},
                                       {"audio": self.audio_q.dropped}))
            worker.close()
            self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a non-looping media file is fully processed."""
        return self.done.wait(timeout)

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for src in self._sources:
            src.stop()
        self.audio_q.put(_SENTINEL)
        for thread in (self._thread, self._face_thread):
            if thread is not None:
                thread.join(timeout)
                if thread.is_alive():
                    logger.warning("%s did not stop within %.1fs", thread.name, timeout)

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- CLI
def add_model_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", help="model checkpoint (.safetensors); default: the bundled one")
    p.add_argument("--engine", default="onnx", choices=("torch", "onnx", "tensorrt"), help="model backend")
    p.add_argument("--engine-dir", help="folder of exported engines (default: export on first use)")
    p.add_argument("--asr", default="whisper-tiny.en", help="ASR model: whisper-tiny.en, whisper-base or a path")
    p.add_argument("--no-interim", action="store_true", help="final predictions only")
    p.add_argument("--end-silence-ms", type=int, default=300, help="silence that ends an utterance")
    p.add_argument("--speakers", default="voice", choices=("voice", "pitch", "single"),
                   help="speaker tracking: voice embeddings (default), median pitch, or one speaker")
    p.add_argument("--face-expert", default="fer-mini-xception",
                   help="facial-expression expert fused with the model ('none' to turn it off)")
    p.add_argument("--face-weight", type=float, default=0.5,
                   help="weight of the face expert in the fused distribution (0 shows it but fuses nothing)")
    p.add_argument("--face-fps", type=float, default=5.0, help="frames a second the face expert looks at")
    p.add_argument("--face-detector", default="mtcnn", choices=("mtcnn", "haar"),
                   help="face detector of the live face path (mtcnn needs `pip install --no-deps facenet-pytorch`)")


def config_from_args(args: argparse.Namespace, **extra: Any) -> PipelineConfig:
    seg = SegmenterConfig(end_silence_ms=args.end_silence_ms)
    return PipelineConfig(
        media=str(args.media) if getattr(args, "media", None) else None,
        checkpoint=args.checkpoint, engine=args.engine, engine_dir=args.engine_dir, asr_model=args.asr,
        segmenter=seg, interim=not args.no_interim, speaker_mode=args.speakers,
        face_expert=None if str(args.face_expert).lower() == "none" else args.face_expert,
        face_weight=args.face_weight, face_fps=args.face_fps, face_detector=args.face_detector, **extra,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream run", description="Run the pipeline headless, one JSON line per event.")
    p.add_argument("--media", type=Path, help="media file played as camera + microphone")
    p.add_argument("--source", choices=("media", "webcam"), default=None, help="webcam: the camera and microphone")
    p.add_argument("--jsonl", action="store_true", help="print one protocol v1 JSON message per line")
    p.add_argument("--fast", action="store_true", help="play the media file as fast as possible")
    add_model_arguments(p)
    args = p.parse_args(argv)
    if args.source == "webcam":
        args.media = None
    elif args.media is None:
        p.error("give --media FILE or --source webcam")
    out_lock = threading.Lock()

    def on_event(msg: dict[str, Any]) -> None:
        if not args.jsonl and msg["type"] not in ("prediction", "status", "error"):
            return
        if not args.jsonl and msg["type"] == "prediction" and not msg["final"]:
            return
        line = protocol.encode(msg) if args.jsonl else _human(msg)
        with out_lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    try:
        pipeline = Pipeline(config_from_args(args, realtime=not args.fast), on_event)
        pipeline.start()
    except Exception as e:  # noqa: BLE001 - a clear message instead of a traceback
        sys.stderr.write(f"emostream run: {e}\n")
        return 1
    on_event(pipeline.hello())
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and not pipeline.done.is_set():
        stop.wait(0.1)
    pipeline.close()
    return 0


def _human(msg: dict[str, Any]) -> str:
    if msg["type"] == "prediction":
        return (f"[{msg['t_start_ms'] / 1000:7.2f}s] speaker {msg['speaker']}: {msg['label']:<9} "
                f"{msg['confidence']:.2f}  {msg['text']}")
    return json.dumps(msg)




# ---------------------------------------------------------------------------------------- server glue
class PipelineEventSource:
    """The `EventSource` that `emostream serve` / `demo` drive: a Pipeline publishing to the server."""

    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.pipeline: Pipeline | None = None
        self._publish: Callable[[dict[str, Any]], object] | None = None

    def start(self, publish: Callable[[dict[str, Any]], object]) -> None:
        self._publish = publish
        self.pipeline = Pipeline(self.config, lambda msg: publish(msg))
        self.pipeline.start()
        publish(self.pipeline.hello())

    def on_client_message(self, message: Any, client_id: str) -> None:
        """Reset from any client resets the dialogue; interim filtering is per client, in the server."""
        if self.pipeline is not None and type(message).__name__ == "Reset":
            logger.info("reset requested by client %s", client_id)
            self.pipeline.reset()

    def wait(self, timeout: float | None = None) -> bool:
        return self.pipeline.wait(timeout) if self.pipeline is not None else False

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()


def microphone_available() -> bool:
    """Whether this machine has an audio input device (and PortAudio to reach it)."""
    from emostream.realtime.sources import import_sounddevice

    try:
        sd = import_sounddevice()
        return any(d.get("max_input_channels", 0) > 0 for d in sd.query_devices())
    except Exception:  # noqa: BLE001 - no PortAudio, no devices: no microphone
        return False


def build_event_source(args: argparse.Namespace) -> PipelineEventSource:
    """For `emostream serve` and `emostream demo` (see realtime/server.py)."""
    media = getattr(args, "media", None)
    loop = False
    if getattr(args, "demo", False) and media is None:
        if microphone_available():
            logger.info("demo: using the microphone (and the camera if there is one)")
        else:
            from emostream.realtime.server import default_media

            media = default_media()
            loop = not args.once
            logger.info("demo: no microphone here; playing the bundled sample %s%s", media,
                        " in a loop" if loop else "")
    args.media = media
    return PipelineEventSource(config_from_args(args, realtime=True, loop=loop))
