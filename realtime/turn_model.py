"""End of turn from the speech itself: Smart Turn v3.2 (pipecat, BSD-2-Clause) on ONNX Runtime.

The model ships in the `pipecat-ai` wheel as
`pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx` (8.7 MB, int8): install it with
`pip install --no-deps pipecat-ai` (its framework dependencies are not needed; the file is found
without importing pipecat). It is a Whisper-tiny encoder with a classifier: input `input_features`
(B, 80, 800), the log-mel of the last 8 s of the turn (left-padded with zeros), output `logits`
(B, 1), already a sigmoid: P(the turn is complete).

`whisper_features` computes that input in numpy exactly as pipecat's `_whisper_features` (itself
transformers' `WhisperFeatureExtractor(chunk_length=8)` with `do_normalize=True`): the waveform
normalised to zero mean and unit variance, a centred STFT (n_fft 400, periodic Hann, hop 160,
reflect padding), power, 80 Slaney mel bands, log10 (floor 1e-10), the last frame dropped, clipped to
max - 8, then (x + 4) / 4.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from typing import ClassVar

import numpy as np

from emostream.export.engines.onnx_engine import cpu_session
from emostream.realtime.types import SAMPLE_RATE
from emostream.realtime.voice_embedding import mel_filterbank

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "pipecat"
MODEL_FILE = os.path.join("audio", "turn", "smart_turn", "data", "smart-turn-v3.2-cpu.onnx")
INPUT_SECONDS = 8
INPUT_SAMPLES = INPUT_SECONDS * SAMPLE_RATE  # 128_000
N_FFT = 400
HOP = 160
N_MELS = 80
_FB = mel_filterbank(SAMPLE_RATE, N_FFT, N_MELS).astype(np.float64)  # (80, 201)
_HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic, float64


def last_seconds(audio: np.ndarray, seconds: int = INPUT_SECONDS) -> np.ndarray:
    """The last `seconds` of (n,) audio, left-padded with zeros to exactly that length."""
    n = seconds * SAMPLE_RATE
    x = np.asarray(audio, dtype=np.float32).reshape(-1)[-n:]
    return np.pad(x, (n - x.size, 0)) if x.size < n else x


def whisper_features(audio: np.ndarray) -> np.ndarray:
    """(128000,) float32 (8 s at 16 kHz) -> (80, 800) float32 Smart Turn input."""
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if x.size != INPUT_SAMPLES:
        raise ValueError(f"expected {INPUT_SAMPLES} samples (use last_seconds), got {x.size}")
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]  # (801, 400)
    spec = np.fft.rfft(frames * _HANN, axis=-1)  # (801, 201)
    mel = _FB @ (np.abs(spec) ** 2).T  # (80, 801)
    log_spec = np.log10(np.maximum(mel, 1e-10))[:, :-1]  # (80, 800)
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def default_model_path() -> str:
    """Smart Turn v3.2 inside the installed pipecat-ai wheel, found without importing pipecat."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("end-of-turn detection needs Smart Turn v3.2 from the pipecat-ai wheel: "
                           "pip install --no-deps pipecat-ai (or use --endpoint silence)")
    path = os.path.join(next(iter(spec.submodule_search_locations)), MODEL_FILE)
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing: pipecat-ai >= 0.0.90 ships smart-turn-v3.2-cpu.onnx "
                           "(pip install --no-deps -U pipecat-ai)")
    return path


class SmartTurn:
    """P(turn complete) of the speech so far. Stateless and thread-safe; share it with `shared()`."""

    name = "smart-turn-v3.2"
    _cache: ClassVar[dict[str, SmartTurn]] = {}
    _cache_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | None = None, threads: int = 1) -> None:
        self.path = path or default_model_path()
        self._session = cpu_session(self.path, threads)
        names = [i.name for i in self._session.get_inputs()]
        if names != ["input_features"]:
            raise RuntimeError(f"{self.path} is not a Smart Turn v3 model (inputs {names})")
        logger.info("end-of-turn model %s loaded from %s", self.name, self.path)

    @classmethod
    def shared(cls, path: str | None = None) -> SmartTurn:
        key = path or default_model_path()
        with cls._cache_lock:
            if key not in cls._cache:
                cls._cache[key] = cls(key, threads=min(2, os.cpu_count() or 1))
            return cls._cache[key]

    def run(self, features: np.ndarray) -> np.ndarray:
        """(B, 80, 800) -> (B,) P(turn complete)."""
        out = self._session.run(None, {"input_features": np.ascontiguousarray(features, np.float32)})[0]
        return np.asarray(out, np.float32).reshape(-1)

    def __call__(self, audio: np.ndarray) -> float:
        """(n,) float32 16 kHz, the turn up to now (its last 8 s are used) -> P(turn complete)."""
        return float(self.run(whisper_features(last_seconds(audio))[None])[0])
