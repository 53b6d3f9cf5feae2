"""Latency of the live pipeline on the espeak-ng fixture played in real time.

For each utterance: endpoint wait (end of detected speech -> the segmenter declares the end),
compute (-> the final prediction is out: ASR unless reused from the early run, features, model)
and their sum, end to end. Also the real-time factor of the worker (busy time / audio time).
Prints one JSON object.

    python benchmarks/latency.py [--media tests/data/dialogue.wav] [--engine onnx] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--media", default=str(ROOT / "tests" / "data" / "dialogue.wav"))
    p.add_argument("--engine", default="onnx", choices=("torch", "onnx", "tensorrt"))
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--repeat", type=int, default=1, help="play the file this many times (one dialogue)")
    args = p.parse_args(argv)
    from emostream.realtime.pipeline import Pipeline, PipelineConfig

    events: list[dict] = []
    cfg = PipelineConfig(media=args.media, realtime=True, loop=args.repeat > 1, engine=args.engine,
                         checkpoint=args.checkpoint)
    t_load = time.perf_counter()
    pipeline = Pipeline(cfg, events.append)
    pipeline.start()
    load_s = time.perf_counter() - t_load
    from emostream.realtime.sources import probe

    duration = probe(args.media).duration_s
    deadline = time.monotonic() + args.repeat * (duration + 1.0) + 5.0
    while time.monotonic() < deadline and not pipeline.done.is_set():
        time.sleep(0.1)
    pipeline.close()
    finals = [e for e in events if e["type"] == "prediction" and e["final"]]
    totals = [f["timings_ms"]["total_ms"] for f in finals]
    waits = [f["timings_ms"]["endpoint_wait_ms"] for f in finals]
    compute = [f["timings_ms"]["compute_ms"] for f in finals]
    asr = [f["timings_ms"]["asr_ms"] for f in finals]
    reused = sum(f["timings_ms"]["asr_reused"] for f in finals)
    metrics = [e for e in events if e["type"] == "metrics"]
    out = {
        "benchmark": "latency",
        "media": str(Path(args.media).name),
        "engine": args.engine,
        "utterances": len(finals),
        "p50_ms": percentile(totals, 50),
        "p95_ms": percentile(totals, 95),
        "endpoint_wait_p50_ms": percentile(waits, 50),
        "compute_p50_ms": percentile(compute, 50),
        "compute_p95_ms": percentile(compute, 95),
        "asr_after_endpoint_p50_ms": percentile(asr, 50),
        "early_asr_reused": f"{int(reused)}/{len(finals)}",
        "rtf": metrics[-1]["rtf"] if metrics else None,
        "startup_s": round(load_s, 2),
        "interim_predictions": sum(1 for e in events if e["type"] == "prediction" and not e["final"]),
        "per_utterance_total_ms": totals,
        "mean_total_ms": round(statistics.fmean(totals), 1) if totals else None,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    return 0 if finals else 1


if __name__ == "__main__":
    raise SystemExit(main())
