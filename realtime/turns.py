"""Speaker turns inside speech: who speaks, window by window, and where the speaker changes. No I/O,
no threads, no clocks: the segmenter's audio and an embedder in, segmenter events out.

`SpeakerTurns` does the voice side of turn-taking for one dialogue, beside its `Segmenter`:

- While an utterance is open, `update(segmenter)` embeds a `window_s` window of it every `hop_s`
  (GE2E's native 1.6 s) and compares the window with the speakers' profiles (`SpeakerTracker`).
- The first window decides the utterance's speaker: the most similar known speaker when its cosine
  reaches that speaker's threshold (`SpeakerTracker.threshold`: it follows each voice), else a
  voice not heard before.
- Each later window either keeps that speaker (its own profile: the speaker's profile plus this
  utterance's earlier windows that share no audio with it) or votes for a change (see `_vote`):
  another known speaker fits it better, it is unlike the adjacent window before it, or it fits
  the own profile badly.
- `confirm_windows` consecutive votes for the same target confirm a change. The change point lies
  between the middle of the last window that kept the speaker and the middle of the first that voted
  (a window takes the voice of its larger part); within that span, widened by `search_s`, the
  segmenter's lowest speech probability marks it (a breath or the gap between the turns), else the
  middle of the span. `Segmenter.split_at` then ends the utterance there and opens the next one,
  whose speaker is the vote's target: no silence between the two is needed.
- Windows that voted for another voice without being confirmed (a backchannel, two people at once)
  mark the utterance `overlap`: it stays with its dominant speaker.
- `finish(end)` assigns a finished utterance: its speaker learns its windows. A voice not heard
  before becomes a new speaker only on `min_new_windows` windows; with fewer, the utterance joins
  the nearest known speaker. An utterance shorter than one window is embedded whole and goes
  through the tracker's own rule (a short, unreliable embedding joins a known speaker).

With `detect_changes=False` (the "silence" endpoint, and the pitch and single modes) nothing is
embedded while speaking: each utterance is assigned whole at its end, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emostream.realtime.segmenter import WINDOW, EndpointPending, Segmenter, SegmentEvent, SpeechEnd
from emostream.realtime.speakers import SpeakerTracker, unit
from emostream.realtime.types import SAMPLE_RATE

logger = logging.getLogger(__name__)

NEW = -1
"""A vote target: a voice that is none of the known speakers."""


@dataclass(frozen=True, slots=True)
class TurnsConfig:
    detect_changes: bool = True  # find speaker changes inside speech (endpoint "turn", voice mode)
    window_s: float = 1.6  # one embedding window (GE2E's partial utterance)
    hop_s: float = 0.4  # a window every hop while someone speaks
    confirm_windows: int = 2  # consecutive votes that confirm a change
    local_threshold: float = 0.62  # a window this unlike the adjacent window before it votes for a change
    change_margin: float = 0.04  # a known other speaker must beat the own profile by this cosine
    search_s: float = 0.3  # the change point is looked for this far beyond the windows' span
    min_part_s: float = 0.4  # neither side of a change is shorter than this
    clean_s: float = 0.3  # windows reaching further than this across a change teach no profile
    learn_slack: float = 0.05  # a known speaker's profile learns only windows within this below its threshold
    min_speech_share: float = 0.6  # a window with less speech than this (a pause) is not embedded
    min_peek_s: float = 0.5  # an interim guesses the speaker from at least this much audio
    min_new_windows: int = 2  # a voice not heard before becomes a speaker on at least this many windows

    def __post_init__(self) -> None:
        if not 0.0 < self.hop_s <= self.window_s:
            raise ValueError("need 0 < hop_s <= window_s")
        if self.confirm_windows < 1:
            raise ValueError("confirm_windows must be >= 1")


@dataclass(frozen=True, slots=True)
class TurnSpeaker:
    """Who spoke a finished utterance."""

    slot: int
    overlap: bool  # another voice was heard during it (not long enough to be its own turn)
    windows: int  # embedding windows behind the decision (0: the whole utterance at once)
    similarity: float | None  # cosine to the speaker's profile (None: no embedding)


@dataclass(frozen=True, slots=True)
class _Window:
    end: int  # the window's end sample (it covers [end - window, end) of the utterance)
    vector: np.ndarray  # (256,) unit
    target: int | None  # None: it kept the speaker; else a speaker index or NEW it voted for


@dataclass(frozen=True, slots=True, eq=False)
class WindowsJob:
    """Windows of an open utterance to embed: each (n,) float32, at most a window long, ending at
    `ends` (stream samples) of segment `segment`."""

    segment: int
    ends: tuple[int, ...]
    clips: tuple[np.ndarray, ...]


@dataclass(slots=True, eq=False)
class _Open:
    """The voice evidence of the open utterance."""

    segment: int
    start: int  # first stream sample its windows may use
    next_end: int  # end sample of its next window
    speaker: int | None = None  # a known speaker's index, or None: a voice not known yet
    decided: bool = False  # a window (or a confirmed change) has set `speaker`
    windows: list[_Window] = field(default_factory=list)  # every window, in order
    votes: int = 0  # consecutive change votes (the last `votes` windows)
    left: int | None = None  # the known speaker a change inside speech just left (it is not that one)
    intrusions: int = 0  # windows that voted for another voice without a confirmed change

    def kept(self) -> list[np.ndarray]:
        """The windows that kept the speaker, (256,) each."""
        return [w.vector for w in self.windows if w.target is None]


class SpeakerTurns:
    """Speaker decisions and changes for one dialogue. Not thread-safe: the dialogue's driver owns it."""

    def __init__(self, tracker: SpeakerTracker, config: TurnsConfig | None = None) -> None:
        self.tracker = tracker
        self.config = config or TurnsConfig()
        self._window = int(round(self.config.window_s * SAMPLE_RATE))
        self._hop = int(round(self.config.hop_s * SAMPLE_RATE))
        self._search = int(round(self.config.search_s * SAMPLE_RATE))
        self._min_part = int(round(self.config.min_part_s * SAMPLE_RATE))
        self._clean = int(round(self.config.clean_s * SAMPLE_RATE))
        self._overlapping = max(0, -(-self._window // self._hop) - 1)  # earlier windows sharing audio with one
        self._cur: _Open | None = None
        self._closing: dict[int, _Open] = {}  # utterances ended by a change, until finish() takes them
        self._left_by: dict[int, int] = {}  # segment opened by a change -> the segment it split from
        self._speaker_of: dict[int, int] = {}  # segment -> the speaker it was assigned (recent ones)
        self.windows_embedded = 0
        self.changes = 0

    @property
    def active(self) -> bool:
        """Whether windows are embedded while someone speaks."""
        return self.config.detect_changes and self.tracker.mode == "voice" and self.tracker.embedder is not None

    def reset(self) -> None:
        self._cur = None
        self._closing.clear()
        self._left_by.clear()
        self._speaker_of.clear()
        self.tracker.reset()

    # ------------------------------------------------------------------ while speaking
    def update(self, seg: Segmenter) -> list[SegmentEvent]:
        """Embed the windows of the open utterance that are complete now; a confirmed speaker change
        splits it: returns the segmenter's [SpeechEnd, SpeechStart] for the split (else [])."""
        job = self.windows_due(seg)
        if job is None:
            return []
        return self.apply(seg, job, self.tracker.embedder.embed_windows(list(job.clips)))  # type: ignore[union-attr]

    def windows_due(self, seg: Segmenter) -> WindowsJob | None:
        """The windows of the open utterance that are complete now, as a job to embed (None: none).
        Run it and `apply` its vectors before the segmenter takes more audio: its driver may batch
        it with other dialogues' jobs (the scheduler does)."""
        if not self.active or not seg.in_speech:
            return None
        cur = self._open_for(seg)
        ends = []
        while cur.next_end <= seg.processed_samples:
            if self._speech_share(seg, cur.next_end - self._window, cur.next_end) >= self.config.min_speech_share:
                ends.append(cur.next_end)  # (a window that is mostly pause says little about a voice)
            cur.next_end += self._hop
        if not ends:
            return None
        clips = tuple(seg.audio(max(e - self._window, cur.start), e) for e in ends)
        return WindowsJob(cur.segment, tuple(ends), clips)

    def apply(self, seg: Segmenter, job: WindowsJob, vectors: np.ndarray) -> list[SegmentEvent]:
        """A windows job's vectors ((n, 256), in its windows' order): the change votes; a confirmed
        change splits the utterance (returns the segmenter's [SpeechEnd, SpeechStart], else [])."""
        cur = self._cur
        if cur is None or cur.segment != job.segment or seg.segment != job.segment:
            return []  # the utterance ended meanwhile: its evidence is moot
        self.windows_embedded += len(job.ends)
        for e, v in zip(job.ends, vectors):
            if self._vote(cur, e, np.asarray(v, np.float64)):
                events = self._split(seg, cur)
                if events:
                    return events  # the rest of this batch straddles the change: not used
        return []

    def peek(self, seg: Segmenter) -> int:
        """The likely slot of the open utterance's speaker (interims, utterance start), learning nothing."""
        tracker = self.tracker
        if tracker.mode != "voice":
            audio = seg.active_audio()
            return tracker.peek(audio[-4 * SAMPLE_RATE:]) if audio is not None and audio.size else 0
        cur = self._cur
        if cur is not None and cur.segment == seg.segment and cur.decided:
            return tracker.slot_of(cur.speaker)
        audio = seg.active_audio()
        if audio is None or audio.size < self.config.min_peek_s * SAMPLE_RATE:
            return tracker.slot_of(tracker.likely())
        return tracker.decide(tracker.embed(audio[-self._window:])).slot

    # ------------------------------------------------------------------ at the end
    def finish(self, end: SpeechEnd) -> TurnSpeaker:
        """The speaker of a finished utterance; that speaker's profile learns from it."""
        tracker = self.tracker
        if tracker.mode != "voice":
            return TurnSpeaker(tracker.assign(end.audio), overlap=False, windows=0, similarity=None)
        st = self._closing.pop(end.segment, None)
        if st is None and self._cur is not None and self._cur.segment == end.segment:
            st, self._cur = self._cur, None
        left_segment = self._left_by.pop(end.segment, None)
        if st is not None and left_segment is not None:
            st.left = self._speaker_of.get(left_segment)
        kept = st.kept() if st is not None else []
        if not kept:  # shorter than a window: the whole utterance at once
            slot = tracker.assign_embedding(tracker.embed(end.audio))
            if tracker.history:
                self._remember(end.segment, tracker.history[-1])
            return TurnSpeaker(slot, overlap=False, windows=0, similarity=tracker.last_similarity)
        assert st is not None
        vectors = np.stack(kept)  # (n, 256)
        own = unit(vectors.sum(axis=0))
        speaker = st.speaker
        if speaker is None and tracker.live():
            # a new voice founds a speaker only if the utterance as a whole is unlike everyone known
            # (its first windows may straddle the change that opened it), and on enough windows
            # (nor the speaker the change that opened it left)
            whole = tracker.decide(tracker.embed(end.audio), exclude=st.left)
            if whole.speaker is not None:
                speaker = whole.speaker
            elif len(kept) < self.config.min_new_windows:
                sims = tracker.similarities(own)
                if st.left is not None and len(sims) > 1:
                    sims.pop(tracker.resolve(st.left), None)
                speaker = max(sims, key=sims.__getitem__)
        sim = None if speaker is None else float(tracker.profile(speaker) @ own)
        if speaker is not None and len(kept) > 1:  # a profile learns only windows that fit it (no mixtures)
            fits = vectors @ tracker.profile(speaker) >= tracker.threshold(speaker) - self.config.learn_slack
            vectors = vectors[fits] if fits.any() else vectors
        slot = tracker.learn(speaker, vectors)
        self._remember(end.segment, tracker.history[-1])
        overlap = st.intrusions > 0 or st.votes > 0
        return TurnSpeaker(slot, overlap=overlap, windows=len(kept), similarity=sim)

    # ------------------------------------------------------------------ internals
    def _remember(self, segment: int, speaker: int) -> None:
        self._speaker_of[segment] = speaker
        for old in [k for k in self._speaker_of if k < segment - 8]:  # bounded: only recent ones are asked
            del self._speaker_of[old]

    @staticmethod
    def _speech_share(seg: Segmenter, a: int, b: int) -> float:
        """The share of the 32 ms windows in [a, b) that the segmenter heard as speech."""
        _, probs = seg.probabilities(a, b)
        return float(np.mean(probs >= seg.config.start_threshold)) if probs.size else 0.0

    def _open_for(self, seg: Segmenter) -> _Open:
        cur = self._cur
        if cur is None or cur.segment != seg.segment:
            start = seg.active_start_sample
            assert start is not None
            cur = self._cur = _Open(segment=seg.segment, start=start, next_end=start + self._window)
        return cur

    def _vote(self, cur: _Open, end: int, v: np.ndarray) -> bool:
        """Record one window of the open utterance; True when it confirms a speaker change.

        A window votes for a change when a known other speaker's profile fits it clearly better
        than the own profile (by `change_margin`), when it is unlike the adjacent window before it
        (cosine below `local_threshold`: the voice changed between them, whoever spoke), or when it
        fits the own profile badly (below the speaker's threshold; for a voice not known yet, whose
        profile is only this utterance's earlier windows, below `local_threshold`). The target is
        the best known speaker if it fits, else NEW (decided when that utterance ends)."""
        tracker = self.tracker
        sims = tracker.similarities(v)  # {speaker: cosine}
        if not cur.windows:  # the first window names the speaker (unless a confirmed change did)
            best = max(sims, key=sims.__getitem__) if sims else None
            if not cur.decided and best is not None and (sims[best] >= tracker.threshold(best) or tracker.full):
                cur.speaker = best
            cur.decided = True
            cur.windows.append(_Window(end, v, None))
            return False
        mine = None if cur.speaker is None else tracker.resolve(cur.speaker)
        # the own profile: the speaker's, plus this utterance's kept windows that share no audio with this one
        kept = [w.vector for w in cur.windows if w.target is None and w.end <= end - self._window] \
            or [cur.windows[0].vector]  # (the first window is always kept)
        own_total = np.sum(kept, axis=0) + (tracker.profile_total(mine) if mine is not None else 0.0)
        own = float(unit(own_total) @ v)
        own_floor = tracker.threshold(mine) if mine is not None else self.config.local_threshold
        others = {k: c for k, c in sims.items() if k != mine}
        best = max(others, key=others.__getitem__) if others else None
        fits = best is not None and others[best] >= tracker.threshold(best)
        adjacent = next((w for w in reversed(cur.windows) if w.end <= end - self._window), None)
        local = float(adjacent.vector @ v) if adjacent is not None else 1.0
        target: int | None = None
        if fits and others[best] >= own + self.config.change_margin:  # type: ignore[index]
            target = best
        elif local < self.config.local_threshold or (own < own_floor and not tracker.full):
            target = best if fits else NEW
        if cur.votes and target != cur.windows[-1].target:
            cur.intrusions += 1  # the other voice went away, or another one came: not one consistent turn
            cur.votes = 0
        if target is None:
            cur.windows.append(_Window(end, v, None))
            return False
        cur.windows.append(_Window(end, v, target))
        cur.votes += 1
        return cur.votes >= self.config.confirm_windows

    def _split(self, seg: Segmenter, cur: _Open) -> list[SegmentEvent]:
        """Cut the open utterance at its confirmed change; [] when the change point is too close to an
        end of the utterance (the votes are then kept: the next window may place it)."""
        half = self._window // 2
        voted = cur.windows[-cur.votes:]
        before = cur.windows[: len(cur.windows) - cur.votes]
        keep_end = before[-1].end if before else cur.start + self._window
        speech_start = seg.speech_start_sample if seg.speech_start_sample is not None else cur.start
        lo = max(keep_end - half - self._search, speech_start + self._min_part, cur.start + 1)
        hi = min(voted[0].end - half + self._search, seg.processed_samples - self._min_part)
        if lo >= hi:
            return []
        cut = self._change_point(seg, lo, hi, keep_end - half, voted[0].end - half)
        target = voted[0].target
        events = seg.split_at(cut)
        if not events:
            return []
        self.changes += 1
        # the part before the cut keeps the windows that barely reach across it; the next part starts
        # with the windows that barely reach back
        cur.windows = [w for w in before if w.end <= cut + self._clean]
        cur.votes = 0
        self._closing[cur.segment] = cur
        follow = [_Window(w.end, w.vector, None) for w in voted if w.end - self._window >= cut - self._clean]
        self._cur = _Open(segment=seg.segment, start=cut, next_end=max(cut + self._window, voted[-1].end + self._hop),
                          speaker=None if target == NEW else target, decided=True, windows=follow)
        self._left_by[seg.segment] = cur.segment  # the new one is not whoever the old one turns out to be
        logger.debug("speaker change at sample %d (segment %d -> %d)", cut, cur.segment, seg.segment)
        return events

    def _change_point(self, seg: Segmenter, lo: int, hi: int, a: int, b: int) -> int:
        """The sample in [lo, hi) where the voices change: the middle of the quietest stretch (the
        windows below the segmenter's end threshold around the least speech-like one), else the
        middle of [a, b]."""
        starts, probs = seg.probabilities(lo, hi)
        if probs.size:
            i = int(np.argmin(probs))
            if probs[i] < seg.config.end_threshold:
                j, k = i, i
                while j > 0 and probs[j - 1] < seg.config.end_threshold:
                    j -= 1
                while k + 1 < probs.size and probs[k + 1] < seg.config.end_threshold:
                    k += 1
                return int(min(max((starts[j] + starts[k] + WINDOW) // 2, lo), hi - 1))
        return int(min(max((a + b) // 2, lo), hi - 1))


class TurnTaking:
    """One dialogue's turn-taking core: its VAD segmenter, the end-of-turn verdicts on its pauses and
    its speaker turns. The driver feeds audio (`push`), has each `EndpointPending` judged by the
    end-of-turn model on `pause_audio` (when and on which thread is the driver's choice) and hands
    the verdict back (`judge`), and asks who spoke each finished utterance (`finish`)."""

    def __init__(self, segmenter: Segmenter, turns: SpeakerTurns) -> None:
        self.segmenter = segmenter
        self.turns = turns
        self.failures = 0  # windows whose speaker-change detection failed
        self.windows_job: WindowsJob | None = None  # deferred windows to embed (push(defer_windows=True))

    @property
    def judges_turns(self) -> bool:
        """Whether pauses wait for an end-of-turn verdict (endpoint "turn")."""
        return self.segmenter.config.endpoint == "turn"

    def push(self, samples: np.ndarray, t0_ns: int, defer_windows: bool = False) -> list[SegmentEvent]:
        """Audio in: the segmenter's events, then those of a speaker change in the new windows (best
        effort: a failing embedder costs the change detection of these windows, never the speech).
        With `defer_windows`, the windows to embed are left in `windows_job` instead: the driver
        embeds them (batched with other dialogues') and calls `windows_done` before the next push."""
        events = self.segmenter.push(samples, t0_ns)
        try:
            job = self.turns.windows_due(self.segmenter)
            if job is not None and defer_windows:
                self.windows_job = job
            elif job is not None:
                events += self.turns.apply(self.segmenter, job,
                                           self.turns.tracker.embedder.embed_windows(list(job.clips)))  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - the utterance goes on without this window's evidence
            logger.exception("speaker-change detection failed")
            self.failures += 1
        return events

    def windows_done(self, job: WindowsJob, vectors: np.ndarray | None) -> list[SegmentEvent]:
        """A deferred windows job, embedded (`vectors` None: the embedder failed). Returns the events
        of a speaker change it confirmed."""
        if self.windows_job is job:
            self.windows_job = None
        if vectors is None:
            self.failures += 1
            return []
        try:
            return self.turns.apply(self.segmenter, job, vectors)
        except Exception:  # noqa: BLE001 - as in push
            logger.exception("speaker-change detection failed")
            self.failures += 1
            return []

    def flush(self) -> list[SegmentEvent]:
        return self.segmenter.flush()

    def pause_audio(self, pause: EndpointPending) -> np.ndarray:
        """(n,) float32: the turn up to now, its pause so far included (what the end-of-turn model judges)."""
        return self.segmenter.audio(pause.start_sample, self.segmenter.processed_samples)

    def judge(self, pause: EndpointPending, probability: float) -> None:
        """The end-of-turn model's P(turn complete) for this pause."""
        self.segmenter.set_turn_probability(pause.segment, pause.end_sample, probability)

    def finish(self, end: SpeechEnd) -> TurnSpeaker:
        return self.turns.finish(end)

    def peek(self) -> int:
        return self.turns.peek(self.segmenter)

    def reset(self) -> None:
        self.segmenter.reset()
        self.turns.reset()
        self.windows_job = None


def embed_jobs(embedder: Any, jobs: list[WindowsJob]) -> list[np.ndarray]:
    """Several dialogues' windows jobs in one embedder call: (n_i, 256) vectors for each job. Over
    the call interface (a `SpeakerClient`) each job is one item of one batch; a plain embedder gets
    every clip in one `embed_windows`."""
    from emostream.realtime.calls import SpeakerItem

    call = getattr(embedder, "call", None)
    if call is not None:
        return [np.asarray(v, np.float32) for v in call([SpeakerItem(windows=job.clips) for job in jobs])]
    vectors = embedder.embed_windows([c for job in jobs for c in job.clips])  # (sum n_i, 256)
    out, at = [], 0
    for job in jobs:
        out.append(vectors[at:at + len(job.clips)])
        at += len(job.clips)
    return out


@dataclass(frozen=True, slots=True)
class FoundTurn:
    """An utterance found offline (`run_offline`): its speech span, speaker and why it ended."""

    start_s: float  # detected speech onset (no padding)
    end_s: float  # detected speech end
    slot: int
    reason: str
    overlap: bool
    decided_s: float  # stream time when the utterance's end was known


def run_offline(audio: np.ndarray, taking: TurnTaking, turn_model: Callable[[np.ndarray], float] | None,
                chunk: int = WINDOW) -> list[FoundTurn]:
    """Run a whole recording through the turn-taking core in `chunk`-sample steps, the end-of-turn
    model judged at once at each pause (benchmarks and tests; the live driver is the Worker)."""
    found: list[FoundTurn] = []
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    ns = 1_000_000_000 // SAMPLE_RATE

    def handle(events: list[SegmentEvent], now_s: float | None = None) -> None:
        for ev in events:
            if isinstance(ev, EndpointPending) and turn_model is not None and taking.judges_turns:
                taking.judge(ev, turn_model(taking.pause_audio(ev)))
            elif isinstance(ev, SpeechEnd):
                who = taking.finish(ev)
                found.append(FoundTurn(ev.speech_start_sample / SAMPLE_RATE, ev.speech_end_sample / SAMPLE_RATE,
                                       who.slot, ev.reason, who.overlap,
                                       taking.segmenter.processed_samples / SAMPLE_RATE if now_s is None else now_s))

    for i in range(0, x.size, chunk):
        handle(taking.push(x[i : i + chunk], i * ns))
    handle(taking.flush(), now_s=x.size / SAMPLE_RATE)
    return found
