"""Engines: one contract (`Engine`) over PyTorch, ONNX Runtime and TensorRT, plus `load_engine`.

Backends import their libraries lazily: importing this package needs only numpy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from emostream.export.engines.base import BackendUnavailableError, BaseEngine, Engine, EngineError
from emostream.export.engines.streaming import StreamingEngine
from emostream.export.engines.text import SUFFIX, BucketedTextEncoder
from emostream.export.sidecar import SidecarError, check_sidecar

EngineKind = Literal["torch", "onnx", "tensorrt"]

__all__ = [
    "BackendUnavailableError", "BaseEngine", "BucketedTextEncoder", "Engine", "EngineError", "EngineKind",
    "SidecarError", "StreamingEngine", "check_sidecar", "load_engine", "resolve_model_file",
]


def resolve_model_file(kind: str, path: str | os.PathLike[str], part: str = "step") -> Path:
    """A file, or a directory holding `<part>.onnx` / `<part>.engine`."""
    p = Path(path)
    if p.is_dir():
        p = p / f"{part}{SUFFIX[kind]}"
    if not p.is_file():
        raise EngineError(f"no {kind} model at {p}")
    return p


def load_engine(kind: EngineKind | str, path_or_checkpoint: Any = None, part: str = "step", **options: Any) -> Engine:
    """Build an engine.

    kind "torch": `path_or_checkpoint` is a checkpoint path, a LoadedCheckpoint or None (bundled);
      only the step part (use `emostream.export.verify` for the feature-module references).
    kind "onnx" / "tensorrt": an exported file, or a directory holding `<part>.onnx` / `<part>.engine`.
    options go to the backend (e.g. device, intra_op_threads for onnx).
    """
    if kind == "torch":
        if part != "step":
            raise EngineError("load_engine('torch', ...) builds the step model only")
        from emostream.export.engines.torch_engine import TorchStepEngine

        return TorchStepEngine(path_or_checkpoint, **options)
    if path_or_checkpoint is None:
        raise EngineError(f"load_engine({kind!r}) needs the exported file or directory")
    if kind == "onnx":
        from emostream.export.engines.onnx_engine import OnnxEngine

        return OnnxEngine(resolve_model_file(kind, path_or_checkpoint, part), **options)
    if kind == "tensorrt":
        from emostream.export.engines.trt_engine import TensorRTEngine

        return TensorRTEngine(resolve_model_file(kind, path_or_checkpoint, part), **options)
    raise EngineError(f"unknown engine kind {kind!r}: choose torch, onnx or tensorrt")
