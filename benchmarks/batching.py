"""Batched against one-by-one ASR, side by side in one run: what the scheduler gains when several
dialogues' early transcriptions fall due in one round (`asr.run_batch`).

The utterances of tests/data/dialogue.wav (espeak-ng, 1.5-3.5 s each) are transcribed by the real
faster-whisper tiny.en (int8, the live configuration) K at a time, one by one and in one batched
call, alternating, `--repeat` times. Reports per K the median wall time of each way, the ratio,
and utterances a second. Prints one JSON object.

    python benchmarks/batching.py [--sizes 1,2,4,6] [--repeat 5] [--threads 0]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000


def clips() -> list[np.ndarray]:
    with wave.open(str(ROOT / "tests" / "data" / "dialogue.wav")) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    script = json.loads((ROOT / "tests" / "data" / "dialogue.json").read_text())["utterances"]
    pad = SR // 10
    return [audio[round(u["start_s"] * SR) - pad: round(u["end_s"] * SR) + pad] for u in script]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sizes", default="1,2,4,6")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="CTranslate2 threads (0: the live default)")
    args = p.parse_args(argv)
    from emostream.realtime.asr import AsrConfig, Transcriber

    asr = Transcriber(AsrConfig(cpu_threads=args.threads))
    utterances = clips()
    asr.transcribe(utterances[0], 0)  # warm up
    rows = []
    for k in (int(s) for s in args.sizes.split(",")):
        batch = [utterances[i % len(utterances)] for i in range(k)]
        single_s, batched_s = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            for i, x in enumerate(batch):
                asr.transcribe(x, i)
            single_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            asr.transcribe_batch(batch, list(range(k)))
            batched_s.append(time.perf_counter() - t)
        one, many = statistics.median(single_s), statistics.median(batched_s)
        rows.append({"k": k, "audio_s": round(sum(x.size for x in batch) / SR, 2),
                     "one_by_one_ms": round(one * 1000, 1), "batched_ms": round(many * 1000, 1),
                     "speedup": round(one / many, 2), "utterances_per_s_one_by_one": round(k / one, 2),
                     "utterances_per_s_batched": round(k / many, 2)})
    print(json.dumps({"benchmark": "batching", "model": "whisper-tiny.en int8", "repeat": args.repeat,
                      "asr": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
