"""ONNX Runtime engine: CPU by default, CUDA when onnxruntime-gpu sees a GPU."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emostream.export.engines.base import BackendUnavailableError, BaseEngine, EngineError
from emostream.export.sidecar import TensorSpec, read_sidecar, sidecar_path, tensor_specs

logger = logging.getLogger(__name__)

_ORT_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(bool)": "bool", "tensor(uint8)": "uint8",
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:  # pragma: no cover - a base dependency
        raise BackendUnavailableError("ONNX Runtime is not installed: pip install onnxruntime") from e
    return onnxruntime


def default_providers(device: str = "auto") -> list[str]:
    """CUDA first when asked for (or `auto` and available), always CPU as the fallback."""
    ort = _import_ort()
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise BackendUnavailableError(
            "ONNX Runtime has no CUDAExecutionProvider here: install onnxruntime-gpu (and a CUDA driver)"
        )
    return ["CPUExecutionProvider"]


def cpu_session(path: str | os.PathLike[str], threads: int = 1) -> Any:
    """A plain ONNX Runtime CPU session for a small pretrained model the live side calls directly
    (Silero VAD, the GE2E speaker encoder, Smart Turn): one inter-op thread, `threads` intra-op
    threads, warnings only."""
    ort = _import_ort()
    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def default_threads(kind: str | None) -> int:
    """Intra-op threads: the tiny step graph runs fastest on one; the encoders use up to four cores."""
    if kind == "step":
        return 1
    return max(1, min(4, os.cpu_count() or 1))


class OnnxEngine(BaseEngine):
    """An ONNX model in an onnxruntime InferenceSession."""

    backend = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str = "auto",
        providers: Sequence[str] | None = None,
        intra_op_threads: int | None = None,
        optimization: str = "all",
        spinning: bool | None = None,
    ) -> None:
        """device: auto|cpu|cuda; intra_op_threads: None picks by model kind; spinning: let idle
        worker threads spin (lower latency, burns CPU; default on only for one thread, where it is moot)."""
        ort = _import_ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise EngineError(f"ONNX model {self.path} does not exist (run `emostream export onnx` first)")
        side = read_sidecar(self.path) if sidecar_path(self.path).is_file() else None
        kind = side["kind"] if side else None
        threads = intra_op_threads if intra_op_threads is not None else default_threads(kind)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        so.log_severity_level = 3
        spin = spinning if spinning is not None else threads <= 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self.providers = list(providers) if providers is not None else default_providers(device)
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=so, providers=self.providers)
        except Exception as e:  # onnxruntime raises its own exception types
            raise EngineError(f"ONNX Runtime could not load {self.path}: {e}") from e
        if side is not None:
            inputs, outputs = tensor_specs(side, "inputs"), tensor_specs(side, "outputs")
        else:
            inputs = [_spec(a) for a in self.session.get_inputs()]
            outputs = [_spec(a) for a in self.session.get_outputs()]
        got = [a.name for a in self.session.get_inputs()]
        if got != [s.name for s in inputs]:
            raise EngineError(f"{self.path} has inputs {got}, its sidecar says {[s.name for s in inputs]}")
        super().__init__(inputs, outputs, side)
        logger.info("onnxruntime %s on %s (%d threads)", self.path.name, self.session.get_providers()[0], threads)

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = self.check_feeds(feeds)
        outs = self.session.run(self.output_names, arrays)
        return dict(zip(self.output_names, outs))

    def close(self) -> None:
        super().close()
        self.session = None  # type: ignore[assignment]


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
    return TensorSpec(arg.name, shape, _ORT_DTYPES.get(arg.type, "float32"))
