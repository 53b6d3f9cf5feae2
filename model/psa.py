"""Pyramid Squeeze Attention over the face frames of one utterance."""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of `x` over `dim` where `mask` is true; zero where nothing is kept.

    x: (..., T, ...) float; mask broadcastable to x, 1.0 keep / 0.0 drop.
    """
    mask = mask.to(x.dtype)
    total = (x * mask).sum(dim)
    count = mask.sum(dim).clamp_min(1.0)
    return total / count


class SEWeight(nn.Module):
    """Squeeze-and-excitation channel weights: masked mean over time -> C -> C/r -> C -> sigmoid."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, C, F), mask: (B, 1, F) -> (B, C) logits (before the cross-branch softmax)
        z = masked_mean(x, mask, dim=2)  # (B, C)
        return self.fc2(torch.relu(self.fc1(z)))


class PyramidSqueezeAttention(nn.Module):
    """Multi-scale temporal convolutions recalibrated by per-branch channel attention.

    Four Conv1d branches (kernels 3, 5, 7, 9 by default) see the frame sequence at several time
    scales; an SEWeight per branch scores every channel; a softmax across branches turns the scores
    into weights, and the output is the weighted sum of the branches, then a masked temporal mean.
    Masked (face-less or padded) frames are zeroed before the convolutions and excluded from every
    mean.
    """

    def __init__(self, channels: int, kernels: tuple[int, ...] = (3, 5, 7, 9), reduction: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, k, padding=k // 2) for k in kernels)
        self.se = nn.ModuleList(SEWeight(channels, reduction) for _ in kernels)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # frames: (B, F, C), mask: (B, F) -> (B, C)
        m = mask.to(frames.dtype).unsqueeze(1)  # (B, 1, F)
        x = frames.transpose(1, 2) * m  # (B, C, F)
        branches = torch.stack([conv(x) * m for conv in self.convs], dim=1)  # (B, S, C, F)
        scores = torch.stack([se(branches[:, i], m) for i, se in enumerate(self.se)], dim=1)  # (B, S, C)
        weights = torch.softmax(torch.sigmoid(scores), dim=1).unsqueeze(-1)  # (B, S, C, 1)
        out = (branches * weights).sum(dim=1)  # (B, C, F)
        return masked_mean(out, m, dim=2)  # (B, C)


class MaskedMeanPool(nn.Module):
    """The `use_psa=False` ablation: a plain masked mean over frames."""

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # frames: (B, F, C), mask: (B, F) -> (B, C)
        return masked_mean(frames, mask.unsqueeze(-1), dim=1)
