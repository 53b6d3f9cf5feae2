"""Real-speech conversation fixtures (`tests/data/conversations/`): list and load them.

    from tests.conversations import CallUnavailable, load, names

    for name in names(kind="spliced", split="tune"):
        conv = load(name)  # conv.audio: float32 (n,) at 16 kHz; conv.turns: reference speaker turns

Kinds: "recorded" (real meeting excerpts and a phone call; turns from human RTTM annotation),
"spliced" (real single-speaker pieces laid out as a conversation; turns exact by construction) and
"synthetic" (the espeak-ng fixtures of tests/data and the demo sample, a second or so between
lines; each scripted line is one turn).
Splits: "tune" fixtures and "heldout" fixtures share no speaker. See tests/data/README.md and
tests/data/make_conversations.py.

The `call` fixture is only a reference: its audio is read from the installed pyannote-audio wheel
(`pip install --no-deps pyannote-audio==4.0.7`, found without importing pyannote.audio) and
`load("call")` raises `CallUnavailable` when it is missing or not the expected file, so a test can
`pytest.skip(str(err))`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from emostream.model.features.pcm import as_float32, resample_frames

logger = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parent / "data" / "conversations"
SAMPLE_RATE = 16_000
INSTALL_HINT = "pip install --no-deps pyannote-audio==4.0.7"


class CallUnavailable(RuntimeError):
    """A fixture's audio lives in a package that is not installed (or is not the expected file)."""


@dataclass(frozen=True, slots=True)
class Turn:
    speaker: str
    start_s: float
    end_s: float
    backchannel: bool = False

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True, eq=False)
class Conversation:
    """One fixture: read-only float32 mono audio and its reference."""

    name: str
    audio: np.ndarray  # float32 (n,), in [-1, 1)
    sample_rate: int
    turns: tuple[Turn, ...]  # sorted by start
    overlaps: tuple[tuple[float, float], ...]  # where >= 2 speakers talk
    speakers: Mapping[str, Mapping[str, str]]  # id -> {"gender": "F"|"M"|"?", "source": ...}
    split: str  # "tune" | "heldout"
    kind: str  # "recorded" | "spliced"

    @property
    def duration_s(self) -> float:
        return self.audio.size / self.sample_rate


REPO = Path(__file__).resolve().parent.parent
SYNTHETIC: dict[str, tuple[str, str, str]] = {  # name -> (audio, script JSON, key of its lines)
    "espeak_dialogue": ("tests/data/dialogue.wav", "tests/data/dialogue.json", "utterances"),
    "espeak_speakers3": ("tests/data/speakers3.wav", "tests/data/speakers3.json", "lines"),
    "espeak_speakers3_heldout": ("tests/data/speakers3_heldout.wav", "tests/data/speakers3_heldout.json", "lines"),
    "espeak_sample": ("demo/media/sample.mp4", "demo/media/sample.json", "lines"),
}
"""The espeak-ng fixtures as conversations (split "heldout": no threshold of the turn-taking core was
chosen on them; speakers3 and the sample did tune the earlier, d-vector tracker)."""


def names(kind: str | None = None, split: str | None = None) -> list[str]:
    """Fixture names (sorted; the synthetic ones last), optionally only of one kind and/or split."""
    out = []
    for path in sorted(DATA.glob("*.json")):
        meta = json.loads(path.read_text(encoding="utf-8"))
        if (kind is None or meta["kind"] == kind) and (split is None or meta["split"] == split):
            out.append(meta["name"])
    if kind in (None, "synthetic") and split in (None, "heldout"):
        out += list(SYNTHETIC)
    return out


def _load_synthetic(name: str) -> Conversation:
    audio_rel, script_rel, key = SYNTHETIC[name]
    script = json.loads((REPO / script_rel).read_text(encoding="utf-8"))
    audio = decode(REPO / audio_rel)
    audio.flags.writeable = False
    lines = sorted(script[key], key=lambda ln: ln["start_s"])
    voices = {ln["speaker"]: ln.get("voice", "?") for ln in lines}
    return Conversation(
        name=name, audio=audio, sample_rate=SAMPLE_RATE,
        turns=tuple(Turn(str(ln["speaker"]), float(ln["start_s"]), float(ln["end_s"])) for ln in lines),
        overlaps=(),
        speakers=MappingProxyType({k: MappingProxyType({"gender": "?", "source": f"espeak-ng {v}"})
                                   for k, v in voices.items()}),
        split="heldout", kind="synthetic",
    )


def metadata(name: str) -> dict[str, Any]:
    """The fixture's JSON as it is (provenance, notes and, for spliced ones, the pieces)."""
    path = DATA / f"{name}.json"
    if not path.is_file():
        raise KeyError(f"no conversation fixture {name!r} (have: {', '.join(names())})")
    return json.loads(path.read_text(encoding="utf-8"))


def load(name: str) -> Conversation:
    """Decode a fixture's audio and reference; CallUnavailable if its audio package is missing."""
    if name in SYNTHETIC:
        return _load_synthetic(name)
    meta = metadata(name)
    source = meta["audio"]
    path = DATA / source if isinstance(source, str) else installed_file(source)
    audio = decode(path)
    audio.flags.writeable = False
    return Conversation(
        name=meta["name"],
        audio=audio,
        sample_rate=SAMPLE_RATE,
        turns=tuple(Turn(t["speaker"], t["start_s"], t["end_s"], t["backchannel"]) for t in meta["turns"]),
        overlaps=tuple((a, b) for a, b in meta["overlaps"]),
        speakers=MappingProxyType({k: MappingProxyType(dict(v)) for k, v in meta["speakers"].items()}),
        split=meta["split"],
        kind=meta["kind"],
    )


def installed_file(ref: Mapping[str, str]) -> Path:
    """A file inside an installed package, by its path in site-packages, checked by sha256.

    Found with importlib's search locations of the top-level (namespace) package, so nothing of
    the package is imported.
    """
    rel = ref["path"]
    hint = f"{ref['package']} {ref['version']} is needed for this fixture: {INSTALL_HINT}"
    spec = importlib.util.find_spec(rel.split("/", 1)[0])
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        path = Path(location).parent / rel
        if path.is_file():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != ref["sha256"]:
                raise CallUnavailable(f"{path} has sha256 {digest}, expected {ref['sha256']}; {hint}")
            return path
    raise CallUnavailable(f"{rel} not found in any installed package; {hint}")


def decode(path: Path) -> np.ndarray:
    """Any audio file PyAV reads -> float32 mono at 16 kHz (16-bit PCM/FLAC is decoded exactly)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        exact = stream.rate == SAMPLE_RATE and stream.channels == 1 and stream.format.name in ("s16", "s16p")
        if exact:
            return as_float32(np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)]))
        logger.info("resampling %s (%d Hz x%d) to 16 kHz mono", path, stream.rate, stream.channels)
        return np.concatenate(list(resample_frames(container.decode(stream), SAMPLE_RATE)))


def turns_with_their_speaker(conv: Conversation, found: Iterable[tuple[float, float, object]]) -> tuple[int, int, dict]:
    """How many reference turns (backchannels aside) got a final of their speaker: each found
    (start_s, end_s, label) stands for the reference speaker its label overlaps most; a turn counts
    when the finals of its speaker cover at least half of it and more of it than any other speaker's.
    Returns (turns with their speaker, turns, label -> reference speaker)."""
    found = list(found)
    overlap: Counter = Counter()
    for a, b, label in found:
        for t in conv.turns:
            overlap[label, t.speaker] += max(0.0, min(b, t.end_s) - max(a, t.start_s))
    label_speaker: dict = {}
    for (label, speaker), _ in overlap.most_common():
        label_speaker.setdefault(label, speaker)
    main = [t for t in conv.turns if not t.backchannel]
    right = 0
    for t in main:
        by_speaker: Counter = Counter()
        for a, b, label in found:
            if label in label_speaker:
                by_speaker[label_speaker[label]] += max(0.0, min(b, t.end_s) - max(a, t.start_s))
        if by_speaker and by_speaker.most_common(1)[0][0] == t.speaker and by_speaker[t.speaker] >= 0.5 * t.duration_s:
            right += 1
    return right, len(main), label_speaker
