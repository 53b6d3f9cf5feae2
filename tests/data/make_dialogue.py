"""Synthesise the two-speaker test dialogue with espeak-ng.

Writes `dialogue.wav` (16 kHz mono int16) and `dialogue.json` (per utterance: speaker, voice, text,
start_s, end_s of the actual speech) next to this script. The speech boundaries are measured on
the synthesised audio itself: each utterance is trimmed of its leading/trailing digital silence
(sentence by sentence) before it is placed, so `start_s`/`end_s` are exact sample positions of the first/last non-silent
sample. A faint seeded noise floor is added afterwards so the silences are not digital zeros.

Needs the `espeak-ng` binary (`apt-get install espeak-ng`), numpy and scipy. Usage:

    python tests/data/make_dialogue.py [--out-dir tests/data]

The committed files were made with eSpeak NG 1.51; other versions give slightly different audio,
so regenerate both files together.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
import wave
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
VOICES = {"A": "en-us+m3", "B": "en-us+f3"}
# (speaker, text, silence before in seconds). Clear emotional content, one per utterance.
SCRIPT: tuple[tuple[str, str, float], ...] = (
    ("A", "I can't believe you lied to me again. I am so angry right now!", 0.6),
    ("B", "I'm really sorry. I never wanted to hurt you.", 1.0),
    ("A", "You always say that, and nothing ever changes.", 0.9),
    ("B", "Please, I feel terrible. I miss how happy we were.", 1.2),
    ("A", "Wait, you got the job? That is wonderful news!", 0.8),
    ("B", "Yes! I am so excited, I could dance all night.", 1.1),
)
TRAILING_SILENCE_S = 0.8
# espeak-ng pauses 250-400 ms after '.', '!' and '?', long enough for a segmenter with a 300 ms
# end-of-speech silence to split the utterance. Synthesise sentence by sentence and join them with
# a shorter pause, so each scripted utterance is one turn.
SENTENCE_PAUSE_S = 0.15
SILENCE_LEVEL = 1e-3  # |x| below this (-60 dBFS) counts as digital silence when trimming
NOISE_DBFS = -66.0  # RMS of the added noise floor


def synthesise(text: str, voice: str, speed: int = 165) -> np.ndarray:
    """espeak-ng -> float32 mono at SAMPLE_RATE, (n,)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng not found: install it (apt-get install espeak-ng)")
    wav_bytes = subprocess.run(
        [exe, "-v", voice, "-s", str(speed), "--stdout", text], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(wav_bytes)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    g = gcd(SAMPLE_RATE, rate)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)


def trim(audio: np.ndarray, level: float = SILENCE_LEVEL) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > level)
    if loud.size == 0:
        raise ValueError("synthesised utterance is silent")
    return audio[loud[0] : loud[-1] + 1]


def synthesise_turn(text: str, voice: str) -> np.ndarray:
    """One scripted utterance: its sentences, trimmed, joined by SENTENCE_PAUSE_S of silence."""
    pause = np.zeros(round(SENTENCE_PAUSE_S * SAMPLE_RATE), dtype=np.float32)
    parts: list[np.ndarray] = []
    for sentence in re.split(r"(?<=[.!?])\s+", text.strip()):
        if parts:
            parts.append(pause)
        parts.append(trim(synthesise(sentence, voice)))
    return np.concatenate(parts)


def build(seed: int = 0) -> tuple[np.ndarray, list[dict[str, object]]]:
    pieces: list[np.ndarray] = []
    meta: list[dict[str, object]] = []
    pos = 0  # samples written so far
    for speaker, text, gap_s in SCRIPT:
        silence = np.zeros(round(gap_s * SAMPLE_RATE), dtype=np.float32)
        speech = synthesise_turn(text, VOICES[speaker])
        speech *= 0.5 / float(np.max(np.abs(speech)))  # peak -6 dBFS
        pieces += [silence, speech]
        start = pos + silence.size
        pos = start + speech.size
        meta.append({
            "speaker": speaker,
            "voice": VOICES[speaker],
            "text": text,
            "start_s": start / SAMPLE_RATE,
            "end_s": pos / SAMPLE_RATE,
        })
    pieces.append(np.zeros(round(TRAILING_SILENCE_S * SAMPLE_RATE), dtype=np.float32))
    audio = np.concatenate(pieces)
    rng = np.random.default_rng(seed)
    audio += rng.standard_normal(audio.size).astype(np.float32) * np.float32(10 ** (NOISE_DBFS / 20))
    return np.clip(audio, -1.0, 1.0), meta


def write_wav(path: Path, audio: np.ndarray) -> None:
    pcm = np.round(audio * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    audio, meta = build(args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_wav(args.out_dir / "dialogue.wav", audio)
    doc = {
        "sample_rate": SAMPLE_RATE,
        "duration_s": audio.size / SAMPLE_RATE,
        "generator": "tests/data/make_dialogue.py (espeak-ng)",
        "utterances": meta,
    }
    (args.out_dir / "dialogue.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
