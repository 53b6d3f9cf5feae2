"""JSON sidecars of exported models (ONNX files and TensorRT engines), and the session check.

Every exported file `X` (e.g. `step.onnx`, `step.engine`) has `X.json` beside it (`step.onnx.json`)
holding its kind, tensor names/shapes/dtypes, labels, feature spec, trained modalities, the source
checkpoint's SHA-256 and the opset. A runtime refuses an engine whose sidecar does not match the
features and labels it is about to feed (`check_sidecar`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

logger = logging.getLogger(__name__)

FORMAT = "emostream-export"
FORMAT_VERSION = 1
Kind = Literal["step", "text_encoder", "frame_backbone"]
KINDS: tuple[str, ...] = ("step", "text_encoder", "frame_backbone")
FILE_STEMS: dict[str, str] = {"step": "step", "text_encoder": "text_encoder", "frame_backbone": "frame_backbone"}


class SidecarError(ValueError):
    """A sidecar that is missing, malformed, or does not match what the session needs."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: "float32", "int64", ...

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(name=str(d["name"]), shape=tuple(int(x) for x in d["shape"]), dtype=str(d["dtype"]))


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """`dir/step.onnx` -> `dir/step.onnx.json`."""
    p = Path(path)
    return p.with_name(p.name + ".json")


def write_sidecar(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    side = sidecar_path(path)
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **data}
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    os.replace(tmp, side)
    return side


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the sidecar of an exported file (pass the file or the sidecar itself)."""
    p = Path(path)
    side = p if p.name.endswith(".json") else sidecar_path(p)
    if not side.is_file():
        raise SidecarError(f"{side} is missing: every exported model needs its JSON sidecar (re-run the export)")
    try:
        data = json.loads(side.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SidecarError(f"{side} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SidecarError(f"{side} is not an emostream export sidecar (format != {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise SidecarError(
            f"{side} has format version {data.get('format_version')!r}; this emostream reads {FORMAT_VERSION}"
        )
    for key in ("kind", "inputs", "outputs", "labels", "modalities", "feature_spec", "checkpoint_sha256"):
        if key not in data:
            raise SidecarError(f"{side} lacks the key {key!r}")
    if data["kind"] not in KINDS:
        raise SidecarError(f"{side}: unknown kind {data['kind']!r} (expected one of {KINDS})")
    return data


def tensor_specs(data: Mapping[str, Any], key: str) -> list[TensorSpec]:
    """The `inputs` or `outputs` of a sidecar as TensorSpecs, in order."""
    return [TensorSpec.from_dict(d) for d in data[key]]


def check_sidecar(
    sidecar: Mapping[str, Any] | str | os.PathLike[str],
    labels: Sequence[str] | None = None,
    feature_spec: Any = None,
    modalities: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Refuse an engine that does not fit the session: raise `SidecarError` saying what differs.

    labels: must equal the engine's labels, in order (the probabilities are indexed by them).
    feature_spec: the session's extractors (a `FeatureSpec` or its dict); for every modality the
      session feeds that the engine was trained on, it must equal the engine's spec (extractor,
      dim, version, weights, preprocessing; frame policy for visual).
    modalities: the modalities the session will feed; each must be one the engine was trained on.
      Trained modalities the session does not feed are allowed (they arrive as missing) but logged.
    None skips a check. Returns the sidecar as a dict.
    """
    data = dict(sidecar) if isinstance(sidecar, Mapping) else read_sidecar(sidecar)
    name = data.get("file", "engine")
    trained = list(data["modalities"])
    session = list(modalities) if modalities is not None else trained
    problems: list[str] = []
    if labels is not None and list(labels) != list(data["labels"]):
        problems.append(f"labels differ: engine {list(data['labels'])} vs session {list(labels)}")
    extra = [m for m in session if m not in trained]
    if extra:
        problems.append(f"the session feeds {extra}, which the engine was not trained on (trained: {trained})")
    elif modalities is not None and len(session) < len(trained):
        absent = [m for m in trained if m not in session]
        logger.warning("%s was trained on %s; the session feeds no %s (treated as missing)", name, trained, absent)
    if feature_spec is not None:
        problems += _feature_spec_problems(data, feature_spec, [m for m in session if m in trained])
    if problems:
        raise SidecarError(f"{name} does not match this session: " + " | ".join(problems))
    return data


def _feature_spec_problems(data: Mapping[str, Any], feature_spec: Any, modalities: list[str]) -> list[str]:
    from emostream.model.features.spec import FeatureSpec, FeatureSpecMismatch, check_compatible

    if not data.get("feature_spec"):
        logger.warning("%s records no feature spec: the session's features cannot be checked", data.get("file"))
        return []
    try:
        expected = FeatureSpec.from_dict(data["feature_spec"])
        actual = feature_spec if isinstance(feature_spec, FeatureSpec) else FeatureSpec.from_dict(feature_spec)
        check_compatible(expected, actual, modalities)
    except FeatureSpecMismatch as e:
        return [str(e)]
    except (TypeError, ValueError, KeyError) as e:
        return [f"feature spec unreadable: {e}"]
    return []
