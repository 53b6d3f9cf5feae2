"""Synthesise the three-voice speaker fixtures with espeak-ng: `speakers3.wav` + `speakers3.json`,
and a held-out twin `speakers3_heldout.wav` + `.json` (other voices, script, order and gaps; no
threshold was ever chosen on it).

Three espeak-ng voices take 12 turns in an irregular order (not strict alternation), and each
voice's pitch moves by several semitones from line to line (espeak `-p` from 20 to 80), so a
tracker that tells speakers apart by pitch alone fails on it while a voice embedding should not.
`speakers3.json` lists per line: speaker, voice, pitch, text, start_s and end_s of the speech (the
exact first/last non-silent sample: each line is trimmed of digital silence before placement).
A faint seeded noise floor (-66 dBFS) is added afterwards. 16 kHz mono int16, about 44 s (< 1.5 MB).

Needs the `espeak-ng` binary (`apt-get install espeak-ng`), numpy and scipy. Usage:

    python tests/data/make_speakers.py [--out-dir tests/data] [--heldout]

The committed files were made with eSpeak NG 1.51; other versions give slightly different audio,
so regenerate both files together.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import wave
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE = 16_000
# NB: eSpeak NG 1.51 ignores a variant after "en-gb" ("en-gb+f3" == "en-gb+m3" == "en-gb", byte for
# byte), so the British female voice is "en+f3" ("en" is the same British English voice).
VOICES = {"A": "en-us+m3", "B": "en+f3", "C": "en-us+m7"}
# (speaker, espeak pitch 0-99, text). Every speaker spans pitch 20..80.
SCRIPT: tuple[tuple[str, int, str], ...] = (
    ("A", 50, "Good morning, everyone. Let us get started with the weekly meeting."),
    ("B", 30, "Thanks. I have the numbers from last month ready to share."),
    ("C", 75, "Before that, can somebody open the window? It is very warm in here."),
    ("A", 20, "Sure, I will do it. Please go ahead with the numbers."),
    ("B", 80, "Sales went up by twelve percent, which is great news for us."),
    ("A", 70, "That is wonderful. What about the new customers in the north?"),
    ("C", 25, "I spoke with three of them yesterday and they seemed happy."),
    ("B", 55, "We should send them the updated price list this week."),
    ("C", 50, "I can prepare it tomorrow morning, if nobody minds."),
    ("A", 35, "Perfect. Then let us move on to the next topic."),
    ("C", 80, "One more thing: the printer on the second floor is broken again."),
    ("B", 20, "I will call the technician right after this meeting."),
)
GAPS_S = (0.4, 0.6, 0.5, 0.7, 0.4, 0.8, 0.5, 0.6, 0.4, 0.7, 0.5, 0.6)  # silence before each line
# The held-out twin: three other voices (a second US male variant, a US female, a Scottish male),
# pitch again moving over 20..80 per speaker, turns in another irregular order, shorter gaps.
HELDOUT_VOICES = {"A": "en-us+m2", "B": "en-us+f4", "C": "en-gb-scotland"}
HELDOUT_SCRIPT: tuple[tuple[str, int, str], ...] = (
    ("B", 60, "Did anyone check the weather for the trip on Saturday?"),
    ("C", 20, "It looks like rain in the morning and sun after lunch."),
    ("C", 70, "So we could leave a little later than planned."),
    ("A", 40, "That works for me. I still have to pack the tent."),
    ("B", 25, "Do not forget the cooking stove this time, please."),
    ("A", 80, "I will put it in the car tonight, I promise."),
    ("C", 45, "Who is bringing the food and the drinks?"),
    ("B", 80, "I can do the shopping on Friday evening after work."),
    ("A", 20, "Great. Then I will drive and pick everyone up at nine."),
    ("C", 60, "Nine is perfect. I will be ready at the door."),
    ("B", 40, "Let us meet at my place, it is on the way anyway."),
    ("A", 55, "Fine, see you all on Saturday then."),
)
HELDOUT_GAPS_S = (0.3, 0.5, 0.9, 0.35, 0.45, 0.3, 0.6, 0.4, 0.5, 0.35, 0.45, 0.3)
SPEED = 180
TRAILING_SILENCE_S = 0.5
SILENCE_LEVEL = 1e-3  # |x| below this (-60 dBFS) counts as digital silence when trimming
NOISE_DBFS = -66.0


def synthesise(text: str, voice: str, pitch: int, speed: int = SPEED) -> np.ndarray:
    """espeak-ng -> (n,) float32 mono at SAMPLE_RATE."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng not found: install it (apt-get install espeak-ng)")
    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text]
    wav_bytes = subprocess.run(cmd, check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav_bytes)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    audio = pcm.astype(np.float32) / 32768.0
    g = gcd(SAMPLE_RATE, rate)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)


def trim(audio: np.ndarray, level: float = SILENCE_LEVEL) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > level)
    if loud.size == 0:
        raise ValueError("synthesised line is silent")
    return audio[loud[0] : loud[-1] + 1]


def build(seed: int = 0, heldout: bool = False) -> tuple[np.ndarray, list[dict[str, object]]]:
    voices, script, gaps = (HELDOUT_VOICES, HELDOUT_SCRIPT, HELDOUT_GAPS_S) if heldout else (VOICES, SCRIPT, GAPS_S)
    pieces: list[np.ndarray] = []
    meta: list[dict[str, object]] = []
    pos = 0
    for i, ((speaker, pitch, text), gap_s) in enumerate(zip(script, gaps, strict=True)):
        silence = np.zeros(round(gap_s * SAMPLE_RATE), dtype=np.float32)
        speech = trim(synthesise(text, voices[speaker], pitch))
        speech *= 0.5 / float(np.max(np.abs(speech)))  # peak -6 dBFS
        pieces += [silence, speech]
        start = pos + silence.size
        pos = start + speech.size
        meta.append({"index": i, "speaker": speaker, "voice": voices[speaker], "pitch": pitch, "text": text,
                     "start_s": start / SAMPLE_RATE, "end_s": pos / SAMPLE_RATE})
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
    parser.add_argument("--heldout", action="store_true", help="the held-out twin (speakers3_heldout.*)")
    args = parser.parse_args(argv)
    audio, meta = build(args.seed, heldout=args.heldout)
    stem = "speakers3_heldout" if args.heldout else "speakers3"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_wav(args.out_dir / f"{stem}.wav", audio)
    doc = {
        "sample_rate": SAMPLE_RATE,
        "duration_s": audio.size / SAMPLE_RATE,
        "generator": "tests/data/make_speakers.py" + (" --heldout" if args.heldout else "") + " (espeak-ng)",
        "speakers": {name: {"voice": voice} for name, voice in (HELDOUT_VOICES if args.heldout else VOICES).items()},
        "lines": meta,
    }
    (args.out_dir / f"{stem}.json").write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
