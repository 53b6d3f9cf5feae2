"""`emostream evaluate`: a checkpoint on a dataset split -> metrics JSON, confusion PNG, report.

    emostream evaluate --dataset meld --csv dev_sent_emo.csv --json
    emostream evaluate --dataset csv --csv mine.csv --column text=utterance --checkpoint my.safetensors --json

Prints one JSON object on a single line with `--json` (weighted_f1, accuracy, macro_f1 as
percentages, per_class, n, labels, checkpoint); `--out DIR` also writes report.json and
confusion.png there.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from emostream.model.checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint
from emostream.model.data.features import checkpoint_featurizers, dataset_features, load_split
from emostream.model.fit import evaluate_dialogues
from emostream.model.metrics import save_confusion_png

logger = logging.getLogger(__name__)


def evaluate(ckpt: LoadedCheckpoint, dataset: Any, cache: str, progress: bool = True) -> dict[str, Any]:
    if tuple(dataset.labels) != tuple(ckpt.labels):
        raise ValueError(f"the dataset's labels {tuple(dataset.labels)} differ from the checkpoint's {ckpt.labels}")
    dialogues, _ = dataset_features(dataset, ckpt.modalities, cache, featurizers=checkpoint_featurizers(ckpt),
                                    progress=progress)
    unknown = sum(int((d.labels < 0).sum()) for d in dialogues)
    if unknown:
        logger.warning("%d utterances have labels outside the checkpoint's label set; they are not scored", unknown)
    report = evaluate_dialogues(ckpt.model, dialogues)
    report["checkpoint"] = str(ckpt.path)
    report["dataset"] = {"name": dataset.name, "split": dataset.split, "dialogues": len(dialogues)}
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream evaluate", description="Evaluate a checkpoint on a dataset split.")
    p.add_argument("--dataset", required=True, choices=("meld", "iemocap", "csv"))
    p.add_argument("--csv", help="the split's CSV (meld, csv)")
    p.add_argument("--root", help="iemocap: the release root")
    p.add_argument("--sessions", default="5", help="iemocap: sessions to evaluate")
    p.add_argument("--column", action="append", default=[], metavar="ROLE=NAME",
                   help="csv: column for a role (dialogue_id, order, speaker, text, label, media)")
    p.add_argument("--media-dir", default="", help="meld: MELD.Raw clips")
    p.add_argument("--checkpoint", help="checkpoint (.safetensors); default: the bundled one")
    p.add_argument("--cache", default=".cache/features", help="feature cache root")
    p.add_argument("--out", help="folder for report.json and confusion.png")
    p.add_argument("--json", action="store_true", help="print the report as one JSON line")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        columns = dict(c.split("=", 1) for c in args.column)
        split = SimpleNamespace(dataset=args.dataset, split=args.csv or args.root, split_sessions=args.sessions,
                                media_dir=args.media_dir, labels="", columns=columns)
        dataset = load_split(split, "split", labels=ckpt.labels if args.dataset == "csv" else None, split="eval")
        report = evaluate(ckpt, dataset, args.cache, progress=not args.no_progress)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"emostream evaluate: {e}\n")
        return 2
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=1))
        save_confusion_png(report, str(out / "confusion.png"))
    if args.json:
        sys.stdout.write(json.dumps(report) + "\n")
    else:
        sys.stdout.write(f"weighted F1 {report['weighted_f1']:.2f}  accuracy {report['accuracy']:.2f}  "
                         f"macro F1 {report['macro_f1']:.2f}  (n={report['n']})\n")
        for label, r in report["per_class"].items():
            sys.stdout.write(f"  {label:<12} F1 {r['f1']:6.2f}  support {r['support']}\n")
    return 0
