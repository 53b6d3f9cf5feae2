"""`PipelineConfig`: every option of the live pipeline, one frozen record (the CLI builds it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from emostream.realtime.segmenter import SegmenterConfig


@dataclass(frozen=True)
class PipelineConfig:
    media: str | None = None  # a media file standing in for camera + microphone; None: the devices
    video: str | None = None  # optional separate video file for a wav
    realtime: bool = True  # pace a media file by the wall clock
    loop: bool = False  # replay a media file forever
    camera: int = 0
    checkpoint: str | None = None  # None: the bundled checkpoint
    engine: str = "onnx"  # torch | onnx | tensorrt
    engine_dir: str | None = None  # exported engines (default: export the checkpoint on first use)
    asr_model: str = "whisper-tiny.en"
    segmenter: SegmenterConfig = field(default_factory=lambda: SegmenterConfig(endpoint="turn"))  # turn | silence
    interim: bool = True
    interim_interval_s: float = 1.0
    interim_window_s: float = 6.0  # an interim transcribes at most this much of the utterance's end
    interim_max_backlog_s: float = 0.5  # more audio than this waiting: interims are skipped (and counted)
    speaker_mode: str = "voice"  # voice (embeddings + online clustering) | pitch | single
    face_expert: str | None = "fer-mini-xception"  # None: no face expert (faces only if the model uses them)
    face_weight: float = 0.5  # weight of the face expert in the fused distribution (see realtime/fusion.py)
    face_fps: float = 5.0  # frames a second the detector and the expert look at
    face_detector: str = "mtcnn"  # mtcnn (recall 0.99 on the benchmark set) | haar (0.47; no extra package)
    face_event_hz: float = 4.0  # live `face` events a second at most
    audio_queue: int = 512  # chunks of 32 ms: 16 s of audio
    video_ring: int = 256  # frames kept for utterance spans
    metrics_interval_s: float = 2.0


