"""The PyTorch reference engines: the step model and any feature module, under the ONNX names."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from emostream.export.engines.base import BaseEngine
from emostream.export.onnx import (
    STEP_OUTPUTS,
    example_step_inputs,
    state_output_name,
    step_feature_names,
    step_metadata,
)
from emostream.export.sidecar import TensorSpec, tensor_specs
from emostream.model.checkpoint import LoadedCheckpoint, load_checkpoint

logger = logging.getLogger(__name__)


class TorchStepEngine(BaseEngine):
    """MCNCL.step_logits behind the Engine contract, with the exported graph's tensor names."""

    backend = "torch"

    def __init__(self, checkpoint: str | os.PathLike[str] | LoadedCheckpoint | None = None,
                 device: str | torch.device = "cpu") -> None:
        ckpt = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
        self.checkpoint = ckpt
        self.device = torch.device(device)
        self.model = ckpt.model.to(self.device).eval()
        meta = step_metadata(ckpt)
        super().__init__(tensor_specs(meta, "inputs"), tensor_specs(meta, "outputs"), meta)
        self._features = step_feature_names(self.model)
        self._state = list(self.model.init_state(1))
        self._defaults = {k: v.to(self.device) for k, v in example_step_inputs(self.model, 1).items()}

    @torch.inference_mode()
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = self.check_feeds(feeds)
        t = {k: torch.from_numpy(v).to(self.device) for k, v in arrays.items()}
        inputs = {k: t.get(k, d) for k, d in self._defaults.items()}
        state = {k: t[k] for k in self._state}
        probs, logits, new_state = self.model.step_logits(inputs, state)
        out = dict(zip(STEP_OUTPUTS, (probs, logits)))
        out.update({state_output_name(k): new_state[k] for k in self._state})
        return {k: v.detach().cpu().numpy() for k, v in out.items()}



class TorchModuleEngine(BaseEngine):
    """Any module taking positional tensors (text encoder, frame backbone) under fixed names."""

    backend = "torch"

    def __init__(self, module: nn.Module, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 sidecar: Mapping[str, Any] | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(inputs, outputs, sidecar)
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    @torch.inference_mode()
    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays = self.check_feeds(feeds)
        args = [torch.from_numpy(arrays[n]).to(self.device) for n in self.input_names]
        out = self.module(*args)
        outs = out if isinstance(out, (tuple, list)) else (out,)
        return {n: o.detach().cpu().numpy() for n, o in zip(self.output_names, outs)}
