"""Streaming speech segmenter on Silero VAD (the ONNX model that faster-whisper ships).

No I/O and no threads: feed audio with `Segmenter.push(samples, t0_ns)` and get `SegmentEvent`s
back; `flush()` at the end of the stream. The model runs on 32 ms windows (512 samples at 16 kHz,
plus the previous window's last 64 samples as context) and carries its LSTM state across windows.

Decisions, per window with speech probability p:
- idle -> speech when p >= start_threshold. The segment is only *confirmed* (`SpeechStart` is
  emitted) once it holds min_speech_ms of speech; an unconfirmed segment that ends is dropped (a
  click, a cough).
- in speech, the first window with p < end_threshold starts a silence; a window with
  p >= start_threshold ends it again (hysteresis: probabilities in between change nothing).
  After pending_silence_ms of silence `EndpointPending` is emitted (ASR may start early on its
  audio); if speech resumes, `SpeechResumed` cancels it. After end_silence_ms of silence the
  utterance ends: `SpeechEnd` with the audio from speech start - pad_start_ms to speech end +
  pad_end_ms.
- end of turn (`endpoint="turn"`): at pending_silence_ms the driver asks an end-of-turn model whether
  the turn is complete and tells the segmenter (`set_turn_probability`). A complete turn ends after
  turn_silence_ms of silence; an incomplete one (or one not yet judged) waits up to
  incomplete_silence_ms. With `endpoint="silence"` every pause of end_silence_ms ends the utterance.
- a speaker change inside speech: the driver calls `split_at(sample)`; the open utterance ends there
  and the next one starts there, already confirmed (no silence between them is needed).
- every `SpeechEnd` says why it ended (`reason`): "silence", "turn_complete", "speaker_change" or
  "max_length".
- an utterance that would grow past max_utterance_s is split (`SpeechEnd(forced=True)`, audio never
  longer than max_utterance_s): at the silence in progress if there is one (the segment then ends
  there), else at the last pause of at least split_silence_ms inside it, else right there. In the
  last two cases the rest continues at once as the next, already confirmed, segment.

Time is exact integer arithmetic: a stream sample index i maps to anchor_ns + (i - anchor_i) *
1e9 // 16000 (62_500 ns a sample). The anchor is the first chunk's t0_ns and is moved only when a
chunk's t0_ns departs from the expected time by more than resync_tolerance_ms (dropped audio,
clock drift).
"""

from __future__ import annotations

import bisect
import collections
import functools
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from emostream.model.features.pcm import as_float32
from emostream.realtime.types import SAMPLE_RATE, Utterance, VideoFrame, samples_to_ns

logger = logging.getLogger(__name__)

WINDOW = 512  # new samples per model call (32 ms at 16 kHz)
ENDPOINTS = ("turn", "silence")
END_REASONS = ("silence", "turn_complete", "speaker_change", "max_length")
"""Why an utterance ended: a pause (endpoint "silence", a turn judged incomplete that reached its cap,
or the end of the stream), a pause after a turn judged complete, a speaker change found inside speech,
or the length cap."""
CONTEXT = 64  # samples of the previous window prepended to each window
STATE_SHAPE = (1, 1, 128)
PROB_HISTORY = 1024  # windows of speech probability kept (~33 s) for locating a speaker change

VadModel = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]
"""(windows (n, 576), h, c) -> (probs (n,), h, c): what SileroVad is; tests pass scripted stand-ins."""


def default_model_path() -> str:
    """Path of `silero_vad_v6.onnx` inside the installed faster-whisper (found without importing it)."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the segmenter needs the Silero model inside faster-whisper: pip install faster-whisper")
    path = os.path.join(next(iter(spec.submodule_search_locations)), "assets", "silero_vad_v6.onnx")
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing: faster-whisper >= 1.1 ships it (pip install -U faster-whisper)")
    return path


class SileroVad:
    """Stateless Silero VAD v6 runner: windows + state in, probabilities + state out.

    The ONNX model's `input` is (n, 576): n consecutive windows, each 64 context + 512 new samples;
    the LSTM runs over the n windows in order, so one call on n windows equals n calls on one.
    """

    def __init__(self, path: str | None = None, threads: int = 1) -> None:
        from emostream.export.engines.onnx_engine import cpu_session

        self.path = path or default_model_path()
        self._session = cpu_session(self.path, threads)
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "h", "c"}:
            raise RuntimeError(f"{self.path} is not a streaming Silero VAD v6 model (inputs {sorted(names)})")

    @staticmethod
    def initial_state() -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(STATE_SHAPE, np.float32), np.zeros(STATE_SHAPE, np.float32)

    def __call__(
        self, windows: np.ndarray, h: np.ndarray, c: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """windows: (n, 576) float32; h, c: (1, 1, 128) -> probs (n,), h, c."""
        probs, hn, cn = self._session.run(None, {"input": windows, "h": h, "c": c})
        return np.asarray(probs, np.float32).reshape(-1), hn, cn


@functools.lru_cache(maxsize=4)
def shared_vad(path: str | None = None) -> SileroVad:
    """One session per model path, shared by segmenters (ONNX Runtime's run is thread-safe)."""
    return SileroVad(path)


@dataclass(frozen=True, slots=True)
class SegmenterConfig:
    sample_rate: int = SAMPLE_RATE
    start_threshold: float = 0.5  # p at or above it starts speech / ends a silence
    end_threshold: float = 0.35  # p below it starts a silence
    min_speech_ms: int = 250  # shorter segments are dropped
    end_silence_ms: int = 300  # silence that ends an utterance (endpoint "silence")
    pending_silence_ms: int = 160  # silence after which EndpointPending is emitted (<= every end silence)
    endpoint: str = "silence"  # "silence": pauses alone end utterances; "turn": the end-of-turn model decides
    turn_silence_ms: int = 200  # endpoint "turn": silence that ends a turn judged complete
    incomplete_silence_ms: int = 1000  # endpoint "turn": silence that ends a turn judged incomplete (the cap)
    turn_threshold: float = 0.5  # P(turn complete) at or above it: complete
    pad_start_ms: int = 100  # audio kept before the detected speech start
    pad_end_ms: int = 100  # audio kept after the detected speech end (<= end_silence_ms)
    max_utterance_s: float = 15.0  # forced split at this length (padded audio)
    split_silence_ms: int = 96  # a pause this long inside an utterance is a preferred split point
    resync_tolerance_ms: int = 100  # re-anchor the clock when a chunk's t0 departs more than this
    model_path: str | None = None  # None: the model inside faster-whisper

    def __post_init__(self) -> None:
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(f"Silero VAD here runs at {SAMPLE_RATE} Hz, got sample_rate={self.sample_rate}")
        if not 0.0 < self.end_threshold <= self.start_threshold < 1.0:
            raise ValueError("need 0 < end_threshold <= start_threshold < 1")
        if min(self.min_speech_ms, self.pad_start_ms, self.pad_end_ms, self.pending_silence_ms) < 0:
            raise ValueError("durations must be >= 0")
        if self.end_silence_ms <= 0:
            raise ValueError("end_silence_ms must be > 0")
        if self.endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}, got {self.endpoint!r}")
        if not 0.0 < self.turn_threshold < 1.0:
            raise ValueError("turn_threshold must be in (0, 1)")
        if self.turn_silence_ms > self.incomplete_silence_ms:
            raise ValueError("turn_silence_ms must not exceed incomplete_silence_ms")
        shortest = min(self.end_silences())
        if self.pad_end_ms > shortest or self.pending_silence_ms > shortest:
            raise ValueError("pad_end_ms and pending_silence_ms must not exceed the silence that ends an utterance")
        if self.max_utterance_s * 1000 < self.min_speech_ms + self.pad_start_ms + self.pad_end_ms + 2 * WINDOW / 16:
            raise ValueError("max_utterance_s is too short for min_speech_ms and the padding")

    def samples(self, ms: float) -> int:
        return int(round(ms * self.sample_rate / 1000))

    def end_silences(self) -> tuple[int, ...]:
        """The silences (ms) after which an utterance can end in this endpoint mode."""
        if self.endpoint == "turn":
            return (self.turn_silence_ms, self.incomplete_silence_ms)
        return (self.end_silence_ms,)


@dataclass(frozen=True, slots=True, eq=False)
class SpeechStart:
    """A segment is confirmed as speech. start_sample/t_ns: detected onset (no padding)."""

    segment: int
    start_sample: int
    t_ns: int


@dataclass(frozen=True, slots=True, eq=False)
class EndpointPending:
    """Silence started in segment `segment`; the utterance will probably end there.

    audio: (n,) float32, the utterance so far from its padded start to the silence start (no
    trailing padding). If no SpeechResumed follows, the SpeechEnd of this segment has the same
    start_sample and an end_sample at most pad_end_ms later.
    """

    segment: int
    audio: np.ndarray
    start_sample: int
    end_sample: int
    t_start_ns: int
    t_end_ns: int


@dataclass(frozen=True, slots=True, eq=False)
class SpeechResumed:
    """Speech came back before the endpoint: the last EndpointPending of `segment` is void."""

    segment: int
    sample: int
    t_ns: int


@dataclass(frozen=True, slots=True, eq=False)
class SpeechEnd:
    """A finished utterance.

    audio: (n,) float32, samples [start_sample, end_sample) of the stream, padding included;
    t_start_ns/t_end_ns bound it. speech_*: the detected speech without padding. forced: cut at
    max_utterance_s (or by flush() while speech was still going on), not by silence. reason: one of
    END_REASONS.
    """

    segment: int
    audio: np.ndarray
    start_sample: int
    end_sample: int
    t_start_ns: int
    t_end_ns: int
    speech_start_sample: int
    speech_end_sample: int
    speech_start_ns: int
    speech_end_ns: int
    forced: bool = False
    reason: str = "silence"  # one of END_REASONS

    def to_utterance(self, utterance_id: int, frames: tuple[VideoFrame, ...] = (), speaker: int = 0) -> Utterance:
        """The pipeline-level Utterance of this segment (its padded audio and times)."""
        return Utterance(utterance_id, self.audio, self.t_start_ns, self.t_end_ns, frames, speaker)


SegmentEvent = SpeechStart | EndpointPending | SpeechResumed | SpeechEnd


class _SampleBuffer:
    """Growable float32 buffer addressed by stream sample index; old samples can be discarded."""

    def __init__(self) -> None:
        self._data = np.zeros(1 << 15, np.float32)
        self._first = 0  # stream index of _data[0]
        self._size = 0

    @property
    def first(self) -> int:
        return self._first

    @property
    def end(self) -> int:
        return self._first + self._size

    def append(self, x: np.ndarray) -> None:
        need = self._size + x.shape[0]
        if need > self._data.shape[0]:
            grown = np.zeros(max(need, 2 * self._data.shape[0]), np.float32)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : need] = x
        self._size = need

    def get(self, a: int, b: int) -> np.ndarray:
        """Copy of samples [a, b); a must not have been discarded."""
        if a < self._first or b > self.end or a > b:
            raise IndexError(f"samples [{a}, {b}) not in buffer [{self._first}, {self.end})")
        return self._data[a - self._first : b - self._first].copy()

    def discard_before(self, idx: int) -> None:
        drop = min(max(0, idx - self._first), self._size)
        if drop == 0:
            return
        keep = self._size - drop
        self._data[:keep] = self._data[drop : self._size]
        self._first += drop
        self._size = keep


class Segmenter:
    """Streaming VAD segmenter. See the module docstring for the rules; not thread-safe."""

    def __init__(self, config: SegmenterConfig | None = None, vad: VadModel | None = None) -> None:
        self.config = config or SegmenterConfig()
        self._vad = vad or shared_vad(self.config.model_path)
        c = self.config
        self._min_speech = c.samples(c.min_speech_ms)
        self._end_silence = c.samples(c.end_silence_ms)
        self._turn_silence = c.samples(c.turn_silence_ms)
        self._incomplete_silence = c.samples(c.incomplete_silence_ms)
        self._pending_silence = c.samples(c.pending_silence_ms)
        self._pad_start = c.samples(c.pad_start_ms)
        self._pad_end = c.samples(c.pad_end_ms)
        self._max_len = c.samples(c.max_utterance_s * 1000)
        self._split_silence = c.samples(c.split_silence_ms)
        self._resync_ns = c.resync_tolerance_ms * 1_000_000
        self.reset()

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Forget everything: model state, audio, clock, segment numbering."""
        self._h, self._c = SileroVad.initial_state()
        self._context = np.zeros(CONTEXT, np.float32)
        self._buf = _SampleBuffer()
        self._anchors: list[tuple[int, int]] = []  # (sample index, ns), increasing
        self._processed = 0  # samples already run through the model
        self._segment = 0  # number of the current/next segment
        self._floor = 0  # padding never reaches before this sample (previous utterance's end)
        self._last_prob = 0.0
        self._probs: collections.deque[tuple[int, float]] = collections.deque(maxlen=PROB_HISTORY)  # (w0, p)
        self._idle()

    def push(self, samples: np.ndarray, t0_ns: int) -> list[SegmentEvent]:
        """Feed (n,) float32 mono 16 kHz samples whose first sample was captured at t0_ns."""
        x = np.asarray(samples)
        if x.ndim != 1:
            raise ValueError(f"expected mono (n,) samples, got shape {x.shape}")
        x = as_float32(x)
        self._anchor(t0_ns)
        self._buf.append(x)
        events: list[SegmentEvent] = []
        n_windows = (self._buf.end - self._processed) // WINDOW
        if n_windows:
            self._run_windows(n_windows, events)
        self._trim()
        return events

    def flush(self) -> list[SegmentEvent]:
        """End of stream: close an open utterance (if confirmed), then reset()."""
        events: list[SegmentEvent] = []
        real_end = self._buf.end
        if real_end > self._processed:  # last partial window, zero-padded for the model
            tail = self._buf.get(self._processed, real_end)
            window = np.concatenate([self._context, tail, np.zeros(WINDOW - tail.size, np.float32)])
            probs, self._h, self._c = self._vad(window[None, :], self._h, self._c)
            self._processed = real_end
            self._step(float(probs[0]), real_end - tail.size, real_end, events)
        if self._triggered and self._confirmed:
            in_silence = self._silence_start is not None
            speech_end = self._silence_start if in_silence else min(self._last_speech_end, real_end)
            end = min(speech_end + self._pad_end, real_end)
            events.append(self._end(speech_end, end, forced=not in_silence, reason="silence"))
        self.reset()
        return events

    @property
    def in_speech(self) -> bool:
        """True while a confirmed segment is open."""
        return self._triggered and self._confirmed

    @property
    def last_prob(self) -> float:
        """Speech probability of the last window."""
        return self._last_prob

    @property
    def processed_samples(self) -> int:
        return self._processed

    @property
    def segment(self) -> int:
        """Number of the open (or next) segment."""
        return self._segment

    @property
    def active_start_sample(self) -> int | None:
        """Stream index of the open confirmed segment's first (padded) sample, else None."""
        return self._audio_start if self.in_speech else None

    @property
    def speech_start_sample(self) -> int | None:
        """Stream index of the open confirmed segment's detected onset (no padding), else None."""
        return self._speech_start if self.in_speech else None

    def audio(self, a: int, b: int) -> np.ndarray:
        """(b - a,) float32 copy of stream samples [a, b) (still buffered: the open segment's)."""
        return self._buf.get(a, b)

    def probabilities(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """The windows starting in [a, b) that are still remembered: (window starts (n,), speech
        probabilities (n,))."""
        rows = [(w0, p) for w0, p in self._probs if a <= w0 < b]
        return (np.array([r[0] for r in rows], np.int64), np.array([r[1] for r in rows], np.float32))

    def set_turn_probability(self, segment: int, pause_start: int, probability: float) -> None:
        """The end-of-turn model's P(turn complete) for the pause that started at `pause_start` in
        `segment` (an `EndpointPending`'s segment and end_sample). Ignored when that pause is over."""
        if segment == self._segment and self._silence_start == pause_start:
            self._turn_p = float(probability)

    def split_at(self, sample: int) -> list[SegmentEvent]:
        """A speaker change at stream sample `sample` inside the open segment: it ends there
        (`reason="speaker_change"`, no trailing padding) and the next segment starts there, already
        confirmed. Returns [SpeechEnd, SpeechStart], or [] when there is nothing to split."""
        if not self.in_speech:
            return []
        sample = int(min(max(sample, self._speech_start + 1), self._processed - 1))
        if sample <= self._audio_start or sample >= self._processed:
            return []
        silence, last_speech = self._silence_start, self._last_speech_end
        end = self._end(sample, sample, forced=False, reason="speaker_change")
        self._open(sample, max(last_speech, sample + 1), confirmed=True)
        if silence is not None and silence > sample:  # the pause in progress is the new segment's
            self._silence_start = silence
        return [end, SpeechStart(self._segment, sample, self.time_ns(sample))]

    def time_ns(self, sample: int) -> int:
        """Capture time of stream sample `sample` (exact integer arithmetic)."""
        if not self._anchors:
            raise RuntimeError("no audio pushed yet")
        i = bisect.bisect_right(self._anchors, (sample, 1 << 62)) - 1
        a_idx, a_ns = self._anchors[max(i, 0)]
        return a_ns + samples_to_ns(sample - a_idx, self.config.sample_rate)

    @property
    def active_start_ns(self) -> int | None:
        """Time of the first (padded) sample of the open confirmed segment, else None."""
        return self.time_ns(self._audio_start) if self.in_speech else None

    def active_audio(self) -> np.ndarray | None:
        """(n,) float32 audio of the open confirmed segment so far (for interim predictions)."""
        if not self.in_speech:
            return None
        return self._buf.get(self._audio_start, self._processed)

    # ------------------------------------------------------------------ internals
    def _idle(self) -> None:
        self._triggered = False
        self._confirmed = False
        self._speech_start = 0
        self._audio_start = 0
        self._last_speech_end = 0
        self._silence_start: int | None = None
        self._turn_p: float | None = None  # P(turn complete) of the pause in progress, once judged
        self._pending = False
        self._gap: tuple[int, int] | None = None  # last pause >= split_silence inside the segment

    def _anchor(self, t0_ns: int) -> None:
        n = self._buf.end
        if not self._anchors:
            self._anchors.append((n, int(t0_ns)))
            return
        expected = self.time_ns(n)
        if abs(int(t0_ns) - expected) > self._resync_ns:
            floor = self.time_ns(n - 1) + 1 if n > 0 else t0_ns
            new_ns = max(int(t0_ns), floor)
            logger.warning("audio clock re-anchored at sample %d: chunk t0 %+.1f ms from expected",
                           n, (t0_ns - expected) / 1e6)
            self._anchors.append((n, new_ns))

    def _run_windows(self, n_windows: int, events: list[SegmentEvent]) -> None:
        start = self._processed
        new = self._buf.get(start, start + n_windows * WINDOW).reshape(n_windows, WINDOW)  # (n, 512)
        ctx = np.concatenate([self._context[None, :], new[:-1, -CONTEXT:]], axis=0)  # (n, 64)
        windows = np.concatenate([ctx, new], axis=1)  # (n, 576)
        probs, self._h, self._c = self._vad(windows, self._h, self._c)
        self._context = new[-1, -CONTEXT:].copy()
        for k in range(n_windows):
            w0 = start + k * WINDOW
            self._processed = w0 + WINDOW
            self._step(float(probs[k]), w0, w0 + WINDOW, events)

    def _step(self, p: float, w0: int, w1: int, events: list[SegmentEvent]) -> None:
        """State machine for one window [w0, w1) with speech probability p."""
        cfg = self.config
        self._last_prob = p
        self._probs.append((w0, p))
        if not self._triggered:
            if p >= cfg.start_threshold:
                self._open(w0, w1, confirmed=False)
                self._maybe_confirm(events)
            return
        if self._silence_start is None:
            if p >= cfg.end_threshold:
                self._last_speech_end = w1
            else:
                self._silence_start = w0
        elif p >= cfg.start_threshold:  # speech resumed
            if w0 - self._silence_start >= self._split_silence:
                self._gap = (self._silence_start, w0)
            self._silence_start = None
            self._turn_p = None
            self._last_speech_end = w1
            if self._pending:
                self._pending = False
                events.append(SpeechResumed(self._segment, w0, self.time_ns(w0)))
        self._maybe_confirm(events)
        if self._silence_start is not None:
            silence = w1 - self._silence_start
            if not self._confirmed:
                if silence >= self._end_silence:
                    logger.debug("dropped %d ms of speech (< min_speech_ms)",
                                 (self._last_speech_end - self._speech_start) * 1000 // cfg.sample_rate)
                    self._idle()
                return
            reason = self._pause_ends(silence)
            if reason is not None:
                s0 = self._silence_start
                events.append(self._end(s0, s0 + self._pad_end, forced=False, reason=reason))
                return
            if not self._pending and silence >= self._pending_silence:
                self._pending = True
                a, b = self._audio_start, self._silence_start
                events.append(EndpointPending(self._segment, self._buf.get(a, b), a, b,
                                              self.time_ns(a), self.time_ns(b)))
        if self._triggered and w1 + WINDOW - self._audio_start > self._max_len:  # next window would overflow
            self._split(w1, events)

    def _pause_ends(self, silence: int) -> str | None:
        """Whether a pause of `silence` samples ends the utterance, and why (None: not yet)."""
        if self.config.endpoint == "silence":
            return "silence" if silence >= self._end_silence else None
        if self._turn_p is not None and self._turn_p >= self.config.turn_threshold and silence >= self._turn_silence:
            return "turn_complete"
        return "silence" if silence >= self._incomplete_silence else None

    def _open(self, speech_start: int, last_speech_end: int, confirmed: bool) -> None:
        self._triggered = True
        self._confirmed = confirmed
        self._speech_start = speech_start
        self._audio_start = max(speech_start - self._pad_start, self._floor, self._buf.first)
        self._last_speech_end = last_speech_end
        self._silence_start = None
        self._turn_p = None
        self._pending = False
        self._gap = None

    def _maybe_confirm(self, events: list[SegmentEvent]) -> None:
        if not self._confirmed and self._last_speech_end - self._speech_start >= self._min_speech:
            self._confirmed = True
            events.append(SpeechStart(self._segment, self._speech_start, self.time_ns(self._speech_start)))

    def _end(self, speech_end: int, end: int, forced: bool, reason: str = "max_length") -> SpeechEnd:
        """Close the current confirmed segment with audio [audio_start, end) and go idle."""
        a = self._audio_start
        ev = SpeechEnd(
            segment=self._segment,
            audio=self._buf.get(a, end),
            start_sample=a,
            end_sample=end,
            t_start_ns=self.time_ns(a),
            t_end_ns=self.time_ns(end),
            speech_start_sample=self._speech_start,
            speech_end_sample=speech_end,
            speech_start_ns=self.time_ns(self._speech_start),
            speech_end_ns=self.time_ns(speech_end),
            forced=forced,
            reason=reason,
        )
        self._segment += 1
        self._floor = end
        self._idle()
        return ev

    def _split(self, w1: int, events: list[SegmentEvent]) -> None:
        """The open segment reached max_utterance_s at window end w1: cut it."""
        if not self._confirmed:  # only possible with odd configs; nothing worth keeping
            self._idle()
            return
        if self._silence_start is not None:  # cut at the silence in progress; stay idle after it
            s = self._silence_start
            events.append(self._end(s, min(s + self._pad_end, w1), forced=True))
            return
        if self._gap is not None and self._gap[0] > self._speech_start:
            g0, g1 = self._gap
            cut = g0 + min(self._pad_end, (g1 - g0) // 2)
            events.append(self._end(g0, cut, forced=True))
            self._open(g1, w1, confirmed=False)
        else:
            events.append(self._end(w1, w1, forced=True))
            self._open(w1, w1, confirmed=False)
        # the rest is a continuation of confirmed speech: confirm it at once
        self._confirmed = True
        events.append(SpeechStart(self._segment, self._speech_start, self.time_ns(self._speech_start)))

    def _trim(self) -> None:
        """Drop audio (and clock anchors) that no event can still need."""
        if self._triggered:
            keep = self._audio_start
        else:
            keep = max(self._processed - self._pad_start - WINDOW, self._floor, 0)
        keep = min(keep, self._processed)
        self._buf.discard_before(keep)
        i = bisect.bisect_right(self._anchors, (keep, 1 << 62)) - 1
        if i > 0:
            del self._anchors[:i]
