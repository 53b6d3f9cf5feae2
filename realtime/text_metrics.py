"""Word error rate for checking ASR output against a reference script."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NON_WORD = re.compile(r"[^a-z0-9' ]+")


def normalize(text: str) -> list[str]:
    """Lower-case words without punctuation ("Hello, World!" -> ["hello", "world"])."""
    text = text.lower().replace("\u2019", "'").replace("-", " ")
    words = _NON_WORD.sub(" ", text).split()
    return [w.strip("'") for w in words if w.strip("'")]


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance over words (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(references: Sequence[str] | str, hypotheses: Sequence[str] | str) -> float:
    """Corpus WER: total word edits / total reference words (after `normalize`)."""
    if isinstance(references, str):
        references = [references]
    if isinstance(hypotheses, str):
        hypotheses = [hypotheses]
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    edits = n_ref = 0
    for ref, hyp in zip(references, hypotheses):
        r, h = normalize(ref), normalize(hyp)
        edits += edit_distance(r, h)
        n_ref += len(r)
    if n_ref == 0:
        return 0.0 if edits == 0 else float("inf")
    return edits / n_ref
