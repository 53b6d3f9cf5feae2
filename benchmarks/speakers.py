"""Speaker tracking benchmark: voice embeddings vs pitch on the bundled sample and the 3-voice fixture.

Prints one JSON object. For each recording (demo/media/sample.mp4 with demo/media/sample.json, two
voices; tests/data/speakers3.wav with speakers3.json, three voices whose pitch moves line to line)
and each mode (voice, pitch), utterances are run through `SpeakerTracker.assign` in order:

- ``scripted``: the scripted line spans cut from the audio (the main figure);
- ``segmenter`` (unless --no-segmenter): the utterances the realtime `Segmenter` (Silero VAD) finds
  when the recording is streamed in 32 ms chunks, each mapped to the scripted line it overlaps most.

Figures: purity (sum over found slots of the largest overlap with one true speaker / N), inverse
purity (sum over true speakers of the largest overlap with one found slot / N), speakers found
(distinct slots emitted online, and `speaker_count` at the end after merges) vs true, median ms of
one embedding, and peek/assign agreement: ``same_audio`` (peek on the utterance just before its
assign gives the same slot) and ``partial_1s`` (peek on the first second gives the slot assign then
gives the whole utterance). Labels are the slots as emitted online (merges do not relabel the past).

``sensitivity`` gives, on scripted spans, purity / inverse purity / speakers found for
new_threshold from 0.5 to 0.8 at the default merge threshold and turn bonus, and for a few merge
thresholds and turn bonuses. The defaults were tuned on these two recordings (the only ones here).

    python benchmarks/speakers.py [--no-segmenter] [--no-sweep]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import wave
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from emostream.realtime.speakers import Embedding, SpeakerTracker, VoiceEmbedder  # noqa: E402
from emostream.realtime.types import SAMPLE_RATE  # noqa: E402

N_SLOTS = 9  # the model's default n_parties


def load_sample() -> tuple[np.ndarray, list[dict]]:
    import av

    parts: list[np.ndarray] = []
    with av.open(str(ROOT / "demo/media/sample.mp4")) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(frame)]
        parts += [o.to_ndarray().reshape(-1) for o in resampler.resample(None)]
    lines = json.loads((ROOT / "demo/media/sample.json").read_text())["lines"]
    return np.concatenate(parts).astype(np.float32), lines


def load_fixture() -> tuple[np.ndarray, list[dict]]:
    with wave.open(str(ROOT / "tests/data/speakers3.wav")) as w:
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    lines = json.loads((ROOT / "tests/data/speakers3.json").read_text())["lines"]
    return audio, lines


def scripted(audio: np.ndarray, lines: list[dict]) -> tuple[list[np.ndarray], list[str]]:
    cuts = [audio[round(ln["start_s"] * SAMPLE_RATE) : round(ln["end_s"] * SAMPLE_RATE)] for ln in lines]
    return cuts, [ln["speaker"] for ln in lines]


def segmented(audio: np.ndarray, lines: list[dict]) -> tuple[list[np.ndarray], list[str]]:
    """The Segmenter's utterances, each labelled with the scripted line it overlaps most."""
    from emostream.realtime.segmenter import Segmenter, SpeechEnd

    seg = Segmenter()
    ends: list[SpeechEnd] = []
    for start in range(0, audio.size, 512):
        ends += [e for e in seg.push(audio[start : start + 512], start * 62_500) if isinstance(e, SpeechEnd)]
    ends += [e for e in seg.flush() if isinstance(e, SpeechEnd)]
    cuts, truth = [], []
    for e in ends:
        a, b = e.start_sample / SAMPLE_RATE, e.end_sample / SAMPLE_RATE
        overlap = [max(0.0, min(b, ln["end_s"]) - max(a, ln["start_s"])) for ln in lines]
        if max(overlap) <= 0:
            continue
        cuts.append(e.audio)
        truth.append(lines[int(np.argmax(overlap))]["speaker"])
    return cuts, truth


def purity(found: Sequence[int], truth: Sequence[str]) -> tuple[float, float]:
    n = len(found)
    pairs = Counter(zip(found, truth))
    pur = sum(max(c for (f, _), c in pairs.items() if f == k) for k in set(found)) / n
    inv = sum(max(c for (_, t), c in pairs.items() if t == k) for k in set(truth)) / n
    return round(pur, 3), round(inv, 3)


def replay(embs: list[Embedding | None], truth: list[str], **kw: float) -> dict:
    tracker = SpeakerTracker(N_SLOTS, "voice", embedder=_EMBEDDER, **kw)  # type: ignore[arg-type]
    found = [tracker.assign_embedding(e) for e in embs]
    pur, inv = purity(found, truth)
    return {"purity": pur, "inverse_purity": inv, "found": len(set(found)), "true": len(set(truth))}


def evaluate(cuts: list[np.ndarray], truth: list[str], mode: str) -> dict:
    tracker = SpeakerTracker(N_SLOTS, mode, embedder=_EMBEDDER if mode == "voice" else None)
    found, same, partial, ms = [], 0, 0, []
    for audio in cuts:
        p_part = tracker.peek(audio[:SAMPLE_RATE])
        p_full = tracker.peek(audio)
        if mode == "voice":
            t = time.perf_counter()
            _EMBEDDER.embed_full(audio)
            ms.append((time.perf_counter() - t) * 1000)
        slot = tracker.assign(audio)
        same += p_full == slot
        partial += p_part == slot
        found.append(slot)
    pur, inv = purity(found, truth)
    out = {"purity": pur, "inverse_purity": inv, "speakers_found": len(set(found)),
           "speaker_count_end": tracker.speaker_count, "speakers_true": len(set(truth)), "utterances": len(cuts),
           "peek_assign_agreement": {"same_audio": round(same / len(cuts), 3),
                                     "partial_1s": round(partial / len(cuts), 3)},
           "slots": found}
    if ms:
        out["embed_ms_median"] = round(statistics.median(ms), 1)
    return out


def sweep(embs: list[Embedding | None], truth: list[str]) -> dict:
    out: dict[str, dict] = {}
    for th in (0.5, 0.55, 0.58, 0.6, 0.62, 0.64, 0.66, 0.7, 0.75, 0.8):
        out[f"new_threshold={th}"] = replay(embs, truth, new_threshold=th)
    for mt in (0.7, 0.75, 0.8, 0.9, 1.01):
        out[f"merge_threshold={mt}"] = replay(embs, truth, merge_threshold=mt)
    for tb in (0.0, 0.05, 0.1):
        out[f"turn_bonus={tb}"] = replay(embs, truth, turn_bonus=tb)
    for sr in (0.0, 0.15):
        out[f"short_relief={sr}"] = replay(embs, truth, short_relief=sr)
    return out


_EMBEDDER: VoiceEmbedder


def main(argv: list[str] | None = None) -> int:
    global _EMBEDDER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-segmenter", action="store_true", help="skip the Silero-segmented run")
    parser.add_argument("--no-sweep", action="store_true", help="skip the threshold sensitivity")
    args = parser.parse_args(argv)
    _EMBEDDER = VoiceEmbedder.shared()
    defaults = SpeakerTracker(N_SLOTS, "voice", embedder=_EMBEDDER)
    result: dict = {"defaults": {k: getattr(defaults, k) for k in (
        "new_threshold", "merge_threshold", "turn_bonus", "reliable_seconds", "short_relief", "short_policy",
        "max_speakers")}, "n_slots": N_SLOTS, "recordings": {}}
    for name, loader in (("sample", load_sample), ("speakers3", load_fixture)):
        audio, lines = loader()
        rec: dict = {}
        sets = {"scripted": scripted(audio, lines)}
        if not args.no_segmenter:
            sets["segmenter"] = segmented(audio, lines)
        for kind, (cuts, truth) in sets.items():
            rec[kind] = {mode: evaluate(cuts, truth, mode) for mode in ("voice", "pitch")}
            rec[kind]["truth"] = truth
        if not args.no_sweep:
            cuts, truth = sets["scripted"]
            rec["sensitivity"] = sweep([_EMBEDDER.embed_full(c) for c in cuts], truth)
        result["recordings"][name] = rec
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
