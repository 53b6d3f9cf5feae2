"""Streaming segmenter: rules on a scripted probability track, boundaries with the real Silero model."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from emostream.realtime.segmenter import (
    WINDOW,
    EndpointPending,
    Segmenter,
    SegmenterConfig,
    SpeechEnd,
    SpeechResumed,
    SpeechStart,
)

DATA = Path(__file__).resolve().parent / "data"
SR = 16_000
NS = 62_500  # ns per sample at 16 kHz
T0 = 5_000_000_000  # arbitrary monotonic_ns origin
TOL = int(0.100 * SR)  # boundary tolerance: 100 ms


# ---------------------------------------------------------------------------- helpers
class TrackVad:
    """A stand-in for Silero: a window's speech probability is the mean of its new samples.

    So a test signal *is* its probability track, and the state machine is tested exactly.
    """

    def __call__(self, windows: np.ndarray, h: np.ndarray, c: np.ndarray):
        return windows[:, 64:].mean(axis=1).astype(np.float32), h, c


def track(*parts: tuple[float, int]) -> np.ndarray:
    """(probability, number of 32 ms windows) parts -> samples."""
    return np.concatenate([np.full(n * WINDOW, p, np.float32) for p, n in parts])


def run(seg: Segmenter, x: np.ndarray, chunk: int, t0: int = T0) -> list:
    events = []
    for i in range(0, x.size, chunk):
        events += seg.push(x[i : i + chunk], t0 + i * NS)
    return events + seg.flush()


def of(events: list, kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def fake(**cfg) -> Segmenter:
    return Segmenter(SegmenterConfig(**cfg), vad=TrackVad())


def load_dialogue() -> tuple[np.ndarray, list[dict]]:
    with wave.open(str(DATA / "dialogue.wav")) as w:
        assert w.getframerate() == SR and w.getnchannels() == 1
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    meta = json.loads((DATA / "dialogue.json").read_text())
    return audio, meta["utterances"]


@pytest.fixture(scope="module")
def dialogue() -> tuple[np.ndarray, list[dict]]:
    return load_dialogue()


@pytest.fixture(scope="module")
def dialogue_events(dialogue) -> list:
    audio, _ = dialogue
    return run(Segmenter(), audio, 4000)


# ---------------------------------------------------------------------------- rules (scripted track)
def test_events_hysteresis_padding_and_times():
    # 10 w silence, 20 w speech, 3 w ambiguous (0.4: between the thresholds, still speech), 20 w speech, silence
    x = track((0.0, 10), (0.9, 20), (0.4, 3), (0.9, 20), (0.0, 20))
    ev = run(fake(), x, 700)
    assert [type(e) for e in ev] == [SpeechStart, EndpointPending, SpeechEnd]
    start, pending, end = ev
    assert start.start_sample == 10 * WINDOW and start.t_ns == T0 + 10 * WINDOW * NS
    speech_end = 53 * WINDOW
    assert (end.speech_start_sample, end.speech_end_sample) == (10 * WINDOW, speech_end)
    assert (end.start_sample, end.end_sample) == (10 * WINDOW - 1600, speech_end + 1600)  # 100 ms pads
    assert end.t_start_ns == T0 + end.start_sample * NS and end.t_end_ns == T0 + end.end_sample * NS
    assert end.speech_end_ns == T0 + speech_end * NS
    np.testing.assert_array_equal(end.audio, x[end.start_sample : end.end_sample])
    assert not end.forced
    assert (pending.start_sample, pending.end_sample) == (end.start_sample, speech_end)
    np.testing.assert_array_equal(pending.audio, x[pending.start_sample : pending.end_sample])
    utt = end.to_utterance(5, speaker=1)
    assert (utt.id, utt.t_start_ns, utt.t_end_ns, utt.speaker) == (5, end.t_start_ns, end.t_end_ns, 1)


def test_active_audio_while_speaking():
    seg = fake()
    assert seg.push(track((0.0, 10), (0.9, 5)), T0) == [] and seg.active_audio() is None  # not confirmed yet
    ev = seg.push(track((0.9, 10)), T0 + 15 * WINDOW * NS)
    assert [type(e) for e in ev] == [SpeechStart] and seg.in_speech
    assert seg.active_audio().size == 25 * WINDOW - (10 * WINDOW - 1600)
    assert seg.active_start_ns == T0 + (10 * WINDOW - 1600) * NS


def test_pending_then_resumed_then_end():
    # a 6-window pause (192 ms > 160 ms pending, < 300 ms end), then 0.4 (does not end the silence), then speech
    x = track((0.0, 5), (0.9, 15), (0.1, 6), (0.4, 1), (0.9, 15), (0.0, 15))
    ev = run(fake(), x, 512)
    assert [type(e) for e in ev] == [SpeechStart, EndpointPending, SpeechResumed, EndpointPending, SpeechEnd]
    assert ev[1].end_sample == 20 * WINDOW
    assert ev[2].sample == 27 * WINDOW and ev[2].t_ns == T0 + 27 * WINDOW * NS
    assert ev[3].end_sample == 42 * WINDOW == ev[4].speech_end_sample
    assert all(e.segment == 0 for e in ev)


def test_min_speech_rejects_short_burst():
    short = track((0.0, 10), (0.9, 7), (0.0, 20))  # 224 ms < 250 ms
    assert run(fake(), short, 512) == []
    long = track((0.0, 10), (0.9, 8), (0.0, 20))  # 256 ms
    assert [type(e) for e in run(fake(), long, 512)] == [SpeechStart, EndpointPending, SpeechEnd]


def test_forced_split_hard():
    x = track((0.0, 10), (0.9, 600), (0.0, 20))  # 19.2 s of unbroken speech
    ev = run(fake(max_utterance_s=5.0), x, 4000)
    ends = of(ev, SpeechEnd)
    assert [e.forced for e in ends] == [True, True, True, False]
    assert all(e.audio.size <= 5 * SR for e in ends)
    for a, b in zip(ends, ends[1:]):
        assert b.start_sample == a.end_sample == b.speech_start_sample  # contiguous, nothing lost
    assert ends[0].speech_start_sample == 10 * WINDOW and ends[-1].speech_end_sample == 610 * WINDOW
    starts = of(ev, SpeechStart)
    assert [s.segment for s in starts] == [0, 1, 2, 3] == [e.segment for e in ends]


def test_forced_split_prefers_last_pause():
    x = track((0.0, 10), (0.9, 60), (0.0, 4), (0.9, 60), (0.0, 4), (0.9, 60), (0.0, 20))
    ev = run(fake(max_utterance_s=5.0), x, 1000)
    ends = of(ev, SpeechEnd)
    assert len(ends) == 2 and ends[0].forced and not ends[1].forced
    assert ends[0].speech_end_sample == 134 * WINDOW  # the second pause, the last before 5 s
    assert ends[0].end_sample == 134 * WINDOW + 2 * WINDOW  # padding limited to half the pause
    assert ends[1].speech_start_sample == 138 * WINDOW
    assert ends[1].start_sample == ends[0].end_sample  # pre-padding never overlaps the previous utterance


def test_forced_split_during_silence_ends_there():
    # speech up to just under 5 s, then a pause that is still running when the limit is reached
    x = track((0.0, 10), (0.9, 150), (0.0, 30))
    ev = run(fake(max_utterance_s=5.0, end_silence_ms=600, pad_end_ms=100), x, 512)
    ends = of(ev, SpeechEnd)
    assert len(ends) == 1 and ends[0].forced
    assert ends[0].speech_end_sample == 160 * WINDOW
    assert of(ev, SpeechStart)[0].segment == 0 and len(of(ev, SpeechStart)) == 1


def test_flush_closes_open_utterance():
    ev = run(fake(), track((0.0, 5), (0.9, 30)), 1000)  # stream ends mid-speech
    ends = of(ev, SpeechEnd)
    assert len(ends) == 1 and ends[0].forced and ends[0].end_sample == 35 * WINDOW
    ev = run(fake(), track((0.0, 5), (0.9, 30), (0.0, 6)), 1000)  # ends inside a pause
    ends = of(ev, SpeechEnd)
    assert len(ends) == 1 and not ends[0].forced and ends[0].end_sample == 35 * WINDOW + 1600


def test_flush_uses_partial_last_window():
    x = np.concatenate([track((0.0, 5), (0.9, 30)), np.full(100, 0.9, np.float32)])
    ends = of(run(fake(), x, 333), SpeechEnd)
    assert ends[0].end_sample == x.size and ends[0].audio.size == x.size - ends[0].start_sample


def test_clock_jitter_ignored_and_gap_reanchors():
    x = track((0.0, 10), (0.9, 20), (0.0, 20), (0.9, 20), (0.0, 20))
    seg, ev = fake(), []
    jitter = np.random.default_rng(0).integers(-5_000_000, 5_000_000, x.size // 1600 + 1)  # +-5 ms
    gap_at = 50 * WINDOW
    for k, i in enumerate(range(0, x.size, 1600)):
        skip = 2_000_000_000 if i >= gap_at else 0  # 2 s of audio lost before sample gap_at
        ev += seg.push(x[i : i + 1600], T0 + i * NS + int(jitter[k]) + skip)
    ev += seg.flush()
    first, second = of(ev, SpeechEnd)
    origin = T0 + int(jitter[0])  # the first chunk anchors the clock; later jitter does not leak in
    assert first.t_start_ns == origin + first.start_sample * NS
    assert first.t_end_ns == origin + first.end_sample * NS
    assert second.start_sample < gap_at == second.speech_start_sample  # its padding was captured before the gap
    assert second.t_start_ns == origin + second.start_sample * NS
    assert abs(second.speech_start_ns - (T0 + gap_at * NS + 2_000_000_000)) <= 5_000_000
    assert second.t_end_ns - second.speech_start_ns == (second.end_sample - gap_at) * NS


def test_int16_input_and_config_validation():
    x = (track((0.0, 5), (0.9, 20), (0.0, 20)) * 32767).astype(np.int16)
    assert len(of(run(fake(), x, 512), SpeechEnd)) == 1
    with pytest.raises(ValueError):
        SegmenterConfig(start_threshold=0.3, end_threshold=0.5)
    with pytest.raises(ValueError):
        SegmenterConfig(pad_end_ms=400, end_silence_ms=300)
    with pytest.raises(ValueError):
        SegmenterConfig(sample_rate=8000)
    with pytest.raises(ValueError):
        fake().push(np.zeros((10, 2), np.float32), 0)


# ---------------------------------------------------------------------------- real Silero model
def test_fixture_boundaries(dialogue, dialogue_events):
    _, truth = dialogue
    ends = of(dialogue_events, SpeechEnd)
    assert len(ends) == len(truth)
    for e, u in zip(ends, truth):
        assert not e.forced
        assert abs(e.speech_start_sample - round(u["start_s"] * SR)) <= TOL, (e, u)
        assert abs(e.speech_end_sample - round(u["end_s"] * SR)) <= TOL, (e, u)
        assert e.start_sample == e.speech_start_sample - 1600 and e.end_sample == e.speech_end_sample + 1600
        assert e.audio.dtype == np.float32 and e.audio.size == e.end_sample - e.start_sample


def test_fixture_pending_matches_final(dialogue_events):
    """Every utterance was announced by an EndpointPending whose audio it extends by the padding."""
    last_pending: dict[int, EndpointPending] = {}
    for e in dialogue_events:
        if isinstance(e, EndpointPending):
            last_pending[e.segment] = e
        elif isinstance(e, SpeechResumed):
            assert last_pending.pop(e.segment).end_sample < e.sample
        elif isinstance(e, SpeechEnd):
            p = last_pending.pop(e.segment)
            assert p.start_sample == e.start_sample and e.end_sample - p.end_sample == 1600
            np.testing.assert_array_equal(e.audio[: p.audio.size], p.audio)


def test_chunk_size_independence(dialogue, dialogue_events):
    audio, _ = dialogue
    small = run(Segmenter(), audio, 160)
    odd = run(Segmenter(), audio, 777)
    for other in (small, odd):
        assert len(other) == len(dialogue_events)
        for a, b in zip(other, dialogue_events):
            assert type(a) is type(b)
            for name in a.__slots__:
                va, vb = getattr(a, name), getattr(b, name)
                if isinstance(va, np.ndarray):
                    np.testing.assert_array_equal(va, vb)
                else:
                    assert va == vb, name


def test_speech_in_noise_at_known_times(dialogue):
    """Fixture utterances cut at their true bounds and placed in noise at chosen times."""
    audio, truth = dialogue
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(14 * SR) * 0.003).astype(np.float32)  # about -50 dBFS white noise
    placed = []
    for k, at_s in zip((1, 3, 5), (0.7, 5.1, 9.6)):
        u = truth[k]
        piece = audio[round(u["start_s"] * SR) : round(u["end_s"] * SR)]
        at = round(at_s * SR)
        x[at : at + piece.size] += piece
        placed.append((at, at + piece.size))
    ends = of(run(Segmenter(), x, 1024), SpeechEnd)
    assert [(abs(e.speech_start_sample - a) <= TOL, abs(e.speech_end_sample - b) <= TOL)
            for e, (a, b) in zip(ends, placed)] == [(True, True)] * 3
    assert len(ends) == 3


def test_real_forced_split(dialogue):
    audio, truth = dialogue
    u = truth[0]  # about 3.5 s of speech
    x = audio[: round((u["end_s"] + 1.0) * SR)]
    ends = of(run(Segmenter(SegmenterConfig(max_utterance_s=2.0)), x, 4000), SpeechEnd)
    assert len(ends) >= 2 and all(e.forced for e in ends[:-1]) and not ends[-1].forced
    assert all(e.audio.size <= 2 * SR for e in ends)
    assert abs(ends[0].speech_start_sample - round(u["start_s"] * SR)) <= TOL
    assert abs(ends[-1].speech_end_sample - round(u["end_s"] * SR)) <= TOL
    for a, b in zip(ends, ends[1:]):
        assert b.start_sample >= a.end_sample


def test_real_min_speech(dialogue):
    audio, truth = dialogue
    rng = np.random.default_rng(2)
    quiet = (rng.standard_normal(SR) * 5e-4).astype(np.float32)
    s0 = round(truth[1]["start_s"] * SR)
    blip = audio[s0 : s0 + SR // 10]  # 100 ms of speech
    x = np.concatenate([quiet, blip, quiet, quiet])
    assert run(Segmenter(), x, 512) == []
    assert len(of(run(Segmenter(SegmenterConfig(min_speech_ms=0)), x, 512), SpeechEnd)) == 1  # it is speech
    click = quiet.copy()
    click[8000:8080] += (rng.standard_normal(80) * 0.8).astype(np.float32)
    assert run(Segmenter(), np.concatenate([click, quiet]), 512) == []


# ---------------------------------------------------------------------------- end of turn (endpoint "turn")
def judged(seg: Segmenter, x: np.ndarray, p_complete: float | None, chunk: int = WINDOW) -> list:
    """Run x through seg, answering each EndpointPending with P(turn complete) = p_complete (None: never)."""
    events = []
    for i in range(0, x.size, chunk):
        for ev in seg.push(x[i : i + chunk], T0 + i * NS):
            events.append(ev)
            if isinstance(ev, EndpointPending) and p_complete is not None:
                seg.set_turn_probability(ev.segment, ev.end_sample, p_complete)
    return events + seg.flush()


TURN = {"endpoint": "turn", "pending_silence_ms": 96, "turn_silence_ms": 192, "incomplete_silence_ms": 960}


def test_a_complete_turn_ends_after_a_short_pause():
    x = track((0.0, 5), (0.9, 30), (0.0, 8), (0.9, 20), (0.0, 40))  # pauses of 256 ms, then 1280 ms
    ends = of(judged(fake(**TURN), x, 0.9), SpeechEnd)
    assert [e.reason for e in ends] == ["turn_complete", "turn_complete"]
    assert ends[0].speech_end_sample == 35 * WINDOW and ends[1].speech_start_sample == 43 * WINDOW


def test_an_incomplete_turn_waits_for_a_long_pause():
    x = track((0.0, 5), (0.9, 30), (0.0, 8), (0.9, 20), (0.0, 40))
    ends = of(judged(fake(**TURN), x, 0.1), SpeechEnd)
    assert [e.reason for e in ends] == ["silence"]  # the 256 ms pause stayed inside the turn
    assert (ends[0].speech_start_sample, ends[0].speech_end_sample) == (5 * WINDOW, 63 * WINDOW)
    unjudged = of(judged(fake(**TURN), x, None), SpeechEnd)  # no verdict: the same long wait
    assert [(e.reason, e.speech_end_sample) for e in unjudged] == [("silence", 63 * WINDOW)]


def test_the_silence_endpoint_ignores_verdicts():
    x = track((0.0, 5), (0.9, 30), (0.0, 8), (0.9, 20), (0.0, 40))
    ends = of(judged(fake(end_silence_ms=224, pending_silence_ms=96), x, 0.1), SpeechEnd)
    assert [e.reason for e in ends] == ["silence", "silence"]


def test_a_verdict_for_an_old_pause_is_ignored():
    seg = fake(**TURN)
    x = track((0.0, 5), (0.9, 30), (0.0, 4))  # a 128 ms pause: pending at 96 ms
    pending = of(seg.push(x, T0), EndpointPending)
    assert len(pending) == 1
    seg.push(track((0.9, 10)), T0 + x.size * NS)  # speech resumed: that pause is over
    seg.set_turn_probability(pending[0].segment, pending[0].end_sample, 0.99)
    ends = of(seg.push(track((0.0, 10)), T0 + (x.size + 10 * WINDOW) * NS), SpeechEnd)
    assert ends == []  # 320 ms of a new pause, not judged: no turn_complete end


def test_split_at_ends_one_utterance_and_starts_the_next_without_silence():
    seg = fake(**TURN)
    x = track((0.0, 5), (0.9, 60))
    events = seg.push(x, T0)
    assert [type(e) for e in events] == [SpeechStart]
    cut = 40 * WINDOW + 100
    end, start = seg.split_at(cut)
    assert isinstance(end, SpeechEnd) and isinstance(start, SpeechStart)
    assert end.reason == "speaker_change" and not end.forced
    assert (end.speech_end_sample, end.end_sample) == (cut, cut)  # no trailing pad into the next voice
    assert start.start_sample == cut and start.segment == end.segment + 1 and seg.in_speech
    np.testing.assert_array_equal(end.audio, x[end.start_sample : cut])
    assert seg.active_start_sample == cut  # no leading pad back into the previous voice
    rest = of(seg.push(track((0.0, 40)), T0 + x.size * NS) + seg.flush(), SpeechEnd)
    assert [(e.start_sample, e.speech_end_sample, e.reason) for e in rest] == [(cut, 65 * WINDOW, "silence")]
    assert seg.split_at(10) == []  # nothing open


def test_end_of_turn_config_is_checked():
    with pytest.raises(ValueError):
        SegmenterConfig(endpoint="vad")
    with pytest.raises(ValueError):
        SegmenterConfig(endpoint="turn", turn_silence_ms=2000, incomplete_silence_ms=1000)
    with pytest.raises(ValueError):
        SegmenterConfig(endpoint="turn", pending_silence_ms=300, turn_silence_ms=200)
    with pytest.raises(ValueError):
        SegmenterConfig(turn_threshold=1.0)
