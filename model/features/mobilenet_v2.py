"""MobileNetV2 in pure torch, with torchvision's exact module layout (no torchvision needed).

The state_dict keys match torchvision's `mobilenet_v2-b0353104.pth` (ImageNet-1k, top-1 71.9%),
so the bundled weights load with `strict=True`. `MobileNetV2Backbone` returns the 1280-d global
average pooled features (the frame embedding); `MobileNetV2` returns the 1000 ImageNet logits.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch import nn

from emostream.model.features.spec import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

FEATURE_DIM = 1280
INPUT_SIZE = 224

# (expand ratio t, output channels c, repeats n, first stride s), as in the paper and torchvision
_INVERTED_RESIDUAL_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class ConvBNReLU6(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d -> ReLU6; keys `.0`, `.1` like torchvision's Conv2dNormActivation."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand_ratio))
        self.use_res_connect = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU6(cin, hidden, kernel=1))  # pointwise expansion
        layers += [
            ConvBNReLU6(hidden, hidden, stride=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),  # linear bottleneck
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:  # static (built at init), not data-dependent
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    """The full ImageNet classifier: (B, 3, 224, 224) normalised RGB -> (B, 1000) logits."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        cin = 32
        layers: list[nn.Module] = [ConvBNReLU6(3, cin, stride=2)]
        for t, c, n, s in _INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU6(cin, FEATURE_DIM, kernel=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_DIM, num_classes))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1280): features + global average pool."""
        return self.features(x).mean(dim=(2, 3))  # (B, 1280, h, w) -> (B, 1280)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))  # (B, 1000)


class MobileNetV2Backbone(MobileNetV2):
    """The frame backbone: (B, 3, 224, 224) ImageNet-normalised RGB -> (B, 1280).

    Same parameters as `MobileNetV2` (the classifier is kept so the checkpoint loads strictly,
    and `logits()` can sanity-check the weights); `forward` stops at the pooled features.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)  # (B, 1280)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))  # (B, 1000)


def load_backbone(
    ref: str | os.PathLike[str] = "mobilenet_v2-imagenet", device: str | torch.device = "cpu"
) -> MobileNetV2Backbone:
    """The ImageNet MobileNetV2 backbone in eval mode, weights resolved by `weights.resolve`."""
    from emostream.model.features.weights import resolve

    path = resolve(ref)
    if path.is_dir():
        raise FileNotFoundError(f"{ref!r} resolved to a folder ({path}); expected a .pth state_dict file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = MobileNetV2Backbone()
    model.load_state_dict(state, strict=True)
    logger.debug("loaded MobileNetV2 weights from %s", path)
    return model.eval().to(device)


def normalize_images(images_rgb: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32, ImageNet mean/std normalised."""
    if images_rgb.ndim != 4 or images_rgb.shape[-1] != 3:
        raise ValueError(f"expected (B, H, W, 3) RGB images, got shape {images_rgb.shape}")
    x = images_rgb.astype(np.float32) / 255.0  # (B, H, W, 3)
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (B, 3, H, W)


def center_crop_resize(image_rgb: np.ndarray, resize: int = 256, crop: int = INPUT_SIZE) -> np.ndarray:
    """ImageNet evaluation transform for a whole picture: shorter side -> `resize`, centre crop."""
    import cv2

    h, w = image_rgb.shape[:2]
    scale = resize / min(h, w)
    nh, nw = max(crop, round(h * scale)), max(crop, round(w * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image_rgb, (nw, nh), interpolation=interp)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return resized[top : top + crop, left : left + crop]
