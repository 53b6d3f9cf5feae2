"""Parity of exported engines with PyTorch: the step over a synthetic dialogue, and the encoders.

The step check runs one seeded synthetic dialogue (several speakers, some modalities missing,
some utterances without a face) utterance by utterance through the exported engine and through
`MCNCL.step_logits`, each holding its own state, and compares the probabilities at every step.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from emostream.export.engines import BucketedTextEncoder, StreamingEngine, load_engine, resolve_model_file
from emostream.export.engines.base import Engine, EngineError
from emostream.export.engines.text import text_encoder_files
from emostream.export.sidecar import SidecarError, TensorSpec, read_sidecar
from emostream.model.features.context import ContextInput, as_input, encode

logger = logging.getLogger(__name__)

DEFAULT_SENTENCES: tuple[str, ...] = (
    "Oh my God, you got the job? That's amazing!",
    "I don't know what you're talking about.",
    "Fine.",
    "Why would you ever do something like that to me, after everything we have been through together?",
)
# a context input (the current utterance first, past turns most recent first): pooled over the current only
DEFAULT_CONTEXT = ContextInput("A: Oh my God, you got the job? That's amazing!",
                               ("B: I got the job.", "A: So? Tell me!", "B: Guess what happened today."))
FP32_TOLERANCE = 1e-4
FP16_TOLERANCE = 1e-2


# ------------------------------------------------------------------ synthetic input
def synthetic_dialogue(
    specs: Mapping[str, TensorSpec],
    steps: int,
    seed: int = 0,
    n_parties: int = 9,
    n_speakers: int = 3,
    p_missing: float = 0.3,
    normalization: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> list[dict[str, Any]]:
    """`steps` utterances of StreamingEngine inputs (no batch dim) for the step engine's `specs`.

    Features are mean + std * N(0, 1) with the checkpoint's normalisation statistics when given
    (so they look like real features to the model), else N(0, 1). The first utterance has every
    modality; later ones drop each modality with `p_missing`, and a quarter of the visual ones
    have no face at all (an all-zero frame mask).
    """
    rng = np.random.default_rng(seed)
    speakers = max(1, min(n_speakers, n_parties))
    out = []
    for t in range(steps):
        utt: dict[str, Any] = {}
        for name in ("text", "audio", "visual"):
            if name not in specs:
                continue
            shape = specs[name].shape[1:]  # drop the batch dim
            x = rng.standard_normal(shape).astype(np.float32)
            if normalization and name in normalization:
                mean = np.asarray(normalization[name]["mean"], np.float32)
                std = np.asarray(normalization[name]["std"], np.float32)
                x = mean + std * x
            utt[name] = x
        present = np.ones(3, np.float32) if t == 0 else (rng.random(3) >= p_missing).astype(np.float32)
        utt["present"] = present
        if "visual_mask" in specs:
            f = specs["visual_mask"].shape[1]
            n_frames = 0 if (t > 0 and rng.random() < 0.25) else int(rng.integers(1, f + 1))
            mask = np.zeros(f, np.float32)
            mask[rng.permutation(f)[:n_frames]] = 1.0
            utt["visual_mask"] = mask
        utt["speaker"] = int(rng.integers(0, speakers))
        out.append(utt)
    return out


# ------------------------------------------------------------------ step parity
def compare_step_engines(
    engine: Engine, reference: Engine, steps: int = 30, seed: int = 0,
    normalization: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> dict[str, Any]:
    """Stream the same synthetic dialogue through both engines; statistics over all steps."""
    a, b = StreamingEngine(engine), StreamingEngine(reference)
    if a.labels != b.labels:
        raise SidecarError(f"labels differ: {a.labels} vs {b.labels}")
    dialogue = synthetic_dialogue(engine.input_specs, steps, seed, a.n_parties, normalization=normalization)
    diffs, logit_diffs, state_diffs, agree = [], [], [], 0
    for utt in dialogue:
        pa, pb = a.step(utt), b.step(utt)
        diffs.append(float(np.abs(pa - pb).max()))
        logit_diffs.append(float(np.abs(a.last_logits - b.last_logits).max()))
        sa, sb = a.state, b.state
        state_diffs.append(max(float(np.abs(sa[k] - sb[k]).max()) for k in sa))
        agree += int(np.argmax(pa) == np.argmax(pb))
    n = max(1, len(dialogue))
    return {
        "backend": getattr(engine, "backend", type(engine).__name__),
        "reference": getattr(reference, "backend", type(reference).__name__),
        "steps": len(dialogue),
        "seed": seed,
        "max_abs_diff": max(diffs, default=0.0),
        "mean_abs_diff": float(np.mean(diffs)) if diffs else 0.0,
        "max_logit_diff": max(logit_diffs, default=0.0),
        "max_state_diff": max(state_diffs, default=0.0),
        "argmax_agreement": agree / n,
    }


# ------------------------------------------------------------------ encoder parity
@lru_cache(maxsize=2)
def _text_module(ref: str, normalize: bool) -> tuple[Any, Any]:
    """The PyTorch reference text encoder and tokenizer (loaded once per process)."""
    from emostream.model.features.text import load_text_module

    return load_text_module(ref, normalize=normalize)


def _parity_inputs(sentences: Sequence[str | ContextInput], pooled: bool) -> list[ContextInput]:
    """The sentences, plus a context input where the graph pools (`pool_mask`)."""
    items = [as_input(s) for s in sentences]
    return items + [DEFAULT_CONTEXT] if pooled else items


def _reference(module: Any, tokenizer: Any, item: ContextInput, max_length: int, pad_to: int | None = None) -> np.ndarray:
    """PyTorch's embedding (1, D) of one input, unpadded or padded right to `pad_to` tokens."""
    import torch

    from emostream.model.features.text import pad_batch

    ids, pool = encode(tokenizer, item, max_length)
    feeds = pad_batch([(ids, pool)], tokenizer.pad_token_id or 0)
    if pad_to is not None and pad_to > len(ids):
        pad_id = tokenizer.pad_token_id or 0
        feeds = {k: torch.nn.functional.pad(v, (0, pad_to - len(ids)), value=pad_id if k == "input_ids" else 0)
                 for k, v in feeds.items()}
    with torch.inference_mode():
        return module(feeds["input_ids"], feeds["attention_mask"], feeds["pool_mask"]).numpy()


def text_encoder_parity(engine: Engine, sentences: Sequence[str] = DEFAULT_SENTENCES) -> dict[str, Any]:
    """Max |engine - PyTorch| of the sentence embeddings for one text_encoder engine (its length L)."""
    side = engine.sidecar or {}
    if side.get("kind") != "text_encoder":
        raise SidecarError("text_encoder_parity needs a text_encoder engine with its sidecar")
    module, tokenizer = _text_module(side["ref"], bool(side.get("normalize", True)))
    length = int(side["length"])
    pooled = "pool_mask" in engine.input_names
    worst = 0.0
    for item in _parity_inputs(sentences, pooled):
        ref = _reference(module, tokenizer, item, length, pad_to=length)
        ids, pool = encode(tokenizer, item, length)
        pad = length - len(ids)
        feeds = {"input_ids": np.asarray([ids + [tokenizer.pad_token_id or 0] * pad], np.int64),
                 "attention_mask": np.asarray([[1] * len(ids) + [0] * pad], np.int64)}  # (1, L)
        if pooled:
            feeds["pool_mask"] = np.asarray([pool + [0] * pad], np.int64)
        got = engine.infer(feeds)[engine.output_names[0]]
        worst = max(worst, float(np.abs(got - ref).max()))
    return {"length": length, "max_abs_diff": worst}


def bucketed_text_parity(encoder: BucketedTextEncoder, sentences: Sequence[str] = DEFAULT_SENTENCES) -> float:
    """Max |bucketed engines - PyTorch on the unpadded input| (what the featurizer computes)."""
    side = encoder.sidecar
    module, tokenizer = _text_module(side["ref"], bool(side.get("normalize", True)))
    items = _parity_inputs(sentences, all(encoder.pooled))
    got = encoder.encode(items)  # (n, D)
    worst = 0.0
    for row, item in enumerate(items):
        ref = _reference(module, tokenizer, item, encoder.max_length)[0]
        worst = max(worst, float(np.abs(got[row] - ref).max()))
    return worst


def frame_backbone_parity(engine: Engine, seed: int = 0) -> dict[str, Any]:
    """Max |engine - PyTorch| of the frame features on seeded random normalised images."""
    import torch

    from emostream.model.features.mobilenet_v2 import load_backbone

    side = engine.sidecar or {}
    if side.get("kind") != "frame_backbone":
        raise SidecarError("frame_backbone_parity needs a frame_backbone engine with its sidecar")
    module = load_backbone(side["ref"]).eval()
    spec = engine.input_specs[engine.input_names[0]]
    images = np.random.default_rng(seed).standard_normal(spec.shape).astype(np.float32)  # (N, 3, H, W)
    with torch.inference_mode():
        ref = module(torch.from_numpy(images)).numpy()
    got = engine.infer({spec.name: images})[engine.output_names[0]]
    return {"frame_backbone_max_abs_diff": float(np.abs(got - ref).max()), "images": int(spec.shape[0])}


# ------------------------------------------------------------------ a whole export folder
def verify_export(
    export_dir: str | os.PathLike[str],
    steps: int = 30,
    seed: int = 0,
    engine: str = "onnx",
    checkpoint: str | os.PathLike[str] | None = None,
    parts: Sequence[str] | None = None,
    tolerance: float | None = None,
    **engine_options: Any,
) -> dict[str, Any]:
    """Parity of everything exported in `export_dir` (for `engine` "onnx" or "tensorrt").

    The step's PyTorch reference is the checkpoint named in the sidecar (or `checkpoint`), and
    its SHA-256 must match the one the export was made from. `ok` is true when the step's
    probabilities agree within `tolerance` (1e-4 fp32, 1e-2 fp16 engines) with the same argmax
    at every step (>= 90% of steps for fp16), and the encoders within the same tolerance (5e-2
    for fp16 engines).
    """
    from emostream.export.engines.torch_engine import TorchStepEngine
    from emostream.model.checkpoint import load_checkpoint

    folder = Path(export_dir)
    step_file = resolve_model_file(engine, folder, "step")
    side = read_sidecar(step_file)
    ckpt_path = checkpoint or side.get("checkpoint_path")
    ckpt = load_checkpoint(ckpt_path)
    if ckpt.sha256 != side["checkpoint_sha256"]:
        raise SidecarError(
            f"{step_file.name} was exported from checkpoint {side['checkpoint_sha256'][:12]}..., "
            f"but {ckpt.path} is {ckpt.sha256[:12]}...: pass the checkpoint it came from"
        )
    fp16 = bool(side.get("tensorrt", {}).get("fp16", False))
    tol = tolerance if tolerance is not None else (FP16_TOLERANCE if fp16 else FP32_TOLERANCE)
    with load_engine(engine, step_file, **engine_options) as eng, TorchStepEngine(ckpt) as ref:
        report = compare_step_engines(eng, ref, steps, seed, ckpt.model.normalization())
    report.update({"engine": engine, "fp16": fp16, "tolerance": tol, "checkpoint_sha256": ckpt.sha256})
    min_agreement = 0.9 if fp16 else 1.0  # FP16 may flip near-ties of a random model
    ok = report["max_abs_diff"] <= tol and report["argmax_agreement"] >= min_agreement
    wanted = parts if parts is not None else ("text_encoder", "frame_backbone")
    enc_tol = tol if not fp16 else 5e-2
    if "text_encoder" in wanted and text_encoder_files(engine, folder):
        per_bucket = {}
        for path in text_encoder_files(engine, folder):
            with load_engine(engine, path, **engine_options) as enc:
                r = text_encoder_parity(enc)
            per_bucket[str(r["length"])] = r["max_abs_diff"]
        with BucketedTextEncoder.load(engine, folder, **engine_options) as bucketed:
            report["text_encoder_bucketed_max_abs_diff"] = bucketed_text_parity(bucketed)
        report["text_encoder_max_abs_diff"] = max(per_bucket.values())
        report["text_encoder_by_length"] = per_bucket
        ok = ok and max(report["text_encoder_max_abs_diff"], report["text_encoder_bucketed_max_abs_diff"]) <= enc_tol
    if "frame_backbone" in wanted:
        try:
            path = resolve_model_file(engine, folder, "frame_backbone")
        except EngineError:
            path = None
        if path is not None:
            with load_engine(engine, path, **engine_options) as enc:
                report["frame_backbone_max_abs_diff"] = frame_backbone_parity(enc)["frame_backbone_max_abs_diff"]
            ok = ok and report["frame_backbone_max_abs_diff"] <= enc_tol
    report["ok"] = bool(ok)
    logger.info("verify %s: %s", folder, report)
    return report
