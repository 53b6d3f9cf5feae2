"""Audio features: openSMILE functionals of one utterance (eGeMAPSv02 88-d, or ComParE_2016 6373-d).

Licence: the `opensmile` Python package is MIT, but the SMILExtract library it wraps is under
audEERING's research licence (free for private, research and educational use; commercial use
needs a licence from audEERING). See https://github.com/audeering/opensmile/blob/master/LICENSE.

Input is float32 mono in [-1, 1] (int16 is rescaled). Audio at another sample rate is resampled
to the spec's rate (16 kHz) first, so the features never depend on the capture device's rate.
Inputs that cannot give meaningful features raise `FeatureError`, never a NaN vector:
shorter than `min_duration_s` (openSMILE needs ~60 ms), digital silence (RMS below
`silence_dbfs`), or non-finite samples. Callers mark the audio modality absent for such utterances.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from emostream.model.features.pcm import as_float32
from emostream.model.features.spec import AUDIO_DIMS, FeatureError, SpecCarrier, audio_spec

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000


class AudioFeaturizer(SpecCarrier):
    """samples (N,) float32 mono -> (D,) float32 openSMILE functionals."""

    def __init__(
        self,
        feature_set: str = "eGeMAPSv02",
        *,
        sample_rate: int = SAMPLE_RATE,
        min_duration_s: float = 0.1,
        silence_dbfs: float | None = -80.0,
    ) -> None:
        import opensmile

        if feature_set not in AUDIO_DIMS:
            raise ValueError(f"unknown feature_set {feature_set!r}; expected one of {sorted(AUDIO_DIMS)}")
        self.feature_set = feature_set
        self.sample_rate = sample_rate
        self.min_duration_s = min_duration_s
        self.silence_dbfs = silence_dbfs
        self._smile = opensmile.Smile(
            feature_set=getattr(opensmile.FeatureSet, feature_set),
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self._spec = audio_spec(feature_set, sample_rate)
        if len(self._smile.feature_names) != self._spec.dim:
            raise RuntimeError(
                f"openSMILE {feature_set} gives {len(self._smile.feature_names)} features, spec says {self._spec.dim}"
            )

    @property
    def feature_names(self) -> list[str]:
        return list(self._smile.feature_names)

    def _prepare(self, samples: Any, sample_rate: int) -> np.ndarray:
        x = np.asarray(samples)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1:
            raise FeatureError(f"expected mono audio of shape (N,), got shape {x.shape}")
        if x.dtype != np.int16 and not np.issubdtype(x.dtype, np.floating):
            raise FeatureError(f"expected float32 or int16 samples, got {x.dtype}")
        x = as_float32(x)
        if not np.all(np.isfinite(x)):
            raise FeatureError("audio contains NaN or infinite samples")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        duration = x.size / sample_rate
        if duration < self.min_duration_s:
            raise FeatureError(
                f"audio too short for {self.feature_set} functionals: {duration * 1000:.0f} ms "
                f"< {self.min_duration_s * 1000:.0f} ms"
            )
        if sample_rate != self.sample_rate:
            from scipy.signal import resample_poly

            g = math.gcd(int(sample_rate), int(self.sample_rate))
            x = resample_poly(x, self.sample_rate // g, int(sample_rate) // g).astype(np.float32)
        if self.silence_dbfs is not None:
            rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
            level = 20 * math.log10(rms) if rms > 0 else -math.inf
            if level < self.silence_dbfs:
                raise FeatureError(f"audio is silent: RMS {level:.1f} dBFS < {self.silence_dbfs:.1f} dBFS")
        return x

    def __call__(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        x = self._prepare(samples, sample_rate)  # (N,) float32 at self.sample_rate
        values = self._smile.process_signal(x, self.sample_rate).to_numpy()  # (1, D)
        vec = np.asarray(values, dtype=np.float32).reshape(-1)  # (D,)
        if vec.shape != (self.dim,):
            raise FeatureError(f"openSMILE returned {vec.shape}, expected ({self.dim},)")
        if not np.all(np.isfinite(vec)):
            raise FeatureError(f"openSMILE returned non-finite {self.feature_set} features for this input")
        return vec
