"""Dialogue records -> DialogueFeatures, through whichever feature extractors are given.

A modality without an extractor, or an utterance whose media lacks it (no file, no stream, a
decode error, no face, too short), gets zeros and present=False. Media are decoded with PyAV
(imported lazily): audio as 16 kHz mono float32, frames as BGR uint8 (what OpenCV gives the
realtime worker), chosen over the utterance with the live path's rule (`sample_frames`: at most
`max_fps` per second, at most `max_frames`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emostream.model.batch import DialogueFeatures
from emostream.model.config import MODALITIES
from emostream.model.data.records import DialogueRecord, UtteranceRecord, label_index
from emostream.model.features.context import ContextInput, dialogue_inputs
from emostream.model.features.pcm import resample_frames
from emostream.model.features.spec import FeatureError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
TextFn = Callable[[list[ContextInput]], Any]  # encoder inputs -> (n, Dt)
AudioFn = Callable[[np.ndarray, int], Any]  # (samples, sample_rate) -> (Da,)
VisualFn = Callable[[list[np.ndarray]], Any]  # frames -> ((F, Dv) features, (F,) mask)


def _media_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ValueError, EOFError]
    try:
        import av

        errors.append(av.error.FFmpegError)
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return tuple(errors)


# --- media decoding ------------------------------------------------------------------------------


def decode_audio(
    path: str | Path, start_s: float | None = None, end_s: float | None = None, sample_rate: int = SAMPLE_RATE
) -> np.ndarray | None:
    """A file's audio (or its [start_s, end_s] span) as mono float32 at `sample_rate`.

    None when the file has no audio stream.
    """
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        if start_s:
            container.seek(int(start_s * av.time_base), any_frame=False, backward=True)
        first_t: float | None = None

        def span() -> Iterator[Any]:  # the decoded frames up to end_s, noting the first one's time
            nonlocal first_t
            for frame in container.decode(stream):
                if first_t is None:
                    first_t = float(frame.time) if frame.time is not None else 0.0
                if end_s is not None and frame.time is not None and frame.time > end_s:
                    return
                yield frame

        chunks = list(resample_frames(span(), sample_rate))
    samples = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if start_s is not None or end_s is not None:
        t0 = first_t or 0.0
        lo = max(0, round(((start_s or 0.0) - t0) * sample_rate))
        hi = len(samples) if end_s is None else max(lo, round((end_s - t0) * sample_rate))
        samples = samples[lo:hi]
    return samples


def _select_frames(timestamps_ns: list[int], max_frames: int, max_fps: float) -> list[int]:
    """The realtime worker's frame choice (features.visual.sample_frames), so training matches serving."""
    from emostream.model.features.visual import sample_frames

    return sample_frames(timestamps_ns, max_frames, max_fps)


def _pts(obj: Any) -> int | None:
    pts = getattr(obj, "pts", None)
    return pts if pts is not None else getattr(obj, "dts", None)


def read_frames(
    path: str | Path,
    start_s: float | None = None,
    end_s: float | None = None,
    max_frames: int = 8,
    max_fps: float = 4.0,
) -> list[np.ndarray]:
    """Frames (BGR uint8, H x W x 3) of a file or its [start_s, end_s] span, chosen like the live path.

    The frame times are read from the demuxed packets (no decoding), the frames to keep are picked
    with `sample_frames` (at most `max_frames`, at most `max_fps` per second, evenly spread), and
    only those are converted. Empty when the file has no video stream or no frame in the span.
    """
    import av

    a = start_s or 0.0
    b = end_s if end_s is not None else math.inf
    eps = 1e-6
    with av.open(str(path)) as container:
        if not container.streams.video:
            return []
        stream = container.streams.video[0]
        tb = stream.time_base
        if tb is None:
            return _read_frames_untimed(container, stream, max_frames)
        # pass 1: presentation times of the frames in the span, from packets
        if a > 0:
            container.seek(int(a * av.time_base), any_frame=False, backward=True)
        times: list[int] = []
        for packet in container.demux(stream):
            p = _pts(packet)
            if p is None or packet.size == 0:
                continue
            t = float(p * tb)
            if t > b + 1.0:  # packets come in decode order: allow for reordering
                break
            if a - eps <= t <= b + eps:
                times.append(p)
        if not times:
            return []
        times = sorted(set(times))
        chosen = _select_frames([round(float(p * tb) * 1e9) for p in times], max_frames, max_fps)
        wanted = [times[i] for i in chosen]
        # pass 2: decode, keep the wanted frames (the first frame at or after each wanted time)
        container.seek(int(a * av.time_base), any_frame=False, backward=True)
        stream.thread_type = "AUTO"
        out: list[np.ndarray] = []
        j = 0
        for frame in container.decode(stream):
            p = _pts(frame)
            if p is None:
                continue
            if p >= wanted[j]:
                out.append(frame.to_ndarray(format="bgr24"))
                while j < len(wanted) and wanted[j] <= p:
                    j += 1
                if j == len(wanted):
                    break
        return out


def _read_frames_untimed(container: Any, stream: Any, max_frames: int) -> list[np.ndarray]:
    """A stream without time stamps: decode everything, take `max_frames` evenly."""
    frames = list(container.decode(stream))
    if not frames:
        return []
    picks = dict.fromkeys(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int).tolist())
    return [frames[i].to_ndarray(format="bgr24") for i in picks]


def _sources(utt: UtteranceRecord) -> list[tuple[Path, float | None, float | None]]:
    """Where an utterance's audio/frames may come from, in order of preference."""
    out: list[tuple[Path, float | None, float | None]] = []
    if utt.media is not None:
        out.append((utt.media, None, None))
    if utt.video is not None and utt.start_s is not None and utt.end_s is not None:
        out.append((utt.video, utt.start_s, utt.end_s))
    return out


def utterance_audio(utt: UtteranceRecord, sample_rate: int = SAMPLE_RATE) -> np.ndarray | None:
    """The utterance's audio (16 kHz mono float32), or None when it has none that decodes."""
    for path, start, end in _sources(utt):
        try:
            samples = decode_audio(path, start, end, sample_rate)
        except _media_errors() as e:
            logger.debug("cannot decode audio of %s from %s: %s", utt.utterance_id or utt.order, path, e)
            continue
        if samples is not None and samples.size:
            return samples
    return None


def utterance_frames(utt: UtteranceRecord, max_frames: int = 8, max_fps: float = 4.0) -> list[np.ndarray]:
    """The utterance's sampled frames (BGR uint8), or [] when it has none that decode."""
    for path, start, end in _sources(utt):
        try:
            frames = read_frames(path, start, end, max_frames, max_fps)
        except _media_errors() as e:
            logger.debug("cannot decode frames of %s from %s: %s", utt.utterance_id or utt.order, path, e)
            continue
        if frames:
            return frames
    return []


# --- features ------------------------------------------------------------------------------------


def text_inputs(record: DialogueRecord, turns: int) -> list[ContextInput]:
    """Each utterance's text-encoder input: itself plus up to `turns` past turns (never a future one)."""
    return dialogue_inputs([u.text for u in record.utterances], [u.speaker for u in record.utterances], turns)


def featurize_dialogue(
    record: DialogueRecord,
    *,
    labels: Sequence[str],
    text: TextFn | None = None,
    audio: AudioFn | None = None,
    visual: VisualFn | None = None,
    text_dim: int = 384,
    audio_dim: int = 88,
    visual_dim: int = 1280,
    max_frames: int = 8,
    max_fps: float = 4.0,
    text_context_turns: int = 0,
) -> DialogueFeatures:
    """One dialogue's features from the given extractors (None: that modality is absent).

    text_context_turns: past turns in each utterance's text input (`text_inputs`).
    labels: the dataset's label set (a label outside it, or None, becomes -100).
    The *_dim arguments size the zeros of absent modalities and are checked against outputs.
    """
    n = len(record)
    utts = record.utterances
    feats_text = np.zeros((n, text_dim), np.float32)
    feats_audio = np.zeros((n, audio_dim), np.float32)
    feats_visual = np.zeros((n, max_frames, visual_dim), np.float32)
    visual_mask = np.zeros((n, max_frames), bool)
    present = np.zeros((n, len(MODALITIES)), bool)
    it, ia, iv = (MODALITIES.index(m) for m in ("text", "audio", "visual"))

    if text is not None:
        idx = [i for i, u in enumerate(utts) if u.text.strip()]
        if idx:
            inputs = text_inputs(record, text_context_turns)
            out = np.asarray(text([inputs[i] for i in idx]), dtype=np.float32)
            if out.shape != (len(idx), text_dim):
                raise ValueError(f"text featurizer gave shape {out.shape}, expected {(len(idx), text_dim)}")
            feats_text[idx] = out
            present[idx, it] = True

    for i, utt in enumerate(utts):
        if audio is not None:
            samples = utterance_audio(utt)
            if samples is not None:
                try:
                    vec = np.asarray(audio(samples, SAMPLE_RATE), dtype=np.float32).reshape(-1)
                except FeatureError as e:
                    logger.debug("no audio feature for %s: %s", utt.utterance_id or i, e)
                else:
                    if vec.shape != (audio_dim,):
                        raise ValueError(f"audio featurizer gave shape {vec.shape}, expected ({audio_dim},)")
                    feats_audio[i] = vec
                    present[i, ia] = bool(np.isfinite(vec).all())
                    if not present[i, ia]:
                        feats_audio[i] = 0.0
        if visual is not None:
            frames = utterance_frames(utt, max_frames, max_fps)
            if frames:
                try:
                    fv, fm = visual(frames)
                except FeatureError as e:
                    logger.debug("no visual feature for %s: %s", utt.utterance_id or i, e)
                else:
                    fv = np.asarray(fv, dtype=np.float32)
                    fm = np.asarray(fm, dtype=bool).reshape(-1)
                    k = fv.shape[0]
                    if fv.ndim != 2 or fv.shape[1] != visual_dim or k > max_frames or fm.shape != (k,):
                        raise ValueError(
                            f"visual featurizer gave {fv.shape} / mask {fm.shape}, expected (<= {max_frames}, {visual_dim})"
                        )
                    feats_visual[i, :k] = fv
                    visual_mask[i, :k] = fm
                    present[i, iv] = bool(fm.any())

    return DialogueFeatures(
        text=feats_text,
        audio=feats_audio,
        visual=feats_visual,
        visual_mask=visual_mask,
        present=present,
        speaker=np.asarray(record.speaker_slots(), dtype=np.int64).reshape(n),
        labels=np.asarray([label_index(labels, u.label) for u in utts], dtype=np.int64).reshape(n),
        dialogue_id=record.dialogue_id,
    )
