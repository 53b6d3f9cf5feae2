"""Late fusion of MCN-CL with the face expert: label mapping and prior-corrected log-linear pooling."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.realtime.fusion import FaceFusion, LabelMap, fer2013_prior, mean_distribution

EXPERT = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MELD = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")


def onehot_ish(labels: tuple[str, ...], top: str, p: float = 0.8) -> np.ndarray:
    rest = (1 - p) / (len(labels) - 1)
    return np.array([p if lab == top else rest for lab in labels])


def test_label_map_carries_the_expert_onto_meld_labels() -> None:
    lm = LabelMap.build(EXPERT, MELD)
    assert lm.covered and None not in lm.index
    dist = lm.distribution(onehot_ish(EXPERT, "happy"))
    assert MELD[int(dist.argmax())] == "joy" and abs(dist.sum() - 1) < 1e-9
    assert MELD[int(lm.distribution(onehot_ish(EXPERT, "angry")).argmax())] == "anger"


def test_an_expert_that_says_only_its_prior_changes_nothing() -> None:
    fusion = FaceFusion.for_labels(EXPERT, MELD, weight=1.0, trust=1.0)
    model = onehot_ish(MELD, "neutral", 0.5)
    fused = fusion.fuse(model, fer2013_prior(EXPERT))  # FER2013's prior: mostly happy, but no evidence
    np.testing.assert_allclose(fused, model, atol=1e-9)
    # without the prior correction the same expert output would have pushed towards joy
    lm = fusion.label_map
    naive = model * lm.distribution(fer2013_prior(EXPERT))
    assert (naive / naive.sum())[MELD.index("joy")] > model[MELD.index("joy")]


def test_a_clear_face_moves_the_fused_answer_by_its_weight() -> None:
    model = onehot_ish(MELD, "neutral", 0.45)
    face = onehot_ish(EXPERT, "happy", 0.9)
    joy = MELD.index("joy")
    by_weight = [FaceFusion.for_labels(EXPERT, MELD, weight=w).fuse(model, face)[joy] for w in (0.0, 0.5, 1.0)]
    assert by_weight[0] == pytest.approx(model[joy])
    assert by_weight[0] < by_weight[1] < by_weight[2]
    assert MELD[int(FaceFusion.for_labels(EXPERT, MELD, weight=1.0).fuse(model, face).argmax())] == "joy"
    assert FaceFusion.for_labels(EXPERT, MELD).fuse(model, None) == pytest.approx(model)


def test_trust_keeps_a_clear_sentence_above_a_confident_face() -> None:
    model = onehot_ish(MELD, "sadness", 0.6)  # the words say sad...
    face = onehot_ish(EXPERT, "happy", 0.998)  # ...a smiling photograph says happy, over-confidently
    tempered = FaceFusion.for_labels(EXPERT, MELD, weight=0.5)
    assert MELD[int(tempered.fuse(model, face).argmax())] == "sadness"
    untempered = FaceFusion.for_labels(EXPERT, MELD, weight=0.5, trust=1.0)
    assert MELD[int(untempered.fuse(model, face).argmax())] == "joy"
    vague = onehot_ish(MELD, "neutral", 0.3)  # ...but where the words are vague, the face decides
    assert MELD[int(tempered.fuse(vague, face).argmax())] == "joy"


def test_labels_without_a_face_counterpart_get_no_evidence() -> None:
    labels = ("neu", "hap", "frustrated", "ang")  # an IEMOCAP-style label set
    fusion = FaceFusion.for_labels(EXPERT, labels, weight=1.0, trust=1.0)
    assert fusion.label_map.index[2] is None
    ratio = fusion.label_map.likelihood_ratio(onehot_ish(EXPERT, "happy"), fusion.prior)
    assert ratio[2] == 1.0 and ratio[1] > 1.0 > ratio[3]
    with pytest.raises(ValueError):
        FaceFusion.for_labels(EXPERT, labels, weight=-1)


def test_mean_distribution() -> None:
    assert mean_distribution([]) is None
    np.testing.assert_allclose(mean_distribution([[1, 0], [0, 1]]), [0.5, 0.5])
