"""The scheduler: one thread runs every dialogue on the shared models, whatever its source (the
server's own media file or devices, each browser's capture).

Each round it visits the dialogues in turn (starting one further each round, so nobody is always
first) and lets each process at most `slice_s` of its queued audio; then its faces (live `face`
events) and its metrics. Policy, in order:

1. Finals first: a final comes out of the audio that ends an utterance, so audio is never
   skipped; what is skipped is the optional work. A final is never dropped. Dialogues whose final
   is near (the segmenter saw the ending silence) go first in the round, and while any is,
   nobody's interims run.
2. Interims re-transcribe the growing utterance, the most expensive optional work there is. When
   any dialogue is behind (more audio waiting than its `interim_max_backlog_s`, the one threshold
   its worker also skips interims by) they are off for every dialogue until all have caught up,
   and with more than two dialogues they come at most every interval x dialogues / 2 (coarser).
3. Queues are bounded (each dialogue's drop-oldest audio queue, its frame ring); what is dropped
   is counted and reported in that dialogue's `metrics.drops`.
4. Early ASR, speaker windows and finals are batched: a dialogue whose worker has an early
   transcription due (a pause judged the end of a turn), speaker windows to embed (every 0.4 s of
   speech) or, while any dialogue is behind, a final waiting for its text features stops its
   slice there (when nobody is behind a final goes out at once: batching it would only make it
   wait). The finals of the dialogues that went first (their final was near) are encoded in one
   text-encoder call as soon as those dialogues have had their slices (each worker then sends its
   own final); after the
   round, every dialogue's windows go in one embedder call (each worker then votes on its own,
   before its next chunk, exactly as if it had embedded them itself), then any other due finals in
   one call, then every due transcription in one batched call (`asr.run_batch`).
5. A dialogue whose input has ended is flushed once its queue is empty (its last utterance gets
   its final), marked done and removed. A chunk that fails is reported and skipped; a dialogue
   that fails outside a chunk is marked failed (its `failure` says why), done and removed; the
   others go on.

`run_round()` is one round, without threads (tests drive it directly).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from emostream.realtime import protocol
from emostream.realtime.events import ErrorEvent

logger = logging.getLogger(__name__)

TICK_S = 1.0  # how often the `every_tick` hooks run (idle sessions are closed there)


def _mean_size(sizes: collections.Counter[int]) -> float:
    """The mean batch size of a counter of batch size -> how many ran (0 when none ran)."""
    n = sum(sizes.values())
    return sum(k * v for k, v in sizes.items()) / n if n else 0.0


class Scheduler:
    def __init__(self, slice_s: float = 0.5, metrics_interval_s: float = 2.0) -> None:
        self.slice_s = slice_s
        self.metrics_interval_s = metrics_interval_s
        self.rounds = 0
        self.interims_held = 0  # rounds in which interims were off because a dialogue was behind
        self.asr_batches: collections.Counter[int] = collections.Counter()  # batch size -> how many ran
        self.window_batches: collections.Counter[int] = collections.Counter()  # speaker windows: dialogues a batch
        self.final_batches: collections.Counter[int] = collections.Counter()  # finals' text: finals a batch
        self.every_tick: list[Callable[[], object]] = []  # e.g. SessionManager.close_idle
        self._dialogues: list[Any] = []  # Dialogue (or anything with its scheduler side)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_tick = 0.0

    # ------------------------------------------------------------------ the registry (any thread)
    def add(self, dialogue: Any) -> None:
        with self._lock:
            self._dialogues.append(dialogue)

    def remove(self, dialogue: Any) -> None:
        with self._lock:
            if dialogue in self._dialogues:
                self._dialogues.remove(dialogue)

    def dialogues(self) -> list[Any]:
        with self._lock:
            return list(self._dialogues)

    # ------------------------------------------------------------------ the thread
    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._loop, name="dialogue-scheduler", daemon=False)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("the dialogue scheduler did not stop within %.1fs", timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> tuple[bool, str]:
        """(alive, reason) for /healthz."""
        if not self.alive:
            return False, "the dialogue scheduler is not running"
        names = ", ".join(d.name for d in self.dialogues())
        batches = "; ".join(f"{what} batches {sum(sizes.values())}, mean size {_mean_size(sizes):.2f}" for what, sizes in
                            (("early ASR", self.asr_batches), ("speaker window", self.window_batches),
                             ("final text", self.final_batches)))
        return True, f"running {len(self.dialogues())} dialogue(s) [{names}]; {batches}"

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_round()
            except Exception:  # noqa: BLE001 - the scheduler serves every dialogue: it must go on
                logger.exception("scheduler round failed")
                busy = False
            if time.monotonic() - self._last_tick > TICK_S:
                self._last_tick = time.monotonic()
                for hook in list(self.every_tick):
                    try:
                        hook()
                    except Exception:  # noqa: BLE001
                        logger.exception("scheduler tick hook failed")
            if not busy:
                self._stop.wait(0.01)

    # ------------------------------------------------------------------ one round (no threads)
    def run_round(self) -> bool:
        """One round over the dialogues; True if any audio was processed."""
        dialogues = self.dialogues()
        if not dialogues:
            return False
        self.rounds += 1
        start = self.rounds % len(dialogues)
        order = dialogues[start:] + dialogues[:start]
        order.sort(key=lambda d: not d.worker.final_pending)  # finals first (stable: round robin otherwise)
        behind = any(d.backlog_s() > d.config.interim_max_backlog_s for d in order)
        hold = behind or order[0].worker.final_pending
        self.interims_held += hold
        stretch = max(1.0, len(order) / 2)
        near = sum(d.worker.final_pending for d in order)  # they go first; their finals, batched, right after them
        did = False
        for i, d in enumerate(order):
            if i == near and near:
                self._run_due_finals(order[:near])  # not after the whole round: someone waits for these
            if d.closed:
                continue
            d.worker.interim = d.wants_interim and not hold
            d.worker.defer_finals = behind  # finals batched only while behind; otherwise each goes out at once
            d.worker.interim_stretch = stretch
            try:
                did |= self._run_dialogue(d)
            except Exception as e:  # noqa: BLE001 - this dialogue is lost; the others go on
                logger.exception("dialogue %s failed", d.name)
                d.deliver()  # what the worker said before it failed
                d.emit(protocol.error("internal", f"the dialogue failed: {type(e).__name__}"))
                d.fail(f"the dialogue {d.name} failed: {type(e).__name__}: {e}")
                self.remove(d)
        self._run_due_windows(order)
        self._run_due_finals(order)  # the rest (windows may end a turn); before the ASR batch
        self._run_due_asr(order)
        return did

    def _run_due_windows(self, dialogues: list[Any]) -> None:
        """Every dialogue's speaker windows due this round, in one embedder call; each worker then
        votes on its own (before its next chunk, as if it had embedded them itself)."""
        due = [(d, job) for d in dialogues if not d.closed and (job := d.worker.windows_due) is not None]
        if not due:
            return
        from emostream.realtime.turns import embed_jobs

        t = time.perf_counter()
        try:
            vectors: list[Any] = embed_jobs(due[0][0].worker.speakers.embedder, [job for _, job in due])
        except Exception:  # noqa: BLE001 - no change evidence from these windows; the speech goes on
            logger.exception("speaker windows failed on a batch of %d", len(due))
            vectors = [None] * len(due)
        self.window_batches[len(due)] += 1
        self._hand_back(due, vectors, (time.perf_counter() - t) / len(due), "windows_done", "speaker windows")

    def _run_due_finals(self, dialogues: list[Any]) -> None:
        """Every final waiting for its text features, encoded in one call per text encoder (the
        dialogues of one server share one); each worker then sends its own final."""
        due = [(d, job) for d in dialogues if not d.closed and (job := d.worker.final_due) is not None]
        groups: dict[int, list[tuple[Any, Any]]] = {}
        for d, job in due:
            groups.setdefault(id(d.worker.session.featurizers.text), []).append((d, job))
        for group in groups.values():
            encoder = group[0][0].worker.session.featurizers.text
            t = time.perf_counter()
            try:
                vectors: list[Any] = list(encoder([job.text_input for _, job in group]))  # (n, Dt)
            except Exception as e:  # noqa: BLE001 - each final goes out flagged text_failed
                logger.exception("text features failed on a batch of %d finals", len(group))
                vectors = [e] * len(group)
            if len(vectors) != len(group):
                vectors = [ValueError(f"the text encoder gave {len(vectors)} vectors for {len(group)} inputs")] * len(group)
            self.final_batches[len(group)] += 1
            self._hand_back(group, vectors, (time.perf_counter() - t) / len(group), "final_done", "final")

    @staticmethod
    def _hand_back(due: list[tuple[Any, Any]], results: list[Any], share_s: float, done: str, what: str) -> None:
        """Each dialogue's result of a batch, to its worker (`worker.<done>(job, result, share_s)`),
        then its events out. `share_s`: each one's share of the batch's compute."""
        for (d, job), result in zip(due, results):
            try:
                getattr(d.worker, done)(job, result, share_s)
            except Exception:  # noqa: BLE001 - as a failed chunk: reported, the dialogue goes on
                logger.exception("dialogue %s failed on its %s", d.name, what)
                d.worker.emit(ErrorEvent("internal", f"the dialogue failed on its {what}"))
            d.deliver()

    def _run_due_asr(self, dialogues: list[Any]) -> None:
        """Every early ASR job due this round, in one batched call."""
        due = [(d, job) for d in dialogues if (job := d.worker.take_asr_due()) is not None and not job.cancelled]
        if not due:
            return
        from emostream.realtime.asr import run_batch

        t = time.perf_counter()
        try:
            run_batch([job for _, job in due])
        except Exception:  # noqa: BLE001 - the finals transcribe again (and report a failure)
            logger.exception("early ASR failed on a batch of %d", len(due))
            return
        share_s = (time.perf_counter() - t) / len(due)
        self.asr_batches[len(due)] += 1
        for d, job in due:
            d.worker.asr_done(job, share_s)

    def _run_dialogue(self, d: Any) -> bool:
        worker = d.worker
        if d.take_reset():
            try:
                worker.reset()
            except Exception:  # noqa: BLE001 - a failed reset must not end the dialogue
                logger.exception("dialogue %s failed to reset", d.name)
                d.emit(protocol.error("internal", "the dialogue failed to reset"))
            d.deliver()
        budget = self.slice_s
        did = False
        while budget > 0:
            try:
                chunk = d.audio_q.get_nowait()
            except queue.Empty:
                break
            worker.backlog_s = d.backlog_s()
            try:
                worker.process(chunk)
            except Exception:  # noqa: BLE001 - one bad chunk must not end the dialogue
                logger.exception("dialogue %s failed on a chunk; continuing", d.name)
                worker.emit(ErrorEvent("internal", "the dialogue failed on one audio chunk"))
            d.deliver()  # the chunk's events, before the next chunk
            budget -= chunk.samples.shape[0] / chunk.sample_rate
            did = True
            if worker.asr_due is not None or worker.windows_due is not None or worker.final_due is not None:
                break  # its early ASR, speaker windows or final run after the round, batched with other dialogues'
        worker.live_face()
        d.deliver()
        now = time.monotonic_ns()
        if now - d.last_metrics_ns >= self.metrics_interval_s * 1e9:
            d.last_metrics_ns = now
            d.emit(d.metrics())
        if not did and d.input_ended.is_set() and d.audio_q.qsize() == 0:
            self._finish(d)
        return did

    def _finish(self, d: Any) -> None:
        """The input has ended and every chunk is processed: the last utterance's final, then done."""
        try:
            d.worker.flush()
        except Exception:  # noqa: BLE001 - report it; the input has ended anyway
            logger.exception("dialogue %s failed flushing its last utterance", d.name)
            d.worker.emit(ErrorEvent("internal", "the dialogue failed on its last utterance"))
        d.deliver()
        d.emit(d.metrics())
        self.remove(d)
        d.done.set()
