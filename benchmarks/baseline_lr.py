"""The no-context baseline: logistic regression on single-utterance text features, MELD dev.

    python benchmarks/baseline_lr.py --train PATH/train_sent_emo.csv --dev PATH/dev_sent_emo.csv \
        [--text-encoder all-MiniLM-L6-v2|minilm-meld]

C is chosen on dev (as every selection here). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--text-encoder", default="all-MiniLM-L6-v2")
    p.add_argument("--cache", default=".cache/features")
    args = p.parse_args(argv)
    from sklearn.linear_model import LogisticRegression

    from emostream.model.data.features import build_featurizers, dataset_features
    from emostream.model.data.registry import load_dataset
    from emostream.model.metrics import classification_report

    featurizers = build_featurizers(("text",), text_encoder=args.text_encoder)

    def xy(path: str, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        ds = load_dataset("meld", path, split=split)
        dialogues, _ = dataset_features(ds, ("text",), args.cache, featurizers=featurizers, progress=False)
        x = np.concatenate([d.text for d in dialogues])
        y = np.concatenate([d.labels for d in dialogues])
        return x[y >= 0], y[y >= 0], tuple(ds.labels)

    x_train, y_train, labels = xy(args.train, "train")
    x_dev, y_dev, _ = xy(args.dev, "dev")
    best = None
    for c in (0.1, 0.3, 1.0, 3.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=3000).fit(x_train, y_train)
        report = classification_report(y_dev, clf.predict(x_dev), labels)
        if best is None or report["weighted_f1"] > best[1]["weighted_f1"]:
            best = (c, report)
    assert best is not None
    c, report = best
    sys.stdout.write(json.dumps({"benchmark": "baseline_lr", "text_encoder": args.text_encoder, "C": c,
                                 "dev_weighted_f1": report["weighted_f1"], "dev_accuracy": report["accuracy"],
                                 "dev_macro_f1": report["macro_f1"]}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
