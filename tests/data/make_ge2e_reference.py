"""Reference outputs of resemblyzer's own GE2E pipeline (librosa mel + PyTorch encoder) for
tests/test_voice_embedding.py.

Needs a throwaway venv outside the repo with the real package and its dependencies:

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install torch==2.13.0 \
        && /tmp/refvenv/bin/pip install resemblyzer==0.1.4 librosa==0.11.0 'setuptools<81'
    /tmp/refvenv/bin/python tests/data/make_ge2e_reference.py

The input is a closed-form signal (`probe_signal`, repeated in the test), so no audio is stored.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SR = 16_000


def probe_signal(seconds: float) -> np.ndarray:
    """A voiced-like test signal: harmonics of a gliding 110-180 Hz pitch with a syllable envelope,
    plus a little seeded noise. (n,) float32."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 110 + 70 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 3.1 * t) ** 2
    noise = np.random.default_rng(7).standard_normal(t.size)
    return (0.05 * voiced * envelope + 0.004 * noise).astype(np.float32)


def main() -> None:
    from resemblyzer import VoiceEncoder, audio

    encoder = VoiceEncoder("cpu", verbose=False)
    out = {"source": "resemblyzer 0.1.4 (librosa 0.11.0, torch 2.13.0)", "cases": []}
    for seconds in (2.0, 3.3):
        x = probe_signal(seconds)
        wav = audio.normalize_volume(x, -30, increase_only=True)
        mel = audio.wav_to_mel_spectrogram(wav)
        embed, partials, _ = encoder.embed_utterance(wav, return_partials=True)
        out["cases"].append({"seconds": seconds, "mel_frames": int(mel.shape[0]),
                             "mel_sum": float(mel.astype(np.float64).sum()),
                             "mel_first_frame": mel[0].tolist(),
                             "embedding": embed.tolist(), "partials": int(partials.shape[0])})
    path = Path(__file__).with_name("ge2e_reference.json")
    path.write_text(json.dumps(out) + "\n")


if __name__ == "__main__":
    main()
