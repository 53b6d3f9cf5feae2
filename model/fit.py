"""The training loop of MCN-CL over feature dialogues: seeded, early stopping on dev weighted F1.

No I/O besides the optional JSONL epoch log: datasets, features and checkpoints are the job of
`emostream.model.train`, so this loop is tested on synthetic dialogues.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emostream.model.batch import DialogueFeatures, collate
from emostream.model.config import MODALITIES, ModelConfig
from emostream.model.losses import mcncl_loss
from emostream.model.mcncl import MCNCL
from emostream.model.metrics import classification_report

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    grad_clip: float = 1.0
    patience: int = 6  # epochs without a better dev weighted F1 before stopping
    seed: int = 0
    class_weighting: str = "none"  # none | inverse | sqrt
    warmup_epochs: float = 1.0
    threads: int = 1  # torch threads: the model is small, and one thread is fastest for its many tiny ops
    progress: bool = True


@dataclass
class FitResult:
    model: MCNCL
    best_epoch: int
    best_dev: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(dialogues: Sequence[DialogueFeatures], n_classes: int, scheme: str) -> tuple[float, ...] | None:
    """Per-class loss weights from the training label counts (mean weight 1)."""
    if scheme == "none":
        return None
    counts = np.zeros(n_classes)
    for d in dialogues:
        for y in d.labels:
            if 0 <= y < n_classes:
                counts[y] += 1
    counts = np.maximum(counts, 1)
    if scheme == "inverse":
        w = 1.0 / counts
    elif scheme == "sqrt":
        w = 1.0 / np.sqrt(counts)
    else:
        raise ValueError(f"class_weighting must be none, inverse or sqrt, got {scheme!r}")
    w = w / (w * counts).sum() * counts.sum()
    return tuple(float(x) for x in w)


def normalization_stats(dialogues: Sequence[DialogueFeatures], modalities: Sequence[str]) -> dict[str, dict]:
    """Mean/std per feature dimension over the utterances (frames for visual) where a modality is present."""
    stats = {}
    for m in modalities:
        idx = MODALITIES.index(m)
        rows = []
        for d in dialogues:
            keep = d.present[:, idx].astype(bool)
            if m == "visual":
                frames = d.visual[keep][d.visual_mask[keep].astype(bool)]  # (n_frames, Dv)
                rows.append(frames)
            else:
                rows.append(getattr(d, m)[keep])
        x = np.concatenate(rows, axis=0) if rows else np.zeros((0, 1))
        if len(x) < 2:
            continue
        stats[m] = {"mean": x.mean(0).tolist(), "std": np.maximum(x.std(0), 1e-3).tolist()}
    return stats


def predict(model: MCNCL, dialogues: Sequence[DialogueFeatures], batch_size: int = 32) -> list[np.ndarray]:
    """Per-dialogue probabilities (N, K), in order."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(dialogues), batch_size):
            chunk = dialogues[i : i + batch_size]
            batch = collate(chunk, model.config.n_parties)
            probs = torch.softmax(model(batch).logits, dim=-1)
            out.extend(probs[j, : len(d)].numpy() for j, d in enumerate(chunk))
    return out


def evaluate_dialogues(model: MCNCL, dialogues: Sequence[DialogueFeatures], batch_size: int = 32) -> dict[str, Any]:
    probs = predict(model, dialogues, batch_size)
    y_true, y_pred = [], []
    for d, p in zip(dialogues, probs):
        keep = d.labels >= 0
        y_true.extend(d.labels[keep].tolist())
        y_pred.extend(p.argmax(-1)[keep].tolist())
    return classification_report(y_true, y_pred, model.config.labels)


def fit(
    train: Sequence[DialogueFeatures],
    dev: Sequence[DialogueFeatures],
    model_config: ModelConfig,
    fit_config: FitConfig,
    log_path: str | Path | None = None,
) -> FitResult:
    """Train with AdamW + warmup/cosine; select the epoch with the best dev weighted F1."""
    if not train or not dev:
        raise ValueError("training needs a non-empty train and dev split")
    seed_everything(fit_config.seed)
    if fit_config.threads > 0:
        torch.set_num_threads(fit_config.threads)
    weights = class_weights(train, model_config.num_classes, fit_config.class_weighting)
    model_config = model_config.replace(class_weights=weights)
    model = MCNCL(model_config)
    model.set_normalization(normalization_stats(train, model_config.modalities))
    opt = torch.optim.AdamW(model.parameters(), lr=fit_config.lr, weight_decay=fit_config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / fit_config.batch_size)
    total = steps_per_epoch * fit_config.epochs
    warmup = max(1, int(steps_per_epoch * fit_config.warmup_epochs))

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    rng = np.random.default_rng(fit_config.seed)
    best_f1, best_epoch, best_state, best_dev = -1.0, -1, None, {}
    history: list[dict[str, Any]] = []
    log_file = open(log_path, "w") if log_path else None  # noqa: SIM115 - closed below
    try:
        for epoch in range(1, fit_config.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            order = rng.permutation(len(train))
            sums: dict[str, float] = {}
            batches = range(0, len(order), fit_config.batch_size)
            if fit_config.progress:
                from tqdm import tqdm

                batches = tqdm(batches, desc=f"epoch {epoch}", leave=False, unit="batch")
            for i in batches:
                batch = collate([train[j] for j in order[i : i + fit_config.batch_size]], model_config.n_parties)
                parts = mcncl_loss(model(batch), batch.labels, model_config)
                opt.zero_grad(set_to_none=True)
                parts.total.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), fit_config.grad_clip)
                opt.step()
                sched.step()
                for k, v in parts.as_floats().items():
                    sums[k] = sums.get(k, 0.0) + v
            dev_report = evaluate_dialogues(model, dev)
            record = {
                "epoch": epoch,
                "loss": {k: round(v / steps_per_epoch, 5) for k, v in sums.items()},
                "dev_weighted_f1": dev_report["weighted_f1"],
                "dev_accuracy": dev_report["accuracy"],
                "dev_macro_f1": dev_report["macro_f1"],
                "lr": opt.param_groups[0]["lr"],
                "seconds": round(time.perf_counter() - t0, 2),
            }
            history.append(record)
            if log_file:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            logger.info("epoch %d loss %.4f dev wF1 %.2f acc %.2f (%.1fs)", epoch, record["loss"].get("total", 0),
                        record["dev_weighted_f1"], record["dev_accuracy"], record["seconds"])
            if dev_report["weighted_f1"] > best_f1:
                best_f1, best_epoch, best_dev = dev_report["weighted_f1"], epoch, dev_report
                best_state = copy.deepcopy(model.state_dict())
            elif epoch - best_epoch >= fit_config.patience:
                logger.info("early stop at epoch %d (best %d: %.2f)", epoch, best_epoch, best_f1)
                break
    finally:
        if log_file:
            log_file.close()
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return FitResult(model=model, best_epoch=best_epoch, best_dev=best_dev, history=history)
