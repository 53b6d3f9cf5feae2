"""Text features: a Hugging Face encoder, mean-pooled over real tokens and L2-normalised.

Bundled options: all-MiniLM-L6-v2 (384-d, the default) and all-mpnet-base-v2 (768-d, 110M
parameters; ~5x slower per utterance). Both are sentence-transformers models whose modules.json is
Transformer -> mean Pooling -> Normalize, which is exactly what `TextEncoderModule` computes.

`TextEncoderModule` is the exportable part (token ids + mask in, pooled vector out, no Python
control flow on data); `TextFeaturizer` adds the tokenizer, batching and numpy in/out. Any local
HF encoder folder (e.g. a RoBERTa-base download) or cached hub name works as `ref`; nothing is
ever downloaded.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from emostream.model.features.context import ContextInput, as_input, encode
from emostream.model.features.spec import SpecCarrier, text_spec

logger = logging.getLogger(__name__)

DEFAULT_TEXT_REF = "all-MiniLM-L6-v2"
MAX_LENGTH = 128


class TextEncoderModule(nn.Module):
    """(input_ids (B, L), attention_mask (B, L)[, pool_mask (B, L)], int64) -> (B, D) mean-pooled
    embedding over the pool mask's tokens (default: every real token). A context input pools the
    current utterance only (`emostream.model.features.context`)."""

    def __init__(self, encoder: nn.Module, normalize: bool = True, context_turns: int = 0) -> None:
        super().__init__()
        self.encoder = encoder
        self.normalize = normalize  # L2-normalise, as sentence-transformers does (MiniLM, mpnet)
        self.context_turns = context_turns  # past turns in the input this encoder was tuned for

    @property
    def dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                pool_mask: torch.Tensor | None = None) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state  # (B, L, D)
        pool = attention_mask if pool_mask is None else pool_mask * attention_mask  # (B, L)
        mask = pool.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
        summed = (hidden * mask).sum(dim=1)  # (B, D)
        count = mask.sum(dim=1).clamp(min=1e-9)  # (B, 1)
        pooled = summed / count  # (B, D)
        if self.normalize:  # a static flag, not data-dependent
            pooled = F.normalize(pooled, p=2.0, dim=-1)
        return pooled


def load_text_module(
    ref: str | os.PathLike[str] = DEFAULT_TEXT_REF, normalize: bool = True, **model_kwargs: Any
) -> tuple[TextEncoderModule, Any]:
    """(TextEncoderModule in eval mode, its tokenizer), loaded from local files only."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar on every load

    from emostream.model.features.text_patch import apply_patch, is_patch, read_patch_sidecar
    from emostream.model.features.weights import resolve

    path = resolve(ref)
    patch = path if is_patch(path) else None
    context_turns = 0
    if patch is not None:  # a fine-tuned encoder stored as the tensors it changed
        side = read_patch_sidecar(patch)
        path, context_turns = resolve(side["base"]), int(side.get("context_turns", 0))
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(path), local_files_only=True, **model_kwargs)
    if patch is not None:
        apply_patch(encoder, patch)
    logger.debug("loaded text encoder %s from %s", ref, path)
    return TextEncoderModule(encoder, normalize=normalize, context_turns=context_turns).eval(), tokenizer


def pad_batch(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(ids, pool mask) pairs -> {"input_ids", "attention_mask", "pool_mask"}: (B, L) int64, padded right."""
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.int64)  # (B, L)
    attention = torch.zeros((len(encoded), width), dtype=torch.int64)  # (B, L)
    pool = torch.zeros((len(encoded), width), dtype=torch.int64)  # (B, L)
    for row, (seq, pool_row) in enumerate(encoded):
        ids[row, : len(seq)] = torch.as_tensor(seq)
        attention[row, : len(seq)] = 1
        pool[row, : len(seq)] = torch.as_tensor(pool_row)
    return {"input_ids": ids, "attention_mask": attention, "pool_mask": pool}


class TextFeaturizer(SpecCarrier):
    """texts (or `ContextInput`s) -> (n, D) float32 sentence vectors. An empty string is allowed.

    `context_turns` is the number of past turns the encoder was tuned for (read from a fine-tuned
    patch): callers build the inputs with `context.ContextWindow(featurizer.context_turns)`.
    """

    def __init__(
        self,
        ref: str | os.PathLike[str] = DEFAULT_TEXT_REF,
        *,
        max_length: int = MAX_LENGTH,
        batch_size: int = 32,
        normalize: bool = True,
        device: str | torch.device = "cpu",
        weights_id: str | None = None,
    ) -> None:
        from emostream.model.features.weights import weights_id as default_weights_id

        self.module, self.tokenizer = load_text_module(ref, normalize=normalize)
        self.device = torch.device(device)
        self.module.to(self.device)
        self.max_length = max_length
        self.batch_size = batch_size
        self.context_turns = self.module.context_turns
        self._spec = text_spec(
            weights_id=weights_id or default_weights_id(ref),
            dim=self.module.dim,
            max_length=max_length,
            normalize=normalize,
            context_turns=self.context_turns,
        )

    def tokenize(self, items: list[str | ContextInput]) -> dict[str, torch.Tensor]:
        """-> {"input_ids", "attention_mask", "pool_mask"}: (B, L) int64, padded to the longest."""
        encoded = [encode(self.tokenizer, as_input(x), self.max_length) for x in items]
        return {k: v.to(self.device) for k, v in pad_batch(encoded, self.tokenizer.pad_token_id or 0).items()}

    def __call__(self, texts: list[str | ContextInput]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("TextFeaturizer expects a list of strings, got a single str")
        items = [as_input(t) for t in texts]
        out = np.zeros((len(items), self.dim), dtype=np.float32)  # (n, D)
        if not items:
            return out
        size = [len(x.current) + sum(len(p) for p in x.past) for x in items]
        order = sorted(range(len(items)), key=size.__getitem__)  # similar lengths -> less padding
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                feeds = self.tokenize([items[i] for i in idx])
                vecs = self.module(feeds["input_ids"], feeds["attention_mask"], feeds["pool_mask"])  # (b, D)
                out[idx] = vecs.float().cpu().numpy()
        return out
