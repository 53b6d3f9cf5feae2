"""The models behind one call interface (realtime/calls.py): a batch gives what its items give one by
one, on the real models; the step model is stateless (a dialogue's state travels with each call);
the cluster's settings file; `serve --cluster ray`'s refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from emostream.realtime.calls import LocalCall, SpeakerItem, StepItem
from emostream.realtime.types import VideoFrame

DATA = Path(__file__).resolve().parent / "data"


def dialogue_clips() -> list[np.ndarray]:
    """The utterances of tests/data/dialogue.wav (speakers A, B, A, B, A, B), each (n,) float32."""
    import soundfile as sf

    audio, rate = sf.read(DATA / "dialogue.wav", dtype="float32")
    assert rate == 16000
    utterances = json.loads((DATA / "dialogue.json").read_text())["utterances"]
    return [audio[int(u["start_s"] * 16000):int(u["end_s"] * 16000)] for u in utterances]


def test_every_kind_the_default_config_uses_is_a_call(shared: Any) -> None:
    assert set(shared.calls) == {"asr", "turn", "speaker", "text", "face", "step"}
    assert shared.transcriber.call is shared.calls["asr"]
    assert shared.model.labels == tuple(shared.calls["step"].describe()["labels"])


def test_a_turn_batch_gives_each_item_its_own_verdict(shared: Any) -> None:
    clips = dialogue_clips()[:3]
    call = shared.calls["turn"]
    batched = call(clips)
    alone = [call([c])[0] for c in clips]
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    assert all(0.0 <= p <= 1.0 for p in batched)


def test_speaker_windows_of_several_dialogues_go_in_one_call(shared: Any) -> None:
    clips = dialogue_clips()
    window = int(1.6 * 16000)
    a = tuple(c[:window] for c in clips[:2])  # one dialogue's windows
    b = tuple(c[:window] for c in clips[2:5])  # another's
    call = shared.calls["speaker"]
    batched = call([SpeakerItem(windows=a), SpeakerItem(audio=clips[5]), SpeakerItem(windows=b)])
    assert batched[0].shape == (2, 256) and batched[2].shape == (3, 256)
    np.testing.assert_allclose(batched[0], call([SpeakerItem(windows=a)])[0], atol=1e-5)
    np.testing.assert_allclose(batched[2], call([SpeakerItem(windows=b)])[0], atol=1e-5)
    whole = call([SpeakerItem(audio=clips[5])])[0]
    np.testing.assert_allclose(batched[1].vector, whole.vector, atol=1e-6)
    # outcomes, not only shapes: a's first window (speaker A) is nearer b's A (clip 2) than b's B (clip 3)
    va, vb = batched[0], batched[2]
    assert float(va[0] @ vb[0]) > float(va[0] @ vb[1])


def test_a_text_batch_gives_each_item_its_own_features(shared: Any) -> None:
    texts = ["I can't believe you lied to me again.", "Oh wow, that's wonderful news!", "ok"]
    call = shared.calls["text"]
    batched = np.stack(call(texts))  # (3, D)
    alone = np.stack([call([t])[0] for t in texts])
    np.testing.assert_allclose(batched, alone, atol=2e-4)
    assert not np.allclose(batched[0], batched[1], atol=1e-2)
    assert all(call.model.encoder.batched)  # the live ONNX graphs take a batch in one run (not item by item)


def test_a_face_batch_runs_the_expert_once_on_every_face(shared: Any) -> None:
    frames = [VideoFrame(cv2.imread(str(p)), t_ns=i, index=i)
              for i, p in enumerate(sorted((DATA / "faces").glob("*.jpg")))]
    blank = VideoFrame(np.zeros((120, 160, 3), np.uint8), t_ns=9, index=9)
    analyzer = shared.calls["face"].model
    calls: list[int] = []
    predict = analyzer.expert.predict
    analyzer.expert.predict = lambda crops: calls.append(len(crops)) or predict(crops)
    try:
        batched = shared.calls["face"]([*frames, blank])
    finally:
        analyzer.expert.predict = predict
    assert calls == [sum(o.n_faces for o in batched)] and batched[-1].n_faces == 0
    for frame, obs in zip(frames, batched):
        alone = analyzer.analyze(frame)
        assert obs.boxes == alone.boxes and obs.n_faces >= 1
        np.testing.assert_allclose(obs.probs, alone.probs, atol=1e-5)
    labels = analyzer.labels
    happy = dict(zip(labels, batched[0].probs[0]))  # astronaut_collins_happy.jpg
    assert max(happy, key=happy.get) == "happy"


def test_the_step_is_stateless_two_dialogues_interleaved_match_each_alone(shared: Any) -> None:
    model = shared.model
    rng = np.random.default_rng(0)
    inputs = [rng.normal(size=model.text_dim).astype(np.float32) for _ in range(4)]

    def run(turns: list[int], state: dict[str, np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        out = []
        for i in turns:
            probs, state = model.step(step_feeds(model, inputs[i], i % 2), state)
            out.append(probs)
        return out, state

    alone_a, _ = run([0, 1], model.init_state())
    alone_b, _ = run([2, 3], model.init_state())
    sa, sb = model.init_state(), model.init_state()
    pa0, sa = run([0], sa)
    pb0, sb = run([2], sb)
    pa1, sa = run([1], sa)
    pb1, sb = run([3], sb)
    np.testing.assert_allclose(np.stack(pa0 + pa1), np.stack(alone_a), atol=1e-6)
    np.testing.assert_allclose(np.stack(pb0 + pb1), np.stack(alone_b), atol=1e-6)
    assert not np.allclose(alone_a[1], run([1], model.init_state())[0][0], atol=1e-4)  # the state mattered


def step_feeds(model: Any, text: np.ndarray, speaker: int) -> dict[str, np.ndarray]:
    from emostream.realtime.session import step_inputs
    from emostream.realtime.types import Features

    features = Features(utterance_id=0, text=text.reshape(-1), audio=np.zeros(model.audio_dim, np.float32),
                        visual=np.zeros((model.max_frames, model.visual_dim), np.float32),
                        visual_mask=np.zeros(model.max_frames, bool), present=(True, False, False), speaker=speaker)
    return step_inputs(features, speaker)


def test_a_call_that_loses_items_is_an_error() -> None:
    call = LocalCall("text", lambda items: list(items)[:-1], {})
    with pytest.raises(RuntimeError, match="2 results for 3 items"):
        call(["a", "b", "c"])
    assert call([]) == []


def test_the_step_item_carries_the_state_both_ways(shared: Any) -> None:
    model = shared.model
    state = model.init_state()
    feeds = step_feeds(model, np.ones(model.text_dim, np.float32), 0)
    result = shared.calls["step"]([StepItem(feeds, state)])[0]
    assert set(result.state) == set(state)
    assert any(not np.allclose(result.state[k], state[k]) for k in state)
    assert result.probs.shape == (len(model.labels),) and abs(float(result.probs.sum()) - 1.0) < 1e-4


# ------------------------------------------------------------------------------ cluster settings
def test_cluster_settings_file_over_the_defaults(tmp_path: Path) -> None:
    from emostream.realtime.cluster.config import ClusterConfig

    base = ClusterConfig()
    assert base.ingress.max_ongoing_requests() > base.ingress.sessions_per_replica
    assert all(m.max_ongoing_requests() >= m.max_batch_size for m in base.models.values())
    path = tmp_path / "cluster.yaml"
    path.write_text("ingress:\n  replicas: 2\n  sessions_per_replica: 3\nmodels:\n  asr: {max_batch_size: 4, "
                    "batch_wait_s: 0.05, max_replicas: 3}\ncall_timeout_s: 7\n")
    cfg = ClusterConfig.load(path)
    assert (cfg.ingress.replicas, cfg.ingress.sessions_per_replica) == (2, 3)
    assert (cfg.models["asr"].max_batch_size, cfg.models["asr"].batch_wait_s, cfg.models["asr"].max_replicas) == (4, 0.05, 3)
    assert cfg.models["text"] == base.models["text"] and cfg.call_timeout_s == 7.0


@pytest.mark.parametrize("text, message", [
    ("ingress: {replica: 2}\n", "unknown setting"),
    ("models: {whisper: {}}\n", "unknown model kind"),
    ("models: {asr: {min_replicas: 3, max_replicas: 2}}\n", "min_replicas"),
    ("ingress: {sessions_per_replica: 0}\n", "at least one"),
    ("call_timeout_s: 0\n", "call_timeout_s"),
])
def test_bad_cluster_settings_are_refused(tmp_path: Path, text: str, message: str) -> None:
    from emostream.realtime.cluster.config import ClusterConfig

    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        ClusterConfig.load(path)


# ------------------------------------------------------------------------------ the command
def test_cluster_serves_browser_capture_only(capsys: pytest.CaptureFixture[str]) -> None:
    from emostream.realtime.cli import serve_main

    assert serve_main(["--cluster", "ray", "--media", str(DATA / "dialogue.wav"), "--port", "0"]) == 2
    assert "browsers' own cameras" in capsys.readouterr().err
    assert serve_main(["--ray-address", "auto", "--port", "0"]) == 2
    assert "need --cluster ray" in capsys.readouterr().err


def test_cluster_without_the_extra_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from emostream.realtime import cli

    real = importlib.util.find_spec
    # a fake find_spec (this test's only fake): Ray is not installed
    monkeypatch.setattr(cli.importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "ray" else real(name, *a))
    assert cli.serve_main(["--cluster", "ray", "--port", "0"]) == 2
    assert "pip install 'emostream[cluster]'" in capsys.readouterr().err
