"""`emostream train` and `emostream evaluate` end to end on a generic CSV with its own label set."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from emostream.model.checkpoint import load_checkpoint
from emostream.realtime.cli import main as cli

PHRASES = {
    "delighted": ["I love this so much", "what a wonderful day", "this is fantastic news", "I am so happy for you",
                  "best party ever", "that is great, thank you"],
    "furious": ["I hate you, get out", "this is outrageous and unfair", "stop lying to me", "I am so angry right now",
                "how dare you do that", "you ruined everything"],
    "calm": ["the meeting is at three", "please pass the salt", "the train leaves at noon", "it is on the table",
             "we need more paper", "the report is finished"],
}


def write_csv(path: Path, n_dialogues: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = list(PHRASES)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["conv", "turn", "who", "utterance", "feeling"])
        for d in range(n_dialogues):
            for t in range(int(rng.integers(3, 7))):
                label = labels[int(rng.integers(0, 3))]
                text = PHRASES[label][int(rng.integers(0, 6))]
                w.writerow([f"c{seed}-{d}", t, "AB"[t % 2], text, label])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("train")
    train, dev = root / "train.csv", root / "dev.csv"
    write_csv(train, 40, 0)
    write_csv(dev, 12, 1)
    out = root / "model.safetensors"
    argv = ["train", "--dataset", "csv", "--train", str(train), "--dev", str(dev), "--out", str(out),
            "--cache", str(root / "cache"), "--column", "dialogue_id=conv", "--column", "order=turn",
            "--column", "speaker=who", "--column", "text=utterance", "--column", "label=feeling",
            "--epochs", "10", "--set", "fit.batch_size=4", "--set", "model.d_model=64", "--set", "model.global_dim=32",
            "--set", "model.party_dim=32", "--set", "model.emotion_dim=32", "--no-progress", "--json"]
    assert cli(argv) == 0
    return out, dev


def test_train_writes_a_checkpoint_with_its_own_labels(trained: tuple[Path, Path]) -> None:
    out, _ = trained
    ckpt = load_checkpoint(out)
    assert ckpt.labels == ("calm", "delighted", "furious")  # sorted unique labels of the CSV
    assert ckpt.modalities == ("text",)
    assert ckpt.feature_spec["text"]["dim"] == 384
    log = [json.loads(line) for line in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert len(log) >= 1 and {"epoch", "loss", "dev_weighted_f1"} <= set(log[0])
    assert ckpt.meta["best_epoch"] in [r["epoch"] for r in log]


def test_evaluate_csv_prints_one_json_line(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    out, dev = trained
    argv = ["evaluate", "--dataset", "csv", "--csv", str(dev), "--checkpoint", str(out), "--cache",
            str(tmp_path / "cache"), "--column", "dialogue_id=conv", "--column", "order=turn", "--column",
            "speaker=who", "--column", "text=utterance", "--column", "label=feeling", "--json", "--no-progress",
            "--out", str(tmp_path / "report")]
    capsys.readouterr()
    assert cli(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert {"weighted_f1", "accuracy", "macro_f1", "per_class"} <= set(report)
    assert set(report["per_class"]) == {"calm", "delighted", "furious"}
    assert report["accuracy"] >= 90.0, report  # the phrases are easy: the text branch must have learned them
    assert (tmp_path / "report" / "confusion.png").stat().st_size > 1000


def test_evaluate_refuses_a_corrupt_checkpoint(trained: tuple[Path, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out, dev = trained
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(out.read_bytes()[:1000])
    bad.with_suffix(".json").write_text(out.with_suffix(".json").read_text())
    assert cli(["evaluate", "--dataset", "csv", "--csv", str(dev), "--checkpoint", str(bad), "--json"]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err


def test_the_meld_config_trains_a_context_encoder_on_any_csv(tmp_path: Path) -> None:
    """`--config configs/meld_text.yaml --dataset csv`: stage 1 fine-tunes the text encoder on the
    context input the config names, stage 2 trains on it, and the bundled files stay untouched."""
    import hashlib

    import yaml

    from emostream.model.features.text_patch import read_patch_sidecar

    root = Path(__file__).resolve().parents[1]
    config = root / "configs" / "meld_text.yaml"
    turns = int(yaml.safe_load(config.read_text())["text_finetune"].get("context_turns", 0))
    bundled = sorted((root / "model" / "bundled").glob("*meld*"))
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundled}
    train, dev = tmp_path / "train.csv", tmp_path / "dev.csv"
    write_csv(train, 16, 0)
    write_csv(dev, 6, 1)
    out = tmp_path / "mine.safetensors"
    argv = ["train", "--config", str(config), "--dataset", "csv", "--train", str(train), "--dev", str(dev),
            "--out", str(out), "--cache", str(tmp_path / "cache"), "--column", "dialogue_id=conv",
            "--column", "order=turn", "--column", "speaker=who", "--column", "text=utterance",
            "--column", "label=feeling", "--epochs", "2", "--set", "text_finetune.epochs=1", "--no-progress", "--json"]
    assert cli(argv) == 0
    patch = tmp_path / "mine-text.safetensors"  # beside the checkpoint, not over the bundled encoder
    assert read_patch_sidecar(patch).get("context_turns", 0) == turns
    spec = load_checkpoint(out).feature_spec["text"]["preprocessing"]
    assert spec.get("context_turns", 0) == turns
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bundled} == before
