"""The frozen dataclasses that flow between the realtime stages (DESIGN.md §2).

All of them are `@dataclass(frozen=True, slots=True, eq=False)`: immutable once made (a stage never
edits what another stage handed it), compact, and compared by identity because they hold numpy
arrays. Every time is an integer from one clock, `time.monotonic_ns()`; an end time is exclusive
(the time of the first sample after the span).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from emostream.model.config import MODALITIES
from emostream.model.features.pcm import as_float32

SAMPLE_RATE = 16_000
"""The sample rate of every `Utterance` (what Silero and whisper expect)."""

NS_PER_S = 1_000_000_000


def samples_to_ns(n_samples: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Duration of `n_samples` in integer nanoseconds (exact for 16 kHz: 62_500 ns a sample)."""
    return n_samples * NS_PER_S // sample_rate


@dataclass(frozen=True, slots=True, eq=False)
class AudioChunk:
    """A block of microphone/file audio as captured.

    samples: (n,) float32 in [-1, 1] or int16, mono. t0_ns: capture time of samples[0].
    """

    samples: np.ndarray
    sample_rate: int
    t0_ns: int

    @property
    def duration_ns(self) -> int:
        return samples_to_ns(int(self.samples.shape[0]), self.sample_rate)

    @property
    def t_end_ns(self) -> int:
        return self.t0_ns + self.duration_ns

    def as_float32(self) -> np.ndarray:
        """(n,) float32 in [-1, 1], whatever the capture format."""
        return as_float32(self.samples)


@dataclass(frozen=True, slots=True, eq=False)
class VideoFrame:
    """One camera/file frame. image: (H, W, 3) uint8, BGR as OpenCV gives it."""

    image: np.ndarray
    t_ns: int
    index: int


@dataclass(frozen=True, slots=True, eq=False)
class Utterance:
    """One segmented utterance with the video frames of its span.

    audio: (n,) float32 at 16 kHz, including the segmenter's padding; t_start_ns/t_end_ns bound
    that audio. speaker: party slot (0..P-1) of the dialogue.
    """

    id: int
    audio: np.ndarray
    t_start_ns: int
    t_end_ns: int
    frames: tuple[VideoFrame, ...] = ()
    speaker: int = 0

    @property
    def duration_s(self) -> float:
        return (self.t_end_ns - self.t_start_ns) / NS_PER_S


@dataclass(frozen=True, slots=True, eq=False)
class TranscriptWord:
    """A word with its times in seconds from the start of the utterance audio."""

    word: str
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True, slots=True, eq=False)
class Transcript:
    """What ASR made of one utterance. text is "" for silence/empty audio."""

    utterance_id: int
    text: str
    language: str = "en"
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    words: tuple[TranscriptWord, ...] | None = None
    flags: tuple[str, ...] = ()  # e.g. "asr_loop": whisper looped and the repetition was cut off


@dataclass(frozen=True, slots=True, eq=False)
class Features:
    """The model inputs of one utterance (unbatched numpy).

    text: (Dt,) float32; audio: (Da,) float32; visual: (F, Dv) float32; visual_mask: (F,) bool;
    present: one bool per modality in MODALITIES order ("text", "audio", "visual"). An absent
    modality still has a (zero) array of the right shape so the step has static shapes.
    """

    utterance_id: int
    text: np.ndarray
    audio: np.ndarray
    visual: np.ndarray
    visual_mask: np.ndarray
    present: tuple[bool, ...] = field(default=(True, True, True))
    speaker: int = 0

    def is_present(self, modality: str) -> bool:
        return bool(self.present[MODALITIES.index(modality)])


@dataclass(frozen=True, slots=True, eq=False)
class Prediction:
    """An emotion prediction for one utterance: interim (final=False) while it is spoken, then final.

    probs: label -> probability, the fused distribution. modalities: each modality's own
    distribution over the same labels ("text": MCN-CL on the words in their context, "face": the
    face expert), None where it saw nothing. timings_ms: stage -> milliseconds (e.g. "asr",
    "features", "model", "total"). flags: notes such as "forced_split", "no_face", "no_text".
    """

    utterance_id: int
    final: bool
    label: str
    probs: dict[str, float]
    text: str
    speaker: int
    t_start_ns: int
    t_end_ns: int
    timings_ms: dict[str, float] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    modalities: dict[str, dict[str, float] | None] = field(default_factory=dict)
