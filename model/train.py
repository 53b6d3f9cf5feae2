"""`emostream train`: datasets -> cached features -> MCN-CL fit -> checkpoint.

A config file (YAML or JSON) gives the run; `--set key=value` (repeatable) and the named flags
override it. Seeded; model selection and early stopping on the dev split's weighted F1; a JSONL
log of every epoch beside the checkpoint.

    emostream train --config configs/meld_text.yaml
    emostream train --dataset csv --train my_train.csv --dev my_dev.csv --out runs/mine.safetensors
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emostream.model.batch import DialogueFeatures
from emostream.model.checkpoint import save_checkpoint
from emostream.model.config import ModelConfig
from emostream.model.data.features import build_featurizers, dataset_features, load_split
from emostream.model.fit import FitConfig, fit

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    dataset: str = "meld"  # meld | iemocap | csv
    train: str = ""  # train split: a CSV (meld, csv) or, for iemocap, the release root
    dev: str = ""  # dev split (model selection only)
    train_sessions: str = "1,2,3,4"  # iemocap
    dev_sessions: str = "5"  # iemocap
    labels: str = ""  # csv: the label set in order, comma-separated (default: sorted unique)
    columns: dict[str, str] = field(default_factory=dict)  # csv: column name overrides
    media_dir: str = ""  # meld: MELD.Raw clips
    modalities: str = "text"
    text_encoder: str = "all-MiniLM-L6-v2"
    visual_backbone: str = "mobilenet_v2-imagenet"  # or "fer-mini-xception" (the face expert's embedding)
    cache: str = ".cache/features"
    out: str = "runs/model.safetensors"
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig overrides
    fit: dict[str, Any] = field(default_factory=dict)  # FitConfig overrides
    text_finetune: dict[str, Any] = field(default_factory=dict)  # TextFinetuneConfig (+ "out"); empty: frozen
    progress: bool = True


def _coerce(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def apply_override(cfg: dict[str, Any], assignment: str) -> None:
    """`a.b=value` into a nested dict; the value is JSON when it parses, else a string."""
    if "=" not in assignment:
        raise ValueError(f"--set expects key=value, got {assignment!r}")
    key, value = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = cfg
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ValueError(f"--set {key}: {p} is not a section")
    node[parts[-1]] = _coerce(value)


def load_config(path: str | None, overrides: list[str]) -> TrainConfig:
    data: dict[str, Any] = {}
    if path:
        text = Path(path).read_text()
        if path.endswith((".yaml", ".yml")):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    for o in overrides:
        apply_override(data, o)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown training config keys: {unknown} (known: {sorted(known)})")
    return TrainConfig(**data)


def model_config_for(cfg: TrainConfig, labels: tuple[str, ...], dims: dict[str, int], max_frames: int) -> ModelConfig:
    modalities = tuple(m.strip() for m in cfg.modalities.split(",") if m.strip())
    base = dict(labels=labels, modalities=modalities, text_dim=dims["text"], audio_dim=dims["audio"],
                visual_dim=dims["visual"], max_frames=max_frames)
    unknown = sorted(set(cfg.model) & set(base))
    if unknown:
        raise ValueError(f"model.{unknown} come from the data and cannot be overridden")
    return ModelConfig.from_dict({**ModelConfig().to_dict(), **base, **cfg.model})


def feature_dims(dialogues: list[DialogueFeatures]) -> tuple[dict[str, int], int]:
    """Per-modality input sizes and the frame count, read off the extracted features."""
    d = dialogues[0]
    return {"text": d.text.shape[-1], "audio": d.audio.shape[-1], "visual": d.visual.shape[-1]}, d.visual.shape[-2]


def run(cfg: TrainConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    modalities = tuple(m.strip() for m in cfg.modalities.split(",") if m.strip())
    train_ds = load_split(cfg, "train")
    dev_ds = load_split(cfg, "dev")
    if tuple(train_ds.labels) != tuple(dev_ds.labels):
        raise ValueError(f"train labels {train_ds.labels} differ from dev labels {dev_ds.labels}")
    finetune = None
    if cfg.text_finetune and "text" in modalities:
        finetune = finetune_text(cfg, train_ds, dev_ds)
        cfg = dataclasses.replace(cfg, text_encoder=finetune["patch"])
    featurizers = build_featurizers(modalities, text_encoder=cfg.text_encoder, visual_backbone=cfg.visual_backbone)
    train, spec = dataset_features(train_ds, modalities, cfg.cache, featurizers=featurizers, progress=cfg.progress)
    dev, _ = dataset_features(dev_ds, modalities, cfg.cache, featurizers=featurizers, progress=cfg.progress)
    dims, max_frames = feature_dims(train)
    model_cfg = model_config_for(cfg, tuple(train_ds.labels), dims, max_frames)
    fit_cfg = dataclasses.replace(FitConfig(progress=cfg.progress), **cfg.fit)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = fit(train, dev, model_cfg, fit_cfg, log_path=out.with_suffix(".log.jsonl"))
    seconds = round(time.perf_counter() - t0, 1)
    meta = {
        "dataset": cfg.dataset,
        "train": {"path": cfg.train, "dialogues": len(train), "utterances": sum(len(d) for d in train)},
        "dev": {"path": cfg.dev, "dialogues": len(dev), "report": _short(result.best_dev)},
        "best_epoch": result.best_epoch,
        "text_finetune": finetune,
        "fit": dataclasses.asdict(fit_cfg),
        "train_config": dataclasses.asdict(cfg),
        "seconds": seconds,
    }
    save_checkpoint(out, result.model, feature_spec=spec, meta=meta)
    summary = {"checkpoint": str(out), "best_epoch": result.best_epoch, "dev_weighted_f1": result.best_dev["weighted_f1"],
               "dev_accuracy": result.best_dev["accuracy"], "dev_macro_f1": result.best_dev["macro_f1"],
               "seconds": seconds}
    logger.info("trained %s", summary)
    return summary


def finetune_text(cfg: TrainConfig, train_ds: Any, dev_ds: Any) -> dict[str, Any]:
    """Stage 1: fine-tune the text encoder's top layers; the patch goes to text_finetune.out."""
    from emostream.model.finetune_text import TextFinetuneConfig, finetune_text_encoder

    options = dict(cfg.text_finetune)
    out = Path(options.pop("out", "") or Path(cfg.out).with_name(Path(cfg.out).stem + "-text.safetensors"))
    result = finetune_text_encoder(train_ds, dev_ds, cfg.text_encoder, out, TextFinetuneConfig(**options),
                                   progress=cfg.progress)
    logger.info("text encoder fine-tuned: dev weighted F1 %.2f -> %s", result["dev_weighted_f1"], out)
    return result


def _short(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report[k] for k in ("weighted_f1", "accuracy", "macro_f1", "per_class") if k in report}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="emostream train", description="Train MCN-CL; select on the dev split.")
    p.add_argument("--config", help="YAML or JSON training config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set fit.epochs=20 --set model.mcn_window=6")
    for name in ("dataset", "train", "dev", "modalities", "out", "cache", "labels", "text-encoder", "media-dir",
                 "visual-backbone"):
        p.add_argument(f"--{name}", help=f"shortcut for --set {name.replace('-', '_')}=...")
    p.add_argument("--epochs", type=int, help="shortcut for --set fit.epochs=N")
    p.add_argument("--seed", type=int, help="shortcut for --set fit.seed=N")
    p.add_argument("--column", action="append", default=[], metavar="ROLE=NAME",
                   help="csv: column for a role (dialogue_id, order, speaker, text, label, media)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    for name in ("dataset", "train", "dev", "modalities", "out", "cache", "labels", "text_encoder", "media_dir",
                 "visual_backbone"):
        value = getattr(args, name)
        if value is not None:
            overrides.append(f"{name}={json.dumps(value)}")
    if args.epochs is not None:
        overrides.append(f"fit.epochs={args.epochs}")
    if args.seed is not None:
        overrides.append(f"fit.seed={args.seed}")
    for c in args.column:
        overrides.append(f"columns.{c}" if "=" in c else c)
    if args.no_progress:
        overrides.append("progress=false")
    try:
        cfg = load_config(args.config, overrides)
        if args.out is not None and cfg.text_finetune and not any(o.startswith("text_finetune.out=") for o in overrides):
            # a checkpoint of one's own keeps its fine-tuned encoder beside it, never over the bundled one
            own = Path(args.out).with_name(Path(args.out).stem + "-text.safetensors")
            cfg = dataclasses.replace(cfg, text_finetune={**cfg.text_finetune, "out": str(own)})
        summary = run(cfg)
    except (FileNotFoundError, ValueError) as e:
        sys.stderr.write(f"emostream train: {e}\n")
        return 2
    sys.stdout.write((json.dumps(summary) if args.json else "\n".join(f"{k}: {v}" for k, v in summary.items())) + "\n")
    return 0
