"""The pitch-based speaker tracker on synthetic voiced signals."""

from __future__ import annotations

import numpy as np

from emostream.realtime.speakers import SpeakerTracker, median_pitch_hz


def voiced(f0: float, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(16000 * seconds)) / 16000
    rng = np.random.default_rng(seed)
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))  # a harmonic-rich "voice"
    return (0.3 * x + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def test_pitch_estimate() -> None:
    for f0 in (110.0, 220.0, 180.0):
        assert abs(median_pitch_hz(voiced(f0)) - f0) / f0 < 0.03
    assert median_pitch_hz(np.zeros(16000, np.float32)) is None


def test_tracker_tells_two_voices_apart_and_peek_learns_nothing() -> None:
    tracker = SpeakerTracker(n_slots=4)
    assert tracker.peek(voiced(110)) == 0  # nobody known yet: would be the first speaker
    slots = [tracker.assign(voiced(f, seed=i)) for i, f in enumerate([110, 220, 112, 215, 108])]
    assert slots == [0, 1, 0, 1, 0]
    assert tracker.peek(voiced(300)) == 2  # would be a third speaker...
    assert tracker.assign(voiced(111)) == 0  # ...but peeking created nobody
    tracker.reset()
    assert tracker.assign(voiced(220)) == 0


def test_single_mode_and_wrapping() -> None:
    assert SpeakerTracker(3, mode="single").assign(voiced(300)) == 0
    tracker = SpeakerTracker(n_slots=2, max_semitones=1.0)
    assert [tracker.assign(voiced(f)) for f in (100, 150, 220)] == [0, 1, 0]
