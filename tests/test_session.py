"""DialogueSession: finals advance the state, interims do not; missing inputs give flagged predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.model.checkpoint import load_checkpoint, save_checkpoint
from emostream.model.mcncl import MCNCL
from emostream.realtime.runtime import load_step_model
from emostream.realtime.session import DialogueSession, Featurizers
from emostream.realtime.types import Utterance
from tests.model_helpers import small_config


class FakeTextFeaturizer:
    """Stands in for MiniLM in these unit tests of the session logic: a hash of the words."""

    def __init__(self, dim: int, fail_on: str | None = None) -> None:
        self.dim = dim
        self.fail_on = fail_on

    def __call__(self, texts: list) -> np.ndarray:
        from emostream.model.features.context import as_input

        out = []
        for item in texts:
            t = " | ".join((as_input(item).current, *as_input(item).past))
            if self.fail_on and self.fail_on in t:
                raise RuntimeError("extractor exploded")
            rng = np.random.default_rng(abs(hash(t)) % (2**32))
            out.append(rng.normal(size=self.dim))
        return np.asarray(out, dtype=np.float32)


class FakeAudioFeaturizer:
    """Stands in for openSMILE here: the mean and energy of the signal in every dim."""

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def __call__(self, samples: np.ndarray, rate: int) -> np.ndarray:
        return np.full(self.dim, float(np.mean(samples**2)), dtype=np.float32)


@pytest.fixture(scope="module", params=["torch", "onnx"])
def step_model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    torch.manual_seed(0)
    cfg = small_config(modalities=("text", "audio"))
    path = save_checkpoint(tmp_path_factory.mktemp("ck") / "s.safetensors", MCNCL(cfg).eval())
    ckpt = load_checkpoint(path)
    engine_dir = tmp_path_factory.mktemp("engine") if request.param == "onnx" else None
    if engine_dir is not None:
        from emostream.export.onnx import export_onnx

        export_onnx(ckpt, engine_dir, parts=("step",))
    return load_step_model(ckpt, request.param, str(engine_dir) if engine_dir else None)


def utt(i: int, speaker: int = 0, seconds: float = 1.0) -> Utterance:
    audio = (np.random.default_rng(i).normal(size=int(16000 * seconds)) * 0.1).astype(np.float32)
    return Utterance(id=i, audio=audio, t_start_ns=i * 10**9, t_end_ns=(i + 1) * 10**9, speaker=speaker)


def session(model, **kw) -> DialogueSession:
    return DialogueSession(model, Featurizers(text=FakeTextFeaturizer(model.text_dim, **kw),
                                              audio=FakeAudioFeaturizer(model.audio_dim)))


def test_interim_does_not_advance_but_final_does(step_model) -> None:
    a, b = session(step_model), session(step_model)
    texts = ["hello there", "I am angry", "why though", "fine"]
    for i, text in enumerate(texts):
        interim = a.predict(utt(i, i % 2), text[:3], final=False)
        assert not interim.final and abs(sum(interim.probs.values()) - 1) < 1e-5
        fa = a.predict(utt(i, i % 2), text, final=True)
        fb = b.predict(utt(i, i % 2), text, final=True)
        assert fa.probs == pytest.approx(fb.probs, abs=1e-6)  # the interim changed nothing
    assert a.n_final == 4
    # the state really advances: the same utterance gives another result after the dialogue
    first = session(step_model).predict(utt(0), "hello there", final=True)
    again = a.predict(utt(0), "hello there", final=True)
    assert max(abs(first.probs[k] - again.probs[k]) for k in first.probs) > 1e-4


def test_reset_restores_the_fresh_state(step_model) -> None:
    s = session(step_model)
    fresh = s.predict(utt(0), "good morning", final=False)
    for i in range(3):
        s.predict(utt(i + 1), f"sentence {i}", final=True)
    s.reset()
    assert s.n_final == 0
    assert s.predict(utt(0), "good morning", final=False).probs == pytest.approx(fresh.probs, abs=1e-6)


def test_empty_transcript_gives_a_flagged_prediction(step_model) -> None:
    p = session(step_model).predict(utt(0), "   ", final=True)
    assert "no_text" in p.flags and p.label in step_model.labels
    assert abs(sum(p.probs.values()) - 1) < 1e-5 and all(np.isfinite(list(p.probs.values())))


def test_failing_extractor_gives_a_flagged_prediction(step_model) -> None:
    s = session(step_model, fail_on="boom")
    p = s.predict(utt(0), "boom goes the extractor", final=True)
    assert "text_failed" in p.flags and abs(sum(p.probs.values()) - 1) < 1e-5
    assert s.n_final == 1  # the dialogue goes on


def test_nothing_present_is_flagged(step_model) -> None:
    p = session(step_model).predict(utt(0, seconds=0.05), "", final=True)
    assert {"no_text", "no_audio", "nothing_present"} <= set(p.flags)


def test_session_refuses_a_missing_featurizer(step_model) -> None:
    with pytest.raises(ValueError, match="uses audio"):
        DialogueSession(step_model, Featurizers(text=FakeTextFeaturizer(step_model.text_dim)))


def test_mismatched_engine_is_refused(tmp_path: Path) -> None:
    from emostream.export.engines import SidecarError

    torch.manual_seed(0)
    from emostream.model.features.spec import default_feature_spec, text_spec

    spec = default_feature_spec()
    path = save_checkpoint(tmp_path / "a.safetensors", MCNCL(small_config()).eval(), feature_spec=spec.to_dict())
    ckpt = load_checkpoint(path)
    other = spec.replace(text=text_spec(weights_id="roberta-base", dim=768)).to_dict()
    from emostream.export.engines import load_engine
    from emostream.realtime.runtime import EngineStepModel

    with pytest.raises(SidecarError, match="labels differ"):
        EngineStepModel(load_engine("torch", ckpt), labels=("x", "y", "z", "w"))
    with pytest.raises(SidecarError, match="text: .*dim: expected 384, got 768"):
        EngineStepModel(load_engine("torch", ckpt), feature_spec=other, modalities=("text",))
    EngineStepModel(load_engine("torch", ckpt), labels=ckpt.labels, feature_spec=spec.to_dict())  # a match is fine


def test_face_fusion_fills_modalities_and_flags_a_faceless_utterance(step_model) -> None:
    from emostream.realtime.fusion import FaceFusion, LabelMap

    labels = step_model.labels  # ("a", "b", "c", "d"): a two-class face expert standing for "a" and "b"
    fusion = FaceFusion(LabelMap(("angry", "happy"), labels, (0, 1, None, None)), prior=np.array([0.5, 0.5]),
                        weight=1.0)
    s = DialogueSession(step_model, Featurizers(text=FakeTextFeaturizer(step_model.text_dim),
                                                audio=FakeAudioFeaturizer(step_model.audio_dim)), face_fusion=fusion)
    no_face = s.predict(utt(0), "hello", final=False)
    assert no_face.modalities["face"] is None and "no_face" in no_face.flags
    assert no_face.probs == pytest.approx(no_face.modalities["text"])  # nothing to fuse
    face = s.predict(utt(0), "hello", final=False, face=np.array([0.05, 0.95]))
    assert "no_face" not in face.flags and set(face.modalities) == {"text", "face"}
    assert face.modalities["face"]["b"] == pytest.approx(0.95) and face.modalities["face"]["c"] == 0.0
    assert face.modalities["text"] == pytest.approx(no_face.modalities["text"])
    assert face.probs["b"] > no_face.probs["b"] and face.probs["a"] < no_face.probs["a"]
    assert abs(sum(face.probs.values()) - 1) < 1e-9


class RecordingContextText(FakeTextFeaturizer):
    """The fake text featurizer of a context encoder (2 past turns): it records its inputs."""

    context_turns = 2

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self.seen: list = []

    def __call__(self, texts: list) -> np.ndarray:
        self.seen.extend(texts)
        return super().__call__(texts)


def test_the_live_text_context_is_the_training_input(step_model) -> None:
    from emostream.model.features.context import dialogue_inputs

    text = RecordingContextText(step_model.text_dim)
    s = DialogueSession(step_model, Featurizers(text=text, audio=FakeAudioFeaturizer(step_model.audio_dim)))
    said = [(0, "I got the job!"), (1, "No way."), (0, ""), (1, "That's amazing!"), (0, "I know, right?")]
    finals = []
    for i, (speaker, words) in enumerate(said):
        s.predict(utt(i, speaker), words[:4], final=False)  # an interim sees the past, and is not a turn
        s.predict(utt(i, speaker), words, final=True)
        finals.append(text.seen[-1] if words.strip() else None)
    expected = dialogue_inputs([w for _, w in said], [sp for sp, _ in said], turns=2)  # what training builds
    assert [f for f in finals if f is not None] == [e for e, (_, w) in zip(expected, said) if w.strip()]
    assert finals[-1].past == ("B: That's amazing!", "B: No way.")
    s.reset()
    s.predict(utt(9, 1), "Hello?", final=True)
    assert text.seen[-1].past == () and text.seen[-1].current == "A: Hello?"
