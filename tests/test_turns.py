"""Speaker turns inside speech (`emostream.realtime.turns`): the rules on scripted voices, then the
real models on real conversations with fast turn-taking.

The rule tests use `FakeVoices`, a stand-in embedder (named as such) for the code around it: the
scripted signal's value says who speaks (0.9: voice A, 0.8: voice B, 0.7: voice C), and a window's
"embedding" is the mix of those voices' orthogonal directions by how much of the window each holds,
so a window across a change is a mixture, as a real one is. The scripted VAD (`TrackVad`) reads the
same values as speech probabilities. Thresholds are set explicitly in these tests (the rules, not the
tuned values, are under test).
"""

from __future__ import annotations

import numpy as np
import pytest

from emostream.realtime.segmenter import Segmenter, SegmenterConfig
from emostream.realtime.speakers import SpeakerTracker
from emostream.realtime.turns import SpeakerTurns, TurnsConfig, TurnTaking, run_offline
from emostream.realtime.voice_embedding import EMBED_DIM, Embedding
from tests import conversations

SR = 16_000
VOICES = {0.9: 0, 0.8: 1, 0.7: 2}  # signal value -> voice direction


class TrackVad:
    """Stand-in for Silero: a window's speech probability is the mean of its new samples."""

    def __call__(self, windows: np.ndarray, h: np.ndarray, c: np.ndarray):
        return windows[:, 64:].mean(axis=1).astype(np.float32), h, c


class FakeVoices:
    """Stand-in embedder: a clip's vector mixes the scripted voices by their share of its samples."""

    name = "fake-voices"
    window_s = 1.6

    @staticmethod
    def vector(clip: np.ndarray) -> np.ndarray:
        v = np.zeros(EMBED_DIM)
        for value, axis in VOICES.items():
            v[axis] = float(np.mean(np.isclose(clip, value)))
        v[10] = 0.05  # a little common direction: never a zero vector
        return (v / np.linalg.norm(v)).astype(np.float32)

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.vector(w) for w in windows]) if windows else np.zeros((0, EMBED_DIM), np.float32)

    def embed_full(self, audio: np.ndarray) -> Embedding | None:
        speech = float(np.mean(audio > 0.5)) * audio.size / SR
        return Embedding(self.vector(audio), speech, 1) if speech >= 0.3 else None


def script(*parts: tuple[float, float]) -> np.ndarray:
    """(value, seconds) parts -> samples (0.0 is silence)."""
    return np.concatenate([np.full(int(round(s * SR)), v, np.float32) for v, s in parts])


def run(x: np.ndarray, tracker: SpeakerTracker | None = None, **turns_cfg) -> list:
    tracker = tracker or SpeakerTracker(9, embedder=FakeVoices(), new_threshold=0.8)
    cfg = TurnsConfig(**{"local_threshold": 0.5, **turns_cfg})
    taking = TurnTaking(Segmenter(SegmenterConfig(endpoint="turn", incomplete_silence_ms=600), vad=TrackVad()),
                        SpeakerTurns(tracker, cfg))
    return run_offline(x, taking, turn_model=lambda audio: 0.9)


# ------------------------------------------------------------------------------------ rules
def test_a_change_without_silence_splits_the_utterance_near_the_change():
    x = script((0.0, 0.5), (0.9, 4.0), (0.8, 4.0), (0.9, 4.0), (0.0, 1.5))  # A, B, A back to back
    found = run(x)
    assert [f.reason for f in found] == ["speaker_change", "speaker_change", "turn_complete"]
    assert [f.slot for f in found] == [0, 1, 0]
    assert abs(found[0].end_s - 4.5) <= 0.45 and abs(found[1].end_s - 8.5) <= 0.45
    assert found[1].start_s == found[0].end_s and found[2].start_s == found[1].end_s  # nothing lost
    assert all(f.decided_s - f.end_s < 2.5 for f in found[:2])  # found while the next voice speaks


def test_a_change_at_a_short_gap_is_cut_in_the_gap():
    x = script((0.0, 0.5), (0.9, 4.0), (0.0, 0.1), (0.8, 4.0), (0.0, 1.5))  # 100 ms: no pause ends a turn
    found = run(x)
    assert [f.slot for f in found] == [0, 1]
    assert 4.5 <= found[0].end_s <= 4.6  # inside the gap, not somewhere in a window's span


def test_a_brief_other_voice_stays_in_the_turn_and_flags_overlap():
    # A is known from a first turn; in A's second turn B cuts in for 0.8 s: fewer windows vote for a
    # change than confirm one (confirm_windows=4 here), so the turn stays A's and is flagged
    x = script((0.0, 0.5), (0.9, 3.0), (0.0, 1.0), (0.9, 3.0), (0.8, 0.8), (0.9, 3.0), (0.0, 1.5))
    found = run(x, confirm_windows=4)
    assert [f.slot for f in found] == [0, 0]
    assert [f.overlap for f in found] == [False, True]


def test_a_known_voice_comes_back_in_its_slot_and_a_new_one_opens_a_slot():
    x = script((0.0, 0.5), (0.9, 3.0), (0.0, 1.0), (0.8, 3.0), (0.0, 1.0), (0.9, 3.0), (0.0, 1.0), (0.7, 3.0),
               (0.0, 1.0))
    found = run(x)
    assert [f.slot for f in found] == [0, 1, 0, 2]
    assert [f.reason for f in found] == ["turn_complete"] * 4


def test_a_new_voice_needs_enough_speech_to_found_a_speaker():
    x = script((0.0, 0.5), (0.9, 3.0), (0.0, 1.0), (0.8, 1.2), (0.0, 1.0))  # B: shorter than a window
    lenient = SpeakerTracker(9, embedder=FakeVoices(), new_threshold=0.8, short_new_threshold=0.0)
    assert [f.slot for f in run(x, tracker=lenient)] == [0, 0]  # too little of B: the known voice
    assert [f.slot for f in run(x)] == [0, 1]  # unless B is unlike every known voice (short_new_threshold)
    tracker = SpeakerTracker(9, embedder=FakeVoices(), new_threshold=0.8, max_speakers=2)
    capped = run(script((0.0, 0.5), (0.9, 3.0), (0.0, 1.0), (0.8, 3.0), (0.0, 1.0), (0.7, 3.0), (0.0, 1.0)),
                 tracker=tracker)
    assert [f.slot for f in capped][:2] == [0, 1] and capped[2].slot in (0, 1)  # the cap: a known speaker
    assert tracker.speaker_count == 2


def test_no_detection_assigns_whole_utterances():
    x = script((0.0, 0.5), (0.9, 4.0), (0.8, 4.0), (0.0, 1.5))
    found = run(x, detect_changes=False)
    assert len(found) == 1 and found[0].reason == "turn_complete"


# ------------------------------------------------------------------------------------ real speech
def run_real(name: str) -> tuple[conversations.Conversation, list]:
    from emostream.realtime.turn_model import SmartTurn

    try:
        conv = conversations.load(name)
    except conversations.CallUnavailable as e:
        pytest.skip(str(e))
    taking = TurnTaking(Segmenter(SegmenterConfig(endpoint="turn")), SpeakerTurns(SpeakerTracker(9)))
    return conv, run_offline(conv.audio, taking, SmartTurn.shared())


def test_fast_turn_taking_between_two_real_voices():
    """pair_ff: two women from AMI meetings, 11 turns taken with gaps of 0-300 ms (some exactly 0),
    overlaps of 100-500 ms and pauses of 300-800 ms inside turns: no pause is long enough to end a
    turn, so the turns are found inside speech."""
    conv, found = run_real("pair_ff")
    right, turns, slot_speaker = conversations.turns_with_their_speaker(conv, ((f.start_s, f.end_s, f.slot) for f in found))
    assert len({f.slot for f in found}) == 2 and len(set(slot_speaker.values())) == 2
    assert right >= turns // 2, (right, turns)
    assert sum(f.reason == "speaker_change" for f in found) >= 3


def test_one_voice_stays_one_speaker():
    """A 27 s monologue with pauses of 0.4-1.2 s: one speaker, and no change of speaker inside it."""
    _, found = run_real("one_speaker")
    assert {f.slot for f in found} == {0}
    assert all(f.reason != "speaker_change" for f in found)


def test_six_people_and_talking_at_once_give_clear_results():
    """Six real voices (three from one meeting) taking fast turns: several speakers, never more than
    the model's slots; two voices talking at once for 9 s: one final per stretch, one speaker each."""
    conv, found = run_real("six_speakers")
    slots = {f.slot for f in found}
    assert 4 <= len(slots) <= 9, slots
    assert len(found) >= len([t for t in conv.turns if not t.backchannel]) // 2
    _, both = run_real("all_overlap")
    assert 1 <= len(both) <= 3 and all(isinstance(f.slot, int) for f in both)
