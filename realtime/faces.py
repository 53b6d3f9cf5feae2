"""Faces in the live path: detector + expression expert at a bounded frame rate. No I/O, no threads.

`FaceAnalyzer` looks at one frame: every face the detector finds (largest first, at most
`max_faces`), the expert's expression per face, and a small mouth patch per face for telling
who speaks. `FaceTracker` decides which frames are looked at and keeps what was seen:

- Frames are analysed on a fixed time grid: the first frame of every 1/fps slot. Whoever calls
  `catch_up` (the face thread between utterances, the worker before a final) analyses the
  pending frames in order, so the same frames are analysed whatever the threads' timing.
- Observations live in a bounded ring (`keep`); a frame with no face is an observation too.
- `expression(t0, t1)` aggregates an utterance's span: the mean of the chosen face's expert
  distribution over the span's frames that had a face; frames without one are left out, and a
  span with no face gives None.

Which face joins an utterance when several are visible: faces are linked across observations by
box overlap into tracks; the track whose mouth patch changes most while the utterance lasts is
the speaker's face, when its mean mouth motion is clearly (`speaking_margin` times) above every
other track's. Otherwise, and with one face, the largest face of each frame is used.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from emostream.realtime.fusion import mean_distribution
from emostream.realtime.types import VideoFrame

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # (x, y, w, h) in pixels
MOUTH_SIZE = (24, 12)  # (width, height) of the normalised mouth patch


class Detector(Protocol):
    def detect_all(self, image_bgr: np.ndarray) -> list[Box]: ...


class Expert(Protocol):
    labels: tuple[str, ...]

    def preprocess(self, image_bgr: np.ndarray, box: Box) -> np.ndarray:
        """One face -> the expert's input, e.g. (64, 64) float32."""
        ...

    def predict(self, crops: np.ndarray) -> np.ndarray:
        """(B, ...) crops -> (B, E) probabilities."""
        ...


@dataclass(frozen=True, slots=True, eq=False)
class FaceObservation:
    """What one analysed frame showed. probs: (n_faces, E); mouths: one (12, 24) patch per face."""

    t_ns: int
    frame_index: int
    frame_size: tuple[int, int]  # (width, height)
    boxes: tuple[Box, ...]  # largest first
    probs: np.ndarray
    mouths: tuple[np.ndarray, ...]

    @property
    def n_faces(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True, slots=True, eq=False)
class FaceSpan:
    """An utterance's face expression. probs: (E,) over the expert's labels, None without a face."""

    probs: np.ndarray | None
    n_frames: int  # analysed frames in the span
    n_with_face: int
    policy: str  # "largest" or "speaking"


def mouth_patch(image_bgr: np.ndarray, box: Box) -> np.ndarray:
    """The lower middle of a face box, grey, resized and standardised -> (12, 24) float32."""
    import cv2

    x, y, w, h = box
    x0, x1 = x + w // 4, x + 3 * w // 4
    y0, y1 = y + (13 * h) // 20, y + (19 * h) // 20
    region = image_bgr[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)]
    if region.size == 0:
        return np.zeros(MOUTH_SIZE[::-1], np.float32)
    grey = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_BGR2GRAY).astype(np.float32)
    patch = cv2.resize(grey, MOUTH_SIZE, interpolation=cv2.INTER_AREA)  # (12, 24)
    return ((patch - patch.mean()) / (patch.std() + 8.0)).astype(np.float32)


def iou(a: Box, b: Box) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class FaceAnalyzer:
    """Detector + expert on one frame (all of its faces, up to `max_faces`, in one expert batch)."""

    def __init__(self, detector: Detector, expert: Expert, max_faces: int = 3) -> None:
        self.detector = detector
        self.expert = expert
        self.max_faces = max_faces

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.expert.labels)

    def analyze(self, frame: VideoFrame) -> FaceObservation:
        return self.analyze_batch([frame])[0]

    def analyze_batch(self, frames: Sequence[VideoFrame]) -> list[FaceObservation]:
        """Frames (of any dialogues): the detector on each, the expert on every face of all of
        them in one batch."""
        boxes = [sorted(self.detector.detect_all(f.image), key=lambda b: b[2] * b[3], reverse=True)[: self.max_faces]
                 for f in frames]
        crops = [self.expert.preprocess(f.image, b) for f, bs in zip(frames, boxes) for b in bs]
        probs = (np.asarray(self.expert.predict(np.stack(crops)), dtype=np.float32) if crops  # (n, E)
                 else np.zeros((0, len(self.labels)), np.float32))
        out, at = [], 0
        for f, bs in zip(frames, boxes):
            h, w = f.image.shape[:2]
            out.append(FaceObservation(f.t_ns, f.index, (w, h), tuple(tuple(int(v) for v in b) for b in bs),
                                       probs[at:at + len(bs)], tuple(mouth_patch(f.image, b) for b in bs)))
            at += len(bs)
        return out


class FaceTracker:
    """Grid-sampled analysis, a bounded ring of observations, and per-span aggregation. Thread-safe."""

    def __init__(self, analyzer: FaceAnalyzer, fps: float = 5.0, keep: int = 600, speaking_margin: float = 1.5) -> None:
        if not fps > 0:
            raise ValueError(f"face fps must be > 0, got {fps}")
        self.analyzer = analyzer
        self.period_ns = int(1e9 / fps)
        self.speaking_margin = speaking_margin
        self._seen: collections.deque[FaceObservation] = collections.deque(maxlen=keep)
        self._last_slot: int | None = None
        self._last_t_ns: int | None = None
        self._lock = threading.Lock()
        self.analyzed = 0
        self.failures = 0

    @property
    def labels(self) -> tuple[str, ...]:
        return self.analyzer.labels

    def reset(self) -> None:
        with self._lock:
            self._seen.clear()
            self._last_slot = None
            self._last_t_ns = None

    def catch_up(self, frames: Iterable[VideoFrame]) -> int:
        """Analyse the frames (in time order) that open a new grid slot; returns how many were."""
        done = 0
        with self._lock:
            for frame in frames:
                if self._last_t_ns is not None and frame.t_ns <= self._last_t_ns:
                    continue  # already passed
                slot = frame.t_ns // self.period_ns
                self._last_t_ns = frame.t_ns
                if slot == self._last_slot:
                    continue
                self._last_slot = slot
                try:
                    self._seen.append(self.analyzer.analyze(frame))
                except Exception as e:  # noqa: BLE001 - one bad frame must not stop the face path
                    self.failures += 1
                    logger.warning("face analysis failed on frame %d: %s", frame.index, e)
                    continue
                done += 1
        self.analyzed += done
        return done

    def latest(self) -> FaceObservation | None:
        with self._lock:
            return self._seen[-1] if self._seen else None

    def between(self, t0_ns: int, t1_ns: int) -> list[FaceObservation]:
        with self._lock:
            return [o for o in self._seen if t0_ns <= o.t_ns < t1_ns]

    def expression(self, t0_ns: int, t1_ns: int) -> FaceSpan:
        """The span's expression: the chosen face's mean distribution over frames with a face."""
        seen = self.between(t0_ns, t1_ns)
        with_face = [o for o in seen if o.n_faces]
        if not with_face:
            return FaceSpan(None, len(seen), 0, "largest")
        chosen, policy = self._speaking_face(with_face)
        rows = np.stack([o.probs[i] for o, i in zip(with_face, chosen)])  # (F, E)
        return FaceSpan(mean_distribution(rows), len(seen), len(with_face), policy)

    def _speaking_face(self, seen: Sequence[FaceObservation]) -> tuple[list[int], str]:
        """Per observation, the index of the face to use, and the policy that chose it."""
        largest = [0] * len(seen)
        if max(o.n_faces for o in seen) < 2:
            return largest, "largest"
        # link faces into tracks by box overlap with the previous observation
        track_of: list[list[int]] = []  # per observation: track id of each face
        last_box: list[Box] = []
        last_mouth: list[np.ndarray] = []
        motion: list[list[float]] = []
        for o in seen:
            ids: list[int] = []
            taken: set[int] = set()
            for box, mouth in zip(o.boxes, o.mouths):
                best, best_iou = None, 0.3
                for t, prev in enumerate(last_box):
                    if t not in taken and (v := iou(box, prev)) > best_iou:
                        best, best_iou = t, v
                if best is None:
                    best = len(last_box)
                    last_box.append(box)
                    last_mouth.append(mouth)
                    motion.append([])
                else:
                    motion[best].append(float(np.abs(mouth - last_mouth[best]).mean()))
                    last_box[best], last_mouth[best] = box, mouth
                taken.add(best)
                ids.append(best)
            track_of.append(ids)
        means = [float(np.mean(m)) if len(m) >= 2 else 0.0 for m in motion]
        order = sorted(range(len(means)), key=means.__getitem__, reverse=True)
        if len(order) < 2 or means[order[0]] <= self.speaking_margin * means[order[1]]:
            return largest, "largest"
        speaker = order[0]
        chosen = [ids.index(speaker) if speaker in ids else 0 for ids in track_of]
        return chosen, "speaking"
