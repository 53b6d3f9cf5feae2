"""Assembles the live components from a checkpoint: engine backend, extractors, ASR, session.

`build_components(config)` is what `Pipeline` calls. The engine may be PyTorch, ONNX Runtime or
TensorRT behind one `Engine` contract; its sidecar is checked against the checkpoint's labels,
feature spec and modalities, so a mismatched export is refused with a clear error.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emostream.realtime.session import DialogueSession, Featurizers, State

logger = logging.getLogger(__name__)

LIVE_TEXT_BUCKETS = (64,)  # + the full length: most inputs with 3 past turns fit 64 tokens; each graph costs ~95 MB


class EngineStepModel:
    """The session's `StepModel` over any step engine: stateless and shared by every dialogue (each
    dialogue's state goes in with each step and comes back with its result)."""

    def __init__(self, engine: Any, labels: tuple[str, ...] | None = None, feature_spec: dict[str, Any] | None = None,
                 modalities: tuple[str, ...] | None = None, name: str = "mcncl") -> None:
        from emostream.export.engines import StreamingEngine

        self.streaming = StreamingEngine(engine, labels, feature_spec, modalities)
        self.name = name
        self.labels: tuple[str, ...] = self.streaming.labels
        self.modalities: tuple[str, ...] = self.streaming.modalities
        self.n_parties: int = self.streaming.n_parties
        specs = engine.input_specs  # only the modalities the model uses have inputs
        self.text_dim = int(specs["text"].shape[-1]) if "text" in specs else 1
        self.audio_dim = int(specs["audio"].shape[-1]) if "audio" in specs else 1
        self.max_frames, self.visual_dim = (int(x) for x in specs["visual"].shape[-2:]) if "visual" in specs else (1, 1)
        self._pairs = [(p["input"], p["output"]) for p in self.streaming.sidecar["state"]]

    def init_state(self) -> State:
        return self.streaming.zero_state()

    def step(self, inputs: dict[str, np.ndarray], state: State) -> tuple[np.ndarray, State]:
        feeds = self.streaming.feeds(inputs)
        feeds.update(state)
        out = self.streaming.engine.infer(feeds)
        return out["probs"][0], {i: np.array(out[o], copy=True) for i, o in self._pairs}

    def close(self) -> None:
        self.streaming.close()


def engine_cache_dir(sha256: str) -> Path:
    from emostream.model.features.weights import cache_dir

    return cache_dir() / "engines" / sha256[:16]


def load_step_model(checkpoint: Any, engine: str = "onnx", engine_dir: str | None = None) -> EngineStepModel:
    """A step model for `checkpoint` (a LoadedCheckpoint) on the chosen backend.

    onnx without `engine_dir` exports the step once into the user cache, keyed by the checkpoint's
    hash; tensorrt needs an engine folder built by `emostream export tensorrt`.
    """
    from emostream.export.engines import load_engine

    name = Path(str(checkpoint.path)).stem if checkpoint.path else "mcncl"
    if engine == "torch":
        backend = load_engine("torch", checkpoint)
    elif engine == "onnx":
        folder = Path(engine_dir) if engine_dir else engine_cache_dir(checkpoint.sha256)
        if engine_dir is None and not (folder / "step.onnx").is_file():
            from emostream.export.onnx import export_onnx

            logger.info("exporting the step model to %s (first use of this checkpoint)", folder)
            export_onnx(checkpoint, folder, parts=("step",))
        backend = load_engine("onnx", folder)
    elif engine == "tensorrt":
        if engine_dir is None:
            raise ValueError("--engine tensorrt needs --engine-dir (build it with `emostream export tensorrt`)")
        backend = load_engine("tensorrt", engine_dir)
    else:
        raise ValueError(f"unknown engine {engine!r}: torch, onnx or tensorrt")
    from emostream.export.sidecar import SidecarError

    try:
        return EngineStepModel(backend, checkpoint.labels, checkpoint.feature_spec, checkpoint.modalities, name=name)
    except SidecarError as e:  # name the engine file, not only its sidecar's own name for it
        where = getattr(backend, "path", engine_dir or engine)
        raise SidecarError(f"the engine {where} was exported from another model than the checkpoint "
                           f"{checkpoint.path}: {e}") from e


def build_featurizers_for(checkpoint: Any, engine: str = "torch", engine_dir: str | None = None,
                          only: tuple[str, ...] | None = None) -> Featurizers:
    """The same extractors training used, for the checkpoint's modalities (or `only` these of
    them), checked against the checkpoint's feature spec.

    With engine "onnx" the text encoder runs on ONNX Runtime: the checkpoint's text encoder (its
    fine-tuned patch included) is exported once into the engine folder, one static graph per token
    bucket, and checked against the checkpoint's text spec like the eager one.
    """
    from emostream.model.data.features import build_featurizers, spec_for, text_encoder_of, visual_backbone_of
    from emostream.model.features.spec import FeatureSpec, check_compatible

    wanted = [m for m in checkpoint.modalities if only is None or m in only]
    text = onnx_text_featurizer(checkpoint, engine_dir) if engine == "onnx" and "text" in wanted else None
    if text is None:
        found = build_featurizers(wanted, text_encoder=text_encoder_of(checkpoint),
                                  visual_backbone=visual_backbone_of(checkpoint))
    else:
        found = build_featurizers([m for m in wanted if m != "text"], visual_backbone=visual_backbone_of(checkpoint))
        found["text"] = text
    if checkpoint.feature_spec:
        check_compatible(FeatureSpec.from_dict(checkpoint.feature_spec), spec_for(found), wanted)
    return Featurizers(text=found.get("text"), audio=found.get("audio"), visual=found.get("visual"))


def onnx_text_featurizer(checkpoint: Any, engine_dir: str | None = None) -> Any:
    """The checkpoint's text encoder on ONNX Runtime: from `engine_dir` when it holds text encoder
    graphs (None when it holds none: eager then), else exported once into the user cache beside
    the step (keyed by the checkpoint's hash)."""
    from emostream.export.engines.text import BucketedTextEncoder, EngineTextFeaturizer, text_encoder_files

    folder = Path(engine_dir) if engine_dir else engine_cache_dir(checkpoint.sha256)
    complete = (folder / "text_encoder.onnx").is_file()  # moved in last by the export below
    if complete and engine_dir is None and not _dynamic_batch(folder / "text_encoder.onnx"):
        complete = False  # an older cache, exported at batch 1: again, so that finals are encoded batched
    if not complete:
        if engine_dir is not None and text_encoder_files("onnx", folder):
            complete = True  # a user's export folder: taken as it is (and checked on load)
        elif engine_dir is not None:
            logger.warning("%s has no text_encoder*.onnx: the text encoder runs in eager PyTorch (export it with "
                           "`emostream export onnx --parts step,text_encoder --out %s`)", folder, folder)
            return None
    if not complete:
        import shutil
        import tempfile

        from emostream.export.onnx import export_onnx

        logger.info("exporting the text encoder to %s (first use of this checkpoint)", folder)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".text-export-") as tmp:
            export_onnx(checkpoint, tmp, parts=("text_encoder",), text_buckets=list(LIVE_TEXT_BUCKETS),
                        text_dynamic_batch=True)
            done = sorted(Path(tmp).iterdir(), key=lambda p: p.name == "text_encoder.onnx")  # the full length last
            for item in done:  # all or nothing: the full-length graph (moved last) marks a complete export
                target = folder / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
    encoder = BucketedTextEncoder.load("onnx", folder, lengths=LIVE_TEXT_BUCKETS)
    if encoder.sidecar.get("checkpoint_sha256") not in (None, checkpoint.sha256):
        raise ValueError(f"the text encoder in {folder} was exported from another checkpoint")
    return EngineTextFeaturizer(encoder)


def _dynamic_batch(graph: Path) -> bool:
    """Whether the exported text encoder `graph` takes any batch (its sidecar says so)."""
    from emostream.export.sidecar import read_sidecar

    try:
        return bool(read_sidecar(graph).get("dynamic_batch"))
    except Exception:  # noqa: BLE001 - unreadable: export it again
        return False


def build_face_path(config: Any, labels: tuple[str, ...], modalities: tuple[str, ...]) -> tuple[Any, Any]:
    """(FaceAnalyzer, FaceFusion) for the configured face expert, or (None, None) without one.

    A checkpoint that was itself trained on faces (`visual`) already fuses them: the expert then
    still shows its own distribution and the live face events, but its fusion weight is 0.
    """
    if not config.face_expert:
        return None, None
    from emostream.model.features.face_expert import FaceExpressionExpert
    from emostream.realtime.faces import FaceAnalyzer

    expert = FaceExpressionExpert(config.face_expert, threads=1)
    fusion = face_fusion_for(config, expert.labels, labels, modalities)
    if fusion is None:
        return None, None
    logger.info("face expert %s at %.1f frames/s (%s detector), fusion weight %.2f", config.face_expert,
                config.face_fps, config.face_detector, fusion.weight)
    return FaceAnalyzer(build_face_detector(config.face_detector), expert), fusion


def face_fusion_for(config: Any, expert_labels: tuple[str, ...], labels: tuple[str, ...],
                    modalities: tuple[str, ...]) -> Any:
    """The rule that fuses the face expert's distribution with the model's, or None when the
    expert's labels match none of the model's. A checkpoint trained on faces (`visual`) already
    fuses them: the expert's weight is then 0 (it still shows its own distribution)."""
    from emostream.realtime.fusion import FaceFusion

    weight = 0.0 if "visual" in modalities else config.face_weight
    fusion = FaceFusion.for_labels(tuple(expert_labels), tuple(labels), weight=weight)
    if not fusion.label_map.covered:
        logger.warning("the face expert's labels %s match none of the model's %s: face expert off",
                       expert_labels, labels)
        return None
    return fusion


def build_face_detector(name: str) -> Any:
    """The live face path's detector: MTCNN (default; its weights come with facenet-pytorch) or Haar.

    Without facenet-pytorch installed, MTCNN falls back to Haar with a warning that says what to install.
    """
    from emostream.model.features.visual import FaceDetector

    if name == "haar":
        return FaceDetector()
    if name != "mtcnn":
        raise ValueError(f"unknown face detector {name!r}: mtcnn or haar")
    from emostream.model.features.mtcnn import MTCNNDetector
    from emostream.model.features.weights import MissingWeightsError

    try:
        return MTCNNDetector(min_face_size=40)
    except MissingWeightsError as e:
        logger.warning("%s; using the Haar detector instead (lower recall)", e)
        return FaceDetector()


@dataclass
class SharedModels:
    """The heavy parts, loaded once and shared by every dialogue, each reached through its call
    (`emostream.realtime.calls`): in this process by default, or on model servers (a cluster).
    The clients give the dialogue code its one-item methods: `model` (the step), `featurizers`
    (text through its call; audio and visual, where the checkpoint uses them, in this process),
    `transcriber`, `face_analyzer`, `turn_model`, `embedder`. All are stateless across calls: a
    dialogue's state lives in its own `dialogue_parts()`."""

    config: Any
    calls: dict[str, Any]
    model: Any  # StepClient
    featurizers: Featurizers
    transcriber: Any  # AsrClient
    face_analyzer: Any = None  # FaceClient, or None without a face expert
    face_fusion: Any = None
    turn_model: Any = None  # TurnClient: P(turn complete) of a pause (endpoint "turn"), else None
    embedder: Any = None  # SpeakerClient (speakers told apart by voice), else None

    def dialogue_parts(self) -> dict[str, Any]:
        """A new dialogue's own parts: {"session", "faces", "speakers"} (+ the shared "transcriber", "turn_model")."""
        from emostream.realtime.faces import FaceTracker
        from emostream.realtime.speakers import SpeakerTracker

        faces = FaceTracker(self.face_analyzer, fps=self.config.face_fps) if self.face_analyzer is not None else None
        return {
            "session": DialogueSession(self.model, self.featurizers, face_fusion=self.face_fusion),
            "faces": faces,
            "speakers": SpeakerTracker(self.model.n_parties, self.config.speaker_mode, embedder=self.embedder),
            "transcriber": self.transcriber,
            "turn_model": self.turn_model,
        }


def shared_models_from(config: Any, calls: dict[str, Any], checkpoint: Any = None) -> SharedModels:
    """SharedModels over these calls (local or remote). Audio and visual features, where the model
    uses them, are extracted in this process (`checkpoint` saves loading it again)."""
    from emostream.realtime.calls import (
        AsrClient,
        FaceClient,
        SpeakerClient,
        StepClient,
        TextClient,
        TurnClient,
    )

    model = StepClient(calls["step"])
    local = [m for m in model.modalities if m != "text"]
    featurizers = Featurizers()
    if local:
        if checkpoint is None:
            from emostream.model.checkpoint import load_checkpoint

            checkpoint = load_checkpoint(config.checkpoint)
        featurizers = build_featurizers_for(checkpoint, "torch", only=tuple(local))
    if "text" in model.modalities:
        featurizers = Featurizers(text=TextClient(calls["text"]), audio=featurizers.audio, visual=featurizers.visual)
    face = FaceClient(calls["face"]) if "face" in calls else None
    fusion = face_fusion_for(config, face.labels, model.labels, model.modalities) if face is not None else None
    shared = SharedModels(config, dict(calls), model, featurizers, AsrClient(calls["asr"]),
                          face if fusion is not None else None, fusion,
                          TurnClient(calls["turn"]) if "turn" in calls else None,
                          SpeakerClient(calls["speaker"]) if "speaker" in calls else None)
    logger.info("model %s on %s (%s); labels %s; speakers by %s", model.name, config.engine,
                ",".join(model.modalities), ",".join(model.labels), config.speaker_mode)
    return shared


def load_shared_models(config: Any) -> SharedModels:
    """Load everything heavy for a PipelineConfig into this process, once."""
    from emostream.model.checkpoint import load_checkpoint
    from emostream.realtime.calls import load_call, used

    checkpoint = load_checkpoint(config.checkpoint)
    calls = {kind: load_call(kind, config, checkpoint)
             for kind in ("asr", "turn", "speaker", "text", "face", "step") if used(kind, config, checkpoint.modalities)}
    return shared_models_from(config, calls, checkpoint)


def build_components(config: Any) -> dict[str, Any]:
    """One dialogue's parts on freshly loaded models (what a Pipeline without shared models uses)."""
    return load_shared_models(config).dialogue_parts()
