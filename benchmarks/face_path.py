"""Milliseconds per frame of the live face path (detection, MTCNN by default or Haar, + the FER2013
expert on ONNX Runtime, mouth patches included), on real frames: the bundled sample's video (320x240, one face)
and the same frames upscaled to 640x480 and 1280x720. Prints one JSON object.

    python benchmarks/face_path.py [--frames 200] [--threads 1] [--detector mtcnn haar]

The sustained frame rate beside the audio path (ASR, text, speakers, model in the same process)
is in benchmarks/latency.py's `face_frames_analyzed_per_s`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--media", default=str(ROOT / "demo" / "media" / "sample.mp4"))
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads of the expert")
    p.add_argument("--detector", nargs="+", default=["mtcnn", "haar"], choices=("mtcnn", "haar"))
    args = p.parse_args(argv)
    from emostream.model.features.face_expert import FaceExpressionExpert
    from emostream.realtime.faces import FaceAnalyzer
    from emostream.realtime.runtime import build_face_detector
    from emostream.realtime.sources import decode_file

    _, frames = decode_file(args.media)
    images = [img for _, img in frames][: args.frames]
    expert = FaceExpressionExpert(threads=args.threads)
    out: dict[str, object] = {"benchmark": "face_path", "media": Path(args.media).name, "frames": len(images),
                              "expert_threads": args.threads, "detectors": {}}
    for name in args.detector:
        out["detectors"][name] = measure(FaceAnalyzer(build_face_detector(name), expert), images)  # type: ignore[index]
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


def measure(analyzer: Any, images: list[np.ndarray]) -> dict[str, object]:
    import cv2

    from emostream.realtime.types import VideoFrame

    sizes: dict[str, object] = {}
    for w, h in ((320, 240), (640, 480), (1280, 720)):
        batch = [img if img.shape[1] == w else cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR) for img in images]
        analyzer.analyze(VideoFrame(batch[0], 0, 0))  # warm-up
        detect_ms, total_ms, found = [], [], 0
        for i, img in enumerate(batch):
            t0 = time.perf_counter()
            analyzer.detector.detect_all(img)
            t1 = time.perf_counter()
            obs = analyzer.analyze(VideoFrame(img, i, i))
            t2 = time.perf_counter()
            detect_ms.append((t1 - t0) * 1000)
            total_ms.append((t2 - t1) * 1000)
            found += obs.n_faces > 0
        sizes[f"{w}x{h}"] = {
            "per_frame_ms_p50": round(float(np.median(total_ms)), 2),
            "per_frame_ms_p95": round(float(np.percentile(total_ms, 95)), 2),
            "detect_ms_p50": round(float(np.median(detect_ms)), 2),
            "expert_and_rest_ms_p50": round(float(np.median(total_ms)) - float(np.median(detect_ms)), 2),
            "frames_with_a_face": f"{found}/{len(batch)}",
            "max_fps_one_core": round(1000 / float(np.median(total_ms)), 1),
        }
    return sizes


if __name__ == "__main__":
    raise SystemExit(main())
