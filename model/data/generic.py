"""A generic conversation CSV: bring your own dialogues and label set.

Default columns: dialogue_id, order, speaker, text, label (optional), media (optional: a clip of
the utterance, relative to the CSV's folder or absolute), start / end (optional, seconds).
Rename any of them with `columns={"text": "utterance", ...}`.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from emostream.model.data.records import Dataset, DialogueRecord, UtteranceRecord, normalize_text

logger = logging.getLogger(__name__)

DEFAULT_COLUMNS: dict[str, str] = {
    "dialogue_id": "dialogue_id",
    "order": "order",
    "speaker": "speaker",
    "text": "text",
    "label": "label",
    "media": "media",
    "start": "start",
    "end": "end",
}
REQUIRED = ("dialogue_id", "order", "speaker", "text")


class CsvDataset(Dataset):
    """Dialogues from a CSV. labels: the label set in model order (default: sorted unique labels).

    With explicit labels, a row whose label is outside the set is an error. Empty label cells
    mean "unlabelled" (label None).
    """

    def __init__(
        self,
        csv_path: str | Path,
        columns: Mapping[str, str] | None = None,
        labels: Sequence[str] | None = None,
        split: str | None = None,
        name: str = "csv",
        delimiter: str = ",",
    ) -> None:
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"CSV not found: {self.csv_path}")
        unknown = sorted(set(columns or {}) - set(DEFAULT_COLUMNS))
        if unknown:
            raise ValueError(f"unknown column key(s) {unknown}; known: {sorted(DEFAULT_COLUMNS)}")
        self.columns = {**DEFAULT_COLUMNS, **(columns or {})}
        self.delimiter = delimiter
        self.missing_media = 0
        dialogues, found = self._load(tuple(labels) if labels is not None else None)
        super().__init__(name, split or self.csv_path.stem, labels if labels is not None else found, dialogues)

    def _load(self, labels: tuple[str, ...] | None) -> tuple[list[DialogueRecord], tuple[str, ...]]:
        col = self.columns
        by_dialogue: dict[str, dict[int, UtteranceRecord]] = defaultdict(dict)
        seen_labels: set[str] = set()
        with self.csv_path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, delimiter=self.delimiter)
            header = [c.strip() for c in reader.fieldnames or []]
            for key in REQUIRED:
                if col[key] not in header:
                    raise ValueError(
                        f"{self.csv_path}: missing column {col[key]!r} (the {key} column); found {header}"
                    )
            has = {key: col[key] in header for key in ("label", "media", "start", "end")}
            for line, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
                where = f"{self.csv_path}, row {line}"
                dia = row[col["dialogue_id"]]
                if not dia:
                    raise ValueError(f"{where}: empty {col['dialogue_id']!r}")
                try:
                    order = int(float(row[col["order"]]))
                except ValueError as e:
                    raise ValueError(f"{where}: {col['order']!r} must be an integer, got {row[col['order']]!r}") from e
                if order in by_dialogue[dia]:
                    raise ValueError(f"{where}: dialogue {dia!r} already has an utterance with order {order}")
                label = (row[col["label"]] or None) if has["label"] else None
                if label is not None:
                    if labels is not None and label not in labels:
                        raise ValueError(f"{where}: label {label!r} is not in the label set {labels}")
                    seen_labels.add(label)
                by_dialogue[dia][order] = UtteranceRecord(
                    dialogue_id=dia,
                    order=order,
                    speaker=row[col["speaker"]],
                    text=normalize_text(row[col["text"]]),
                    label=label,
                    media=self._media(row[col["media"]]) if has["media"] else None,
                    start_s=_seconds(row, col["start"], where) if has["start"] else None,
                    end_s=_seconds(row, col["end"], where) if has["end"] else None,
                    utterance_id=f"{dia}_{order}",
                )
        if self.missing_media:
            logger.warning("%s: %d media files not found (no audio/visual for those)", self.csv_path, self.missing_media)
        dialogues = [DialogueRecord(dia, tuple(utts[k] for k in sorted(utts))) for dia, utts in by_dialogue.items()]
        logger.info("CSV %s: %d dialogues, %d utterances", self.csv_path.name, len(dialogues), sum(map(len, dialogues)))
        return dialogues, tuple(sorted(seen_labels))

    def _media(self, value: str) -> Path | None:
        if not value:
            return None
        path = Path(value)
        if not path.is_absolute():
            path = self.csv_path.parent / path
        if path.is_file():
            return path
        self.missing_media += 1
        return None


def _seconds(row: dict[str, str], column: str, where: str) -> float | None:
    value = row[column]
    if not value:
        return None
    try:
        return float(value)
    except ValueError as e:
        raise ValueError(f"{where}: {column!r} must be seconds, got {value!r}") from e
