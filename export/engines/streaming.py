"""`StreamingEngine`: one utterance at a time through any step engine, holding the dialogue state.

The realtime session calls `step(features) -> probs` and `reset()` and never sees the state
tensors, so every backend (torch, onnxruntime, tensorrt) is used the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np

from emostream.export.engines.base import Engine, EngineError
from emostream.export.sidecar import check_sidecar
from emostream.model.config import MODALITIES

logger = logging.getLogger(__name__)


class StreamingEngine:
    """Wraps a step engine; owns the recurrent state between utterances (numpy, batch 1)."""

    def __init__(self, engine: Engine, labels: Any = None, feature_spec: Mapping[str, Any] | None = None,
                 modalities: Any = None) -> None:
        """labels/feature_spec/modalities: what the session will use; checked against the sidecar."""
        side = engine.sidecar
        if side is None or side.get("kind") != "step":
            raise EngineError("StreamingEngine needs a step engine with its sidecar (kind 'step')")
        self.sidecar = check_sidecar(side, labels, feature_spec, modalities)
        self.engine = engine
        self.labels: tuple[str, ...] = tuple(side["labels"])
        self.modalities: tuple[str, ...] = tuple(side["modalities"])
        self._pairs = [(p["input"], p["output"]) for p in side["state"]]
        specs = engine.input_specs
        state_names = {i for i, _ in self._pairs}
        self._feature_specs = {n: s for n, s in specs.items() if n not in state_names}
        self._state_specs = {n: specs[n] for n, _ in self._pairs}
        party = next((s for n, s in self._state_specs.items() if n.endswith("_party")), None)
        self.n_parties = party.shape[1] if party is not None else 1
        self.last_logits: np.ndarray | None = None
        self.steps = 0
        self.reset()

    # ---------------------------------------------------------------- state
    def zero_state(self) -> dict[str, np.ndarray]:
        """A new dialogue's state (zeros), touching nothing held here: callers that keep their own
        state (one per dialogue, on a shared engine) start from this."""
        return {n: np.zeros(s.shape, dtype=s.dtype) for n, s in self._state_specs.items()}

    def reset(self) -> None:
        """Start a new dialogue: the state goes back to zeros."""
        self._state = self.zero_state()
        self.last_logits = None
        self.steps = 0

    @property
    def state(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self._state.items()}

    # ---------------------------------------------------------------- one utterance
    def feeds(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Engine feeds for one utterance: batch dim added, absent modalities zero and not present.

        inputs: text (Dt,), audio (Da,), visual (F, Dv), visual_mask (F,), present (3,) in
        MODALITIES order, speaker int in [0, n_parties). Each may carry a leading batch dim of 1.
        Without `present`, a modality counts as present when its features are given (and, for
        visual, at least one frame is unmasked).
        """
        out: dict[str, np.ndarray] = {}
        for name, spec in self._feature_specs.items():
            if name in ("present", "speaker"):
                continue
            if name in inputs and inputs[name] is not None:
                arr = np.asarray(inputs[name], dtype=spec.dtype)
                if arr.ndim == len(spec.shape) - 1:
                    arr = arr[None]
            else:
                arr = np.zeros(spec.shape, dtype=spec.dtype)
            out[name] = arr
        if inputs.get("present") is not None:
            present = np.asarray(inputs["present"], dtype=np.float32).reshape(1, len(MODALITIES))
        else:
            given = [m in inputs and inputs[m] is not None for m in MODALITIES]
            if given[2] and inputs.get("visual_mask") is not None:
                given[2] = bool(np.asarray(inputs["visual_mask"]).any())
            present = np.asarray([given], dtype=np.float32)
        out["present"] = present
        speaker = int(np.asarray(inputs.get("speaker", 0)).reshape(-1)[0])
        if not 0 <= speaker < self.n_parties:
            raise ValueError(f"speaker slot {speaker} is outside [0, {self.n_parties})")
        out["speaker"] = np.asarray([speaker], dtype=np.int64)
        return out

    def step(self, inputs: Mapping[str, Any]) -> np.ndarray:
        """One utterance -> class probabilities (K,); the state advances."""
        feeds = self.feeds(inputs)
        feeds.update(self._state)
        out = self.engine.infer(feeds)
        self._state = {i: np.array(out[o], copy=True) for i, o in self._pairs}
        self.last_logits = out["logits"][0]
        self.steps += 1
        return out["probs"][0]

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, float]:
        """`step`, with the probabilities keyed by label."""
        return dict(zip(self.labels, (float(p) for p in self.step(inputs))))

    # ---------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> StreamingEngine:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
