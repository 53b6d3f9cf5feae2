"""Word error rate and decoding loops of the transcripts that reach finals, with whisper-loop
recovery on and off, measured side by side on the same utterances.

Each recording is cut by the real streaming segmenter, and transcribed the way the worker does it:
early ASR at each EndpointPending, reused for the final when still valid (EarlyTranscriber), else a
fresh run. WER is over the whole recording (every final's text joined, against every scripted
line joined), so it does not depend on how the segmenter split the lines.

    python benchmarks/asr_loops.py [--asr whisper-tiny.en]

Prints one JSON object: per recording and mode, WER, finals, finals that still loop, finals
flagged `asr_loop`, and ASR milliseconds per final (median).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = {
    "fixture": (ROOT / "tests/data/dialogue.wav", ROOT / "tests/data/dialogue.json", "utterances"),
    "speakers3": (ROOT / "tests/data/speakers3.wav", ROOT / "tests/data/speakers3.json", "lines"),
    "sample": (ROOT / "demo/media/sample.mp4", ROOT / "demo/media/sample.json", "lines"),
}


def load_audio(path: Path) -> np.ndarray:
    if path.suffix == ".wav":
        with wave.open(str(path)) as w:
            return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    from emostream.realtime.sources import decode_file

    return np.asarray(decode_file(path)[0], np.float32).reshape(-1)


def finals_of(audio: np.ndarray, transcriber: Any) -> list[tuple[str, tuple[str, ...], float]]:
    """(text, flags, ASR ms charged to the final) of each final, as the worker would make them."""
    from emostream.realtime.asr import EarlyTranscriber
    from emostream.realtime.segmenter import Segmenter, SegmenterConfig, SpeechEnd

    config = SegmenterConfig(end_silence_ms=300)
    segmenter = Segmenter(config)
    early = EarlyTranscriber.for_segmenter(transcriber, config)
    out: list[tuple[str, tuple[str, ...], float]] = []
    early_ms = 0.0

    def handle(events: list[Any]) -> None:
        nonlocal early_ms
        for event in events:
            job = early.on_event(event)
            if job is not None:
                t = time.perf_counter()
                job.run()
                early_ms = (time.perf_counter() - t) * 1000
            if isinstance(event, SpeechEnd):
                t = time.perf_counter()
                transcript, reused = early.finish(event, len(out))
                ms = early_ms if reused else (time.perf_counter() - t) * 1000
                out.append((transcript.text, transcript.flags, ms))

    for i in range(0, audio.size, 512):
        handle(segmenter.push(audio[i:i + 512], int(i / 16000 * 1e9)))
    handle(segmenter.flush())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--asr", default="whisper-tiny.en")
    args = p.parse_args(argv)

    from emostream.realtime.asr import AsrConfig, Transcriber
    from emostream.realtime.repetition import looping
    from emostream.realtime.text_metrics import word_error_rate

    on = Transcriber(AsrConfig(model=args.asr))
    off = Transcriber(AsrConfig(model=args.asr, loop_recovery=False), model=on._model)  # same weights
    result: dict[str, Any] = {"asr": args.asr, "recordings": {}}
    for name, (media, script, key) in RECORDINGS.items():
        audio = load_audio(media)
        reference = " ".join(line["text"] for line in json.loads(script.read_text())[key])
        row: dict[str, Any] = {}
        for mode, transcriber in (("before", off), ("after", on)):
            finals = finals_of(audio, transcriber)
            texts = [text for text, _, _ in finals]
            row[mode] = {
                "wer": round(word_error_rate(reference, " ".join(texts)), 4),
                "finals": len(finals),
                "looping_finals": [t for t in texts if looping(t)],
                "flagged_asr_loop": sum("asr_loop" in flags for _, flags, _ in finals),
                "asr_ms_p50": round(float(np.median([ms for _, _, ms in finals])), 1),
            }
        result["recordings"][name] = row
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
