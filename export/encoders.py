"""ONNX export of the feature encoders: the sentence encoder (in token-length buckets) and the
frame backbone. They cost more per utterance than the fusion model, so they export too.

The text encoder is exported once per static token length L ("bucket"): `text_encoder.onnx`
has L = max_length (the feature spec's truncation, 128 by default) and `text_encoder.L<n>.onnx`
the shorter buckets (16, 32, 64 and 96 by default). A sentence is padded to the smallest bucket that
holds it; the encoder mean-pools over `pool_mask` (the current utterance of a context input,
`emostream.model.features.context`; every real token of a plain sentence) within the attention
mask, so the padding changes nothing but the cost (most utterances are short). Every graph keeps
static shapes for TensorRT; the live ONNX Runtime cache exports them with a free batch dimension
(`dynamic_batch`) so that several dialogues' finals of one bucket are encoded in one call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from emostream.export.onnx import DEFAULT_OPSET, base_sidecar, check_graph_io, torch_export
from emostream.export.sidecar import TensorSpec, write_sidecar
from emostream.model.checkpoint import LoadedCheckpoint

logger = logging.getLogger(__name__)

TEXT_MAX_LENGTH = 128
DEFAULT_TEXT_BUCKETS: tuple[int, ...] = (16, 32, 64, 96)  # utterances are short; with past turns ~50 tokens
TEXT_INPUTS: tuple[str, ...] = ("input_ids", "attention_mask", "pool_mask")
TEXT_OUTPUT = "embedding"
BACKBONE_INPUT = "images"
BACKBONE_OUTPUT = "features"
BACKBONE_REF = "mobilenet_v2-imagenet"
IMAGE_SIZE = 224
TOKENIZER_DIR = "tokenizer"


def modality_spec(ckpt: LoadedCheckpoint, modality: str) -> dict[str, Any]:
    """The checkpoint's feature spec for one modality as a dict ({} when absent)."""
    spec = ckpt.feature_spec.get(modality) if isinstance(ckpt.feature_spec, dict) else None
    return spec if isinstance(spec, dict) else {}


def text_encoder_filename(length: int, max_length: int) -> str:
    return "text_encoder.onnx" if length == max_length else f"text_encoder.L{length}.onnx"


def export_text_encoders(
    ckpt: LoadedCheckpoint,
    out_dir: str | os.PathLike[str],
    ref: str | None = None,
    max_length: int | None = None,
    buckets: Sequence[int] = DEFAULT_TEXT_BUCKETS,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
) -> list[Path]:
    """Export the sentence encoder for every bucket < max_length and for max_length itself.

    input_ids, attention_mask, pool_mask (1, L) int64 -> embedding (1, Dt); with `dynamic_batch`,
    (B, L) -> (B, Dt) for any B (the sidecar's shapes then say -1). `ref`, `max_length` and the L2
    normalisation default to the checkpoint's text feature spec (weights_id, preprocessing),
    else the bundled MiniLM with L = 128.
    """
    from emostream.model.features.text import DEFAULT_TEXT_REF, load_text_module

    spec = modality_spec(ckpt, "text")
    pre = spec.get("preprocessing") or {}
    if ref is None and spec.get("weights_id"):
        from emostream.model.features.weights import ref_for_weights_id

        ref = ref_for_weights_id(spec["weights_id"]) or spec["weights_id"]  # e.g. the bundled fine-tuned patch
    ref = ref or DEFAULT_TEXT_REF
    max_length = int(max_length or pre.get("max_length") or TEXT_MAX_LENGTH)
    normalize = bool(pre.get("normalize", True))
    lengths = sorted({int(b) for b in buckets if 0 < int(b) < max_length} | {max_length})
    module, tokenizer = load_text_module(ref, normalize=normalize)
    module = module.eval().cpu()
    out = Path(out_dir)
    tokenizer.save_pretrained(str(out / TOKENIZER_DIR))  # the export folder is self-contained
    paths = []
    for length in lengths:
        path = out / text_encoder_filename(length, max_length)
        enc = tokenizer(["hello there"], padding="max_length", truncation=True, max_length=length,
                        return_tensors="pt")
        ids = enc["input_ids"].to(torch.int64)  # (1, L)
        mask = enc["attention_mask"].to(torch.int64)  # (1, L)
        pool = mask.clone()  # (1, L)
        with torch.no_grad():
            dim = int(module(ids, mask, pool).shape[-1])
        batch = -1 if dynamic_batch else 1
        inputs = [TensorSpec(n, (batch, length), "int64") for n in TEXT_INPUTS]
        outputs = [TensorSpec(TEXT_OUTPUT, (batch, dim), "float32")]
        torch_export(module, (ids, mask, pool), path, TEXT_INPUTS, [TEXT_OUTPUT], opset, dynamic_batch=dynamic_batch)
        check_graph_io(path, inputs, outputs)
        side = base_sidecar(ckpt, "text_encoder", path, opset, inputs, outputs)
        side.update({
            "ref": str(ref), "length": length, "max_length": max_length, "buckets": lengths,
            "normalize": normalize, "context_turns": int(module.context_turns), "dynamic_batch": dynamic_batch,
            "padding": "right, to `length` tokens; mean pooling over pool_mask * attention_mask",
            "tokenizer": type(tokenizer).__name__, "tokenizer_dir": TOKENIZER_DIR,
            "pad_token_id": int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        })
        write_sidecar(path, side)
        paths.append(path)
        logger.info("exported the text encoder %s to %s (L=%d, %d-d)", ref, path, length, dim)
    if "text" in ckpt.config.modalities and dim != ckpt.config.text_dim:
        logger.warning("the text encoder gives %d-d vectors; the checkpoint expects %d", dim, ckpt.config.text_dim)
    return paths


def export_frame_backbone(
    ckpt: LoadedCheckpoint, path: str | os.PathLike[str], ref: str | None = None, batch: int | None = None,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export the frame backbone: images (N, 3, 224, 224) float32 -> features (N, Dv).

    Images are ImageNet-normalised RGB face crops (NCHW). N defaults to the checkpoint's
    `max_frames`: one utterance's frames in one call (pad with zeros, ignore the extra rows).
    """
    from emostream.model.features.mobilenet_v2 import load_backbone

    path = Path(path)
    ref = ref or modality_spec(ckpt, "visual").get("weights_id") or BACKBONE_REF
    n = int(batch or ckpt.config.max_frames)
    module = load_backbone(ref).eval().cpu()
    images = torch.zeros(n, 3, IMAGE_SIZE, IMAGE_SIZE)  # (N, 3, H, W)
    with torch.no_grad():
        dim = int(module(images).shape[-1])
    inputs = [TensorSpec(BACKBONE_INPUT, (n, 3, IMAGE_SIZE, IMAGE_SIZE), "float32")]
    outputs = [TensorSpec(BACKBONE_OUTPUT, (n, dim), "float32")]
    torch_export(module, (images,), path, [BACKBONE_INPUT], [BACKBONE_OUTPUT], opset)
    check_graph_io(path, inputs, outputs)
    side = base_sidecar(ckpt, "frame_backbone", path, opset, inputs, outputs)
    side.update({"ref": str(ref), "batch": n, "image_size": IMAGE_SIZE,
                 "input_format": "RGB face crops, ImageNet mean/std normalised, NCHW float32"})
    write_sidecar(path, side)
    logger.info("exported the frame backbone %s to %s (batch %d, %d-d)", ref, path, n, dim)
    return path
