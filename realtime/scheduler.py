"""The scheduler: one thread runs every browser session's dialogue on the shared models.

Each round it visits the live sessions in turn (starting one further each round, so nobody is
always first) and lets each process at most `slice_s` of its queued audio; then the faces (live
`face` events), per-session metrics and the idle check. Policy, in order:

1. Finals first: a final comes out of the audio that ends an utterance, so audio is never
   skipped; what is skipped is the optional work. A final is never dropped. Sessions whose final
   is near (the segmenter saw the ending silence) go first in the round, and while any is,
   nobody's interims run.
2. Interims re-transcribe the growing utterance, the most expensive optional work there is. When
   any session is behind (more than `behind_s` of audio waiting) they are off for every session
   until all have caught up, and with more than two sessions they come at most every
   interval x sessions / 2 (coarser).
3. Queues are bounded (the session's drop-oldest audio queue, its frame ring); what is dropped
   is counted and reported in that session's `metrics.drops`.

`run_round()` is one round, without threads (tests drive it directly).
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from emostream.realtime import protocol
from emostream.realtime.sessions import BrowserSession, SessionManager

logger = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, manager: SessionManager, slice_s: float = 0.5, behind_s: float = 1.0,
                 metrics_interval_s: float = 2.0) -> None:
        self.manager = manager
        self.slice_s = slice_s
        self.behind_s = behind_s
        self.metrics_interval_s = metrics_interval_s
        self.rounds = 0
        self.interims_held = 0  # rounds in which interims were off because a session was behind
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_idle_check = 0.0

    def start(self) -> Scheduler:
        self._thread = threading.Thread(target=self._loop, name="session-scheduler", daemon=False)
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("the session scheduler did not stop within %.1fs", timeout)
        for s in self.manager.sessions():
            self.manager.close(s, "server stopping")

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def health(self) -> tuple[bool, str]:
        """(alive, reason) for /healthz."""
        return (True, "running") if self.alive else (False, "the session scheduler is not running")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_round()
            except Exception:  # noqa: BLE001 - the scheduler serves every session: it must go on
                logger.exception("scheduler round failed")
                busy = False
            if time.monotonic() - self._last_idle_check > 1.0:
                self._last_idle_check = time.monotonic()
                self.manager.close_idle()
            if not busy:
                self._stop.wait(0.01)

    def run_round(self) -> bool:
        """One round over the sessions; True if any audio was processed."""
        sessions = self.manager.sessions()
        if not sessions:
            return False
        self.rounds += 1
        start = self.rounds % len(sessions)
        order = sessions[start:] + sessions[:start]
        order.sort(key=lambda s: not s.worker.final_pending)  # finals first (stable: round robin otherwise)
        hold = any(s.backlog_s() > self.behind_s for s in order) or order[0].worker.final_pending
        self.interims_held += hold
        stretch = max(1.0, len(order) / 2)
        did = False
        for s in order:
            if s.closed:
                continue
            s.worker.interim = s.wants_interim and not hold
            s.worker.interim_stretch = stretch
            did |= self._run_session(s)
        return did

    def _run_session(self, s: BrowserSession) -> bool:
        worker = s.worker
        if s.take_reset():
            worker.reset()
        budget = self.slice_s
        did = False
        while budget > 0:
            try:
                chunk = s.audio_q.get_nowait()
            except queue.Empty:
                break
            try:
                worker.process(chunk)
            except Exception:  # noqa: BLE001 - one bad chunk must not end the session
                logger.exception("session %s failed on a chunk; continuing", s.id)
                s.emit(protocol.error("internal", "the session failed on one audio chunk"))
            budget -= chunk.samples.shape[0] / chunk.sample_rate
            did = True
        worker.live_face()
        now = time.monotonic_ns()
        if now - s.last_metrics_ns >= self.metrics_interval_s * 1e9:
            s.last_metrics_ns = now
            s.emit(s.metrics())
        return did
