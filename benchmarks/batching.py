"""Batched against one-by-one model calls, side by side in one run: what batching gains when
several dialogues (or, on a cluster, several ingress replicas) call a shared model at once.

Every model goes through the one call interface the server uses (`emostream.realtime.calls`):
K items in one call against K calls of one item, alternating, `--repeat` times, on the real models
of the live configuration:

- asr: the utterances of tests/data/dialogue.wav (espeak-ng, 1.5-3.5 s each), faster-whisper
  tiny.en int8 (one CTranslate2 encode + generate for the batch);
- text: the same utterances' words through the bundled checkpoint's text encoder (ONNX Runtime);
- face: the two real photographs of tests/data/faces (MTCNN per frame, the FER expert on every face
  of the batch at once);
- speaker: 1.6 s windows of the utterances (GE2E, one ONNX call);
- turn: the utterances (Smart Turn v3.2, one ONNX call).

Reports per model and K the median wall time of each way, the ratio, and items a second. Prints
one JSON object.

    python benchmarks/batching.py [--models asr,text,face,speaker,turn] [--sizes 1,2,4,6] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000


def clips() -> list[np.ndarray]:
    with wave.open(str(ROOT / "tests" / "data" / "dialogue.wav")) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0
    script = json.loads((ROOT / "tests" / "data" / "dialogue.json").read_text())["utterances"]
    pad = SR // 10
    return [audio[round(u["start_s"] * SR) - pad: round(u["end_s"] * SR) + pad] for u in script]


def items_of(kind: str) -> list[Any]:
    """A few real inputs of each kind of model (cycled to make K)."""
    from emostream.realtime.calls import AsrItem, SpeakerItem

    utterances = clips()
    if kind == "asr":
        return [AsrItem(x, i) for i, x in enumerate(utterances)]
    if kind == "text":
        return [u["text"] for u in json.loads((ROOT / "tests" / "data" / "dialogue.json").read_text())["utterances"]]
    if kind == "speaker":
        return [SpeakerItem(windows=(x[: int(1.6 * SR)],)) for x in utterances]
    if kind == "turn":
        return utterances
    if kind == "face":
        import cv2

        from emostream.realtime.types import VideoFrame

        return [VideoFrame(cv2.imread(str(p)), t_ns=i, index=i)
                for i, p in enumerate(sorted((ROOT / "tests" / "data" / "faces").glob("*.jpg")))]
    raise ValueError(kind)


def measure(call: Any, items: list[Any], sizes: list[int], repeat: int) -> list[dict[str, Any]]:
    call(items[:1])  # warm up
    rows = []
    for k in sizes:
        batch = [items[i % len(items)] for i in range(k)]
        single_s, batched_s = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            for item in batch:
                call([item])
            single_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            call(batch)
            batched_s.append(time.perf_counter() - t)
        one, many = statistics.median(single_s), statistics.median(batched_s)
        rows.append({"k": k, "one_by_one_ms": round(one * 1000, 1), "batched_ms": round(many * 1000, 1),
                     "speedup": round(one / many, 2), "items_per_s_one_by_one": round(k / one, 2),
                     "items_per_s_batched": round(k / many, 2)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="asr,text,face,speaker,turn")
    p.add_argument("--sizes", default="1,2,4,6")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    from emostream.realtime.calls import load_call
    from emostream.realtime.config import PipelineConfig

    config = PipelineConfig()
    sizes = [int(s) for s in args.sizes.split(",")]
    out: dict[str, Any] = {"benchmark": "batching", "repeat": args.repeat, "asr_model": "whisper-tiny.en int8"}
    for kind in args.models.split(","):
        out[kind] = measure(load_call(kind, config), items_of(kind), sizes, args.repeat)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
