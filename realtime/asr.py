"""Speech recognition of segmented utterances with faster-whisper (CTranslate2).

`Transcriber.transcribe(audio, utterance_id)` is blocking and runs in the inference worker, never on
the event loop: faster-whisper returns a lazy generator, consumed here in full. The segmenter cuts
utterances, so whisper's own VAD filter is off.

Early ASR: at `EndpointPending` the worker may call `transcriber.start(event)` and run the returned
`PendingTranscript` right away; at `SpeechEnd` its result is reused when it is still valid (same
segment, same start, the final audio only extends the pending audio by the trailing padding, no
`SpeechResumed` in between). `EarlyTranscriber` does that bookkeeping; it owns no thread.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from emostream.realtime.privacy import shown
from emostream.realtime.repetition import collapse_repeats, looping
from emostream.realtime.segmenter import (
    EndpointPending,
    SegmenterConfig,
    SegmentEvent,
    SpeechEnd,
    SpeechResumed,
)
from emostream.realtime.types import SAMPLE_RATE, Transcript, TranscriptWord

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

logger = logging.getLogger(__name__)

PROVISIONAL_ID = -1
"""utterance_id of an early transcript until `EarlyTranscriber.finish` gives it the real one."""


@dataclass(frozen=True, slots=True)
class AsrConfig:
    model: str = "whisper-tiny.en"  # a bundled name or a local CTranslate2 folder (see model.features.weights)
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 1
    language: str | None = None  # None: "en" for .en models, detected for multilingual ones
    temperature: tuple[float, ...] = (0.0,)  # no fallback re-decoding: predictable latency
    cpu_threads: int = 0  # 0: min(4, CPU count)
    word_timestamps: bool = False
    initial_prompt: str | None = None
    # Short context: encode only the utterance (+ `context_pad_s` of silence) instead of whisper's
    # fixed 30 s window. The encoder cost falls ~4x for a 3 s utterance (0.62 -> 0.14 s here) at the
    # same word error rate on the test fixture; less than ~2 s of padding makes whisper loop.
    short_context: bool = True
    context_pad_s: float = 3.0
    min_window_s: float = 5.0
    # A decoding loop ("I will miss you so much. I will miss you so much. I will") is decoded again
    # from the same encoder output with this repetition penalty, and what still repeats is cut off,
    # so that no loop reaches a final. False: the old rule (a phrase three times -> the 30 s path).
    loop_recovery: bool = True
    repetition_penalty: float = 1.5


LOOP_FLAG = "asr_loop"
"""Transcript flag: whisper looped; the transcript is the re-decoding or the loop cut off."""
_THREE_TIMES = re.compile(r"\b(\w.{2,40}?)\W+\1\W+\1\b")


def _compressible(text: str) -> bool:
    """whisper's own compression-ratio rule (2.4): a highly repetitive transcript."""
    import zlib

    data = text.encode()
    return len(text) > 40 and len(data) / len(zlib.compress(data)) > 2.4


def _too_repetitive(text: str) -> bool:
    return bool(text) and (looping(text) or _compressible(text))


class Transcriber:
    """faster-whisper over one utterance at a time. Loads the model on construction."""

    def __init__(self, config: AsrConfig | None = None, model: WhisperModel | None = None) -> None:
        self.config = config or AsrConfig()
        self._model = model if model is not None else self._load(self.config)

    @staticmethod
    def _load(cfg: AsrConfig) -> WhisperModel:
        from faster_whisper import WhisperModel

        from emostream.model.features.weights import resolve

        path = resolve(cfg.model)
        threads = cfg.cpu_threads or min(4, os.cpu_count() or 1)
        t0 = time.perf_counter()
        model = WhisperModel(
            str(path), device=cfg.device, compute_type=cfg.compute_type, cpu_threads=threads, local_files_only=True
        )
        logger.info("loaded ASR %s from %s (%s, %s) in %.2f s",
                    cfg.model, path, cfg.device, cfg.compute_type, time.perf_counter() - t0)
        return model

    def transcribe(self, audio: np.ndarray, utterance_id: int) -> Transcript:
        """audio: (n,) float32 mono 16 kHz -> Transcript. Empty audio gives an empty transcript."""
        cfg = self.config
        x = np.asarray(audio, dtype=np.float32).reshape(-1)  # (n,)
        if x.size == 0:
            return Transcript(utterance_id=utterance_id, text="", language=cfg.language or "en")
        t0 = time.perf_counter()
        if cfg.short_context and not cfg.word_timestamps and cfg.initial_prompt is None:
            short = self._transcribe_short(x, utterance_id)
            if short is not None:
                logger.debug("ASR utterance %d (short context): %.2f s audio in %.0f ms: %s",
                             utterance_id, x.size / SAMPLE_RATE, (time.perf_counter() - t0) * 1e3, shown(short.text))
                return short
        result = self._transcribe_standard(x, utterance_id)
        if cfg.loop_recovery and looping(result.text):  # the last guard: no loop reaches a final
            logger.info("ASR looped on utterance %d; cut back", utterance_id)  # no text: transcripts are personal
            result = dataclasses.replace(result, text=collapse_repeats(result.text), flags=(LOOP_FLAG,))
        logger.debug("ASR utterance %d: %.2f s audio in %.0f ms: %s",
                     utterance_id, x.size / SAMPLE_RATE, (time.perf_counter() - t0) * 1e3, shown(result.text))
        return result

    def _transcribe_standard(self, x: np.ndarray, utterance_id: int) -> Transcript:
        """faster-whisper's own path: the 30 s window, temperature fallback as configured."""
        cfg = self.config
        segments, info = self._model.transcribe(
            x,
            language=cfg.language,
            beam_size=cfg.beam_size,
            temperature=list(cfg.temperature),
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=not cfg.word_timestamps,
            word_timestamps=cfg.word_timestamps,
            initial_prompt=cfg.initial_prompt,
        )
        segments = list(segments)  # the generator does the decoding: consume it here, in full
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        weights = np.array([max(len(s.tokens), 1) for s in segments], dtype=np.float64)
        avg_logprob = float(np.average([s.avg_logprob for s in segments], weights=weights)) if segments else 0.0
        no_speech = float(np.average([s.no_speech_prob for s in segments], weights=weights)) if segments else 1.0
        words = None
        if cfg.word_timestamps:
            words = tuple(
                TranscriptWord(w.word.strip(), float(w.start), float(w.end), float(w.probability))
                for s in segments
                for w in (s.words or ())
            )
        return Transcript(
            utterance_id=utterance_id,
            text=text,
            language=info.language,
            avg_logprob=avg_logprob,
            no_speech_prob=no_speech,
            words=words,
        )

    def _short_ready(self) -> bool:
        """Whether the short-context path can run: a real faster-whisper model, the language known."""
        model = self._model
        if not hasattr(model, "feature_extractor") or not hasattr(model, "model"):
            return False  # not a faster_whisper.WhisperModel (e.g. a test double): the standard path
        return not (model.model.is_multilingual and self.config.language is None)

    def _window(self, n_frames: int) -> int:
        """Encoder frames for an utterance of n_frames: the utterance + `context_pad_s`, whole seconds."""
        cfg = self.config
        window = int(np.ceil((n_frames + cfg.context_pad_s * 100) / 100.0)) * 100
        return max(window, int(cfg.min_window_s * 100))

    def _encode(self, features: Sequence[np.ndarray], window: int) -> Any:
        """Log-mel features (each (n_mels, T <= window)) -> the encoder output of the batch, zero-padded."""
        import ctranslate2

        padded = np.zeros((len(features), features[0].shape[0], window), dtype=np.float32)  # (B, n_mels, window)
        for i, f in enumerate(features):
            padded[i, :, :f.shape[-1]] = f
        return self._model.model.encode(ctranslate2.StorageView.from_array(padded), to_cpu=False)

    def _decode(self, encoded: Any, batch: int, max_new: int, **options: float) -> list[tuple[str, float, float]]:
        """Greedy decoding of an encoded batch: (text, avg log-prob, no-speech prob) per item."""
        from faster_whisper.tokenizer import Tokenizer

        model, cfg = self._model, self.config
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                              language=cfg.language or "en")
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        results = model.model.generate(
            encoded, [prompt] * batch, beam_size=cfg.beam_size, max_length=len(prompt) + max_new,
            suppress_blank=True, suppress_tokens=[-1], return_scores=True, return_no_speech_prob=True, **options,
        )
        return [(tokenizer.decode(r.sequences_ids[0]).strip(), float(r.scores[0]) if r.scores else 0.0,
                 float(r.no_speech_prob)) for r in results]

    def _short_transcript(self, text: str, avg_logprob: float, no_speech: float, flags: tuple[str, ...],
                          utterance_id: int) -> Transcript:
        # whisper's own silence rule (no_speech_threshold 0.6, log_prob_threshold -1), and no
        # transcript made of punctuation alone
        if (no_speech > 0.6 and avg_logprob < -1.0) or not any(ch.isalnum() for ch in text):
            text = ""
        return Transcript(utterance_id=utterance_id, text=text, language=self.config.language or "en",
                          avg_logprob=avg_logprob, no_speech_prob=no_speech, flags=flags if text else ())

    @staticmethod
    def _max_new_tokens(x: np.ndarray) -> int:
        return int(8 * x.size / SAMPLE_RATE) + 16  # speech is < 8 tokens/s: a loop cannot run away

    def _transcribe_short(self, x: np.ndarray, utterance_id: int) -> Transcript | None:
        """Greedy decoding over an encoder window sized to the utterance; None to fall back.

        Falls back (None) for audio longer than ~28 s and for multilingual models (language
        detection needs the standard path). A loop is decoded again from the same encoder output
        with a repetition penalty (~50 ms) and, if it still repeats, cut back to its first copy;
        with `loop_recovery` off a repetitive result falls back instead.
        """
        cfg = self.config
        if not self._short_ready():
            return None
        features = self._model.feature_extractor(x)  # (n_mels, T) at 100 frames/s
        window = self._window(features.shape[-1])
        if window > 3000:
            return None
        encoded = self._encode([features], window)
        max_new = self._max_new_tokens(x)
        ((text, avg_logprob, no_speech),) = self._decode(encoded, 1, max_new)
        flags: tuple[str, ...] = ()
        if not cfg.loop_recovery:
            if text and (_THREE_TIMES.search(text.lower()) or _compressible(text)):
                logger.debug("short-context ASR looped on utterance %d (%s); falling back", utterance_id,
                             shown(text))
                return None
        elif _too_repetitive(text):
            looped = text
            ((text, avg_logprob, no_speech),) = self._decode(encoded, 1, max_new,
                                                             repetition_penalty=cfg.repetition_penalty)
            if _too_repetitive(text):
                text = collapse_repeats(text)
            flags = (LOOP_FLAG,)
            logger.info("ASR looped on utterance %d; decoded again", utterance_id)  # no text at INFO
            logger.debug("ASR loop on utterance %d: %s -> %s", utterance_id, shown(looped), shown(text))
        return self._short_transcript(text, avg_logprob, no_speech, flags, utterance_id)

    def transcribe_batch(self, audios: Sequence[np.ndarray], utterance_ids: Sequence[int]) -> list[Transcript]:
        """Several utterances (of different dialogues) in one encoder and one decoder call.

        The batch is encoded in the longest item's window (the others get more trailing silence).
        Items the batch cannot take (empty, longer than ~28 s, a result that repeats itself, a
        configuration the short path does not serve) go through `transcribe` one by one, so every
        item gets what `transcribe` guarantees (no loop reaches a final).
        """
        cfg = self.config
        xs = [np.asarray(a, dtype=np.float32).reshape(-1) for a in audios]  # each (n,)
        results: list[Transcript | None] = [None] * len(xs)
        batchable = (cfg.short_context and not cfg.word_timestamps and cfg.initial_prompt is None
                     and self._short_ready() and len(xs) > 1)
        if batchable:
            t0 = time.perf_counter()
            feats = {i: self._model.feature_extractor(x) for i, x in enumerate(xs) if x.size}  # (n_mels, T)
            take = [i for i, f in feats.items() if self._window(f.shape[-1]) <= 3000]
            if len(take) > 1:
                window = max(self._window(feats[i].shape[-1]) for i in take)
                encoded = self._encode([feats[i] for i in take], window)
                decoded = self._decode(encoded, len(take), max(self._max_new_tokens(xs[i]) for i in take))
                for i, (text, avg_logprob, no_speech) in zip(take, decoded):
                    if not (_too_repetitive(text) or _THREE_TIMES.search(text.lower())):
                        results[i] = self._short_transcript(text, avg_logprob, no_speech, (), utterance_ids[i])
                logger.debug("ASR batch of %d (window %d frames) in %.0f ms", len(take), window,
                             (time.perf_counter() - t0) * 1e3)
        return [r if r is not None else self.transcribe(xs[i], utterance_ids[i]) for i, r in enumerate(results)]

    def start(self, event: EndpointPending) -> PendingTranscript:
        """A not-yet-run early transcription of the audio of an EndpointPending."""
        return PendingTranscript(
            transcriber=self,
            segment=event.segment,
            start_sample=event.start_sample,
            end_sample=event.end_sample,
            audio=event.audio,
        )


@dataclass(eq=False)
class PendingTranscript:
    """An early transcription job over samples [start_sample, end_sample) of segment `segment`.

    `run()` is blocking (call it in the worker or hand it to a thread); it stores `result`.
    Read `result` only after `run()` has returned.
    """

    transcriber: Transcriber
    segment: int
    start_sample: int
    end_sample: int
    audio: np.ndarray  # (n,) float32
    cancelled: bool = False
    result: Transcript | None = None
    elapsed_s: float | None = None

    def run(self) -> Transcript | None:
        """Transcribe (unless cancelled) and keep the result (utterance_id = PROVISIONAL_ID)."""
        if self.cancelled:
            return None
        t0 = time.perf_counter()
        self.result = self.transcriber.transcribe(self.audio, PROVISIONAL_ID)
        self.elapsed_s = time.perf_counter() - t0
        return self.result

    def cancel(self) -> None:
        self.cancelled = True

    def valid_for(self, end: SpeechEnd, max_extension_samples: int) -> bool:
        """Whether this job's audio is the final utterance's audio, give or take trailing padding."""
        extension = end.end_sample - self.end_sample
        return (
            not self.cancelled
            and self.segment == end.segment
            and self.start_sample == end.start_sample
            and 0 <= extension <= max_extension_samples
        )


def run_batch(jobs: Sequence[PendingTranscript]) -> None:
    """Run early jobs of several dialogues (on one shared Transcriber) in one batched call; each
    job keeps its result as `run()` would. Cancelled jobs are skipped."""
    by_model: dict[int, list[PendingTranscript]] = {}
    for job in jobs:
        if not job.cancelled:
            by_model.setdefault(id(job.transcriber), []).append(job)
    for group in by_model.values():
        if len(group) == 1:
            group[0].run()
            continue
        t0 = time.perf_counter()
        transcripts = group[0].transcriber.transcribe_batch([j.audio for j in group], [PROVISIONAL_ID] * len(group))
        elapsed = time.perf_counter() - t0
        for job, transcript in zip(group, transcripts):
            job.result, job.elapsed_s = transcript, elapsed


class EarlyTranscriber:
    """Bookkeeping for early ASR between EndpointPending and SpeechEnd. Not thread-safe.

    Worker loop sketch::

        for ev in segmenter.push(samples, t0_ns):
            job = early.on_event(ev)
            if job is not None:
                job.run()                      # or submit it; wait before finish()
            if isinstance(ev, SpeechEnd):
                transcript, reused = early.finish(ev, utterance_id)
    """

    def __init__(self, transcriber: Transcriber, max_extension_samples: int) -> None:
        self.transcriber = transcriber
        self.max_extension_samples = max_extension_samples
        self._pending: PendingTranscript | None = None
        self.stats: dict[str, int] = {"started": 0, "reused": 0, "discarded": 0}

    @classmethod
    def for_segmenter(cls, transcriber: Transcriber, config: SegmenterConfig) -> EarlyTranscriber:
        """Allow the final audio to exceed the pending audio by the segmenter's trailing padding."""
        return cls(transcriber, config.samples(config.pad_end_ms))

    @property
    def pending(self) -> PendingTranscript | None:
        return self._pending

    def on_event(self, event: SegmentEvent) -> PendingTranscript | None:
        """Track a segmenter event; returns a new job to run for an EndpointPending."""
        if isinstance(event, EndpointPending):
            self._discard()
            self._pending = self.transcriber.start(event)
            self.stats["started"] += 1
            return self._pending
        if isinstance(event, SpeechResumed) and self._pending is not None and self._pending.segment == event.segment:
            self._discard()
        return None

    def reusable(self, end: SpeechEnd) -> Transcript | None:
        """The finished early result if it is valid for this final utterance, else None."""
        p = self._pending
        if p is None or p.result is None or not p.valid_for(end, self.max_extension_samples):
            return None
        return p.result

    def finish(self, end: SpeechEnd, utterance_id: int) -> tuple[Transcript, bool]:
        """The transcript of a finished utterance: the early one if valid, else a fresh run.

        Returns (transcript with utterance_id, whether the early result was reused).
        """
        early = self.reusable(end)
        if early is not None:
            self._pending = None
            self.stats["reused"] += 1
            return dataclasses.replace(early, utterance_id=utterance_id), True
        self._discard()
        return self.transcriber.transcribe(end.audio, utterance_id), False

    def reset(self) -> None:
        self._discard()

    def _discard(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self.stats["discarded"] += 1
            self._pending = None

