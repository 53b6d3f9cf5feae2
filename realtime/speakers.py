"""A small online speaker tracker: one voice-pitch centroid per speaker. No I/O.

There is no diarization model among the offline packages, so speakers are told apart by their
median fundamental frequency (autocorrelation pitch over voiced 32 ms frames): an utterance whose
pitch lies within `max_semitones` of a known speaker's running median is that speaker, otherwise
a new one. This separates voices of clearly different pitch (the demo's two voices) and is a
known limitation for similar voices; `mode="single"` puts everyone in one slot.
"""

from __future__ import annotations

import math

import numpy as np

from emostream.realtime.types import SAMPLE_RATE


def median_pitch_hz(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, fmin: float = 60.0,
                    fmax: float = 400.0) -> float | None:
    """Median F0 over voiced frames, or None when nothing is voiced. audio: (n,) float32."""
    frame = 1024
    hop = 512
    lag_min = int(sample_rate / fmax)
    lag_max = int(sample_rate / fmin)
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < frame:
        return None
    energy_floor = 0.1 * float(np.sqrt(np.mean(x**2)) + 1e-9)
    pitches = []
    for start in range(0, x.size - frame + 1, hop):
        seg = x[start : start + frame]
        seg = seg - seg.mean()
        if np.sqrt(np.mean(seg**2)) < energy_floor:
            continue
        spec = np.fft.rfft(seg, 2 * frame)
        ac = np.fft.irfft(spec * np.conj(spec))[: lag_max + 1]  # (lag_max+1,)
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lag_min + int(np.argmax(ac[lag_min : lag_max + 1]))
        if ac[lag] > 0.5:  # clearly periodic: voiced
            pitches.append(sample_rate / lag)
    return float(np.median(pitches)) if len(pitches) >= 3 else None


class SpeakerTracker:
    """Assigns utterances to speaker slots by pitch; slots wrap at `n_slots`."""

    def __init__(self, n_slots: int, mode: str = "pitch", max_semitones: float = 3.0) -> None:
        if mode not in ("pitch", "single"):
            raise ValueError(f"speaker mode must be 'pitch' or 'single', got {mode!r}")
        self.n_slots = n_slots
        self.mode = mode
        self.max_semitones = max_semitones
        self._pitches: list[list[float]] = []
        self._last = 0

    def reset(self) -> None:
        self._pitches.clear()
        self._last = 0

    def _nearest(self, f0: float) -> tuple[int | None, float]:
        best, best_dist = None, math.inf
        for i, seen in enumerate(self._pitches):
            dist = abs(12 * math.log2(f0 / float(np.median(seen))))
            if dist < best_dist:
                best, best_dist = i, dist
        return best, best_dist

    def peek(self, audio: np.ndarray) -> int:
        """The likely slot for partial audio (interim predictions), learning nothing from it."""
        if self.mode == "single":
            return 0
        f0 = median_pitch_hz(audio)
        if f0 is None:
            return self._last
        best, dist = self._nearest(f0)
        if best is None or dist > self.max_semitones:
            return len(self._pitches) % self.n_slots  # would be a new speaker
        return best % self.n_slots

    def assign(self, audio: np.ndarray) -> int:
        """The slot of the speaker of this (final) utterance's audio; updates the speaker's pitch."""
        if self.mode == "single":
            return 0
        f0 = median_pitch_hz(audio)
        if f0 is None:  # unvoiced: keep the previous speaker
            return self._last
        best, best_dist = self._nearest(f0)
        if best is None or best_dist > self.max_semitones:
            self._pitches.append([f0])
            best = len(self._pitches) - 1
        else:
            self._pitches[best].append(f0)
        self._last = best % self.n_slots
        return self._last
