"""Export of trained MCN-CL checkpoints to ONNX and TensorRT, and the engines that run them.

Heavy dependencies (onnx, onnxruntime, tensorrt) are imported lazily by the submodules.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("emostream")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0+unknown"
