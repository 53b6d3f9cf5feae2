"""Late fusion of MCN-CL (text in its conversation context) with the face expert. No I/O.

The face expert (FER2013 mini-Xception) answers over its own seven classes; `LabelMap` carries
its distribution onto the checkpoint's labels (MELD's seven by default; other label sets map by
name where a counterpart exists). `fuse` then combines the two by weighted log-linear pooling
that corrects for the expert's class prior:

    log p(c | text, face) = log p_mcn(c | text, context) + w * (log p_face(c | face) - log prior_face(c)) + const

where p_face is the expert's posterior averaged over the utterance's frames and then tempered
towards its prior, p_face = t * p_expert + (1 - t) * prior_face with trust t (default 0.7,
about the expert's FER2013 accuracy of 66%): the network's softmax says 0.998 "happy" for a
smiling photograph, which would let one frame veto any sentence. With w = 1 this is Bayes' rule for two conditionally independent views: the expert's posterior
divided by its training prior is a likelihood ratio p(face | c) / p(face), so FER2013's class
balance (many happy faces, few disgusted ones) does not leak into the fused answer. w < 1
tempers an expert that is over-confident or out of its domain (48 px grey lab faces vs a
webcam). A checkpoint label with no expert counterpart gets a ratio of 1 (the face says nothing
about it). See docs/model.md for why w cannot be learned here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# FER2013's training split (28,709 faces) per class, in the expert's label order below.
FER2013_TRAIN_COUNTS: dict[str, int] = {
    "angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830, "surprise": 3171, "neutral": 4965,
}

# Names that mean the same emotion across the label sets users train on (MELD, IEMOCAP, FER).
SYNONYMS: dict[str, str] = {
    "angry": "anger", "ang": "anger", "anger": "anger",
    "disgust": "disgust", "dis": "disgust",
    "fear": "fear", "fea": "fear",
    "happy": "joy", "hap": "joy", "joy": "joy", "happiness": "joy",
    "sad": "sadness", "sadness": "sadness",
    "surprise": "surprise", "sur": "surprise", "surprised": "surprise",
    "neutral": "neutral", "neu": "neutral",
}

_FLOOR = 1e-4  # no probability below this enters a logarithm


def canonical(label: str) -> str:
    return SYNONYMS.get(label.lower(), label.lower())


@dataclass(frozen=True)
class LabelMap:
    """Which expert class stands for each checkpoint label (or none)."""

    expert_labels: tuple[str, ...]
    labels: tuple[str, ...]
    index: tuple[int | None, ...]  # per checkpoint label: the expert's class index, or None

    @classmethod
    def build(cls, expert_labels: Sequence[str], labels: Sequence[str]) -> LabelMap:
        by_name = {canonical(e): i for i, e in enumerate(expert_labels)}
        return cls(tuple(expert_labels), tuple(labels), tuple(by_name.get(canonical(lab)) for lab in labels))

    @property
    def covered(self) -> bool:
        """Whether at least one checkpoint label has an expert counterpart."""
        return any(i is not None for i in self.index)

    def distribution(self, expert_probs: np.ndarray) -> np.ndarray:
        """(E,) expert probabilities -> (K,) over the checkpoint's labels (uncovered labels get 0)."""
        p = np.asarray(expert_probs, dtype=np.float64).reshape(-1)
        out = np.array([p[i] if i is not None else 0.0 for i in self.index])  # (K,)
        total = out.sum()
        return out / total if total > 0 else np.full(len(self.labels), 1.0 / len(self.labels))

    def likelihood_ratio(self, expert_probs: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """(K,) p_face(c) / prior(c) per checkpoint label; 1 where the expert has no counterpart."""
        p = np.maximum(np.asarray(expert_probs, dtype=np.float64).reshape(-1), _FLOOR)
        q = np.maximum(np.asarray(prior, dtype=np.float64).reshape(-1), _FLOOR)
        return np.array([p[i] / q[i] if i is not None else 1.0 for i in self.index])


def fer2013_prior(expert_labels: Sequence[str]) -> np.ndarray:
    """The expert's training prior in its own label order. (E,)"""
    counts = np.array([FER2013_TRAIN_COUNTS[e] for e in expert_labels], dtype=np.float64)
    return counts / counts.sum()


@dataclass(frozen=True)
class FaceFusion:
    """Weighted log-linear pooling of MCN-CL's distribution with the face expert's (see module doc)."""

    label_map: LabelMap
    prior: np.ndarray  # (E,) the expert's training prior
    weight: float = 0.5
    trust: float = 0.7  # how much of the expert's posterior is kept (the rest is its prior)

    def __post_init__(self) -> None:
        if not (0.0 <= self.weight <= 4.0):
            raise ValueError(f"face weight must be in [0, 4], got {self.weight}")
        if not (0.0 <= self.trust <= 1.0):
            raise ValueError(f"face trust must be in [0, 1], got {self.trust}")

    @classmethod
    def for_labels(cls, expert_labels: Sequence[str], labels: Sequence[str], weight: float = 0.5,
                   trust: float = 0.7) -> FaceFusion:
        return cls(LabelMap.build(expert_labels, labels), fer2013_prior(expert_labels), float(weight), float(trust))

    def describe(self) -> dict[str, object]:
        """The rule as `hello.fusion` states it."""
        return {"rule": "log-linear, face prior-corrected", "face_weight": self.weight, "face_trust": self.trust,
                "face_prior": "FER2013 train"}

    def fuse(self, model_probs: np.ndarray, expert_probs: np.ndarray | None) -> np.ndarray:
        """(K,) MCN-CL probabilities and (E,) expert probabilities (or None) -> (K,) fused."""
        p = np.asarray(model_probs, dtype=np.float64).reshape(-1)
        if expert_probs is None or self.weight == 0.0:
            return p / p.sum()
        face = self.trust * np.asarray(expert_probs, dtype=np.float64).reshape(-1) + (1 - self.trust) * self.prior
        logits = np.log(np.maximum(p, _FLOOR)) + self.weight * np.log(self.label_map.likelihood_ratio(face, self.prior))
        logits -= logits.max()
        out = np.exp(logits)
        return out / out.sum()


def as_dict(labels: Sequence[str], probs: np.ndarray) -> dict[str, float]:
    return {label: float(p) for label, p in zip(labels, np.asarray(probs).reshape(-1))}


def mean_distribution(rows: Sequence[np.ndarray] | np.ndarray) -> np.ndarray | None:
    """The mean of per-frame distributions (F, E) -> (E,), or None for no rows."""
    arr = np.asarray(rows, dtype=np.float64)
    if arr.size == 0:
        return None
    mean = arr.reshape(-1, arr.shape[-1]).mean(axis=0)
    return mean / mean.sum()


