"""Ablations of MCN-CL on MELD dev (text only, the default's features), each the mean of N seeds.

Uses the feature cache of the default training run (the fine-tuned text encoder's vectors), so
run `emostream train --config configs/meld_text.yaml ...` first. Prints one JSON object and, with
--markdown, a table for docs/results.md. Selection is on dev (as in training); there is no test
split here.

    python benchmarks/ablations.py --train PATH/train_sent_emo.csv --dev PATH/dev_sent_emo.csv --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

VARIANTS: dict[str, dict[str, Any]] = {
    "MCN-CL (default W=4 T=1)": {},
    "no context (no DialogueRNN; W=1)": {"use_context": False},
    "no contrastive loss": {"use_contrastive": False},
    "no hard negative mining": {"hard_negatives": False},
    "W=1": {"mcn_window": 1},
    "W=8": {"mcn_window": 8},
    "T=2": {"mcn_layers": 2},
    "no MCN (concatenation)": {"use_mcn": False},
}


RARE = ("fear", "disgust")  # MELD's rarest classes: what hard negative mining is meant to help


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default=str(ROOT / "configs" / "meld_text.yaml"))
    p.add_argument("--train", required=True)
    p.add_argument("--dev", required=True)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--text-encoder", default="minilm-meld", help="the features' text encoder (default: bundled)")
    p.add_argument("--only", help="comma-separated variant names (default: all)")
    p.add_argument("--cache", help="feature cache folder (default: the config's)")
    p.add_argument("--markdown", action="store_true")
    args = p.parse_args(argv)
    from emostream.model.data.features import build_featurizers, dataset_features, load_split
    from emostream.model.fit import FitConfig, fit
    from emostream.model.train import feature_dims, load_config, model_config_for

    cfg = load_config(args.config, [f"train={json.dumps(args.train)}", f"dev={json.dumps(args.dev)}",
                                     f"text_encoder={json.dumps(args.text_encoder)}", "text_finetune={}",
                                     *([f"cache={json.dumps(args.cache)}"] if args.cache else [])])
    train_ds, dev_ds = load_split(cfg, "train"), load_split(cfg, "dev")
    featurizers = build_featurizers(("text",), text_encoder=cfg.text_encoder)
    train, _ = dataset_features(train_ds, ("text",), cfg.cache, featurizers=featurizers, progress=False)
    dev, _ = dataset_features(dev_ds, ("text",), cfg.cache, featurizers=featurizers, progress=False)
    base = model_config_for(cfg, tuple(train_ds.labels), *feature_dims(train))
    fit_base = dataclasses.replace(FitConfig(progress=False), **cfg.fit)
    seeds = [int(s) for s in args.seeds.split(",")]
    names = [n.strip() for n in args.only.split(",")] if args.only else list(VARIANTS)
    results: dict[str, Any] = {}
    for name in names:
        runs = []
        for seed in seeds:
            t0 = time.perf_counter()
            res = fit(train, dev, base.replace(**VARIANTS[name]), dataclasses.replace(fit_base, seed=seed))
            per_class = res.best_dev.get("per_class", {})
            runs.append({"seed": seed, "weighted_f1": res.best_dev["weighted_f1"], "macro_f1": res.best_dev["macro_f1"],
                         **{f"{c}_f1": per_class[c]["f1"] for c in RARE if c in per_class},
                         "epoch": res.best_epoch, "seconds": round(time.perf_counter() - t0, 1)})
            sys.stderr.write(f"{name} seed {seed}: {runs[-1]}\n")
        wf1 = [r["weighted_f1"] for r in runs]
        results[name] = {"mean_weighted_f1": round(statistics.fmean(wf1), 2),
                         "std": round(statistics.pstdev(wf1), 2),
                         "mean_macro_f1": round(statistics.fmean(r["macro_f1"] for r in runs), 2),
                         **{f"mean_{c}_f1": round(statistics.fmean(r[f"{c}_f1"] for r in runs), 2)
                            for c in RARE if all(f"{c}_f1" in r for r in runs)},
                         "runs": runs}
    sys.stdout.write(json.dumps({"benchmark": "ablations", "split": "MELD dev", "seeds": seeds, "results": results}) + "\n")
    if args.markdown:
        sys.stdout.write("\n| variant | dev weighted F1 (mean ± sd) | dev macro F1 | fear F1 | disgust F1 |\n"
                         "|---|---|---|---|---|\n")
        for name, r in results.items():
            sys.stdout.write(f"| {name} | {r['mean_weighted_f1']:.2f} ± {r['std']:.2f} | {r['mean_macro_f1']:.2f} "
                             f"| {r.get('mean_fear_f1', float('nan')):.2f} | {r.get('mean_disgust_f1', float('nan')):.2f} |\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
