"""Resident memory of playing a media file through `MediaFileSource`, once and looped: the source
decodes incrementally, so memory must not grow with the length played. Each case runs in a fresh
process (VmHWM is a per-process high-water mark), as fast as possible (realtime=False), into a
consumer that discards every chunk and frame. Prints one JSON object.

    python benchmarks/memory.py [--media demo/media/sample.mp4] [--loops 10] [--no-video]

`ratio_hwm` = looped VmHWM / single VmHWM (target <= 1.25).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def status_kb() -> dict[str, int]:
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def play(media: str, loops: int, video: bool) -> dict[str, object]:
    """One case, in this process: play `loops` passes of the file and report /proc/self/status."""
    from emostream.realtime.sources import MediaFileSource

    src = MediaFileSource(media, realtime=False, loop=loops > 1)
    before = status_kb()
    got = {"samples": 0, "frames": 0, "passes": 0}
    done = threading.Event()
    # one pass = the file's audio; later passes also carry the 1 s silence gap
    target = None if loops == 1 else (loops * src.duration_s + (loops - 1) * src.gap_s - 0.5) * 16000

    def on_audio(chunk) -> None:  # noqa: ANN001 - discards
        got["samples"] += chunk.samples.size
        if target is not None and got["samples"] >= target:
            done.set()

    def on_frame(frame) -> None:  # noqa: ANN001 - discards
        got["frames"] += 1

    t = time.perf_counter()
    src.start(on_audio, on_frame if video else None, on_end=done.set)
    if not done.wait(1800):
        raise SystemExit("playback did not finish")
    src.stop()
    wall = time.perf_counter() - t
    after = status_kb()
    return {"loops": loops, "audio_s": round(got["samples"] / 16000, 2), "frames": got["frames"],
            "wall_s": round(wall, 2), "rss_before_kb": before["VmRSS"], "vmrss_kb": after["VmRSS"],
            "vmhwm_kb": after["VmHWM"], "peak_buffered_frames": src.peak_buffered_frames,
            "peak_buffered_samples": src.peak_buffered_samples}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--media", default=str(ROOT / "demo" / "media" / "sample.mp4"))
    p.add_argument("--loops", type=int, default=10)
    p.add_argument("--no-video", action="store_true", help="play without on_frame (no video decoded)")
    p.add_argument("--case", type=int, help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args(argv)
    video = not args.no_video
    if args.case is not None:
        sys.stdout.write(json.dumps(play(args.media, args.case, video)) + "\n")
        return 0

    def run_case(loops: int) -> dict[str, object]:
        cmd = [sys.executable, __file__, "--media", args.media, "--case", str(loops)]
        cmd += ["--no-video"] if not video else []
        res = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        return json.loads(res.stdout.strip().splitlines()[-1])

    single = run_case(1)
    looped = run_case(args.loops)
    out = {"benchmark": "memory", "media": Path(args.media).name, "video": video, "single": single,
           "looped": looped,
           "ratio_hwm": round(looped["vmhwm_kb"] / single["vmhwm_kb"], 3),  # type: ignore[operator]
           "ratio_rss": round(looped["vmrss_kb"] / single["vmrss_kb"], 3),  # type: ignore[operator]
           "target_ratio": 1.25}
    sys.stdout.write(json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
