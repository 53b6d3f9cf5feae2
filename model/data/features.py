"""Datasets -> cached feature dialogues, with the featurizers and spec for the chosen modalities.

One path for `emostream extract`, `train` and `evaluate`: build the extractors of
`emostream.model.features` for the requested modalities, extract every dialogue not yet in the
cache (resumable), and return the dialogues with the feature spec actually used.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emostream.model.batch import DialogueFeatures
from emostream.model.config import MODALITIES
from emostream.model.data.cache import FeatureCache, cache_folder
from emostream.model.data.extract import extract_dataset
from emostream.model.data.records import Dataset

logger = logging.getLogger(__name__)


def build_featurizers(modalities: Sequence[str], text_encoder: str = "all-MiniLM-L6-v2",
                      audio_features: str = "eGeMAPSv02", visual_backbone: str = "mobilenet_v2-imagenet") -> dict[str, Any]:
    """The extractors for `modalities` (lazy imports: only what is asked for is loaded).

    visual_backbone: "mobilenet_v2-imagenet" (1280-d ImageNet features per face crop) or
    "fer-mini-xception" (the facial-expression expert's 128-d embedding per face crop).
    """
    out: dict[str, Any] = {}
    for m in modalities:
        if m not in MODALITIES:
            raise ValueError(f"unknown modality {m!r}; expected a subset of {MODALITIES}")
        if m == "text":
            from emostream.model.features.text import TextFeaturizer

            out[m] = TextFeaturizer(text_encoder)
        elif m == "audio":
            from emostream.model.features.audio import AudioFeaturizer

            out[m] = AudioFeaturizer(audio_features)
        else:
            from emostream.model.features.visual import VisualFeaturizer

            out[m] = VisualFeaturizer(visual_backbone)
    return out


def spec_for(featurizers: dict[str, Any]) -> Any:
    """The FeatureSpec of these extractors; modalities without one are None."""
    from emostream.model.features.spec import default_feature_spec

    default = default_feature_spec()
    return dataclasses.replace(default, **{m: (featurizers[m].spec if m in featurizers else None) for m in MODALITIES})


def has_media(dataset: Dataset) -> bool:
    return any(u.media is not None or u.video is not None for d in dataset.dialogues() for u in d.utterances)


def usable_modalities(dataset: Dataset, modalities: Sequence[str]) -> tuple[str, ...]:
    """Audio and visual need media files; without any, only text is extracted (with a warning)."""
    modalities = tuple(m for m in MODALITIES if m in modalities)
    if has_media(dataset):
        return modalities
    dropped = [m for m in modalities if m != "text"]
    if dropped:
        logger.warning("%s/%s has no media files: extracting text only (not %s)", dataset.name, dataset.split, dropped)
    return tuple(m for m in modalities if m == "text")


def cache_key(spec_dict: dict[str, Any], dataset: Dataset) -> str:
    """Hash of the feature spec and of the dataset's content (ids, order, speakers, text, labels, media)."""
    h = hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode())
    for d in dataset.dialogues():
        for u in d.utterances:
            h.update(repr((d.dialogue_id, u.order, u.speaker, u.text, u.label, str(u.media), str(u.video),
                           u.start_s, u.end_s)).encode())
    return h.hexdigest()[:12]


def dataset_features(
    dataset: Dataset, modalities: Sequence[str], cache_root: str | Path, *, text_encoder: str = "all-MiniLM-L6-v2",
    featurizers: dict[str, Any] | None = None, progress: bool = True, limit: int | None = None,
) -> tuple[list[DialogueFeatures], dict[str, Any]]:
    """Extract (or reuse) the features of every dialogue; returns them and the spec as a dict.

    The cache lives in `<cache_root>/<dataset>_<split>-<hash>`, the hash covering the feature spec
    and the dataset's content, so different extractors or different files never share a cache.
    """
    from emostream.model.data.featurize import featurize_dialogue, text_inputs

    modalities = usable_modalities(dataset, modalities)
    if not modalities:
        raise ValueError(f"{dataset.name}/{dataset.split}: nothing to extract (no media and no text requested)")
    featurizers = featurizers if featurizers is not None else build_featurizers(modalities, text_encoder)
    featurizers = {m: f for m, f in featurizers.items() if m in modalities}
    spec = spec_for(featurizers)
    spec_dict = spec.to_dict()
    folder = cache_folder(cache_root, dataset.name, dataset.split)
    folder = folder.with_name(f"{folder.name}-{cache_key(spec_dict, dataset)}")
    cache = FeatureCache(folder, spec_dict, dataset.labels)
    dims = {m: (getattr(spec, m) or _default(m)).dim for m in MODALITIES}
    text = featurizers.get("text")
    turns = int(getattr(text, "context_turns", 0))
    wanted = dataset.dialogues()[:limit] if limit is not None else dataset.dialogues()
    if text is not None:  # one batched pass over every uncached sentence: far faster than per dialogue
        todo = [x for d in wanted if not cache.has(d.dialogue_id)
                for u, x in zip(d.utterances, text_inputs(d, turns), strict=True) if u.text.strip()]
        text = PrecomputedText(text, todo)
    featurize = functools.partial(
        featurize_dialogue, labels=dataset.labels, text=text, audio=featurizers.get("audio"),
        visual=featurizers.get("visual"), text_dim=dims["text"], audio_dim=dims["audio"], visual_dim=dims["visual"],
        max_frames=spec.max_frames, max_fps=spec.max_fps, text_context_turns=turns,
    )
    extract_dataset(dataset, cache, featurize, progress=progress, limit=limit)
    return [cache.get(d.dialogue_id) for d in wanted], spec_dict


class PrecomputedText:
    """A text featurizer whose vectors for known inputs (sentences or `ContextInput`s) were
    computed in one batched call."""

    def __init__(self, featurizer: Any, texts: Sequence[Any]) -> None:
        self.featurizer = featurizer
        self.spec = featurizer.spec
        self.context_turns = int(getattr(featurizer, "context_turns", 0))
        unique = list(dict.fromkeys(texts))
        vectors = featurizer(unique) if unique else []
        self._known = dict(zip(unique, vectors))

    def __call__(self, texts: list[Any]) -> Any:
        import numpy as np

        missing = [t for t in texts if t not in self._known]
        if missing:
            self._known.update(zip(missing, self.featurizer(missing)))
        return np.stack([self._known[t] for t in texts]) if texts else self.featurizer(texts)


def _default(modality: str) -> Any:
    from emostream.model.features.spec import default_feature_spec

    return getattr(default_feature_spec(), modality)


def load_split(cfg: Any, which: str, labels: Sequence[str] | None = None, split: str | None = None) -> Dataset:
    """The split at `cfg.<which>` of a TrainConfig-like object (dataset kind, paths, options).

    split: the split's name (default: `which`).
    """
    from emostream.model.data.registry import load_dataset

    path = getattr(cfg, which)
    if not path:
        raise ValueError(f"no {which} split given (set {which}=PATH)")
    if cfg.dataset == "iemocap":
        sessions = [int(s) for s in str(getattr(cfg, f"{which}_sessions")).split(",") if s.strip()]
        return load_dataset("iemocap", path, sessions=sessions, split=split or which)
    if cfg.dataset == "meld":
        return load_dataset("meld", path, media_dir=cfg.media_dir or "auto", split=split or which)
    if cfg.dataset == "csv":
        explicit = labels or ([s.strip() for s in cfg.labels.split(",") if s.strip()] if cfg.labels else None)
        return load_dataset("csv", path, labels=explicit, columns=cfg.columns or None, split=split or which)
    raise ValueError(f"unknown dataset kind {cfg.dataset!r}: meld, iemocap or csv")


# --- the extractors of a trained checkpoint (training, evaluation and serving share them) ---------


def text_encoder_of(ckpt: Any) -> str:
    """The text encoder reference a checkpoint was trained with: a bundled name when its weights id
    matches one, else the reference recorded at training time."""
    from emostream.model.features.weights import ref_for_weights_id

    wid = (ckpt.feature_spec.get("text") or {}).get("weights_id")
    bundled = ref_for_weights_id(wid) if wid else None
    if bundled:
        return bundled
    ref = ckpt.meta.get("train_config", {}).get("text_encoder")
    return str(ref or wid or "all-MiniLM-L6-v2")


def visual_backbone_of(ckpt: Any) -> str:
    """The frame backbone a checkpoint was trained with (its visual spec's weights id)."""
    return str((ckpt.feature_spec.get("visual") or {}).get("weights_id") or "mobilenet_v2-imagenet")


def checkpoint_featurizers(ckpt: Any) -> dict[str, Any]:
    """Extractors for the checkpoint's modalities, checked against its feature spec."""
    from emostream.model.features.spec import FeatureSpec, check_compatible

    featurizers = build_featurizers(ckpt.modalities, text_encoder=text_encoder_of(ckpt),
                                    visual_backbone=visual_backbone_of(ckpt))
    if ckpt.feature_spec:
        check_compatible(FeatureSpec.from_dict(ckpt.feature_spec), spec_for(featurizers), ckpt.modalities)
    return featurizers
