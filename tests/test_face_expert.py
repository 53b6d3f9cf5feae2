"""The facial-expression expert (fer's FER2013 mini-Xception): Keras parity, real photos, spec, errors."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from emostream.model.config import MELD_LABELS
from emostream.model.features.face_expert import (
    EMBED_DIM,
    EXPERT_LABELS,
    EXPERT_TO_MELD,
    FaceExpertWeightsError,
    FaceExpressionExpert,
    MiniXception,
    crop_face_grey,
    keras_same_pad,
    load_mini_xception,
    preprocess_face,
    scale_crops,
)
from emostream.model.features.fer_convert import keras_mapping
from emostream.model.features.spec import (
    FeatureError,
    FeatureSpec,
    FeatureSpecMismatch,
    ModalitySpec,
    check_compatible,
    face_expert_spec,
    visual_spec,
)
from emostream.model.features.visual import FaceDetector, VisualFeaturizer
from emostream.model.features.weights import MissingWeightsError, resolve

DATA = Path(__file__).resolve().parent / "data"
REFERENCE = json.loads((DATA / "face_expert_reference.json").read_text())
TOL = 1e-4


def _ref_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs = []
    for c in REFERENCE["cases"]:
        if "crop_u8_b64" in c:
            xs.append(
                scale_crops(np.frombuffer(base64.b64decode(c["crop_u8_b64"]), np.uint8).reshape(64, 64))
            )
        else:
            xs.append(np.frombuffer(base64.b64decode(c["input_f32_b64"]), np.float32).reshape(64, 64))
    probs = np.array([c["probs"] for c in REFERENCE["cases"]], np.float32)
    emb = np.array([c["embedding"] for c in REFERENCE["cases"]], np.float32)
    return np.stack(xs), probs, emb  # (N, 64, 64), (N, 7), (N, 128)


def _read_bgr(rel: str) -> np.ndarray:
    import cv2

    img = cv2.imread(str(DATA / rel))
    assert img is not None, rel
    return img


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emostream-cache")


@pytest.fixture(scope="module")
def ort_expert(cache: Path) -> FaceExpressionExpert:
    mp = pytest.MonkeyPatch()
    mp.setenv("EMOSTREAM_CACHE", str(cache))
    try:
        return FaceExpressionExpert()
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def torch_expert() -> FaceExpressionExpert:
    return FaceExpressionExpert(backend="torch")


def test_reference_file_is_the_bundled_source() -> None:
    sidecar = json.loads(resolve("fer-mini-xception").with_suffix(".json").read_text())
    assert REFERENCE["model"]["sha256"] == sidecar["source"]["sha256"]
    assert tuple(REFERENCE["labels"]) == EXPERT_LABELS
    assert sidecar["license"].startswith("MIT") and sidecar["params"] == 58423
    assert (resolve("fer-mini-xception").parent / "LICENSE-fer.txt").is_file()


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_matches_keras_reference(backend: str, torch_expert, ort_expert) -> None:
    expert = torch_expert if backend == "torch" else ort_expert
    x, probs, emb = _ref_inputs()
    p, e = expert.run(x)
    assert p.shape == (len(x), 7) and e.shape == (len(x), EMBED_DIM)
    np.testing.assert_allclose(p, probs, atol=TOL, rtol=0)
    np.testing.assert_allclose(e, emb, atol=TOL, rtol=0)
    np.testing.assert_allclose(expert.predict(x[:1]), probs[:1], atol=TOL, rtol=0)  # batch of one
    np.testing.assert_allclose(expert.embed(x[0]), emb[:1], atol=TOL, rtol=0)  # a single (64, 64) crop


def test_onnx_export_is_cached_by_weights_sha(cache: Path, ort_expert, monkeypatch) -> None:
    path = ort_expert.onnx_path
    assert path.parent == cache / "face_expert" and ort_expert.sha256[:16] in path.name
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    mtime = path.stat().st_mtime_ns
    monkeypatch.setenv("EMOSTREAM_CACHE", str(cache))
    again = FaceExpressionExpert()
    assert again.onnx_path == path and path.stat().st_mtime_ns == mtime  # reused, not re-exported


def test_reference_crops_are_our_preprocessing() -> None:
    for c in REFERENCE["cases"]:
        if "photo" not in c:
            continue
        img = _read_bgr(c["photo"])
        stored = np.frombuffer(base64.b64decode(c["crop_u8_b64"]), np.uint8).reshape(64, 64)
        assert np.array_equal(crop_face_grey(img, tuple(c["box"])), stored), c["name"]
        assert FaceDetector()(img) == tuple(c["box"])  # the same Haar face as the script found


@pytest.mark.parametrize(
    ("photo", "label"),
    [
        ("faces/astronaut_collins_happy.jpg", "happy"),  # broad smile
        ("faces/grace_hopper_neutral.jpg", "neutral"),  # closed mouth, composed
    ],
)
def test_expression_on_real_photographs(photo: str, label: str, ort_expert) -> None:
    img = _read_bgr(photo)
    box = FaceDetector()(img)
    assert box is not None
    probs = ort_expert.predict(preprocess_face(img, box)[None])[0]
    assert EXPERT_LABELS[int(probs.argmax())] == label
    assert probs.max() > 0.9
    if label != "happy":
        assert probs[EXPERT_LABELS.index("happy")] < 0.1  # a composed face is not read as a smile
    assert ort_expert.top_labels(preprocess_face(img, box), meld=True) == [EXPERT_TO_MELD[label]]


def test_label_mapping_covers_meld() -> None:
    assert set(EXPERT_TO_MELD) == set(EXPERT_LABELS)
    assert sorted(EXPERT_TO_MELD.values()) == sorted(MELD_LABELS)


def test_spec_round_trip(torch_expert) -> None:
    spec = torch_expert.spec
    assert spec == face_expert_spec() and spec.dim == EMBED_DIM == torch_expert.dim
    assert spec.name == "face-expert-embedding" and spec.weights_id == "fer-mini-xception"
    pre = spec.preprocessing_dict
    assert pre["crop_size"] == 64 and pre["color"] == "grey" and pre["detector"].startswith("haarcascade")
    assert ModalitySpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    fs = FeatureSpec(visual=spec)
    assert FeatureSpec.from_json(fs.to_json()) == fs
    check_compatible(fs, FeatureSpec(visual=face_expert_spec()), ["visual"])
    with pytest.raises(FeatureSpecMismatch, match="face-expert-embedding"):
        check_compatible(fs, FeatureSpec(visual=visual_spec()), ["visual"])
    with pytest.raises(FeatureSpecMismatch, match="margin"):
        check_compatible(
            fs, FeatureSpec(visual=FaceExpressionExpert(backend="torch", margin=0.3).spec), ["visual"]
        )


def test_corrupt_or_missing_weights(tmp_path: Path) -> None:
    src = resolve("fer-mini-xception")
    bad = tmp_path / "fer.safetensors"
    shutil.copyfile(src, bad)
    shutil.copyfile(src.with_suffix(".json"), bad.with_suffix(".json"))
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(FaceExpertWeightsError, match="corrupt: sha256"):
        load_mini_xception(bad)

    bad.with_suffix(".json").unlink()  # no sidecar: the file itself must still parse
    bad.write_bytes(src.read_bytes()[:1000])
    with pytest.raises(FaceExpertWeightsError, match="cannot read"):
        FaceExpressionExpert(bad, backend="torch")

    with pytest.raises(MissingWeightsError, match="not found"):
        FaceExpressionExpert(tmp_path / "absent.safetensors")


def test_preprocessing_errors(torch_expert) -> None:
    img = _read_bgr("faces/astronaut_collins_happy.jpg")
    with pytest.raises(FeatureError, match="BGR uint8"):
        preprocess_face(img[:, :, 0], (10, 10, 50, 50))  # grey, not BGR
    with pytest.raises(FeatureError, match="BGR uint8"):
        preprocess_face(img.astype(np.float32), (10, 10, 50, 50))
    with pytest.raises(FeatureError, match="no area"):
        preprocess_face(img, (10, 10, 0, 50))
    with pytest.raises(FeatureError, match="outside"):
        preprocess_face(img, (5000, 10, 50, 50))
    assert FaceDetector()(np.full((240, 320, 3), 127, np.uint8)) is None  # face-less frame: no box
    with pytest.raises(FeatureError, match=r"\(B, 64, 64\)"):
        torch_expert.predict(np.zeros((2, 48, 48), np.float32))
    with pytest.raises(FeatureError, match="uint8"):
        torch_expert.predict(np.zeros((1, 64, 64), np.uint8))
    assert torch_expert.predict(np.zeros((0, 64, 64), np.float32)).shape == (0, 7)
    x = preprocess_face(img, (40, 40, 100, 100))
    assert x.shape == (64, 64) and x.dtype == np.float32 and -1 <= x.min() and x.max() <= 1


def test_keras_same_padding_and_converter_mapping() -> None:
    assert keras_same_pad(60, 3, 2) == (0, 1) and keras_same_pad(15, 3, 2) == (1, 1)
    assert keras_same_pad(8, 3, 2) == (0, 1) and keras_same_pad(15, 1, 2) == (0, 0)
    keys = {k for k in MiniXception().state_dict() if not k.endswith("num_batches_tracked")}
    mapped = [k for k, _, _ in keras_mapping()]
    assert len(mapped) == len(set(mapped)) and set(mapped) == keys


def test_visual_featurizer_with_the_expert_backbone(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("EMOSTREAM_CACHE", str(cache))
    feats = VisualFeaturizer("fer-mini-xception", max_frames=3)
    assert feats.spec == face_expert_spec() and feats.dim == EMBED_DIM
    img = _read_bgr("faces/astronaut_collins_happy.jpg")
    blank = np.zeros_like(img)
    out, mask = feats([img, blank, img])
    assert out.shape == (3, EMBED_DIM) and mask.tolist() == [True, False, True]
    expert = FaceExpressionExpert(backend="torch")
    want = expert.embed(preprocess_face(img, FaceDetector()(img)))[0]
    np.testing.assert_allclose(out[0], want, atol=TOL, rtol=0)
    assert not out[1].any()
