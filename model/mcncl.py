"""MCN-CL, causal: unimodal encoders -> one DialogueRNN per modality -> MCN -> fused head.

`forward(batch)` runs whole padded dialogues for training; `step(inputs, state)` runs one
utterance per dialogue for streaming and returns the new state. Both share every module, and a
test holds that stepping through a dialogue reproduces `forward`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emostream.model.batch import DialogueBatch
from emostream.model.config import MODALITIES, ModelConfig
from emostream.model.dialogue_rnn import DialogueRNNCell, initial_rnn_state
from emostream.model.mcn import MCN
from emostream.model.psa import MaskedMeanPool, PyramidSqueezeAttention

StepInputs = dict[str, torch.Tensor]
"""text (B, Dt), audio (B, Da), visual (B, F, Dv), visual_mask (B, F), present (B, 3), speaker (B,) int64."""
State = dict[str, torch.Tensor]
"""Named recurrent state tensors with static shapes (see `MCNCL.state_shapes`)."""


@dataclass
class MCNCLOutput:
    logits: torch.Tensor  # (B, N, K)
    aux_logits: dict[str, torch.Tensor]  # modality -> (B, N, K)
    fused: torch.Tensor  # (B, N, D) the fused vector fed to the contrastive loss
    present: torch.Tensor  # (B, N, 3) the presence actually used (after modality dropout)


class VectorEncoder(nn.Module):
    """Normalise -> Linear -> LayerNorm -> GELU -> dropout, for utterance-level vectors."""

    def __init__(self, in_dim: int, d_model: int, dropout: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim), persistent=False)
        self.register_buffer("std", torch.ones(in_dim), persistent=False)
        self.net = nn.Sequential(nn.Linear(in_dim, d_model), nn.LayerNorm(d_model), nn.GELU(), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (..., in_dim) -> (..., D)
        return self.net((x - self.mean) / self.std)


class VisualEncoder(nn.Module):
    """Per-frame normalise -> Linear to C, then PSA (or a masked mean) over the frames."""

    def __init__(self, in_dim: int, d_model: int, cfg: ModelConfig) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(in_dim), persistent=False)
        self.register_buffer("std", torch.ones(in_dim), persistent=False)
        self.proj = nn.Sequential(nn.Linear(in_dim, d_model), nn.LayerNorm(d_model), nn.GELU())
        self.pool = PyramidSqueezeAttention(d_model, cfg.psa_kernels, cfg.psa_reduction) if cfg.use_psa else MaskedMeanPool()
        self.out = nn.Sequential(nn.LayerNorm(d_model), nn.Dropout(cfg.dropout))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # frames: (..., F, Dv), mask: (..., F) -> (..., D)
        lead = frames.shape[:-2]
        f, dv = frames.shape[-2:]
        x = self.proj((frames.reshape(-1, f, dv) - self.mean) / self.std)  # (B', F, C)
        pooled = self.pool(x, mask.reshape(-1, f))  # (B', C)
        return self.out(pooled).reshape(*lead, -1)


class MCNCL(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.modalities = cfg.modalities
        d = cfg.d_model
        self.encoders = nn.ModuleDict()
        for m in self.modalities:
            if m == "visual":
                self.encoders[m] = VisualEncoder(cfg.visual_dim, d, cfg)
            else:
                self.encoders[m] = VectorEncoder(cfg.input_dim(m), d, cfg.dropout)
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(d) * 0.02) for m in self.modalities})
        self.rnns = nn.ModuleDict(
            {
                m: DialogueRNNCell(d, cfg.global_dim, cfg.party_dim, cfg.emotion_dim, cfg.listener_update, cfg.dropout)
                for m in (self.modalities if cfg.use_context else ())
            }
        )
        rnn_dim = cfg.emotion_dim if cfg.use_context else d
        self.rnn_out = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(rnn_dim, d), nn.LayerNorm(d)) for m in self.modalities}
        )
        self.mcn = (
            MCN(self.modalities, d, cfg.mcn_heads, cfg.mcn_layers, cfg.mcn_window, cfg.ffn_mult, cfg.dropout)
            if cfg.use_mcn
            else None
        )
        n_mod = len(self.modalities)
        self.fuse = nn.Linear(n_mod * d, d)  # FC over the concatenated fused vectors
        self.head = nn.Sequential(
            nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(d, d), nn.GELU(), nn.Dropout(cfg.dropout),
            nn.Linear(d, cfg.num_classes),
        )  # 2-layer MLP -> logits
        self.aux_heads = nn.ModuleDict({m: nn.Linear(d, cfg.num_classes) for m in self.modalities})

    # ---------------------------------------------------------------- normalisation statistics
    def set_normalization(self, stats: dict[str, dict[str, list[float]]]) -> None:
        """stats[modality] = {"mean": [...], "std": [...]}, for the modalities of this model."""
        for m, s in stats.items():
            if m not in self.encoders:
                continue
            enc = self.encoders[m]
            mean = torch.as_tensor(s["mean"], dtype=torch.float32)
            std = torch.as_tensor(s["std"], dtype=torch.float32).clamp_min(1e-6)
            if mean.shape != enc.mean.shape or std.shape != enc.std.shape:
                raise ValueError(
                    f"normalisation statistics for {m} have shape {tuple(mean.shape)}/{tuple(std.shape)}, "
                    f"the model expects {tuple(enc.mean.shape)}"
                )
            enc.mean.copy_(mean)
            enc.std.copy_(std)

    def normalization(self) -> dict[str, dict[str, list[float]]]:
        return {m: {"mean": enc.mean.tolist(), "std": enc.std.tolist()} for m, enc in self.encoders.items()}

    # ---------------------------------------------------------------- shared pieces
    def _presence(self, present: torch.Tensor, visual_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """present: (..., 3), visual_mask: (..., F) -> modality -> (...) float 1/0."""
        out = {}
        for m in self.modalities:
            p = present[..., MODALITIES.index(m)].to(torch.float32)
            if m == "visual":
                p = p * (visual_mask.sum(-1) > 0).to(torch.float32)
            out[m] = p
        return out

    def _encode(self, inputs: StepInputs, present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unimodal encoders; a missing modality becomes its learned missing vector. -> (..., D)"""
        u = {}
        for m in self.modalities:
            enc = self.encoders[m](inputs["visual"], inputs["visual_mask"]) if m == "visual" else self.encoders[m](inputs[m])
            keep = present[m].unsqueeze(-1) > 0
            u[m] = torch.where(keep, enc, self.missing[m].expand_as(enc))
        return u

    def _head(self, z: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.fuse(torch.cat([z[m] for m in self.modalities], dim=-1))  # (..., D)
        return self.head(fused), fused

    def _modality_dropout(self, present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training only: drop one random present modality of an utterance, never the last one."""
        p = self.config.modality_dropout
        if not self.training or p <= 0 or len(self.modalities) < 2:
            return present
        stacked = torch.stack([present[m] for m in self.modalities], dim=-1)  # (B, N, n_mod)
        scores = torch.rand(stacked.shape, device=stacked.device) + stacked  # present ones score higher
        drop = nn.functional.one_hot(scores.argmax(-1), len(self.modalities)).to(stacked.dtype)  # a present one
        allowed = (torch.rand(stacked.shape[:-1], device=stacked.device) < p) & (stacked.sum(-1) >= 2)
        stacked = stacked * (1 - drop * allowed.unsqueeze(-1).to(stacked.dtype))
        return {m: stacked[..., i] for i, m in enumerate(self.modalities)}

    # ---------------------------------------------------------------- whole dialogues
    def forward(self, batch: DialogueBatch) -> MCNCLOutput:
        inputs = {"text": batch.text, "audio": batch.audio, "visual": batch.visual, "visual_mask": batch.visual_mask}
        present = self._modality_dropout(self._presence(batch.present, batch.visual_mask))
        u = self._encode(inputs, present)  # m -> (B, N, D)
        b, n = batch.speaker.shape
        c = {}
        for m in self.modalities:
            if not self.config.use_context:
                c[m] = self.rnn_out[m](u[m])
                continue
            st = self._initial_rnn(b, batch.speaker.device)
            outs = []
            for t in range(n):
                st = dict(zip(("party", "ring", "ring_mask", "emotion"),
                              self.rnns[m](u[m][:, t], batch.speaker[:, t], st["party"], st["ring"],
                                           st["ring_mask"], st["emotion"])))
                outs.append(st["emotion"])
            c[m] = self.rnn_out[m](torch.stack(outs, dim=1))  # (B, N, D)
        z = self.mcn(c, present) if self.mcn is not None else c
        logits, fused = self._head(z)
        aux = {m: self.aux_heads[m](c[m]) for m in self.modalities}
        used = torch.zeros_like(batch.present, dtype=torch.float32)
        for m in self.modalities:
            used[..., MODALITIES.index(m)] = present[m]
        return MCNCLOutput(logits=logits, aux_logits=aux, fused=fused, present=used)

    # ---------------------------------------------------------------- streaming
    def _initial_rnn(self, batch: int, device: torch.device | None) -> dict[str, torch.Tensor]:
        cfg = self.config
        return initial_rnn_state(batch, cfg.n_parties, cfg.memory, cfg.global_dim, cfg.party_dim, cfg.emotion_dim, device)

    def state_shapes(self, batch: int = 1) -> dict[str, tuple[int, ...]]:
        return {k: tuple(v.shape) for k, v in self.init_state(batch).items()}

    def init_state(self, batch: int = 1, device: torch.device | None = None) -> State:
        """The state before the first utterance: zeros everywhere, empty rings and caches."""
        state: State = {}
        for m in self.modalities if self.config.use_context else ():
            for k, v in self._initial_rnn(batch, device).items():
                state[f"{m}_{k}"] = v
        if self.mcn is not None:
            w, n_mod, d = self.config.mcn_window, len(self.modalities), self.config.d_model
            for i in range(len(self.mcn.layers)):
                state[f"mcn{i}_cache"] = torch.zeros(batch, w, n_mod, d, device=device)
            state["mcn_mask"] = torch.zeros(batch, w, n_mod, device=device)
        return state

    def step_logits(self, inputs: StepInputs, state: State) -> tuple[torch.Tensor, torch.Tensor, State]:
        """One utterance per dialogue -> probs (B, K), logits (B, K), new state."""
        present = self._presence(inputs["present"], inputs["visual_mask"])
        u = self._encode(inputs, present)  # m -> (B, D)
        new_state: State = {}
        c = {}
        for m in self.modalities:
            if not self.config.use_context:
                c[m] = self.rnn_out[m](u[m])  # (B, D)
                continue
            party, ring, ring_mask, emotion = self.rnns[m](
                u[m], inputs["speaker"], state[f"{m}_party"], state[f"{m}_ring"], state[f"{m}_ring_mask"],
                state[f"{m}_emotion"],
            )
            new_state.update({f"{m}_party": party, f"{m}_ring": ring, f"{m}_ring_mask": ring_mask,
                              f"{m}_emotion": emotion})
            c[m] = self.rnn_out[m](emotion)  # (B, D)
        if self.mcn is not None:
            caches = [state[f"mcn{i}_cache"] for i in range(len(self.mcn.layers))]
            z, caches, mask = self.mcn.step(c, present, caches, state["mcn_mask"])
            for i, cache in enumerate(caches):
                new_state[f"mcn{i}_cache"] = cache
            new_state["mcn_mask"] = mask
        else:
            z = c
        logits, _ = self._head(z)
        return torch.softmax(logits, dim=-1), logits, new_state

    def step(self, inputs: StepInputs, state: State) -> tuple[torch.Tensor, State]:
        """One utterance per dialogue -> probabilities (B, K) and the new state."""
        probs, _, new_state = self.step_logits(inputs, state)
        return probs, new_state
