"""Model configuration: one frozen dataclass holding every shape and switch of MCN-CL."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MODALITIES: tuple[str, ...] = ("text", "audio", "visual")
"""Canonical modality order. Every `present` mask is indexed in this order."""

MELD_LABELS: tuple[str, ...] = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and switches of MCN-CL (see docs/model.md).

    `modalities` lists the modalities the model has branches for (a subset of MODALITIES, in
    canonical order). Inputs always carry all three, with a `present` mask; a modality the model
    was not built for is ignored.
    """

    labels: tuple[str, ...] = MELD_LABELS
    modalities: tuple[str, ...] = MODALITIES
    # input feature sizes
    text_dim: int = 384
    audio_dim: int = 88
    visual_dim: int = 1280
    max_frames: int = 8  # F: visual frames per utterance (padded, with a mask)
    # unimodal encoders
    d_model: int = 256
    use_psa: bool = True
    psa_kernels: tuple[int, ...] = (3, 5, 7, 9)
    psa_reduction: int = 4
    # DialogueRNN (one per modality)
    use_context: bool = True  # False: no DialogueRNN and a same-utterance MCN (the "no context" ablation)
    n_parties: int = 9  # P speaker slots
    global_dim: int = 256
    party_dim: int = 256
    emotion_dim: int = 256
    memory: int = 16  # M: ring of previous global states attended over
    listener_update: bool = False
    # MCN
    use_mcn: bool = True
    mcn_layers: int = 2  # T
    mcn_heads: int = 4
    mcn_window: int = 4  # W: utterance i sees j in [i-W+1, i]
    ffn_mult: int = 2
    # regularisation
    dropout: float = 0.1
    modality_dropout: float = 0.1  # probability of dropping one present modality of an utterance
    # losses
    alpha: float = 0.3  # text auxiliary CE
    beta: float = 0.3  # audio auxiliary CE
    gamma: float = 0.3  # visual auxiliary CE
    contrastive_weight: float = 0.1  # lambda
    use_contrastive: bool = True
    temperature: float = 0.1
    hard_negatives: bool = True
    hard_negative_ratio: float = 0.3
    class_weights: tuple[float, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.labels:
            raise ValueError("labels must not be empty")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {self.labels}")
        unknown = [m for m in self.modalities if m not in MODALITIES]
        if unknown or not self.modalities:
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {self.modalities}")
        ordered = tuple(m for m in MODALITIES if m in self.modalities)
        object.__setattr__(self, "modalities", ordered)
        if self.d_model % self.mcn_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by mcn_heads={self.mcn_heads}")
        if self.mcn_window < 1 or self.memory < 1 or self.n_parties < 1 or self.max_frames < 1:
            raise ValueError("mcn_window, memory, n_parties and max_frames must be >= 1")
        if not 0.0 < self.hard_negative_ratio <= 1.0:
            raise ValueError(f"hard_negative_ratio must be in (0, 1], got {self.hard_negative_ratio}")
        if not self.use_context and self.mcn_window != 1:
            object.__setattr__(self, "mcn_window", 1)
        if self.class_weights is not None and len(self.class_weights) != len(self.labels):
            raise ValueError("class_weights must have one weight per label")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def modality_index(self, modality: str) -> int:
        """Index of a modality in the canonical `present` mask."""
        return MODALITIES.index(modality)

    def input_dim(self, modality: str) -> int:
        return {"text": self.text_dim, "audio": self.audio_dim, "visual": self.visual_dim}[modality]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown model config keys: {unknown}")
        kwargs = dict(data)
        for key in ("labels", "modalities", "psa_kernels", "class_weights"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)
