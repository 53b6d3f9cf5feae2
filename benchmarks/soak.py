"""Soak: the real server plays the bundled sample in a loop for half an hour; does its memory grow?

Starts the server as benchmarks/load.py does (the `emostream demo` loop of the bundled sample,
browser capture on), keeps `--watchers` (default 1) watchers connected for `--minutes` (default
30), and optionally `--sessions` browser capture sessions streaming tests/data/dialogue.wav one
after another. Every `--sample-s` (default 60) it reads the server's VmRSS (/proc/PID/status),
its CPU time and /healthz.

Growth = (VmRSS at the end - VmRSS at minute `--baseline-min`, default 5) / VmRSS at that minute
(target < 5 %; the first minutes are left out: models warm up, arenas and caches fill). Also the
least-squares slope of VmRSS after the baseline, MiB per hour. Per watcher: finals received,
gaps in their utterance ids (finals missing), out of order, errors, statuses and disconnects;
end of speech -> final at the watcher (as in load.py) in the first and the last 5 minutes. The
server's log is scanned for ERROR lines and tracebacks. Prints one JSON object (a progress line a
sample on stderr).

    python benchmarks/soak.py [--minutes 30] [--watchers 1] [--sessions 0] [--quick]

Loopback only; the run is bounded by --minutes (plus start-up and shutdown).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `emostream bench soak` runs this file without it
from load import (  # noqa: E402
    Reference,
    SessionResult,
    cpu_ticks,
    healthz,
    log,
    loop_server_command,
    mono_ms,
    run_reference,
    session_slot,
    stats,
    wait_healthy,
)
from sessions import HOST, ROOT, ServerProcess, final_latency_ms, read_wav, rss_mb  # noqa: E402

from emostream.realtime.media_frames import AUDIO_RATE  # noqa: E402

MAX_LOG_SAMPLES = 10


def server_log_problems(path: str) -> dict[str, Any]:
    """ERROR/CRITICAL lines and tracebacks in the server's stderr log."""
    lines: list[str] = []
    try:
        with open(path, errors="replace") as f:
            lines = [ln.rstrip() for ln in f if " ERROR " in ln or " CRITICAL " in ln or ln.startswith("Traceback")]
    except OSError:
        pass
    return {"count": len(lines), "samples": [ln[:300] for ln in lines[:MAX_LOG_SAMPLES]]}


def slope_mb_per_h(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) points, in MiB per hour."""
    if len(points) < 2:
        return None
    t = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    if np.ptp(t) == 0:
        return None
    return round(float(np.polyfit(t, y, 1)[0]) * 3600, 2)


async def run(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    from emostream.realtime.segmenter import SegmenterConfig

    pad_end_ms = float(SegmenterConfig().pad_end_ms)
    stop = asyncio.Event()
    refs = [Reference() for _ in range(args.watchers)]
    watch_url = f"ws://{HOST}:{port}/ws"
    ref_tasks = [asyncio.create_task(run_reference(watch_url, ref, stop, pad_end_ms)) for ref in refs]
    sessions: list[SessionResult] = []
    stop_sessions = asyncio.Event()
    slots: list[asyncio.Task[None]] = []
    if args.sessions:
        audio = read_wav(args.audio)
        expected = len(json.loads(args.truth.read_text())["utterances"])
        sargs = argparse.Namespace(connect_timeout_s=20.0, frame_samples=1024, silence_s=2.0, speed=1.0,
                                   tail_s=10.0, video_fps=5.0)
        dialogue_s = len(audio) / AUDIO_RATE
        slots = [asyncio.create_task(session_slot(i, f"{watch_url}?source=browser", audio, sargs, expected,
                                                  i * dialogue_s / args.sessions, stop_sessions, sessions))
                 for i in range(args.sessions)]
    hz = os.sysconf("SC_CLK_TCK")
    samples: list[dict[str, Any]] = []
    t_start = mono_ms()
    unhealthy = 0
    n_samples = int(round(args.minutes * 60 / args.sample_s))
    prev: tuple[float, int, int] | None = None
    failure: str | None = None
    try:
        for i in range(n_samples + 1):
            due = t_start + i * args.sample_s * 1000
            await asyncio.sleep(max(0.0, (due - mono_ms()) / 1000))
            now = mono_ms()
            mem = rss_mb(pid)
            total, loop = cpu_ticks(pid)
            health = healthz(port)
            unhealthy += not health.get("ok")
            sample: dict[str, Any] = {
                "minute": round((now - t_start) / 60000, 2), "rss_mb": mem["rss_mb"], "hwm_mb": mem["hwm_mb"],
                "ok": health.get("ok"), "clients": health.get("clients"), "published": health.get("published"),
                "drops": health.get("drops"), "finals": min(len(r.finals) for r in refs),
            }
            if prev is not None:
                wall = (now - prev[0]) / 1000
                sample["cpu_pct"] = round(100 * (total - prev[1]) / hz / wall, 1)
                sample["loop_thread_cpu_pct"] = round(100 * (loop - prev[2]) / hz / wall, 1)
            prev = (now, total, loop)
            samples.append(sample)
            if mem["rss_mb"] is None:
                failure = "the server process is gone"
                break
            log(f"soak {sample['minute']:6.2f} min: rss {sample['rss_mb']} MiB, finals {sample['finals']}, "
                f"cpu {sample.get('cpu_pct')} %, healthz ok {sample['ok']}")
    except asyncio.CancelledError:
        failure = "interrupted"
    finally:
        stop_sessions.set()
        if slots:
            _, pending = await asyncio.wait(slots, timeout=90)
            for task in pending:
                task.cancel()
        stop.set()
        await asyncio.gather(*ref_tasks, return_exceptions=True)
    return summarize(args, refs, samples, sessions, pad_end_ms, t_start, unhealthy, failure)


def summarize(args: argparse.Namespace, refs: list[Reference], samples: list[dict[str, Any]],
              sessions: list[SessionResult], pad_end_ms: float, t_start: float, unhealthy: int,
              failure: str | None) -> dict[str, Any]:
    baseline_min = args.baseline_min
    rss = [(s["minute"], s["rss_mb"]) for s in samples if s["rss_mb"] is not None]
    base = min(rss, key=lambda p: abs(p[0] - baseline_min)) if rss else None
    end = rss[-1] if rss else None
    growth = round((end[1] - base[1]) / base[1], 4) if base and end and end[0] > base[0] else None
    after = [(m * 60, v) for m, v in rss if base is not None and m >= base[0]]
    watchers = []
    edge_ms = 5 * 60_000  # first and last 5 minutes
    t_end = samples[-1]["minute"] * 60_000 + t_start if samples else t_start
    for ref in refs:
        t0 = min(ref.t0_bounds) if ref.t0_bounds else None
        uids = [f.uid for f in ref.finals if isinstance(f.uid, int)]
        lat = [(f.recv_ms, f.recv_ms - (t0 + f.t_end_ms - pad_end_ms)) for f in ref.finals
               if t0 is not None and not f.forced]
        total = [(f.recv_ms, f.total_ms) for f in ref.finals if f.total_ms is not None]
        watchers.append({
            "finals": len(ref.finals),
            "id_gaps": sum(max(0, b - a - 1) for a, b in zip(uids, uids[1:])),
            "out_of_order": sum(b <= a for a, b in zip(uids, uids[1:])),
            "forced_splits": sum(f.forced for f in ref.finals),
            "latency_ms_first_5_min": stats([v for t, v in lat if t < t_start + edge_ms]),
            "latency_ms_last_5_min": stats([v for t, v in lat if t >= t_end - edge_ms]),
            "server_total_ms_first_5_min": stats([v for t, v in total if t < t_start + edge_ms]),
            "server_total_ms_last_5_min": stats([v for t, v in total if t >= t_end - edge_ms]),
            "messages": ref.messages,
            "client_drops": ref.drops_client,
            "errors": ref.errors[:MAX_LOG_SAMPLES],
            "statuses": ref.statuses[:MAX_LOG_SAMPLES],
            "connects": ref.connects,
            "disconnects": ref.disconnects[:MAX_LOG_SAMPLES],
        })
    complete = [r for r in sessions if r.failure is None and r.audio_frames_sent > 0]
    errors = (sum(len(w["errors"]) for w in watchers) + sum(len(w["disconnects"]) for w in watchers)
              + unhealthy + sum(len(r.errors) for r in sessions))
    return {
        "benchmark": "soak",
        "ok": failure is None and growth is not None and growth < 0.05 and errors == 0
        and all(w["id_gaps"] == 0 and w["out_of_order"] == 0 for w in watchers),
        **({"failure": failure} if failure else {}),
        "minutes": round(samples[-1]["minute"], 2) if samples else 0.0,
        "rss_growth_after_baseline": growth,
        "growth_target": 0.05,
        "baseline": {"minute": base[0], "rss_mb": base[1]} if base else None,
        "end": {"minute": end[0], "rss_mb": end[1]} if end else None,
        "rss_slope_mb_per_h_after_baseline": slope_mb_per_h(after),
        "rss_mb_max": max(v for _, v in rss) if rss else None,
        "finals_per_watcher": [w["finals"] for w in watchers],
        "errors_total": errors,
        "healthz_not_ok": unhealthy,
        "watchers": watchers,
        "sessions": {
            "slots": args.sessions, "connections": len(sessions), "completed": len(complete),
            "finals": sum(len(r.finals) for r in complete),
            "failures": sorted({r.failure for r in sessions if r.failure})[:MAX_LOG_SAMPLES],
            "latency_ms": stats([v for r in sessions for v in map(final_latency_ms, r.finals) if v is not None]),
        } if args.sessions else None,
        "samples": samples,
        "cpu_pct_median": _median([s.get("cpu_pct") for s in samples]),
        "loop_thread_cpu_pct_median": _median([s.get("loop_thread_cpu_pct") for s in samples]),
    }


def _median(values: list[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, (int, float))]
    return round(statistics.median(nums), 1) if nums else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=30.0, help="how long the sample loops")
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 minute, a sample every 10 s")
    p.add_argument("--sample-s", type=float, default=60.0, help="seconds between two memory samples")
    p.add_argument("--baseline-min", type=float, default=5.0, help="growth is measured from this minute")
    p.add_argument("--watchers", type=int, default=1, help="watchers connected throughout")
    p.add_argument("--sessions", type=int, default=0, help="browser capture sessions throughout (default none)")
    p.add_argument("--startup-timeout-s", type=float, default=300.0, help="for the server to be healthy")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG", help="extra server argument")
    p.add_argument("--audio", type=Path, default=ROOT / "tests" / "data" / "dialogue.wav", help="the sessions' audio")
    p.add_argument("--truth", type=Path, default=ROOT / "tests" / "data" / "dialogue.json")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes, args.sample_s, args.baseline_min = 1.0, 10.0, 0.5
    if args.minutes <= 0 or args.sample_s <= 0 or not 1 <= args.watchers <= 100 or not 0 <= args.sessions <= 16:
        p.error("--minutes and --sample-s > 0, --watchers 1..100, --sessions 0..16")

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t = time.monotonic()
    try:
        server = ServerProcess(args.server_arg, max(1, args.sessions), args.startup_timeout_s,
                               command=loop_server_command(max(4, args.sessions)))
    except RuntimeError as exc:
        print(json.dumps({"benchmark": "soak", "ok": False, "error": str(exc)}), flush=True)
        return 2
    out: dict[str, Any]
    try:
        ready_s, _ = wait_healthy(server.port, args.startup_timeout_s, capture=True)
        log(f"server {server.url} (pid {server.pid}) healthy after {server.startup_s + ready_s:.1f} s; "
            f"soaking {args.minutes} min")
        out = asyncio.run(run(args, server.port, server.pid))
        out["server"] = {"cmd": ["python", "-c", "<loop>", *server.cmd[3:]], "pid": server.pid,
                         "ready_s": round(server.startup_s + ready_s, 1), "log": server.log.name}
    except (TimeoutError, KeyboardInterrupt) as exc:
        out = {"benchmark": "soak", "ok": False, "error": f"{type(exc).__name__}: {exc}",
               "server_stderr_tail": server.stderr_tail()}
    finally:
        hwm = rss_mb(server.pid)["hwm_mb"]
        exit_code = server.stop()
    out.setdefault("server", {})
    out["server"].update(exit_code=exit_code, rss_hwm_mb=hwm, log_problems=server_log_problems(server.log.name))
    if out["server"]["log_problems"]["count"] or exit_code not in (0, None):
        out["ok"] = False
    out["wall_s"] = round(time.monotonic() - t, 1)
    print(json.dumps(out, indent=1), flush=True)
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
