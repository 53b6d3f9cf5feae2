"""CE on the fused head + per-modality CE + supervised contrastive loss with hard negative mining."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from emostream.model.config import MODALITIES, ModelConfig
from emostream.model.mcncl import MCNCLOutput


def supcon_hard_negatives(
    features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1, hard_ratio: float | None = 0.3
) -> torch.Tensor:
    """Supervised contrastive loss where each anchor keeps only its hardest negatives.

    features: (n, D) (L2-normalised here); labels: (n,) int.
    For anchor i: P(i) = other samples with its label, N(i) = samples with another label,
    H(i) = the ceil(hard_ratio * |N(i)|) negatives most similar to i (all of N(i) when
    hard_ratio is None), s = cosine similarity / temperature, and
        l_i = -1/|P(i)| * sum_{p in P(i)} [ s_ip - log( sum_{a in P(i)} e^{s_ia} + sum_{h in H(i)} e^{s_ih} ) ].
    Anchors with no positive or no negative carry no contrastive signal and are skipped; the loss
    is the mean over the remaining anchors, and 0 when none remain (e.g. a batch of one class).
    """
    n = features.shape[0]
    if n < 2:
        return features.sum() * 0.0
    z = nn.functional.normalize(features, dim=-1)
    sim = z @ z.T / temperature  # (n, n)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)  # (n, n)
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    pos = same & ~eye
    neg = ~same
    n_neg = neg.sum(1)  # (n,)
    if hard_ratio is None:
        keep_neg = neg
    else:
        k = torch.ceil(n_neg.to(torch.float32) * hard_ratio).to(torch.long)  # (n,)
        neg_sim = sim.detach().masked_fill(~neg, -math.inf)
        order = neg_sim.argsort(dim=1, descending=True)  # (n, n) hardest first
        rank = order.argsort(dim=1)  # rank of every column in its row
        keep_neg = neg & (rank < k.unsqueeze(1))
    denom_mask = pos | keep_neg
    log_denom = torch.logsumexp(sim.masked_fill(~denom_mask, -math.inf), dim=1)  # (n,)
    valid = (pos.sum(1) > 0) & (n_neg > 0)
    if not bool(valid.any()):
        return features.sum() * 0.0
    log_prob = sim - log_denom.unsqueeze(1)  # (n, n)
    pos_f = pos.to(sim.dtype)
    per_anchor = -(log_prob.masked_fill(~pos, 0.0) * pos_f).sum(1) / pos_f.sum(1).clamp_min(1.0)
    return per_anchor[valid].mean()


@dataclass
class LossParts:
    total: torch.Tensor
    fused_ce: torch.Tensor
    modality_ce: dict[str, torch.Tensor]
    contrastive: torch.Tensor

    def as_floats(self) -> dict[str, float]:
        out = {k: float(v.detach()) for k, v in (("total", self.total), ("fused_ce", self.fused_ce), ("contrastive", self.contrastive))}
        out.update({f"ce_{m}": float(v.detach()) for m, v in self.modality_ce.items()})
        return out


def mcncl_loss(output: MCNCLOutput, labels: torch.Tensor, config: ModelConfig) -> LossParts:
    """labels: (B, N) with -100 on padding/unknown. Modality CE only where that modality is present."""
    weight = None
    if config.class_weights is not None:
        weight = torch.as_tensor(config.class_weights, dtype=output.logits.dtype, device=output.logits.device)
    flat_labels = labels.reshape(-1)
    k = config.num_classes
    fused_ce = nn.functional.cross_entropy(output.logits.reshape(-1, k), flat_labels, weight=weight, ignore_index=-100)
    zero = output.logits.sum() * 0.0
    coef = {"text": config.alpha, "audio": config.beta, "visual": config.gamma}
    total = fused_ce
    modality_ce: dict[str, torch.Tensor] = {}
    for m, logits in output.aux_logits.items():
        present = output.present[..., MODALITIES.index(m)].reshape(-1) > 0
        masked = torch.where(present, flat_labels, torch.full_like(flat_labels, -100))
        if bool((masked != -100).any()):
            ce = nn.functional.cross_entropy(logits.reshape(-1, k), masked, weight=weight, ignore_index=-100)
        else:
            ce = zero
        modality_ce[m] = ce
        total = total + coef[m] * ce
    contrastive = zero
    if config.use_contrastive and config.contrastive_weight > 0:
        valid = flat_labels != -100
        contrastive = supcon_hard_negatives(
            output.fused.reshape(-1, output.fused.shape[-1])[valid],
            flat_labels[valid],
            temperature=config.temperature,
            hard_ratio=config.hard_negative_ratio if config.hard_negatives else None,
        )
        total = total + config.contrastive_weight * contrastive
    return LossParts(total=total, fused_ce=fused_ce, modality_ce=modality_ce, contrastive=contrastive)
