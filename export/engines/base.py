"""The `Engine` contract shared by every backend (after NVIDIA Polygraphy's runners).

An engine is built (loaded) in its constructor, runs `infer(feeds) -> outputs` on numpy arrays
keyed by tensor name, and releases its resources in `close()`; it is also a context manager.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from emostream.export.sidecar import TensorSpec

logger = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """An engine that cannot be built or a call with feeds that do not fit it."""


class BackendUnavailableError(EngineError):
    """A backend whose library (or device) is missing; the message says what to install."""


@runtime_checkable
class Engine(Protocol):
    backend: str

    @property
    def input_names(self) -> list[str]: ...

    @property
    def output_names(self) -> list[str]: ...

    @property
    def input_specs(self) -> dict[str, TensorSpec]: ...

    @property
    def output_specs(self) -> dict[str, TensorSpec]: ...

    @property
    def sidecar(self) -> dict[str, Any] | None: ...

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class BaseEngine:
    """Shared plumbing: tensor specs, feed checking, context management."""

    backend = "base"

    def __init__(self, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 sidecar: Mapping[str, Any] | None = None) -> None:
        self._inputs = {s.name: s for s in inputs}
        self._outputs = {s.name: s for s in outputs}
        self._sidecar = dict(sidecar) if sidecar is not None else None
        self._closed = False

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def output_names(self) -> list[str]:
        return list(self._outputs)

    @property
    def input_specs(self) -> dict[str, TensorSpec]:
        return dict(self._inputs)

    @property
    def output_specs(self) -> dict[str, TensorSpec]:
        return dict(self._outputs)

    @property
    def sidecar(self) -> dict[str, Any] | None:
        return self._sidecar

    def check_feeds(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Feeds as contiguous arrays of the engine's dtypes; wrong names or shapes raise EngineError."""
        if self._closed:
            raise EngineError(f"{self.backend} engine is closed")
        missing = [n for n in self._inputs if n not in feeds]
        extra = [n for n in feeds if n not in self._inputs]
        if missing or extra:
            raise EngineError(
                f"{self.backend} engine feeds do not fit: missing {missing}, unexpected {extra} "
                f"(inputs: {self.input_names})"
            )
        out = {}
        for name, spec in self._inputs.items():
            arr = np.ascontiguousarray(feeds[name], dtype=spec.dtype)
            if len(arr.shape) != len(spec.shape) or any(d >= 0 and a != d for a, d in zip(arr.shape, spec.shape)):
                raise EngineError(f"input {name!r} has shape {arr.shape}; the engine expects {spec.shape}")
            out[name] = arr
        return out

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        self._closed = True

    def __enter__(self) -> BaseEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(inputs={self.input_names}, outputs={self.output_names})"
