"""TensorRT 10 / 11 engine: a deserialised `.engine` run with the tensor-address API on torch CUDA tensors.

Inputs and outputs live in preallocated CUDA tensors (static shapes); `infer` copies numpy feeds
in, binds every tensor with `set_tensor_address`, runs `execute_async_v3` on a torch CUDA stream
and copies the outputs back. `infer_tensors` skips the host copies for callers that keep their
data (e.g. the recurrent state) on the GPU.

The runtime module is the full `tensorrt` package or, without it, the lean runtime
`tensorrt_lean` (`pip install tensorrt-lean-cu12`), which deserialises only version-compatible
engines. Every TensorRT attribute used here exists in TensorRT 10 and 11 (tests/test_tensorrt_api.py
checks them against the installed runtime module).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emostream.export.engines.base import BackendUnavailableError, BaseEngine, EngineError
from emostream.export.sidecar import TensorSpec, read_sidecar, sidecar_path

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'emostream[tensorrt]' (TensorRT 10 or 11) on a machine with an NVIDIA GPU and CUDA"
SUPPORTED_MAJORS = (10, 11)
RUNTIME_MODULES = ("tensorrt", "tensorrt_lean")  # the full package first, then the lean runtime


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def _checked(trt: Any) -> Any:
    major = tensorrt_major(trt)
    if major < SUPPORTED_MAJORS[0]:
        raise BackendUnavailableError(
            f"TensorRT {trt.__version__} found; emostream needs {SUPPORTED_MAJORS[0]}.x or later: {INSTALL_HINT}"
        )
    if major > SUPPORTED_MAJORS[-1]:
        logger.warning("TensorRT %s: emostream is written and tested against the TensorRT %s APIs",
                       trt.__version__, " and ".join(map(str, SUPPORTED_MAJORS)))
    return trt


def import_tensorrt() -> Any:
    """The full `tensorrt` module (builder and runtime), or BackendUnavailableError with an install hint."""
    try:
        import tensorrt
    except ImportError as e:
        raise BackendUnavailableError(f"TensorRT is not installed: {INSTALL_HINT}") from e
    return _checked(tensorrt)


def import_tensorrt_runtime() -> Any:
    """A module with TensorRT's runtime API: `tensorrt`, else the lean `tensorrt_lean`."""
    errors: list[str] = []
    for name in RUNTIME_MODULES:
        try:
            return _checked(importlib.import_module(name))
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise BackendUnavailableError(f"TensorRT is not installed ({'; '.join(errors)}): {INSTALL_HINT}")


def require_cuda() -> Any:
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError(f"TensorRT needs a CUDA GPU and a CUDA build of torch; none here ({INSTALL_HINT})")
    return torch


def _trt_logger(trt: Any, verbose: bool = False) -> Any:
    return trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)


class TensorRTEngine(BaseEngine):
    """A serialised TensorRT engine with static I/O shapes."""

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], device: int = 0, verbose: bool = False) -> None:
        trt = import_tensorrt_runtime()
        torch = require_cuda()
        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"TensorRT engine {self.path} does not exist (run `emostream export tensorrt`)")
        self._torch = torch
        self.device = torch.device("cuda", device)
        self._logger = _trt_logger(trt, verbose)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            lean = " (the lean runtime runs only engines built version-compatible)" if _is_lean(trt) else ""
            raise EngineError(
                f"TensorRT {trt.__version__} could not deserialise {self.path}: built by another TensorRT "
                f"version or for another GPU?{lean}"
            )
        self.context = self.engine.create_execution_context()
        self.stream = torch.cuda.Stream(device=self.device)
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        self._buffers: dict[str, Any] = {}  # name -> torch CUDA tensor
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(int(d) for d in self.engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineError(f"{self.path}: tensor {name} has a dynamic shape {shape}; export static shapes")
            np_dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            spec = TensorSpec(name, shape, np_dtype.name)
            buf = torch.zeros(shape, dtype=_torch_dtype(torch, np_dtype), device=self.device)
            self._buffers[name] = buf
            if self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self.context.set_input_shape(name, shape)
                inputs.append(spec)
            else:
                outputs.append(spec)
            self.context.set_tensor_address(name, buf.data_ptr())
        side = read_sidecar(self.path) if sidecar_path(self.path).is_file() else None
        if side is not None:  # keep the exported order of names
            order_in = [d["name"] for d in side["inputs"]]
            order_out = [d["name"] for d in side["outputs"]]
            if sorted(order_in) != sorted(s.name for s in inputs) or sorted(order_out) != sorted(s.name for s in outputs):
                raise EngineError(f"{self.path}: engine tensors do not match its sidecar")
            by_name = {s.name: s for s in inputs + outputs}
            inputs = [by_name[n] for n in order_in]
            outputs = [by_name[n] for n in order_out]
        super().__init__(inputs, outputs, side)
        logger.info("TensorRT %s engine %s on %s", trt.__version__, self.path.name,
                    torch.cuda.get_device_name(self.device))

    def infer_tensors(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Torch tensors in (any device), torch CUDA tensors out (views of the engine's buffers:
        copy them before the next call if you keep them)."""
        torch = self._torch
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise EngineError(f"TensorRT engine feeds lack {missing}")
        with torch.cuda.stream(self.stream):
            for name in self.input_names:
                self._buffers[name].copy_(feeds[name], non_blocking=True)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise EngineError(f"TensorRT execution of {self.path.name} failed")
        self.stream.synchronize()
        return {n: self._buffers[n] for n in self.output_names}

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = self.check_feeds(feeds)
        torch = self._torch
        outs = self.infer_tensors({k: torch.from_numpy(v) for k, v in arrays.items()})
        return {k: v.cpu().numpy() for k, v in outs.items()}

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        self._buffers.clear()
        self.context = None
        self.engine = None


def _is_lean(trt: Any) -> bool:
    return str(getattr(trt, "__name__", "")).startswith("tensorrt_lean")


def _torch_dtype(torch: Any, dtype: np.dtype) -> Any:
    table = {
        "float32": torch.float32, "float16": torch.float16, "int64": torch.int64, "int32": torch.int32,
        "bool": torch.bool, "uint8": torch.uint8, "int8": torch.int8,
    }
    if dtype.name not in table:
        raise EngineError(f"unsupported TensorRT I/O dtype {dtype}")
    return table[dtype.name]
