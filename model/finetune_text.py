"""Fine-tune the top layers of the text encoder on a dataset's utterances (stage 1 of training).

The encoder (MiniLM by default) gets a linear head over its pooled sentence vector and is trained
with cross-entropy on the train split's utterances; the epoch with the best dev weighted F1 is
kept. Only the top `layers` transformer layers are trained, and only they are stored, as a patch
(`emostream.model.features.text_patch`), so a bundled fine-tuned encoder costs a few MB.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emostream.model.data.records import Dataset
from emostream.model.features.context import ContextInput, dialogue_inputs, encode
from emostream.model.fit import seed_everything
from emostream.model.metrics import classification_report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextFinetuneConfig:
    layers: int = 4  # top transformer layers to train (and store)
    epochs: int = 2
    lr: float = 5e-5
    head_lr: float = 2e-3
    batch_size: int = 32
    max_length: int = 64
    weight_decay: float = 0.01
    seed: int = 0
    context_turns: int = 0  # past turns in the encoder's input (features.context); stored in the patch


def _utterances(dataset: Dataset, turns: int) -> tuple[list[ContextInput], np.ndarray]:
    """The labelled utterances' encoder inputs (each with its own past only) and labels."""
    items, labels = [], []
    for d in dataset.dialogues():
        inputs = dialogue_inputs([u.text for u in d.utterances], [u.speaker for u in d.utterances], turns)
        for u, x in zip(d.utterances, inputs, strict=True):
            y = dataset.label_index(u.label)
            if y >= 0:
                items.append(x)
                labels.append(y)
    return items, np.asarray(labels, dtype=np.int64)


def finetune_text_encoder(train: Dataset, dev: Dataset, base_ref: str, out: str | Path,
                          cfg: TextFinetuneConfig, progress: bool = True) -> dict[str, Any]:
    """Train, select on dev weighted F1, save the patch at `out` (.safetensors). Returns a summary."""
    from emostream.model.features.text import load_text_module, pad_batch
    from emostream.model.features.text_patch import save_patch

    seed_everything(cfg.seed)
    module, tokenizer = load_text_module(base_ref)
    encoder = module.encoder
    base_state = {k: v.clone() for k, v in encoder.state_dict().items()}
    layers = encoder.encoder.layer
    if not 0 < cfg.layers <= len(layers):
        raise ValueError(f"layers must be in 1..{len(layers)}, got {cfg.layers}")
    for p in encoder.parameters():
        p.requires_grad = False
    trainable = [p for layer in layers[len(layers) - cfg.layers :] for p in layer.parameters()]
    for p in trainable:
        p.requires_grad = True
    n_classes = len(train.labels)
    head = nn.Sequential(nn.Dropout(0.1), nn.Linear(module.dim, n_classes))
    opt = torch.optim.AdamW([{"params": trainable, "lr": cfg.lr}, {"params": head.parameters(), "lr": cfg.head_lr}],
                            weight_decay=cfg.weight_decay)
    enc_train, y_train = _utterances(train, cfg.context_turns)
    enc_dev, y_dev = _utterances(dev, cfg.context_turns)
    x_train = [encode(tokenizer, x, cfg.max_length) for x in enc_train]  # (ids, pool mask) each
    x_dev = [encode(tokenizer, x, cfg.max_length) for x in enc_dev]
    lengths = np.array([len(ids) for ids, _ in x_train])
    steps = cfg.epochs * math.ceil(len(x_train) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[cfg.lr, cfg.head_lr], total_steps=steps, pct_start=0.1)

    pad_id = tokenizer.pad_token_id or 0

    def embed(encoded: list[tuple[list[int], list[int]]]) -> torch.Tensor:
        batch = pad_batch(encoded, pad_id)
        pooled = module(batch["input_ids"], batch["attention_mask"], batch["pool_mask"])
        return pooled * math.sqrt(module.dim)  # (B, D), unit norm * sqrt(D)

    dev_order = np.argsort([len(ids) for ids, _ in x_dev], kind="stable")

    def dev_report() -> dict[str, Any]:
        module.eval()
        head.eval()
        preds = np.zeros(len(x_dev), dtype=np.int64)
        with torch.inference_mode():
            for i in range(0, len(x_dev), 64):
                idx = dev_order[i : i + 64]
                preds[idx] = head(embed([x_dev[j] for j in idx])).argmax(-1).numpy()
        return classification_report(y_dev, preds, train.labels)

    rng = np.random.default_rng(cfg.seed)
    best: dict[str, Any] = {"weighted_f1": -1.0}
    best_state: dict[str, torch.Tensor] | None = None
    history = []
    for epoch in range(1, cfg.epochs + 1):
        t0 = time.perf_counter()
        module.train()
        head.train()
        # length-bucketed batches (little padding), in a random order, sentences jittered within buckets
        jitter = lengths + rng.uniform(0, 3, len(lengths))
        order = np.argsort(jitter, kind="stable")
        batch_starts = rng.permutation(np.arange(0, len(order), cfg.batch_size))
        batches = batch_starts
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"text encoder epoch {epoch}", leave=False, unit="batch")
        total = 0.0
        for i in batches:
            idx = order[i : i + cfg.batch_size]
            logits = head(embed([x_train[j] for j in idx]))
            loss = nn.functional.cross_entropy(logits, torch.as_tensor(y_train[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        report = dev_report()
        history.append({"epoch": epoch, "loss": round(total / len(x_train), 4), "dev_weighted_f1": report["weighted_f1"],
                        "seconds": round(time.perf_counter() - t0, 1)})
        logger.info("text encoder epoch %d: %s", epoch, history[-1])
        if report["weighted_f1"] > best["weighted_f1"]:
            best = report
            best_state = copy.deepcopy(encoder.state_dict())
    assert best_state is not None
    encoder.load_state_dict(best_state)
    path = save_patch(encoder, base_state, base_ref, out, context_turns=cfg.context_turns)
    return {"patch": str(path), "dev_weighted_f1": best["weighted_f1"], "history": history,
            "context_turns": cfg.context_turns, "max_length": cfg.max_length}
