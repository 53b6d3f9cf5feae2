"""The face path's core (`realtime/faces.py`): grid sampling, span aggregation with face-less frames
masked out, the speaking face among several, bounds and failures.

`FakeDetector` and `FakeExpert` are fakes used only here, to test the code around the real
detector and expert (which tests/test_face_expert.py tests on real photographs)."""

from __future__ import annotations

import numpy as np

from emostream.realtime.faces import FaceAnalyzer, FaceTracker
from emostream.realtime.types import VideoFrame

LABELS = ("angry", "happy", "neutral")
NS = 1_000_000_000


class FakeDetector:
    """Boxes per frame index, from a function."""

    def __init__(self, boxes_of) -> None:  # noqa: ANN001
        self.boxes_of = boxes_of
        self.calls = 0

    def detect_all(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        self.calls += 1
        return list(self.boxes_of(int(image[0, 0, 0])))


class FakeExpert:
    """"happy" for faces left of x=100, "angry" to the right; the crop is the box's x."""

    labels = LABELS

    def preprocess(self, image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
        return np.full((4, 4), box[0], np.float32)

    def predict(self, crops: np.ndarray) -> np.ndarray:
        return np.array([[0.1, 0.8, 0.1] if c[0, 0] < 100 else [0.8, 0.1, 0.1] for c in crops], np.float32)


def frame(i: int, fps: float = 30.0, size: tuple[int, int] = (240, 320)) -> VideoFrame:
    img = np.zeros((*size, 3), np.uint8)
    img[0, 0, 0] = i % 256  # the fake detector reads the frame number here
    return VideoFrame(image=img, t_ns=int(i * NS / fps), index=i)


def test_frames_are_analysed_on_a_fixed_grid_once() -> None:
    det = FakeDetector(lambda i: [(10, 10, 50, 50)])
    tracker = FaceTracker(FaceAnalyzer(det, FakeExpert()), fps=5.0)
    frames = [frame(i) for i in range(60)]  # 2 s at 30 fps
    assert tracker.catch_up(frames[:31]) == 6  # slots 0..5 (t = 0, 0.2, ... 1.0 s)
    assert tracker.catch_up(frames) == 4  # only the new slots; nothing analysed twice
    assert det.calls == 10


def test_span_expression_masks_faceless_frames() -> None:
    det = FakeDetector(lambda i: [(10, 10, 50, 50)] if (i // 6) % 2 == 0 else [])  # a face every other slot
    tracker = FaceTracker(FaceAnalyzer(det, FakeExpert()), fps=5.0)
    tracker.catch_up([frame(i) for i in range(60)])
    span = tracker.expression(0, 2 * NS)
    assert (span.n_frames, span.n_with_face) == (10, 5)
    np.testing.assert_allclose(span.probs, [0.1, 0.8, 0.1], atol=1e-6)  # the face frames only, not diluted
    none = FaceTracker(FaceAnalyzer(FakeDetector(lambda i: []), FakeExpert()), fps=5.0)
    none.catch_up([frame(i) for i in range(30)])
    assert none.expression(0, NS).probs is None and none.expression(0, NS).n_frames == 5


def test_the_face_whose_mouth_moves_joins_the_utterance() -> None:
    big, small = (20, 40, 90, 90), (180, 60, 60, 60)  # the big face is "happy", the small one "angry"
    rng = np.random.default_rng(0)
    analyzer = FaceAnalyzer(FakeDetector(lambda i: [big, small]), FakeExpert())
    tracker = FaceTracker(analyzer, fps=5.0)
    frames = []
    for i in range(0, 60, 6):
        f = frame(i)
        f.image[40:130, 20:110] = 120  # the big face: still
        f.image[60:120, 180:240] = 90
        f.image[100:117, 195:225] = rng.integers(0, 255, (17, 30, 3))  # the small face's mouth moves
        frames.append(f)
    tracker.catch_up(frames)
    span = tracker.expression(0, 2 * NS)
    assert span.policy == "speaking" and int(span.probs.argmax()) == 0  # the small, speaking face: angry
    still = FaceTracker(analyzer, fps=5.0)  # nobody's mouth moves: the largest face
    still.catch_up([frame(i) for i in range(0, 60, 6)])
    span = still.expression(0, 2 * NS)
    assert span.policy == "largest" and int(span.probs.argmax()) == 1


def test_memory_is_bounded_and_a_failing_frame_is_skipped() -> None:
    def boxes(i: int) -> list[tuple[int, int, int, int]]:
        if i == 12:
            raise RuntimeError("detector broke on this frame")
        return [(10, 10, 50, 50)]

    tracker = FaceTracker(FaceAnalyzer(FakeDetector(boxes), FakeExpert()), fps=5.0, keep=4)
    tracker.catch_up([frame(i) for i in range(60)])
    assert tracker.failures == 1 and len(tracker.between(0, 10 * NS)) == 4
    assert tracker.latest() is not None and tracker.latest().frame_index == 54
    tracker.reset()
    assert tracker.latest() is None
