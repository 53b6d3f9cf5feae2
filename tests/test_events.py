"""The core says what it says as typed frozen records (realtime/events.py), and reads only the clock
its driver gives it: a worker driven here with a fake clock, no sink and no thread."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from emostream.realtime import events, protocol

DATA = Path(__file__).resolve().parent / "data"


def test_every_record_becomes_a_valid_protocol_message() -> None:
    from emostream.realtime.types import Prediction

    validator = jsonschema.Draft202012Validator(protocol.protocol_schema())
    labels = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")
    pred = Prediction(utterance_id=3, final=True, label="joy", probs={k: (0.4 if k == "joy" else 0.1) for k in labels},
                      text="hello there", speaker=1, t_start_ns=1_000_000_000, t_end_ns=2_500_000_000)
    records = [
        events.UtteranceEvent("end", 3, 1, 2500.0, end_reason="turn_complete", overlap=False),
        events.TranscriptEvent(3, 1, "hello there", "en"),
        events.PredictionEvent(pred, t0_ns=0, end_reason="turn_complete", latency_ms=412.5),
        events.FaceEvent(2400.0, {"joy": 0.9, "neutral": 0.1}, (10, 20, 30, 40), (320, 240), 1),
        events.StatusEvent("degraded", "utterance 3: speech recognition failed: no text", "warning"),
        events.ErrorEvent("internal", "the dialogue failed on one audio chunk"),
    ]
    messages = [r.message() for r in records]
    for m in messages:
        validator.validate(m)
        json.dumps(m)
    assert [m["type"] for m in messages] == ["utterance", "transcript", "prediction", "face", "status", "error"]
    assert messages[2]["latency_ms"] == 412.5 and messages[2]["final"] is True and messages[2]["utterance_id"] == 3
    assert messages[0]["end_reason"] == "turn_complete" and messages[3]["n_faces"] == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        records[1].text = "changed"  # type: ignore[misc]


def test_the_worker_reads_no_clock_of_its_own() -> None:
    import emostream.realtime.worker as worker_module

    assert not hasattr(worker_module, "time")


def test_a_worker_returns_records_timed_by_the_drivers_clock(shared: Any) -> None:
    import soundfile as sf

    from emostream.realtime.config import PipelineConfig
    from emostream.realtime.segmenter import Segmenter
    from emostream.realtime.types import AudioChunk
    from emostream.realtime.worker import FrameRing, Worker

    config = PipelineConfig(interim=False)
    audio, _ = sf.read(DATA / "dialogue.wav", dtype="float32")
    clip = audio[: 9 * 16_000]  # the first two turns
    stream_ns = [0]  # the fake clock: the chunk's stream time, plus 5 ms of "compute" per reading since
    readings = [0, 0]  # (since this chunk, in all)

    def clock() -> int:
        readings[0] += 1
        readings[1] += 1
        return stream_ns[0] + 5_000_000 * readings[0]

    parts = shared.dialogue_parts()
    worker = Worker(parts["session"], Segmenter(config.segmenter), parts["transcriber"], FrameRing(8), config, 0,
                    speakers=parts["speakers"], turn_model=parts["turn_model"], clock=clock)
    said: list[Any] = []
    for i in range(0, clip.size, 512):
        stream_ns[0], readings[0] = i * 62_500, 0
        worker.process(AudioChunk(samples=clip[i:i + 512], sample_rate=16_000, t0_ns=i * 62_500))
        said.extend(worker.take_events())
    worker.flush()
    said.extend(worker.take_events())
    assert worker.take_events() == []  # taken once
    assert all(isinstance(e, events.Event) for e in said)
    finals = [e for e in said if isinstance(e, events.PredictionEvent) and e.prediction.final]
    assert len(finals) == 2 and all(f.prediction.text for f in finals)
    starts = [e for e in said if isinstance(e, events.UtteranceEvent) and e.event == "start"]
    assert [s.utterance_id for s in starts] == [0, 1]
    # the final's times are the fake clock's: its compute is whole 5 ms ticks, and its latency lies
    # within the 9 s of stream time (the wall clock would give neither)
    assert all(f.prediction.timings_ms["compute_ms"] > 0 and f.prediction.timings_ms["compute_ms"] % 5 == 0
               for f in finals), [f.prediction.timings_ms for f in finals]
    assert all(0 < f.latency_ms < 9_000 for f in finals), [f.latency_ms for f in finals]
    assert readings[1] > 0
