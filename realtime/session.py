"""`DialogueSession`: the stateful core of the live pipeline. No I/O, no threads.

The session owns the step model and the dialogue's recurrent state. A final prediction advances
the state; an interim prediction is computed from the same state but its new state is thrown
away, so interims never change what comes after. Features are computed only for the modalities
the model was trained on; a modality that is empty (no words, no face) or whose extractor fails
becomes "missing" for that utterance, with a flag on the prediction, never a gap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from emostream.model.config import MODALITIES
from emostream.model.features.context import ContextInput, ContextWindow
from emostream.realtime.fusion import FaceFusion, as_dict
from emostream.realtime.types import SAMPLE_RATE, Features, Prediction, Utterance

logger = logging.getLogger(__name__)

State = dict[str, np.ndarray]


class StepModel(Protocol):
    """What the session needs of a model backend (PyTorch, ONNX Runtime or TensorRT)."""

    labels: tuple[str, ...]
    modalities: tuple[str, ...]
    text_dim: int
    audio_dim: int
    visual_dim: int
    max_frames: int
    n_parties: int

    def init_state(self) -> State: ...

    def step(self, inputs: dict[str, np.ndarray], state: State) -> tuple[np.ndarray, State]:
        """One utterance (batch 1): inputs as in MCNCL.step -> probs (K,), new state."""
        ...


TextFeaturizer = Callable[[list[ContextInput]], np.ndarray]  # encoder inputs -> (n, Dt); may carry `context_turns`
AudioFeaturizer = Callable[[np.ndarray, int], np.ndarray]  # samples, rate -> (Da,)
VisualFeaturizer = Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray]]  # BGR frames -> (F, Dv), (F,)


@dataclass
class Featurizers:
    """The extractors of `emostream.model.features`, one per modality (None where unused)."""

    text: TextFeaturizer | None = None
    audio: AudioFeaturizer | None = None
    visual: VisualFeaturizer | None = None


class DialogueSession:
    """Speaker slots, recurrent state, interim and final predictions, reset.

    With `face_fusion`, a prediction also takes the face expert's expression of the utterance
    (`face`, over the expert's labels, or None when no face was seen) and fuses it with MCN-CL's
    distribution (see `emostream.realtime.fusion`); the prediction's `modalities` then hold both.
    """

    def __init__(self, model: StepModel, featurizers: Featurizers, min_audio_s: float = 0.2,
                 face_fusion: FaceFusion | None = None) -> None:
        self.model = model
        self.featurizers = featurizers
        self.min_audio_s = min_audio_s
        self.face_fusion = face_fusion
        if face_fusion is not None and tuple(face_fusion.label_map.labels) != tuple(model.labels):
            raise ValueError("the face fusion's labels differ from the model's")
        for m in model.modalities:
            if getattr(featurizers, m) is None:
                raise ValueError(f"the model uses {m} but no {m} featurizer was given")
        self.state: State = model.init_state()
        self.n_final = 0
        # the past finals the text encoder sees with each utterance (the same input as in training)
        self.text_context = ContextWindow(int(getattr(featurizers.text, "context_turns", 0)))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.model.labels

    def reset(self) -> None:
        """Forget the dialogue: a fresh state and no known speakers."""
        self.state = self.model.init_state()
        self.n_final = 0
        self.text_context.reset()
        logger.info("dialogue session reset")

    # ------------------------------------------------------------------ features
    def text_input(self, speaker: int, text: str) -> Any:
        """What the text encoder takes for an utterance of `speaker` saying `text` (the utterance in
        its context of past finals), or None when the model uses no text or nothing was said. A
        driver encodes several dialogues' inputs in one call and hands each vector to `predict`."""
        if "text" not in self.model.modalities or not text.strip():
            return None
        return self.text_context.input(speaker, text)

    def features(self, utterance: Utterance, text: str, text_vector: np.ndarray | BaseException | None = None,
                 ) -> tuple[Features, list[str], dict[str, float]]:
        """Features of the modalities the model uses; others are zero and absent. Never raises.

        text_vector: (Dt,) the text encoder's output for `text_input(utterance.speaker, text)`, computed
        by the driver (or the exception that computing it raised); None: encoded here.
        """
        m = self.model
        flags: list[str] = []
        timings: dict[str, float] = {}
        present = dict.fromkeys(MODALITIES, False)
        text_vec = np.zeros(m.text_dim, np.float32)
        audio_vec = np.zeros(m.audio_dim, np.float32)
        visual = np.zeros((m.max_frames, m.visual_dim), np.float32)
        visual_mask = np.zeros(m.max_frames, bool)
        if "text" in m.modalities:
            if not text.strip():
                flags.append("no_text")
            elif (vec := self._run("text", utterance.id, flags, timings, lambda: _checked(
                    self._encoded(text_vector) if text_vector is not None else
                    self.featurizers.text([self.text_context.input(utterance.speaker, text)])[0],
                    (m.text_dim,), "text"))) is not None:
                text_vec, present["text"] = vec, True
        if "audio" in m.modalities:
            if utterance.audio.size < self.min_audio_s * SAMPLE_RATE:
                flags.append("no_audio")
            elif (vec := self._run("audio", utterance.id, flags, timings, lambda: _checked(
                    self.featurizers.audio(utterance.audio, SAMPLE_RATE), (m.audio_dim,), "audio"))) is not None:
                audio_vec, present["audio"] = vec, True
        if "visual" in m.modalities:
            if not utterance.frames:
                flags.append("no_video")
            elif (out := self._run("visual", utterance.id, flags, timings,
                                   lambda: self._visual(utterance))) is not None:
                visual, visual_mask = out
                present["visual"] = bool(visual_mask.any())
                if not present["visual"]:
                    flags.append("no_face")
        features = Features(
            utterance_id=utterance.id, text=text_vec, audio=audio_vec, visual=visual, visual_mask=visual_mask,
            present=tuple(present[k] for k in MODALITIES), speaker=utterance.speaker,
        )
        return features, flags, timings

    def _run(self, modality: str, utterance_id: int, flags: list[str], timings: dict[str, float],
             extract: Callable[[], Any]) -> Any:
        """One checked extractor call, timed; a failure (an exception, a wrong shape, NaN) becomes a
        `<modality>_failed` flag and None instead of an exception."""
        t0 = time.perf_counter()
        try:
            out = extract()
        except Exception as e:  # noqa: BLE001 - a failing extractor must not stop the dialogue
            logger.warning("%s features failed for utterance %s: %s", modality, utterance_id, e)
            flags.append(f"{modality}_failed")
            out = None
        timings[f"{modality}_ms"] = _ms(t0)
        return out

    @staticmethod
    def _encoded(text_vector: np.ndarray | BaseException) -> np.ndarray:
        if isinstance(text_vector, BaseException):
            raise text_vector
        return text_vector

    def _visual(self, utterance: Utterance) -> tuple[np.ndarray, np.ndarray]:
        m = self.model
        feats, mask = self.featurizers.visual([f.image for f in utterance.frames])
        return _checked(feats, (m.max_frames, m.visual_dim), "visual"), np.asarray(mask, dtype=bool)

    # ------------------------------------------------------------------ predictions
    def predict(self, utterance: Utterance, text: str, final: bool,
                extra_flags: Sequence[str] = (), timings_ms: dict[str, float] | None = None,
                face: np.ndarray | None = None, text_vector: np.ndarray | BaseException | None = None,
                ) -> Prediction:
        """Predict one utterance. Only a final prediction advances the dialogue state.

        face: (E,) the face expert's expression over the utterance (its own labels), or None.
        text_vector: the utterance's text features when the driver encoded them (see `features`).
        """
        t0 = time.perf_counter()
        features, flags, timings = self.features(utterance, text, text_vector)
        if not any(features.present[MODALITIES.index(m)] for m in self.model.modalities):
            flags.append("nothing_present")
        t1 = time.perf_counter()
        try:
            probs, new_state = self.model.step(step_inputs(features, utterance.speaker % self.model.n_parties),
                                               self.state)
        except Exception as e:  # noqa: BLE001 - a failing engine call must not stop the dialogue
            logger.warning("the model step failed for utterance %s: %s", utterance.id, e)
            flags.append("model_failed")
            probs, new_state = None, None
        timings["model_ms"] = _ms(t1)
        timings["features_ms"] = round((t1 - t0) * 1000, 3)
        if final and new_state is not None:  # a failed step leaves the dialogue state as it was
            self.state = new_state
            self.n_final += 1
        if final:  # what was said is context for the next turns, whatever the model made of it
            self.text_context.push(utterance.speaker, text)
        n_labels = len(self.labels)
        model_probs = None if probs is None else np.asarray(probs, dtype=np.float64).reshape(-1)  # (K,)
        modalities: dict[str, dict[str, float] | None] = {
            "text": None if model_probs is None else as_dict(self.labels, model_probs)}
        fused = model_probs if model_probs is not None else np.full(n_labels, 1.0 / n_labels)
        if self.face_fusion is not None:
            if face is None:
                flags.append("no_face")
                modalities["face"] = None
            else:
                face_probs = self.face_fusion.label_map.distribution(face)
                modalities["face"] = as_dict(self.labels, face_probs)
                fused = self.face_fusion.fuse(model_probs, face) if model_probs is not None else face_probs
        best = int(fused.argmax())
        return Prediction(
            utterance_id=utterance.id, final=final, label=self.labels[best],
            probs=as_dict(self.labels, fused), text=text, speaker=utterance.speaker,
            t_start_ns=utterance.t_start_ns, t_end_ns=utterance.t_end_ns,
            timings_ms={**(timings_ms or {}), **timings}, flags=tuple(dict.fromkeys(flags + list(extra_flags))),
            modalities=modalities,
        )


def step_inputs(features: Features, speaker_slot: int) -> dict[str, np.ndarray]:
    """Batch-1 step inputs in the names and dtypes every engine takes."""
    return {
        "text": features.text[None].astype(np.float32),
        "audio": features.audio[None].astype(np.float32),
        "visual": features.visual[None].astype(np.float32),
        "visual_mask": features.visual_mask[None].astype(np.float32),
        "present": np.asarray(features.present, dtype=np.float32)[None],
        "speaker": np.asarray([speaker_slot], dtype=np.int64),
    }


def _checked(x: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.shape != shape:
        raise ValueError(f"{name} features have shape {arr.shape}, the model expects {shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} features contain NaN or infinity")
    return arr


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 3)
