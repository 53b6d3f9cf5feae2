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
from dataclasses import dataclass
from typing import TYPE_CHECKING

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

    def _transcribe_short(self, x: np.ndarray, utterance_id: int) -> Transcript | None:
        """Greedy decoding over an encoder window sized to the utterance; None to fall back.

        Falls back (None) for audio longer than ~28 s and for multilingual models (language
        detection needs the standard path). A loop is decoded again from the same encoder output
        with a repetition penalty (~50 ms) and, if it still repeats, cut back to its first copy;
        with `loop_recovery` off a repetitive result falls back instead.
        """
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        cfg = self.config
        if not hasattr(model, "feature_extractor") or not hasattr(model, "model"):
            return None  # not a faster_whisper.WhisperModel (e.g. a test double): the standard path
        if model.model.is_multilingual and cfg.language is None:
            return None
        features = model.feature_extractor(x)  # (n_mels, T) at 100 frames/s
        n_frames = features.shape[-1]
        window = int(np.ceil((n_frames + cfg.context_pad_s * 100) / 100.0)) * 100
        window = max(window, int(cfg.min_window_s * 100))
        if window > 3000:
            return None
        padded = np.zeros((features.shape[0], window), dtype=np.float32)  # (n_mels, window)
        padded[:, :n_frames] = features
        encoded = model.model.encode(ctranslate2.StorageView.from_array(padded[None]), to_cpu=False)
        language = cfg.language or "en"
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        max_new = int(8 * x.size / SAMPLE_RATE) + 16  # speech is < 8 tokens/s: a loop cannot run away

        def decode(**options: float) -> tuple[str, float, float]:
            result = model.model.generate(
                encoded, [prompt], beam_size=cfg.beam_size, max_length=len(prompt) + max_new,
                suppress_blank=True, suppress_tokens=[-1], return_scores=True, return_no_speech_prob=True,
                **options,
            )[0]
            text = tokenizer.decode(result.sequences_ids[0]).strip()
            return text, float(result.scores[0]) if result.scores else 0.0, float(result.no_speech_prob)

        text, avg_logprob, no_speech = decode()
        flags: tuple[str, ...] = ()
        if not cfg.loop_recovery:
            if text and (_THREE_TIMES.search(text.lower()) or _compressible(text)):
                logger.debug("short-context ASR looped on utterance %d (%s); falling back", utterance_id,
                             shown(text))
                return None
        elif _too_repetitive(text):
            looped = text
            text, avg_logprob, no_speech = decode(repetition_penalty=cfg.repetition_penalty)
            if _too_repetitive(text):
                text = collapse_repeats(text)
            flags = (LOOP_FLAG,)
            logger.info("ASR looped on utterance %d; decoded again", utterance_id)  # no text at INFO
            logger.debug("ASR loop on utterance %d: %s -> %s", utterance_id, shown(looped), shown(text))
        # whisper's own silence rule (no_speech_threshold 0.6, log_prob_threshold -1), and no
        # transcript made of punctuation alone
        if (no_speech > 0.6 and avg_logprob < -1.0) or not any(ch.isalnum() for ch in text):
            text = ""
        return Transcript(utterance_id=utterance_id, text=text, language=language, avg_logprob=avg_logprob,
                          no_speech_prob=no_speech, flags=flags if text else ())

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

