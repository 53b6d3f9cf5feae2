"""Supervised contrastive loss with hard negative mining vs a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from emostream.model.losses import supcon_hard_negatives


def reference(features: np.ndarray, labels: list[int], temperature: float, ratio: float | None) -> float:
    """Per-anchor python loops: positives, hardest ceil(ratio*|N|) negatives by cosine, mean over anchors."""
    z = [f / np.linalg.norm(f) for f in features]
    n = len(labels)
    losses = []
    for i in range(n):
        positives = [j for j in range(n) if j != i and labels[j] == labels[i]]
        negatives = [j for j in range(n) if labels[j] != labels[i]]
        if not positives or not negatives:
            continue
        cos = {j: float(np.dot(z[i], z[j])) for j in range(n)}
        if ratio is not None:
            count = math.ceil(len(negatives) * ratio)
            negatives = sorted(negatives, key=lambda j: -cos[j])[:count]
        denom = sum(math.exp(cos[j] / temperature) for j in positives + negatives)
        terms = [cos[p] / temperature - math.log(denom) for p in positives]
        losses.append(-sum(terms) / len(terms))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ratio", [0.3, 0.5, 1.0, None])
def test_matches_brute_force(seed: int, ratio: float | None) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 40))
    feats = rng.normal(size=(n, 16))
    labels = rng.integers(0, int(rng.integers(2, 6)), n).tolist()
    got = supcon_hard_negatives(torch.tensor(feats, dtype=torch.float64), torch.tensor(labels), 0.2, ratio)
    assert float(got) == pytest.approx(reference(feats, labels, 0.2, ratio), rel=1e-9, abs=1e-9)


def test_hard_negatives_change_the_loss() -> None:
    rng = np.random.default_rng(0)
    feats = torch.tensor(rng.normal(size=(30, 8)))
    labels = torch.tensor(rng.integers(0, 3, 30))
    assert float(supcon_hard_negatives(feats, labels, 0.1, 0.3)) != pytest.approx(
        float(supcon_hard_negatives(feats, labels, 0.1, None))
    )


def test_one_class_batch_is_zero() -> None:
    feats = torch.randn(10, 4, requires_grad=True)
    loss = supcon_hard_negatives(feats, torch.zeros(10, dtype=torch.long))
    assert float(loss) == 0.0
    loss.backward()  # still differentiable
    assert feats.grad is not None


def test_anchor_without_positive_is_skipped() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(7, 5))
    labels = [0, 0, 1, 1, 1, 2, 3]  # classes 2 and 3 are singletons: no positive
    got = float(supcon_hard_negatives(torch.tensor(feats), torch.tensor(labels), 0.1, 0.3))
    assert got == pytest.approx(reference(feats, labels, 0.1, 0.3), rel=1e-9)
    only_singletons = float(supcon_hard_negatives(torch.tensor(feats[:3]), torch.tensor([0, 1, 2]), 0.1, 0.3))
    assert only_singletons == 0.0


def test_empty_and_single_inputs() -> None:
    assert float(supcon_hard_negatives(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))) == 0.0
    assert float(supcon_hard_negatives(torch.randn(1, 4), torch.zeros(1, dtype=torch.long))) == 0.0


def test_gradient_pulls_positives_together() -> None:
    torch.manual_seed(0)
    feats = torch.randn(12, 6, requires_grad=True)
    labels = torch.tensor([0, 1, 2] * 4)
    opt = torch.optim.SGD([feats], lr=0.5)
    first = float(supcon_hard_negatives(feats, labels, 0.5, 0.3))
    for _ in range(50):
        opt.zero_grad()
        loss = supcon_hard_negatives(feats, labels, 0.5, 0.3)
        loss.backward()
        opt.step()
    assert float(loss) < first * 0.7
