"""Speaker-embedding benchmark: GE2E vs d-vector on the real-speech conversation fixtures.

Prints one JSON object. For each embedder ("ge2e", "dvector"; `emostream.realtime.voice_embedding`)
and each fixture of `tests/data/conversations/` (`call` is skipped with a note when its audio
package is not installed):

- Units, all cut from *clean* speech: the part of a reference turn that no other reference turn
  (and no reference overlap) covers. ``turn``: a turn's clean pieces joined, kept when they hold at
  least 0.8 s (backchannels too, under the same rule), embedded with `embed_full`. ``window_1.5s``
  and ``window_1.0s``: consecutive non-overlapping windows cut from each clean piece (a window never
  crosses a gap), embedded with `embed_windows`.
- ``separation``: every pair of units WITHIN one conversation is "same" (one speaker) or
  "different". Reported: pair counts, cosine 5/50/95th percentiles of same and of different pairs,
  the pair equal error rate (the threshold where the share of same pairs below it equals the share
  of different pairs at or above it; EER and that threshold), ``eer_cross_turn`` (the same, with
  same pairs from two different turns only: windows of one turn are easy neighbours), and the median
  of per-conversation EERs. Pooled over conversations and for kind=recorded / kind=spliced.
  Fixtures with one voice (`one_speaker`) or no clean speech (`all_overlap`) add no different pairs.
- ``nearest_profile`` (what the online tracker relies on): within a conversation, each 1.5 s window
  is classified to the most similar speaker profile, a profile being the normalised sum of that
  speaker's OTHER windows (leave-one-out; windows whose audio overlaps the held-out one are left out
  too). Windows are scored only where their speaker has a profile and at least two profiles exist.
- ``speed`` (unless --no-speed): milliseconds to embed one real 1.5 s window
  (`embed_windows([clip])`) with fresh 1-thread and 2-thread instances, and per window in a batch
  of 8; median and p95 of 50 timed repetitions after 5 warm-ups. Timings depend on the machine and on
  whatever else runs beside it: indicative only.

    python benchmarks/speaker_embeddings.py [--split tune|heldout|all] [--no-speed]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emostream.realtime.types import SAMPLE_RATE  # noqa: E402
from emostream.realtime.voice_embedding import DVectorEmbedder, GE2EEmbedder  # noqa: E402
from tests import conversations  # noqa: E402

EMBEDDERS: dict[str, type[GE2EEmbedder] | type[DVectorEmbedder]] = {"ge2e": GE2EEmbedder,
                                                                     "dvector": DVectorEmbedder}
MIN_TURN_S = 0.8  # least clean speech for a whole-turn unit
WINDOWS_S = (1.5, 1.0)
PROFILE_WINDOW_S = 1.5
SPEED_BATCH = 8
SPEED_WARMUP = 5
SPEED_REPEATS = 50
Interval = tuple[float, float]  # (start_s, end_s)


@dataclass(frozen=True, slots=True)
class Unit:
    """A piece of one speaker's clean speech in one conversation."""

    speaker: str
    turn: int  # index of the reference turn it comes from
    pieces: tuple[tuple[int, int], ...]  # (start_sample, end_sample) of each clean piece used

    def audio(self, conv: conversations.Conversation) -> np.ndarray:
        """(n,) float32: the pieces joined."""
        return np.concatenate([conv.audio[a:b] for a, b in self.pieces])

    def overlaps(self, other: Unit) -> bool:
        """Whether any of its samples is also one of `other`'s."""
        return any(a < d and c < b for a, b in self.pieces for c, d in other.pieces)


# ------------------------------------------------------------------------------------ units
def subtract(span: Interval, cuts: Sequence[Interval]) -> list[Interval]:
    """The parts of `span` that none of `cuts` covers, in order."""
    parts = [span]
    for c0, c1 in cuts:
        parts = [p for a, b in parts for p in ((a, min(b, c0)), (max(a, c1), b)) if p[1] > p[0]]
    return parts


def clean_pieces(conv: conversations.Conversation) -> list[tuple[conversations.Turn, int, list[Interval]]]:
    """Each turn with its index and the parts of it where no other turn or reference overlap is."""
    out = []
    for i, turn in enumerate(conv.turns):
        others = [(t.start_s, t.end_s) for j, t in enumerate(conv.turns) if j != i]
        out.append((turn, i, subtract((turn.start_s, turn.end_s), others + list(conv.overlaps))))
    return out


def to_samples(span: Interval) -> tuple[int, int]:
    return round(span[0] * SAMPLE_RATE), round(span[1] * SAMPLE_RATE)


def turn_units(conv: conversations.Conversation) -> list[Unit]:
    """One unit per turn whose clean pieces hold at least MIN_TURN_S."""
    units = []
    for turn, i, pieces in clean_pieces(conv):
        if sum(b - a for a, b in pieces) >= MIN_TURN_S:
            units.append(Unit(turn.speaker, i, tuple(to_samples(p) for p in pieces)))
    return units


def window_units(conv: conversations.Conversation, window_s: float) -> list[Unit]:
    """Consecutive non-overlapping windows of window_s cut from each clean piece (remainders dropped)."""
    n = round(window_s * SAMPLE_RATE)
    units = []
    for turn, i, pieces in clean_pieces(conv):
        for piece in pieces:
            a, b = to_samples(piece)
            units += [Unit(turn.speaker, i, ((s, s + n),)) for s in range(a, b - n + 1, n)]
    return units


# ------------------------------------------------------------------------------------ scoring
def eer(same: np.ndarray, diff: np.ndarray) -> tuple[float, float] | None:
    """(EER, threshold) of cosine scores: same pairs below the threshold are false rejects, different
    pairs at or above it false accepts; the candidate threshold where the two rates are closest.
    None without both kinds of pair."""
    if same.size == 0 or diff.size == 0:
        return None
    s, d = np.sort(same), np.sort(diff)
    thresholds = np.unique(np.concatenate([s, d, [np.inf]]))  # (k,)
    frr = np.searchsorted(s, thresholds, side="left") / s.size  # (k,)
    far = 1.0 - np.searchsorted(d, thresholds, side="left") / d.size  # (k,)
    i = int(np.argmin(np.abs(frr - far)))
    return float((frr[i] + far[i]) / 2), float(thresholds[i])


@dataclass(frozen=True, slots=True)
class Pairs:
    """Cosine scores of all unit pairs in one conversation."""

    same: np.ndarray  # (n_same,) float
    same_cross_turn: np.ndarray  # (n_same_cross,) float: same pairs from two different turns
    diff: np.ndarray  # (n_diff,) float


def pairs(units: Sequence[Unit], emb: np.ndarray) -> Pairs:
    """emb: (n, 256) unit vectors of `units` -> every pair's cosine, by kind."""
    i, j = np.triu_indices(len(units), k=1)  # (n_pairs,) each
    cos = np.sum(emb[i] * emb[j], axis=1)  # (n_pairs,)
    speaker = np.array([u.speaker for u in units])
    turn = np.array([u.turn for u in units])
    same = speaker[i] == speaker[j]
    return Pairs(cos[same], cos[same & (turn[i] != turn[j])], cos[~same])


def r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def percentiles(x: np.ndarray) -> list[float] | None:
    """5th, 50th and 95th percentiles, rounded (None when empty)."""
    return [round(float(v), 4) for v in np.percentile(x, [5, 50, 95])] if x.size else None


def separation(by_conv: dict[str, Pairs]) -> dict:
    """Pooled pair statistics of several conversations and the median of their own EERs."""
    def cat(field: str) -> np.ndarray:
        return np.concatenate([getattr(p, field) for p in by_conv.values()] or [np.zeros(0)])

    same, cross, diff = cat("same"), cat("same_cross_turn"), cat("diff")
    pooled, pooled_cross = eer(same, diff), eer(cross, diff)
    per_conv = [e[0] for p in by_conv.values() if (e := eer(p.same, p.diff)) is not None]
    return {
        "conversations": len(by_conv),
        "same_pairs": int(same.size),
        "different_pairs": int(diff.size),
        "same_cos_p5_p50_p95": percentiles(same),
        "different_cos_p5_p50_p95": percentiles(diff),
        "eer": r(pooled[0]) if pooled else None,
        "eer_threshold": r(pooled[1]) if pooled else None,
        "eer_cross_turn": r(pooled_cross[0]) if pooled_cross else None,
        "per_conversation_eer_median": r(statistics.median(per_conv)) if per_conv else None,
        "conversations_with_eer": len(per_conv),
    }


def nearest_profile(units: Sequence[Unit], emb: np.ndarray) -> tuple[int, int]:
    """(correct, scored) for leave-one-out nearest-profile classification of `units` (emb: (n, 256))."""
    speakers = sorted({u.speaker for u in units})
    label = np.array([speakers.index(u.speaker) for u in units])  # (n,)
    correct = scored = 0
    for i, held in enumerate(units):
        keep = np.array([j != i and not held.overlaps(u) for j, u in enumerate(units)], dtype=bool)  # (n,)
        sums = np.stack([emb[keep & (label == k)].sum(axis=0) for k in range(len(speakers))])  # (S, 256)
        has = np.array([np.any(keep & (label == k)) for k in range(len(speakers))])  # (S,)
        if not has[label[i]] or has.sum() < 2:
            continue
        profiles = sums / (np.linalg.norm(sums, axis=1, keepdims=True) + 1e-12)  # (S, 256)
        scores = np.where(has, profiles @ emb[i], -np.inf)  # (S,)
        correct += int(np.argmax(scores) == label[i])
        scored += 1
    return correct, scored


# ------------------------------------------------------------------------------------ embedding
def embed_units(embedder: GE2EEmbedder | DVectorEmbedder, conv: conversations.Conversation,
                units: list[Unit], whole: bool) -> tuple[list[Unit], np.ndarray]:
    """Units that gave an embedding and their (n, 256) vectors (`embed_full` when whole, else
    `embed_windows`); embed_full's None (too short or silent) drops the unit."""
    if not whole:
        return units, embedder.embed_windows([u.audio(conv) for u in units])
    kept, vecs = [], []
    for u in units:
        e = embedder.embed_full(u.audio(conv))
        if e is not None:
            kept.append(u)
            vecs.append(e.vector)
    return kept, np.stack(vecs) if vecs else np.zeros((0, 256), np.float32)


def evaluate(embedder: GE2EEmbedder | DVectorEmbedder, convs: list[conversations.Conversation]) -> dict:
    """Separation for every unit kind and nearest-profile accuracy, pooled, per kind and per conversation."""
    makers: dict[str, tuple[Callable[[conversations.Conversation], list[Unit]], bool]] = {
        "turn": (turn_units, True),
        **{f"window_{w}s": (lambda c, w=w: window_units(c, w), False) for w in WINDOWS_S},
    }
    sep: dict[str, dict] = {}
    profile: dict[str, dict] = {}
    for unit_name, (make, whole) in makers.items():
        by_conv: dict[str, Pairs] = {}
        per_conv: dict[str, dict] = {}
        for conv in convs:
            units, emb = embed_units(embedder, conv, make(conv), whole)
            by_conv[conv.name] = p = pairs(units, emb)
            e = eer(p.same, p.diff)
            per_conv[conv.name] = {"units": len(units), "same": int(p.same.size), "different": int(p.diff.size),
                                   "eer": r(e[0]) if e else None}
            if unit_name == f"window_{PROFILE_WINDOW_S}s":
                correct, scored = nearest_profile(units, emb)
                profile[conv.name] = {"kind": conv.kind, "correct": correct, "windows": scored,
                                      "speakers": len({u.speaker for u in units}),
                                      "accuracy": r(correct / scored) if scored else None}
        kinds = {k: {n: p for n, p in by_conv.items() if next(c for c in convs if c.name == n).kind == k}
                 for k in ("recorded", "spliced")}
        sep[unit_name] = {"pooled": separation(by_conv), **{k: separation(v) for k, v in kinds.items()},
                          "per_conversation": per_conv}
    return {"separation": sep, "nearest_profile": profile_summary(profile)}


def profile_summary(per_conv: dict[str, dict]) -> dict:
    """Pooled and per-kind accuracy of the per-conversation nearest-profile counts."""
    def pool(rows: list[dict]) -> dict:
        correct, scored = sum(x["correct"] for x in rows), sum(x["windows"] for x in rows)
        return {"accuracy": r(correct / scored) if scored else None, "windows": scored}

    rows = list(per_conv.values())
    return {"window_s": PROFILE_WINDOW_S, "pooled": pool(rows),
            **{k: pool([x for x in rows if x["kind"] == k]) for k in ("recorded", "spliced")},
            "per_conversation": per_conv}


# ------------------------------------------------------------------------------------ speed
def timed_ms(fn: Callable[[], object], warmup: int = SPEED_WARMUP, repeats: int = SPEED_REPEATS) -> list[float]:
    """Milliseconds of `repeats` calls of fn after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000.0)
    return out


def ms_stats(ms: list[float], per: int = 1) -> dict:
    """Median and p95 of ms, divided by `per` (windows in a batch)."""
    x = np.asarray(ms) / per
    return {"median": round(float(np.median(x)), 2), "p95": round(float(np.percentile(x, 95)), 2)}


def time_embedder(embedder: GE2EEmbedder | DVectorEmbedder, clips: list[np.ndarray]) -> dict:
    """Per-window milliseconds of one window at a time (cycling through clips) and of a batch."""
    clip = itertools.cycle(clips)
    one = timed_ms(lambda: embedder.embed_windows([next(clip)]))
    batch = timed_ms(lambda: embedder.embed_windows(clips[:SPEED_BATCH]))
    return {"one_window_ms": ms_stats(one), f"batch_{SPEED_BATCH}_ms_per_window": ms_stats(batch, SPEED_BATCH)}


def speed(cls: type[GE2EEmbedder] | type[DVectorEmbedder], clips: list[np.ndarray]) -> dict:
    """time_embedder with fresh 1-thread and 2-thread instances."""
    return {f"threads_{t}": time_embedder(cls(threads=t), clips) for t in (1, 2)}


def speed_clips(convs: list[conversations.Conversation]) -> tuple[str, list[np.ndarray]]:
    """SPEED_BATCH real 1.5 s clean windows from the recorded fixture with the most of them."""
    recorded = [c for c in convs if c.kind == "recorded"] or convs
    conv = max(recorded, key=lambda c: len(window_units(c, 1.5)))
    return conv.name, [u.audio(conv) for u in window_units(conv, 1.5)[:SPEED_BATCH]]


# ------------------------------------------------------------------------------------ main
def load_fixtures(split: str) -> tuple[list[conversations.Conversation], dict[str, str]]:
    """The fixtures of a split ("all": every one), and {name: why} for those that could not load."""
    convs, skipped = [], {}
    for name in conversations.names(split=None if split == "all" else split):
        try:
            convs.append(conversations.load(name))
        except conversations.CallUnavailable as err:
            skipped[name] = str(err)
    return convs, skipped


def summary(result: dict) -> dict:
    """The headline figures of each embedder side by side."""
    out = {}
    for name, res in result.items():
        sep = res["separation"]
        row = {f"eer_{u}": sep[u]["pooled"]["eer"] for u in sep}
        row |= {f"eer_cross_turn_{u}": sep[u]["pooled"]["eer_cross_turn"] for u in sep if u != "turn"}
        row["nearest_profile_accuracy"] = res["nearest_profile"]["pooled"]["accuracy"]
        if "speed" in res:
            for t in (1, 2):
                row[f"ms_one_window_{t}_threads"] = res["speed"][f"threads_{t}"]["one_window_ms"]["median"]
        out[name] = row
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=("tune", "heldout", "all"), default="all",
                        help="which fixtures (default all)")
    parser.add_argument("--no-speed", action="store_true", help="skip the timing")
    args = parser.parse_args(argv)
    convs, skipped = load_fixtures(args.split)
    result: dict = {"split": args.split, "fixtures": {c.name: c.kind for c in convs}, "skipped": skipped,
                    "units": {"turn_min_clean_s": MIN_TURN_S, "windows_s": list(WINDOWS_S)}}
    embedders: dict[str, dict] = {}
    for name, cls in EMBEDDERS.items():
        embedders[name] = evaluate(cls.shared(), convs)
    if not args.no_speed and convs:
        source, clips = speed_clips(convs)
        result["speed_setup"] = {
            "cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0)),
            "machine": platform.processor() or platform.machine(), "clips_from": source,
            "clip_s": 1.5, "warmup": SPEED_WARMUP, "repeats": SPEED_REPEATS,
            "note": "indicative: other work may run on the same cores"}
        for name, cls in EMBEDDERS.items():
            embedders[name]["speed"] = speed(cls, clips)
    result["summary"] = summary(embedders)
    result["embedders"] = embedders
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
