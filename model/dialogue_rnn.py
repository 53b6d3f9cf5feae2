"""Unidirectional DialogueRNN: global, party and emotion GRUs with a fixed-size memory ring.

The cell is written once and used both by the whole-dialogue forward (a loop over utterances)
and by the streaming step, so the two agree by construction. All state tensors have static
shapes, so the step exports to ONNX as is.
"""

from __future__ import annotations

import torch
from torch import nn


class DialogueRNNCell(nn.Module):
    """One utterance of DialogueRNN for a batch of dialogues.

    State (all per dialogue):
      party:     (B, P, Dp)  one state per speaker slot
      ring:      (B, M, Dg)  the last M global states, oldest first
      ring_mask: (B, M)      1.0 where the ring holds a real state
      emotion:   (B, De)     the emotion GRU's state
    """

    def __init__(
        self,
        input_dim: int,
        global_dim: int,
        party_dim: int,
        emotion_dim: int,
        listener_update: bool,
        dropout: float,
    ) -> None:
        super().__init__()
        self.global_cell = nn.GRUCell(input_dim + party_dim, global_dim)
        self.party_cell = nn.GRUCell(input_dim + global_dim, party_dim)
        self.listener_cell = nn.GRUCell(input_dim + global_dim, party_dim) if listener_update else None
        self.emotion_cell = nn.GRUCell(party_dim, emotion_dim)
        self.attn = nn.Linear(global_dim, input_dim, bias=False)  # score_j = u_t^T W g_j
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        u: torch.Tensor,
        speaker: torch.Tensor,
        party: torch.Tensor,
        ring: torch.Tensor,
        ring_mask: torch.Tensor,
        emotion: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the new (party, ring, ring_mask, emotion); `emotion` is also the cell's output."""
        # u: (B, D), speaker: (B,) int64 in [0, P)
        n_parties = party.shape[1]
        is_speaker = nn.functional.one_hot(speaker, n_parties).to(torch.bool).unsqueeze(-1)  # (B, P, 1)
        q_speaker = (party * is_speaker.to(party.dtype)).sum(1)  # (B, Dp)
        g_prev = ring[:, -1]  # (B, Dg), zeros before the first utterance
        g = self.global_cell(torch.cat([u, q_speaker], dim=-1), g_prev)  # (B, Dg)

        # context: attention over the previous global states g_1..g_{t-1} held in the ring
        scores = torch.einsum("bd,bmd->bm", u, self.attn(ring))  # (B, M)
        scores = scores.masked_fill(ring_mask <= 0, -1e4)
        alpha = torch.softmax(scores, dim=-1) * ring_mask  # all-zero when the ring is empty
        context = torch.einsum("bm,bmd->bd", alpha, ring)  # (B, Dg)

        uc = torch.cat([u, context], dim=-1)  # (B, D + Dg)
        q_new = self.party_cell(uc, q_speaker)  # (B, Dp)
        if self.listener_cell is not None:
            b, p, dp = party.shape
            uc_all = uc.unsqueeze(1).expand(b, p, uc.shape[-1]).reshape(b * p, -1)
            listeners = self.listener_cell(uc_all, party.reshape(b * p, dp)).reshape(b, p, dp)
        else:
            listeners = party
        party = torch.where(is_speaker, q_new.unsqueeze(1), listeners)  # (B, P, Dp)
        emotion = self.emotion_cell(self.dropout(q_new), emotion)  # (B, De)

        ring = torch.cat([ring[:, 1:], g.unsqueeze(1)], dim=1)  # (B, M, Dg)
        ring_mask = torch.cat([ring_mask[:, 1:], torch.ones_like(ring_mask[:, :1])], dim=1)  # (B, M)
        return party, ring, ring_mask, emotion


def initial_rnn_state(
    batch: int, n_parties: int, memory: int, global_dim: int, party_dim: int, emotion_dim: int,
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Zero state of one DialogueRNN, keyed as in the streaming state dict."""
    return {
        "party": torch.zeros(batch, n_parties, party_dim, device=device),
        "ring": torch.zeros(batch, memory, global_dim, device=device),
        "ring_mask": torch.zeros(batch, memory, device=device),
        "emotion": torch.zeros(batch, emotion_dim, device=device),
    }
