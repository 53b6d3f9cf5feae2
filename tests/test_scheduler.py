"""The scheduler's policy, without threads: finals first, interims held while anyone is behind or
a final is near, coarser interims under load, round robin, resets taken before audio.

`FakeSession` / `FakeWorker` stand in for `BrowserSession` / `Worker` here only, to test the
scheduling code around them (tests/test_sessions.py runs the real ones)."""

from __future__ import annotations

import queue

import numpy as np

from emostream.realtime.scheduler import Scheduler
from emostream.realtime.types import AudioChunk


class FakeWorker:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name
        self.interim = True
        self.interim_stretch = 1.0
        self.final_pending = False

    def process(self, chunk: AudioChunk) -> None:
        self.log.append(self.name)

    def reset(self) -> None:
        self.log.append(f"reset {self.name}")

    def live_face(self) -> None:
        pass


class FakeSession:
    def __init__(self, log: list[str], name: str, chunks: int, backlog_s: float = 0.0) -> None:
        self.id = name
        self.worker = FakeWorker(log, name)
        self.audio_q: queue.Queue[AudioChunk] = queue.Queue()
        for _ in range(chunks):
            self.audio_q.put(AudioChunk(np.zeros(1024, np.float32), 16000, 0))
        self._backlog = backlog_s
        self.wants_interim = True
        self.closed = False
        self.reset_wanted = False
        self.last_metrics_ns = 0
        self.sent: list[dict] = []

    def backlog_s(self) -> float:
        return self._backlog

    def take_reset(self) -> bool:
        wanted, self.reset_wanted = self.reset_wanted, False
        return wanted

    def emit(self, msg: dict) -> None:
        self.sent.append(msg)

    def metrics(self) -> dict:
        return {"type": "metrics"}


class FakeManager:
    def __init__(self, sessions: list[FakeSession]) -> None:
        self._sessions = sessions

    def sessions(self) -> list[FakeSession]:
        return list(self._sessions)


def test_finals_first_then_round_robin_with_a_time_slice() -> None:
    log: list[str] = []
    a, b, c = (FakeSession(log, n, chunks=20) for n in "abc")
    b.worker.final_pending = True
    sched = Scheduler(FakeManager([a, b, c]), slice_s=0.2)  # 0.2 s: 4 chunks of 64 ms
    assert sched.run_round()
    assert log == ["b"] * 4 + ["c"] * 4 + ["a"] * 4  # b first (final near), then from the round's start
    assert not any(s.worker.interim for s in (a, b, c))  # a final is near: nobody's interims run
    b.worker.final_pending = False
    log.clear()
    sched.run_round()
    assert log == ["c"] * 4 + ["a"] * 4 + ["b"] * 4  # the start moves on each round
    assert all(s.worker.interim for s in (a, b, c)) and a.worker.interim_stretch == 1.5  # 3 sessions: coarser


def test_interims_are_held_while_anyone_is_behind_and_resets_come_first() -> None:
    log: list[str] = []
    a, b = FakeSession(log, "a", chunks=2), FakeSession(log, "b", chunks=2, backlog_s=3.0)
    a.reset_wanted = True
    sched = Scheduler(FakeManager([a, b]))
    sched.run_round()
    assert not a.worker.interim and not b.worker.interim and sched.interims_held == 1
    assert log.index("reset a") < log.index("a")
    assert a.worker.interim_stretch == 1.0  # two sessions: interims keep their interval
    log.clear()
    assert sched.run_round() is False and log == []  # nothing left to process
    b._backlog = 0.0
    sched.run_round()
    assert a.worker.interim and b.worker.interim
