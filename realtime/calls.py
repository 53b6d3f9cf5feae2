"""The heavy models behind one call interface: each takes a batch and returns one result per item.

A `ModelCall` is `call(items) -> results` (same length, same order) plus `describe()`, what a
dialogue needs to know of the model without running it (labels, sizes, names). Every dialogue
reaches every heavy model through one:

| kind      | item                         | result                              |
|-----------|------------------------------|-------------------------------------|
| `asr`     | `AsrItem(audio, utterance_id)` | `Transcript`                      |
| `turn`    | (n,) float32 audio, the turn so far | P(turn complete), float        |
| `speaker` | `SpeakerItem` (windows or a whole utterance) | (k, 256) vectors, or `Embedding` / None |
| `text`    | str, the utterance in context | (D,) float32 text features          |
| `face`    | `VideoFrame`                  | `FaceObservation`                   |
| `step`    | `StepItem(inputs, state)`     | `StepResult(probs, state)`: the state travels with the call |

In one process the calls are `LocalCall`s over the loaded models (`load_calls`); on a cluster
they are Ray Serve deployment handles (`emostream.realtime.cluster`), batched across sessions by
`@serve.batch`. The clients below give the dialogue code the one-item methods it calls
(`transcribe`, `embed_windows`, `analyze`, `step`, ...), each a batch of one through the call, so
the dialogue code is the same in both.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from emostream.realtime.types import Transcript, VideoFrame

logger = logging.getLogger(__name__)

KINDS = ("asr", "turn", "speaker", "text", "face", "step")


class ModelCall(Protocol):
    """One model: a batch of items in, one result per item out (in order)."""

    kind: str

    def __call__(self, items: Sequence[Any]) -> list[Any]: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True, eq=False)
class AsrItem:
    audio: np.ndarray  # (n,) float32 16 kHz
    utterance_id: int


@dataclass(frozen=True, slots=True, eq=False)
class SpeakerItem:
    """Either `windows` (clips of at most the embedder's window, each (n,) float32) or `audio` (a
    whole utterance, (n,) float32)."""

    windows: tuple[np.ndarray, ...] | None = None
    audio: np.ndarray | None = None


@dataclass(frozen=True, slots=True, eq=False)
class StepItem:
    inputs: dict[str, np.ndarray]
    state: dict[str, np.ndarray]


@dataclass(frozen=True, slots=True, eq=False)
class StepResult:
    probs: np.ndarray  # (C,)
    state: dict[str, np.ndarray]


@dataclass(eq=False)
class LocalCall:
    """A model loaded in this process, behind the call interface. `run` takes the whole batch."""

    kind: str
    run: Callable[[Sequence[Any]], list[Any]]
    info: dict[str, Any]
    model: Any = None  # what was loaded (for tests and close)

    def __call__(self, items: Sequence[Any]) -> list[Any]:
        if not items:
            return []
        results = self.run(items)
        if len(results) != len(items):
            raise RuntimeError(f"the {self.kind} model gave {len(results)} results for {len(items)} items")
        return results

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


# ------------------------------------------------------------------------------ loading, per kind
def load_call(kind: str, config: Any, checkpoint: Any = None) -> LocalCall:
    """Load one model of a PipelineConfig and put it behind the call interface. `checkpoint` (a
    LoadedCheckpoint) saves loading it again for the kinds that need it (text, face, step)."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}: one of {KINDS}")
    if kind in ("text", "face", "step") and checkpoint is None:
        from emostream.model.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(config.checkpoint)
    return _LOADERS[kind](config, checkpoint)


def load_calls(config: Any, kinds: Sequence[str] | None = None) -> dict[str, LocalCall]:
    """Every model a dialogue on `config` needs (or `kinds` of them), loaded once in this process.
    Kinds the configuration does not use are left out (`turn` with the silence endpoint, `speaker`
    unless speakers are told apart by voice, `face` without a face expert, `text` for a model
    without text)."""
    from emostream.model.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(config.checkpoint)
    wanted = [k for k in (kinds or KINDS) if used(k, config, checkpoint.modalities)]
    return {k: load_call(k, config, checkpoint) for k in wanted}


def used(kind: str, config: Any, modalities: Sequence[str]) -> bool:
    """Whether a dialogue on `config` (a model of these modalities) calls this kind of model."""
    return {
        "turn": config.segmenter.endpoint == "turn",
        "speaker": config.speaker_mode == "voice",
        "face": bool(config.face_expert),
        "text": "text" in modalities,
    }.get(kind, True)


def _asr(config: Any, _checkpoint: Any) -> LocalCall:
    from emostream.realtime.asr import AsrConfig, Transcriber

    transcriber = Transcriber(AsrConfig(model=config.asr_model))

    def run(items: Sequence[AsrItem]) -> list[Transcript]:
        return transcriber.transcribe_batch([i.audio for i in items], [i.utterance_id for i in items])

    return LocalCall("asr", run, {"name": config.asr_model}, transcriber)


def _turn(_config: Any, _checkpoint: Any) -> LocalCall:
    from emostream.realtime.turn_model import SmartTurn, last_seconds, whisper_features

    model = SmartTurn.shared()

    def run(items: Sequence[np.ndarray]) -> list[float]:
        features = np.stack([whisper_features(last_seconds(a)) for a in items])  # (B, 80, 800)
        return [float(p) for p in model.run(features)]

    return LocalCall("turn", run, {"name": model.name}, model)


def _speaker(config: Any, _checkpoint: Any) -> LocalCall:
    from emostream.realtime.voice_embedding import shared_embedder

    embedder = shared_embedder()

    def run(items: Sequence[SpeakerItem]) -> list[Any]:
        results: list[Any] = [None] * len(items)
        clips = [(i, c) for i, item in enumerate(items) if item.windows is not None for c in item.windows]
        if clips:  # every dialogue's windows in one embedder call
            vectors = embedder.embed_windows([c for _, c in clips])  # (k, 256)
            owners = np.array([i for i, _ in clips])
            for i, item in enumerate(items):
                if item.windows is not None:
                    results[i] = vectors[owners == i]
        for i, item in enumerate(items):
            if item.windows is None:
                results[i] = embedder.embed_full(item.audio)
        return results

    return LocalCall("speaker", run, {"name": embedder.name, "window_s": embedder.window_s}, embedder)


def _text(config: Any, checkpoint: Any) -> LocalCall:
    from emostream.realtime.runtime import build_featurizers_for

    text = build_featurizers_for(checkpoint, config.engine, config.engine_dir, only=("text",)).text

    def run(items: Sequence[str]) -> list[np.ndarray]:
        feats = np.asarray(text(list(items)), dtype=np.float32)  # (B, D)
        return list(feats)

    info = {"context_turns": int(getattr(text, "context_turns", 0)), "dim": int(getattr(text, "dim", 0))}
    return LocalCall("text", run, info, text)


def _face(config: Any, checkpoint: Any) -> LocalCall:
    from emostream.realtime.runtime import build_face_path

    analyzer, _fusion = build_face_path(config, checkpoint.labels, checkpoint.modalities)
    if analyzer is None:
        raise ValueError(f"the face expert {config.face_expert!r} covers none of the model's labels")

    def run(items: Sequence[VideoFrame]) -> list[Any]:
        return analyzer.analyze_batch(items)

    return LocalCall("face", run, {"labels": list(analyzer.labels)}, analyzer)


def _step(config: Any, checkpoint: Any) -> LocalCall:
    from emostream.realtime.runtime import load_step_model

    model = load_step_model(checkpoint, config.engine, config.engine_dir)

    def run(items: Sequence[StepItem]) -> list[StepResult]:
        return [StepResult(*model.step(i.inputs, i.state)) for i in items]  # static shapes: one at a time

    info = {"name": model.name, "labels": list(model.labels), "modalities": list(model.modalities),
            "n_parties": model.n_parties, "text_dim": model.text_dim, "audio_dim": model.audio_dim,
            "max_frames": model.max_frames, "visual_dim": model.visual_dim, "zero_state": model.init_state()}
    return LocalCall("step", run, info, model)


_LOADERS: dict[str, Callable[[Any, Any], LocalCall]] = {
    "asr": _asr, "turn": _turn, "speaker": _speaker, "text": _text, "face": _face, "step": _step,
}


# ------------------------------------------------------------------------------ clients
class AsrClient:
    """What the dialogue code calls for speech recognition, over an `asr` call."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        self.name = str(call.describe().get("name", "asr"))

    def transcribe(self, audio: np.ndarray, utterance_id: int) -> Transcript:
        return self.call([AsrItem(np.asarray(audio, np.float32).reshape(-1), utterance_id)])[0]

    def transcribe_batch(self, audios: Sequence[np.ndarray], utterance_ids: Sequence[int]) -> list[Transcript]:
        return self.call([AsrItem(np.asarray(a, np.float32).reshape(-1), u) for a, u in zip(audios, utterance_ids)])

    def start(self, event: Any) -> Any:
        """A not-yet-run early transcription of an EndpointPending's audio."""
        from emostream.realtime.asr import PendingTranscript

        return PendingTranscript(transcriber=self, segment=event.segment, start_sample=event.start_sample,
                                 end_sample=event.end_sample, audio=event.audio)


class TurnClient:
    """P(turn complete) of the turn so far, over a `turn` call."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        self.name = str(call.describe().get("name", "turn"))

    def __call__(self, audio: np.ndarray) -> float:
        return float(self.call([np.asarray(audio, np.float32).reshape(-1)])[0])


class SpeakerClient:
    """The speaker tracker's `Embedder`, over a `speaker` call."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        info = call.describe()
        self.name = str(info.get("name", "speaker"))
        self.window_s = float(info.get("window_s", 1.6))

    def embed_windows(self, windows: list[np.ndarray]) -> np.ndarray:
        return np.asarray(self.call([SpeakerItem(windows=tuple(windows))])[0], np.float32)  # (len, 256)

    def embed_full(self, audio: np.ndarray) -> Any:
        return self.call([SpeakerItem(audio=np.asarray(audio, np.float32).reshape(-1))])[0]


class TextClient:
    """The text featurizer of a session, over a `text` call: a list of inputs -> (B, D)."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        info = call.describe()
        self.context_turns = int(info.get("context_turns", 0))
        self.dim = int(info.get("dim", 0))

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack(self.call(list(texts)))  # (B, D)


class FaceClient:
    """The face analyzer (detector + expert on one frame), over a `face` call."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        self.labels: tuple[str, ...] = tuple(call.describe()["labels"])

    def analyze(self, frame: VideoFrame) -> Any:
        return self.call([frame])[0]


class StepClient:
    """The session's stateless `StepModel`, over a `step` call: the dialogue's state goes in with
    each call and comes back with the result."""

    def __init__(self, call: ModelCall) -> None:
        self.call = call
        info = call.describe()
        self.name = str(info["name"])
        self.labels: tuple[str, ...] = tuple(info["labels"])
        self.modalities: tuple[str, ...] = tuple(info["modalities"])
        self.n_parties = int(info["n_parties"])
        self.text_dim, self.audio_dim = int(info["text_dim"]), int(info["audio_dim"])
        self.max_frames, self.visual_dim = int(info["max_frames"]), int(info["visual_dim"])
        self._zero = info["zero_state"]

    def init_state(self) -> dict[str, np.ndarray]:
        return {k: np.array(v, copy=True) for k, v in self._zero.items()}

    def step(self, inputs: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        result = self.call([StepItem(inputs, state)])[0]
        return result.probs, result.state
