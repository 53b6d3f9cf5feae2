"""Latency of the live pipeline on the espeak-ng fixture played in real time, face path on.

The fixture is audio only; by default the bundled sample's video (a real face) plays beside it
as the camera, so the detector and the face expert run as they do live (`--no-face` turns the
face expert off, `--video ''` plays no video).

For each utterance: endpoint wait (end of detected speech -> the segmenter declares the end),
compute (-> the final prediction is out: ASR unless reused from the early run, features, model)
and their sum, end to end. Also the real-time factor of the worker (busy time / audio time).
Prints one JSON object.

    python benchmarks/latency.py [--media tests/data/dialogue.wav] [--video demo/media/sample.mp4]
                                 [--no-face] [--engine onnx] [--repeat 1] [--endpoint turn|silence]
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
    p.add_argument("--video", default=str(ROOT / "demo" / "media" / "sample.mp4"), help="video played as the camera")
    p.add_argument("--no-face", action="store_true", help="no face expert")
    p.add_argument("--endpoint", default="turn", choices=("turn", "silence"),
                   help="what ends an utterance (turn: the default end-of-turn model + speaker changes)")
    args = p.parse_args(argv)
    from emostream.realtime.config import PipelineConfig
    from emostream.realtime.pipeline import Pipeline
    from emostream.realtime.segmenter import SegmenterConfig

    events: list[dict] = []
    cfg = PipelineConfig(media=args.media, video=args.video or None, realtime=True, loop=args.repeat > 1,
                         engine=args.engine, checkpoint=args.checkpoint,
                         face_expert=None if args.no_face else "fer-mini-xception",
                         segmenter=SegmenterConfig(endpoint=args.endpoint))
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
    faces = pipeline.worker.faces if pipeline.worker is not None else None
    finals = [e for e in events if e["type"] == "prediction" and e["final"]]
    totals = [f["timings_ms"]["total_ms"] for f in finals]
    waits = [f["timings_ms"]["endpoint_wait_ms"] for f in finals]
    compute = [f["timings_ms"]["compute_ms"] for f in finals]
    asr = [f["timings_ms"]["asr_ms"] for f in finals]
    reused = sum(f["timings_ms"]["asr_reused"] for f in finals)
    face_ms = [f["timings_ms"]["face_ms"] for f in finals if "face_ms" in f["timings_ms"]]
    speaker_ms = [f["timings_ms"]["speaker_ms"] for f in finals]
    text_ms = [f["timings_ms"]["text_ms"] for f in finals if "text_ms" in f["timings_ms"]]  # the text encoder
    face_events = [e for e in events if e["type"] == "face"]
    metrics = [e for e in events if e["type"] == "metrics"]
    out = {
        "benchmark": "latency",
        "media": str(Path(args.media).name),
        "endpoint": args.endpoint,
        "end_reasons": {r: sum(f.get("end_reason") == r for f in finals) for r in {f.get("end_reason") for f in finals}},
        "engine": args.engine,
        "utterances": len(finals),
        "p50_ms": percentile(totals, 50),
        "p95_ms": percentile(totals, 95),
        "endpoint_wait_p50_ms": percentile(waits, 50),
        "compute_p50_ms": percentile(compute, 50),
        "compute_p95_ms": percentile(compute, 95),
        "asr_after_endpoint_p50_ms": percentile(asr, 50),
        "early_asr_reused": f"{int(reused)}/{len(finals)}",
        "face_path": not args.no_face and bool(args.video),
        "face_in_final_p50_ms": percentile(face_ms, 50),
        "speaker_p50_ms": percentile(speaker_ms, 50),
        "text_p50_ms": percentile(text_ms, 50),
        "text_p95_ms": percentile(text_ms, 95),
        "finals_with_face": sum(1 for f in finals if (f.get("modalities") or {}).get("face") is not None),
        "face_events": len(face_events),
        "face_events_per_s": round(len(face_events) / (args.repeat * duration), 2),
        "face_frames_analyzed_per_s": round(faces.analyzed / (args.repeat * duration), 2) if faces else None,
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
