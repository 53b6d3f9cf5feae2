"""On-disk feature cache: one safetensors file per dialogue plus an index.json. No pickle.

    <folder>/index.json                   format, feature spec, labels, dims, done dialogue ids
    <folder>/dialogues/<id>.safetensors   text, audio, visual, visual_mask, present, speaker, labels

Writes are atomic (temporary file + rename), the dialogue file before the index, so an
interrupted extraction resumes where it stopped. A modality absent from a whole dialogue is not
stored (it is rebuilt as zeros from the recorded dims when read).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emostream.model.batch import DialogueFeatures
from emostream.model.config import MODALITIES

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
INDEX_NAME = "index.json"
_ARRAYS = ("text", "audio", "visual", "visual_mask", "present", "speaker", "labels")
_DTYPES = {
    "text": np.float32, "audio": np.float32, "visual": np.float32, "visual_mask": np.bool_,
    "present": np.bool_, "speaker": np.int64, "labels": np.int64,
}


class CacheMismatchError(ValueError):
    """An existing cache was built with another feature spec, label set or feature dims."""


def cache_folder(root: str | Path, dataset_name: str, split: str) -> Path:
    """The conventional cache folder of a dataset split: <root>/<name>_<split>."""
    return Path(root) / f"{dataset_name}_{split}"


def _json_normalise(value: Any) -> Any:
    """The value as it reads back from JSON (tuples -> lists, ...), for comparisons."""
    return json.loads(json.dumps(value, sort_keys=True))


def _file_stem(dialogue_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", dialogue_id)[:80].lstrip(".") or "_"
    if safe == dialogue_id:
        return safe
    return f"{safe}-{hashlib.sha1(dialogue_id.encode('utf-8')).hexdigest()[:10]}"


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a cache is ordinary data
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name}: (absent) -> {new[key]!r}")
            elif key not in new:
                out.append(f"{name}: {old[key]!r} -> (absent)")
            else:
                out.extend(_diff(old[key], new[key], name))
        return out
    return [] if old == new else [f"{prefix or 'spec'}: {old!r} -> {new!r}"]


class FeatureCache:
    """Per-dialogue features of one dataset split, keyed by dialogue id.

    Opening a folder that already holds a cache checks that its feature spec and labels equal the
    given ones (CacheMismatchError otherwise); an empty or missing folder starts a new cache.
    """

    def __init__(self, folder: str | Path, feature_spec: Mapping[str, Any], labels: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.feature_spec: dict[str, Any] = _json_normalise(dict(feature_spec))
        self.labels: tuple[str, ...] = tuple(labels)
        self._dims: dict[str, Any] | None = None
        self._done: dict[str, None] = {}  # insertion-ordered set of dialogue ids
        index = self.folder / INDEX_NAME
        if index.is_file():
            self._open(index)
        else:
            (self.folder / "dialogues").mkdir(parents=True, exist_ok=True)
            self._write_index()

    # --- index ---------------------------------------------------------------------------------

    def _open(self, index: Path) -> None:
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CacheMismatchError(f"{index} is not a readable feature-cache index: {e}") from e
        if data.get("format") != CACHE_FORMAT:
            raise CacheMismatchError(f"{index}: cache format {data.get('format')!r}, expected {CACHE_FORMAT}")
        if data.get("feature_spec") != self.feature_spec:
            changes = "; ".join(_diff(data.get("feature_spec"), self.feature_spec)) or "differs"
            raise CacheMismatchError(
                f"feature cache {self.folder} was built with another feature spec ({changes}); "
                "use another output folder or delete this one to re-extract"
            )
        if tuple(data.get("labels", ())) != self.labels:
            raise CacheMismatchError(
                f"feature cache {self.folder} has labels {tuple(data.get('labels', ()))}, expected {self.labels}"
            )
        self._dims = data.get("dims")
        self._done = dict.fromkeys(data.get("dialogues", []))
        (self.folder / "dialogues").mkdir(exist_ok=True)

    def _write_index(self) -> None:
        data = {
            "format": CACHE_FORMAT,
            "feature_spec": self.feature_spec,
            "labels": list(self.labels),
            "dims": self._dims,
            "dialogues": list(self._done),
        }
        _atomic_write(self.folder / INDEX_NAME, (json.dumps(data, indent=1) + "\n").encode("utf-8"))

    @property
    def dims(self) -> dict[str, Any] | None:
        """{"text": Dt, "audio": Da, "visual": [F, Dv]}, known once a dialogue is stored."""
        return None if self._dims is None else dict(self._dims)

    def dialogue_ids(self) -> list[str]:
        """Ids of the stored dialogues, in the order they were put."""
        return list(self._done)

    def __len__(self) -> int:
        return len(self._done)

    def __contains__(self, dialogue_id: object) -> bool:
        return isinstance(dialogue_id, str) and self.has(dialogue_id)

    def has(self, dialogue_id: str) -> bool:
        return dialogue_id in self._done and self._path(dialogue_id).is_file()

    def _path(self, dialogue_id: str) -> Path:
        return self.folder / "dialogues" / f"{_file_stem(dialogue_id)}.safetensors"

    # --- dialogues -----------------------------------------------------------------------------

    def _check_dims(self, features: DialogueFeatures) -> None:
        n = len(features)
        dims = {
            "text": int(features.text.shape[-1]),
            "audio": int(features.audio.shape[-1]),
            "visual": [int(features.visual.shape[-2]), int(features.visual.shape[-1])],
        }
        shapes = {
            "text": (n, dims["text"]), "audio": (n, dims["audio"]), "visual": (n, *dims["visual"]),
            "visual_mask": (n, dims["visual"][0]), "present": (n, len(MODALITIES)),
            "speaker": (n,), "labels": (n,),
        }
        for name, shape in shapes.items():
            actual = tuple(np.shape(getattr(features, name)))
            if actual != shape:
                raise ValueError(f"dialogue {features.dialogue_id!r}: {name} has shape {actual}, expected {shape}")
        if self._dims is None:
            self._dims = dims
        elif _json_normalise(self._dims) != dims:
            raise CacheMismatchError(
                f"dialogue {features.dialogue_id!r} has feature dims {dims}, the cache holds {self._dims}"
            )

    def put(self, dialogue_id: str, features: DialogueFeatures) -> None:
        """Store (or replace) a dialogue's features atomically."""
        from safetensors.numpy import save

        self._check_dims(features)
        tensors: dict[str, np.ndarray] = {}
        present = np.asarray(features.present, dtype=bool)
        for name in _ARRAYS:
            array = np.ascontiguousarray(np.asarray(getattr(features, name)), dtype=_DTYPES[name])
            if name in MODALITIES and not present[:, MODALITIES.index(name)].any() and not array.any():
                continue  # absent for the whole dialogue: rebuilt as zeros on load
            if name == "visual_mask" and not present[:, MODALITIES.index("visual")].any() and not array.any():
                continue
            tensors[name] = array
        data = save(tensors, metadata={"dialogue_id": dialogue_id, "format": str(CACHE_FORMAT)})
        _atomic_write(self._path(dialogue_id), data)
        self._done.pop(dialogue_id, None)
        self._done[dialogue_id] = None
        self._write_index()

    def get(self, dialogue_id: str) -> DialogueFeatures:
        from safetensors.numpy import load

        if dialogue_id not in self._done:
            raise KeyError(f"dialogue {dialogue_id!r} is not in the feature cache {self.folder}")
        path = self._path(dialogue_id)
        try:
            tensors = load(path.read_bytes())
        except Exception as e:  # noqa: BLE001 - any read/parse failure means a broken entry
            raise ValueError(f"cannot read cached features {path}: {e}; delete it and re-extract") from e
        assert self._dims is not None
        n = int(tensors["speaker"].shape[0])
        frames, dv = self._dims["visual"]
        zeros = {
            "text": (n, self._dims["text"]), "audio": (n, self._dims["audio"]),
            "visual": (n, frames, dv), "visual_mask": (n, frames),
        }
        arrays = {
            name: tensors[name] if name in tensors else np.zeros(zeros[name], dtype=_DTYPES[name])
            for name in _ARRAYS
        }
        return DialogueFeatures(**arrays, dialogue_id=dialogue_id)

    def load_all(self) -> list[DialogueFeatures]:
        """Every stored dialogue, in the order they were put."""
        return [self.get(d) for d in self._done]

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.folder)!r}, dialogues={len(self)}, labels={self.labels})"
