"""MELD (Poria et al., 2019): the `*_sent_emo.csv` splits, optionally with MELD.Raw clips.

Columns: Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID, Utterance_ID, Season,
Episode, StartTime, EndTime. Clips, when a user has MELD.Raw, are `dia{D}_utt{U}.mp4`.
"""

from __future__ import annotations

import csv
import logging
import re
from collections import defaultdict
from pathlib import Path

from emostream.model.config import MELD_LABELS
from emostream.model.data.records import Dataset, DialogueRecord, UtteranceRecord, normalize_text

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
# Folder names MELD.Raw unpacks its clips into, per split (looked for next to the CSV).
RAW_CLIP_FOLDERS = ("train_splits", "dev_splits_complete", "dev_splits", "train", "dev")
_TIME = re.compile(r"^(\d+):(\d+):(\d+)(?:[,.](\d+))?$")


def parse_timestamp(value: str) -> float | None:
    """'00:16:16,059' -> 976.059 seconds; None for an empty or malformed value."""
    m = _TIME.match(value.strip())
    if not m:
        return None
    h, mi, s, frac = m.groups()
    seconds = int(h) * 3600 + int(mi) * 60 + int(s)
    return seconds + (int(frac) / 10 ** len(frac) if frac else 0.0)


def split_name(csv_path: Path) -> str:
    """'train_sent_emo.csv' -> 'train'; any other file -> its stem."""
    stem = csv_path.stem
    return stem[: -len("_sent_emo")] if stem.endswith("_sent_emo") else stem


def find_clip_folder(csv_path: Path) -> Path | None:
    """A folder next to the CSV that holds MELD.Raw clips (dia*_utt*.mp4), if there is one."""
    split = split_name(csv_path)
    candidates = [csv_path.parent / f"{split}_splits", csv_path.parent / f"{split}_splits_complete"]
    candidates += [csv_path.parent / name for name in RAW_CLIP_FOLDERS if name.startswith(split)]
    candidates.append(csv_path.parent)
    for folder in candidates:
        if folder.is_dir() and next(folder.glob("dia*_utt*.mp4"), None) is not None:
            return folder
    return None


class MeldDataset(Dataset):
    """A MELD split. Labels: the 7 emotions in alphabetical order (MELD_LABELS).

    media_dir: folder of MELD.Raw clips; "auto" (default) looks next to the CSV
    (`train_splits/`, `dev_splits_complete/`, or the CSV's own folder); None uses no media.
    A missing clip leaves that utterance's media None (counted and logged once).
    """

    def __init__(
        self,
        csv_path: str | Path,
        media_dir: str | Path | None = "auto",
        split: str | None = None,
    ) -> None:
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"MELD CSV not found: {self.csv_path}")
        if media_dir == "auto":
            self.media_dir = find_clip_folder(self.csv_path)
        elif media_dir is not None:
            self.media_dir = Path(media_dir)
            if not self.media_dir.is_dir():
                raise FileNotFoundError(f"MELD media folder not found: {self.media_dir}")
        else:
            self.media_dir = None
        self.missing_media = 0
        self.unknown_labels = 0
        super().__init__("meld", split or split_name(self.csv_path), MELD_LABELS, self._load())

    def _load(self) -> list[DialogueRecord]:
        by_dialogue: dict[int, dict[int, UtteranceRecord]] = defaultdict(dict)
        with self.csv_path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise ValueError(f"{self.csv_path}: missing MELD column(s) {missing}; found {columns}")
            for line, raw in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "") for k, v in raw.items()}
                try:
                    dia, utt = int(row["Dialogue_ID"]), int(row["Utterance_ID"])
                except ValueError as e:
                    raise ValueError(
                        f"{self.csv_path}, line {line}: bad Dialogue_ID/Utterance_ID "
                        f"{row['Dialogue_ID']!r}/{row['Utterance_ID']!r}"
                    ) from e
                if utt in by_dialogue[dia]:
                    raise ValueError(f"{self.csv_path}, line {line}: duplicate dia{dia}_utt{utt}")
                label = row["Emotion"].strip().lower() or None
                if label is not None and label not in MELD_LABELS:
                    self.unknown_labels += 1
                by_dialogue[dia][utt] = UtteranceRecord(
                    dialogue_id=str(dia),
                    order=utt,
                    speaker=normalize_text(row["Speaker"]),
                    text=normalize_text(row["Utterance"]),
                    label=label,
                    media=self._clip(dia, utt),
                    start_s=parse_timestamp(row.get("StartTime", "")),
                    end_s=parse_timestamp(row.get("EndTime", "")),
                    utterance_id=f"dia{dia}_utt{utt}",
                )
        if self.unknown_labels:
            logger.warning("%s: %d utterances have a label outside %s", self.csv_path, self.unknown_labels, MELD_LABELS)
        if self.missing_media:
            logger.warning(
                "%s: %d clips missing in %s (those utterances have no audio/visual)",
                self.csv_path, self.missing_media, self.media_dir,
            )
        dialogues = [
            DialogueRecord(str(dia), tuple(utts[k] for k in sorted(utts)))
            for dia, utts in sorted(by_dialogue.items())
        ]
        logger.info(
            "MELD %s: %d dialogues, %d utterances%s", self.csv_path.name, len(dialogues),
            sum(len(d) for d in dialogues), f", clips from {self.media_dir}" if self.media_dir else "",
        )
        return dialogues

    def _clip(self, dia: int, utt: int) -> Path | None:
        if self.media_dir is None:
            return None
        path = self.media_dir / f"dia{dia}_utt{utt}.mp4"
        if path.is_file():
            return path
        self.missing_media += 1
        return None
