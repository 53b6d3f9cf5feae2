"""Dataset records: utterances and dialogues as plain frozen dataclasses, one Dataset interface.

Every loader (MELD, IEMOCAP, generic CSV) turns its files into `DialogueRecord`s of
`UtteranceRecord`s; everything downstream (feature extraction, training) sees only these.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

IGNORE_INDEX = -100
"""Label index of an utterance without a (known) label; cross-entropy ignores it."""


@dataclass(frozen=True)
class UtteranceRecord:
    """One utterance of a dialogue.

    media: a file holding this utterance alone (a MELD clip, an IEMOCAP sentence wav, a CSV's
    media column); the whole file is used. start_s / end_s: the utterance's span in the dialogue's
    recording (MELD: episode time; IEMOCAP: dialog time). video: an optional dialogue-level
    recording holding the utterance at [start_s, end_s] (IEMOCAP's dialog avi); it is used for a
    modality that `media` lacks.
    """

    dialogue_id: str
    order: int
    speaker: str
    text: str
    label: str | None = None
    media: Path | None = None
    start_s: float | None = None
    end_s: float | None = None
    utterance_id: str = ""
    video: Path | None = None


@dataclass(frozen=True)
class DialogueRecord:
    """A dialogue: its utterances in order."""

    dialogue_id: str
    utterances: tuple[UtteranceRecord, ...]

    def __len__(self) -> int:
        return len(self.utterances)

    def speakers(self) -> dict[str, int]:
        """Speaker name -> party slot index, in order of first appearance."""
        slots: dict[str, int] = {}
        for utt in self.utterances:
            slots.setdefault(utt.speaker, len(slots))
        return slots

    def speaker_slots(self) -> list[int]:
        """The party slot of every utterance, in order."""
        slots = self.speakers()
        return [slots[u.speaker] for u in self.utterances]

    @property
    def texts(self) -> list[str]:
        return [u.text for u in self.utterances]


def label_index(labels: Sequence[str], label: str | None) -> int:
    """Index of `label` in `labels`; IGNORE_INDEX (-100) for None or a label outside the set."""
    if label is None:
        return IGNORE_INDEX
    try:
        return list(labels).index(label)
    except ValueError:
        return IGNORE_INDEX


class Dataset:
    """A split of a dataset: a name, a label set and dialogues in a fixed order.

    Loaders subclass this (or build it directly from records); `dialogues()` returns the records.
    """

    def __init__(
        self, name: str, split: str, labels: Sequence[str], dialogues: Iterable[DialogueRecord]
    ) -> None:
        self.name = name
        self.split = split
        self.labels: tuple[str, ...] = tuple(labels)
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels must be unique, got {self.labels}")
        self._dialogues: tuple[DialogueRecord, ...] = tuple(dialogues)

    def dialogues(self) -> list[DialogueRecord]:
        return list(self._dialogues)

    def __len__(self) -> int:
        return len(self._dialogues)

    def label_index(self, label: str | None) -> int:
        """Index of `label` in this dataset's label set (-100 for None or an unknown label)."""
        return label_index(self.labels, label)

    def num_utterances(self) -> int:
        return sum(len(d) for d in self._dialogues)

    def label_counts(self) -> dict[str, int]:
        """Utterances per label (in label order; labels outside the set are not counted)."""
        counts = Counter(u.label for d in self._dialogues for u in d.utterances)
        return {label: counts.get(label, 0) for label in self.labels}

    def __repr__(self) -> str:
        if not hasattr(self, "_dialogues"):  # still loading
            return f"{type(self).__name__}(loading)"
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, labels={self.labels}, "
            f"dialogues={len(self)}, utterances={self.num_utterances()})"
        )


# --- text normalisation -------------------------------------------------------------------------

# Characters that appear when UTF-8 bytes were decoded as cp1252/latin-1 (the continuation bytes
# 0x80-0xBF as cp1252 shows them, plus the raw C1 controls for the bytes cp1252 leaves undefined).
_CP1252_HIGH = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
_MOJIBAKE_RUN = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf" + re.escape(_CP1252_HIGH) + "]+"
)
_STRAY_A_CIRC = re.compile("\u00c2(?=[\\s\u00a0]|$)")

_TRANSLATE = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
        "\u0060": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-",
        "\u2212": "-",
        "\u2026": "...",
        "\u00a0": " ", "\u2009": " ", "\u200a": " ", "\u202f": " ", "\u3000": " ",
        "\u200b": "", "\u200c": "", "\u200d": "", "\ufeff": "",
    }
)
_WHITESPACE = re.compile(r"\s+")


def _to_bytes_cp1252(run: str) -> bytes | None:
    out = bytearray()
    for ch in run:
        try:
            out += ch.encode("cp1252")
        except UnicodeEncodeError:
            if ord(ch) < 256:
                out.append(ord(ch))  # a C1 control standing for a byte cp1252 leaves undefined
            else:
                return None
    return bytes(out)


def _fix_run(match: re.Match[str]) -> str:
    run = match.group(0)
    raw = _to_bytes_cp1252(run)
    if raw is None:
        return run
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return run


def fix_mojibake(text: str) -> str:
    """Repair UTF-8 text that was decoded as cp1252/latin-1 ("â€™" -> "’", "Ã©" -> "é")."""
    if not any(c in text for c in "\u00c2\u00c3\u00e2"):
        return text
    text = _MOJIBAKE_RUN.sub(_fix_run, text)
    return _STRAY_A_CIRC.sub("", text)


def normalize_text(text: str) -> str:
    """Clean an utterance: repair mojibake, ASCII quotes/apostrophes/dashes/ellipses, one space."""
    text = fix_mojibake(unicodedata.normalize("NFC", text))
    text = text.translate(_TRANSLATE)
    return _WHITESPACE.sub(" ", text).strip()
