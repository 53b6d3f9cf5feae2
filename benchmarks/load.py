"""Many watchers and browser sessions on one server: does fan-out to 100 watchers slow the finals?

Starts the real server playing the bundled sample in a loop (the `emostream demo` loop, forced on
whether or not this machine has a microphone) with browser capture on, and keeps `--sessions`
(default 4) browser-like capturing sessions streaming tests/data/dialogue.wav in real time
throughout (benchmarks/sessions.py's client, staggered, one connection after another). Then it
alternates two conditions in blocks, ABBA ABBA ..., so that drift of this shared machine hits both
alike:

- A: 1 watcher (the reference watcher, connected the whole run);
- B: the reference plus `--watchers - 1` more (default 100 in all), connected in a helper process
  at the start of each B block and closed at its end.

A block lasts one loop of the sample by default (every block then sees the same utterances), and
condition B gets `--minutes` of blocks in all (A as much). Finals are counted in a block when the
reference watcher receives them between the block's start (`--settle-s` after the last watcher
connected) and its end; the B watchers stay `--tail-s` longer.

Latency: end of speech -> the final arriving at a watcher, on one clock. The server's stream
times (`t_end_ms`, `metrics.t_ms`) are milliseconds since the shared pipeline's start on the
monotonic clock, which on Linux is the client's `time.monotonic()` too (checked with ping/pong:
`pong.t_ms` is the server's monotonic time). The stream start T0 is estimated as the smallest
(arrival - server's stream time at publishing) over the reference's metrics, interims and finals
(an upper bound, tight to the smallest delivery delay). A final's end of speech is then
T0 + t_end_ms - pad_end_ms (the segmenter pads an unforced end by pad_end_ms; forced splits are
left out of the latencies, not out of the counts). Reported beside it: the server's own end of
speech -> published (`timings_ms.total_ms`) and delivery (arrival - published).

Every watcher must receive every final of its block, in order (missing, out-of-order and duplicate
counts per watcher). Browser sessions: end of speech -> final as the server measures it
(`timings_ms.total_ms`), by the condition during which the final arrived. Server: resident memory
(VmRSS), CPU (all threads, and the event-loop thread alone) per condition. Prints one JSON object.

    python benchmarks/load.py [--minutes 5] [--watchers 100] [--sessions 4] [--quick]

Loopback only; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import statistics
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `emostream bench load` runs this file without it
from sessions import (  # noqa: E402
    HOST,
    ROOT,
    ServerProcess,
    SessionResult,
    final_latency_ms,
    read_wav,
    rss_mb,
    run_session,
)

from emostream.realtime.media_frames import AUDIO_RATE  # noqa: E402

# The demo's loop of the bundled sample (app.pipeline_source), with microphone detection off so
# that a machine with a microphone plays the sample too. `emostream serve --media FILE` plays once.
LOOP_SERVER = (
    "import sys\n"
    "import emostream.realtime.app as app\n"
    "import emostream.realtime.cli as cli\n"
    "app.microphone_available = lambda: False\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)
LOOP_GAP_S = 1.0  # MediaFileSource's silence between two passes
MAX_FINALS_KEPT = 100_000  # per watcher: a runaway server cannot grow a client without bound
MAX_ERRORS_KEPT = 20


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def mono_ms() -> float:
    return time.monotonic() * 1000.0


def stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "min": None, "p50": None, "p95": None, "max": None}
    return {"n": len(values), "min": round(min(values), 1), "p50": round(float(np.percentile(values, 50)), 1),
            "p95": round(float(np.percentile(values, 95)), 1), "max": round(max(values), 1)}


# ---------------------------------------------------------------------------------------------
# The server


def loop_server_command(max_sessions: int) -> list[str]:
    return [sys.executable, "-c", LOOP_SERVER, "demo", "--host", HOST, "--port", "0",
            "--max-sessions", str(max_sessions), "--log-level", "WARNING"]


def healthz(port: int, timeout_s: float = 5.0) -> dict[str, Any]:
    """GET /healthz (a 503 is an answer too: its JSON says why)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=timeout_s) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            return json.loads(exc.read())
        except ValueError:
            return {"ok": False, "reason": f"HTTP {exc.code}"}
    except (OSError, ValueError) as exc:
        return {"ok": False, "reason": f"{type(exc).__name__}: {exc}"}


def wait_healthy(port: int, timeout_s: float, capture: bool) -> tuple[float, dict[str, Any]]:
    """Poll /healthz until the shared pipeline runs (and capture is on): (seconds waited, health)."""
    t = time.monotonic()
    health: dict[str, Any] = {}
    while time.monotonic() - t < timeout_s:
        health = healthz(port)
        parts = health.get("parts") or {}
        if health.get("ok") and "pipeline" in parts and (not capture or "capture" in health):
            return time.monotonic() - t, health
        time.sleep(0.5)
    raise TimeoutError(f"/healthz not ready within {timeout_s} s: {health}")


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime + stime of the whole process, of its main thread), in clock ticks; (0, 0) if unknown.
    The server's main thread runs its asyncio event loop (websocket I/O and fan-out)."""
    out = []
    for path in (f"/proc/{pid}/stat", f"/proc/{pid}/task/{pid}/stat"):
        try:
            fields = Path(path).read_text().rsplit(")", 1)[1].split()
            out.append(int(fields[11]) + int(fields[12]))  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            out.append(0)
    return out[0], out[1]


class Sampler:
    """The server's VmRSS and CPU ticks every `period_s` (and the loop lag of this process)."""

    def __init__(self, pid: int, period_s: float = 1.0) -> None:
        self.pid = pid
        self.period_s = period_s
        self.samples: list[tuple[float, float | None, int, int]] = []  # (mono ms, rss MiB, cpu, loop cpu)
        self.lag_ms: list[tuple[float, float]] = []  # (mono ms, how late this process's loop woke)

    def take(self) -> None:
        total, loop = cpu_ticks(self.pid)
        self.samples.append((mono_ms(), rss_mb(self.pid)["rss_mb"], total, loop))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            t = time.monotonic()
            self.take()
            try:
                await asyncio.wait_for(stop.wait(), self.period_s)
            except TimeoutError:
                pass
            self.lag_ms.append((mono_ms(), max(0.0, (time.monotonic() - t - self.period_s) * 1000)))

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        rss = [s[1] for s in inside if s[1] is not None]
        out: dict[str, Any] = {"rss_mb_mean": round(statistics.fmean(rss), 1) if rss else None,
                               "rss_mb_max": max(rss) if rss else None}
        if len(inside) >= 2:
            hz = os.sysconf("SC_CLK_TCK")
            wall = (inside[-1][0] - inside[0][0]) / 1000
            out["cpu_pct"] = round(100 * (inside[-1][2] - inside[0][2]) / hz / wall, 1)
            out["loop_thread_cpu_pct"] = round(100 * (inside[-1][3] - inside[0][3]) / hz / wall, 1)
        lag = [v for t, v in self.lag_ms if t0 <= t <= t1]
        out["client_loop_lag_ms_max"] = round(max(lag), 1) if lag else None
        return out


# ---------------------------------------------------------------------------------------------
# The reference watcher (this process)


@dataclass
class Final:
    uid: int | str
    recv_ms: float
    t_end_ms: float
    total_ms: float | None
    forced: bool


@dataclass
class Reference:
    """The watcher connected throughout: every final with its arrival time, T0 bounds, clock check."""

    finals: list[Final] = field(default_factory=list)
    t0_bounds: list[float] = field(default_factory=list)  # arrival - stream time at publishing, ms
    pongs: list[tuple[float, float]] = field(default_factory=list)  # (server - client midpoint, rtt), ms
    errors: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    messages: int = 0
    connects: int = 0
    disconnects: list[str] = field(default_factory=list)
    drops_client: int = 0
    last_metrics: dict[str, Any] | None = None


async def run_reference(url: str, ref: Reference, stop: asyncio.Event, pad_end_ms: float,
                        ping_every_s: float = 5.0) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    pings: dict[int, float] = {}
    ping_id = 0
    while not stop.is_set():
        try:
            async with connect(url, open_timeout=20, close_timeout=5, max_size=2**22, ping_interval=None) as ws:
                ref.connects += 1

                async def pinger() -> None:
                    nonlocal ping_id
                    while True:
                        ping_id += 1
                        pings[ping_id] = mono_ms()
                        try:
                            await ws.send(json.dumps({"type": "ping", "v": 1, "id": ping_id}))
                        except ConnectionClosed:
                            return
                        await asyncio.sleep(ping_every_s)

                async def close_on_stop() -> None:
                    await stop.wait()
                    await ws.close()

                tasks = [asyncio.create_task(pinger()), asyncio.create_task(close_on_stop())]
                try:
                    async for raw in ws:
                        now = mono_ms()
                        ref.messages += 1
                        if isinstance(raw, str):
                            handle_reference(ref, json.loads(raw), now, pad_end_ms, pings)
                finally:
                    for task in tasks:
                        task.cancel()
            if not stop.is_set():
                ref.disconnects.append("closed by the server")
                await asyncio.sleep(1.0)
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            ref.disconnects.append(f"{type(exc).__name__}: {exc}"[:200])
            log(f"reference watcher disconnected: {exc}")
            await asyncio.sleep(1.0)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def handle_reference(ref: Reference, msg: dict[str, Any], now: float, pad_end_ms: float,
                     pings: dict[int, float]) -> None:
    kind = msg.get("type")
    if kind == "prediction":
        t_end = _num(msg.get("t_end_ms"))
        if t_end is None:
            return
        if msg.get("final"):
            total = _num((msg.get("timings_ms") or {}).get("total_ms"))
            forced = "forced_split" in (msg.get("flags") or [])
            if len(ref.finals) < MAX_FINALS_KEPT:
                ref.finals.append(Final(msg.get("utterance_id"), now, t_end, total, forced))
            if total is not None and not forced:
                ref.t0_bounds.append(now - (t_end - pad_end_ms + total))
        elif (latency := _num(msg.get("latency_ms"))) is not None:  # interim: latency = publish - t_end
            ref.t0_bounds.append(now - (t_end + latency))
    elif kind == "metrics":
        ref.last_metrics = msg
        if (t_ms := _num(msg.get("t_ms"))) is not None:
            ref.t0_bounds.append(now - t_ms)
        ref.drops_client = int((msg.get("drops") or {}).get("client") or 0)
    elif kind == "pong":
        sent = pings.pop(msg.get("id"), None) if isinstance(msg.get("id"), int) else None
        server = _num(msg.get("t_ms"))
        if sent is not None and server is not None:
            ref.pongs.append((server - (sent + now) / 2, now - sent))
    elif kind == "error":
        ref.errors.append({"code": msg.get("code"), "message": str(msg.get("message"))[:200]})
    elif kind == "status":
        ref.statuses.append(str(msg.get("code")))


# ---------------------------------------------------------------------------------------------
# The watcher pool (a helper process: its clients' work does not delay this process's sessions)


async def pool_main(url: str) -> int:
    """Reads JSON commands on stdin (connect N / disconnect / quit), answers JSON lines on stdout."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    lag: list[float] = []

    async def watch_lag() -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(0.05)
            lag.append((time.monotonic() - t - 0.05) * 1000)

    async def watcher(rec: dict[str, Any], ready: asyncio.Event) -> None:
        try:
            async with connect(url, open_timeout=30, close_timeout=5, max_size=2**22, ping_interval=None) as ws:
                rec["ws"] = ws
                async for raw in ws:
                    now = mono_ms()
                    rec["messages"] += 1
                    if not isinstance(raw, str):
                        continue
                    head = raw[:60]
                    if head.startswith('{"type":"prediction"') and '"final":true' in head:
                        msg = json.loads(raw)
                        if len(rec["finals"]) < MAX_FINALS_KEPT:
                            rec["finals"].append([msg.get("utterance_id"), round(now, 2), msg.get("t_end_ms")])
                    elif head.startswith('{"type":"hello"'):
                        ready.set()
                    elif head.startswith('{"type":"metrics"'):
                        rec["drops_client"] = int((json.loads(raw).get("drops") or {}).get("client") or 0)
                    elif head.startswith('{"type":"error"'):
                        if len(rec["errors"]) < MAX_ERRORS_KEPT:
                            rec["errors"].append(raw[:200])
        except (ConnectionClosed, OSError, TimeoutError) as exc:
            rec["failure"] = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            ready.set()
            ws_ = rec.pop("ws", None)
            rec["close_code"] = getattr(ws_, "close_code", None)

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    lag_task = asyncio.create_task(watch_lag())
    recs: list[dict[str, Any]] = []
    tasks: list[asyncio.Task[None]] = []
    sem = asyncio.Semaphore(16)  # connections opened at once
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "connect":
            lag.clear()
            recs = [{"messages": 0, "finals": [], "errors": [], "drops_client": 0, "failure": None}
                    for _ in range(cmd["n"])]
            readies = [asyncio.Event() for _ in recs]

            async def start(rec: dict[str, Any], ready: asyncio.Event) -> asyncio.Task[None]:
                async with sem:
                    task = asyncio.create_task(watcher(rec, ready))
                    try:
                        await asyncio.wait_for(ready.wait(), 60)
                    except TimeoutError:
                        rec["failure"] = "no hello within 60 s"
                    return task

            t = mono_ms()
            tasks = list(await asyncio.gather(*(start(r, e) for r, e in zip(recs, readies))))
            answer({"event": "connected", "n": sum(r["failure"] is None for r in recs),
                    "connect_ms": round(mono_ms() - t, 1)})
        elif cmd["cmd"] == "disconnect":
            t = mono_ms()
            for rec in recs:
                ws = rec.get("ws")
                if ws is not None:
                    await ws.close()
            if tasks:
                await asyncio.wait(tasks, timeout=30)
            for rec in recs:
                rec.pop("ws", None)
            answer({"event": "records", "close_ms": round(mono_ms() - t, 1),
                    "lag_ms_max": round(max(lag), 1) if lag else None,
                    "lag_ms_p99": round(float(np.percentile(lag, 99)), 1) if lag else None,
                    "watchers": recs})
            recs, tasks = [], []
        elif cmd["cmd"] == "quit":
            break
    lag_task.cancel()
    return 0


class Pool:
    """The helper process of the extra watchers."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str) -> Pool:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).resolve()), "--pool-url", url,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**26)
        return cls(proc)

    async def ask(self, cmd: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not line:
            raise RuntimeError(f"the watcher pool exited ({self.proc.returncode})")
        return json.loads(line)

    async def close(self) -> None:
        if self.proc.returncode is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                await self.proc.stdin.drain()
                await asyncio.wait_for(self.proc.wait(), 10)
            except (OSError, TimeoutError):
                self.proc.kill()
                await self.proc.wait()


# ---------------------------------------------------------------------------------------------
# Browser sessions


async def session_slot(index: int, url: str, audio: np.ndarray, sargs: argparse.Namespace, expected: int,
                       delay_s: float, stop: asyncio.Event, out: list[SessionResult]) -> None:
    """One capturing session after another until `stop` (a refused one is retried after 1 s)."""
    started = asyncio.Event()
    started.set()
    try:
        await asyncio.wait_for(stop.wait(), delay_s)
        return
    except TimeoutError:
        pass
    while not stop.is_set():
        r = await run_session(index, url, audio, [], sargs, expected, started)
        out.append(r)
        await asyncio.sleep(1.0 if r.failure else 0.2)


# ---------------------------------------------------------------------------------------------
# The run


def block_order(n: int) -> list[str]:
    """ABBA ABBA ...: n blocks of each (mirrored pairs, so a linear drift hits both alike)."""
    return list(("ABBA" * n)[: 2 * n])


async def run(args: argparse.Namespace, port: int, pid: int) -> dict[str, Any]:
    from emostream.realtime.segmenter import SegmenterConfig

    pad_end_ms = float(SegmenterConfig().pad_end_ms)
    watch_url = f"ws://{HOST}:{port}/ws"
    capture_url = f"ws://{HOST}:{port}/ws?source=browser"
    stop = asyncio.Event()
    sampler = Sampler(pid)
    sampler_task = asyncio.create_task(sampler.run(stop))
    ref = Reference()
    ref_task = asyncio.create_task(run_reference(watch_url, ref, stop, pad_end_ms))
    pool = await Pool.start(watch_url) if args.watchers > 1 else None

    audio = read_wav(args.audio)
    utterances = json.loads(args.truth.read_text())["utterances"]
    sargs = argparse.Namespace(connect_timeout_s=20.0, frame_samples=1024, silence_s=2.0, speed=1.0,
                               tail_s=10.0, video_fps=5.0)
    dialogue_s = len(audio) / AUDIO_RATE
    sessions: list[SessionResult] = []
    stop_sessions = asyncio.Event()
    slots = [asyncio.create_task(session_slot(i, capture_url, audio, sargs, len(utterances),
                                              i * dialogue_s / max(1, args.sessions), stop_sessions, sessions))
             for i in range(args.sessions)]
    blocks: list[dict[str, Any]] = []
    failure: str | None = None
    try:
        t = time.monotonic()
        while not ref.finals and time.monotonic() - t < args.warmup_timeout_s:
            await asyncio.sleep(0.5)
        if not ref.finals:
            raise TimeoutError(f"no final reached the reference watcher within {args.warmup_timeout_s} s")
        log(f"first final after {time.monotonic() - t:.1f} s; warming up {args.warmup_s:.0f} s")
        await asyncio.sleep(args.warmup_s)  # every session slot has started
        order = block_order(args.blocks)
        for n, cond in enumerate(order):
            block: dict[str, Any] = {"index": n, "condition": cond}
            if cond == "B" and pool is not None:
                ans = await pool.ask({"cmd": "connect", "n": args.watchers - 1}, 120)
                block.update(connected=ans["n"] + 1, connect_ms=ans["connect_ms"])
            else:
                block["connected"] = 1
            await asyncio.sleep(args.settle_s)
            block["t0"] = mono_ms()
            await asyncio.sleep(args.block_s)
            block["t1"] = mono_ms()
            block["health"] = healthz(port)
            if cond == "B" and pool is not None:
                await asyncio.sleep(args.tail_s)
                ans = await pool.ask({"cmd": "disconnect"}, 120)
                block.update(pool=ans["watchers"], pool_lag_ms_max=ans["lag_ms_max"],
                             pool_lag_ms_p99=ans["lag_ms_p99"], close_ms=ans["close_ms"])
            n_finals = sum(block["t0"] <= f.recv_ms <= block["t1"] for f in ref.finals)
            log(f"block {n + 1}/{len(order)} {cond}: {block['connected']} watcher(s), {n_finals} finals, "
                f"server rss {rss_mb(pid)['rss_mb']} MiB")
            blocks.append(block)
    except (TimeoutError, RuntimeError, OSError) as exc:
        failure = f"{type(exc).__name__}: {exc}"
        log(f"run failed: {failure}")
    finally:
        stop_sessions.set()
        bound = dialogue_s + sargs.silence_s + sargs.tail_s + 2 * sargs.connect_timeout_s + 10
        _, pending = await asyncio.wait(slots, timeout=bound) if slots else (set(), set())
        for task in pending:
            task.cancel()
        end_health = healthz(port)
        stop.set()
        await asyncio.gather(ref_task, sampler_task, return_exceptions=True)
        if pool is not None:
            await pool.close()
    return summarize(args, ref, blocks, sessions, sampler, len(utterances), pad_end_ms, failure, end_health)


# ---------------------------------------------------------------------------------------------
# Figures


def summarize(args: argparse.Namespace, ref: Reference, blocks: list[dict[str, Any]], sessions: list[SessionResult],
              sampler: Sampler, utterances: int, pad_end_ms: float, failure: str | None,
              end_health: dict[str, Any]) -> dict[str, Any]:
    t0 = min(ref.t0_bounds) if ref.t0_bounds else None
    bounds = sorted(ref.t0_bounds)
    by_uid = {f.uid: f for f in ref.finals}

    def speech_end(f: Final | None, t_end_ms: float | None = None) -> float | None:
        if t0 is None or f is None or f.forced:
            return None
        return t0 + (f.t_end_ms if t_end_ms is None else t_end_ms) - pad_end_ms

    per_cond: dict[str, dict[str, Any]] = {
        c: {"latency": [], "slowest": [], "delivery": [], "server_total": [], "expected": 0, "blocks": [],
            "missing": 0, "out_of_order": 0, "duplicates": 0, "watchers_missing": 0, "not_at_reference": 0,
            "received_per_slot": {}, "drops_client": 0, "windows": []}
        for c in ("A", "B")}
    for block in blocks:
        c = per_cond[block["condition"]]
        c["windows"].append((block["t0"], block["t1"]))
        expected = [f for f in ref.finals if block["t0"] <= f.recv_ms <= block["t1"]]
        c["expected"] += len(expected)
        lat_block: list[float] = []
        arrivals: dict[Any, list[float]] = {f.uid: [f.recv_ms] for f in expected}
        for f in expected:
            end = speech_end(f)
            if end is not None:
                lat_block.append(f.recv_ms - end)
                if f.total_ms is not None:
                    c["server_total"].append(f.total_ms)
                    c["delivery"].append(f.recv_ms - end - f.total_ms)
        watchers = block.get("pool") or []
        want = [f.uid for f in expected]
        want_set = set(want)
        for slot, w in enumerate(watchers, start=1):  # slot 0: the reference
            seen = [uid for uid, _, _ in w["finals"]]
            got = {uid: recv for uid, recv, _ in w["finals"]}
            ordered = [uid for uid in seen if uid in want_set]
            missing = sum(uid not in got for uid in want)
            c["missing"] += missing
            c["watchers_missing"] += missing > 0
            c["duplicates"] += len(ordered) - len(set(ordered))
            c["out_of_order"] += sum(b_ <= a_ for a_, b_ in zip(ordered, ordered[1:]))
            c["received_per_slot"][slot] = c["received_per_slot"].get(slot, 0) + len(want) - missing
            c["drops_client"] += int(w.get("drops_client") or 0)
            # finals this watcher got inside the window that the reference did not (the reference missed them)
            c["not_at_reference"] += sum(1 for uid, recv, _ in w["finals"]
                                         if block["t0"] <= recv <= block["t1"] and uid not in by_uid)
            for uid in want:
                if uid in got:
                    arrivals[uid].append(got[uid])
                    end = speech_end(by_uid[uid])
                    if end is not None:
                        lat_block.append(got[uid] - end)
                        total = by_uid[uid].total_ms
                        if total is not None:
                            c["delivery"].append(got[uid] - end - total)
        for f in expected:
            end = speech_end(f)
            if end is not None:
                c["slowest"].append(max(arrivals[f.uid]) - end)
        c["latency"].extend(lat_block)
        block_stats = stats(lat_block)
        c["blocks"].append({
            "index": block["index"], "watchers": block["connected"], "finals": len(expected),
            "latency_p50_ms": block_stats["p50"], "latency_p95_ms": block_stats["p95"],
            **({"connect_ms": block["connect_ms"], "pool_lag_ms_max": block.get("pool_lag_ms_max")}
               if "connect_ms" in block else {}),
            "server": sampler.window(block["t0"], block["t1"]),
        })
    # the reference alone: every final over the whole run, ids in sequence
    uids = [f.uid for f in ref.finals if isinstance(f.uid, int)]
    ref_gaps = sum(max(0, b - a - 1) for a, b in zip(uids, uids[1:]))
    ref_disorder = sum(b <= a for a, b in zip(uids, uids[1:]))
    out_cond: dict[str, Any] = {}
    for name, c in per_cond.items():
        block_p95 = [b["latency_p95_ms"] for b in c["blocks"] if b["latency_p95_ms"] is not None]
        windows = c["windows"]
        server = [sampler.window(a, b) for a, b in windows]
        session_lat = [v for r in sessions for v, recv in zip((final_latency_ms(m) for m in r.finals), r.final_recv_ms)
                       if v is not None and any(a <= recv <= b for a, b in windows)]
        n_watchers = args.watchers if name == "B" else 1
        received = [c["expected"]] + [c["received_per_slot"].get(i, 0) for i in range(1, n_watchers)]
        out_cond[name] = {
            "watchers": n_watchers,
            "blocks": len(c["blocks"]),
            "seconds": round(sum(b - a for a, b in windows) / 1000, 1),
            "watcher_latency_ms": stats(c["latency"]),
            "slowest_watcher_latency_ms": stats(c["slowest"]),
            "server_end_of_speech_to_publish_ms": stats(c["server_total"]),
            "delivery_ms": stats(c["delivery"]),
            "block_p95_median_ms": round(statistics.median(block_p95), 1) if block_p95 else None,
            "finals_expected_per_watcher": c["expected"],
            "finals_received_per_watcher": {"min": min(received), "median": statistics.median(received),
                                            "max": max(received)},
            "missing": c["missing"],
            "watcher_blocks_with_missing": c["watchers_missing"],
            "out_of_order": c["out_of_order"],
            "duplicates": c["duplicates"],
            "finals_not_at_reference": c["not_at_reference"],
            "client_drops": c["drops_client"],
            "session_latency_ms": stats(session_lat),
            "server_rss_mb_max": max((s["rss_mb_max"] for s in server if s["rss_mb_max"] is not None), default=None),
            "server_cpu_pct_median": _median([s.get("cpu_pct") for s in server]),
            "server_loop_thread_cpu_pct_median": _median([s.get("loop_thread_cpu_pct") for s in server]),
            "per_block": c["blocks"],
        }
    pa, pb = out_cond["A"]["watcher_latency_ms"]["p95"], out_cond["B"]["watcher_latency_ms"]["p95"]
    ma, mb = out_cond["A"]["block_p95_median_ms"], out_cond["B"]["block_p95_median_ms"]
    ratio = round(pb / pa, 3) if pa and pb else None
    all_session_lat = [v for r in sessions for v in (final_latency_ms(m) for m in r.finals) if v is not None]
    complete = [r for r in sessions if r.failure is None and r.audio_frames_sent > 0]
    rss = [s[1] for s in sampler.samples if s[1] is not None]
    pongs = ref.pongs
    return {
        "benchmark": "load",
        "ok": failure is None and ratio is not None and ratio <= 1.5 and out_cond["B"]["missing"] == 0
        and ref_gaps == 0 and out_cond["B"]["out_of_order"] == 0,
        **({"failure": failure} if failure else {}),
        "ratio_p95_B_over_A": ratio,
        "ratio_target": 1.5,
        "ratio_of_block_p95_medians": round(mb / ma, 3) if ma and mb else None,
        "block_order": "".join(b["condition"] for b in blocks),
        "block_s": args.block_s,
        "conditions": out_cond,
        "reference_watcher": {
            "finals": len(ref.finals), "id_gaps": ref_gaps, "out_of_order": ref_disorder,
            "forced_splits": sum(f.forced for f in ref.finals), "messages": ref.messages,
            "connects": ref.connects, "disconnects": ref.disconnects[:MAX_ERRORS_KEPT],
            "errors": ref.errors[:MAX_ERRORS_KEPT], "statuses": ref.statuses[:MAX_ERRORS_KEPT],
            "client_drops": ref.drops_client,
        },
        "clock": {
            "t0_bounds": len(bounds),
            "t0_spread_ms": {"2nd": round(bounds[1] - bounds[0], 2) if len(bounds) > 1 else None,
                             "10th": round(bounds[9] - bounds[0], 2) if len(bounds) > 9 else None},
            "pong_offset_ms_median": round(statistics.median(p[0] for p in pongs), 2) if pongs else None,
            "pong_rtt_ms_median": round(statistics.median(p[1] for p in pongs), 2) if pongs else None,
            "pad_end_ms": pad_end_ms,
        },
        "sessions": {
            "slots": args.sessions,
            "connections": len(sessions),
            "completed": len(complete),
            "finals": sum(len(r.finals) for r in complete),
            "finals_expected": utterances * len(complete),
            "refused": sum(1 for r in sessions if r.failure and "busy" in r.failure),
            "failures": sorted({r.failure for r in sessions if r.failure})[:MAX_ERRORS_KEPT],
            "error_codes": _count(e.get("code") for r in sessions for e in r.errors),
            "send_lag_ms_max": round(max((r.send_lag_ms_max for r in sessions), default=0.0), 1),
            "latency_ms": stats(all_session_lat),
        },
        "server_rss_mb": {"first": rss[0] if rss else None, "last": rss[-1] if rss else None,
                          "max": max(rss) if rss else None},
        "server_health_end": {k: end_health.get(k) for k in ("ok", "reason", "clients", "drops", "published")},
    }


def _median(values: list[Any]) -> float | None:
    nums = [v for v in values if isinstance(v, (int, float))]
    return round(statistics.median(nums), 1) if nums else None


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[str(item)] = out.get(str(item), 0) + 1
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="time in condition B (and as much in A)")
    p.add_argument("--quick", action="store_true", help="a smoke run of about a minute (one short block each)")
    p.add_argument("--block-s", type=float, default=None,
                   help="seconds measured per block (default: one loop of the sample, so blocks see the same speech)")
    p.add_argument("--watchers", type=int, default=100, help="watchers in condition B (A has 1)")
    p.add_argument("--sessions", type=int, default=4, help="browser capture sessions throughout")
    p.add_argument("--settle-s", type=float, default=2.0, help="after connecting a block's watchers")
    p.add_argument("--tail-s", type=float, default=5.0, help="B watchers stay this long after their block")
    p.add_argument("--warmup-s", type=float, default=None, help="after the first final (default: one dialogue)")
    p.add_argument("--warmup-timeout-s", type=float, default=300.0, help="wait this long for the first final")
    p.add_argument("--startup-timeout-s", type=float, default=300.0, help="for the server to be healthy")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG", help="extra server argument")
    p.add_argument("--audio", type=Path, default=ROOT / "tests" / "data" / "dialogue.wav", help="the sessions' audio")
    p.add_argument("--truth", type=Path, default=ROOT / "tests" / "data" / "dialogue.json")
    p.add_argument("--pool-url", default=None, help=argparse.SUPPRESS)  # internal: be the watcher pool
    args = p.parse_args(argv)
    if args.pool_url:
        return asyncio.run(pool_main(args.pool_url))
    if not 1 <= args.watchers <= 1000 or not 0 <= args.sessions <= 16 or args.minutes <= 0:
        p.error("--watchers 1..1000, --sessions 0..16, --minutes > 0")
    from emostream.realtime.resources import sample_media as default_media
    from emostream.realtime.sources import probe

    loop_s = probe(default_media()).duration_s + LOOP_GAP_S
    if args.quick:
        args.minutes = min(args.minutes, 0.5)
        args.block_s = args.block_s or 30.0
        args.warmup_s = 5.0 if args.warmup_s is None else args.warmup_s
    args.block_s = args.block_s or round(loop_s, 2)
    args.warmup_s = len(read_wav(args.audio)) / AUDIO_RATE if args.warmup_s is None else args.warmup_s
    args.blocks = max(1, math.ceil(args.minutes * 60 / args.block_s - 1e-6))

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    t = time.monotonic()
    try:
        server = ServerProcess(args.server_arg, max(1, args.sessions), args.startup_timeout_s,
                               command=loop_server_command(max(1, args.sessions)))
    except RuntimeError as exc:
        print(json.dumps({"benchmark": "load", "ok": False, "error": str(exc)}), flush=True)
        return 2
    out: dict[str, Any]
    try:
        ready_s, _ = wait_healthy(server.port, args.startup_timeout_s, capture=args.sessions > 0)
        log(f"server {server.url} (pid {server.pid}) healthy after {server.startup_s + ready_s:.1f} s; "
            f"{args.blocks} block(s) of {args.block_s} s per condition")
        out = asyncio.run(run(args, server.port, server.pid))
        out["server"] = {"cmd": ["python", "-c", "<loop>", *server.cmd[3:]], "pid": server.pid,
                         "ready_s": round(server.startup_s + ready_s, 1), "log": server.log.name}
    except (TimeoutError, KeyboardInterrupt) as exc:
        out = {"benchmark": "load", "ok": False, "error": f"{type(exc).__name__}: {exc}",
               "server_stderr_tail": server.stderr_tail()}
    finally:
        hwm = rss_mb(server.pid)["hwm_mb"]
        exit_code = server.stop()
    out.setdefault("server", {})
    out["server"].update(exit_code=exit_code, rss_hwm_mb=hwm)
    out["wall_s"] = round(time.monotonic() - t, 1)
    print(json.dumps(out, indent=1), flush=True)
    return 0 if out.get("ok") else 1


if __name__ == "__main__":
    raise SystemExit(main())
