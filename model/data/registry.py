"""One entry point for every dataset kind."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from emostream.model.data.records import Dataset

DatasetKind = Literal["meld", "iemocap", "csv"]
KINDS: tuple[str, ...] = ("meld", "iemocap", "csv")


def load_dataset(kind: DatasetKind | str, path: str | Path, **options: Any) -> Dataset:
    """Load a dataset split.

    meld: path = a `*_sent_emo.csv`; options media_dir ("auto" | folder | None), split.
    iemocap: path = the release root (holding Session1..5); options sessions, classes (6 | 4),
      merge_excited, split.
    csv: path = a CSV file; options columns, labels, split, name, delimiter.
    """
    if kind == "meld":
        from emostream.model.data.meld import MeldDataset

        return MeldDataset(path, **options)
    if kind == "iemocap":
        from emostream.model.data.iemocap import IemocapDataset

        return IemocapDataset(path, **options)
    if kind == "csv":
        from emostream.model.data.generic import CsvDataset

        return CsvDataset(path, **options)
    raise ValueError(f"unknown dataset kind {kind!r}; choose one of {KINDS}")
