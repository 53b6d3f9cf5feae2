"""Injected faults on the real models: the ASR raises or returns nothing, an extractor returns NaN,
the engine or the face model raises once, audio is lost, the microphone raises, and a start fails
half-way. Each gives an `error` or `status` event, every utterance that could be processed still
gets its final (flagged where degraded), and the dialogue goes on.

The dialogue core (`Worker`) is driven directly, without threads, over the espeak-ng fixture (6
lines). The injectors below wrap the real parts; they are fakes only in what they break.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emostream.realtime import protocol
from emostream.realtime.config import PipelineConfig
from emostream.realtime.segmenter import Segmenter, SegmenterConfig
from emostream.realtime.session import DialogueSession
from emostream.realtime.types import AudioChunk, Transcript, VideoFrame
from emostream.realtime.worker import FrameRing, Worker
from tests.helpers import wait_until

DATA = Path(__file__).parent / "data"
# One final per scripted line is what these tests count on: the espeak-ng fixture's lines are a second
# apart, so the pause rule ("silence") cuts it exactly; turn-taking has its own tests (test_turns.py,
# test_real_conversation.py).
CONFIG = PipelineConfig(interim=False, segmenter=SegmenterConfig(endpoint="silence"))
FAULTY = 2  # the utterance the faults hit (of 0..5)
N_LINES = 6


@pytest.fixture(scope="module")
def shared(engine_cache: Path) -> Any:
    from emostream.realtime.runtime import load_shared_models

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSTREAM_CACHE", str(engine_cache))
        return load_shared_models(CONFIG)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    with wave.open(str(DATA / "dialogue.wav")) as w:
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768.0


@pytest.fixture(scope="module")
def face_image() -> np.ndarray:
    import cv2

    image = cv2.imread(str(DATA / "faces" / "astronaut_collins_happy.jpg"))
    return cv2.copyMakeBorder(image, 60, 60, 60, 60, cv2.BORDER_CONSTANT, value=(128, 128, 128))


class Utterances:
    """Which utterance the worker is on, from its own events (so injectors know when to strike)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.current = -1
        self.finishing = False  # between the utterance's start and its final

    def __call__(self, msg: dict[str, Any]) -> None:
        self.events.append(msg)
        if msg["type"] == "utterance" and msg["event"] == "start":
            self.current, self.finishing = msg["utterance_id"], True
        if msg["type"] == "prediction" and msg["final"]:
            self.finishing = False

    def hit(self) -> bool:
        return self.finishing and self.current == FAULTY

    def finals(self) -> list[dict[str, Any]]:
        return [m for m in self.events if m["type"] == "prediction" and m["final"]]

    def of(self, kind: str, code: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.events if m["type"] == kind and (code is None or m["code"] == code)]


def drive(parts: dict[str, Any], audio: np.ndarray, track: Utterances, *, transcriber: Any = None,
          face_image: np.ndarray | None = None, lose: tuple[float, float] | None = None) -> Worker:
    """The fixture through a Worker as fast as possible (stream time = sample time); `lose`: the
    stream seconds [a, b) whose chunks are dropped and reported lost, as a full queue would."""
    frames = FrameRing(CONFIG.video_ring)
    if face_image is not None:  # the camera: one frame every 200 ms over the whole fixture
        for k in range(int(audio.size / 16_000 * 5) + 1):
            frames.add(VideoFrame(image=face_image, t_ns=k * 200_000_000, index=k))
    worker = Worker(parts["session"], Segmenter(CONFIG.segmenter), transcriber or parts["transcriber"], frames,
                    CONFIG, 0, faces=parts["faces"] if face_image is not None else None,
                    speakers=parts["speakers"], turn_model=parts["turn_model"], clock=time.monotonic_ns)
    for i in range(0, audio.size, 512):
        chunk = AudioChunk(samples=audio[i:i + 512], sample_rate=16_000, t0_ns=i * 62_500)
        if lose is not None and lose[0] <= i / 16_000 < lose[1]:
            worker.chunk_lost(chunk)
            continue
        worker.process(chunk)
        for event in worker.take_events():
            track(event.message())
    worker.flush()
    for event in worker.take_events():
        track(event.message())
    worker.close()
    return worker


def assert_dialogue_went_on(track: Utterances) -> list[dict[str, Any]]:
    import jsonschema

    validator = jsonschema.Draft202012Validator(protocol.protocol_schema())
    for msg in track.events:  # degraded or not, every event is a valid protocol message
        validator.validate(msg)
    finals = track.finals()
    assert [f["utterance_id"] for f in finals] == list(range(N_LINES)), [f["text"] for f in finals]
    for f in finals:
        if f["utterance_id"] != FAULTY:
            assert f["text"] and not set(f["flags"]) & {"asr_failed", "model_failed", "face_failed",
                                                          "text_failed", "audio_dropped"}, f
    return finals


# ---------------------------------------------------------------------------------- injectors
class FailingTranscriber:
    """The real transcriber, except that it raises (or returns nothing) while `strike()` says so."""

    def __init__(self, real: Any, strike: Any, empty: bool = False) -> None:
        self.real, self.strike, self.empty, self.struck = real, strike, empty, 0

    def transcribe(self, audio: np.ndarray, utterance_id: int) -> Transcript:
        if self.strike():
            self.struck += 1
            if self.empty:
                return Transcript(utterance_id=utterance_id, text="")
            raise RuntimeError("injected ASR failure")
        return self.real.transcribe(audio, utterance_id)

    def start(self, event: Any) -> Any:
        from emostream.realtime.asr import PendingTranscript

        return PendingTranscript(self, event.segment, event.start_sample, event.end_sample, event.audio)


class StepFailsOnce:
    """The real step engine, except that its first call while `strike()` says so raises."""

    def __init__(self, real: Any, strike: Any) -> None:
        self.real, self.strike, self.struck = real, strike, 0

    def step(self, inputs: dict[str, np.ndarray], state: Any) -> Any:
        if self.strike() and not self.struck:
            self.struck += 1
            raise RuntimeError("injected engine failure")
        return self.real.step(inputs, state)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


# ---------------------------------------------------------------------------------- the faults
def test_asr_raises_the_utterance_still_gets_its_final(shared: Any, audio: np.ndarray) -> None:
    track = Utterances()
    parts = shared.dialogue_parts()
    asr = FailingTranscriber(shared.transcriber, track.hit)
    drive(parts, audio, track, transcriber=asr)
    finals = assert_dialogue_went_on(track)
    assert asr.struck >= 1
    hit = finals[FAULTY]
    assert hit["text"] == "" and {"asr_failed", "no_text"} <= set(hit["flags"]), hit
    assert any("speech recognition failed" in e["message"] for e in track.of("error", "internal"))
    assert any(f"utterance {FAULTY}" in s["message"] for s in track.of("status", "degraded"))
    # the line after the fault is recognised as before ("Please, I feel terrible ...": sadness)
    assert finals[3]["label"] == "sadness" and "terrible" in finals[3]["text"]


def test_asr_returns_nothing(shared: Any, audio: np.ndarray) -> None:
    track = Utterances()
    asr = FailingTranscriber(shared.transcriber, track.hit, empty=True)
    drive(shared.dialogue_parts(), audio, track, transcriber=asr)
    finals = assert_dialogue_went_on(track)
    assert finals[FAULTY]["text"] == "" and "no_text" in finals[FAULTY]["flags"]
    assert finals[3]["label"] == "sadness"


def test_a_text_extractor_returning_nan_is_flagged(shared: Any, audio: np.ndarray) -> None:
    track = Utterances()
    parts = shared.dialogue_parts()
    real_text = shared.featurizers.text

    def nan_text(texts: list[str]) -> np.ndarray:
        out = np.asarray(real_text(texts), np.float32)
        return np.full_like(out, np.nan) if track.hit() else out

    session: DialogueSession = parts["session"]
    session.featurizers = dataclasses.replace(shared.featurizers, text=nan_text)
    drive(parts, audio, track)
    finals = assert_dialogue_went_on(track)
    assert "text_failed" in finals[FAULTY]["flags"], finals[FAULTY]
    assert all(np.isfinite(list(f["probs"].values())).all() for f in finals)
    assert any(f"utterance {FAULTY}" in s["message"] for s in track.of("status", "degraded"))
    assert finals[3]["label"] == "sadness"


def test_the_engine_raises_once(shared: Any, audio: np.ndarray) -> None:
    track = Utterances()
    parts = shared.dialogue_parts()
    step = StepFailsOnce(shared.model, track.hit)
    session = DialogueSession(step, shared.featurizers, face_fusion=shared.face_fusion)
    parts["session"] = session
    drive(parts, audio, track)
    finals = assert_dialogue_went_on(track)
    assert step.struck == 1
    hit = finals[FAULTY]
    assert "model_failed" in hit["flags"] and hit["modalities"]["text"] is None, hit
    assert hit["text"]  # the transcript is still there
    assert session.n_final == N_LINES - 1  # the failed step did not advance the dialogue state
    assert finals[3]["label"] == "sadness" and finals[5]["label"] == "joy"


def test_the_face_model_raises_once(shared: Any, audio: np.ndarray, face_image: np.ndarray) -> None:
    track = Utterances()
    parts = shared.dialogue_parts()
    analyzer = parts["faces"].analyzer
    real_analyze, struck = analyzer.analyze, []

    def analyze_fails_once(frame: VideoFrame) -> Any:
        if track.hit() and not struck:
            struck.append(frame.t_ns)
            raise RuntimeError("injected face model failure")
        return real_analyze(frame)

    analyzer_copy = type(analyzer).__new__(type(analyzer))
    analyzer_copy.__dict__.update(analyzer.__dict__)
    analyzer_copy.analyze = analyze_fails_once  # this dialogue's analyzer only
    parts["faces"].analyzer = analyzer_copy
    drive(parts, audio, track, face_image=face_image)
    finals = assert_dialogue_went_on(track)
    assert len(struck) == 1 and len(track.of("status", "face_failed")) == 1
    # one frame lost: the utterance's face comes from its other frames, and the path goes on
    for f in finals:
        face = f["modalities"]["face"]
        assert face is not None and max(face, key=face.get) == "joy", f


def test_the_speaker_embedding_raises(shared: Any, audio: np.ndarray) -> None:
    track = Utterances()
    parts = shared.dialogue_parts()
    tracker = parts["speakers"]  # this dialogue's own tracker
    real_learn, real_assign = tracker.learn, tracker.assign_embedding

    def learn_fails(*args: Any, **kwargs: Any) -> int:
        if track.hit():
            raise RuntimeError("injected speaker-embedding failure")
        return real_learn(*args, **kwargs)

    def assign_fails(*args: Any, **kwargs: Any) -> int:
        if track.hit():
            raise RuntimeError("injected speaker-embedding failure")
        return real_assign(*args, **kwargs)

    tracker.learn, tracker.assign_embedding = learn_fails, assign_fails  # whichever path the utterance takes
    drive(parts, audio, track)
    finals = assert_dialogue_went_on(track)
    assert "speaker_failed" in finals[FAULTY]["flags"] and finals[FAULTY]["speaker"] == 0
    assert finals[FAULTY]["text"]
    assert any(f"utterance {FAULTY}" in s["message"] for s in track.of("status", "degraded"))


def test_lost_audio_flags_its_utterance_and_is_counted(shared: Any, audio: np.ndarray) -> None:
    import json

    line = json.loads((DATA / "dialogue.json").read_text())["utterances"][FAULTY]
    mid = (line["start_s"] + line["end_s"]) / 2
    track = Utterances()
    worker = drive(shared.dialogue_parts(), audio, track, lose=(mid, mid + 0.2))
    finals = track.finals()
    flagged = [f["utterance_id"] for f in finals if "audio_dropped" in f["flags"]]
    assert len(finals) >= N_LINES and len(flagged) == 1, [(f["text"], f["flags"]) for f in finals]
    metrics = worker.metrics({}, {})
    assert metrics["drops"]["utterances_audio_dropped"] == 1
    assert any("audio was lost" in s["message"] for s in track.of("status", "degraded"))


def test_interims_are_skipped_while_behind_and_bounded_in_length(shared: Any, audio: np.ndarray) -> None:
    """An interim transcribes at most `interim_window_s` of the utterance, and none runs while more
    than `interim_max_backlog_s` of audio waits."""
    config = PipelineConfig(interim=True, interim_interval_s=0.5, interim_window_s=1.0, segmenter=CONFIG.segmenter)
    seen: list[int] = []

    class Recording:  # the real transcriber, recording each call's length
        def transcribe(self, x: np.ndarray, uid: int) -> Transcript:
            seen.append(x.size)
            return shared.transcriber.transcribe(x, uid)

        def start(self, event: Any) -> Any:
            return FailingTranscriber(self, lambda: False).start(event)

    events: list[dict[str, Any]] = []
    parts = shared.dialogue_parts()
    worker = Worker(parts["session"], Segmenter(config.segmenter), Recording(), FrameRing(8),
                    config, 0, speakers=parts["speakers"], turn_model=parts["turn_model"], clock=time.monotonic_ns)
    clip = audio[: 8 * 16_000]  # the first two lines
    for i in range(0, clip.size, 512):
        worker.backlog_s = 1.0 if i >= 4 * 16_000 else 0.0  # behind from 4 s on
        worker.process(AudioChunk(samples=clip[i:i + 512], sample_rate=16_000, t0_ns=i * 62_500))
    worker.flush()
    events.extend(e.message() for e in worker.take_events())
    worker.close()
    interims = [m for m in events if m["type"] == "prediction" and not m["final"]]
    assert interims and all(m["t_end_ms"] <= 4_100 for m in interims)  # none once behind
    assert all(m["timings_ms"]["asr_audio_s"] <= 1.0 for m in interims)
    assert worker.counts["interims_skipped_behind"] >= 1
    finals = [m for m in events if m["type"] == "prediction" and m["final"]]
    assert len(finals) == 2 and all(f["text"] for f in finals)  # finals are never skipped


# ---------------------------------------------------------------------------------- devices
class FakeSoundDevice:
    """Stands in for the sounddevice module: the first stream fails to open, later ones deliver
    blocks of the fixture audio from a thread, like PortAudio's callback."""

    def __init__(self, audio: np.ndarray, fail_first: int = 1) -> None:
        self.audio, self.fail_first, self.opened = audio, fail_first, 0

    def InputStream(self, *, callback: Any, blocksize: int, **_: Any) -> Any:  # noqa: N802 - sounddevice's name
        self.opened += 1
        if self.opened <= self.fail_first:
            raise OSError("injected: PortAudio error -9996 (invalid device)")
        return _FakeStream(self.audio, callback, blocksize)


class _FakeStream:
    def __init__(self, audio: np.ndarray, callback: Any, block: int) -> None:
        self.audio, self.callback, self.block = audio, callback, block
        self.active = True
        self._stop = threading.Event()

    def __enter__(self) -> _FakeStream:
        threading.Thread(target=self._feed, daemon=True).start()
        return self

    def _feed(self) -> None:
        for i in range(0, self.audio.size - self.block, self.block):
            if self._stop.is_set():
                return
            self.callback(self.audio[i:i + self.block, None], self.block, None, None)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.active = False


def test_the_microphone_raises_and_is_reopened(audio: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    from emostream.realtime import sources

    fake = FakeSoundDevice(audio[: 16_000])
    monkeypatch.setattr(sources, "import_sounddevice", lambda: fake)
    monkeypatch.setattr(sources.Backoff, "next_delay", lambda self: 0.05)
    got: list[AudioChunk] = []
    statuses: list[str] = []
    mic = sources.MicrophoneSource()
    mic.start(got.append, lambda code, msg: statuses.append(code))
    wait_until(lambda: len(got) >= 20, what="audio from the reopened microphone")  # it came back and delivers
    mic.stop()
    assert statuses and statuses[0] == "microphone_retry" and fake.opened >= 2


class FakeCamera:
    """Stands in for cv2.VideoCapture: a camera that opens and delivers frames."""

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        time.sleep(0.01)
        return True, np.zeros((48, 64, 3), np.uint8)

    def release(self) -> None:
        pass


def test_a_failed_start_releases_the_camera_and_raises(shared: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The camera thread runs, then the microphone cannot start (no PortAudio): start() raises and
    no thread is left behind to keep the process alive."""
    from emostream.realtime import sources
    from emostream.realtime.pipeline import Pipeline

    def no_portaudio() -> Any:
        raise sources.SourceError("the microphone needs the sounddevice package and the PortAudio library")

    monkeypatch.setattr(sources, "_open_camera", lambda index: FakeCamera())
    monkeypatch.setattr(sources, "import_sounddevice", no_portaudio)
    before = {t.ident for t in threading.enumerate()}
    pipeline = Pipeline(PipelineConfig(segmenter=CONFIG.segmenter), lambda msg: None, shared.dialogue_parts())
    with pytest.raises(sources.SourceError, match="PortAudio"):
        pipeline.start()

    def left() -> list[str]:
        return [t.name for t in threading.enumerate() if t.ident not in before and not t.daemon]

    wait_until(lambda: not left(), what=lambda: f"the threads of the failed start to end; still running: {left()}")


def test_the_end_of_turn_model_raises(shared: Any, audio: np.ndarray) -> None:
    """A failing Smart Turn leaves every pause to the long cap: turns still end, none as
    'turn_complete', the failures are counted, nothing else is lost."""
    parts = shared.dialogue_parts()
    events: list[dict[str, Any]] = []
    config = PipelineConfig(interim=False)  # the default: endpoint "turn"

    def failing_turn_model(_: np.ndarray) -> float:
        raise RuntimeError("injected end-of-turn failure")

    worker = Worker(parts["session"], Segmenter(config.segmenter), parts["transcriber"], FrameRing(8),
                    config, 0, speakers=parts["speakers"], turn_model=failing_turn_model, clock=time.monotonic_ns)
    for i in range(0, audio.size, 512):
        worker.process(AudioChunk(samples=audio[i:i + 512], sample_rate=16_000, t0_ns=i * 62_500))
    worker.flush()
    events.extend(e.message() for e in worker.take_events())
    finals = [m for m in events if m["type"] == "prediction" and m["final"]]
    assert len(finals) >= N_LINES // 2 and all(f["text"] for f in finals)
    assert all(f["end_reason"] in ("silence", "speaker_change", "max_length") for f in finals)
    assert worker.counts["turn_model_failed"] >= 3
    assert worker.metrics({}, {})["drops"]["turn_model_failed"] == worker.counts["turn_model_failed"]
