"""Small synthetic dialogues and configs shared by the model tests."""

from __future__ import annotations

import numpy as np

from emostream.model.batch import DialogueFeatures
from emostream.model.config import ModelConfig


def small_config(**changes: object) -> ModelConfig:
    base = ModelConfig(
        labels=("a", "b", "c", "d"), text_dim=12, audio_dim=8, visual_dim=10, max_frames=5, d_model=32,
        global_dim=24, party_dim=20, emotion_dim=16, memory=6, mcn_window=3, mcn_heads=4, mcn_layers=2,
        n_parties=4, dropout=0.0, modality_dropout=0.0,
    )
    return base.replace(**changes)


def random_dialogue(rng: np.random.Generator, n: int, cfg: ModelConfig, n_speakers: int = 3,
                    p_missing: float = 0.3) -> DialogueFeatures:
    present = rng.random((n, 3)) > p_missing
    visual_mask = rng.random((n, cfg.max_frames)) > 0.3
    return DialogueFeatures(
        text=rng.normal(size=(n, cfg.text_dim)).astype(np.float32),
        audio=rng.normal(size=(n, cfg.audio_dim)).astype(np.float32),
        visual=rng.normal(size=(n, cfg.max_frames, cfg.visual_dim)).astype(np.float32),
        visual_mask=visual_mask,
        present=present,
        speaker=rng.integers(0, n_speakers, n),
        labels=rng.integers(0, cfg.num_classes, n),
    )
