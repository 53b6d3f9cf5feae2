"""Every branch is wired: when only one modality carries the label, the model learns it from that
modality and falls to chance when that modality is masked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emostream.model.batch import DialogueFeatures, collate
from emostream.model.losses import mcncl_loss
from emostream.model.mcncl import MCNCL
from tests.model_helpers import small_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_CLASSES = 4


def synthetic(rng: np.random.Generator, carrier: str, n_dialogues: int, cfg, prototypes) -> list[DialogueFeatures]:
    out = []
    for _ in range(n_dialogues):
        n = int(rng.integers(6, 12))
        y = rng.integers(0, N_CLASSES, n)
        text = rng.normal(size=(n, cfg.text_dim))
        audio = rng.normal(size=(n, cfg.audio_dim))
        visual = rng.normal(size=(n, cfg.max_frames, cfg.visual_dim))
        vmask = rng.random((n, cfg.max_frames)) > 0.2
        vmask[:, 0] = True
        if carrier == "text":
            text += 2.0 * prototypes["text"][y]
        elif carrier == "audio":
            audio += 2.0 * prototypes["audio"][y]
        else:
            visual += 2.0 * prototypes["visual"][y][:, None, :]
        out.append(DialogueFeatures(text, audio, visual, vmask, np.ones((n, 3), bool), rng.integers(0, 3, n), y))
    return out


def accuracy(model: MCNCL, dialogues: list[DialogueFeatures], mask_index: int | None) -> float:
    batch = collate(dialogues)
    if mask_index is not None:
        batch.present[..., mask_index] = 0
    with torch.no_grad():
        pred = model(batch).logits.argmax(-1)
    return float((pred[batch.mask] == batch.labels[batch.mask]).float().mean())


@pytest.mark.parametrize("carrier", ["text", "audio", "visual"])
def test_single_informative_modality(carrier: str) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng({"text": 0, "audio": 1, "visual": 2}[carrier])
    cfg = small_config(labels=tuple("abcd"), mcn_layers=1, alpha=0.3, beta=0.3, gamma=0.3)
    prototypes = {
        "text": rng.normal(size=(N_CLASSES, cfg.text_dim)),
        "audio": rng.normal(size=(N_CLASSES, cfg.audio_dim)),
        "visual": rng.normal(size=(N_CLASSES, cfg.visual_dim)),
    }
    train = synthetic(rng, carrier, 96, cfg, prototypes)
    test = synthetic(rng, carrier, 32, cfg, prototypes)
    model = MCNCL(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _epoch in range(12):
        model.train()
        order = rng.permutation(len(train))
        for i in range(0, len(order), 16):
            batch = collate([train[j] for j in order[i : i + 16]])
            loss = mcncl_loss(model(batch), batch.labels, cfg).total
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    index = ("text", "audio", "visual").index(carrier)
    with_it = accuracy(model, test, None)
    without_it = accuracy(model, test, index)
    assert with_it >= 0.90, f"{carrier}: accuracy {with_it:.3f} with the informative modality"
    assert without_it <= 0.45, f"{carrier}: accuracy {without_it:.3f} with it masked should be near chance (0.25)"
