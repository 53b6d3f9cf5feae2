"""The text encoder's context input (`emostream.model.features.context`): causal, tagged, bounded,
and built by one function for training, evaluation and the live session."""

from __future__ import annotations

import numpy as np
import pytest

from emostream.model.features.context import (
    MAX_SPEAKERS,
    ContextInput,
    ContextWindow,
    dialogue_inputs,
    encode,
)

TEXTS = ["Hi Joey.", "", "Hey! How are you?", "Terrible. I lost my job.", "Oh no, I'm so sorry."]
SPEAKERS = ["Rachel", "Joey", "Joey", "Rachel", "Joey"]


@pytest.fixture(scope="module")
def tokenizer():
    from emostream.model.features.text import load_text_module

    return load_text_module("all-MiniLM-L6-v2")[1]


def test_dialogue_inputs_see_only_the_past_most_recent_first() -> None:
    inputs = dialogue_inputs(TEXTS, SPEAKERS, turns=2)
    assert inputs[0] == ContextInput("A: Hi Joey.", ())
    assert inputs[2] == ContextInput("B: Hey! How are you?", ("A: Hi Joey.",))  # the empty turn is no turn
    assert inputs[4] == ContextInput("B: Oh no, I'm so sorry.", ("A: Terrible. I lost my job.", "B: Hey! How are you?"))
    for i, item in enumerate(inputs):  # never a future turn
        future = [t for t in TEXTS[i + 1 :] if t]
        assert not any(f in p for p in item.past for f in future)


def test_no_context_is_the_plain_sentence() -> None:
    assert dialogue_inputs(TEXTS, SPEAKERS, turns=0) == [ContextInput(t) for t in TEXTS]


def test_encode_without_past_is_the_tokenizer_sentence(tokenizer) -> None:
    ids, pool = encode(tokenizer, ContextInput("Oh my God, that's amazing!"), 128)
    assert ids == tokenizer("Oh my God, that's amazing!", truncation=True, max_length=128)["input_ids"]
    assert pool == [1] * len(ids)


def test_encode_pools_the_current_turn_and_truncates_the_oldest(tokenizer) -> None:
    item = ContextInput("A: I won!", ("B: " + "word " * 10, "A: " + "old " * 200))
    ids, pool = encode(tokenizer, item, 32)
    current = tokenizer("A: I won!")["input_ids"]
    assert len(ids) == len(pool) <= 32
    assert ids[: len(current)] == current and pool == [1] * len(current) + [0] * (len(ids) - len(current))
    assert ids.count(tokenizer.sep_token_id) == 3  # current, the recent turn, and what fits of the old one
    short, _ = encode(tokenizer, item, len(current) + 2)  # too little room for any past turn
    assert short == current


def test_the_window_is_bounded() -> None:
    window = ContextWindow(3)
    for i in range(1000):
        window.push(i, f"turn {i}")
    item = window.input(5, "now")
    assert item.past == ("J: turn 999", "J: turn 998", "J: turn 997")
    assert len(window._tags) == MAX_SPEAKERS
    window.reset()
    assert window.input("x", "now") == ContextInput("A: now", ())
    with pytest.raises(ValueError):
        ContextWindow(-1)


def test_context_changes_the_vector_through_attention_only(tokenizer) -> None:
    import torch

    from emostream.model.features.text import TextFeaturizer, pad_batch

    feat = TextFeaturizer("all-MiniLM-L6-v2")
    alone, happy, sad = feat([ContextInput("A: Really?"), ContextInput("A: Really?", ("B: I won the lottery!",)),
                              ContextInput("A: Really?", ("B: My dog died this morning.",))])
    assert np.abs(happy - sad).max() > 1e-3  # the past reaches the current turn's vector
    # pooling the whole input instead of the current turn gives another vector
    ids, pool = encode(tokenizer, ContextInput("A: Really?", ("B: I won the lottery!",)), 128)
    batch = pad_batch([(ids, [1] * len(ids))], tokenizer.pad_token_id)
    with torch.inference_mode():
        whole = feat.module(batch["input_ids"], batch["attention_mask"], batch["pool_mask"]).numpy()[0]
    assert np.abs(whole - happy).max() > 1e-3
    assert np.allclose(np.linalg.norm([alone, happy, sad], axis=1), 1.0, atol=1e-5)


def test_a_checkpoint_refuses_an_encoder_built_for_another_context() -> None:
    from emostream.model.features.spec import FeatureSpec, FeatureSpecMismatch, check_compatible, text_spec

    assert text_spec(context_turns=0) == text_spec()  # the plain sentence vector: spec as before context
    trained = FeatureSpec(text=text_spec(context_turns=4))
    check_compatible(trained, FeatureSpec(text=text_spec(context_turns=4)), ["text"])
    for other in (text_spec(), text_spec(context_turns=2)):
        with pytest.raises(FeatureSpecMismatch, match="context_turns|pooling"):
            check_compatible(trained, FeatureSpec(text=other), ["text"])
