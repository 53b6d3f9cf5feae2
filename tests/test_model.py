"""MCN-CL: streaming step == forward, causality, ablations, missing modalities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emostream.model.batch import collate
from emostream.model.config import ModelConfig
from emostream.model.losses import mcncl_loss
from emostream.model.mcncl import MCNCL
from tests.model_helpers import random_dialogue, small_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_steps(model: MCNCL, batch) -> torch.Tensor:
    state = model.init_state(batch.speaker.shape[0])
    probs = []
    for t in range(batch.speaker.shape[1]):
        p, state = model.step(batch.utterance(t), state)
        probs.append(p)
    return torch.stack(probs, dim=1)  # (B, N, K)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"listener_update": True},
        {"use_psa": False},
        {"use_mcn": False},
        {"mcn_window": 1, "mcn_layers": 3},
        {"memory": 2, "mcn_window": 8},
        {"modalities": ("text",)},
        {"modalities": ("audio", "visual")},
        {"use_context": False},
    ],
    ids=["default", "listener", "no-psa", "no-mcn", "w1-t3", "short-memory", "text-only", "audio-visual", "no-context"],
)
def test_step_matches_forward(changes: dict) -> None:
    torch.manual_seed(0)
    cfg = small_config(**changes)
    model = MCNCL(cfg).eval()
    rng = np.random.default_rng(1)
    batch = collate([random_dialogue(rng, 20, cfg, n_speakers=3), random_dialogue(rng, 11, cfg)])
    with torch.no_grad():
        full = torch.softmax(model(batch).logits, dim=-1)
        stepped = run_steps(model, batch)
    assert (full[0] - stepped[0]).abs().max().item() <= 1e-5
    assert (full[1, :11] - stepped[1, :11]).abs().max().item() <= 1e-5
    assert torch.allclose(stepped.sum(-1), torch.ones_like(stepped.sum(-1)), atol=1e-5)


def test_step_matches_forward_default_sizes() -> None:
    """The full-size default config (256-d, 9 parties, 3 modalities) on a 20-utterance, 3-speaker dialogue."""
    torch.manual_seed(0)
    cfg = ModelConfig(max_frames=4)
    model = MCNCL(cfg).eval()
    batch = collate([random_dialogue(np.random.default_rng(2), 20, cfg, n_speakers=3)])
    assert bool((batch.present == 0).any()), "the dialogue must have missing modalities"
    with torch.no_grad():
        diff = (torch.softmax(model(batch).logits, -1) - run_steps(model, batch)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("changes", [{}, {"use_mcn": False}, {"listener_update": True}, {"use_context": False}])
def test_causal_future_does_not_change_past(changes: dict) -> None:
    torch.manual_seed(0)
    cfg = small_config(**changes)
    model = MCNCL(cfg).eval()
    rng = np.random.default_rng(3)
    d = random_dialogue(rng, 15, cfg)
    other = random_dialogue(rng, 15, cfg)
    t = 7
    changed = random_dialogue(rng, 15, cfg)
    for name in ("text", "audio", "visual", "visual_mask", "present", "speaker"):
        getattr(changed, name)[: t + 1] = getattr(d, name)[: t + 1]
    with torch.no_grad():
        a = model(collate([d, other])).logits
        b = model(collate([changed, other])).logits
    assert torch.equal(a[0, : t + 1], b[0, : t + 1])
    assert not torch.allclose(a[0, t + 1 :], b[0, t + 1 :]), "the changed future must change the future outputs"
    assert torch.equal(a[1], b[1]), "dialogues in a batch must not leak into each other"


def test_missing_modality_uses_learned_vector_and_ignores_its_features() -> None:
    torch.manual_seed(0)
    cfg = small_config()
    model = MCNCL(cfg).eval()
    rng = np.random.default_rng(4)
    d = random_dialogue(rng, 6, cfg, p_missing=0.0)
    d.present[:, 1] = False  # audio missing everywhere
    noisy = random_dialogue(rng, 6, cfg, p_missing=0.0)
    for name in ("text", "visual", "visual_mask", "present", "speaker"):
        setattr(noisy, name, getattr(d, name).copy())
    with torch.no_grad():
        a = model(collate([d])).logits
        b = model(collate([noisy])).logits  # different audio values, still masked
    assert torch.equal(a, b)


def test_visual_without_any_face_frame_counts_as_missing() -> None:
    torch.manual_seed(0)
    cfg = small_config()
    model = MCNCL(cfg).eval()
    d = random_dialogue(np.random.default_rng(5), 4, cfg, p_missing=0.0)
    d.visual_mask[2] = False
    out = model(collate([d]))
    assert out.present[0, 2, 2] == 0 and out.present[0, 1, 2] == 1


def test_modality_dropout_never_drops_the_last_modality() -> None:
    torch.manual_seed(0)
    cfg = small_config(modality_dropout=1.0)
    model = MCNCL(cfg).train()
    d = random_dialogue(np.random.default_rng(6), 50, cfg, p_missing=0.5)
    batch = collate([d])
    out = model(batch)
    had = batch.present.sum(-1)
    kept = out.present.sum(-1)
    assert bool((kept >= torch.clamp(had, max=1)).all())
    assert bool((kept[had >= 2] == had[had >= 2] - 1).all())
    assert bool((out.present <= batch.present).all())


@pytest.mark.parametrize(
    "changes",
    [{}, {"use_contrastive": False}, {"hard_negatives": False}, {"use_psa": False}, {"use_mcn": False}],
)
def test_ablations_train_one_step(changes: dict) -> None:
    torch.manual_seed(0)
    cfg = small_config(**changes)
    model = MCNCL(cfg).train()
    batch = collate([random_dialogue(np.random.default_rng(7), 9, cfg) for _ in range(3)])
    loss = mcncl_loss(model(batch), batch.labels, cfg)
    loss.total.backward()
    assert torch.isfinite(loss.total)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    if not cfg.use_contrastive:
        assert float(loss.contrastive) == 0.0
    if cfg.use_psa is False:
        assert not any("convs" in name for name, _ in model.named_parameters())


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="modalities"):
        ModelConfig(modalities=("smell",))
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(d_model=30, mcn_heads=4)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"nope": 1})
    assert ModelConfig(modalities=("visual", "text")).modalities == ("text", "visual")
