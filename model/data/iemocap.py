"""IEMOCAP (Busso et al., 2008) from its full-release layout.

    Session{1..5}/dialog/EmoEvaluation/<dialog>.txt    [6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[...]
    Session{1..5}/dialog/transcriptions/<dialog>.txt   Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.
    Session{1..5}/sentences/wav/<dialog>/<utt>.wav     one wav per utterance
    Session{1..5}/dialog/avi/DivX/<dialog>.avi         one video per dialog

Label schemes: 6-class (happy, sad, neutral, angry, excited, frustrated: the usual ERC setting)
and 4-class (angry, happy = happy + excited, neutral, sad). Utterances with any other label
(xxx, oth, sur, fea, dis) are dropped. The speaker is the gender letter of the utterance id.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from emostream.model.data.records import Dataset, DialogueRecord, UtteranceRecord, normalize_text

logger = logging.getLogger(__name__)

IEMOCAP_6_LABELS: tuple[str, ...] = ("happy", "sad", "neutral", "angry", "excited", "frustrated")
IEMOCAP_4_LABELS: tuple[str, ...] = ("angry", "happy", "neutral", "sad")
IEMOCAP_CODES: dict[str, str] = {
    "hap": "happy", "sad": "sad", "neu": "neutral", "ang": "angry", "exc": "excited", "fru": "frustrated",
}

_EVAL_LINE = re.compile(r"^\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]\s+(\S+)\s+(\S+)")
_TRANSCRIPT_LINE = re.compile(r"^(\S+)\s+\[\s*([\d.]+)\s*-\s*([\d.]+)\s*\]:\s*(.*)$")


def label_scheme(classes: int = 6, merge_excited: bool | None = None) -> tuple[tuple[str, ...], dict[str, str]]:
    """(labels, code -> label) of a scheme. merge_excited defaults to False for 6 classes, True for 4.

    6 classes with merge_excited=True gives 5 (happy, sad, neutral, angry, frustrated).
    """
    if classes not in (4, 6):
        raise ValueError(f"IEMOCAP classes must be 4 or 6, got {classes}")
    merge = (classes == 4) if merge_excited is None else merge_excited
    mapping = dict(IEMOCAP_CODES)
    if merge:
        mapping["exc"] = "happy"
    if classes == 4:
        mapping.pop("fru")
        if not merge:
            mapping.pop("exc")
        return IEMOCAP_4_LABELS, mapping
    labels = tuple(label for label in IEMOCAP_6_LABELS if not (merge and label == "excited"))
    return labels, mapping


def speaker_of(utterance_id: str) -> str:
    """'Ses01F_impro01_F000' -> 'F' (the gender letter of the utterance's speaker)."""
    return utterance_id.rsplit("_", 1)[-1][:1]


def _session_number(folder: Path) -> int | None:
    m = re.fullmatch(r"Session(\d+)", folder.name)
    return int(m.group(1)) if m else None


def _read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def read_evaluation(path: Path) -> list[tuple[str, str, float, float]]:
    """(utterance id, label code, start_s, end_s) of every utterance in an EmoEvaluation file."""
    rows = []
    for line in _read_lines(path):
        m = _EVAL_LINE.match(line.strip())
        if m:
            start, end, utt, code = m.groups()
            rows.append((utt, code.lower(), float(start), float(end)))
    return rows


def read_transcription(path: Path) -> dict[str, str]:
    """utterance id -> text of a transcription file (lines without a time span are skipped)."""
    texts: dict[str, str] = {}
    for line in _read_lines(path):
        m = _TRANSCRIPT_LINE.match(line.strip())
        if m:
            texts[m.group(1)] = m.group(4)
    return texts


class IemocapDataset(Dataset):
    """IEMOCAP dialogs of the chosen sessions (e.g. sessions=(1, 2, 3, 4) train, (5,) dev; None: all found)."""

    def __init__(
        self,
        root: str | Path,
        sessions: Iterable[int] | None = None,
        classes: int = 6,
        merge_excited: bool | None = None,
        split: str | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"IEMOCAP root not found: {self.root}")
        found = self._find_sessions()
        self.sessions = tuple(sorted({int(s) for s in sessions})) if sessions is not None else tuple(sorted(found))
        if not self.sessions:
            raise ValueError(f"no IEMOCAP sessions chosen or found (Session1..5) under {self.root}")
        missing = [s for s in self.sessions if s not in found]
        if missing:
            raise FileNotFoundError(
                f"IEMOCAP session folder(s) {[f'Session{s}' for s in missing]} not found under {self.root}"
            )
        self._session_dirs = [found[s] for s in self.sessions]
        labels, self.code_map = label_scheme(classes, merge_excited)
        split = split or "sessions" + "".join(str(s) for s in self.sessions)
        self.dropped: Counter[str] = Counter()
        super().__init__("iemocap", split, labels, self._load())

    def _find_sessions(self) -> dict[int, Path]:
        return {n: p for p in self.root.iterdir() if p.is_dir() and (n := _session_number(p)) is not None}

    def _load(self) -> list[DialogueRecord]:
        dialogues: list[DialogueRecord] = []
        no_text = 0
        for session in self._session_dirs:
            eval_dir = session / "dialog" / "EmoEvaluation"
            files = sorted(p for p in eval_dir.glob("*.txt") if not p.name.startswith("."))
            if not files:
                raise FileNotFoundError(f"no EmoEvaluation/*.txt files in {eval_dir}")
            for eval_file in files:
                dialog = eval_file.stem
                transcript = session / "dialog" / "transcriptions" / f"{dialog}.txt"
                texts = read_transcription(transcript) if transcript.is_file() else {}
                video = session / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
                wav_dir = session / "sentences" / "wav" / dialog
                kept = []
                for utt, code, start, end in sorted(read_evaluation(eval_file), key=lambda r: (r[2], r[0])):
                    label = self.code_map.get(code)
                    if label is None:
                        self.dropped[code] += 1
                        continue
                    if utt not in texts:
                        no_text += 1
                    wav = wav_dir / f"{utt}.wav"
                    kept.append((utt, label, start, end, texts.get(utt, ""), wav if wav.is_file() else None))
                utterances = tuple(
                    UtteranceRecord(
                        dialogue_id=dialog,
                        order=i,
                        speaker=speaker_of(utt),
                        text=normalize_text(text),
                        label=label,
                        media=wav,
                        start_s=start,
                        end_s=end,
                        utterance_id=utt,
                        video=video if video.is_file() else None,
                    )
                    for i, (utt, label, start, end, text, wav) in enumerate(kept)
                )
                if utterances:
                    dialogues.append(DialogueRecord(dialog, utterances))
        if self.dropped:
            logger.info("IEMOCAP: dropped utterances with labels outside the scheme: %s", dict(self.dropped))
        if no_text:
            logger.warning("IEMOCAP: %d utterances have no transcription line", no_text)
        logger.info(
            "IEMOCAP sessions %s: %d dialogs, %d utterances",
            self.sessions, len(dialogues), sum(len(d) for d in dialogues),
        )
        return dialogues
