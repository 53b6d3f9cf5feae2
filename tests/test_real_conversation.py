"""End to end on real conversations: the whole live pipeline (Silero segmenter, Smart Turn, GE2E
speaker turns, tiny.en ASR, MiniLM and the bundled checkpoint) on a real two-person telephone call
and on real voices taking fast turns, as fast as it goes; and bad input that holds no speech.

The call is the pyannote-audio wheel's sample (tests/data/README.md: its audio is read from the
installed package, not copied; `pip install --no-deps pyannote-audio`)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from emostream.realtime import protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.pipeline import Pipeline
from tests import conversations

SR = 16_000


def write_wav(path: Path, audio: np.ndarray) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SR)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    return path


def play(path: Path, engine_cache: Path) -> list[dict]:
    events: list[dict] = []
    cfg = PipelineConfig(media=str(path), realtime=False, engine="onnx", face_expert=None)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSTREAM_CACHE", str(engine_cache))
        with Pipeline(cfg, events.append) as pipeline:
            assert pipeline.wait(300), f"the pipeline did not finish {path.name}"
    return events


def finals_of(events: list[dict]) -> list[dict]:
    return [e for e in events if e["type"] == "prediction" and e["final"]]


@pytest.fixture(scope="module")
def call(tmp_path_factory: pytest.TempPathFactory, engine_cache: Path) -> tuple[conversations.Conversation, list]:
    try:
        conv = conversations.load("call")
    except conversations.CallUnavailable as e:
        pytest.skip(str(e))
    return conv, play(write_wav(tmp_path_factory.mktemp("call") / "call.wav", conv.audio), engine_cache)


def test_the_call_has_its_two_speakers(call) -> None:  # noqa: ANN001
    conv, events = call
    finals = finals_of(events)
    assert {f["speaker"] for f in finals} == {0, 1}  # two voices, no third: the target is exact
    assert len(conv.speakers) == 2


def test_the_calls_turns_get_finals_of_their_speaker(call) -> None:  # noqa: ANN001
    conv, events = call
    finals = finals_of(events)
    right, turns, slot_speaker = conversations.turns_with_their_speaker(
        conv, ((f["t_start_ms"] / 1000, f["t_end_ms"] / 1000, f["speaker"]) for f in finals))
    assert len(set(slot_speaker.values())) == 2  # each slot stands for its own person
    assert right >= 6, (right, turns)  # of 9 (turns of 0.4-6.7 s, gaps -650..470 ms)


def test_every_final_belongs_to_one_speaker(call) -> None:  # noqa: ANN001
    """No final swallows another person's turn. The resolution is one 1.6 s embedding window: turns
    shorter than that (the call opens with "Hello?" / "Hello?" / "Oh, hello." / "Neither did I.", each
    0.4-1.1 s, with no pause between) cannot be told apart inside speech, and are not counted."""
    conv, events = call
    swallowed = []
    for f in finals_of(events):
        a, b = f["t_start_ms"] / 1000, f["t_end_ms"] / 1000
        share = {s: sum(max(0.0, min(b, t.end_s) - max(a, t.start_s)) for t in conv.turns if t.speaker == s)
                 for s in conv.speakers}
        main = max(share, key=share.__getitem__)
        swallowed += [t for t in conv.turns if t.speaker != main and t.duration_s >= 1.6
                      and min(b, t.end_s) - max(a, t.start_s) >= 0.75 * t.duration_s]
    assert swallowed == [], swallowed


def test_finals_say_why_they_ended_and_are_valid(call) -> None:  # noqa: ANN001
    from jsonschema import Draft202012Validator

    _, events = call
    validator = Draft202012Validator(protocol.protocol_schema())
    for e in events:
        assert not list(validator.iter_errors(e)), e
    finals = finals_of(events)
    assert all(f["end_reason"] in protocol.END_REASONS and isinstance(f["overlap"], bool) for f in finals)
    ends = {e["utterance_id"]: e for e in events if e["type"] == "utterance" and e["event"] == "end"}
    assert all(ends[f["utterance_id"]]["end_reason"] == f["end_reason"] for f in finals)
    assert "speaker_change" in {f["end_reason"] for f in finals}  # turns taken without a pause are found


def test_no_speech_gives_no_final_and_the_process_keeps_serving(tmp_path: Path, engine_cache: Path) -> None:
    """Noise, then music: nothing to transcribe, no final, no error; the same process then serves a
    real conversation."""
    rng = np.random.default_rng(0)
    t = np.arange(8 * SR) / SR
    noise = (0.1 * rng.standard_normal(t.size)).astype(np.float32)
    music = np.zeros(t.size)
    for i, f0 in enumerate([220.0, 277.2, 329.6, 440.0] * 4):  # plucked notes with a click on each
        a = int(i * 0.5 * SR)
        seg = t[a : a + SR // 2] - t[a]
        music[a : a + seg.size] += 0.2 * np.exp(-3 * seg) * sum(np.sin(2 * np.pi * f0 * k * seg) / k for k in range(1, 6))
        music[a : a + 400] += 0.3 * rng.standard_normal(400)
    for name, audio in (("noise", noise), ("music", music.astype(np.float32))):
        events = play(write_wav(tmp_path / f"{name}.wav", audio), engine_cache)
        assert finals_of(events) == [], name
        assert not [e for e in events if e["type"] == "error"], name
    conv = conversations.load("pair_mf_heldout")
    events = play(write_wav(tmp_path / "after.wav", conv.audio), engine_cache)
    assert len(finals_of(events)) >= 5
