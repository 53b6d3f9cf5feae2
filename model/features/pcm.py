"""Audio samples in the one form every stage takes: (n,) float32 mono in [-1, 1] at 16 kHz.

`as_float32` is the one int16 -> float conversion; `resample_frames` the one PyAV resampling of
decoded audio frames to mono float32 at a rate (media files in training, serving and the tests).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

INT16_SCALE = np.float32(32768.0)


def as_float32(samples: Any) -> np.ndarray:
    """int16 PCM is scaled to [-1, 1); float samples pass through as float32 (no copy if already)."""
    x = np.asarray(samples)
    if x.dtype == np.int16:
        return x.astype(np.float32) / INT16_SCALE
    return x.astype(np.float32, copy=False)


def resample_frames(frames: Iterable[Any], rate: int) -> Iterator[np.ndarray]:
    """Decoded PyAV audio frames -> (n,) float32 mono blocks at `rate` (the resampler flushed at the end)."""
    import av

    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    for frame in frames:
        for out in resampler.resample(frame):
            yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
    for out in resampler.resample(None):
        yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
