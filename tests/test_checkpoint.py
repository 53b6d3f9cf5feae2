"""Checkpoints: exact round trip; corrupt, truncated, wrong-version and wrong-shape files refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emostream.model.batch import collate
from emostream.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from emostream.model.mcncl import MCNCL
from tests.model_helpers import random_dialogue, small_config

SPEC = {"text": {"name": "fake-text", "dim": 12, "version": 1}}


@pytest.fixture()
def saved(tmp_path: Path) -> tuple[Path, MCNCL]:
    torch.manual_seed(0)
    cfg = small_config()
    model = MCNCL(cfg).eval()
    model.set_normalization(
        {"text": {"mean": [0.5] * cfg.text_dim, "std": [2.0] * cfg.text_dim},
         "audio": {"mean": list(np.linspace(-1, 1, cfg.audio_dim)), "std": [1.5] * cfg.audio_dim}}
    )
    path = save_checkpoint(tmp_path / "ck.safetensors", model, feature_spec=SPEC, meta={"note": "test"})
    return path, model


def test_round_trip_is_exact(saved: tuple[Path, MCNCL]) -> None:
    path, model = saved
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    assert loaded.feature_spec == SPEC and loaded.meta == {"note": "test"}
    assert loaded.labels == model.config.labels and loaded.modalities == model.config.modalities
    for (ka, a), (kb, b) in zip(model.state_dict().items(), loaded.model.state_dict().items()):
        assert ka == kb and torch.equal(a, b)
    assert loaded.model.normalization() == model.normalization()
    batch = collate([random_dialogue(np.random.default_rng(0), 8, model.config)])
    with torch.no_grad():
        assert torch.equal(model(batch).logits, loaded.model(batch).logits)


def test_truncated_file_is_refused(saved: tuple[Path, MCNCL]) -> None:
    path, _ = saved
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


def test_truncated_file_with_matching_hash_is_refused(saved: tuple[Path, MCNCL]) -> None:
    """Even if someone rewrote the hash, a truncated safetensors file fails to parse, clearly."""
    path, _ = saved
    from emostream.model.checkpoint import file_sha256, sidecar_path

    path.write_bytes(path.read_bytes()[:200])
    side = json.loads(sidecar_path(path).read_text())
    side["sha256"] = file_sha256(path)
    sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="could not be read as safetensors"):
        load_checkpoint(path)


def test_wrong_version_is_refused(saved: tuple[Path, MCNCL]) -> None:
    path, _ = saved
    side_path = path.with_suffix(".json")
    side = json.loads(side_path.read_text())
    side["format_version"] = 99
    side_path.write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_wrong_shape_is_refused(saved: tuple[Path, MCNCL], tmp_path: Path) -> None:
    path, model = saved
    other = MCNCL(model.config.replace(d_model=64))
    other_path = save_checkpoint(tmp_path / "other.safetensors", other)
    # weights of a 64-d model under the sidecar of a 32-d one
    side = json.loads(path.with_suffix(".json").read_text())
    side["sha256"] = json.loads(other_path.with_suffix(".json").read_text())["sha256"]
    other_path.with_suffix(".json").write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(other_path)


def test_missing_sidecar_and_bad_json(saved: tuple[Path, MCNCL]) -> None:
    path, _ = saved
    side = path.with_suffix(".json")
    side.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
    side.unlink()
    with pytest.raises(CheckpointError, match="sidecar .* is missing"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(path.with_name("nope.safetensors"))


def test_invalid_config_is_refused(saved: tuple[Path, MCNCL]) -> None:
    path, _ = saved
    side_path = path.with_suffix(".json")
    side = json.loads(side_path.read_text())
    side["config"]["modalities"] = ["smell"]
    side_path.write_text(json.dumps(side))
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_checkpoint(path)
