"""Visual features: per frame, the largest face (OpenCV Haar cascade) -> 224x224 crop -> MobileNetV2.

With `ref="fer-mini-xception"` the backbone is instead the FER2013 facial-expression expert
(`face_expert.FaceExpressionExpert`, ONNX Runtime): 64x64 grey crops -> 128-d embeddings, with
`spec.face_expert_spec`.

An utterance gives a fixed (max_frames, 1280) matrix and a (max_frames,) mask: frames are
sampled at a bounded rate and number (`sample_frames`), a frame with no face is masked out
(False, zeros) rather than an error, and no frames at all gives an all-False mask. The face
crops of one utterance go through the backbone as one batch.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from emostream.model.features.spec import (
    CROP_SIZE,
    DETECT_WIDTH,
    FACE_CASCADE,
    FACE_EXPERT_MARGIN,
    FACE_MARGIN,
    MIN_FACE_FRAC,
    MIN_NEIGHBORS,
    SCALE_FACTOR,
    FeatureError,
    SpecCarrier,
    visual_spec,
)

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (x, y, w, h) in pixels of the original image
FACE_EXPERT_REF = "fer-mini-xception"


def _check_bgr(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise FeatureError(f"expected a BGR uint8 image of shape (H, W, 3), got {img.dtype} {img.shape}")
    return img


class FaceDetector:
    """The largest frontal face of a BGR image, by an OpenCV Haar cascade, or None.

    Detection runs on a grey copy downscaled to `detect_width` pixels wide (speed); boxes are
    returned in the original image's pixels. Faces narrower than `min_face_frac` of the image
    width are ignored.
    """

    def __init__(
        self,
        cascade: str = FACE_CASCADE,
        *,
        detect_width: int = DETECT_WIDTH,
        scale_factor: float = SCALE_FACTOR,
        min_neighbors: int = MIN_NEIGHBORS,
        min_face_frac: float = MIN_FACE_FRAC,
    ) -> None:
        import cv2

        path = cascade if os.path.isfile(cascade) else os.path.join(cv2.data.haarcascades, cascade)
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise FileNotFoundError(
                f"cannot load the Haar cascade {path!r}; it ships with opencv-python-headless<5 "
                "(`pip install 'opencv-python-headless<5'`; OpenCV 5 dropped cv2.data.haarcascades)"
            )
        self.cascade = os.path.basename(path)
        self.detect_width = detect_width
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_face_frac = min_face_frac

    def detect_all(self, image_bgr: np.ndarray) -> list[Box]:
        import cv2

        img = _check_bgr(image_bgr)
        h, w = img.shape[:2]
        scale = min(1.0, self.detect_width / w)
        grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        grey = cv2.equalizeHist(grey)
        min_side = max(20, int(self.min_face_frac * grey.shape[1]))
        found = self._cascade.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_side, min_side)
        )
        return [tuple(int(round(v / scale)) for v in box) for box in np.asarray(found).reshape(-1, 4)]

    def __call__(self, image_bgr: np.ndarray) -> Box | None:
        boxes = self.detect_all(image_bgr)
        if not boxes:
            return None
        return max(boxes, key=lambda b: b[2] * b[3])  # the largest face


def crop_face(
    image_bgr: np.ndarray, box: Box, margin: float = FACE_MARGIN, size: int = CROP_SIZE
) -> np.ndarray:
    """A square crop around `box`, grown by `margin` of its side on each side -> (size, size, 3) RGB.

    Parts of the square outside the image are black (the face is not stretched or shifted).
    """
    import cv2

    img = _check_bgr(image_bgr)
    h, w = img.shape[:2]
    x, y, bw, bh = box
    side = max(1, round(max(bw, bh) * (1 + 2 * margin)))
    cx, cy = x + bw / 2, y + bh / 2
    x0, y0 = round(cx - side / 2), round(cy - side / 2)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x0 + side), min(h, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        canvas[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = img[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    crop = cv2.resize(canvas, (size, size), interpolation=interp)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)  # (size, size, 3) RGB


def sample_frames(timestamps_ns: Sequence[int], max_frames: int, max_fps: float) -> list[int]:
    """Indices of at most `max_frames` frames, at most `max_fps` per second, evenly spread in time.

    The span [first, last timestamp] is cut into k equal bins, k = min(n, max_frames,
    floor(span_s * max_fps)) (at least 1), and the frame nearest each bin's centre is taken, so
    the targets are span/k >= 1/max_fps apart. Returns sorted, distinct indices (fewer than k
    when frames are irregular). Timestamps must be non-decreasing.
    """
    n = len(timestamps_ns)
    if max_frames < 1 or not max_fps > 0:
        raise ValueError(f"max_frames must be >= 1 and max_fps > 0, got {max_frames}, {max_fps}")
    if n == 0:
        return []
    ts = [int(t) for t in timestamps_ns]
    if any(b < a for a, b in zip(ts, ts[1:])):
        raise ValueError("timestamps_ns must be non-decreasing")
    span = ts[-1] - ts[0]
    k = max(1, min(n, max_frames, math.floor(span / 1e9 * max_fps + 1e-9)))
    picked: list[int] = []
    for i in range(k):
        target = ts[0] + (i + 0.5) * span / k
        j = bisect.bisect_left(ts, target)
        if j == n or (j > 0 and target - ts[j - 1] <= ts[j] - target):
            j -= 1  # the earlier neighbour is nearer (or equally near)
        if not picked or j > picked[-1]:
            picked.append(j)
    return picked


class VisualFeaturizer(SpecCarrier):
    """frames (BGR uint8 HxWx3) -> (feats (max_frames, D) float32, mask (max_frames,) bool)."""

    def __init__(
        self,
        ref: str | os.PathLike[str] = "mobilenet_v2-imagenet",
        *,
        max_frames: int = 8,
        max_fps: float = 4.0,
        margin: float | None = None,  # None: FACE_MARGIN (FACE_EXPERT_MARGIN for the expert)
        crop_size: int = CROP_SIZE,  # ignored by the expert (always 64)
        detector: FaceDetector | None = None,
        device: str = "cpu",
        weights_id: str | None = None,
    ) -> None:
        from emostream.model.features.mobilenet_v2 import FEATURE_DIM, load_backbone
        from emostream.model.features.weights import weights_id as default_weights_id

        if max_frames < 1 or not max_fps > 0:
            raise ValueError(f"max_frames must be >= 1 and max_fps > 0, got {max_frames}, {max_fps}")
        self.device = device
        self.detector = detector or FaceDetector()
        self.max_frames = max_frames
        self.max_fps = float(max_fps)
        self.expert = None
        if os.fspath(ref) == FACE_EXPERT_REF:
            from emostream.model.features.face_expert import INPUT_SIZE, FaceExpressionExpert

            self.margin = FACE_EXPERT_MARGIN if margin is None else margin
            self.crop_size = INPUT_SIZE
            self.expert = FaceExpressionExpert(
                ref, margin=self.margin, detector=self.detector, weights_id=weights_id
            )
            self.backbone = None
            self._spec = self.expert.spec
            return
        self.backbone = load_backbone(ref, device=device)
        self.margin = FACE_MARGIN if margin is None else margin
        self.crop_size = crop_size
        d = self.detector
        self._spec = visual_spec(
            weights_id=weights_id or default_weights_id(ref),
            dim=FEATURE_DIM,
            cascade=d.cascade,
            detect_width=d.detect_width,
            scale_factor=d.scale_factor,
            min_neighbors=d.min_neighbors,
            min_face_frac=d.min_face_frac,
            margin=self.margin,
            crop_size=crop_size,
        )

    def select(self, n_frames: int, timestamps_ns: Sequence[int] | None = None) -> list[int]:
        """Which of n frames to use: by time (`sample_frames`) when timestamps are given, else evenly."""
        if timestamps_ns is not None:
            if len(timestamps_ns) != n_frames:
                raise ValueError(f"{len(timestamps_ns)} timestamps for {n_frames} frames")
            return sample_frames(timestamps_ns, self.max_frames, self.max_fps)
        if n_frames <= self.max_frames:
            return list(range(n_frames))
        return sorted({int(i) for i in np.linspace(0, n_frames - 1, self.max_frames).round()})

    def embed_crops(self, crops_rgb: np.ndarray) -> np.ndarray:
        """(B, S, S, 3) uint8 RGB face crops -> (B, D) float32, one backbone batch.

        For the expert: (B, 64, 64) float32 grey crops (`face_expert.preprocess_face`).
        """
        if self.expert is not None:
            return self.expert.embed(crops_rgb)  # (B, 128)
        import torch

        from emostream.model.features.mobilenet_v2 import normalize_images

        x = torch.from_numpy(normalize_images(crops_rgb)).to(self.device)  # (B, 3, S, S)
        with torch.inference_mode():
            return self.backbone(x).float().cpu().numpy()  # (B, D)

    def __call__(
        self, frames: Sequence[np.ndarray], timestamps_ns: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        feats = np.zeros((self.max_frames, self.dim), dtype=np.float32)  # (F, D)
        mask = np.zeros((self.max_frames,), dtype=bool)  # (F,)
        chosen = self.select(len(frames), timestamps_ns)
        slots: list[int] = []
        crops: list[np.ndarray] = []
        for slot, idx in enumerate(chosen):
            frame = _check_bgr(frames[idx])
            box = self.detector(frame)
            if box is None:
                continue  # no face: masked, zeros
            slots.append(slot)
            if self.expert is not None:
                crops.append(self.expert.preprocess(frame, box))  # (64, 64) float32
            else:
                crops.append(crop_face(frame, box, self.margin, self.crop_size))
        if crops:
            feats[slots] = self.embed_crops(np.stack(crops))  # (n_faces, D)
            mask[slots] = True
        logger.debug("visual: %d frames, %d sampled, %d with a face", len(frames), len(chosen), len(crops))
        return feats, mask
