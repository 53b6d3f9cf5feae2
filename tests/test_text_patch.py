"""Fine-tuning the text encoder's top layers and storing only them as a patch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from emostream.model.data.generic import CsvDataset
from emostream.model.features.text import TextFeaturizer
from emostream.model.features.text_patch import TextPatchError, read_patch_sidecar
from emostream.model.features.weights import weights_id
from emostream.model.finetune_text import TextFinetuneConfig, finetune_text_encoder
from tests.test_train_cli import write_csv


@pytest.fixture(scope="module")
def patch(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ft")
    write_csv(root / "train.csv", 12, 0)
    write_csv(root / "dev.csv", 4, 1)
    cols = {"dialogue_id": "conv", "order": "turn", "speaker": "who", "text": "utterance", "label": "feeling"}
    train = CsvDataset(root / "train.csv", columns=cols)
    dev = CsvDataset(root / "dev.csv", columns=cols)
    out = root / "enc.safetensors"
    summary = finetune_text_encoder(train, dev, "all-MiniLM-L6-v2", out,
                                    TextFinetuneConfig(layers=1, epochs=1, batch_size=8, lr=1e-3), progress=False)
    return out, summary


def test_patch_holds_only_the_trained_layer(patch: tuple[Path, dict]) -> None:
    path, summary = patch
    side = read_patch_sidecar(path)
    assert side["base"] == "all-MiniLM-L6-v2" and summary["patch"] == str(path)
    assert side["tensors"] and all(name.startswith("encoder.layer.5.") for name in side["tensors"])
    assert path.stat().st_size < 5_000_000  # one layer in float16, not the whole encoder


def test_patched_encoder_loads_and_differs_from_base(patch: tuple[Path, dict]) -> None:
    path, _ = patch
    texts = ["I am so angry right now", "the meeting is at three"]
    base = TextFeaturizer("all-MiniLM-L6-v2")(texts)
    tuned = TextFeaturizer(str(path))(texts)
    assert tuned.shape == base.shape and np.isfinite(tuned).all()
    assert np.abs(tuned - base).max() > 1e-3
    assert weights_id(str(path)).startswith("all-MiniLM-L6-v2+patch@")
    assert TextFeaturizer(str(path)).spec.weights_id == weights_id(str(path))


def test_corrupt_patch_is_refused(patch: tuple[Path, dict], tmp_path: Path) -> None:
    path, _ = patch
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:-100])
    bad.with_suffix(".json").write_text(path.with_suffix(".json").read_text())
    with pytest.raises(TextPatchError, match="corrupt or truncated"):
        TextFeaturizer(str(bad))
    side = json.loads(path.with_suffix(".json").read_text())
    side["version"] = 7
    bad.write_bytes(path.read_bytes())
    bad.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(TextPatchError, match="not a version 1"):
        TextFeaturizer(str(bad))
