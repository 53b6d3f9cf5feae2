"""Speaker tracking: the pitch tracker on synthetic voiced signals, the voice-embedding tracker on
whole utterances of espeak-ng speech (tests/data/speakers3.wav and its held-out twin: three voices
whose pitch moves line to line; the bundled demo/media/sample.mp4: two voices), and its clustering
rules on constructed embeddings. Real voices inside speech: tests/test_turns.py."""

from __future__ import annotations

import json
import wave
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from emostream.realtime.speakers import SpeakerTracker, median_pitch_hz
from emostream.realtime.voice_embedding import EMBED_DIM, Embedding, GE2EEmbedder, shared_embedder

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def voiced(f0: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))  # a harmonic-rich "voice"
    return (0.3 * x + 0.01 * rng.normal(size=t.size)).astype(np.float32)


# ------------------------------------------------------------------------------------ pitch mode
def test_pitch_estimate() -> None:
    for f0 in (110.0, 220.0, 180.0):
        assert abs(median_pitch_hz(voiced(f0)) - f0) / f0 < 0.03
    assert median_pitch_hz(np.zeros(16000, np.float32)) is None


def test_tracker_tells_two_voices_apart_and_peek_learns_nothing() -> None:
    tracker = SpeakerTracker(n_slots=4, mode="pitch")
    assert tracker.peek(voiced(110)) == 0  # nobody known yet: would be the first speaker
    slots = [tracker.assign(voiced(f, seed=i)) for i, f in enumerate([110, 220, 112, 215, 108])]
    assert slots == [0, 1, 0, 1, 0]
    assert tracker.peek(voiced(300)) == 2  # would be a third speaker...
    assert tracker.assign(voiced(111)) == 0  # ...but peeking created nobody
    assert tracker.speaker_count == 2
    tracker.reset()
    assert tracker.assign(voiced(220)) == 0


def test_single_mode_and_wrapping() -> None:
    assert SpeakerTracker(3, mode="single").assign(voiced(300)) == 0
    tracker = SpeakerTracker(n_slots=2, mode="pitch", max_semitones=1.0)
    assert [tracker.assign(voiced(f)) for f in (100, 150, 220)] == [0, 1, 0]


def test_unknown_mode_is_an_error() -> None:
    with pytest.raises(ValueError):
        SpeakerTracker(2, mode="loudness")


# ------------------------------------------------------------------------------------ espeak-ng speech
def load_lines(name: str) -> tuple[np.ndarray, list[dict]]:
    if name == "sample":
        from emostream.realtime.sources import decode_file

        return decode_file(ROOT / "demo/media/sample.mp4")[0], json.loads((ROOT / "demo/media/sample.json").read_text())["lines"]
    with wave.open(str(ROOT / f"tests/data/{name}.wav")) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return audio, json.loads((ROOT / f"tests/data/{name}.json").read_text())["lines"]


def cut(audio: np.ndarray, lines: list[dict]) -> tuple[list[np.ndarray], list[str]]:
    return ([audio[round(ln["start_s"] * SR) : round(ln["end_s"] * SR)] for ln in lines],
            [ln["speaker"] for ln in lines])


def purity(found: Sequence[int], truth: Sequence[str]) -> tuple[float, float]:
    pairs = Counter(zip(found, truth))
    pur = sum(max(c for (f, _), c in pairs.items() if f == k) for k in set(found)) / len(found)
    inv = sum(max(c for (_, t), c in pairs.items() if t == k) for k in set(truth)) / len(found)
    return pur, inv


@pytest.fixture(scope="module")
def embedder() -> GE2EEmbedder:
    return GE2EEmbedder.shared()


PITCH_MOVES = pytest.mark.xfail(
    strict=True, reason="issue 18, not met: GE2E does not keep espeak-ng voices whose pitch moves by -p 20..80 "
    "apart from each other (whole lines: 2 or 4 speakers for 3; some lines sit closer to another voice)")


@pytest.fixture(scope="module", params=["speakers3", "speakers3_heldout", "sample"])
def recording(request: pytest.FixtureRequest, embedder: GE2EEmbedder) -> dict:
    audio, lines = load_lines(request.param)
    cuts, truth = cut(audio, lines)
    return {"name": request.param, "cuts": cuts, "truth": truth, "embs": [embedder.embed_full(c) for c in cuts]}


def test_fixtures_are_small_and_pitch_moves_within_speakers() -> None:
    for name in ("speakers3", "speakers3_heldout"):
        assert (ROOT / f"tests/data/{name}.wav").stat().st_size < 1_500_000
        _, lines = load_lines(name)
        assert len({ln["speaker"] for ln in lines}) >= 3 and len(lines) >= 10
        for spk in {ln["speaker"] for ln in lines}:
            pitches = [ln["pitch"] for ln in lines if ln["speaker"] == spk]
            assert max(pitches) - min(pitches) >= 40


def test_same_voice_is_closer_than_other_voices(recording: dict, request: pytest.FixtureRequest) -> None:
    if recording["name"] == "speakers3_heldout":
        request.applymarker(PITCH_MOVES)
    vecs = np.stack([e.vector for e in recording["embs"]])
    truth = np.array(recording["truth"])
    sims = vecs @ vecs.T
    same = (truth[:, None] == truth[None, :]) & ~np.eye(len(truth), dtype=bool)
    assert sims[same].mean() > sims[truth[:, None] != truth[None, :]].mean() + 0.1
    for i in range(len(truth)):  # every line is closer, on average, to its own voice than to any other
        own = sims[i, same[i]].mean()
        for other in set(truth) - {truth[i]}:
            assert own > sims[i, truth == other].mean(), (recording["name"], i, other)


def test_voice_tracker_finds_the_speakers(recording: dict, request: pytest.FixtureRequest) -> None:
    """Whole lines, one at a time: the held-out twin had 1 speaker for 3 (purity 0.40) with the
    thresholds fitted to the other two; issue 18's target is purity >= 0.95 both ways."""
    if recording["name"].startswith("speakers3"):
        request.applymarker(PITCH_MOVES)
    tracker = SpeakerTracker(9)  # voice mode is the default
    assert tracker.mode == "voice"
    found = [tracker.assign_embedding(e) for e in recording["embs"]]
    pur, inv = purity(found, recording["truth"])
    n_true = len(set(recording["truth"]))
    assert pur >= 0.95 and inv >= 0.95, (recording["name"], found)
    assert tracker.speaker_count == n_true
    assert tracker.last_similarity is not None and 0.0 < tracker.last_similarity <= 1.0


def test_peek_agrees_with_assign_and_learns_nothing(recording: dict) -> None:
    peeking, plain = SpeakerTracker(9), SpeakerTracker(9)
    for c, e in zip(recording["cuts"], recording["embs"]):
        before = peeking.peek(c)
        slot = peeking.assign(c)
        assert slot == plain.assign_embedding(e)  # peeking changed nothing
        assert before == slot  # same audio: same decision rule, same slot


def test_pitch_mode_fails_on_the_pitch_varied_fixture() -> None:
    cuts, truth = cut(*load_lines("speakers3"))
    tracker = SpeakerTracker(9, mode="pitch")
    found = [tracker.assign(c) for c in cuts]
    assert min(purity(found, truth)) < 0.9  # what the voice tracker fixes


# ------------------------------------------------------------------------------------ rules
def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def emb(v: np.ndarray, seconds: float = 3.0) -> Embedding:
    return Embedding(unit(v), seconds, 4)


def basis(i: int) -> np.ndarray:
    v = np.zeros(EMBED_DIM)
    v[i] = 1.0
    return v


def test_short_utterances_join_a_known_speaker(embedder: GE2EEmbedder) -> None:
    tracker = SpeakerTracker(4, embedder=embedder, new_threshold=0.7, reliable_seconds=1.5, short_new_threshold=0.4)
    a, b = basis(0), basis(1)
    assert tracker.assign_embedding(emb(a)) == 0
    assert tracker.assign_embedding(emb(b)) == 1
    weak = a * 0.6 + basis(2) * 0.8  # cosine 0.6 to a, 0 to b
    assert tracker.decide(emb(weak, seconds=0.8)).slot == 0  # short: too unreliable to found a speaker
    assert tracker.decide(emb(weak, seconds=3.0)).speaker is None  # long and unlike: a new speaker
    unlike = a * 0.3 + basis(2) * np.sqrt(1 - 0.09)  # cosine 0.3: unlike every known voice
    assert tracker.decide(emb(unlike, seconds=0.8)).speaker is None  # even short: a new speaker
    assert tracker.assign_embedding(None) == 1  # no embedding: the last speaker
    other = SpeakerTracker(4, embedder=embedder, short_policy="other")
    other.assign_embedding(emb(a))
    other.assign_embedding(emb(b))
    assert other.assign_embedding(None) == 0  # turn-taking: the one before the last
    assert SpeakerTracker(4, embedder=embedder).assign_embedding(None) == 0  # nobody known: the first slot


def test_speaker_cap_and_merges_keep_old_slots(embedder: GE2EEmbedder) -> None:
    capped = SpeakerTracker(9, embedder=embedder, max_speakers=2, new_threshold=0.6)
    third = basis(2) + 0.3 * basis(1)  # unlike both (cosine 0.29 to the second): would be new
    assert [capped.assign_embedding(emb(v)) for v in (basis(0), basis(1), third)] == [0, 1, 1]  # the nearest
    assert capped.speaker_count == 2

    tracker = SpeakerTracker(3, embedder=embedder, new_threshold=0.7, merge_threshold=0.8)
    a, c = basis(0), basis(1)
    b = 0.65 * a + np.sqrt(1 - 0.65**2) * basis(2)  # cosine 0.65 to a: its own speaker at 0.7
    assert [tracker.assign_embedding(emb(v)) for v in (a, c, b)] == [0, 1, 2]
    assert tracker.speaker_count == 3
    # utterances between a and b pull the two profiles together until they merge into slot 0
    mid = unit(a + unit(b))
    slots = [tracker.assign_embedding(emb(mid)) for _ in range(3)]
    assert tracker.speaker_count == 2 and slots[-1] == 0
    assert tracker.assign_embedding(emb(b)) == 0  # b's speaker now answers in the older slot
    assert tracker.assign_embedding(emb(basis(3))) == 2  # a new speaker reuses the freed slot (none left)
    tracker.reset()
    assert tracker.speaker_count == 0 and tracker.assign_embedding(emb(c)) == 0


def test_learn_records_windows_and_a_new_speaker() -> None:
    tracker = SpeakerTracker(4, embedder=shared_embedder())
    a = np.stack([unit(basis(0) + 0.1 * basis(i)) for i in (5, 6, 7)])  # (3, 256): three windows of one voice
    assert tracker.learn(None, a) == 0 and tracker.speaker_count == 1
    assert tracker.similarities(unit(basis(0)))[0] > 0.95
    assert tracker.learn(None, np.zeros((0, EMBED_DIM))) == 0  # nothing to found a speaker on: the known one
    assert tracker.speaker_count == 1
