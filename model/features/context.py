"""The text encoder's input: the current utterance plus past turns, with their speakers.

One function builds it for training, evaluation and the live session, so the encoder sees the
same input everywhere:

    [CLS] A: current [SEP] B: previous turn [SEP] A: the one before [SEP] ...    (at most max_length)

- The current utterance comes first, so its tokens keep the same positions whatever the context,
  and truncation drops the oldest turn first. Past turns go most recent first. A future turn is
  never seen: `ContextWindow` only holds turns that were pushed before.
- Speakers are tagged A, B, ... by order of appearance in the conversation (a live session knows
  no names, only who spoke first), with the tag before each turn.
- The sentence vector is the mean over the current utterance's tokens only (`[CLS] A: current
  [SEP]`); the past turns reach it through attention. With `turns=0` the input is the utterance
  alone, untagged, pooled over all of it: exactly the encoder's plain sentence vector.

`ContextWindow` holds no I/O: a dialogue record or a live session pushes finals into it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

TAGS = "ABCDEFGHIJ"  # the 10th and later speakers share the last tag
MAX_SPEAKERS = 64  # the tag table of a long live session stays bounded
MIN_PAST_TOKENS = 4  # a past turn cut to fewer tokens than this is left out


@dataclass(frozen=True)
class ContextInput:
    """One utterance's encoder input before tokenisation."""

    current: str  # "A: text" (plain text when there is no context)
    past: tuple[str, ...] = ()  # "B: text", most recent first


class ContextWindow:
    """The last `turns` finals of one conversation, with speaker tags (no I/O, bounded)."""

    def __init__(self, turns: int) -> None:
        if turns < 0:
            raise ValueError(f"context turns must be >= 0, got {turns}")
        self.turns = turns
        self._tags: dict[Hashable, str] = {}
        self._past: deque[str] = deque(maxlen=max(turns, 1))

    def tag(self, speaker: Hashable) -> str:
        if speaker not in self._tags and len(self._tags) < MAX_SPEAKERS:
            self._tags[speaker] = TAGS[min(len(self._tags), len(TAGS) - 1)]
        return self._tags.get(speaker, TAGS[-1])

    def input(self, speaker: Hashable, text: str) -> ContextInput:
        """The encoder input of an utterance by `speaker`, given the turns pushed so far."""
        if self.turns == 0:
            return ContextInput(text)
        return ContextInput(f"{self.tag(speaker)}: {text}", tuple(reversed(self._past)))

    def push(self, speaker: Hashable, text: str) -> None:
        """Record a final turn (an empty transcript is not a turn)."""
        tag = self.tag(speaker)  # tags follow the order of appearance, even of silent turns
        if self.turns and text.strip():
            self._past.append(f"{tag}: {text}")

    def reset(self) -> None:
        self._tags.clear()
        self._past.clear()


def as_input(item: str | ContextInput | None) -> ContextInput:
    """A plain sentence (None: empty) or an already built input."""
    if isinstance(item, ContextInput):
        return item
    return ContextInput(item if item is not None else "")


def dialogue_inputs(texts: Sequence[str], speakers: Sequence[Hashable], turns: int) -> list[ContextInput]:
    """The encoder inputs of every utterance of a recorded dialogue, each seeing only its past."""
    if len(texts) != len(speakers):
        raise ValueError(f"{len(texts)} texts but {len(speakers)} speakers")
    window = ContextWindow(turns)
    out = []
    for text, speaker in zip(texts, speakers, strict=True):
        out.append(window.input(speaker, text))
        window.push(speaker, text)
    return out


def encode(tokenizer: Any, item: ContextInput, max_length: int) -> tuple[list[int], list[int]]:
    """-> (input ids, pool mask), both at most `max_length` long (no padding).

    The pool mask is 1 on `[CLS] current [SEP]`. Without past turns this is exactly what the
    tokenizer gives for the sentence alone, with every token pooled.
    """
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no CLS/SEP tokens for a context input")
    if max_length < 3:
        raise ValueError(f"max_length must be >= 3, got {max_length}")
    pieces = tokenizer([item.current, *item.past], add_special_tokens=False)["input_ids"]
    ids = [cls_id, *pieces[0][: max_length - 2], sep_id]
    pool = [1] * len(ids)
    for turn in pieces[1:]:
        room = max_length - len(ids) - 1
        if room < MIN_PAST_TOKENS:
            break
        ids += [*turn[:room], sep_id]
    pool += [0] * (len(ids) - len(pool))
    return ids, pool


def context_preprocessing(turns: int) -> dict[str, Any]:
    """The spec entries of a context input (none without context: the plain sentence vector)."""
    if turns == 0:
        return {}
    return {"context_turns": turns, "context": "current first, past most recent first, speaker tags by appearance",
            "pooling": "mean-current"}
