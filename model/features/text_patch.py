"""Fine-tuned text encoders stored as a patch: only the tensors that training changed.

A patch is `NAME.safetensors` (the changed tensors, float16 by default) plus `NAME.json`
(`format: emostream-text-patch`, the base encoder reference, the tensor names, the SHA-256 of the
safetensors file). Loading resolves the base (e.g. the bundled all-MiniLM-L6-v2), then overwrites
exactly those tensors; a missing, corrupt or non-matching patch is refused with a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

PATCH_FORMAT = "emostream-text-patch"
PATCH_VERSION = 1


class TextPatchError(ValueError):
    """A text-encoder patch that cannot be applied."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def is_patch(path: str | os.PathLike[str]) -> bool:
    p = Path(path)
    side = p.with_suffix(".json")
    if p.suffix != ".safetensors" or not side.is_file():
        return False
    try:
        return json.loads(side.read_text()).get("format") == PATCH_FORMAT
    except (OSError, json.JSONDecodeError):
        return False


def read_patch_sidecar(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise TextPatchError(f"text-encoder patch {p}: unreadable sidecar: {e}") from e
    if data.get("format") != PATCH_FORMAT or data.get("version") != PATCH_VERSION:
        raise TextPatchError(f"text-encoder patch {p}: not a version {PATCH_VERSION} {PATCH_FORMAT}")
    return data


def save_patch(encoder: nn.Module, base: nn.Module | dict[str, torch.Tensor], base_ref: str,
               path: str | os.PathLike[str], dtype: torch.dtype = torch.float16, context_turns: int = 0) -> Path:
    """Store the tensors of `encoder` that differ from `base` (a module or its state dict).

    context_turns: the past turns of the input it was tuned on (`features.context`), recorded in
    the sidecar so that every loader builds the same input.
    """
    from safetensors.torch import save_file

    path = Path(path)
    base_state = base.state_dict() if isinstance(base, nn.Module) else base
    changed = {
        k: v.detach().to(dtype).contiguous()
        for k, v in encoder.state_dict().items()
        if k in base_state and v.is_floating_point() and not torch.equal(v, base_state[k])
    }
    if not changed:
        raise TextPatchError("the encoder does not differ from its base: nothing to store")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(changed, str(path))
    side = {"format": PATCH_FORMAT, "version": PATCH_VERSION, "base": base_ref, "dtype": str(dtype).replace("torch.", ""),
            "tensors": sorted(changed), "sha256": _sha256(path)}
    if context_turns:
        side["context_turns"] = int(context_turns)
    path.with_suffix(".json").write_text(json.dumps(side, indent=1))
    return path


def apply_patch(encoder: nn.Module, path: str | os.PathLike[str]) -> None:
    """Overwrite the patched tensors of `encoder` (its dtype is kept)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    side = read_patch_sidecar(path)
    if _sha256(path) != side.get("sha256"):
        raise TextPatchError(f"text-encoder patch {path} is corrupt or truncated (SHA-256 mismatch)")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise TextPatchError(f"text-encoder patch {path} could not be read: {e}") from e
    state = encoder.state_dict()
    bad = [k for k, v in tensors.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
    if bad or sorted(tensors) != sorted(side["tensors"]):
        raise TextPatchError(f"text-encoder patch {path} does not fit its base {side['base']!r}: {bad[:5]}")
    with torch.no_grad():
        for k, v in tensors.items():
            state[k].copy_(v.to(state[k].dtype))


def patch_id(path: str | os.PathLike[str]) -> str:
    """A portable weights id, independent of the file's name: `base+patch@sha8`."""
    side = read_patch_sidecar(path)
    return f"{side['base']}+patch@{side['sha256'][:8]}"
