"""One way to export a small feature network to ONNX into the user cache: atomically.

The face expert and the MTCNN detector export their networks once, on first use, into
`weights.cache_dir()`; a concurrent reader must never see half a file, so the export goes to a
temporary file beside the target and is renamed over it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)


def export_atomic(module: nn.Module, example: torch.Tensor, path: Path, *, input_name: str,
                  output_names: Sequence[str], dynamic_axes: Mapping[str, Mapping[int, str]]) -> None:
    """torch.onnx.export (opset 17, TorchScript exporter as export/onnx.py uses) to `path`, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".onnx")
    os.close(fd)
    try:
        with warnings.catch_warnings():  # e.g. "Constant folding - Only steps=1 ..." from F.pad: harmless
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)  # the project exports with dynamo=False
            torch.onnx.export(
                module.eval(), (example,), tmp, input_names=[input_name], output_names=list(output_names),
                dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()}, opset_version=17, dynamo=False,
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600
        os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("exported %s to %s", type(module).__name__, path)
