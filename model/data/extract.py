"""`emostream extract`: run the feature extractors over a dataset split into a feature cache.

Resumable: dialogues already in the cache are skipped, so an interrupted run picks up where it
stopped. The same extractors serve the realtime worker (DESIGN §4).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emostream.model.batch import DialogueFeatures
from emostream.model.config import MODALITIES
from emostream.model.data.cache import FeatureCache, cache_folder
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


def _featurizer(modality: str) -> Any:
    import importlib

    module, name = _FEATURIZERS[modality]
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"the {modality} extractor ({module}.{name}) is not available: {e}") from e
    return cls()


def _modality_spec(featurizer: Any, default: Any) -> Any:
    """The ModalitySpec an extractor reports (its `spec`), else the default; None without one."""
    from emostream.model.features.spec import ModalitySpec

    if featurizer is None:
        return None
    own = getattr(featurizer, "spec", None)
    return own if isinstance(own, ModalitySpec) else default


def _has_media(dataset: Dataset) -> bool:
    return any(u.media is not None or u.video is not None for d in dataset.dialogues() for u in d.utterances)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from emostream.model.features.spec import default_feature_spec

    modalities = [m.strip() for m in args.modalities.split(",") if m.strip()]
    bad = [m for m in modalities if m not in MODALITIES]
    if bad or not modalities:
        print(f"emostream extract: --modalities must be a subset of {','.join(MODALITIES)}, got {args.modalities!r}")
        return 2
    try:
        dataset = _load(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"emostream extract: {e}")
        return 2
    if not _has_media(dataset):
        dropped = [m for m in modalities if m != "text"]
        if dropped:
            logger.warning("%s/%s has no media files: extracting text only (not %s)", dataset.name, dataset.split, dropped)
        modalities = [m for m in modalities if m == "text"]
        if not modalities:
            print("emostream extract: the dataset has no media files and text was not requested: nothing to do")
            return 2

    default = default_feature_spec()
    try:
        featurizers = {m: _featurizer(m) for m in modalities}
    except RuntimeError as e:
        print(f"emostream extract: {e}")
        return 2
    # the spec of what is actually extracted: each extractor's own spec when it has one
    spec = dataclasses.replace(default, **{m: _modality_spec(featurizers.get(m), getattr(default, m)) for m in MODALITIES})
    folder = cache_folder(args.out, dataset.name, dataset.split)
    try:
        cache = FeatureCache(folder, spec.to_dict(), dataset.labels)
    except ValueError as e:
        print(f"emostream extract: {e}")
        return 2
    featurize = functools.partial(
        _featurize,
        labels=dataset.labels,
        text=featurizers.get("text"),
        audio=featurizers.get("audio"),
        visual=featurizers.get("visual"),
        text_dim=(spec.text or default.text).dim,  # type: ignore[union-attr]
        audio_dim=(spec.audio or default.audio).dim,  # type: ignore[union-attr]
        visual_dim=(spec.visual or default.visual).dim,  # type: ignore[union-attr]
        max_frames=spec.max_frames,
        max_fps=spec.max_fps,
    )
    stats = extract_dataset(dataset, cache, featurize, progress=not args.no_progress, limit=args.limit)
    print(f"{folder}: {stats.summary()}")
    return 0


def _featurize(record: DialogueRecord, **kwargs: Any) -> DialogueFeatures:
    from emostream.model.data.featurize import featurize_dialogue

    return featurize_dialogue(record, **kwargs)
