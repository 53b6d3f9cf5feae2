"""Finals batched across dialogues: the scheduler encodes every due final's text in one call of the
shared text encoder (exported with a free batch dimension), and each dialogue's finals are what they
are when each runs alone. Real models (the bundled checkpoint, tiny.en, Smart Turn, GE2E); the
dialogues are driven by the real `Scheduler.run_round`, without its thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emostream.realtime.config import PipelineConfig
from emostream.realtime.dialogue import Dialogue
from emostream.realtime.scheduler import Scheduler
from emostream.realtime.types import AudioChunk

DATA = Path(__file__).resolve().parent / "data"
CHUNK = 1024  # samples a chunk (64 ms), as a browser sends


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    import soundfile as sf

    audio, rate = sf.read(DATA / "dialogue.wav", dtype="float32")
    assert rate == 16_000
    # three dialogues: the first two hear the same at the same time (their finals fall due in the
    # same round) after different past turns (so their text inputs differ), the third other words
    return [audio[: 12 * rate], audio[: 12 * rate], audio[4 * rate: 16 * rate]]


PAST = ["I can't believe you did that, I'm furious!", "Oh wow, that's wonderful news, thank you!", "Okay."]


def run(shared: Any, clips: list[np.ndarray], past: list[str], batched: bool, encoder: Any = None,
        ) -> tuple[list[list[dict]], Scheduler]:
    """Each clip as one dialogue (all queued at once, `past` its earlier turn), driven to the end;
    each dialogue's messages."""
    config = PipelineConfig(interim=False)
    sched = Scheduler(slice_s=0.5)
    sent: list[list[dict]] = [[] for _ in clips]
    dialogues = []
    for i, clip in enumerate(clips):
        parts = shared.dialogue_parts()
        if encoder is not None:
            parts["session"].featurizers = encoder
        parts["session"].text_context.push(1, past[i])  # said before: context of the first finals
        d = Dialogue(f"d{i}", parts, config, sent[i].append, t0_ns=0)
        d.worker.defer_finals = batched
        for at in range(0, clip.size, CHUNK):
            d.audio_q.put(AudioChunk(samples=clip[at:at + CHUNK], sample_rate=16_000,
                                     t0_ns=at * 1_000_000_000 // 16_000))
        d.input_ended.set()
        sched.add(d)
        dialogues.append(d)
    for _ in range(10_000):
        if all(d.done.is_set() for d in dialogues):
            break
        sched.run_round()
    assert all(d.done.is_set() for d in dialogues)
    return sent, sched


def finals(messages: list[dict]) -> list[dict]:
    return [m for m in messages if m["type"] == "prediction" and m["final"]]


def test_finals_of_several_dialogues_share_one_text_call_and_match_each_dialogue_alone(shared: Any, clips: Any) -> None:
    batched, sched = run(shared, clips, PAST, batched=True)
    assert max(sched.final_batches) >= 2  # some finals of two dialogues went in one encoder call
    alone = [run(shared, [clip], [past], batched=False)[0][0] for clip, past in zip(clips, PAST)]
    for got, want in zip(batched, alone):
        got_f, want_f = finals(got), finals(want)
        assert len(got_f) == len(want_f) >= 2
        assert [f["text"] for f in got_f] == [f["text"] for f in want_f]
        assert [f["label"] for f in got_f] == [f["label"] for f in want_f]
        for g, w in zip(got_f, want_f):
            assert "text_failed" not in g["flags"]
            np.testing.assert_allclose([g["probs"][k] for k in sorted(w["probs"])],
                                       [w["probs"][k] for k in sorted(w["probs"])], atol=1e-4)
        # in order: each utterance's final before the next one starts, its end after its final
        kinds = [(m["type"], m.get("event"), m.get("utterance_id")) for m in got if m["type"] in ("utterance", "prediction")]
        for f in got_f:
            uid = f["utterance_id"]
            at = kinds.index(("prediction", None, uid))
            assert ("utterance", "end", uid) in kinds[at:]
            assert ("utterance", "start", uid + 1) not in kinds[:at]


class FailingText:
    """Stands in for the text encoder only in this test: every call raises."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.context_turns = real.context_turns

    def __call__(self, texts: list[Any]) -> np.ndarray:
        raise RuntimeError("the text encoder is down")


def test_a_failing_batched_text_call_flags_each_final_and_loses_none(shared: Any, clips: Any) -> None:
    from emostream.realtime.session import Featurizers

    real = shared.featurizers
    broken = Featurizers(text=FailingText(real.text), audio=real.audio, visual=real.visual)
    sent, _ = run(shared, clips, PAST, batched=True, encoder=broken)
    for messages in sent:
        got = finals(messages)
        assert len(got) >= 2
        assert all("text_failed" in f["flags"] for f in got)
        assert any(f["text"] for f in got)  # the words still go out
        assert any(m["type"] == "status" and m.get("code") == "degraded" for m in messages)
