"""`BucketedTextEncoder`: sentences -> vectors through the exported text encoders (any backend).

The export holds one static-shape graph per token length (see `emostream.export.encoders`);
each sentence is tokenised (truncated at max_length) and padded to the smallest bucket that
holds it, so short utterances cost a short sequence while every engine keeps static shapes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from emostream.export.engines.base import Engine, EngineError
from emostream.export.sidecar import SidecarError
from emostream.model.features.context import ContextInput, as_input, encode

logger = logging.getLogger(__name__)

SUFFIX = {"onnx": ".onnx", "tensorrt": ".engine"}


def load_tokenizer(folder: str | os.PathLike[str], sidecar: dict[str, Any]) -> Any:
    """The tokenizer saved in the export folder (`tokenizer_dir`), else the one of the text
    encoder reference (with a fine-tuned patch, its base model's)."""
    from transformers import AutoTokenizer

    saved = Path(folder) / str(sidecar.get("tokenizer_dir") or "tokenizer")
    if saved.is_dir():
        return AutoTokenizer.from_pretrained(str(saved), local_files_only=True)
    from emostream.model.features.text import load_text_module

    logger.info("no tokenizer in %s: loading the one of %s", folder, sidecar.get("ref"))
    return load_text_module(str(sidecar["ref"]))[1]


def text_encoder_files(kind: str, folder: str | os.PathLike[str]) -> list[Path]:
    """`text_encoder.onnx` and its `text_encoder.L<n>.onnx` buckets (or `.engine`) in a folder."""
    return sorted(Path(folder).glob(f"text_encoder*{SUFFIX[kind]}"))


class BucketedTextEncoder:
    """Encodes sentences with the smallest static-length engine that holds each one."""

    def __init__(self, engines: Sequence[Engine], tokenizer: Any) -> None:
        if not engines:
            raise EngineError("BucketedTextEncoder needs at least one text_encoder engine")
        sides = [e.sidecar or {} for e in engines]
        if any(s.get("kind") != "text_encoder" for s in sides):
            raise SidecarError("every BucketedTextEncoder engine must be a text_encoder export with its sidecar")
        keys = ("ref", "max_length", "normalize", "context_turns", "feature_spec", "checkpoint_sha256")
        if any(any(s.get(k) != sides[0].get(k) for k in keys) for s in sides[1:]):
            raise SidecarError("the text encoder buckets come from different exports (ref/max_length/spec differ)")
        order = sorted(range(len(engines)), key=lambda i: int(sides[i]["length"]))
        self.engines = [engines[i] for i in order]
        self.lengths = [int(sides[i]["length"]) for i in order]
        self.sidecar = sides[order[-1]]
        self.max_length = int(self.sidecar["max_length"])
        if self.lengths[-1] < self.max_length:
            raise SidecarError(f"no text encoder bucket holds max_length={self.max_length} tokens")
        self.tokenizer = tokenizer
        self.pad_id = int(self.sidecar.get("pad_token_id", 0))
        self.context_turns = int(self.sidecar.get("context_turns", 0))
        self.pooled = ["pool_mask" in e.input_names for e in self.engines]  # exports before context lack it
        self.batched = [e.input_specs["input_ids"].shape[0] < 0 for e in self.engines]  # a free batch dimension
        if self.context_turns and not all(self.pooled):
            raise SidecarError("a context text encoder needs engines with a pool_mask input: re-export it")
        self.dim = int(self.sidecar["outputs"][0]["shape"][-1])
        self._output = self.sidecar["outputs"][0]["name"]

    @classmethod
    def load(cls, kind: str, folder: str | os.PathLike[str], tokenizer: Any = None,
             lengths: Sequence[int] | None = None, **options: Any) -> BucketedTextEncoder:
        """lengths: load only these buckets (and always the full-length one): each graph holds
        its own copy of the weights (~95 MB for MiniLM on ONNX Runtime)."""
        from emostream.export.engines import load_engine

        files = text_encoder_files(kind, folder)
        if not files:
            raise EngineError(f"no text encoder {SUFFIX[kind]} files in {folder}")
        if lengths is not None:
            keep = {f"text_encoder.L{int(n)}{SUFFIX[kind]}" for n in lengths} | {f"text_encoder{SUFFIX[kind]}"}
            files = [f for f in files if f.name in keep]
        engines = [load_engine(kind, f, part="text_encoder", **options) for f in files]
        return cls(engines, tokenizer if tokenizer is not None else load_tokenizer(folder, engines[0].sidecar or {}))

    def bucket(self, n_tokens: int) -> int:
        """Index of the smallest bucket holding `n_tokens` tokens."""
        for i, length in enumerate(self.lengths):
            if n_tokens <= length:
                return i
        return len(self.lengths) - 1

    def feeds(self, text: str | ContextInput) -> tuple[int, dict[str, np.ndarray]]:
        """(bucket index, {"input_ids", "attention_mask", "pool_mask"}: (1, L) int64) for one input."""
        ids, pool = encode(self.tokenizer, as_input(text), self.max_length)
        i = self.bucket(len(ids))
        pad = self.lengths[i] - len(ids)
        mask = [1] * len(ids)
        if getattr(self.tokenizer, "padding_side", "right") == "left":
            ids, mask, pool = [self.pad_id] * pad + ids, [0] * pad + mask, [0] * pad + pool
        else:
            ids, mask, pool = ids + [self.pad_id] * pad, mask + [0] * pad, pool + [0] * pad
        feeds = {"input_ids": np.asarray([ids], np.int64), "attention_mask": np.asarray([mask], np.int64)}
        if self.pooled[i]:
            feeds["pool_mask"] = np.asarray([pool], np.int64)
        return i, feeds

    def encode(self, texts: Sequence[str | ContextInput]) -> np.ndarray:
        """texts (or context inputs) -> (n, D) float32. Engines exported with a free batch dimension
        take every input of one bucket in one call; static ones (batch 1), one call each."""
        if isinstance(texts, str):
            raise TypeError("encode expects a list of strings, got a single str")
        out = np.zeros((len(texts), self.dim), np.float32)
        rows_of: dict[int, list[tuple[int, dict[str, np.ndarray]]]] = {}  # bucket -> [(row, feeds (1, L))]
        for row, text in enumerate(texts):
            i, feeds = self.feeds(text)
            rows_of.setdefault(i, []).append((row, feeds))
        for i, items in rows_of.items():
            if self.batched[i]:
                names = items[0][1]
                feeds = {n: np.concatenate([f[n] for _, f in items]) for n in names}  # (b, L) each
                out[[row for row, _ in items]] = self.engines[i].infer(feeds)[self._output]  # (b, D)
            else:
                for row, one in items:
                    out[row] = self.engines[i].infer(one)[self._output][0]
        return out

    def close(self) -> None:
        for e in self.engines:
            e.close()

    def __enter__(self) -> BucketedTextEncoder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class EngineTextFeaturizer:
    """The text featurizer interface (`texts -> (n, D)`, `spec`, `dim`) over exported text
    encoders: what the live session uses on ONNX Runtime (or TensorRT) instead of eager PyTorch.

    Its spec is the one `TextFeaturizer` gives for the same reference, length and normalisation,
    so the checkpoint's feature-spec check applies unchanged.
    """

    def __init__(self, encoder: BucketedTextEncoder) -> None:
        from emostream.model.features.spec import text_spec
        from emostream.model.features.weights import weights_id

        side = encoder.sidecar
        self.encoder = encoder
        self.context_turns = encoder.context_turns
        self.spec = text_spec(weights_id=weights_id(str(side["ref"])), dim=encoder.dim,
                              max_length=int(side["max_length"]), normalize=bool(side.get("normalize", True)),
                              context_turns=self.context_turns)

    @property
    def dim(self) -> int:
        return self.encoder.dim

    def __call__(self, texts: list[str | ContextInput]) -> np.ndarray:
        """texts (or context inputs) -> (n, D) float32, one engine call each (its smallest bucket)."""
        return self.encoder.encode(texts)

    def close(self) -> None:
        self.encoder.close()
