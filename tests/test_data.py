"""Dataset loaders (MELD, IEMOCAP, generic CSV), the feature cache, featurize and extract.

Every dataset here is a tiny synthetic copy written into tmp_path.
"""

from __future__ import annotations

import csv
import json
import wave
from pathlib import Path

import numpy as np
import pytest

from emostream.model.batch import DialogueFeatures, collate
from emostream.model.config import MELD_LABELS
from emostream.model.data import extract as extract_mod
from emostream.model.data.cache import CacheMismatchError, FeatureCache
from emostream.model.data.extract import extract_dataset
from emostream.model.data.featurize import decode_audio, featurize_dialogue, read_frames, utterance_frames
from emostream.model.data.generic import CsvDataset
from emostream.model.data.iemocap import IEMOCAP_4_LABELS, IEMOCAP_6_LABELS, IemocapDataset, label_scheme
from emostream.model.data.meld import MeldDataset, parse_timestamp
from emostream.model.data.records import (
    Dataset,
    DialogueRecord,
    UtteranceRecord,
    label_index,
    normalize_text,
)
from emostream.model.data.registry import load_dataset

MELD_HEADER = [
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
    "Season", "Episode", "StartTime", "EndTime",
]


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def meld_csv(tmp_path: Path) -> Path:
    rows = [
        # out of order on purpose: the loader sorts by Dialogue_ID, Utterance_ID
        [3, "Oh. My. God.", "Rachel", "surprise", "positive", 1, 0, 1, 2, "00:01:00,000", "00:01:01,500"],
        [1, "I donâ€™t knowÂ  what  you mean.", "Chandler", "neutral", "neutral", 0, 0, 8, 21,
         "00:16:16,059", "00:16:21,731"],
        [2, "You must’ve had your “hands” full…", "The Interviewer", "joy", "positive", 0, 1, 8, 21,
         "00:16:21,940", "00:16:23,442"],
        [4, "That I did.", "Chandler", "anger", "negative", 0, 2, 8, 21, "00:16:23,442", "00:16:26,389"],
    ]
    return write_csv(tmp_path / "dev_sent_emo.csv", MELD_HEADER, rows)


# --- records -------------------------------------------------------------------------------------


def test_normalize_text_fixes_mojibake_and_typography() -> None:
    assert normalize_text("I donâ€™t know") == "I don't know"
    assert normalize_text("Itâ€™s â€œgreatâ€\x9d") == 'It\'s "great"'
    assert normalize_text("okÂ  then  ") == "ok then"
    assert normalize_text("cafÃ© ‘time’ — now…") == "café 'time' - now..."
    assert normalize_text("  plain\ttext\n") == "plain text"


def test_dialogue_speakers_and_label_index() -> None:
    utts = tuple(
        UtteranceRecord("d", i, spk, f"t{i}", lab) for i, (spk, lab) in enumerate([("B", "x"), ("A", None), ("B", "zz")])
    )
    d = DialogueRecord("d", utts)
    assert d.speakers() == {"B": 0, "A": 1}
    assert d.speaker_slots() == [0, 1, 0]
    ds = Dataset("toy", "train", ("x", "y"), [d])
    assert [ds.label_index(u.label) for u in utts] == [0, -100, -100]
    assert label_index(("x", "y"), "y") == 1
    assert ds.label_counts() == {"x": 1, "y": 0}
    with pytest.raises(ValueError, match="unique"):
        Dataset("toy", "train", ("x", "x"), [])


# --- MELD ----------------------------------------------------------------------------------------


def test_meld_loader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = meld_csv(tmp_path)
    clips = tmp_path / "clips"
    clips.mkdir()
    (clips / "dia0_utt1.mp4").write_bytes(b"not really a video")
    with caplog.at_level("WARNING"):
        ds = MeldDataset(path, media_dir=clips)
    assert (ds.name, ds.split, ds.labels) == ("meld", "dev", MELD_LABELS)
    assert ds.labels == tuple(sorted(ds.labels))
    dialogues = ds.dialogues()
    assert [d.dialogue_id for d in dialogues] == ["0", "1"]
    d0 = dialogues[0]
    assert [u.order for u in d0.utterances] == [0, 1, 2]
    assert d0.utterances[0].text == "I don't know what you mean."
    assert d0.utterances[1].text == 'You must\'ve had your "hands" full...'
    assert d0.speakers() == {"Chandler": 0, "The Interviewer": 1}
    assert [u.label for u in d0.utterances] == ["neutral", "joy", "anger"]
    assert d0.utterances[0].start_s == pytest.approx(16 * 60 + 16.059)
    assert d0.utterances[0].end_s == pytest.approx(16 * 60 + 21.731)
    # media: the one clip present is set, the others are None, counted and logged once
    assert [u.media for u in d0.utterances] == [None, clips / "dia0_utt1.mp4", None]
    assert ds.missing_media == 3
    assert sum("clips missing" in r.getMessage() for r in caplog.records) == 1
    assert ds.label_index("surprise") == MELD_LABELS.index("surprise")


def test_meld_media_auto_and_none(tmp_path: Path) -> None:
    path = meld_csv(tmp_path)
    assert all(u.media is None for d in MeldDataset(path).dialogues() for u in d.utterances)
    raw = tmp_path / "dev_splits_complete"
    raw.mkdir()
    (raw / "dia1_utt0.mp4").write_bytes(b"x")
    ds = load_dataset("meld", path)
    assert ds.dialogues()[1].utterances[0].media == raw / "dia1_utt0.mp4"
    assert all(u.media is None for d in MeldDataset(path, media_dir=None).dialogues() for u in d.utterances)


def test_meld_errors(tmp_path: Path) -> None:
    bad = write_csv(tmp_path / "x.csv", ["Utterance", "Speaker"], [["hi", "A"]])
    with pytest.raises(ValueError, match="Emotion"):
        MeldDataset(bad)
    assert parse_timestamp("0:00:01,5") == pytest.approx(1.5)
    assert parse_timestamp("") is None


# --- IEMOCAP -------------------------------------------------------------------------------------


def make_iemocap(root: Path) -> Path:
    """Two sessions, one dialog each, in the release layout."""
    spec = {
        1: ("Ses01F_impro01", [
            ("F000", 6.2901, 8.2357, "neu", "Excuse me."),
            ("M000", 9.0, 10.5, "xxx", "Do you have your forms?"),
            ("M001", 11.0, 12.0, "fru", "Yeah."),
            ("F001", 12.5, 14.0, "exc", "Let’s go!"),
        ]),
        2: ("Ses02M_script01_1", [
            ("M000", 1.0, 2.0, "hap", "Great news."),
            ("F000", 2.5, 3.5, "sad", "Oh no."),
            ("F001", 4.0, 5.0, "oth", "Hm."),
        ]),
    }
    for session, (dialog, utts) in spec.items():
        base = root / f"Session{session}"
        (base / "dialog" / "EmoEvaluation").mkdir(parents=True)
        (base / "dialog" / "transcriptions").mkdir(parents=True)
        wav_dir = base / "sentences" / "wav" / dialog
        wav_dir.mkdir(parents=True)
        ev = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        tr = []
        for suffix, start, end, code, text in reversed(utts):  # file order does not matter
            uid = f"{dialog}_{suffix}"
            ev += [f"[{start:.4f} - {end:.4f}]\t{uid}\t{code}\t[2.5000, 2.5000, 2.5000]",
                   f"C-E1:\t{code};\t()", "A-E1:\tval 3; act 2; dom  2;\t()", ""]
            tr.append(f"{uid} [{start:08.4f}-{end:08.4f}]: {text}")
        tr.append(f"{dialog}_MXX0 [020.0000-021.0000]: [LAUGHTER]")
        (base / "dialog" / "EmoEvaluation" / f"{dialog}.txt").write_text("\n".join(ev), encoding="utf-8")
        (base / "dialog" / "transcriptions" / f"{dialog}.txt").write_text("\n".join(tr), encoding="utf-8")
        (wav_dir / f"{dialog}_{utts[0][0]}.wav").write_bytes(b"RIFF")
    (root / "Session1" / "dialog" / "EmoEvaluation" / "Categorical").mkdir()
    return root


def test_iemocap_six_class(tmp_path: Path) -> None:
    ds = IemocapDataset(make_iemocap(tmp_path / "IEMOCAP_full_release"))
    assert ds.labels == IEMOCAP_6_LABELS and ds.name == "iemocap" and ds.split == "sessions12"
    d1, d2 = ds.dialogues()
    assert d1.dialogue_id == "Ses01F_impro01"
    assert [u.utterance_id for u in d1.utterances] == ["Ses01F_impro01_F000", "Ses01F_impro01_M001", "Ses01F_impro01_F001"]
    assert [u.label for u in d1.utterances] == ["neutral", "frustrated", "excited"]
    assert [u.speaker for u in d1.utterances] == ["F", "M", "F"]
    assert [u.order for u in d1.utterances] == [0, 1, 2]
    assert d1.utterances[0].text == "Excuse me." and d1.utterances[2].text == "Let's go!"
    assert d1.utterances[0].start_s == pytest.approx(6.2901) and d1.utterances[0].end_s == pytest.approx(8.2357)
    assert d1.utterances[0].media is not None and d1.utterances[0].media.name == "Ses01F_impro01_F000.wav"
    assert d1.utterances[1].media is None and d1.utterances[0].video is None
    assert [u.label for u in d2.utterances] == ["happy", "sad"]
    assert ds.dropped == {"xxx": 1, "oth": 1}


def test_iemocap_four_class_and_sessions(tmp_path: Path) -> None:
    root = make_iemocap(tmp_path)
    ds = load_dataset("iemocap", root, sessions=[1], classes=4)
    assert ds.labels == IEMOCAP_4_LABELS and ds.split == "sessions1"
    (d1,) = ds.dialogues()
    assert [u.label for u in d1.utterances] == ["neutral", "happy"]  # exc -> happy, fru dropped
    dev = IemocapDataset(root, sessions=[2], split="dev")
    assert dev.split == "dev" and [d.dialogue_id for d in dev.dialogues()] == ["Ses02M_script01_1"]
    labels, mapping = label_scheme(6, merge_excited=True)
    assert "excited" not in labels and mapping["exc"] == "happy"
    with pytest.raises(FileNotFoundError, match="Session3"):
        IemocapDataset(root, sessions=[3])


# --- generic CSV ---------------------------------------------------------------------------------


def test_generic_csv(tmp_path: Path) -> None:
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "a1.wav").write_bytes(b"x")
    path = write_csv(
        tmp_path / "talks.csv",
        ["conv", "turn", "who", "utterance", "mood", "media"],
        [
            ["c1", 1, "ann", "Second", "calm", ""],
            ["c1", 0, "bob", "First", "tense", "media/a1.wav"],
            ["c2", 0, "ann", "Alone", "", "media/missing.wav"],
        ],
    )
    columns = {"dialogue_id": "conv", "order": "turn", "speaker": "who", "text": "utterance", "label": "mood"}
    ds = CsvDataset(path, columns=columns)
    assert ds.labels == ("calm", "tense") and ds.split == "talks" and ds.name == "csv"
    c1, c2 = ds.dialogues()
    assert [u.text for u in c1.utterances] == ["First", "Second"]
    assert c1.utterances[0].media == tmp_path / "media" / "a1.wav"
    assert c2.utterances[0].label is None and c2.utterances[0].media is None and ds.missing_media == 1
    ds2 = load_dataset("csv", path, columns=columns, labels=["tense", "calm", "happy"])
    assert ds2.labels == ("tense", "calm", "happy") and ds2.label_index("calm") == 1
    with pytest.raises(ValueError, match=r"row 2: label 'calm' is not in the label set"):
        CsvDataset(path, columns=columns, labels=["tense"])


def test_generic_csv_errors(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "a.csv", ["dialogue_id", "order", "speaker", "label"], [["d", 0, "x", "l"]])
    with pytest.raises(ValueError, match=r"missing column 'text'"):
        CsvDataset(path)
    path = write_csv(tmp_path / "b.csv", ["dialogue_id", "order", "speaker", "text"], [["d", 0, "x", "hi"], ["d", "two", "y", "yo"]])
    with pytest.raises(ValueError, match=r"row 3: 'order' must be an integer"):
        CsvDataset(path)
    with pytest.raises(ValueError, match="unknown dataset kind"):
        load_dataset("nope", path)


# --- cache ---------------------------------------------------------------------------------------


def toy_features(n: int, seed: int, dialogue_id: str = "", visual: bool = True) -> DialogueFeatures:
    rng = np.random.default_rng(seed)
    present = np.ones((n, 3), bool)
    present[:, 2] = visual
    return DialogueFeatures(
        text=rng.normal(size=(n, 6)).astype(np.float32),
        audio=rng.normal(size=(n, 4)).astype(np.float32),
        visual=rng.normal(size=(n, 3, 5)).astype(np.float32) * visual,
        visual_mask=(rng.random((n, 3)) > 0.5) & visual,
        present=present,
        speaker=rng.integers(0, 2, n),
        labels=np.array([0, -100, 1][:n] + [0] * max(0, n - 3)),
        dialogue_id=dialogue_id,
    )


def assert_same(a: DialogueFeatures, b: DialogueFeatures) -> None:
    for name in ("text", "audio", "visual", "visual_mask", "present", "speaker", "labels"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_cache_round_trip_resume_and_mismatch(tmp_path: Path) -> None:
    spec = {"text": {"name": "t", "dim": 6}, "max_frames": 3, "modalities": ("text", "audio")}
    folder = tmp_path / "cache" / "toy_train"
    cache = FeatureCache(folder, spec, ("a", "b"))
    f1, f2 = toy_features(3, 0), toy_features(5, 1, visual=False)
    cache.put("d/1 weird id", f1)
    cache.put("d2", f2)
    assert cache.has("d2") and "d/1 weird id" in cache and not cache.has("d3")
    assert cache.dims == {"text": 6, "audio": 4, "visual": [3, 5]}
    files = sorted(p.name for p in (folder / "dialogues").iterdir())
    assert len(files) == 2 and all(f.endswith(".safetensors") for f in files)
    assert not any(p.suffix in (".pkl", ".pickle", ".tmp") for p in folder.rglob("*"))
    index = json.loads((folder / "index.json").read_text())
    assert index["dialogues"] == ["d/1 weird id", "d2"] and index["labels"] == ["a", "b"]
    got = cache.get("d/1 weird id")
    assert got.dialogue_id == "d/1 weird id" and got.text.dtype == np.float32 and got.present.dtype == bool
    assert_same(got, f1)
    assert_same(cache.get("d2"), f2)  # visual absent: not stored, rebuilt as zeros

    # reopen (same spec, tuples vs lists do not matter): everything is still there
    again = FeatureCache(folder, json.loads(json.dumps(spec)), ["a", "b"])
    assert again.dialogue_ids() == ["d/1 weird id", "d2"]
    loaded = again.load_all()
    assert [d.dialogue_id for d in loaded] == ["d/1 weird id", "d2"]
    batch = collate(loaded)
    assert batch.text.shape == (2, 5, 6)

    with pytest.raises(CacheMismatchError, match=r"text\.dim: 6 -> 7"):
        FeatureCache(folder, {**spec, "text": {"name": "t", "dim": 7}}, ("a", "b"))
    with pytest.raises(CacheMismatchError, match="labels"):
        FeatureCache(folder, spec, ("b", "a"))
    bad = toy_features(2, 3)
    bad.audio = np.zeros((2, 9), np.float32)
    with pytest.raises(CacheMismatchError, match="dims"):
        again.put("d9", bad)
    with pytest.raises(KeyError):
        again.get("missing")


def test_extract_resumes(tmp_path: Path) -> None:
    dialogues = [
        DialogueRecord(f"d{i}", tuple(UtteranceRecord(f"d{i}", j, "s", "hi", "a") for j in range(2))) for i in range(4)
    ]
    ds = Dataset("toy", "train", ("a", "b"), dialogues)
    cache = FeatureCache(tmp_path / "c", {"v": 1}, ds.labels)
    calls: list[str] = []

    def featurize(record: DialogueRecord) -> DialogueFeatures:
        calls.append(record.dialogue_id)
        if record.dialogue_id == "d2" and len(calls) == 3:
            raise KeyboardInterrupt  # an interrupted run
        return toy_features(len(record), 0)

    with pytest.raises(KeyboardInterrupt):
        extract_dataset(ds, cache, featurize, progress=False)
    assert FeatureCache(tmp_path / "c", {"v": 1}, ds.labels).dialogue_ids() == ["d0", "d1"]
    stats = extract_dataset(ds, FeatureCache(tmp_path / "c", {"v": 1}, ds.labels), featurize, progress=False)
    assert calls == ["d0", "d1", "d2", "d2", "d3"]
    assert (stats.extracted, stats.skipped, stats.utterances) == (2, 2, 4)
    assert stats.present == {"text": 4, "audio": 4, "visual": 4}
    with pytest.raises(ValueError, match="labels"):
        extract_dataset(ds, FeatureCache(tmp_path / "other", {"v": 1}, ("x",)), featurize, progress=False)


# --- featurize -----------------------------------------------------------------------------------


class FakeTextFeaturizer:
    """Stands in for the MiniLM encoder in this unit test: text length in every dim."""

    def __init__(self, dim: int = 384) -> None:
        from emostream.model.features.spec import text_spec

        self.dim = dim
        self.spec = text_spec(weights_id="fake-text-length", dim=dim)
        self.calls: list[list[str]] = []

    def __call__(self, texts: list) -> np.ndarray:
        from emostream.model.features.context import as_input

        texts = [as_input(t).current for t in texts]
        self.calls.append(list(texts))
        return np.array([[len(t)] * self.dim for t in texts], dtype=np.float32)


def test_featurize_dialogue_text_only() -> None:
    utts = (
        UtteranceRecord("d", 0, "Ann", "Hello there", "joy"),
        UtteranceRecord("d", 1, "Bob", "", "neutral"),
        UtteranceRecord("d", 2, "Ann", "Bye", "weird"),
        UtteranceRecord("d", 3, "Cy", "Who?", None),
    )
    fake = FakeTextFeaturizer()
    f = featurize_dialogue(DialogueRecord("d", utts), labels=MELD_LABELS, text=fake)
    assert fake.calls == [["Hello there", "Bye", "Who?"]]  # one batched call, empty text skipped
    assert f.dialogue_id == "d" and len(f) == 4
    assert f.text.shape == (4, 384) and f.audio.shape == (4, 88) and f.visual.shape == (4, 8, 1280)
    assert f.visual_mask.shape == (4, 8) and not f.visual_mask.any()
    np.testing.assert_array_equal(f.text[:, 0], [11, 0, 3, 4])
    np.testing.assert_array_equal(f.present, [[1, 0, 0], [0, 0, 0], [1, 0, 0], [1, 0, 0]])
    assert not f.audio.any() and not f.visual.any()
    np.testing.assert_array_equal(f.speaker, [0, 1, 0, 2])
    np.testing.assert_array_equal(f.labels, [MELD_LABELS.index("joy"), MELD_LABELS.index("neutral"), -100, -100])
    with pytest.raises(ValueError, match="text featurizer gave shape"):
        featurize_dialogue(DialogueRecord("d", utts), labels=MELD_LABELS, text=FakeTextFeaturizer(dim=3))


def write_wav(path: Path, seconds: float, rate: int = 8000, channels: int = 2) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.repeat(tone[:, None], channels, axis=1).tobytes())
    return path


def write_mp4(path: Path, n: int = 10, fps: int = 10) -> Path:
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, np.uint8), format="bgr24")
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def test_media_decoding(tmp_path: Path) -> None:
    pytest.importorskip("av")
    wav = write_wav(tmp_path / "a.wav", 0.5)
    samples = decode_audio(wav)
    assert samples is not None and samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - 8000) < 400 and 0.1 < np.abs(samples).max() < 0.5
    part = decode_audio(wav, 0.1, 0.3)
    assert part is not None and abs(len(part) - 3200) < 400
    video = write_mp4(tmp_path / "v.mp4")
    assert decode_audio(video) is None
    frames = read_frames(video, max_frames=8, max_fps=4.0)  # frames 0.0-0.9 s at <= 4 fps -> 3 frames
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    brightness = [int(f.mean()) for f in frames]
    assert brightness == sorted(brightness)
    # frames from a dialogue-level video over the utterance's span, when its own media has none
    utt = UtteranceRecord("d", 0, "F", "hi", media=wav, video=video, start_s=0.2, end_s=0.6)
    span = utterance_frames(utt, max_frames=8, max_fps=10.0)  # frames at 0.2..0.6 s -> 4 frames
    assert len(span) == 4 and 30 <= span[0].mean() <= 50 and 90 <= span[-1].mean() <= 130
    assert utterance_frames(UtteranceRecord("d", 0, "F", "hi", media=tmp_path / "nope.mp4")) == []


# --- CLI -----------------------------------------------------------------------------------------


def test_extract_cli_text_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = meld_csv(tmp_path)
    fake = FakeTextFeaturizer()
    monkeypatch.setattr(extract_mod, "_featurizer", lambda modality, visual_backbone: fake)
    out = tmp_path / "feats"
    argv = ["--dataset", "meld", "--csv", str(path), "--out", str(out), "--no-progress"]
    assert extract_mod.main(argv) == 0  # no media: audio/visual are dropped, text only
    (folder,) = out.glob("meld_dev-*")
    index = json.loads((folder / "index.json").read_text())
    assert index["dialogues"] == ["0", "1"] and index["labels"] == list(MELD_LABELS)
    assert index["feature_spec"]["audio"] is None and index["feature_spec"]["text"]["dim"] == 384
    assert extract_mod.main(argv) == 0  # resume: nothing left to do
    assert sum(len(c) for c in fake.calls) == 4  # every sentence featurized once, in one batched call; resume adds none
    feats = FeatureCache(folder, index["feature_spec"], MELD_LABELS).load_all()
    assert [len(f) for f in feats] == [3, 1] and feats[0].present[:, 0].all()
    assert extract_mod.main(["--dataset", "iemocap", "--out", str(out)]) != 0
