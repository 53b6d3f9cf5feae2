"""The pure-torch MTCNN face detector (weights from facenet-pytorch's data folder, code never imported)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from emostream.model.features import mtcnn
from emostream.model.features.weights import MissingWeightsError

ASTRONAUT_FACE = (182, 72, 96, 106)  # hand-labelled (x, y, w, h) in skimage.data.astronaut()


def _weights_or_skip():
    try:
        return mtcnn.weights_dir()
    except MissingWeightsError as err:
        pytest.skip(f"MTCNN weights not installed ({err})")


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """A fresh EMOSTREAM_CACHE for the ONNX exports (none go to the user's cache)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSTREAM_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def detector(onnx_cache) -> mtcnn.MTCNNDetector:
    """The default detector: ONNX Runtime, one thread."""
    _weights_or_skip()
    return mtcnn.MTCNNDetector()


@pytest.fixture(scope="module")
def torch_detector() -> mtcnn.MTCNNDetector:
    """The reference: the torch modules."""
    _weights_or_skip()
    return mtcnn.MTCNNDetector(backend="torch")


def _bgr(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim == 2:
        rgb = np.stack([rgb] * 3, axis=-1)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _iou(a, b) -> float:
    iw = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def test_finds_the_astronaut_with_landmarks(detector, one_torch_thread) -> None:
    from skimage import data

    from emostream.model.features.visual import FaceDetector

    img = _bgr(data.astronaut())
    faces = detector.detect_with_landmarks(img)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    assert _iou(face.box, ASTRONAUT_FACE) > 0.5
    haar = FaceDetector()(img)
    assert haar is not None and _iou(face.box, haar) > 0.5
    assert detector(img) == face.box and detector.detect_all(img) == [face.box]

    pts = face.landmarks
    assert pts.shape == (5, 2) and pts.dtype == np.float32
    x, y, w, h = face.box
    assert np.all((pts[:, 0] > x) & (pts[:, 0] < x + w) & (pts[:, 1] > y) & (pts[:, 1] < y + h))
    left_eye, right_eye, nose, mouth_l, mouth_r = pts
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_l[0] < mouth_r[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])
    assert "facenet_pytorch" not in sys.modules  # only its weight files were read


def test_boxes_are_in_original_pixels(detector, one_torch_thread) -> None:
    from skimage import data

    img = _bgr(data.astronaut())
    big = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)  # 1024x1024 -> detected on a 640 px copy
    box = detector(big)
    assert box is not None
    assert _iou(box, tuple(2 * v for v in ASTRONAUT_FACE)) > 0.5


def test_two_faces_side_by_side(detector, one_torch_thread) -> None:
    from skimage import data

    img = _bgr(data.astronaut())
    pair = np.ascontiguousarray(np.hstack([img, img[:, ::-1]]))
    boxes = sorted(detector.detect_all(pair))
    assert len(boxes) == 2
    assert _iou(boxes[0], ASTRONAUT_FACE) > 0.5
    x, y, w, h = ASTRONAUT_FACE
    assert _iou(boxes[1], (1024 - x - w, y, w, h)) > 0.5


def test_nothing_on_faceless_images(detector, one_torch_thread) -> None:
    from skimage import data

    for img in (data.coffee(), data.chelsea()):  # a coffee cup; a cat
        assert detector.detect_all(_bgr(img)) == []
    assert detector(np.zeros((480, 640, 3), np.uint8)) is None
    assert detector(np.full((480, 640, 3), 200, np.uint8)) is None
    assert detector(np.zeros((8, 8, 3), np.uint8)) is None  # smaller than one P-Net window


def test_rejects_non_bgr(detector, torch_detector) -> None:
    from emostream.model.features.spec import FeatureError

    for det in (detector, torch_detector):
        with pytest.raises(FeatureError):
            det.detect_all(np.zeros((10, 10), np.uint8))


def test_default_backend_is_onnxruntime_with_one_thread(detector, onnx_cache) -> None:
    assert detector.backend == "onnxruntime" and detector.threads == 1
    folder = onnx_cache / "mtcnn" / mtcnn.weights_hash(detector.weights)
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["onet.onnx", "pnet.onnx", "rnet.onnx"]  # and no temp files left
    for session in detector._sessions.values():
        opts = session.get_session_options()
        assert (opts.intra_op_num_threads, opts.inter_op_num_threads) == (1, 1)
        assert session.get_providers() == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="backend"):
        mtcnn.MTCNNDetector(backend="tensorrt")
    with pytest.raises(ValueError, match="threads"):
        mtcnn.MTCNNDetector(threads=0)


def _raw(det: mtcnn.MTCNNDetector, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        boxes, points = det._detect(mtcnn._normalise(np.ascontiguousarray(bgr[:, :, ::-1])))
    return boxes.numpy(), points.numpy()


def test_onnxruntime_matches_torch(detector, torch_detector, one_torch_thread) -> None:
    from skimage import data

    img = _bgr(data.astronaut())
    pair = np.ascontiguousarray(np.hstack([img, img[:, ::-1]]))
    for image, n in ((img, 1), (pair, 2)):
        ort_faces = detector.detect_with_landmarks(image)
        ref_faces = torch_detector.detect_with_landmarks(image)
        assert len(ort_faces) == len(ref_faces) == n
        for a, b in zip(ort_faces, ref_faces):
            assert np.abs(np.subtract(a.box, b.box)).max() <= 1
            assert abs(a.score - b.score) <= 1e-4
            assert np.abs(a.landmarks - b.landmarks).max() <= 1.0
        (ob, op), (tb, tp) = _raw(detector, image), _raw(torch_detector, image)  # before rounding
        assert ob.shape == tb.shape and np.abs(ob[:, :4] - tb[:, :4]).max() <= 1.0
        assert np.abs(ob[:, 4] - tb[:, 4]).max() <= 1e-4 and np.abs(op - tp).max() <= 1.0

    # the nets themselves, on odd sizes and batches (P-Net: dynamic H, W and batch)
    rng = np.random.default_rng(0)
    for name, shape in (("pnet", (2, 37, 61, 3)), ("pnet", (1, 12, 12, 3)), ("rnet", (5, 24, 24, 3)),
                        ("onet", (3, 48, 48, 3)), ("onet", (1, 48, 48, 3))):  # fmt: skip
        batch = rng.uniform(-1, 1, shape).astype(np.float32)
        with torch.inference_mode():
            ours, ref = detector._run(name, batch), torch_detector._run(name, batch)
        assert len(ours) == len(ref)
        for a, b in zip(ours, ref):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4), name


def test_damaged_onnx_cache_is_exported_again(monkeypatch, tmp_path, caplog) -> None:
    _weights_or_skip()
    monkeypatch.setenv("EMOSTREAM_CACHE", str(tmp_path))
    first = mtcnn.MTCNNDetector(threads=2)
    assert first._sessions["pnet"].get_session_options().intra_op_num_threads == 2
    folder = mtcnn.onnx_dir(first.weights)
    assert folder.parent == tmp_path / "mtcnn"
    rnet = folder / "rnet.onnx"
    good = rnet.read_bytes()
    rnet.write_bytes(b"not an onnx file")
    with caplog.at_level("WARNING", logger=mtcnn.__name__):
        again = mtcnn.MTCNNDetector()
    assert "exporting it again" in caplog.text
    assert rnet.stat().st_size == len(good)
    assert sorted(p.name for p in folder.iterdir()) == ["onet.onnx", "pnet.onnx", "rnet.onnx"]
    from skimage import data

    assert again(_bgr(data.astronaut())) is not None


def test_missing_weights_say_how_to_install(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(mtcnn, "WEIGHTS_PACKAGE", "facenet_pytorch_not_installed_here")
    with pytest.raises(MissingWeightsError, match=r"pip install --no-deps facenet-pytorch"):
        mtcnn.MTCNNDetector()
    with pytest.raises(FileNotFoundError, match="not installed"):
        mtcnn.weights_dir()
    (tmp_path / "pnet.pt").write_bytes(b"")
    with pytest.raises(MissingWeightsError, match=r"rnet\.pt, onet\.pt missing"):
        mtcnn.MTCNNDetector(tmp_path)


def test_nms(monkeypatch) -> None:
    boxes = torch.tensor(
        [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 5, 5]], dtype=torch.float32
    )
    scores = torch.tensor([0.9, 0.95, 0.5, 0.8])
    assert mtcnn.nms(boxes, scores, 0.5).tolist() == [1, 3, 2]  # box 0 overlaps box 1 by IoU 0.68
    assert mtcnn.nms(boxes, scores, 0.5, method="min").tolist() == [1, 2]  # box 3 lies inside box 1
    assert mtcnn.nms(boxes[:0], scores[:0], 0.5).numel() == 0

    g = torch.Generator().manual_seed(0)
    xy, wh = torch.rand(500, 2, generator=g) * 300, torch.rand(500, 2, generator=g) * 60 + 5
    many, s = torch.cat([xy, xy + wh], dim=1), torch.rand(500, generator=g)
    by_matrix = [mtcnn.nms(many, s, 0.5, m) for m in ("union", "min")]
    monkeypatch.setattr(mtcnn, "_NMS_MATRIX_MAX", 10)  # the box-by-box path gives the same
    for m, expected in zip(("union", "min"), by_matrix):
        assert torch.equal(mtcnn.nms(many, s, 0.5, m), expected)
