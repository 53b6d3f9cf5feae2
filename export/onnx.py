"""ONNX export of the streaming step model, and `export_onnx` for a whole checkpoint.

The step model is exported with all its recurrent state as explicit inputs and outputs (the
pattern Silero VAD uses): inputs are the utterance features plus every state tensor under its
state-dict name, outputs are `probs`, `logits` and every new state tensor as `<name>_out`.
Every shape is static (batch 1), so the graphs build with TensorRT as they are. Each file gets a
JSON sidecar (see `emostream.export.sidecar`). The text encoder and the frame backbone are in
`emostream.export.encoders`.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from emostream.export.sidecar import TensorSpec, write_sidecar
from emostream.model.checkpoint import LoadedCheckpoint, file_sha256, load_checkpoint
from emostream.model.mcncl import MCNCL

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 17
STEP_OUTPUTS: tuple[str, ...] = ("probs", "logits")
ALL_PARTS: tuple[str, ...] = ("step", "text_encoder", "frame_backbone")


def state_output_name(name: str) -> str:
    """The output carrying the new value of state tensor `name`."""
    return f"{name}_out"


def _np_dtype(dtype: torch.dtype) -> str:
    return str(torch.empty((), dtype=dtype).numpy().dtype)


# ------------------------------------------------------------------ the step model's interface
def step_feature_names(model: MCNCL) -> list[str]:
    """The feature inputs the step graph keeps: those of the trained modalities, present, speaker.

    (The exporter drops unused graph inputs, so a text-only model has no audio/visual inputs.)
    """
    names = [m for m in ("text", "audio") if m in model.modalities]
    if "visual" in model.modalities:
        names += ["visual", "visual_mask"]
    return names + ["present", "speaker"]


def example_step_inputs(model: MCNCL, batch: int = 1) -> dict[str, torch.Tensor]:
    """Zero features with everything present, speaker 0: the tensors the exporter traces with."""
    cfg = model.config
    return {
        "text": torch.zeros(batch, cfg.text_dim),  # (B, Dt)
        "audio": torch.zeros(batch, cfg.audio_dim),  # (B, Da)
        "visual": torch.zeros(batch, cfg.max_frames, cfg.visual_dim),  # (B, F, Dv)
        "visual_mask": torch.ones(batch, cfg.max_frames),  # (B, F)
        "present": torch.ones(batch, 3),  # (B, 3)
        "speaker": torch.zeros(batch, dtype=torch.int64),  # (B,)
    }


def step_io_specs(model: MCNCL, batch: int = 1) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input and output tensor specs of the exported step graph, in graph order."""
    feats = example_step_inputs(model, batch)
    state = model.init_state(batch)
    inputs = [TensorSpec(n, tuple(feats[n].shape), _np_dtype(feats[n].dtype)) for n in step_feature_names(model)]
    inputs += [TensorSpec(n, tuple(t.shape), _np_dtype(t.dtype)) for n, t in state.items()]
    k = model.config.num_classes
    outputs = [TensorSpec(n, (batch, k), "float32") for n in STEP_OUTPUTS]
    outputs += [TensorSpec(state_output_name(n), tuple(t.shape), _np_dtype(t.dtype)) for n, t in state.items()]
    return inputs, outputs


class StepModule(nn.Module):
    """MCNCL.step_logits with flat positional tensors in and out, for tracing."""

    def __init__(self, model: MCNCL) -> None:
        super().__init__()
        self.model = model
        self.feature_names = step_feature_names(model)
        self.state_names = list(model.init_state(1))
        self.defaults = example_step_inputs(model, 1)

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.feature_names + self.state_names, args))
        inputs = {k: named.get(k, v) for k, v in self.defaults.items()}  # unused modalities: constants
        state = {k: named[k] for k in self.state_names}
        probs, logits, new_state = self.model.step_logits(inputs, state)
        return (probs, logits, *[new_state[k] for k in self.state_names])


# ------------------------------------------------------------------ export helpers
def torch_export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, input_names: Sequence[str],
                 output_names: Sequence[str], opset: int, dynamic_batch: bool = False) -> None:
    """Trace `module` with the TorchScript exporter (static shapes from `args`; with `dynamic_batch`,
    dimension 0 of every input and output is left free), then fold constants."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(
                module, args, str(tmp), input_names=list(input_names), output_names=list(output_names),
                opset_version=opset, do_constant_folding=True, dynamo=False,
                dynamic_axes={n: {0: "batch"} for n in (*input_names, *output_names)} if dynamic_batch else None,
            )
        fold_constants(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fold_constants(path: Path) -> None:
    """Constant-fold `path` in place with ONNX Runtime's basic optimisations.

    These rewrites keep to standard ONNX ops (constant folding, redundant-node removal, Conv+BN
    fusion) and turn the shape arithmetic that tracing leaves behind (Shape -> ... -> Expand)
    into constants, so every tensor gets a static shape; Polygraphy's `--fold-constants` does the
    same. Opset imports of domains no node uses are dropped again.
    """
    import onnx
    import onnxruntime as ort

    folded = path.with_name(path.name + ".folded")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(folded)
    so.log_severity_level = 3
    ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    model = onnx.load(str(folded))
    folded.unlink()
    used = {n.domain for n in model.graph.node} | {""}
    keep = [o for o in model.opset_import if o.domain in used]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    custom = sorted(used - {"", "ai.onnx"})
    if custom:
        raise RuntimeError(f"constant folding of {path.name} introduced non-standard op domains {custom}")
    onnx.save(model, str(path))


def check_graph_io(path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    got_in = [i.name for i in model.graph.input]
    got_out = [o.name for o in model.graph.output]
    if got_in != [s.name for s in inputs] or got_out != [s.name for s in outputs]:
        raise RuntimeError(
            f"exported {path.name} has inputs {got_in} / outputs {got_out}; expected "
            f"{[s.name for s in inputs]} / {[s.name for s in outputs]}"
        )


def _versions() -> dict[str, str]:
    import onnx

    from emostream.export import __version__

    return {"emostream": __version__, "torch": torch.__version__, "onnx": onnx.__version__}


def base_sidecar(ckpt: LoadedCheckpoint, kind: str, path: Path, opset: int, inputs: Sequence[TensorSpec],
                 outputs: Sequence[TensorSpec]) -> dict[str, Any]:
    """The sidecar fields every exported file has."""
    return {
        "kind": kind,
        "file": path.name,
        "file_sha256": file_sha256(path),
        "opset": opset,
        "graph_optimizations": "onnxruntime basic (constant folding, standard ONNX ops only)",
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        **checkpoint_fields(ckpt),
        "producer": _versions(),
    }


def checkpoint_fields(ckpt: LoadedCheckpoint) -> dict[str, Any]:
    """What every sidecar records of its source checkpoint (checked against a session at load)."""
    return {
        "labels": list(ckpt.config.labels),
        "modalities": list(ckpt.config.modalities),
        "feature_spec": ckpt.feature_spec,
        "checkpoint_sha256": ckpt.sha256,
        "checkpoint_path": str(ckpt.path) if ckpt.path is not None else None,
    }


def step_metadata(ckpt: LoadedCheckpoint) -> dict[str, Any]:
    """What every step engine (torch, ONNX, TensorRT) says about itself: the sidecar minus the file."""
    inputs, outputs = step_io_specs(ckpt.model, 1)
    return {
        "kind": "step",
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        **checkpoint_fields(ckpt),
        "state": [{"input": n, "output": state_output_name(n)} for n in ckpt.model.init_state(1)],
        "state_init": "zeros",
        "model_config": ckpt.config.to_dict(),
    }


# ------------------------------------------------------------------ the three exports
def export_step(ckpt: LoadedCheckpoint, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET) -> Path:
    """Export the streaming step (batch 1) to `path` and write its sidecar. Returns `path`."""
    path = Path(path)
    model = ckpt.model.eval().cpu()
    inputs, outputs = step_io_specs(model, 1)
    module = StepModule(model).eval()
    feats = example_step_inputs(model, 1)
    state = model.init_state(1)
    args = tuple(feats[n] for n in module.feature_names) + tuple(state[n] for n in module.state_names)
    torch_export(module, args, path, [s.name for s in inputs], [s.name for s in outputs], opset)
    check_graph_io(path, inputs, outputs)
    side = base_sidecar(ckpt, "step", path, opset, inputs, outputs)
    side.update(step_metadata(ckpt))
    write_sidecar(path, side)
    logger.info("exported the step model to %s (%d inputs, %d outputs)", path, len(inputs), len(outputs))
    return path


def default_parts(ckpt: LoadedCheckpoint) -> tuple[str, ...]:
    """The step, plus the encoders of the modalities the checkpoint was trained on."""
    parts = ["step"]
    if "text" in ckpt.config.modalities:
        parts.append("text_encoder")
    if "visual" in ckpt.config.modalities:
        parts.append("frame_backbone")
    return tuple(parts)


def export_onnx(
    checkpoint: str | os.PathLike[str] | LoadedCheckpoint | None,
    out_dir: str | os.PathLike[str],
    parts: Sequence[str] | None = None,
    opset: int = DEFAULT_OPSET,
    text_ref: str | None = None,
    text_max_length: int | None = None,
    text_buckets: Sequence[int] | None = None,
    text_dynamic_batch: bool = False,
    backbone_ref: str | None = None,
    backbone_batch: int | None = None,
) -> dict[str, Path]:
    """Export `parts` (default: `default_parts`) of a checkpoint into `out_dir`.

    Files: `step.onnx`, `text_encoder.onnx` (L = max_length) plus one `text_encoder.L<n>.onnx`
    per shorter token bucket, `frame_backbone.onnx`; each with its sidecar. Returns name -> path.
    `text_dynamic_batch`: text encoders that take any batch (ONNX Runtime; TensorRT builds need the
    default, static batch 1).
    """
    from emostream.export.encoders import DEFAULT_TEXT_BUCKETS, export_frame_backbone, export_text_encoders

    ckpt = checkpoint if isinstance(checkpoint, LoadedCheckpoint) else load_checkpoint(checkpoint)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = tuple(parts) if parts is not None else default_parts(ckpt)
    unknown = [p for p in parts if p not in ALL_PARTS]
    if unknown:
        raise ValueError(f"unknown export parts {unknown}; choose from {ALL_PARTS}")
    done: dict[str, Path] = {}
    for part in parts:
        if part == "step":
            done[part] = export_step(ckpt, out / "step.onnx", opset)
        elif part == "text_encoder":
            buckets = DEFAULT_TEXT_BUCKETS if text_buckets is None else tuple(text_buckets)
            for path in export_text_encoders(ckpt, out, text_ref, text_max_length, buckets, opset,
                                             dynamic_batch=text_dynamic_batch):
                done[path.name.removesuffix(".onnx")] = path
        else:
            done[part] = export_frame_backbone(ckpt, out / "frame_backbone.onnx", backbone_ref, backbone_batch, opset)
    return done
