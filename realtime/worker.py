"""The I/O-free core of one live dialogue: audio chunks in, protocol events out.

`Worker` owns one dialogue's segmenter, early ASR, speaker turns (`SpeakerTurns` over its speaker
tracker), face state and `DialogueSession`; the heavy models it calls (ASR, end-of-turn model, speaker
embedder, text encoder, step engine, face expert) are shared and stateless across dialogues.

An utterance is one speaker's turn: it ends at a pause the end-of-turn model judges complete (or a
long pause), at a speaker change found inside speech, or at the length cap (see
`emostream.realtime.segmenter` and `emostream.realtime.turns`). The scheduler drives it, for every
source alike. Audio
reaches it through a bounded drop-oldest queue; video frames go into a time-indexed ring from
which it takes each utterance's span. It returns what it says instead of sending it: typed frozen
records (`emostream.realtime.events`), kept in order until the driver takes them (`take_events`)
and turns them into protocol messages at its sink. It reads no clock of its own (the driver gives
it one) and owns no thread.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emostream.realtime import protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.events import (
    ErrorEvent,
    Event,
    FaceEvent,
    PredictionEvent,
    StatusEvent,
    TranscriptEvent,
    UtteranceEvent,
)
from emostream.realtime.faces import FaceTracker
from emostream.realtime.segmenter import (
    EndpointPending,
    Segmenter,
    SpeechEnd,
    SpeechStart,
)
from emostream.realtime.session import DialogueSession
from emostream.realtime.speakers import SpeakerTracker
from emostream.realtime.turns import SpeakerTurns, TurnsConfig, TurnTaking, WindowsJob
from emostream.realtime.types import AudioChunk, Transcript, Utterance, VideoFrame, samples_to_ns

if TYPE_CHECKING:
    from emostream.realtime.asr import PendingTranscript

logger = logging.getLogger(__name__)

Clock = Callable[[], int]  # monotonic nanoseconds
EventCallback = Callable[[dict[str, Any]], None]  # a driver's sink: where it delivers the worker's events
TurnModel = Callable[[Any], float]  # (n,) float32 16 kHz, the turn so far -> P(turn complete)
AUDIO_DROPPED = "audio_dropped"
"""Prediction flag: audio of this utterance was lost before the worker saw it (a full queue, lost or
excess client frames)."""
MAX_LOST_SPANS = 64  # lost-audio spans remembered (older ones are behind every open utterance)
DEGRADED = {  # prediction flag -> what a `status` (code degraded, level warning) says of a final
    "asr_failed": "speech recognition failed: no text",
    "speaker_failed": "speaker assignment failed: speaker 0",
    "model_failed": "the model failed: the face alone (or uniform)",
    "face_failed": "the face expert failed: no face",
    "text_failed": "the text features failed: no text",
    "audio_failed": "the audio features failed",
    "visual_failed": "the visual features failed",
    AUDIO_DROPPED: "audio was lost before it was processed",
}


@dataclass(frozen=True, slots=True)
class FinalJob:
    """A final that waits only for its text features: the driver encodes every dialogue's due finals
    in one text-encoder call (`Worker.final_due`), then each worker completes its own (`final_done`)."""

    end: SpeechEnd
    utterance: Utterance  # its audio, span, frames and speaker slot
    transcript: Transcript
    overlap: bool
    flags: tuple[str, ...]
    timings_ms: dict[str, float]
    face: np.ndarray | None  # (E,) the face expert's expression over the utterance, or None
    detected_ns: int  # when the worker saw its end (the driver's clock)
    text_input: Any  # what the text encoder takes (`DialogueSession.text_input`)


class DropOldestQueue:
    """A bounded queue that drops its oldest item when full, counting the drops; `on_drop` (if set)
    is told each dropped item."""

    def __init__(self, maxsize: int, on_drop: Callable[[Any], None] | None = None) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize)
        self.dropped = 0
        self.on_drop = on_drop
        self._lock = threading.Lock()

    def put(self, item: Any) -> None:
        with self._lock:
            while True:
                try:
                    self._q.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        old = self._q.get_nowait()
                    except queue.Empty:
                        continue
                    self.dropped += 1
                    if self.on_drop is not None:
                        self.on_drop(old)

    def put_wait(self, item: Any, give_up: Callable[[], bool] = lambda: False, poll_s: float = 0.1) -> bool:
        """Block until there is room (back-pressure for files played as fast as possible), or until
        `give_up()` says nobody will make room (the consumer is gone): then False, the item not put."""
        while not give_up():
            try:
                self._q.put(item, timeout=poll_s)
                return True
            except queue.Full:
                continue
        return False

    def get(self, timeout: float) -> Any:
        return self._q.get(timeout=timeout)

    def get_nowait(self) -> Any:
        """The oldest item; raises queue.Empty when there is none."""
        return self._q.get_nowait()

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


def hello_of(session: DialogueSession, config: PipelineConfig, speaker_mode: str, turn_model: Any, /,
             **extra: Any) -> dict[str, Any]:
    """The one `hello` builder: labels, model, the live modalities, experts and fusion rule of a
    dialogue on these models (`extra`: interim, session, capture)."""
    fusion = session.face_fusion
    return protocol.hello(
        labels=session.labels, model=getattr(session.model, "name", "mcncl"), modalities=session.model.modalities,
        live_modalities=("text", "face") if fusion is not None else ("text",),
        experts={"face": config.face_expert if fusion is not None else None, "speaker": speaker_mode,
                 "turn": getattr(turn_model, "name", None)},
        fusion=fusion.describe() if fusion is not None else None, **extra,
    )


class Worker:
    """The inference loop's logic: audio chunks in, protocol events out. Runs in one thread."""

    def __init__(self, session: DialogueSession, segmenter: Segmenter, transcriber: Any, frames: FrameRing,
                 config: PipelineConfig, t0_ns: int,
                 faces: FaceTracker | None = None, speakers: SpeakerTracker | None = None,
                 turn_model: TurnModel | None = None, *, clock: Clock) -> None:
        from emostream.realtime.asr import EarlyTranscriber

        self.session = session
        self.segmenter = segmenter
        self.early = EarlyTranscriber.for_segmenter(transcriber, config.segmenter)
        self.transcriber = transcriber
        self.frames = frames
        self.clock = clock  # the driver's monotonic clock in ns (the core reads no clock of its own)
        self.events: list[Event] = []  # what it said, taken by the driver (`take_events`)
        self.config = config
        self.t0_ns = t0_ns
        self.speakers = speakers or SpeakerTracker(session.model.n_parties, config.speaker_mode)
        self.taking = TurnTaking(segmenter, SpeakerTurns(self.speakers,
                                                         TurnsConfig(detect_changes=segmenter.config.endpoint == "turn")))
        self.turn_model = turn_model if segmenter.config.endpoint == "turn" else None
        if segmenter.config.endpoint == "turn" and turn_model is None:
            raise ValueError("the 'turn' endpoint needs an end-of-turn model (or use endpoint 'silence')")
        self.faces = faces
        self.interim_stretch = 1.0  # the scheduler makes interims coarser (x this interval) under load
        self.defer_windows = False  # True: speaker windows wait for the driver (`windows_due`), batched
        self.defer_finals = False  # True: a final's text features wait for the driver (`final_due`), batched
        self.final_due: FinalJob | None = None
        self._face_sent_t: int | None = None  # the last `face` event's frame time...
        self._face_sent_at = 0  # ...and when it went out (monotonic ns)
        self._face_failures = 0  # frames the face path failed on, as last reported
        self.interim = config.interim
        self.next_id = 0
        self.current_id: int | None = None
        self.current_start_ns = 0
        self.last_interim_ns = 0
        self.audio_ns = 0  # audio consumed (for the real-time factor)
        self.busy_ns = 0
        self.timings: dict[str, float] = {}
        self.asr_due: PendingTranscript | None = None  # an early ASR job for the driver to run (batched)
        self.turn_probabilities: list[float] = []  # P(turn complete) at each pause judged (bounded below)
        self.backlog_s = 0.0  # audio waiting for this worker (set by its driver); interims wait when behind
        self._lost: collections.deque[tuple[int, int]] = collections.deque(maxlen=MAX_LOST_SPANS)
        self.counts = {"utterances_audio_dropped": 0, "interims_skipped_behind": 0, "turn_model_failed": 0}

    def ms(self, t_ns: int) -> float:
        return max(0.0, (t_ns - self.t0_ns) / 1e6)

    def emit(self, event: Event) -> None:
        self.events.append(event)

    def take_events(self) -> list[Event]:
        """The events out since the last call, in order (the driver delivers them to the sink)."""
        out, self.events = self.events, []
        return out

    def _seconds(self) -> float:
        return self.clock() / 1e9

    def close(self) -> None:
        """Nothing to release: the worker owns no thread (kept for its drivers' lifecycle)."""

    def audio_lost(self, t0_ns: int, t1_ns: int) -> None:
        """Audio over stream time [t0, t1) was lost before it reached the worker. Thread-safe."""
        self._lost.append((t0_ns, max(t1_ns, t0_ns + 1)))

    def chunk_lost(self, chunk: AudioChunk) -> None:
        """`DropOldestQueue.on_drop`: a dropped chunk's span is lost audio."""
        self.audio_lost(chunk.t0_ns, chunk.t0_ns + samples_to_ns(chunk.samples.shape[0], chunk.sample_rate))

    def lost_within(self, t0_ns: int, t1_ns: int) -> bool:
        """Whether any lost span overlaps stream time [t0, t1)."""
        return any(a < t1_ns and b > t0_ns for a, b in tuple(self._lost))

    def reset(self) -> None:
        self._final_now()  # what was said before the reset gets its final first
        self.session.reset()
        self.taking.reset()
        self.early.reset()
        self.asr_due = None
        if self.faces is not None:
            self.faces.reset()
        self.current_id = None
        self.emit(StatusEvent("reset", "dialogue state reset"))

    def process(self, chunk: AudioChunk) -> None:
        t_start = self.clock()
        self._final_now()  # a driver that does not batch finals: this one goes out before the next audio
        samples = chunk.as_float32()
        self.audio_ns += samples_to_ns(samples.size, chunk.sample_rate)
        for event in self.taking.push(samples, chunk.t0_ns, defer_windows=self.defer_windows):
            self.handle(event)
        self.maybe_interim(chunk.t0_ns + samples_to_ns(samples.size, chunk.sample_rate))
        self.busy_ns += self.clock() - t_start

    @property
    def windows_due(self) -> WindowsJob | None:
        """Speaker windows waiting to be embedded (`defer_windows`): the driver runs them, batched
        with other dialogues', and calls `windows_done` before this worker's next chunk."""
        return self.taking.windows_job

    def windows_done(self, job: WindowsJob, vectors: Any, share_s: float = 0.0) -> None:
        """The driver embedded `job` (`vectors` (n, 256), or None if that failed): its change votes,
        and a confirmed change's events. `share_s`: this dialogue's share of the batch (its work)."""
        for event in self.taking.windows_done(job, vectors):
            self.handle(event)
        self.busy_ns += int(share_s * 1e9)

    def flush(self) -> None:
        job = self.taking.windows_job  # deferred windows not embedded yet: now, alone
        if job is not None:
            from emostream.realtime.turns import embed_jobs

            try:
                vectors = embed_jobs(self.speakers.embedder, [job])[0]
            except Exception:  # noqa: BLE001 - as any failed window: no change evidence
                logger.exception("speaker-change detection failed")
                vectors = None
            self.windows_done(job, vectors)
        self._final_now()
        for event in self.segmenter.flush():
            self.handle(event)
        self._final_now()


    def handle(self, event: Any) -> None:
        self._final_now()  # events stay in order: a deferred final goes out before whatever comes next
        if isinstance(event, SpeechStart):
            self.current_id = self.next_id
            self.next_id += 1
            self.current_start_ns = event.t_ns
            self.last_interim_ns = event.t_ns
            try:
                speaker: int | str = self.taking.peek()  # a guess
            except Exception:  # noqa: BLE001 - the start event still goes out
                logger.exception("speaker guess failed")
                speaker = "?"
            self.emit(UtteranceEvent("start", self.current_id, speaker, self.ms(event.t_ns)))
            return
        job = self.early.on_event(event)
        if job is not None and isinstance(event, EndpointPending):
            # the end-of-turn verdict first: a pause judged incomplete waits up to 1.5 s and most such
            # pauses are followed by more speech, so their early ASR would be wasted work
            if self._judge_turn(event):
                self.asr_due = job  # early ASR: the scheduler runs it, batched with other dialogues' jobs
            else:
                job.cancel()
        if isinstance(event, SpeechEnd):
            self.finish(event)

    def take_asr_due(self) -> PendingTranscript | None:
        """The early ASR job waiting to run, handed over once (None if there is none)."""
        job, self.asr_due = self.asr_due, None
        return job

    def asr_done(self, job: PendingTranscript, share_s: float) -> None:
        """The driver ran `job` (alone or in a batch): note its time, and count this dialogue's share
        of the batch's compute (`share_s`) as its own work (the real-time factor)."""
        if job.elapsed_s is not None:
            self.timings["early_asr_ms"] = round(job.elapsed_s * 1000, 2)
        self.busy_ns += int(share_s * 1e9)

    def _judge_turn(self, pause: EndpointPending) -> bool:
        """The end-of-turn model's verdict on the turn up to this pause (its silence so far included),
        told to the segmenter. Returns whether the utterance may end soon (complete, or no model:
        the silence endpoint); a failing model leaves the pause to its long cap."""
        if self.turn_model is None:
            return True
        t = self._seconds()
        try:
            p = float(self.turn_model(self.taking.pause_audio(pause)))
        except Exception:  # noqa: BLE001 - without a verdict the pause must be long to end the turn
            logger.exception("end-of-turn model failed")
            self.counts["turn_model_failed"] += 1
            return False
        self.timings["turn_ms"] = round((self._seconds() - t) * 1000, 2)
        self.turn_probabilities.append(round(p, 4))
        del self.turn_probabilities[:-256]
        self.taking.judge(pause, p)
        return p >= self.segmenter.config.turn_threshold

    def finish(self, end: SpeechEnd) -> None:
        t_detect = self.clock()
        uid = self.current_id if self.current_id is not None else self.next_id
        if self.current_id is None:
            self.next_id += 1
        self.current_id = None
        t = self._seconds()
        try:
            transcript, reused = self.early.finish(end, uid)
        except Exception as e:  # noqa: BLE001 - the utterance still gets its final, without text
            logger.exception("ASR failed on utterance %d", uid)
            transcript, reused = Transcript(utterance_id=uid, text="", flags=("asr_failed",)), False
            self.emit(ErrorEvent("internal", f"speech recognition failed on utterance {uid}: {type(e).__name__}"))
        asr_ms = 0.0 if reused else round((self._seconds() - t) * 1000, 2)
        t = self._seconds()
        flags = (["forced_split"] if end.forced else []) + list(transcript.flags)
        overlap = False
        try:
            who = self.taking.finish(end)
            speaker, overlap = who.slot, who.overlap
        except Exception:  # noqa: BLE001 - who spoke is unknown; the utterance still gets its final
            logger.exception("speaker assignment failed on utterance %d", uid)
            speaker, flags = 0, [*flags, "speaker_failed"]
        if overlap:
            flags.append("overlap")
        speaker_ms = round((self._seconds() - t) * 1000, 2)
        utt = Utterance(id=uid, audio=end.audio, t_start_ns=end.t_start_ns, t_end_ns=end.t_end_ns,
                        frames=self.frames.between(end.t_start_ns, end.t_end_ns), speaker=speaker)
        if self.lost_within(end.t_start_ns, end.t_end_ns):
            flags.append(AUDIO_DROPPED)
            self.counts["utterances_audio_dropped"] += 1
        timings = {"asr_ms": asr_ms, "asr_reused": float(reused), "speaker_ms": speaker_ms,
                   "endpoint_wait_ms": round((t_detect - end.speech_end_ns) / 1e6, 2)}
        face = self.face_of(end.t_start_ns, end.t_end_ns, timings)
        if timings.pop("face_failed", None):
            flags.append("face_failed")
        job = FinalJob(end, utt, transcript, overlap, tuple(flags), timings, face, t_detect,
                       self.session.text_input(speaker, transcript.text))
        if self.defer_finals and job.text_input is not None:
            self.final_due = job  # the driver encodes its text with other dialogues' finals
            return
        self._final(job)

    def final_done(self, job: FinalJob, text_vector: np.ndarray | BaseException, share_s: float = 0.0) -> None:
        """The driver encoded `job`'s text (`text_vector` (Dt,), or the exception that raised) in a
        batch: its final goes out. `share_s`: this dialogue's share of the batch (its work)."""
        if self.final_due is job:
            self.final_due = None
        self._final(job, text_vector, share_s)
        self.busy_ns += int(share_s * 1e9)

    def _final_now(self) -> None:
        """A deferred final the driver did not run (yet): out now, its text encoded alone."""
        job, self.final_due = self.final_due, None
        if job is not None:
            self._final(job)

    def _final(self, job: FinalJob, text_vector: np.ndarray | BaseException | None = None,
               share_s: float | None = None) -> None:
        end, utt, uid, speaker = job.end, job.utterance, job.utterance.id, job.utterance.speaker
        pred = self.session.predict(utt, job.transcript.text, final=True, extra_flags=job.flags,
                                    timings_ms=dict(job.timings_ms), face=job.face, text_vector=text_vector)
        if share_s is not None and "text_ms" in pred.timings_ms:
            pred.timings_ms["text_ms"] = round(share_s * 1000, 3)  # its share of the batched encoder call
        now = self.clock()
        pred.timings_ms["compute_ms"] = round((now - job.detected_ns) / 1e6, 2)
        pred.timings_ms["total_ms"] = round((now - end.speech_end_ns) / 1e6, 2)
        self.timings.update({k: v for k, v in pred.timings_ms.items() if k.endswith("_ms")})
        degraded = [DEGRADED[f] for f in pred.flags if f in DEGRADED]
        if degraded:
            self.emit(StatusEvent("degraded", f"utterance {uid}: " + "; ".join(degraded), "warning"))
        self.emit(TranscriptEvent(uid, speaker, job.transcript.text, job.transcript.language))
        self.emit(PredictionEvent(pred, self.t0_ns, end_reason=end.reason, overlap=job.overlap,
                                  latency_ms=pred.timings_ms["total_ms"]))  # end of speech -> final prediction
        self.emit(UtteranceEvent("end", uid, speaker, self.ms(end.t_end_ns), end_reason=end.reason,
                                 overlap=job.overlap))

    def maybe_interim(self, now_stream_ns: int) -> None:
        if not self.interim or self.current_id is None or not self.segmenter.in_speech:
            return
        if now_stream_ns - self.last_interim_ns < self.config.interim_interval_s * self.interim_stretch * 1e9:
            return
        self.last_interim_ns = now_stream_ns
        if self.backlog_s > self.config.interim_max_backlog_s:  # behind: the audio first, the final first
            self.counts["interims_skipped_behind"] += 1
            return
        audio = self.segmenter.active_audio()
        if audio is None or audio.size == 0:
            return
        start = now_stream_ns - samples_to_ns(audio.size)
        # bounded cost: an interim transcribes at most the last `interim_window_s` (the final, all of it)
        tail = audio[-int(self.config.interim_window_s * 16_000):]
        t = self._seconds()
        try:
            text = self.transcriber.transcribe(tail, self.current_id).text
        except Exception:  # noqa: BLE001 - an interim is best effort: skip it, the final reports
            logger.exception("interim ASR failed")
            return
        asr_ms = round((self._seconds() - t) * 1000, 2)
        speaker = self.taking.peek()  # partial audio: the tracker learns only from finals
        utt = Utterance(id=self.current_id, audio=audio, t_start_ns=start, t_end_ns=now_stream_ns,
                        frames=self.frames.between(start, now_stream_ns), speaker=speaker)
        timings = {"asr_ms": asr_ms, "asr_audio_s": round(tail.size / 16_000, 2)}
        flags = [AUDIO_DROPPED] if self.lost_within(start, now_stream_ns) else []
        face = self.face_of(start, now_stream_ns, timings)
        if timings.pop("face_failed", None):
            flags.append("face_failed")
        pred = self.session.predict(utt, text, final=False, timings_ms=timings, extra_flags=flags, face=face)
        self.emit(PredictionEvent(pred, self.t0_ns, published_ns=self.clock()))

    def face_of(self, t0_ns: int, t1_ns: int, timings: dict[str, float]) -> Any:
        """The face expert's expression over [t0, t1): (E,) or None (no face, or no face expert)."""
        if self.faces is None:
            return None
        t = self._seconds()
        try:
            self.faces.catch_up(self.frames.until(t1_ns))  # frames the face thread has not reached yet
            span = self.faces.expression(t0_ns, t1_ns)
        except Exception:  # noqa: BLE001 - the face path must not take the utterance down
            logger.exception("face analysis failed")
            timings["face_failed"] = 1.0
            return None
        finally:
            self._report_face_failures()
        timings["face_ms"] = round((self._seconds() - t) * 1000, 3)
        timings["face_frames"] = float(span.n_with_face)
        return span.probs

    def hello(self, **extra: Any) -> dict[str, Any]:
        """The `hello` of this dialogue (see `hello_of`)."""
        return hello_of(self.session, self.config, self.speakers.mode, self.turn_model, **extra)

    @property
    def final_pending(self) -> bool:
        """The segmenter saw the silence that probably ends an utterance, or a final waits for its
        text features: its final is near."""
        return self.early.pending is not None or self.final_due is not None

    def live_face(self) -> None:
        """Analyse the frames that came in (at the face tracker's rate) and publish the newest
        expression as a `face` event, at most `face_event_hz` a second. Never raises."""
        faces, fusion = self.faces, self.session.face_fusion
        if faces is None or fusion is None:
            return
        try:
            faces.catch_up(self.frames.until(self.clock() + 1))
        except Exception:  # noqa: BLE001 - the face path must not take the dialogue down
            logger.exception("face analysis failed")
            return
        self._report_face_failures()
        obs = faces.latest()
        now = self.clock()
        if obs is None or obs.t_ns == self._face_sent_t or now - self._face_sent_at < 1e9 / self.config.face_event_hz:
            return
        self._face_sent_t, self._face_sent_at = obs.t_ns, now
        probs = fusion.label_map.distribution(obs.probs[0]) if obs.n_faces else None
        self.emit(FaceEvent(self.ms(obs.t_ns), None if probs is None else dict(zip(self.session.labels, probs)),
                            obs.boxes[0] if obs.n_faces else None, obs.frame_size, obs.n_faces))

    def _report_face_failures(self) -> None:
        """A `status` (face_failed) when the face path failed on frames since the last report."""
        failures = self.faces.failures if self.faces is not None else 0
        if failures > self._face_failures:
            self.emit(StatusEvent("face_failed", f"the face path failed on {failures - self._face_failures} "
                                                 "frame(s); those frames are skipped", "warning"))
            self._face_failures = failures

    def metrics(self, queues: dict[str, int], drops: dict[str, int]) -> dict[str, Any]:
        """A `metrics` event: the driver's queues and drops, plus this worker's counts (utterances
        flagged audio_dropped, interims skipped while behind)."""
        rtf = self.busy_ns / self.audio_ns if self.audio_ns else None
        return protocol.metrics(queues=queues, drops={**drops, **self.counts}, timings_ms=self.timings, rtf=rtf,
                                t_ms=self.ms(self.clock()))


