"""K concurrent browser-like capturing sessions against one server (docs/protocol.md, browser capture).

Each session is a websocket client on `ws://127.0.0.1:PORT/ws?source=browser` that waits for its
`hello`, then sends tests/data/dialogue.wav at real-time pace as 1024-sample audio frames (and,
with --video, a video's frames as 320x240 JPEG at 5 frames/s), then a little silence so the last
utterance ends, and collects every message until it has a final per utterance or --tail-s passes.
The sessions of one K start together; K runs one after another (--sessions 1,2,4,6).

Per session: finals received vs the utterances of tests/data/dialogue.json, end of speech ->
final p50/p95 (each final's `timings_ms.total_ms`, else its `latency_ms`) and its parts (the wait
for the end of the turn, the final's compute, its ASR, ...: `latency_parts_ms`), the server's last rtf
and drops (its last `metrics`), errors and statuses received. Per K: the server's resident memory
(VmRSS of /proc/PID/status: before, peak while sampled, after) when its pid is known. Prints one
JSON object on stdout; logs go to stderr.

    python benchmarks/sessions.py --start-server [--sessions 1,2,4,6] [--video demo/media/sample.mp4]
    python benchmarks/sessions.py --port 8765 --server-pid PID [--token T]
    python benchmarks/sessions.py --cluster ray [--sessions 1,2,4,6,8]

With `--cluster ray` the same K run twice in one invocation: on the single-process server, then on
`emostream serve --cluster ray` over a local two-node Ray cluster started here (`ray start --head
--num-cpus 1`, then a second `ray start --num-cpus 1`; two ingress replicas, one a node). It adds,
per K on the cluster: the batch sizes each model deployment reached (from `/healthz`), the memory of
the Ray actors on each node and of Ray's daemons; and, with both servers up, the round trip of a
`ping` through each (interleaved): what Ray's HTTP proxy adds to every message.

Loopback only. Every wait has a deadline: a run stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import numpy as np

from emostream.realtime.media_frames import AUDIO_RATE, MAX_AUDIO_SAMPLES, encode_audio, encode_video

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
logger = logging.getLogger("benchmarks.sessions")

MAX_ERRORS_KEPT = 20  # per session, in the report (all are counted)
MAX_MESSAGES = 200_000  # per session: a runaway server cannot grow the client without bound


# ---------------------------------------------------------------------------------------------
# Inputs


def read_wav(path: Path) -> np.ndarray:
    """(n,) int16 mono 16 kHz samples of a wav file (stdlib wave)."""
    with wave.open(str(path), "rb") as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2 or w.getframerate() != AUDIO_RATE:
            raise SystemExit(f"{path}: need 16 kHz mono int16, got {w.getframerate()} Hz, "
                             f"{w.getnchannels()} channel(s), {8 * w.getsampwidth()}-bit")
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.int16)


def load_video_jpegs(path: Path, fps: float, duration_s: float, size: tuple[int, int] = (320, 240),
                     quality: int = 70) -> list[bytes]:
    """JPEGs of `path` at `fps` (PyAV decode, downscaled to `size`, cv2.imencode), at most duration_s of them."""
    import av
    import cv2

    out: list[bytes] = []
    limit = int(duration_s * fps) + 1
    next_t = 0.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else len(out) / fps
            if t + 1e-6 < next_t:
                continue
            next_t += 1.0 / fps
            image = frame.to_ndarray(format="bgr24")  # (H, W, 3)
            if (image.shape[1], image.shape[0]) != size:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:
                out.append(buf.tobytes())
            if len(out) >= limit:
                break
    if not out:
        raise SystemExit(f"{path}: no video frames decoded")
    return out


# ---------------------------------------------------------------------------------------------
# One session


@dataclass
class SessionResult:
    index: int
    session: str | None = None
    connected: bool = False
    hello_ms: float | None = None
    capture: dict[str, Any] | None = None
    audio_frames_sent: int = 0
    video_frames_sent: int = 0
    send_lag_ms_max: float = 0.0  # how late this client sent a frame against its real-time schedule
    finals: list[dict[str, Any]] = field(default_factory=list)
    final_recv_ms: list[float] = field(default_factory=list)  # when each final arrived (time.monotonic, ms)
    interims: int = 0
    last_metrics: dict[str, Any] | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    types: Counter = field(default_factory=Counter)
    close_code: int | None = None
    close_reason: str | None = None
    failure: str | None = None
    wall_s: float = 0.0


def final_latency_ms(msg: dict[str, Any]) -> float | None:
    """End of speech -> final: timings_ms.total_ms when the server gives it, else latency_ms."""
    timings = msg.get("timings_ms") or {}
    for value in (timings.get("total_ms"), msg.get("latency_ms")):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


# Where each final's time went (its `timings_ms`): waiting for the end (endpoint_wait_ms: the ending
# pause, the end-of-turn verdict and any backlog before the worker saw it) and the final's own work.
BREAKDOWN = ("endpoint_wait_ms", "compute_ms", "asr_ms", "speaker_ms", "text_ms", "model_ms", "face_ms")


def breakdown(finals: list[dict[str, Any]]) -> dict[str, dict[str, float | int | None]]:
    """p50/p95 of each part of BREAKDOWN over `finals` (those that report it)."""
    out = {}
    for key in BREAKDOWN:
        values = [float(v) for m in finals if isinstance(v := (m.get("timings_ms") or {}).get(key), (int, float))]
        if values:
            out[key] = percentiles(values)
    return out


def percentiles(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    return {"n": len(values), "p50": round(float(np.percentile(values, 50)), 1),
            "p95": round(float(np.percentile(values, 95)), 1), "max": round(max(values), 1),
            "mean": round(statistics.fmean(values), 1)}


def session_report(r: SessionResult, expected: int) -> dict[str, Any]:
    lat = [v for v in (final_latency_ms(m) for m in r.finals) if v is not None]
    metrics = r.last_metrics or {}
    return {
        "index": r.index,
        "session": r.session,
        "connected": r.connected,
        "hello_ms": r.hello_ms,
        "finals": len(r.finals),
        "utterances": expected,
        "interims": r.interims,
        "latency_ms": percentiles(lat),
        "rtf": metrics.get("rtf"),
        "drops": metrics.get("drops"),
        "queues": metrics.get("queues"),
        "errors": len(r.errors),
        "error_codes": dict(Counter(e.get("code") for e in r.errors)),
        "error_samples": r.errors[:MAX_ERRORS_KEPT],
        "statuses": r.statuses[:MAX_ERRORS_KEPT],
        "audio_frames_sent": r.audio_frames_sent,
        "video_frames_sent": r.video_frames_sent,
        "send_lag_ms_max": round(r.send_lag_ms_max, 1),
        "messages": dict(r.types),
        "close_code": r.close_code,
        "close_reason": r.close_reason,
        "failure": r.failure,
        "wall_s": round(r.wall_s, 2),
    }


def _schedule(n_audio: int, frame_samples: int, n_video: int, video_fps: float, speed: float) -> list[tuple[float, str, int]]:
    """(due seconds after start, kind, index) of every frame to send, in time order.

    due is the frame's media time / speed; the frame's t_ms stays its media time after start.
    """
    events = [(i * frame_samples / AUDIO_RATE / speed, "audio", i) for i in range(n_audio)]
    events += [(j / video_fps / speed, "video", j) for j in range(n_video)]
    events.sort(key=lambda e: (e[0], e[1]))
    return events


async def run_session(index: int, url: str, audio: np.ndarray, jpegs: list[bytes], args: argparse.Namespace,
                      expected: int, start: asyncio.Event) -> SessionResult:
    """One capturing client; never raises (a failure is recorded in the result)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    r = SessionResult(index=index)
    t_begin = time.monotonic()
    await start.wait()
    try:
        async with connect(url, open_timeout=args.connect_timeout_s, close_timeout=5,
                           max_size=2**22, ping_interval=None) as ws:
            r.connected = True
            t_conn = time.monotonic()
            got_hello = asyncio.Event()
            done = asyncio.Event()  # every final arrived after the audio was sent, or the server closed
            sent_all = False
            silence = np.zeros(int(args.silence_s * AUDIO_RATE), dtype=np.int16)
            stream = np.concatenate([audio, silence])  # (n,) int16: the audio, then silence to end the last utterance

            def handle(msg: dict[str, Any]) -> None:
                kind = msg.get("type")
                r.types[str(kind)] += 1
                if kind == "hello":
                    r.session = msg.get("session")
                    r.capture = msg.get("capture") if isinstance(msg.get("capture"), dict) else None
                    r.hello_ms = round((time.monotonic() - t_conn) * 1000, 1)
                    got_hello.set()
                elif kind == "prediction":
                    if msg.get("final"):
                        r.finals.append(msg)
                        r.final_recv_ms.append(time.monotonic() * 1000.0)
                        if sent_all and len(r.finals) >= expected:
                            done.set()
                    else:
                        r.interims += 1
                elif kind == "metrics":
                    r.last_metrics = msg
                elif kind == "error":
                    r.errors.append({"code": msg.get("code"), "message": str(msg.get("message"))[:300],
                                     "t_s": round(time.monotonic() - t_conn, 2)})
                    if r.session is None:
                        got_hello.set()  # refused before the hello (busy)
                elif kind == "status":
                    r.statuses.append(str(msg.get("code")))

            async def receive() -> None:
                try:
                    async for raw in ws:
                        if sum(r.types.values()) >= MAX_MESSAGES:
                            r.failure = f"more than {MAX_MESSAGES} messages"
                            break
                        if isinstance(raw, bytes):
                            r.types["binary"] += 1
                            continue
                        try:
                            msg = json.loads(raw)
                        except ValueError:
                            r.types["bad_json"] += 1
                            continue
                        if isinstance(msg, dict):
                            handle(msg)
                except ConnectionClosed:
                    pass
                finally:
                    done.set()
                    got_hello.set()

            receiver = asyncio.create_task(receive())
            try:
                await asyncio.wait_for(got_hello.wait(), args.connect_timeout_s)
            except TimeoutError:
                r.failure = f"no hello within {args.connect_timeout_s} s"
            if r.session is None and r.failure is None:
                r.failure = f"refused: {r.errors[-1]['code']}" if r.errors else "closed before the hello"
            if r.failure is None:
                capture = r.capture or {}
                frame = args.frame_samples
                if isinstance(capture.get("max_audio_samples"), int) and capture["max_audio_samples"] > 0:
                    frame = min(frame, capture["max_audio_samples"])
                n_audio = -(-len(stream) // frame)
                video_fps = args.video_fps
                if isinstance(capture.get("video_fps"), (int, float)) and capture["video_fps"] > 0:
                    video_fps = float(capture["video_fps"])
                n_video = int(len(audio) / AUDIO_RATE * video_fps) if jpegs else 0
                t0 = time.monotonic()
                for due, kind, i in _schedule(n_audio, frame, n_video, video_fps, args.speed):
                    if receiver.done():
                        break  # the server closed
                    delay = t0 + due - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        r.send_lag_ms_max = max(r.send_lag_ms_max, -delay * 1000)
                    t_ms = (t0 + due * args.speed) * 1000.0  # capture time on this client's monotonic clock
                    try:
                        if kind == "audio":
                            await ws.send(encode_audio(i, t_ms, stream[i * frame:(i + 1) * frame]))
                            r.audio_frames_sent += 1
                        else:
                            await ws.send(encode_video(i, t_ms, 320, 240, jpegs[i % len(jpegs)]))
                            r.video_frames_sent += 1
                    except ConnectionClosed:
                        break
                sent_all = True
                if len(r.finals) >= expected:
                    done.set()
                try:
                    await asyncio.wait_for(done.wait(), args.tail_s)
                except TimeoutError:
                    pass
            await ws.close()
            try:
                await asyncio.wait_for(receiver, 10)
            except TimeoutError:
                receiver.cancel()
            r.close_code = ws.close_code
            r.close_reason = ws.close_reason or None
    except Exception as exc:  # a benchmark records failures; the other sessions go on
        r.failure = r.failure or f"{type(exc).__name__}: {exc}"
        logger.debug("session %d failed", index, exc_info=True)
    r.wall_s = time.monotonic() - t_begin
    return r


# ---------------------------------------------------------------------------------------------
# The server


def rss_mb(pid: int | None) -> dict[str, float | None]:
    """VmRSS and VmHWM (peak) of a process, MiB; None when unknown."""
    out: dict[str, float | None] = {"rss_mb": None, "hwm_mb": None}
    if pid is None:
        return out
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss_mb" if key == "VmRSS" else "hwm_mb"] = round(int(value.split()[0]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return out


class ServerProcess:
    """`emostream serve --source browser --port 0 --max-sessions N` as a subprocess (or `command`,
    any server command line that prints `serving http://HOST:PORT/` on stdout)."""

    def __init__(self, extra: list[str], max_sessions: int, startup_timeout_s: float,
                 command: list[str] | None = None) -> None:
        if command is None:
            exe = shutil.which("emostream") or str(Path(sys.executable).with_name("emostream"))
            cmd = [exe] if Path(exe).exists() else [sys.executable, "-m", "emostream.realtime.cli"]
            command = [*cmd, "serve", "--source", "browser", "--host", HOST, "--port", "0",
                       "--max-sessions", str(max_sessions)]
        self.cmd = [*command, *extra]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="emostream-serve-", suffix=".log", delete=False)
        self.lines: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        t = time.monotonic()
        logger.info("starting %s", " ".join(self.cmd))
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT,
                                     start_new_session=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = t + startup_timeout_s
        while not self._ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        self.startup_s = round(time.monotonic() - t, 2)
        if self.url is None:
            why = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                   else f"printed no 'serving http://...' within {startup_timeout_s} s")
            tail = self.stderr_tail()
            self.stop()
            raise RuntimeError(f"server {why}; stderr tail:\n{tail}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # drained to the end so the pipe never fills
            if len(self.lines) < 1000:
                self.lines.append(line.rstrip())
            if self.url is None and line.startswith("serving http"):
                self.url = line.split()[1]
                self._ready.set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        assert self.url is not None
        port = urlparse(self.url).port
        assert port is not None, self.url
        return port

    def stderr_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 20.0) -> int | None:
        """SIGINT (graceful), then SIGTERM, then SIGKILL; returns the exit code."""
        for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                logger.warning("server did not stop on %s", sig.name)
        self.log.close()
        return self.proc.returncode


async def sample_rss(pid: int | None, stop: asyncio.Event, peak: list[float]) -> None:
    """Track the peak VmRSS while the sessions run (every 0.25 s)."""
    while not stop.is_set():
        value = rss_mb(pid)["rss_mb"]
        if value is not None:
            peak.append(value)
        try:
            await asyncio.wait_for(stop.wait(), 0.25)
        except TimeoutError:
            pass


async def run_k(k: int, url: str, audio: np.ndarray, jpegs: list[bytes], args: argparse.Namespace,
                expected: int, pid: int | None) -> dict[str, Any]:
    before = rss_mb(pid)
    start = asyncio.Event()
    stop = asyncio.Event()
    peak: list[float] = []
    sampler = asyncio.create_task(sample_rss(pid, stop, peak))
    tasks = [asyncio.create_task(run_session(i, url, audio, jpegs, args, expected, start)) for i in range(k)]
    t = time.monotonic()
    start.set()  # the K sessions start together
    bound = len(audio) / AUDIO_RATE / args.speed + args.silence_s + args.tail_s + 2 * args.connect_timeout_s + 30
    finished, pending = await asyncio.wait(tasks, timeout=bound)
    for task in pending:
        task.cancel()
    results = [task.result() for task in finished]
    stop.set()
    await sampler
    wall = time.monotonic() - t
    after = rss_mb(pid)
    scheduler = await asyncio.to_thread(scheduler_health, url)
    reports = sorted((session_report(r, expected) for r in results), key=lambda s: s["index"])
    all_lat = [v for r in results for v in (final_latency_ms(m) for m in r.finals) if v is not None]
    rtfs = [s["rtf"] for s in reports if isinstance(s["rtf"], (int, float))]
    return {
        "k": k,
        "wall_s": round(wall, 2),
        "timed_out_sessions": len(pending),
        "scheduler": scheduler,  # /healthz: the dialogues it drives, early ASR batches run so far (cumulative)
        "server_rss_mb": {"before": before["rss_mb"], "peak": max(peak) if peak else None,
                          "after": after["rss_mb"], "hwm": after["hwm_mb"]},
        "summary": {
            "connected": sum(s["connected"] for s in reports),
            "with_hello": sum(s["session"] is not None for s in reports),
            "distinct_sessions": len({s["session"] for s in reports if s["session"] is not None}),
            "finals": sum(s["finals"] for s in reports),
            "utterances": expected * k,
            "latency_ms": percentiles(all_lat),
            "latency_parts_ms": breakdown([m for r in results for m in r.finals]),
            "rtf_max": max(rtfs) if rtfs else None,
            "errors": sum(s["errors"] for s in reports),
            "error_codes": dict(sum((Counter(s["error_codes"]) for s in reports), Counter())),
        },
        "sessions": reports,
    }


def scheduler_health(ws_url: str) -> str | None:
    """The reason line of the server's `/healthz` part `scheduler` (None if it has none or no answer)."""
    body = healthz(ws_url)
    return (((body or {}).get("parts") or {}).get("scheduler") or {}).get("reason")


def healthz(ws_url: str) -> dict[str, Any] | None:
    """The server's `/healthz` body (None without an answer)."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(ws_url)
    url = urllib.parse.urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, "/healthz",
                                   "", ""))
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"{}")
    except (OSError, ValueError):
        return None
    return body


async def wait_ready(url: str, timeout_s: float, probe_timeout_s: float = 5.0) -> float:
    """Probe until a capturing connection gets a hello with `capture` (the server may print its
    `serving` line before its models are loaded). Returns the seconds waited; raises TimeoutError."""
    from websockets.asyncio.client import connect

    t = time.monotonic()
    last = "no answer"
    for _ in range(int(timeout_s) + 1):  # at most one try a second
        try:
            async with connect(url, open_timeout=probe_timeout_s, close_timeout=2, ping_interval=None) as ws:
                msg = json.loads(await asyncio.wait_for(ws.recv(), probe_timeout_s))
                if isinstance(msg, dict) and msg.get("type") == "hello" and isinstance(msg.get("capture"), dict):
                    return time.monotonic() - t
                last = f"{msg.get('type')} {msg.get('code', '')} {msg.get('message', '')}".strip()
        except Exception as exc:  # refused, closed, timed out, not JSON: try again
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - t > timeout_s:
            break
        await asyncio.sleep(1.0)
    raise TimeoutError(f"no capturing hello within {timeout_s} s (last: {last})")


async def run_all(args: argparse.Namespace, url: str, pid: int | None, audio: np.ndarray, jpegs: list[bytes],
                  expected: int, ks: list[int]) -> dict[str, Any]:
    ready_s = await wait_ready(url, args.startup_timeout_s)
    logger.info("server ready for capture after %.1f s", ready_s)
    await asyncio.sleep(1.0)  # let the probe's session end
    runs = []
    for n, k in enumerate(ks):
        if n:
            await asyncio.sleep(args.pause_s)  # let the server end the previous sessions
        logger.info("K=%d: %d session(s) of %.1f s of audio", k, k, len(audio) / AUDIO_RATE)
        run = await run_k(k, url, audio, jpegs, args, expected, pid)
        s = run["summary"]
        logger.info("K=%d: finals %d/%d, latency p50 %s p95 %s ms, rtf max %s, errors %s", k, s["finals"],
                    s["utterances"], s["latency_ms"]["p50"], s["latency_ms"]["p95"], s["rtf_max"], s["error_codes"])
        runs.append(run)
    return {"ready_s": round(ready_s, 2), "runs": runs}



# ---------------------------------------------------------------------------------------------
# The cluster run (--cluster ray)

RAY_PORT = 6391


class LocalRayCluster:
    """Two Ray nodes of one CPU each on this machine (`ray start`), stopped with `ray stop --force`."""

    def __init__(self, port: int = RAY_PORT) -> None:
        from emostream.realtime.cluster.launch import SPREAD_ENV

        self.address = f"127.0.0.1:{port}"
        self.ray = str(Path(sys.executable).with_name("ray"))
        # A loopback-only cluster of this benchmark: Ray's token authentication off (here `ray start`
        # turns it on when ~/.ray/auth_token exists, and the second node then cannot join without it).
        os.environ["RAY_AUTH_MODE"] = "disabled"
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", SPREAD_ENV: "0"}
        subprocess.run([self.ray, "stop", "--force"], capture_output=True, env=env, timeout=60)
        for cmd in ([self.ray, "start", "--head", "--num-cpus", "1", "--port", str(port), "--include-dashboard=false",
                     "--disable-usage-stats", "--node-ip-address", "127.0.0.1"],
                    [self.ray, "start", "--address", self.address, "--num-cpus", "1", "--node-ip-address", "127.0.0.1"]):
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
            if done.returncode != 0:
                self.stop()
                raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr[-2000:]}")

    def stop(self) -> None:
        subprocess.run([self.ray, "stop", "--force"], capture_output=True, timeout=120)


def ray_memory(address: str) -> dict[str, Any]:
    """RSS of the live Ray actors per node (replicas, proxy, controller: from Ray's actor table, read
    by a throwaway driver) and of Ray's daemons on this machine (gcs, raylets, agents, monitors)."""
    code = (f"import json, ray; from ray._private.state import actors; ray.init(address={address!r}, logging_level='ERROR'); "
            "print(json.dumps([[a['Address']['NodeID'], a['Pid'], a['ActorClassName']] "
            "for a in actors(actor_state_name='ALIVE').values()]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    try:
        table = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return {"error": done.stderr[-500:]}
    nodes: dict[str, dict[str, Any]] = {}
    actor_pids = set()
    for node, pid, cls in table:
        actor_pids.add(pid)
        entry = nodes.setdefault(node[:8], {"actors_mb": 0.0, "actors": {}})
        mb = rss_mb(pid)["rss_mb"] or 0.0
        entry["actors_mb"] = round(entry["actors_mb"] + mb, 1)
        entry["actors"][cls.split(":")[-1]] = round(entry["actors"].get(cls.split(":")[-1], 0.0) + mb, 1)
    daemons = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in actor_pids:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "site-packages/ray/" in cmd or cmd.startswith("ray::"):
            daemons += rss_mb(int(proc.name))["rss_mb"] or 0.0
    return {"nodes": nodes, "daemons_mb": round(daemons, 1)}


def cluster_batches(ws_url: str) -> dict[str, dict[str, int]]:
    """Per model deployment, batch size -> batches run so far (cumulative), from /healthz."""
    body = healthz(ws_url) or {}
    deployments = ((body.get("cluster") or {}).get("deployments")) or {}
    return {name: {str(k): int(v) for k, v in (d.get("batches") or {}).items()}
            for name, d in deployments.items() if "batches" in d}


def batch_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, Any]:
    out = {}
    for name, sizes in after.items():
        delta = {int(k): v - before.get(name, {}).get(k, 0) for k, v in sizes.items()}
        delta = {k: v for k, v in delta.items() if v > 0}
        n = sum(delta.values())
        out[name] = {"batches": n, "mean_size": round(sum(k * v for k, v in delta.items()) / n, 2) if n else None,
                     "max_size": max(delta) if delta else None}
    return out


async def ping_rtt(urls: dict[str, str], count: int) -> dict[str, Any]:
    """Round trip of `ping` -> `pong` on a watching connection to each server, interleaved: the
    median difference is what the cluster's proxy adds to each message."""
    from websockets.asyncio.client import connect

    conns = {name: await connect(url.split("?")[0], ping_interval=None, open_timeout=30)
             for name, url in urls.items()}
    rtts: dict[str, list[float]] = {name: [] for name in urls}
    try:
        for ws in conns.values():
            json.loads(await asyncio.wait_for(ws.recv(), 30))  # the hello
        for i in range(count):
            for name, ws in conns.items():
                t = time.perf_counter()
                await ws.send(json.dumps({"type": "ping", "v": 1, "id": i}))
                while True:
                    msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if msg.get("type") == "pong" and msg.get("id") == i:
                        break
                rtts[name].append((time.perf_counter() - t) * 1000)
    finally:
        for ws in conns.values():
            await ws.close()
    med = {name: round(statistics.median(v), 3) for name, v in rtts.items()}
    return {"count": count, "median_rtt_ms": med,
            "p95_rtt_ms": {name: percentiles(v)["p95"] for name, v in rtts.items()},
            "proxy_adds_ms": round(med.get("cluster", 0.0) - med.get("single", 0.0), 3)}


def run_cluster(args: argparse.Namespace, single_url: str | None, audio: np.ndarray, jpegs: list[bytes],
                expected: int) -> dict[str, Any]:
    """The Ks on `serve --cluster ray` over a local two-node cluster (and the ping comparison while
    the single-process server, at `single_url`, is still up)."""
    import yaml

    cluster = LocalRayCluster()
    server: ServerProcess | None = None
    config = Path(tempfile.mkdtemp(prefix="emostream-cluster-")) / "cluster.yaml"
    config.write_text(yaml.safe_dump({"ingress": {"replicas": 2, "one_per_node": True,
                                                  "sessions_per_replica": max(args.sessions)}}))
    try:
        exe = str(Path(sys.executable).with_name("emostream"))
        server = ServerProcess([], 0, args.startup_timeout_s, command=[
            exe, "serve", "--source", "browser", "--host", HOST, "--port", "0", "--cluster", "ray",
            "--ray-address", cluster.address, "--cluster-config", str(config), *args.server_arg])
        url = f"ws://{HOST}:{server.port}/ws?source=browser"
        out: dict[str, Any] = {"address": cluster.address, "startup_s": server.startup_s, "config": str(config)}
        if single_url is not None:
            out["ping"] = asyncio.run(ping_rtt({"single": single_url, "cluster": url}, args.ping_count))
        out["memory_idle"] = ray_memory(cluster.address)
        result = asyncio.run(run_cluster_ks(args, url, cluster.address, audio, jpegs, expected))
        out.update(result)
        return out
    finally:
        if server is not None:
            server.stop()
        cluster.stop()


async def run_cluster_ks(args: argparse.Namespace, url: str, address: str, audio: np.ndarray, jpegs: list[bytes],
                         expected: int) -> dict[str, Any]:
    ready_s = await wait_ready(url, args.startup_timeout_s)
    await asyncio.sleep(1.0)
    runs = []
    for n, k in enumerate(args.sessions):
        if n:
            await asyncio.sleep(args.pause_s)
        before = await asyncio.to_thread(cluster_batches, url)
        run = await run_k(k, url, audio, jpegs, args, expected, None)
        run["batches"] = batch_delta(before, await asyncio.to_thread(cluster_batches, url))
        run["memory"] = await asyncio.to_thread(ray_memory, address)
        s = run["summary"]
        logger.info("cluster K=%d: finals %d/%d, latency p50 %s p95 %s ms, batches %s", k, s["finals"],
                    s["utterances"], s["latency_ms"]["p50"], s["latency_ms"]["p95"],
                    {d: b["mean_size"] for d, b in run["batches"].items()})
        runs.append(run)
    return {"ready_s": round(ready_s, 2), "runs": runs}


def compare(single: list[dict[str, Any]], cluster: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per K: p50 and p95 on each, and the cluster's p95 over the single-process server's."""
    rows = []
    by_k = {r["k"]: r for r in cluster}
    for r in single:
        c = by_k.get(r["k"])
        if c is None:
            continue
        a, b = r["summary"]["latency_ms"], c["summary"]["latency_ms"]
        rows.append({"k": r["k"], "single_p50": a["p50"], "single_p95": a["p95"], "cluster_p50": b["p50"],
                     "cluster_p95": b["p95"],
                     "p95_ratio": round(b["p95"] / a["p95"], 3) if a["p95"] and b["p95"] else None,
                     "finals": [r["summary"]["finals"], c["summary"]["finals"]],
                     "utterances": r["summary"]["utterances"]})
    return rows


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sessions wants integers like 1,2,4,6, got {text!r}") from None
    if not ks or any(k < 1 or k > 64 for k in ks):
        raise argparse.ArgumentTypeError("--sessions: each K must be 1..64")
    return ks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=parse_ks, default=[1, 2, 4, 6], help="the K to run, e.g. 1,2,4,6")
    p.add_argument("--port", type=int, default=8765, help="port of a running server on 127.0.0.1")
    p.add_argument("--token", default=os.environ.get("EMOSTREAM_TOKEN"), help="the server's token, if any")
    p.add_argument("--server-pid", type=int, default=None, help="pid of a running server (for its RSS)")
    p.add_argument("--start-server", action="store_true",
                   help="run `emostream serve --source browser --port 0 --max-sessions N` and stop it at the end")
    p.add_argument("--max-sessions", type=int, default=8, help="--max-sessions of the started server")
    p.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for the started server (repeatable), e.g. --server-arg=--engine=onnx")
    p.add_argument("--startup-timeout-s", type=float, default=300.0,
                   help="wait this long for the server to serve and take capture")
    p.add_argument("--audio", type=Path, default=ROOT / "tests" / "data" / "dialogue.wav", help="16 kHz mono int16 wav")
    p.add_argument("--truth", type=Path, default=ROOT / "tests" / "data" / "dialogue.json",
                   help="its utterances (the finals expected)")
    p.add_argument("--video", type=Path, default=None, help="a video sent as the camera (e.g. demo/media/sample.mp4)")
    p.add_argument("--video-fps", type=float, default=5.0, help="video frames a second (unless the hello says)")
    p.add_argument("--frame-samples", type=int, default=1024, help="samples per audio frame (1024 = 64 ms)")
    p.add_argument("--max-audio-s", type=float, default=None, help="send only the first seconds of the audio")
    p.add_argument("--silence-s", type=float, default=2.0, help="silence sent after the audio (ends the last utterance)")
    p.add_argument("--tail-s", type=float, default=20.0, help="after sending, wait at most this long for finals")
    p.add_argument("--connect-timeout-s", type=float, default=20.0, help="for the websocket handshake and the hello")
    p.add_argument("--pause-s", type=float, default=3.0, help="pause between two K")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time; above 1 tests the server's too_fast")
    p.add_argument("--cluster", choices=("ray",), default=None,
                   help="ray: also run the Ks on `serve --cluster ray` over a local two-node Ray cluster (implies "
                        "--start-server for the single-process side)")
    p.add_argument("--ping-count", type=int, default=200, help="pings through each server (--cluster)")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = p.parse_args(argv)
    if args.cluster:
        args.start_server = True
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not 1 <= args.frame_samples <= MAX_AUDIO_SAMPLES:
        p.error(f"--frame-samples must be 1..{MAX_AUDIO_SAMPLES}")
    if not 0.1 <= args.speed <= 100 or args.tail_s < 0 or args.silence_s < 0 or args.connect_timeout_s <= 0:
        p.error("--speed 0.1..100, --tail-s and --silence-s >= 0, --connect-timeout-s > 0")

    audio = read_wav(args.audio)
    if args.max_audio_s is not None:
        audio = audio[: int(args.max_audio_s * AUDIO_RATE)]
    utterances = json.loads(args.truth.read_text())["utterances"]
    if args.max_audio_s is not None:
        utterances = [u for u in utterances if u["end_s"] <= args.max_audio_s]
    expected = len(utterances)
    jpegs = load_video_jpegs(args.video, args.video_fps, len(audio) / AUDIO_RATE) if args.video else []

    server: ServerProcess | None = None
    pid = args.server_pid
    port = args.port
    if args.start_server:
        try:
            server = ServerProcess(args.server_arg, args.max_sessions, args.startup_timeout_s)
        except RuntimeError as exc:
            print(json.dumps({"benchmark": "sessions", "error": str(exc)}), flush=True)
            return 2
        pid, port = server.pid, server.port
    query = "source=browser" + (f"&token={quote(args.token, safe='')}" if args.token else "")
    url = f"ws://{HOST}:{port}/ws?{query}"
    cluster: dict[str, Any] | None = None
    try:
        result = asyncio.run(run_all(args, url, pid, audio, jpegs, expected, args.sessions))
        if args.cluster:
            try:
                cluster = run_cluster(args, url, audio, jpegs, expected)
            except (RuntimeError, TimeoutError) as exc:
                cluster = {"error": str(exc), "runs": []}
    except TimeoutError as exc:
        result = {"error": str(exc), "runs": []}
    finally:
        exit_code = server.stop() if server is not None else None
    out = {
        "benchmark": "sessions",
        "server": {"url": f"http://{HOST}:{port}/", "pid": pid, "started": server is not None,
                   "startup_s": server.startup_s if server else None, "exit_code": exit_code,
                   "log": server.log.name if server else None,
                   "cmd": server.cmd if server else None, "ready_s": result.get("ready_s")},
        "audio": {"path": str(args.audio), "seconds": round(len(audio) / AUDIO_RATE, 2),
                  "frame_samples": args.frame_samples, "speed": args.speed},
        "video": {"path": str(args.video), "frames": len(jpegs), "fps": args.video_fps} if jpegs else None,
        "utterances": expected,
        **({"error": result["error"]} if "error" in result else {}),
        "runs": result["runs"],
    }
    if cluster is not None:
        out["cluster"] = cluster
        out["side_by_side"] = compare(result["runs"], cluster.get("runs", []))
    print(json.dumps(out, indent=1), flush=True)
    return 1 if "error" in result or (cluster is not None and "error" in cluster) else 0


if __name__ == "__main__":
    raise SystemExit(main())
