"""Multimodal Cross-attention Network, causal over the dialogue within a window of W utterances.

Each layer lets every modality's utterance vector query the other modalities' vectors of the
same and the previous W-1 utterances (keys/values), then residual + LayerNorm + FFN. The
whole-dialogue path builds those windows by shifting the sequences; the streaming path keeps,
per layer, a cache of the last W inputs of every modality. Both feed the same `attend` code, so
they agree.
"""

from __future__ import annotations

import torch
from torch import nn

NEG = -1e4  # finite "minus infinity": safe in fp16 and never produces NaN


def key_modalities(modalities: tuple[str, ...], query: str) -> tuple[str, ...]:
    """The modalities a query modality attends to: the others, or itself when it is alone."""
    others = tuple(m for m in modalities if m != query)
    return others if others else (query,)


def windowed(x: torch.Tensor, mask: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every position i, the vectors at i, i-1, .., i-W+1 (offset order).

    x: (B, N, D), mask: (B, N) -> (B, N, W, D), (B, N, W); positions before the start are masked.
    """
    b, n, d = x.shape
    xs, ms = [], []
    for k in range(window):
        if k == 0:
            xs.append(x)
            ms.append(mask)
        elif k < n:
            xs.append(torch.cat([x.new_zeros(b, k, d), x[:, : n - k]], dim=1))
            ms.append(torch.cat([mask.new_zeros(b, k), mask[:, : n - k]], dim=1))
        else:
            xs.append(x.new_zeros(b, n, d))
            ms.append(mask.new_zeros(b, n))
    return torch.stack(xs, dim=2), torch.stack(ms, dim=2)


class CrossAttention(nn.Module):
    """Multi-head attention of one query per position over its own set of L keys."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # query: (B, N, D), keys: (B, N, L, D), mask: (B, N, L) 1.0 keep -> (B, N, D)
        b, n, d = query.shape
        h, dh = self.heads, d // self.heads
        q = self.q(query).reshape(b, n, h, dh)  # (B, N, H, dh)
        k = self.k(keys).reshape(b, n, -1, h, dh)  # (B, N, L, H, dh)
        v = self.v(keys).reshape(b, n, -1, h, dh)
        scores = torch.einsum("bnhd,bnlhd->bnhl", q, k) / dh**0.5  # (B, N, H, L)
        keep = mask.unsqueeze(2)  # (B, N, 1, L)
        scores = scores.masked_fill(keep <= 0, NEG)
        attn = torch.softmax(scores, dim=-1) * keep  # rows with no key at all become zero
        attn = self.dropout(attn)
        ctx = torch.einsum("bnhl,bnlhd->bnhd", attn, v).reshape(b, n, d)
        return self.out(ctx)


class MCNLayer(nn.Module):
    """One cross-attention layer over all modalities."""

    def __init__(self, modalities: tuple[str, ...], d_model: int, heads: int, window: int,
                 ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.modalities = modalities
        self.window = window
        self.attn = nn.ModuleDict({m: CrossAttention(d_model, heads, dropout) for m in modalities})
        # learned embedding per (key modality, offset), added to the keys
        self.key_pos = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(len(key_modalities(modalities, m)), window, d_model)) for m in modalities}
        )
        self.norm1 = nn.ModuleDict({m: nn.LayerNorm(d_model) for m in modalities})
        self.norm2 = nn.ModuleDict({m: nn.LayerNorm(d_model) for m in modalities})
        self.ffn = nn.ModuleDict(
            {
                m: nn.Sequential(
                    nn.Linear(d_model, ffn_mult * d_model), nn.GELU(), nn.Dropout(dropout),
                    nn.Linear(ffn_mult * d_model, d_model),
                )
                for m in modalities
            }
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: dict[str, torch.Tensor], windows: dict[str, tuple[torch.Tensor, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """x[m]: (B, N, D) queries; windows[m]: keys (B, N, W, D) and mask (B, N, W) in offset order."""
        out = {}
        for m in self.modalities:
            kms = key_modalities(self.modalities, m)
            keys = torch.cat([windows[k][0] + self.key_pos[m][i] for i, k in enumerate(kms)], dim=2)  # (B,N,L,D)
            mask = torch.cat([windows[k][1] for k in kms], dim=2)  # (B, N, L)
            h = self.norm1[m](x[m] + self.dropout(self.attn[m](x[m], keys, mask)))
            out[m] = self.norm2[m](h + self.dropout(self.ffn[m](h)))
        return out


class MCN(nn.Module):
    """T stacked MCN layers with a whole-dialogue path and a streaming path."""

    def __init__(self, modalities: tuple[str, ...], d_model: int, heads: int, layers: int, window: int,
                 ffn_mult: int, dropout: float) -> None:
        super().__init__()
        self.modalities = modalities
        self.window = window
        self.layers = nn.ModuleList(
            MCNLayer(modalities, d_model, heads, window, ffn_mult, dropout) for _ in range(layers)
        )

    def forward(self, x: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Whole dialogues. x[m]: (B, N, D); present[m]: (B, N) 1.0 where the modality exists."""
        for layer in self.layers:
            windows = {m: windowed(x[m], present[m], self.window) for m in self.modalities}
            x = layer(x, windows)
        return x

    def step(
        self, x: dict[str, torch.Tensor], present: dict[str, torch.Tensor], caches: list[torch.Tensor],
        cache_mask: torch.Tensor,
    ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """One utterance. x[m]: (B, D); present[m]: (B,).

        caches[l]: (B, W, n_mod, D) inputs of layer l for the last W utterances, oldest first;
        cache_mask: (B, W, n_mod) their presence. Returns outputs, new caches, new mask.
        """
        new_mask = torch.cat(
            [cache_mask[:, 1:], torch.stack([present[m] for m in self.modalities], dim=-1).unsqueeze(1)], dim=1
        )  # (B, W, n_mod)
        new_caches = []
        for layer, cache in zip(self.layers, caches):
            current = torch.stack([x[m] for m in self.modalities], dim=1).unsqueeze(1)  # (B, 1, n_mod, D)
            cache = torch.cat([cache[:, 1:], current], dim=1)  # (B, W, n_mod, D)
            new_caches.append(cache)
            windows = {}
            for i, m in enumerate(self.modalities):
                keys = cache[:, :, i].flip(1).unsqueeze(1)  # (B, 1, W, D), offset order
                mask = new_mask[:, :, i].flip(1).unsqueeze(1)  # (B, 1, W)
                windows[m] = (keys, mask)
            out = layer({m: x[m].unsqueeze(1) for m in self.modalities}, windows)
            x = {m: out[m].squeeze(1) for m in self.modalities}
        return x, new_caches, new_mask
