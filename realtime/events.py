"""What the I/O-free core says, as typed frozen records. The worker returns them (`Worker.take_events`);
the `Dialogue` turns each into its protocol v1 message (`message()`, built by
`emostream.realtime.protocol`) at its sink, and the transport turns messages into JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from emostream.realtime import protocol


@dataclass(frozen=True, slots=True)
class UtteranceEvent:
    """An utterance started or ended at `t_ms` (stream time)."""

    event: Literal["start", "end"]
    utterance_id: int
    speaker: int | str
    t_ms: float
    end_reason: str | None = None
    overlap: bool | None = None

    def message(self) -> dict[str, Any]:
        return protocol.utterance(event=self.event, utterance_id=self.utterance_id, speaker=self.speaker,
                                  t_ms=self.t_ms, end_reason=self.end_reason, overlap=self.overlap)


@dataclass(frozen=True, slots=True)
class TranscriptEvent:
    utterance_id: int
    speaker: int | str
    text: str
    language: str | None = None

    def message(self) -> dict[str, Any]:
        return protocol.transcript(utterance_id=self.utterance_id, speaker=self.speaker, text=self.text,
                                   language=self.language)


@dataclass(frozen=True, slots=True, eq=False)
class PredictionEvent:
    """An interim or final prediction (`prediction.final`). `t0_ns`: the stream's start;
    `published_ns`: when an interim went out (its latency); `latency_ms`: a final's end of speech
    to prediction."""

    prediction: Any  # emostream.realtime.types.Prediction
    t0_ns: int
    end_reason: str | None = None
    overlap: bool | None = None
    published_ns: int | None = None
    latency_ms: float | None = None

    def message(self) -> dict[str, Any]:
        msg = protocol.prediction_from(self.prediction, t0_ns=self.t0_ns, now_ns=self.published_ns,
                                       end_reason=self.end_reason, overlap=self.overlap)
        if self.latency_ms is not None:
            msg["latency_ms"] = self.latency_ms
        return msg


@dataclass(frozen=True, slots=True, eq=False)
class FaceEvent:
    """The newest face expression seen (at most `face_event_hz` a second)."""

    t_ms: float
    probs: Mapping[str, float] | None
    box: tuple[int, ...] | None
    frame_size: tuple[int, int]
    n_faces: int

    def message(self) -> dict[str, Any]:
        return protocol.face(t_ms=self.t_ms, probs=self.probs, box=self.box, frame_size=self.frame_size,
                             n_faces=self.n_faces)


@dataclass(frozen=True, slots=True)
class StatusEvent:
    code: str
    message_text: str
    level: Literal["info", "warning", "error"] = "info"

    def message(self) -> dict[str, Any]:
        return protocol.status(code=self.code, message=self.message_text, level=self.level)


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    code: str
    message_text: str

    def message(self) -> dict[str, Any]:
        return protocol.error(self.code, self.message_text)


Event = UtteranceEvent | TranscriptEvent | PredictionEvent | FaceEvent | StatusEvent | ErrorEvent
