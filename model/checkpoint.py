"""Checkpoints: weights in safetensors + a JSON sidecar. Nothing is ever unpickled.

`X.safetensors` holds the tensors; `X.json` beside it holds the format version, the model config
(labels and trained modalities included), the feature normalisation statistics, the feature spec,
free-form metadata and the SHA-256 of the safetensors file. Loading checks all of it and refuses
anything that does not fit with a `CheckpointError` that says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emostream.model.config import ModelConfig
from emostream.model.mcncl import MCNCL

logger = logging.getLogger(__name__)

FORMAT = "emostream-mcncl"
FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_CHECKPOINT = BUNDLED_DIR / "meld-text.safetensors"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, of another version or shape."""


@dataclass
class LoadedCheckpoint:
    model: MCNCL
    config: ModelConfig
    feature_spec: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: Path | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.config.labels

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.config.modalities


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    return Path(path).with_suffix(".json")


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_checkpoint_path() -> Path:
    """The checkpoint shipped inside the package (trained on MELD, text only)."""
    return DEFAULT_CHECKPOINT


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MCNCL,
    feature_spec: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write `path` (.safetensors) and its JSON sidecar; returns the safetensors path."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint path must end in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)
    sidecar = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "labels": list(model.config.labels),
        "modalities": list(model.config.modalities),
        "normalization": model.normalization(),
        "feature_spec": feature_spec or {},
        "meta": meta or {},
        "sha256": file_sha256(path),
    }
    tmp_json = sidecar_path(path).with_name(sidecar_path(path).name + ".tmp")
    tmp_json.write_text(json.dumps(sidecar, indent=1))
    os.replace(tmp_json, sidecar_path(path))
    logger.info("saved checkpoint %s", path)
    return path


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate the JSON sidecar of a checkpoint (no weights are touched)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(f"checkpoint sidecar {side} is missing (every .safetensors needs its .json)")
    try:
        data = json.loads(side.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint sidecar {side} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{side} is not an emostream checkpoint sidecar (format != {FORMAT!r})")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format version {version!r}; this emostream reads version {FORMAT_VERSION}"
        )
    for key in ("config", "normalization", "feature_spec", "sha256"):
        if key not in data:
            raise CheckpointError(f"checkpoint sidecar {side} lacks the key {key!r}")
    return data


def load_checkpoint(path: str | os.PathLike[str] | None = None, map_location: str = "cpu") -> LoadedCheckpoint:
    """Load and check a checkpoint; `None` loads the bundled default. The model is in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path) if path is not None else default_checkpoint_path()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = read_sidecar(path)
    try:
        config = ModelConfig.from_dict(data["config"])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has an invalid model config: {e}") from e
    if list(config.labels) != list(data.get("labels", config.labels)) or list(config.modalities) != list(
        data.get("modalities", config.modalities)
    ):
        raise CheckpointError(f"checkpoint {path}: labels/modalities in the sidecar disagree with its config")
    digest = file_sha256(path)
    if digest != data["sha256"]:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated: its SHA-256 {digest[:12]}... does not match "
            f"the sidecar's {str(data['sha256'])[:12]}..."
        )
    try:
        tensors = load_file(str(path), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} could not be read as safetensors: {e}") from e
    model = MCNCL(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path} does not fit its config: missing tensors {missing[:5]}, unexpected {unexpected[:5]}"
        )
    bad = [
        f"{k}: file {tuple(tensors[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(tensors[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise CheckpointError(f"checkpoint {path} has shape mismatches: {'; '.join(bad[:5])}")
    model.load_state_dict(tensors, strict=True)
    try:
        model.set_normalization(data["normalization"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} has invalid normalisation statistics: {e}") from e
    model.to(map_location).eval()
    return LoadedCheckpoint(
        model=model, config=config, feature_spec=data["feature_spec"], meta=data.get("meta", {}), sha256=digest,
        path=path,
    )
