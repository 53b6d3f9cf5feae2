"""Padded batches of dialogues: the one input format of MCN-CL's whole-dialogue forward."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from emostream.model.config import MODALITIES


@dataclass
class DialogueFeatures:
    """One dialogue's per-utterance features (numpy, unpadded).

    text: (N, Dt); audio: (N, Da); visual: (N, F, Dv); visual_mask: (N, F) bool;
    present: (N, 3) bool in MODALITIES order; speaker: (N,) int slot; labels: (N,) int (-100 unknown).
    """

    text: np.ndarray
    audio: np.ndarray
    visual: np.ndarray
    visual_mask: np.ndarray
    present: np.ndarray
    speaker: np.ndarray
    labels: np.ndarray
    dialogue_id: str = ""

    def __len__(self) -> int:
        return int(self.speaker.shape[0])


@dataclass
class DialogueBatch:
    """B dialogues padded to N utterances (padding only at the end).

    text: (B, N, Dt); audio: (B, N, Da); visual: (B, N, F, Dv); visual_mask: (B, N, F);
    present: (B, N, 3) float 1/0; speaker: (B, N) int64; mask: (B, N) bool (real utterance);
    labels: (B, N) int64, -100 on padding and unknown labels.
    """

    text: torch.Tensor
    audio: torch.Tensor
    visual: torch.Tensor
    visual_mask: torch.Tensor
    present: torch.Tensor
    speaker: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> DialogueBatch:
        return DialogueBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def utterance(self, t: int) -> dict[str, torch.Tensor]:
        """The step inputs of utterance t of every dialogue: text (B, Dt), ..., speaker (B,)."""
        return {
            "text": self.text[:, t],
            "audio": self.audio[:, t],
            "visual": self.visual[:, t],
            "visual_mask": self.visual_mask[:, t],
            "present": self.present[:, t],
            "speaker": self.speaker[:, t],
        }


def collate(dialogues: Sequence[DialogueFeatures], n_parties: int | None = None) -> DialogueBatch:
    """Pad dialogues into one batch. Speaker slots >= n_parties wrap around (modulo)."""
    if not dialogues:
        raise ValueError("cannot collate an empty list of dialogues")
    b = len(dialogues)
    n = max(len(d) for d in dialogues)
    first = dialogues[0]
    dt, da = first.text.shape[-1], first.audio.shape[-1]
    f, dv = first.visual.shape[-2], first.visual.shape[-1]
    text = torch.zeros(b, n, dt)
    audio = torch.zeros(b, n, da)
    visual = torch.zeros(b, n, f, dv)
    visual_mask = torch.zeros(b, n, f)
    present = torch.zeros(b, n, len(MODALITIES))
    speaker = torch.zeros(b, n, dtype=torch.long)
    mask = torch.zeros(b, n, dtype=torch.bool)
    labels = torch.full((b, n), -100, dtype=torch.long)
    for i, d in enumerate(dialogues):
        k = len(d)
        text[i, :k] = torch.as_tensor(d.text, dtype=torch.float32)
        audio[i, :k] = torch.as_tensor(d.audio, dtype=torch.float32)
        visual[i, :k] = torch.as_tensor(d.visual, dtype=torch.float32)
        visual_mask[i, :k] = torch.as_tensor(d.visual_mask, dtype=torch.float32)
        present[i, :k] = torch.as_tensor(d.present, dtype=torch.float32)
        spk = torch.as_tensor(d.speaker, dtype=torch.long)
        speaker[i, :k] = spk % n_parties if n_parties else spk
        mask[i, :k] = True
        labels[i, :k] = torch.as_tensor(d.labels, dtype=torch.long)
    return DialogueBatch(text, audio, visual, visual_mask, present, speaker, mask, labels)
