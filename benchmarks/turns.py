"""Turn and speaker benchmark: utterances as speaker turns, on real and synthetic conversations.

Prints one JSON object. For every conversation of `tests/conversations.py` (real recordings, real
voices spliced with fast turn-taking, and the espeak-ng fixtures) it reports, against the
reference turns:

- ``der``: diarization error rate (pyannote.metrics, no collar, overlap scored) with its parts
  (missed speech, false alarm, confusion), ``purity`` and ``coverage`` (pyannote.metrics);
- ``speakers_found`` / ``speakers_true`` (distinct slots of the finals vs reference speakers);
- ``boundary_precision`` / ``boundary_recall``: utterance ends against reference turn ends (backchannels
  excluded) within 0.5 s (one-to-one matching);
- ``finals_per_turn``: finals / reference turns (backchannels excluded);
- ``turns_with_their_speaker``: reference turns covered mostly by finals of their speaker (each slot
  standing for the reference speaker it overlaps most; `tests.conversations.turns_with_their_speaker`);
- ``end_reasons``: how many finals ended by silence, turn_complete, speaker_change, max_length;
- ``overlap_flagged``: finals flagged `overlap`, and how many of them really overlap another voice;
- with the live pipeline (the default; `--core` skips it): ``end_of_turn_to_final_ms`` p50 / p95
  (each final's `latency_ms`: from the end of its speech, or from the change point for a speaker
  change, to the final going out, the recording played in real time) and the worker's real-time
  factor ``rtf`` (busy time / audio time).

Two drivers: ``--core`` runs only the turn-taking core (`emostream.realtime.turns.run_offline`:
Silero segmenter, Smart Turn, GE2E speaker turns) as fast as it goes; the default plays each
recording through the whole live pipeline (`emostream.realtime.pipeline.Pipeline`, ASR and emotion
model included, face path off unless --face) in real time, so latency and real-time factor are
what a user gets.

``--turn-model``: what the end-of-turn model (Smart Turn v3.2) says, on real and on synthetic
speech: P(turn complete) at the end of each reference turn (its speech from the turn start, plus
200 ms of what follows) against the same turn cut off mid-way (at 40-70 % of its length, plus 200 ms
of its own speech: not complete), and the area under the ROC curve (AUC: 0.5 is chance) by kind.

``--sweep`` (core only, on the tune split unless --split says otherwise): DER, speakers found and
finals per turn over a grid of `new_margin` and `local_threshold` values: how the thresholds were
chosen, and the range in which they work.

    python benchmarks/turns.py [--split tune|heldout|all] [--names a,b] [--core] [--endpoint turn|silence]
    python benchmarks/turns.py --core --sweep
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emostream.realtime.types import SAMPLE_RATE  # noqa: E402
from tests import conversations  # noqa: E402

TOLERANCE_S = 0.5


@dataclass(frozen=True, slots=True)
class Final:
    """A final utterance as the benchmark scores it (from the core or from the pipeline's messages)."""

    start_s: float
    end_s: float
    speaker: int | str
    reason: str
    overlap: bool
    latency_ms: float | None = None


# ------------------------------------------------------------------------------------ scoring
def annotation(segments: Iterable[tuple[float, float, object]]):  # noqa: ANN201 - pyannote type
    from pyannote.core import Annotation, Segment

    ann = Annotation()
    for i, (a, b, label) in enumerate(segments):
        if b > a:
            ann[Segment(a, b), i] = label
    return ann


def match_boundaries(ref: Sequence[float], hyp: Sequence[float], tolerance: float = TOLERANCE_S) -> int:
    """One-to-one matches between reference and found boundaries within `tolerance` (closest first)."""
    pairs = sorted((abs(r - h), i, j) for i, r in enumerate(ref) for j, h in enumerate(hyp) if abs(r - h) <= tolerance)
    used_r: set[int] = set()
    used_h: set[int] = set()
    for _, i, j in pairs:
        if i not in used_r and j not in used_h:
            used_r.add(i)
            used_h.add(j)
    return len(used_r)


def score(conv: conversations.Conversation, finals: Sequence[Final]) -> dict:
    """The figures of one conversation (see the module docstring)."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationCoverage, DiarizationErrorRate, DiarizationPurity

    duration = conv.audio.size / SAMPLE_RATE
    uem = Timeline([Segment(0.0, duration)])
    ref = annotation((t.start_s, t.end_s, t.speaker) for t in conv.turns)
    hyp = annotation((f.start_s, f.end_s, f.speaker) for f in finals)
    der = DiarizationErrorRate(collar=0.0, skip_overlap=False)(ref, hyp, uem=uem, detailed=True)
    total = der["total"] or 1.0
    main_turns = [t for t in conv.turns if not t.backchannel]
    matched = match_boundaries([t.end_s for t in main_turns], [f.end_s for f in finals])
    overlapped = 0
    for f in finals:
        if f.overlap:
            voices = {t.speaker for t in conv.turns if t.start_s < f.end_s and t.end_s > f.start_s}
            overlapped += len(voices) > 1
    latencies = [f.latency_ms for f in finals if f.latency_ms is not None]
    right, n_turns, _ = conversations.turns_with_their_speaker(conv, ((f.start_s, f.end_s, f.speaker) for f in finals))
    out = {
        "duration_s": round(duration, 2),
        "der": round(der["diarization error rate"], 3),
        "missed": round(der["missed detection"] / total, 3),
        "false_alarm": round(der["false alarm"] / total, 3),
        "confusion": round(der["confusion"] / total, 3),
        "purity": round(DiarizationPurity()(ref, hyp, uem=uem), 3) if finals else 0.0,
        "coverage": round(DiarizationCoverage()(ref, hyp, uem=uem), 3) if finals else 0.0,
        "speakers_true": len({t.speaker for t in conv.turns}),
        "speakers_found": len({f.speaker for f in finals}),
        "turns": len(main_turns),
        "finals": len(finals),
        "finals_per_turn": round(len(finals) / max(len(main_turns), 1), 2),
        "boundary_precision": round(matched / max(len(finals), 1), 3),
        "boundary_recall": round(matched / max(len(main_turns), 1), 3),
        "turns_with_their_speaker": right,
        "end_reasons": dict(Counter(f.reason for f in finals)),
        "overlap_flagged": sum(f.overlap for f in finals),
        "overlap_flagged_true": overlapped,
    }
    if latencies:
        out["end_of_turn_to_final_ms"] = {"p50": round(float(np.percentile(latencies, 50)), 1),
                                          "p95": round(float(np.percentile(latencies, 95)), 1), "n": len(latencies)}
    return out


# ------------------------------------------------------------------------------------ drivers
@dataclass(frozen=True, slots=True)
class CoreParams:
    endpoint: str = "turn"
    new_margin: float | None = None  # None: the tracker's default
    local_threshold: float | None = None  # None: TurnsConfig's default
    change_margin: float | None = None  # None: TurnsConfig's default


def run_core(conv: conversations.Conversation, params: CoreParams, turn_model=None) -> list[Final]:  # noqa: ANN001
    """The turn-taking core alone, as fast as it goes."""
    from emostream.realtime.segmenter import Segmenter, SegmenterConfig
    from emostream.realtime.speakers import SpeakerTracker
    from emostream.realtime.turns import SpeakerTurns, TurnsConfig, TurnTaking, run_offline

    tracker_kw = {} if params.new_margin is None else {"new_margin": params.new_margin}
    turns_cfg = TurnsConfig(detect_changes=params.endpoint == "turn")
    if params.change_margin is not None:
        turns_cfg = replace(turns_cfg, change_margin=params.change_margin)
    if params.local_threshold is not None:
        turns_cfg = replace(turns_cfg, local_threshold=params.local_threshold)
    taking = TurnTaking(Segmenter(SegmenterConfig(endpoint=params.endpoint)),
                        SpeakerTurns(SpeakerTracker(9, **tracker_kw), turns_cfg))
    found = run_offline(conv.audio, taking, turn_model)
    return [Final(f.start_s, f.end_s, f.slot, f.reason, f.overlap) for f in found]


def run_pipeline(conv: conversations.Conversation, endpoint: str, face: bool, cache: Path) -> tuple[list[Final], dict]:
    """The whole live pipeline on the recording played in real time."""
    import os

    from emostream.realtime.config import PipelineConfig
    from emostream.realtime.pipeline import Pipeline
    from emostream.realtime.segmenter import SegmenterConfig

    os.environ.setdefault("EMOSTREAM_CACHE", str(cache))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{conv.name}.wav"
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes((np.clip(conv.audio, -1, 1) * 32767).astype("<i2").tobytes())
        events: list[dict] = []
        cfg = PipelineConfig(media=str(path), realtime=True, engine="onnx", interim=True,
                             face_expert="fer-mini-xception" if face else None,
                             segmenter=SegmenterConfig(endpoint=endpoint))
        with Pipeline(cfg, events.append) as pipeline:
            if not pipeline.wait(conv.audio.size / SAMPLE_RATE + 120):
                raise RuntimeError(f"the pipeline did not finish {conv.name}")
            worker = pipeline.worker
            rtf = worker.busy_ns / worker.audio_ns if worker is not None and worker.audio_ns else None
    finals = [Final(e["t_start_ms"] / 1000, e["t_end_ms"] / 1000, e["speaker"], e.get("end_reason", "silence"),
                    bool(e.get("overlap")), e.get("latency_ms"))
              for e in events if e["type"] == "prediction" and e["final"]]
    # a final's t_start/t_end bound its padded audio (100 ms each side, none at a cut): score the speech
    pad, unpadded = 0.1, ("speaker_change", "max_length")
    finals = [replace(f, start_s=f.start_s + (0.0 if i and finals[i - 1].reason in unpadded else pad),
                      end_s=f.end_s - (0.0 if f.reason in unpadded else pad))
              for i, f in enumerate(finals)]
    return finals, {"rtf": None if rtf is None else round(rtf, 3)}


# ------------------------------------------------------------------------------------ main
def selected(split: str, names: str | None) -> list[str]:
    if names:
        return [n.strip() for n in names.split(",") if n.strip()]
    return conversations.names(split=None if split == "all" else split)


def summary(rows: dict[str, dict]) -> dict:
    """Medians over conversations, by kind."""
    out: dict[str, dict] = {}
    for kind in sorted({r["kind"] for r in rows.values()}):
        group = [r for r in rows.values() if r["kind"] == kind and "der" in r]
        if not group:
            continue
        out[kind] = {
            "n": len(group),
            "der_median": round(statistics.median(r["der"] for r in group), 3),
            "speakers_exact": sum(r["speakers_found"] == r["speakers_true"] for r in group),
            "finals_per_turn_median": round(statistics.median(r["finals_per_turn"] for r in group), 2),
        }
    return out


def sweep(names: list[str], turn_model, thresholds: Sequence[float], locals_: Sequence[float]) -> list[dict]:  # noqa: ANN001
    convs = [conversations.load(n) for n in names]
    rows = []
    for thr in thresholds:
        for local in locals_:
            params = CoreParams(new_margin=thr, local_threshold=local)
            figs = [score(c, run_core(c, params, turn_model)) for c in convs]
            rows.append({"new_margin": thr, "local_threshold": local,
                         "der_mean": round(float(np.mean([f["der"] for f in figs])), 3),
                         "speakers_exact": sum(f["speakers_found"] == f["speakers_true"] for f in figs),
                         "speaker_count_error": sum(abs(f["speakers_found"] - f["speakers_true"]) for f in figs),
                         "finals_per_turn_mean": round(float(np.mean([f["finals_per_turn"] for f in figs])), 2)})
    return rows


def turn_model_check(names: list[str], turn_model) -> dict:  # noqa: ANN001
    """P(complete) at reference turn ends vs mid-turn cuts, and the AUC, by kind of conversation."""
    rng = np.random.default_rng(0)
    by_kind: dict[str, dict[str, list[float]]] = {}
    for name in names:
        try:
            conv = conversations.load(name)
        except conversations.CallUnavailable:
            continue
        ends, cuts = by_kind.setdefault(conv.kind, {"end": [], "cut": []}).values()
        for t in conv.turns:
            if t.backchannel or t.duration_s < 1.0:
                continue
            a = int(t.start_s * SAMPLE_RATE)
            end = int(min(t.end_s + 0.2, conv.duration_s) * SAMPLE_RATE)
            cut = int((t.start_s + rng.uniform(0.4, 0.7) * t.duration_s + 0.2) * SAMPLE_RATE)
            ends.append(turn_model(conv.audio[a:end]))
            cuts.append(turn_model(conv.audio[a:cut]))
    out = {}
    for kind, d in by_kind.items():
        e, c = np.array(d["end"]), np.array(d["cut"])
        auc = float(np.mean([(x > y) + 0.5 * (x == y) for x in e for y in c])) if e.size and c.size else None
        out[kind] = {"n": int(e.size), "p_complete_at_end_median": round(float(np.median(e)), 3),
                     "p_complete_mid_turn_median": round(float(np.median(c)), 3),
                     "complete_at_end": round(float(np.mean(e >= 0.5)), 3),
                     "complete_mid_turn": round(float(np.mean(c >= 0.5)), 3),
                     "auc": None if auc is None else round(auc, 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--split", default="all", choices=("tune", "heldout", "all"))
    p.add_argument("--names", help="comma-separated conversation names (default: the split)")
    p.add_argument("--core", action="store_true", help="the turn-taking core only (no ASR, no latency)")
    p.add_argument("--endpoint", default="turn", choices=("turn", "silence"))
    p.add_argument("--face", action="store_true", help="face path on in the pipeline (no video here: costs nothing)")
    p.add_argument("--sweep", action="store_true", help="threshold sweep (core; default split: tune)")
    p.add_argument("--turn-model", action="store_true", help="the end-of-turn model on turn ends vs mid-turn cuts")
    p.add_argument("--thresholds", default="0.06,0.08,0.10,0.12", help="new_margin values of the sweep")
    p.add_argument("--locals", default="0.55,0.6,0.65", help="local_threshold values of the sweep")
    args = p.parse_args(argv)
    from emostream.realtime.turn_model import SmartTurn

    turn_model = SmartTurn.shared() if args.endpoint == "turn" else None
    if args.turn_model:
        print(json.dumps({"turn_model": turn_model_check(selected(args.split, args.names), SmartTurn.shared())},
                         indent=1))
        return 0
    if args.sweep:
        names = selected("tune" if args.split == "all" else args.split, args.names)
        grid = ([float(v) for v in args.thresholds.split(",")], [float(v) for v in args.locals.split(",")])
        print(json.dumps({"sweep": sweep(names, turn_model, *grid), "names": names}, indent=1))
        return 0
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in selected(args.split, args.names):
            try:
                conv = conversations.load(name)
            except conversations.CallUnavailable as e:
                rows[name] = {"skipped": str(e)}
                continue
            t = time.perf_counter()
            if args.core:
                finals, extra = run_core(conv, CoreParams(endpoint=args.endpoint), turn_model), {}
            else:
                finals, extra = run_pipeline(conv, args.endpoint, args.face, Path(cache))
            rows[name] = {"kind": conv.kind, "split": conv.split, **score(conv, finals), **extra,
                          "wall_s": round(time.perf_counter() - t, 1)}
    print(json.dumps({"driver": "core" if args.core else "pipeline", "endpoint": args.endpoint,
                      "conversations": rows, "summary": summary(rows)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
