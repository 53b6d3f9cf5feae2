"""The scheduler's policy, without threads: finals first, interims held while anyone is behind or
a final is near, coarser interims under load, round robin, resets taken before audio; a dialogue
whose input ended is flushed once and removed; a failing one is given up, the others go on.

`FakeDialogue` / `FakeWorker` stand in for `Dialogue` / `Worker` here only, to test the
scheduling code around them (tests/test_sessions.py and tests/test_pipeline_e2e.py run the real ones)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

from emostream.realtime.asr import PendingTranscript
from emostream.realtime.scheduler import Scheduler
from emostream.realtime.turns import WindowsJob
from emostream.realtime.types import AudioChunk, Transcript


class FakeWorker:
    def __init__(self, log: list[str], name: str) -> None:
        self.log, self.name = log, name
        self.interim = True
        self.interim_stretch = 1.0
        self.final_pending = False
        self.asr_due = None
        self.due_after: int | None = None  # an early ASR job falls due after this many chunks
        self.asr_times: list[float] = []
        self.asr_texts: list[str] = []
        self.events: list[dict] = []
        self.windows_due: WindowsJob | None = None
        self.final_due = None  # a final waiting for its text (real workers: tests/test_batched_finals.py)
        self.final_after: int | None = None  # a final falls due after this many chunks
        self.defer_finals = False  # set by the scheduler each round
        self.session = SimpleNamespace(featurizers=SimpleNamespace(text=FAKE_TEXT))
        self.windows_after: int | None = None  # speaker windows fall due after this many chunks
        self.windows_got: list[np.ndarray] = []
        self.speakers = SimpleNamespace(embedder=FAKE_EMBEDDER)

    def windows_done(self, job: WindowsJob, vectors: np.ndarray, share_s: float) -> None:
        assert job is self.windows_due
        self.windows_due = None
        self.windows_got.append(vectors)

    def final_done(self, job: SimpleNamespace, vector: np.ndarray, share_s: float) -> None:
        assert job is self.final_due
        self.final_due = None
        self.log.append(f"final {self.name} {vector[0]:.0f}")

    def emit(self, msg: dict) -> None:
        self.events.append(msg)

    def take_events(self) -> list[dict]:
        out, self.events = self.events, []
        return out

    def process(self, chunk: AudioChunk) -> None:
        self.log.append(self.name)
        if self.windows_after is not None:
            self.windows_after -= 1
            if self.windows_after == 0:  # windows whose first sample is this dialogue's name length
                clips = tuple(np.full(160, len(self.name) * 10 + k, np.float32) for k in range(len(self.name)))
                self.windows_due = WindowsJob(0, tuple(range(len(self.name))), clips)
        if self.final_after is not None:
            self.final_after -= 1
            if self.final_after == 0 and self.defer_finals:
                self.final_due = SimpleNamespace(text_input=self.name)
            elif self.final_after == 0:
                self.log.append(f"final {self.name} at once")
        if self.due_after is not None:
            self.due_after -= 1
            if self.due_after == 0:
                self.asr_due = PendingTranscript(FAKE_ASR, 0, 0, 160, np.full(160, len(self.name), np.float32))

    def take_asr_due(self):  # noqa: ANN201
        job, self.asr_due = self.asr_due, None
        return job

    def asr_done(self, job, share_s: float) -> None:  # noqa: ANN001
        self.asr_times.append(job.elapsed_s)
        self.asr_texts.append(job.result.text)

    def reset(self) -> None:
        self.log.append(f"reset {self.name}")

    def live_face(self) -> None:
        pass

    def flush(self) -> None:
        self.log.append(f"flush {self.name}")


class FakeTranscriber:
    """Records each call; "transcribes" an item as its length in samples."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def transcribe(self, audio: np.ndarray, utterance_id: int) -> Transcript:
        self.calls.append(("one", 1))
        return Transcript(utterance_id=utterance_id, text=f"{audio[0]:.0f}")

    def transcribe_batch(self, audios: list[np.ndarray], ids: list[int]) -> list[Transcript]:
        self.calls.append(("batch", len(audios)))
        return [Transcript(utterance_id=i, text=f"{a[0]:.0f}") for a, i in zip(audios, ids)]


FAKE_ASR = FakeTranscriber()


class FakeEmbedder:
    """Records each call; "embeds" a clip as its first sample, repeated."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def embed_windows(self, clips: list[np.ndarray]) -> np.ndarray:
        self.calls.append(len(clips))
        return np.stack([np.full(256, c[0], np.float32) for c in clips])


FAKE_EMBEDDER = FakeEmbedder()


class FakeText:
    """Records each call in the scheduler's log; "encodes" a text as its length."""

    def __init__(self) -> None:
        self.log: list[str] | None = None

    def __call__(self, texts: list[str]) -> np.ndarray:
        if self.log is not None:
            self.log.append(f"encode {len(texts)}")
        return np.stack([np.full(4, len(t), np.float32) for t in texts])


FAKE_TEXT = FakeText()


class FakeDialogue:
    config = SimpleNamespace(interim_max_backlog_s=0.5)

    def __init__(self, log: list[str], name: str, chunks: int, backlog_s: float = 0.0) -> None:
        self.name = name
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
        self.input_ended = threading.Event()
        self.done = threading.Event()
        self.failure: str | None = None

    def backlog_s(self) -> float:
        return self._backlog

    def take_reset(self) -> bool:
        wanted, self.reset_wanted = self.reset_wanted, False
        return wanted

    def emit(self, msg: dict) -> None:
        self.sent.append(msg)

    def deliver(self) -> None:
        self.sent.extend(e.message() for e in self.worker.take_events())

    def metrics(self) -> dict:
        return {"type": "metrics"}

    def fail(self, reason: str) -> None:
        self.failure = reason
        self.done.set()


def scheduler_of(*dialogues: FakeDialogue, **kw: float) -> Scheduler:
    sched = Scheduler(**kw)
    for d in dialogues:
        sched.add(d)
    return sched


def test_finals_first_then_round_robin_with_a_time_slice() -> None:
    log: list[str] = []
    a, b, c = (FakeDialogue(log, n, chunks=20) for n in "abc")
    b.worker.final_pending = True
    sched = scheduler_of(a, b, c, slice_s=0.2)  # 0.2 s: 4 chunks of 64 ms
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
    a, b = FakeDialogue(log, "a", chunks=2), FakeDialogue(log, "b", chunks=2, backlog_s=3.0)
    a.reset_wanted = True
    sched = scheduler_of(a, b)
    sched.run_round()
    assert not a.worker.interim and not b.worker.interim and sched.interims_held == 1
    assert log.index("reset a") < log.index("a")
    assert a.worker.interim_stretch == 1.0  # two sessions: interims keep their interval
    log.clear()
    assert sched.run_round() is False and log == []  # nothing left to process
    b._backlog = 0.0
    sched.run_round()
    assert a.worker.interim and b.worker.interim


def test_an_ended_input_is_flushed_once_its_queue_is_empty_and_the_dialogue_leaves() -> None:
    log: list[str] = []
    a, b = FakeDialogue(log, "a", chunks=2), FakeDialogue(log, "b", chunks=2)
    a.input_ended.set()  # its producer is done, but two chunks still wait
    sched = scheduler_of(a, b)
    sched.run_round()
    assert "flush a" not in log and not a.done.is_set()  # the queued audio comes first
    sched.run_round()
    assert log.count("flush a") == 1 and a.done.is_set() and sched.dialogues() == [b]
    assert a.sent[-1] == {"type": "metrics"}  # its last metrics go out with it
    sched.run_round()
    assert log.count("flush a") == 1 and "flush b" not in log and not b.done.is_set()


def test_a_dialogue_failing_outside_a_chunk_is_given_up_and_the_others_go_on() -> None:
    log: list[str] = []
    a, b = FakeDialogue(log, "a", chunks=3), FakeDialogue(log, "b", chunks=3)

    def broken() -> None:
        raise RuntimeError("queue exploded")

    a.audio_q.get_nowait = broken  # type: ignore[method-assign]
    sched = scheduler_of(a, b)
    sched.run_round()
    assert a.done.is_set() and "queue exploded" in (a.failure or "") and sched.dialogues() == [b]
    assert a.sent[-1]["type"] == "error" and log == ["b"] * 3  # b's audio all went through


def test_a_chunk_that_fails_is_reported_and_the_dialogue_goes_on() -> None:
    log: list[str] = []
    a = FakeDialogue(log, "a", chunks=3)
    calls = iter([RuntimeError("bad chunk"), None, None])

    def process(chunk: AudioChunk) -> None:
        err = next(calls)
        if err is not None:
            raise err
        log.append("a")

    a.worker.process = process  # type: ignore[method-assign]
    sched = scheduler_of(a)
    sched.run_round()
    assert log == ["a", "a"] and [m["type"] for m in a.sent if m["type"] != "metrics"] == ["error"]
    assert not a.done.is_set()


def test_early_asr_due_in_several_dialogues_runs_as_one_batch_after_the_round() -> None:
    log: list[str] = []
    FAKE_ASR.calls.clear()
    a, bb, ccc = (FakeDialogue(log, n, chunks=6) for n in ("a", "bb", "ccc"))
    a.worker.due_after, bb.worker.due_after = 2, 3  # ccc has nothing due
    sched = scheduler_of(a, bb, ccc, slice_s=1.0)
    sched.run_round()
    assert log.count("a") == 2 and log.count("bb") == 3 and log.count("ccc") == 6  # a slice stops at its job
    assert FAKE_ASR.calls == [("batch", 2)] and sched.asr_batches == {2: 1}
    assert a.worker.asr_texts == ["1"] and bb.worker.asr_texts == ["2"] and not ccc.worker.asr_texts  # each its own
    assert a.worker.asr_times[0] is not None
    sched.run_round()  # the rest of their audio; nothing more is due
    assert log.count("a") == 6 and log.count("bb") == 6 and FAKE_ASR.calls == [("batch", 2)]


def test_speaker_windows_of_several_dialogues_are_embedded_in_one_call_before_their_next_chunk() -> None:
    log: list[str] = []
    FAKE_EMBEDDER.calls.clear()
    a, bb, ccc = (FakeDialogue(log, n, chunks=6) for n in ("a", "bb", "ccc"))
    a.worker.windows_after, ccc.worker.windows_after = 1, 4  # bb has none due
    sched = scheduler_of(a, bb, ccc, slice_s=1.0)
    sched.run_round()
    assert log.count("a") == 1 and log.count("ccc") == 4 and log.count("bb") == 6  # a slice stops at its windows
    assert FAKE_EMBEDDER.calls == [1 + 3] and sched.window_batches == {2: 1}  # one call, every clip
    assert [v[:, 0].tolist() for v in a.worker.windows_got] == [[10.0]]  # each its own vectors, in order
    assert [v[:, 0].tolist() for v in ccc.worker.windows_got] == [[30.0, 31.0, 32.0]]
    assert a.worker.windows_due is None and ccc.worker.windows_due is None and not bb.worker.windows_got


@pytest.fixture
def text_log() -> Iterator[list[str]]:
    """The scheduler's log, into which the fake text encoder also writes its calls."""
    log: list[str] = []
    FAKE_TEXT.log = log
    yield log
    FAKE_TEXT.log = None


def test_near_finals_are_encoded_in_one_call_before_the_other_dialogues_slices(text_log: list[str]) -> None:
    log = text_log
    a, bb, ccc = (FakeDialogue(log, n, chunks=3) for n in ("a", "bb", "ccc"))
    a._backlog = 1.0  # behind: finals are batched
    for d in (bb, ccc):  # their finals are near: they go first, and their slices stop at the final
        d.worker.final_pending, d.worker.final_after = True, 1
    a.worker.final_after = 2  # a final not announced: encoded after the round
    sched = scheduler_of(a, bb, ccc, slice_s=1.0)
    sched.run_round()
    near = log[:log.index("a")]
    assert sorted(near[:2]) == ["bb", "ccc"] and near[2] == "encode 2"  # their slices, then one call
    assert sorted(near[3:]) == ["final bb 2", "final ccc 3"]  # each its own vector, before a's slice
    assert log[log.index("a"):] == ["a", "a", "encode 1", "final a 1"]
    assert sched.final_batches == {2: 1, 1: 1}


def test_finals_go_out_at_once_while_nobody_is_behind(text_log: list[str]) -> None:
    log = text_log
    a, bb = (FakeDialogue(log, n, chunks=2) for n in ("a", "bb"))
    for d in (a, bb):
        d.worker.final_pending, d.worker.final_after = True, 1
    sched = scheduler_of(a, bb, slice_s=1.0)
    sched.run_round()
    assert not [e for e in log if e.startswith("encode")] and not sched.final_batches
    assert log.index("final a at once") < log.index("bb") or log.index("final bb at once") < log.index("a")


def test_a_cancelled_early_job_is_not_run() -> None:
    log: list[str] = []
    FAKE_ASR.calls.clear()
    a = FakeDialogue(log, "a", chunks=2)
    a.worker.due_after = 1
    original = a.worker.process

    def process_then_resume(chunk: AudioChunk) -> None:  # speech resumed: the job is cancelled
        original(chunk)
        if a.worker.asr_due is not None:
            a.worker.asr_due.cancel()

    a.worker.process = process_then_resume  # type: ignore[method-assign]
    sched = scheduler_of(a)
    sched.run_round()
    assert FAKE_ASR.calls == [] and not sched.asr_batches and a.worker.asr_due is None


def test_health_names_every_dialogue_and_the_batches_and_says_when_the_thread_is_gone() -> None:
    log: list[str] = []
    FAKE_ASR.calls.clear()
    a, bb = FakeDialogue(log, "a", chunks=2), FakeDialogue(log, "bb", chunks=2)
    a.worker.due_after = bb.worker.due_after = 1
    sched = scheduler_of(a, bb)
    assert sched.health() == (False, "the dialogue scheduler is not running")
    sched.run_round()
    sched.start()
    try:
        alive, reason = sched.health()
        assert alive and "2 dialogue(s) [" in reason and "a" in reason and "bb" in reason
        assert "early ASR batches 1, mean size 2.00" in reason
    finally:
        sched.close()
    assert sched.health()[0] is False
