"""Make the bundled demo dialogue: demo/media/sample.mp4 and demo/media/sample.json.

Two espeak-ng voices speak a short scripted dialogue, one clear emotion a line, with silences
between lines, over frames of a real face (the public-domain NASA astronaut portrait shipped by
scikit-image as `skimage.data.astronaut()`) with a slow zoom so that frames differ.

    apt-get install -y espeak-ng
    python demo/make_sample.py            # writes demo/media/sample.mp4 (< 3 MB) and sample.json

Needs: espeak-ng (on PATH), numpy, av (PyAV), opencv-python-headless, scikit-image.
The speech is synthetic: the emotions are in the words and in espeak's pitch/rate/volume only.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import wave
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "media"
SAMPLE_RATE = 16_000
FPS = 10
WIDTH, HEIGHT = 320, 240
LEAD_S, GAP_S, TAIL_S = 1.0, 1.2, 1.0

# speaker -> espeak-ng voice
VOICES = {"Ava": "en-us+f3", "Ben": "en-gb+m3"}
# emotion -> espeak-ng prosody: words a minute, pitch 0-99, amplitude 0-200
PROSODY = {
    "joy": {"speed": 180, "pitch": 72, "amplitude": 150},
    "surprise": {"speed": 165, "pitch": 88, "amplitude": 160},
    "neutral": {"speed": 155, "pitch": 50, "amplitude": 120},
    "sadness": {"speed": 115, "pitch": 25, "amplitude": 80},
    "fear": {"speed": 200, "pitch": 80, "amplitude": 105},
    "anger": {"speed": 190, "pitch": 35, "amplitude": 195},
    "disgust": {"speed": 135, "pitch": 30, "amplitude": 130},
}
SCRIPT: list[tuple[str, str, str]] = [
    ("Ava", "joy", "Guess what? I got the job! I am so happy, this is the best day ever!"),
    ("Ben", "surprise", "Wait, what? Really? You got it? That is incredible!"),
    ("Ava", "neutral", "Yes. I start on Monday at nine. The office is on Main Street."),
    ("Ben", "sadness", "That is great for you. But it means you are moving away. I will miss you so much."),
    ("Ava", "fear", "Oh no. Did you hear that noise downstairs? I am scared. Someone is in the house."),
    ("Ben", "anger", "It is the neighbours again! I told them a hundred times to stop slamming that door!"),
    ("Ava", "disgust", "Ugh, and they left their rotten garbage on the stairs again. That is disgusting."),
    ("Ben", "joy", "Forget them. Let us go out and celebrate your new job tonight!"),
]


def speak(text: str, voice: str, speed: int, pitch: int, amplitude: int) -> np.ndarray:
    """espeak-ng -> (n,) float32 mono at SAMPLE_RATE."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is not installed: apt-get install -y espeak-ng")
    cmd = [exe, "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "--stdout", text]
    wav_bytes = subprocess.run(cmd, check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav_bytes)) as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise RuntimeError(f"unexpected espeak-ng sample width {width}")
    audio = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(axis=1)
    return resample(audio, rate, SAMPLE_RATE)


def resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Band-limited enough for speech: a short moving-average low-pass then linear interpolation."""
    if src == dst:
        return audio
    if dst < src:
        k = max(1, round(src / dst))
        audio = np.convolve(audio, np.ones(k, dtype=np.float32) / k, mode="same")
    n_out = int(round(len(audio) * dst / src))
    t = np.arange(n_out, dtype=np.float64) * (src / dst)
    return np.interp(t, np.arange(len(audio)), audio).astype(np.float32)


def trim(audio: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    """Drop espeak's leading/trailing near-silence so the script's times are tight."""
    loud = np.flatnonzero(np.abs(audio) > threshold)
    if loud.size == 0:
        return audio
    pad = SAMPLE_RATE // 50  # 20 ms
    return audio[max(0, loud[0] - pad) : loud[-1] + pad]


def build_audio() -> tuple[np.ndarray, list[dict]]:
    parts = [np.zeros(int(LEAD_S * SAMPLE_RATE), np.float32)]
    t = LEAD_S
    lines = []
    for i, (speaker, emotion, text) in enumerate(SCRIPT):
        clip = trim(speak(text, VOICES[speaker], **PROSODY[emotion]))
        # Peak-normalise each line, then keep espeak's loudness differences (softened): peaks <= 0.85.
        level = 0.85 * (0.55 + 0.45 * PROSODY[emotion]["amplitude"] / 200.0)
        clip = level * clip / max(1e-6, float(np.max(np.abs(clip))))
        start, end = t, t + len(clip) / SAMPLE_RATE
        lines.append(
            {
                "index": i,
                "speaker": speaker,
                "voice": VOICES[speaker],
                "emotion": emotion,
                "text": text,
                "start_s": round(start, 3),
                "end_s": round(end, 3),
            }
        )
        gap = TAIL_S if i == len(SCRIPT) - 1 else GAP_S
        parts += [clip.astype(np.float32), np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        t = end + gap
    audio = np.clip(np.concatenate(parts), -1.0, 1.0)
    return audio, lines


def face_frames(n_frames: int) -> list[np.ndarray]:
    """RGB uint8 (HEIGHT, WIDTH, 3) frames: the astronaut's face with a slow zoom and drift."""
    from skimage.data import astronaut

    image = astronaut()  # (512, 512, 3) RGB; the face is near x=224, y=113
    cx, cy, base_w = 224.0, 120.0, 290.0
    frames = []
    for i in range(n_frames):
        phase = i / max(1, n_frames - 1)
        zoom = 1.0 + 0.12 * np.sin(np.pi * phase) ** 2 + 0.02 * np.sin(2 * np.pi * i / 37)
        w = base_w / zoom
        h = w * HEIGHT / WIDTH
        x0 = cx - w / 2 + 6.0 * np.sin(2 * np.pi * i / 53)
        y0 = cy - h / 2 + 4.0 * np.sin(2 * np.pi * i / 41)
        scale = WIDTH / w
        matrix = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], dtype=np.float64)
        frames.append(
            cv2.warpAffine(image, matrix, (WIDTH, HEIGHT), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)
        )
    return frames


def encode(path: Path, audio: np.ndarray, frames: list[np.ndarray]) -> None:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        video = container.add_stream(codec, rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if codec == "libx264":
            video.options = {"crf": "30", "preset": "slow", "tune": "stillimage"}
        else:
            video.bit_rate = 250_000
        sound = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        sound.bit_rate = 32_000

        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            container.mux(video.encode(frame))
        block = 1024
        for start in range(0, len(audio), block):
            chunk = audio[start : start + block].reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
            container.mux(sound.encode(frame))
        container.mux(video.encode(None))
        container.mux(sound.encode(None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_DIR / "sample.mp4")
    args = parser.parse_args(argv)

    audio, lines = build_audio()
    duration = len(audio) / SAMPLE_RATE
    frames = face_frames(int(np.ceil(duration * FPS)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    encode(args.out, audio, frames)

    meta = {
        "media": args.out.name,
        "duration_s": round(duration, 3),
        "audio": {"sample_rate": SAMPLE_RATE, "channels": 1, "codec": "aac"},
        "video": {"width": WIDTH, "height": HEIGHT, "fps": FPS},
        "speakers": {name: {"voice": voice} for name, voice in VOICES.items()},
        "lines": lines,
        "credits": {
            "face": "skimage.data.astronaut(): NASA portrait of Eileen Collins, public domain",
            "voices": "synthesised with espeak-ng (formant synthesis)",
        },
        "generator": "demo/make_sample.py",
    }
    json_path = args.out.with_suffix(".json")
    json_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    size = args.out.stat().st_size
    print(f"wrote {args.out} ({size / 1e6:.2f} MB, {duration:.1f} s, {len(lines)} lines) and {json_path.name}")
    if size > 3_000_000:
        print("warning: the sample is over 3 MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
